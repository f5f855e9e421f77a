"""Cost of LGUR beside the dual encoder (issue 16, item 6): parameters, seconds per training
iteration and inference latency per caption query / gallery image, LGUR vs the CLIP ITC baseline
at the same input size and with the same image tower.

The two SynthPedes recipes: configs/Synth/lgur_quickstart.yml (LGUR on the quickstart's tiny
open_clip image tower, tiny frozen BERT -> BiLSTM) and configs/Synth/tbps_quickstart.yml with
LOSS.NAMES [itc] (the CLIP ITC baseline: the same tiny image tower, a tiny CLIP text tower). No
dataset is read: each model gets the same random images (INPUT.SIZE_TRAIN) and the same captions
(SynthPedes-like sentences, tokenised by each model's own tokenizer). One training iteration =
forward, composed loss, backward, Adam step; the models are timed round by round, interleaved,
so that a machine that speeds up or slows down affects both alike; medians are reported.
Inference: ``encode_image`` / ``encode_text`` in eval mode under no_grad on batches of
--infer-batch, divided by the batch (seconds per gallery image / per query); LGUR is timed in its
evaluation build (no text-guided block, no ID classifiers), as test.py builds it.

    python bench/bench_lgur_cost.py [--rounds 5] [--batch 64] [--infer-batch 256] [--opts K V ...]
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
from datasets.tokenize import build_tokenizer  # noqa: E402
from losses.make_loss import make_loss  # noqa: E402
from model.make_model import make_model  # noqa: E402
from solver.phase_plan import PhasePlan  # noqa: E402

MODELS = {
    "CLIP ITC (tiny towers)": ("tbps_quickstart.yml", ["LOSS.NAMES", "['itc']"]),
    "LGUR (tiny image tower, tiny BERT)": ("lgur_quickstart.yml", []),
}
CAPTION = ("a young man wearing a red t-shirt with a logo on the chest, black pants and white "
           "shoes, carrying a navy backpack and no hat.")
NUM_CLASSES = 270   # the quickstart's training identities (300 - 30 held out)


def build(recipe: str, opts: list, batch: int):
    cfg = load_config(os.path.join(ROOT, "configs", "Synth", recipe),
                      opts + ["MODEL.DEVICE", "cpu"] + EXTRA)
    torch.manual_seed(0)
    model = make_model(cfg, NUM_CLASSES, 1, 1).train()
    evaluation = make_model(cfg, NUM_CLASSES, 1, 1, training=False).eval()
    composer = make_loss(cfg, NUM_CLASSES, model.feat_dim)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids, mask = build_tokenizer(cfg)([CAPTION] * batch)
    h, w = cfg.INPUT.SIZE_TRAIN
    data = {"img": torch.randn(batch, 3, h, w), "text_ids": ids, "text_mask": mask,
            "pid": torch.arange(batch) // 4}
    return cfg, model, evaluation, composer, optimizer, data, PhasePlan(cfg).state(1)


def train_step(model, composer, optimizer, batch, state) -> float:
    start = time.perf_counter()
    total, _ = composer(model(batch), batch, state)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return time.perf_counter() - start


@torch.no_grad()
def latency(model, cfg, n: int):
    """(s per gallery image, s per caption query) on batches of n."""
    h, w = cfg.INPUT.SIZE_TEST
    img = torch.randn(n, 3, h, w)
    ids, mask = build_tokenizer(cfg)([CAPTION] * n)
    start = time.perf_counter()
    model.encode_image(img)
    per_image = (time.perf_counter() - start) / n
    start = time.perf_counter()
    model.encode_text(ids, mask)
    return per_image, (time.perf_counter() - start) / n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--infer-batch", type=int, default=256)
    parser.add_argument("--opts", nargs="*", default=[], help="KEY VALUE overrides for both")
    args = parser.parse_args(argv)
    global EXTRA
    EXTRA = list(args.opts)
    built = {name: build(recipe, opts, args.batch) for name, (recipe, opts) in MODELS.items()}
    for name, (cfg, model, _, composer, optimizer, data, state) in built.items():
        train_step(model, composer, optimizer, data, state)   # warm-up
    times = {name: [] for name in built}
    lat = {name: [] for name in built}
    for _ in range(args.rounds):
        for name, (cfg, model, evaluation, composer, optimizer, data, state) in built.items():
            times[name].append(train_step(model, composer, optimizer, data, state))
            lat[name].append(latency(evaluation, cfg, args.infer_batch))
    base = next(iter(built))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"input {list(built[base][0].INPUT.SIZE_TRAIN)}, {args.rounds} rounds (medians)\n")
    print("| model | params (train build) | trainable | params (eval build) | feature dim | "
          "s / iteration | x ITC | ms / query | ms / gallery image |")
    print("|---|---|---|---|---|---|---|---|---|")
    base_t = float(np.median(times[base]))
    for name, (cfg, model, evaluation, *_rest) in built.items():
        t = float(np.median(times[name]))
        img_s = float(np.median([x[0] for x in lat[name]]))
        txt_s = float(np.median([x[1] for x in lat[name]]))
        params = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        eval_params = sum(p.numel() for p in evaluation.parameters())
        print(f"| {name} | {params:,} | {trainable:,} | {eval_params:,} | {model.feat_dim} | "
              f"{t:.4f} | {t / base_t:.2f} | {1e3 * txt_s:.3f} | {1e3 * img_s:.3f} |")
    lgur = built[list(built)[1]][1]
    groups = {}
    for pname, p in lgur.named_parameters():
        key = pname.split(".")[0] + ("." + pname.split(".")[1] if pname.startswith("text_tower")
                                     else "")
        groups[key] = groups.get(key, 0) + p.numel()
    print("\nLGUR parameters by module (train build): "
          + ", ".join(f"{k} {v:,}" for k, v in groups.items()))
    return 0


EXTRA: list = []

if __name__ == "__main__":
    sys.exit(main())
