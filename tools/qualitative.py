"""Qualitative figures of two or more text-to-image runs, on the same queries in every run.

    python -m tools.qualitative --runs logs/base_seed0 logs/tgmim_seed0 --names Base +TG-MIM \\
        --out figures/qualitative [--epoch N] [--seed 0] [--failures 6] [--topk 5] \\
        [--neighbours 4] [--attention 4] [--fail-in any|first|all] [--opts KEY VALUE ...]

A run is a run folder -- train.py's OUTPUT_DIR or the launcher's ``<run>/`` (its ``train/`` is
used) -- or a checkpoint file; a folder gives its last ``transformer_<epoch>.pth``
(``utils.run_files``) or that of ``--epoch``. The model is loaded as test.py loads it: the
checkpoint's stored config (``utils.eval_config.resolve_eval_config``, ``--opts`` applied, e.g.
DATASETS.ROOT_DIR), ``make_model`` and ``model.weights.load_for_test``; the test split's
text-to-image set (``datasets.t2i``) and features (``processor.t2i.evaluate_t2i``) are test.py's,
so each ranking shown is the evaluated one (cosine, ties by ascending gallery index). Every run
must evaluate the same test set (the same captions and gallery images), else it is an error.
MODEL.TASK 'tbps' runs only.

Written to ``--out`` (small PNGs, matplotlib Agg; each file written atomically):

- ``failures_<run>.png``: K caption queries whose top-1 is wrong, with their top-k gallery
  images (pid, green = right pid) and the image the caption was written for (its rank). The
  queries are the same in every run's sheet: the test captions in a seeded order (``--seed``),
  kept when the top-1 is wrong in any run (``--fail-in any``, the default), in the first run
  (``first``: e.g. the baseline's failures, to see which a method fixes) or in every run
  (``all``); a sheet's row says whether that run's top-1 is right.
- ``neighbours_<run>.png``: M gallery images (seeded choice, the same in every run) and their
  top-k nearest gallery images by cosine of ``img_feat`` (the image itself left out): the image
  embedding space before / after e.g. IS-GVFC, one file per run.
- ``attention.png``: A caption queries (seeded choice, the same in every run), each over the image
  it was written for; one column per run. A run whose config enables TG-MIM
  (LOSS.TGMIM.ENABLE) is called as ``model(batch, tgmim=True)`` and must return ``tgmim_attn``
  (B, N_patches, L) (the contract of the image re-ID model; the dual encoder's TG-MIM branch
  follows it). Its map is the caption-averaged cross-attention: each word token's attention
  column normalised over the patches, then averaged over the caption's word tokens (start/end
  markers and padding left out). Deliberate: the plain average over the caption's tokens is
  constant (each patch query's attention sums to 1 over the tokens), so it would show nothing.
  The TG-MIM forward masks patches at random; the mask is drawn under ``torch.manual_seed(--seed)``
  for each query, so runs of the same grid see the same mask. Per query and TG-MIM run,
  ``tgmim_tokens_<run>_q<index>.png`` is ``utils.visualize.tgmim_attention_figure`` (the masked
  tokens, one map per word). A run without TG-MIM (a baseline) shows instead the cosine between
  each patch token (``img_tokens``, projected as ``img_feat`` is where the tower projects) and the
  caption's global feature ``txt_feat``, on its own colour scale and labelled as such.
- ``index.json``: the runs (checkpoint, epoch), the chosen queries and images, and the files.
"""
from __future__ import annotations

import argparse
import inspect
import io
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from datasets.make_dataloader import build_dataset_rank0_first, build_test_loader
from datasets.t2i import T2ISet, t2i_sets
from datasets.tokenize import build_tokenizer
from model.make_model import make_model
from model.weights import load_for_test
from processor.t2i import T2IEvaluation, evaluate_t2i
from utils.atomic import atomic_write, atomic_write_text
from utils.checkpoint import checkpoint_meta, load_checkpoint
from utils.dist import resolve_device, unwrap
from utils.eval_config import has_clip_tower, resolve_eval_config
from utils.metrics import cosine_similarity_matrix
from utils.provenance import flatten_config
from utils.run_files import list_checkpoints
from utils.visualize import (heatmap_grid_figure, plt, ranked_list_figure, t2i_failure_sheet,
                             tgmim_attention_figure)

logger = logging.getLogger("phasereid")

FAIL_IN = ("any", "first", "all")
#: token strings that are not words of the caption (as utils.visualize.tgmim_attention_figure)
NOT_WORDS = ("", "<start_of_text>", "<end_of_text>")


@dataclass
class Run:
    """One loaded run: its model, config, test set and test-split evaluation."""

    name: str
    weight: str
    epoch: Optional[int]
    cfg: object
    model: torch.nn.Module
    device: torch.device
    tokenizer: object
    t2i: T2ISet
    evaluation: T2IEvaluation

    @property
    def has_tgmim(self) -> bool:
        return bool(self.cfg.LOSS.TGMIM.ENABLE)


# -- runs ---------------------------------------------------------------------------------------
def resolve_weight(path: str, epoch: Optional[int] = None) -> str:
    """The checkpoint of a run folder (train.py's OUTPUT_DIR, or the launcher's run folder with
    ``train/``) -- the last one, or ``epoch``'s -- or ``path`` itself when it is a file."""
    if os.path.isfile(path):
        if epoch is not None:
            raise ValueError(f"--epoch {epoch} with a checkpoint file ({path}): give the run "
                             "folder instead, or drop --epoch")
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--runs {path}: no such run folder or checkpoint file")
    folder = os.path.join(path, "train") if os.path.isdir(os.path.join(path, "train")) else path
    found = list_checkpoints(folder)
    if not found:
        raise FileNotFoundError(f"--runs {path}: no transformer_<epoch>.pth in {folder} (train "
                                "the run first, or name a checkpoint file)")
    if epoch is None:
        return found[max(found)]
    if epoch not in found:
        raise FileNotFoundError(f"--runs {path}: no checkpoint of epoch {epoch} in {folder} "
                                f"(epochs there: {sorted(found)})")
    return found[epoch]


def run_name(path: str) -> str:
    """A file-name-safe name of a run from its path (a launcher run folder's name, not 'train')."""
    folder = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else \
        os.path.abspath(path)
    if os.path.basename(folder) == "train":
        folder = os.path.dirname(folder)
    return safe_name(os.path.basename(folder))


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name) or "run"


_DATASETS: Dict[str, object] = {}


def load_run(path: str, name: str, opts: Sequence[str] = (), epoch: Optional[int] = None) -> Run:
    """Load a run's checkpoint as test.py does and evaluate it on its test split."""
    weight = resolve_weight(path, epoch)
    ckpt = load_checkpoint(weight)
    meta = checkpoint_meta(ckpt, weight)
    cfg = resolve_eval_config(["TEST.WEIGHT", weight, *map(str, opts)],
                              stored_config=meta["config"],
                              clip_tower=has_clip_tower(ckpt["model"]))
    if cfg.MODEL.TASK != "tbps":
        raise ValueError(f"{weight}: MODEL.TASK {cfg.MODEL.TASK!r}; the qualitative figures are "
                         "for text-to-image runs (MODEL.TASK 'tbps')")
    device = resolve_device(cfg)
    # one parse per dataset config (runs of one study share it)
    key = json.dumps({k: v for k, v in flatten_config(cfg).items()
                      if k.startswith("DATASETS.")}, sort_keys=True, default=str)
    if key not in _DATASETS:
        _DATASETS[key] = build_dataset_rank0_first(cfg)
    dataset = _DATASETS[key]
    # test.py's config switches TG-MIM off (training-only); a run trained with it gets its head
    # back, from resume.pth (transformer_<epoch>.pth leaves training-only modules out)
    trained_tgmim = trained_with_tgmim(meta.get("config"))
    if trained_tgmim:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.LOSS.TGMIM.ENABLE = True
        cfg.freeze()
    model = make_model(cfg, meta["num_classes"], meta["num_cams"], meta["num_views"],
                       load_weights=False, lora=False)
    load_for_test(model, ckpt, meta, weight, logger)
    if trained_tgmim:
        load_tgmim_head(model, weight, meta.get("epoch"))
    model.to(device).eval()
    tokenizer = build_tokenizer(cfg)
    t2i = t2i_sets(dataset)["test"]
    evaluation = evaluate_t2i(cfg, model, t2i, device, tokenizer, i2t=False)
    return Run(name=name, weight=os.path.abspath(weight), epoch=meta.get("epoch"), cfg=cfg,
               model=model, device=device, tokenizer=tokenizer, t2i=t2i, evaluation=evaluation)


def trained_with_tgmim(config_text: Optional[str]) -> bool:
    """Whether the stored training config had LOSS.TGMIM.ENABLE (False without a stored config)."""
    if not config_text:
        return False
    tree = yaml.safe_load(config_text) or {}
    return bool(((tree.get("LOSS") or {}).get("TGMIM") or {}).get("ENABLE", False))


def load_tgmim_head(model: torch.nn.Module, weight: str, epoch: Optional[int]) -> None:
    """The TG-MIM head (``tgmim.*``) of the run's ``resume.pth`` beside ``weight``: the
    checkpoints test.py reads leave training-only modules out, resume.pth keeps them -- but only
    for its own (the last trained) epoch, so another epoch is an error, not a head of a different
    epoch drawn beside these weights."""
    resume = os.path.join(os.path.dirname(os.path.abspath(weight)), "resume.pth")
    if not os.path.isfile(resume):
        raise FileNotFoundError(f"{weight}: the run was trained with TG-MIM but {resume} (which "
                                "holds the TG-MIM head) is missing; the attention figure needs it")
    state = load_checkpoint(resume)
    if epoch is not None and state.get("epoch") != epoch:
        raise ValueError(f"{weight} is epoch {epoch} but {resume} holds the TG-MIM head of "
                         f"epoch {state.get('epoch')}: use --epoch {state.get('epoch')} (the head "
                         "of other epochs is not kept)")
    head = {k[len("tgmim."):]: v for k, v in state["model"].items() if k.startswith("tgmim.")}
    if not head:
        raise KeyError(f"{resume} has no tgmim.* weights although the run's config enables TG-MIM")
    model.tgmim.load_state_dict(head)


def check_same_test_set(runs: Sequence[Run]) -> None:
    """Every run must evaluate the same captions against the same gallery images."""
    first = runs[0]
    for r in runs[1:]:
        if (r.t2i.captions != first.t2i.captions
                or [i.path for i in r.t2i.images] != [i.path for i in first.t2i.images]):
            raise ValueError(f"runs {first.name} and {r.name} evaluate different test sets "
                             f"({len(first.t2i.captions)} captions x {len(first.t2i.images)} "
                             f"images vs {len(r.t2i.captions)} x {len(r.t2i.images)}, or other "
                             "files): pass --opts for the dataset keys so they agree, or compare "
                             "runs of one dataset")


# -- rankings -----------------------------------------------------------------------------------
def similarity(run: Run) -> np.ndarray:
    """(Q, G) cosine similarity of the caption queries and the gallery (the evaluated one)."""
    return cosine_similarity_matrix(run.evaluation.txt_feats, run.evaluation.img_feats).numpy()


def ranking(row: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` gallery indices by descending similarity, ties by ascending index."""
    return np.argsort(-row, kind="stable")[:k]


def rank_of(row: np.ndarray, index: int) -> int:
    """1-based rank of gallery item ``index`` in the ranking of ``row`` (stable ties)."""
    value = row[index]
    return int((row > value).sum() + (row[:index] == value).sum() + 1)


def choose_failures(runs: Sequence[Run], sims: Sequence[np.ndarray], count: int, seed: int,
                    fail_in: str) -> List[int]:
    """Up to ``count`` caption queries, in the seeded order of all test captions, whose top-1 is
    wrong in any / the first / every run (module docstring)."""
    t2i = runs[0].t2i
    wrong = np.stack([t2i.image_pids[np.argmax(sim, axis=1)] != t2i.caption_pids
                      for sim in sims])      # argmax: the first maximum, as the stable sort
    keep = {"any": wrong.any(axis=0), "first": wrong[0], "all": wrong.all(axis=0)}[fail_in]
    order = np.random.default_rng(seed).permutation(len(t2i.captions))
    return [int(q) for q in order if keep[q]][:count]


def choose(total: int, count: int, seed: int, salt: int) -> List[int]:
    """``count`` of ``range(total)`` (seeded by (seed, salt)), sorted."""
    rng = np.random.default_rng([seed, salt])
    return sorted(int(i) for i in rng.choice(total, size=min(count, total), replace=False))


# -- figures ------------------------------------------------------------------------------------
def save_png(fig, path: str) -> None:
    """The figure at 80 dpi as a 256-colour palette PNG (figures meant for docs/ stay small:
    about a third of the RGB file)."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    buf.seek(0)
    with Image.open(buf) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    atomic_write(path, "wb", lambda f: f.write(out.getvalue()))


def failure_figure(run: Run, sim: np.ndarray, queries: Sequence[int], topk: int):
    t2i = run.t2i
    top = [ranking(sim[q], topk) for q in queries]
    true = [int(t2i.caption_image[q]) for q in queries]
    return t2i_failure_sheet(
        [t2i.captions[q] for q in queries], [int(t2i.caption_pids[q]) for q in queries],
        [[t2i.images[j].path for j in row] for row in top],
        [[int(t2i.image_pids[j]) for j in row] for row in top],
        [t2i.images[i].path for i in true], [rank_of(sim[q], i) for q, i in zip(queries, true)],
        title=f"{run.name} (epoch {run.epoch}): failure cases, top-{topk} and the true image")


def neighbour_figure(run: Run, images: Sequence[int], topk: int):
    feats = F.normalize(run.evaluation.img_feats.float(), dim=1)
    sim = (feats[list(images)] @ feats.T).numpy()
    sim[np.arange(len(images)), list(images)] = -np.inf      # the image itself
    t2i = run.t2i
    top = [ranking(row, topk) for row in sim]
    return ranked_list_figure(
        [t2i.images[i].path for i in images], [int(t2i.image_pids[i]) for i in images],
        [[t2i.images[j].path for j in row] for row in top],
        [[int(t2i.image_pids[j]) for j in row] for row in top],
        title=f"{run.name} (epoch {run.epoch}): nearest gallery images by img_feat cosine")


def query_batch(run: Run, query: int) -> dict:
    """The batch of one caption and the (test-transformed) image it was written for."""
    t2i = run.t2i
    record = t2i.images[int(t2i.caption_image[query])]
    batch = next(iter(build_test_loader(run.cfg, [record])))
    ids, mask = run.tokenizer([t2i.captions[query]])
    out = {"img": batch["img"], "text_ids": ids, "text_mask": mask,
           "pid": torch.tensor([record.pid]), "camid": torch.tensor([record.camid]),
           "viewid": torch.tensor([record.viewid])}
    return {k: v.to(run.device) if torch.is_tensor(v) else v for k, v in out.items()}


def display_image(run: Run, batch: dict) -> np.ndarray:
    mean = torch.tensor(run.cfg.INPUT.PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(run.cfg.INPUT.PIXEL_STD).view(3, 1, 1)
    img = (batch["img"][0].detach().float().cpu() * std + mean).clamp(0, 1)
    return img.permute(1, 2, 0).numpy()


def word_positions(run: Run, ids: torch.Tensor, mask: torch.Tensor, length: int) -> List[int]:
    tokens = run.tokenizer.tokens(ids.cpu())
    return [i for i in range(min(length, len(tokens)))
            if bool(mask[i]) and tokens[i].strip() not in NOT_WORDS]


def caption_averaged_attention(attn: np.ndarray, words: Sequence[int]) -> np.ndarray:
    """(N,) mean over the word tokens of each token's attention column normalised over the N
    patches (module docstring: why not the plain mean)."""
    if not words:
        raise ValueError("the caption has no word token to average the attention over")
    cols = np.asarray(attn, dtype=np.float64)[:, list(words)]
    return (cols / np.maximum(cols.sum(axis=0, keepdims=True), 1e-12)).mean(axis=1)


@torch.no_grad()
def attention_map(run: Run, query: int, seed: int, out_dir: str, files: List[str]):
    """(map (gh, gw), its kind) of one query in one run (module docstring)."""
    net = unwrap(run.model)
    grid = tuple(int(g) for g in net.image_grid)
    batch = query_batch(run, query)
    if run.has_tgmim:
        if "tgmim" not in inspect.signature(net.forward).parameters:
            raise ValueError(f"run {run.name}: LOSS.TGMIM.ENABLE is on but its model's forward "
                             "takes no tgmim argument (model(batch, tgmim=True) returning "
                             "tgmim_attn is the contract)")
        torch.manual_seed(seed)
        out = run.model(batch, tgmim=True)
        if "tgmim_attn" not in out:
            raise KeyError(f"run {run.name}: model(batch, tgmim=True) returned no tgmim_attn "
                           f"(outputs: {sorted(out)})")
        attn = out["tgmim_attn"][0].float().cpu().numpy()
        if attn.shape[0] != grid[0] * grid[1]:
            raise ValueError(f"run {run.name}: tgmim_attn has {attn.shape[0]} patch rows, the "
                             f"image grid {grid[0]}x{grid[1]} has {grid[0] * grid[1]}")
        words = word_positions(run, batch["text_ids"][0], batch["text_mask"][0], attn.shape[1])
        mask = out.get("tgmim_mask")
        fig = tgmim_attention_figure(
            display_image(run, batch), attn, grid, run.tokenizer.tokens(batch["text_ids"][0].cpu()),
            token_mask=None if mask is None else mask[0].cpu().numpy().reshape(grid),
            title=f"{run.name}: TG-MIM cross-attention, query {query}")
        path = os.path.join(out_dir, f"tgmim_tokens_{run.name}_q{query}.png")
        save_png(fig, path)
        files.append(path)
        return caption_averaged_attention(attn, words).reshape(grid), "tgmim"
    out = run.model(batch)
    tokens = out["img_tokens"][0].float()
    if tokens.shape[0] != grid[0] * grid[1]:
        raise ValueError(f"run {run.name}: img_tokens has {tokens.shape[0]} tokens, the image "
                         f"grid {grid[0]}x{grid[1]} has {grid[0] * grid[1]}")
    cos = F.normalize(tokens, dim=-1) @ F.normalize(out["txt_feat"][0].float(), dim=-1)
    return cos.cpu().numpy().reshape(grid), "cosine"


def attention_figure(runs: Sequence[Run], queries: Sequence[int], seed: int, out_dir: str,
                     files: List[str]):
    maps = [[attention_map(r, q, seed, out_dir, files) for r in runs] for q in queries]
    images = [display_image(runs[0], query_batch(runs[0], q)) for q in queries]
    labels, scales = [], []
    for j, r in enumerate(runs):
        column = np.stack([np.abs(m[j][0]).max() for m in maps]) if maps else np.ones(1)
        top = float(max(column.max(), 1e-12))
        if r.has_tgmim:
            labels.append(f"{r.name}: TG-MIM cross-attention, caption-averaged (masked input)")
            scales.append({"cmap": "jet", "vmin": 0.0, "vmax": top})
        else:
            labels.append(f"{r.name}: no TG-MIM head; cos(patch token, caption feature)")
            scales.append({"cmap": "RdBu_r", "vmin": -top, "vmax": top})
    t2i = runs[0].t2i
    rows = [f"q{q} (pid {int(t2i.caption_pids[q])}): {t2i.captions[q]}" for q in queries]
    return heatmap_grid_figure(images, [[m[0] for m in row] for row in maps], rows, labels,
                               scales, title="Where the caption lands on its image")


# -- command line -------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.qualitative",
                                description="Failure cases, image-embedding neighbours and "
                                            "TG-MIM attention of several TBPS runs on the same "
                                            "queries (module docstring).")
    p.add_argument("--runs", nargs="+", required=True,
                   help="run folders (train.py OUTPUT_DIR or launcher run folder) or checkpoints")
    p.add_argument("--names", nargs="+", default=None, help="a name per run (default: folders)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--epoch", type=int, default=None,
                   help="the checkpoint epoch of every run folder (default: each one's last)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query / image choices")
    p.add_argument("--failures", type=int, default=6, help="failure-case queries per sheet")
    p.add_argument("--topk", type=int, default=5, help="ranked gallery images shown")
    p.add_argument("--neighbours", type=int, default=4, help="gallery images whose neighbours "
                                                             "are shown")
    p.add_argument("--attention", type=int, default=4, help="queries of the attention figure")
    p.add_argument("--fail-in", choices=FAIL_IN, default="any",
                   help="failure cases: top-1 wrong in any run (default), the first, or all")
    p.add_argument("--opts", nargs="*", default=[], help="KEY VALUE overrides for every run's "
                                                         "stored config (e.g. DATASETS.ROOT_DIR)")
    args = p.parse_args(argv)
    if args.names is not None and len(args.names) != len(args.runs):
        p.error(f"--names gives {len(args.names)} names for {len(args.runs)} runs")
    for key in ("failures", "topk", "neighbours", "attention"):
        if getattr(args, key) < 0 or (key == "topk" and args.topk < 1):
            p.error(f"--{key} {getattr(args, key)} must be >= {1 if key == 'topk' else 0}")
    if len(args.opts) % 2:
        p.error(f"--opts must be KEY VALUE pairs, got {args.opts}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    names = [safe_name(n) for n in (args.names or [run_name(r) for r in args.runs])]
    if len(set(names)) != len(names):
        names = [f"{n}-{i}" for i, n in enumerate(names)]
    runs = [load_run(path, name, args.opts, args.epoch) for path, name in zip(args.runs, names)]
    check_same_test_set(runs)
    os.makedirs(args.out, exist_ok=True)
    sims = [similarity(r) for r in runs]
    t2i = runs[0].t2i
    failures = choose_failures(runs, sims, args.failures, args.seed, args.fail_in)
    images = choose(len(t2i.images), args.neighbours, args.seed, 1)
    queries = choose(len(t2i.captions), args.attention, args.seed, 2)
    files: List[str] = []
    for run, sim in zip(runs, sims):
        if failures:
            path = os.path.join(args.out, f"failures_{run.name}.png")
            save_png(failure_figure(run, sim, failures, args.topk), path)
            files.append(path)
        if images:
            path = os.path.join(args.out, f"neighbours_{run.name}.png")
            save_png(neighbour_figure(run, images, args.topk), path)
            files.append(path)
    if queries:
        path = os.path.join(args.out, "attention.png")
        save_png(attention_figure(runs, queries, args.seed, args.out, files), path)
        files.append(path)
    index = {"command": "python -m tools.qualitative " + " ".join(sys.argv[1:] if argv is None
                                                                   else argv),
             "seed": args.seed, "fail_in": args.fail_in,
             "runs": [{"name": r.name, "weight": r.weight, "epoch": r.epoch,
                       "attention": "tgmim" if r.has_tgmim else "cosine"} for r in runs],
             "failure_queries": [{"index": q, "pid": int(t2i.caption_pids[q]),
                                  "caption": t2i.captions[q]} for q in failures],
             "neighbour_images": [{"index": i, "path": t2i.images[i].path} for i in images],
             "attention_queries": queries,
             "files": [os.path.relpath(f, args.out) for f in files]}
    if len(failures) < args.failures:
        index["note"] = (f"only {len(failures)} test captions have a wrong top-1 "
                         f"(--fail-in {args.fail_in})")
    atomic_write_text(os.path.join(args.out, "index.json"), json.dumps(index, indent=2) + "\n")
    print(f"Wrote {len(files)} figures and index.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
