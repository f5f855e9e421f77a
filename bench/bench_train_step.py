"""Where a training step's time goes: images/s of data-only, model-only and full steps, one run.

Builds the data, model, loss composer and optimizer exactly as train.py does for a config
(default: the quickstart), then times, in one process on the same machine:

- **data-only**: iterate the training loader (read + decode or cache lookup, augmentation,
  collation), no model;
- **model-only**: one fixed batch, forward + loss + backward + optimizer step, no loader;
- **full**: the training loop's work, loader and step together.

Each is timed over ``--steps`` iterations after ``--warmup`` untimed ones and reported as
images/s and as a share of the full step (data / full and model / full; data + model close to
1 means the two are serial, as with ``DATALOADER.NUM_WORKERS 0``). The machine's fp32 matmul
speed (``../shared/tools/matmul_gflops.py``) is printed beside the numbers, because machines of
the same kind differ about 4x.

Usage:
    python bench/bench_train_step.py [--config configs/Synth/quickstart.yml] [--steps 40]
        [KEY VALUE ...]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import load_config  # noqa: E402
from datasets.make_dataloader import build_train_loader, make_dataloader  # noqa: E402
from losses.make_loss import make_loss  # noqa: E402
from model.make_model import make_model  # noqa: E402
from processor.processor import forward_options  # noqa: E402
from solver.make_optimizer import make_optimizer  # noqa: E402
from solver.phase_plan import PhasePlan  # noqa: E402
from utils.dist import resolve_device  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs/Synth/quickstart.yml"))
    parser.add_argument("--steps", type=int, default=40, help="timed iterations per mode")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations per mode")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return parser.parse_args(argv)


def matmul_gflops() -> str:
    """The machine's fp32 matmul speed as the shared tool prints it."""
    tool = os.path.join(ROOT, "..", "shared", "tools", "matmul_gflops.py")
    if not os.path.isfile(tool):
        return f"fp32 matmul unknown ({tool} not found: measure it and state it with the times)"
    out = subprocess.run([sys.executable, tool], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return f"fp32 matmul unknown ({tool} failed: {out.stderr.strip()[-200:]})"
    return out.stdout.strip().splitlines()[-1] + " (../shared/tools/matmul_gflops.py)"


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.opts)
    torch.manual_seed(cfg.SOLVER.SEED)
    plan = PhasePlan(cfg)
    state = plan.state(1)
    device = resolve_device(cfg)
    t0 = time.perf_counter()
    data = make_dataloader(cfg)
    t_data_setup = time.perf_counter() - t0
    ds = data.dataset
    model = make_model(cfg, ds.num_train_pids, ds.num_cams, ds.num_views).to(device)
    composer = make_loss(cfg, ds.num_train_pids, model.feat_dim).to(device)
    optimizer, _ = make_optimizer(cfg, model, composer.center)
    loader = build_train_loader(cfg, data.train_set, state.num_instances)
    loader.batch_sampler.set_epoch(1)
    data.train_set.set_epoch(1)
    model.train()
    options = forward_options(state)

    def step(batch):
        outputs = model(batch, **options)
        total, _ = composer(outputs, batch, state)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    def batches():
        while True:
            for batch in loader:
                yield batch

    def timed(fn, n):
        for _ in range(args.warmup):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    it = batches()
    fixed = to_device(next(it), device)
    bs = fixed["img"].shape[0]
    t_data = timed(lambda: next(it), args.steps)
    t_model = timed(lambda: step(fixed), args.steps)
    t_full = timed(lambda: step(to_device(next(it), device)), args.steps)
    n = args.steps * bs
    speed = matmul_gflops()
    print(f"config {os.path.relpath(args.config, ROOT)} {' '.join(args.opts)}")
    print(f"machine: {torch.get_num_threads()} torch threads, {speed}")
    print(f"batch {bs}, {args.steps} timed steps per mode after {args.warmup} warm-up; "
          f"data setup {t_data_setup:.1f} s ({len(ds.train)} training images)")
    print(f"{'mode':<12}{'images/s':>10}{'ms/step':>10}{'share of full':>15}")
    for name, t in (("data-only", t_data), ("model-only", t_model), ("full", t_full)):
        print(f"{name:<12}{n / t:>10.1f}{1000 * t / args.steps:>10.1f}{t / t_full:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
