"""Training cost of the text-guidance branches: seconds per iteration on the same batches.

Builds the Synth recipes' models (baseline, + TG-MIM, + CLIP fusion open_clip minimal and hf
quickwin, tiny towers), and times one training iteration (forward incl. TG-MIM's masked pass,
composed loss, backward, optimiser step) on the same batches, the conditions interleaved round
by round so that a machine that speeds up or slows down affects them alike. Reports the median
seconds per iteration and the ratio to the baseline.

    python bench/bench_text_cost.py [--rounds 5] [--batches 6] [--opts KEY VALUE ...]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import load_config  # noqa: E402
from datasets.make_dataloader import build_train_loader, make_dataloader  # noqa: E402
from losses.make_loss import make_loss  # noqa: E402
from model.make_model import make_model  # noqa: E402
from processor.processor import forward_options  # noqa: E402
from solver.phase_plan import PhasePlan  # noqa: E402

RECIPES = {
    "baseline": "synth_baseline.yml",
    "+TG-MIM": "synth_tgmim.yml",
    "+CLIP open_clip minimal (tiny)": "synth_openclip_minimal.yml",
    "+CLIP hf (tiny TinyCLIP-like)": "synth_tinyclip_quickwin.yml",
}


def setup(recipe: str, opts: list, num_batches: int):
    cfg = load_config(os.path.join(ROOT, "configs", "Synth", recipe), opts)
    data = make_dataloader(cfg)
    data.train_set.set_epoch(1)
    torch.manual_seed(0)
    model = make_model(cfg, data.num_classes, data.dataset.num_cams, data.dataset.num_views)
    model.train()
    composer = make_loss(cfg, data.num_classes, model.feat_dim)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loader = build_train_loader(cfg, data.train_set, cfg.DATALOADER.NUM_INSTANCE)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == num_batches:
            break
    return model, composer, optimizer, batches, PhasePlan(cfg).state(1)


def step(model, composer, optimizer, batch, state) -> None:
    outputs = model(batch, **forward_options(state))
    total, _ = composer(outputs, batch, state)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--opts", nargs="*", default=[])
    args = parser.parse_args(argv)
    runs = {name: setup(recipe, list(args.opts), args.batches) for name, recipe in RECIPES.items()}
    for name, run in runs.items():   # warm-up
        step(*run[:3], run[3][0], run[4])
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (model, composer, optimizer, batches, state) in runs.items():
            for batch in batches:
                start = time.perf_counter()
                step(model, composer, optimizer, batch, state)
                times[name].append(time.perf_counter() - start)
    base = float(np.median(times["baseline"]))
    print(f"torch threads {torch.get_num_threads()}, batch {runs['baseline'][3][0]['img'].shape[0]}"
          f", {args.rounds} rounds x {args.batches} batches")
    print("| condition | s / iteration (median) | x baseline | extra s / iteration |")
    print("|---|---|---|---|")
    for name, values in times.items():
        med = float(np.median(values))
        print(f"| {name} | {med:.3f} | {med / base:.2f} | {med - base:+.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
