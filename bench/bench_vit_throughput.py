"""CPU training throughput of the TransReID ViT-Small backbone vs timm's ViT-Small.

One process, one fixed input batch (default 32 x 3 x 256 x 128, stride 16, SIE off). Each timed
step is forward + backward (+ SGD step unless --no-step) on a scalar loss of the global feature
(and the JPM part features when JPM is on). Models are timed in alternating order (round r runs
them in order, round r + 1 in reverse) after warm-up steps, so slow drifts in machine load hit
every model alike. Reports images/s per model (total images / total timed seconds), the median
step time, the ratio ours / timm and the extra cost of JPM.

Usage:
    python bench/bench_vit_throughput.py [--batch 32] [--warmup 3] [--iters 8] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model.backbones.vit_transreid import build_transreid_backbone  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    parser.add_argument("--iters", type=int, default=8, help="timed steps per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--drop-path", type=float, default=0.1)
    parser.add_argument("--no-step", action="store_true", help="skip the optimizer step")
    parser.add_argument("--no-jpm", action="store_true", help="skip the JPM model")
    return parser.parse_args()


class TimmAdapter(torch.nn.Module):
    """timm ViT with num_classes=0: forward returns the CLS feature after the final norm."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return {"feat": self.net(x)}


def make_step(model: torch.nn.Module, x: torch.Tensor, optimizer_step: bool):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> float:
        start = time.perf_counter()
        out = model(x)
        loss = out["feat"].pow(2).mean()
        for local in out.get("local_feats", []):
            loss = loss + local.pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if optimizer_step:
            optimizer.step()
        return time.perf_counter() - start

    return step


def main() -> None:
    args = parse_args()
    import timm

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = (args.height, args.width)
    x = torch.randn(args.batch, 3, *size)
    models = {
        "timm vit_small_patch16_224": TimmAdapter(timm.create_model(
            "vit_small_patch16_224", pretrained=False, img_size=size, num_classes=0,
            drop_path_rate=args.drop_path)),
        "ours vit_small (JPM off)": build_transreid_backbone(
            "vit_small", img_size=size, stride_size=16, drop_path_rate=args.drop_path),
    }
    if not args.no_jpm:
        models["ours vit_small (JPM on)"] = build_transreid_backbone(
            "vit_small", img_size=size, stride_size=16, drop_path_rate=args.drop_path, jpm=True)
    steps = {}
    for name, model in models.items():
        model.train()
        steps[name] = make_step(model, x, not args.no_step)

    print(f"torch {torch.__version__}, timm {timm.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}x3x{size[0]}x{size[1]}, stride 16, SIE off, drop_path "
          f"{args.drop_path}, optimizer step {'off' if args.no_step else 'SGD'}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    names = list(models)
    for _ in range(args.warmup):
        for name in names:
            steps[name]()
    times = {name: [] for name in names}
    for round_idx in range(args.iters):
        order = names if round_idx % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(steps[name]())
    print(f"load average at end:   {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    rate = {name: args.batch * len(t) / sum(t) for name, t in times.items()}
    for name in names:
        print(f"{name:28s} {rate[name]:7.2f} images/s   median step "
              f"{statistics.median(times[name]):.3f} s   "
              f"({args.iters} timed, {args.warmup} warm-up)")
        print(f"{'':28s} steps [s]: {' '.join(f'{t:.2f}' for t in times[name])}")
    ours_name, ref_name, jpm_name = names[1], names[0], names[-1]
    ours, ref = rate[ours_name], rate[ref_name]
    print(f"ratio ours / timm: {ours / ref:.3f}x (target >= 0.9x); median of per-round ratios "
          f"{paired_ratio(times[ref_name], times[ours_name]):.3f}x")
    if not args.no_jpm:
        jpm = rate[jpm_name]
        print(f"JPM extra cost: {ours - jpm:.2f} images/s fewer ({(ours / jpm - 1) * 100:.1f}% "
              f"more time per image than JPM off); median of per-round time ratios "
              f"{(paired_ratio(times[jpm_name], times[ours_name]) - 1) * 100:.1f}%")


def paired_ratio(times_a, times_b) -> float:
    """Median over rounds of time(a) / time(b) = throughput(b) / throughput(a); robust to load
    changes between rounds (the models of one round ran back to back)."""
    return statistics.median(ta / tb for ta, tb in zip(times_a, times_b))

if __name__ == "__main__":
    main()
