"""Ablation benches on SynthPedes as lists of conditions run through the launcher.

A ``Condition`` is a name, a Synth recipe (``configs/Synth/<recipe>``) and KEY VALUE overrides.
Each condition x seed is one launcher experiment (``launcher.experiment.make_experiment``) run
for that seed (``launcher.runner.run_seed``: run folder, lock, train.py, test.py) with:

- the recipe's own SOLVER.MAX_EPOCHS (or ``epochs``), one checkpoint, at the last epoch;
- SOLVER.EVAL_PERIOD 0 (no in-training evaluation);
- the last checkpoint tested with its features exported (TEST.EXPORT_FEATURES True,
  TEST.VIS_QUERIES 0); its summary.json is read through ``utils.summary.TestSummary``.

From the exported features the result gives mAP / R1 / mINP (percent) and the number of valid
queries on all queries and on the SynthPedes query subsets 'dark' (the cameras designed dark,
mean luma < 0.35) and 'near_twin' (identities with a near-twin in the gallery), the wall seconds
of train.py and the median training seconds per epoch (from the train log). It is kept as
``<run>/ablation_<condition>.json``, so a rerun redoes nothing that finished -- while the run
folder holds the same training config (``launcher.identity``; else an error naming the keys, or
with ``--discard-stale`` the run is trained anew).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from configs import load_config
from utils.atomic import atomic_write_text

from .experiment import ROOT, Experiment, flat, make_experiment, run_lock
from .identity import (DISCARD_FLAG, StaleRun, check_run, discard_run, read_test_summary,
                       stale_message)
from .runner import Failure, run_seed

SYNTH = os.path.join(ROOT, "configs", "Synth")
METRICS = ("mAP", "R1", "mINP")
SUBSETS = ("all", "dark", "near_twin")
# test.py options of every ablation test (neither changes the numbers)
TEST_OPTS = ("TEST.EXPORT_FEATURES", "True", "TEST.VIS_QUERIES", "0")
EPOCH_TIME = re.compile(r"^.*Epoch \d+/\d+ \|.*\| ([\d.]+) s \|")


@dataclass(frozen=True)
class Condition:
    """One row of an ablation table: a Synth recipe plus KEY VALUE overrides."""

    name: str
    recipe: str
    opts: Tuple[str, ...] = ()


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


def merge_opts(*lists: Sequence[str]) -> List[str]:
    """KEY VALUE lists merged in order; a later value of a key replaces the earlier one (as in
    yacs' merge_from_list) and keeps its place."""
    merged: "OrderedDict[str, str]" = OrderedDict()
    for opts in lists:
        opts = [str(o) for o in opts]
        if len(opts) % 2:
            raise ValueError(f"overrides must be KEY VALUE pairs, got an odd number: {opts}")
        for key, value in zip(opts[::2], opts[1::2]):
            merged[key] = value
    return flat(merged.items())


def condition_experiment(cond: Condition, seed: int, root: str, extra: Sequence[str] = (),
                         epochs: Optional[int] = None) -> Experiment:
    """The launcher experiment of one condition (its phase plan validated)."""
    config = os.path.join(SYNTH, cond.recipe)
    opts = merge_opts(cond.opts, ["SOLVER.EVAL_PERIOD", "0"], extra)
    if epochs is None:
        epochs = int(load_config(config, opts).SOLVER.MAX_EPOCHS)
    argv = ["--config", os.path.relpath(config, ROOT), "--seeds", str(seed), "--epochs",
            str(epochs), "--save-every", str(epochs), "--output-root", root, "--opts", *opts,
            "--test-opts", *TEST_OPTS]
    return make_experiment(config, root, epochs, epochs, opts=opts, test_opts=TEST_OPTS,
                           argv=argv)


def result_path(exp: Experiment, cond: Condition, seed: int) -> str:
    return os.path.join(exp.run_dir(seed), f"ablation_{slug(cond.name)}.json")


def epoch_times(train_log: str) -> list:
    """Training seconds of every epoch, from the 'Epoch e/E | ... | 12.3 s |' log lines."""
    with open(train_log) as f:
        return [float(m.group(1)) for m in map(EPOCH_TIME.search, f) if m]


def epoch_seconds(train_log: str) -> float:
    """Median training seconds per epoch of one run (the median, so an epoch slowed by another
    job on the machine does not move it)."""
    times = epoch_times(train_log)
    return float(np.median(times)) if times else float("nan")


def subset_metrics(cfg, features_path: str) -> Dict[str, dict]:
    """Market-1501 protocol metrics (percent) of the exported test features on all queries and
    on each SynthPedes query subset, with the run's distance and normalisation."""
    from datasets.factory import build_dataset
    from utils.metrics import evaluate_features

    data = np.load(features_path)
    ds = build_dataset(cfg)
    nq = len(ds.query)
    qf, gf = data["feats"][:nq], data["feats"][nq:]
    pids, camids = data["pids"], data["camids"]
    masks = {"all": np.ones(nq, dtype=bool),
             "dark": np.array([bool(r.attrs.get("dark")) for r in ds.query]),
             "near_twin": np.array([bool(r.attrs.get("near_twin")) for r in ds.query])}
    out = {}
    for name, mask in masks.items():
        res = evaluate_features(qf[mask], gf, pids[:nq][mask], pids[nq:], camids[:nq][mask],
                                camids[nq:], metric=cfg.TEST.DISTANCE, feat_norm=cfg.TEST.FEAT_NORM)
        out[name] = {"mAP": 100 * res.mAP, "R1": 100 * res.cmc[0], "mINP": 100 * res.mINP,
                     "queries": int(res.num_valid)}
    return out


def kept_result(exp: Experiment, cond: Condition, seed: int,
                discard_stale: bool = False) -> Optional[dict]:
    """The kept result of a condition x seed, or None. A result kept in a run folder that holds
    another training config (launcher.identity) is an error (StaleRun), or with
    ``discard_stale`` None (the run is then emptied and trained anew by run_seed)."""
    path = result_path(exp, cond, seed)
    if not os.path.exists(path):
        return None
    check = check_run(exp, seed)
    if check.stale:
        if discard_stale:
            return None
        raise StaleRun(stale_message([check]))
    with open(path) as f:
        return json.load(f)


def run_condition(cond: Condition, seed: int, root: str, extra: Sequence[str] = (),
                  epochs: Optional[int] = None, discard_stale: bool = False) -> dict:
    """Train and test one condition x seed through the launcher (resuming); its result."""
    exp = condition_experiment(cond, seed, root, extra, epochs)
    path = result_path(exp, cond, seed)
    kept = kept_result(exp, cond, seed, discard_stale)
    if kept is not None:
        return kept
    os.makedirs(exp.run_dir(seed), exist_ok=True)
    check = check_run(exp, seed)
    if check.stale and discard_stale:   # now, not in run_seed: the log below is in the folder
        with run_lock(exp.run_dir(seed)):
            discard_run(exp, seed)
        print(f"{cond.name} seed {seed}: {DISCARD_FLAG}: emptied; {check.describe()}",
              flush=True)
    failures: List[Failure] = []
    # the launcher's output (and train.py's / test.py's) goes to a log, not the console
    with open(os.path.join(exp.run_dir(seed), "ablation_stdout.txt"), "a") as log, \
            contextlib.redirect_stdout(log):
        train_seconds = run_seed(exp, seed, False, failures, discard_stale)
    if failures:
        raise RuntimeError(f"{cond.name} seed {seed}: " + "; ".join(map(str, failures)))
    summary = read_test_summary(exp, seed, exp.epochs)
    if summary is None:
        raise RuntimeError(f"{cond.name} seed {seed}: no test result of epoch {exp.epochs} in "
                           f"{exp.test_dir(seed, exp.epochs)}")
    cfg = load_config(exp.config, flat(exp.toggle_opts + exp.user_opts))
    train_log = os.path.join(exp.train_dir(seed), "train_log.txt")
    result = {"condition": cond.name, "seed": seed, "recipe": cond.recipe,
              "opts": flat(exp.user_opts), "weight": summary.weight, "train_log": train_log,
              "train_seconds": float("nan") if train_seconds is None else train_seconds,
              "epoch_seconds": epoch_seconds(train_log),
              **subset_metrics(cfg, os.path.join(exp.test_dir(seed, exp.epochs),
                                                 "features.npz"))}
    atomic_write_text(path, json.dumps(result, indent=1))
    return result


def collect(conditions: Sequence[Condition], names: Sequence[str], seeds: Sequence[int],
            root: str, extra: Sequence[str] = (), subset: str = "dark",
            table_only: bool = False, epochs: Optional[int] = None,
            discard_stale: bool = False) -> list:
    """Results of every seed x named condition: run (resuming) or, with ``table_only``, read the
    finished ones; one progress line per run naming ``subset``'s mAP. ``discard_stale``: see
    :func:`kept_result`."""
    by_name = {c.name: c for c in conditions}
    results = []
    for seed in seeds:
        for name in names:
            cond = by_name[name]
            if table_only:
                kept = kept_result(condition_experiment(cond, seed, root, extra, epochs), cond,
                                   seed)
                if kept is not None:
                    results.append(kept)
                continue
            t = time.time()
            r = run_condition(cond, seed, root, extra, epochs, discard_stale)
            results.append(r)
            print(f"{name} seed {seed}: mAP {r['all']['mAP']:.1f} R1 {r['all']['R1']:.1f} "
                  f"{subset} mAP {r[subset]['mAP']:.1f} {r['epoch_seconds']:.1f} s/epoch "
                  f"({time.time() - t:.0f} s)", flush=True)
    return results


def dry_run(conditions: Sequence[Condition], names: Sequence[str], seeds: Sequence[int],
            root: str, extra: Sequence[str] = (), epochs: Optional[int] = None) -> None:
    """Print each run's launcher plan (its config validated); start and write nothing."""
    from .runner import print_plan

    by_name = {c.name: c for c in conditions}
    for name in names:
        for seed in seeds:
            print(f"== {name} (seed {seed})")
            print_plan(condition_experiment(by_name[name], seed, root, extra, epochs), [seed],
                       False)


def metric_cells(rs: list, subsets) -> list:
    """'mean ± std' (sample std over seeds) of every METRICS entry of every subset."""
    cells = []
    for subset in subsets:
        for m in METRICS:
            v = np.array([r[subset][m] for r in rs])
            cells.append(f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0:.1f}")
    return cells


def add_arguments(parser, conditions: Sequence[Condition], default_root: str) -> None:
    """The command-line options every ablation bench shares."""
    names = [c.name for c in conditions]
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output-root", default=default_root)
    parser.add_argument("--conditions", nargs="+", default=names, choices=names)
    parser.add_argument("--markdown", default="", help="also write the table to this file")
    parser.add_argument("--table-only", action="store_true", help="summarise finished runs")
    parser.add_argument("--opts", nargs="*", default=[], help="KEY VALUE for every run")
    parser.add_argument("--epochs", type=int, default=None,
                        help="SOLVER.MAX_EPOCHS of every run (default: each recipe's own); "
                             "e.g. 1 for a smoke check")
    parser.add_argument("--dry-run", action="store_true",
                        help="print every run's launcher plan and do nothing else")
    parser.add_argument(DISCARD_FLAG, dest="discard_stale", action="store_true",
                        help="a run folder that holds results of another training config is "
                             "emptied and trained anew (without it: an error naming the keys)")


def run_ablation(args, conditions: Sequence[Condition], subset: str, make_table) -> int:
    """The body of an ablation script: --dry-run prints the commands; otherwise run (or, with
    --table-only, read) every condition x seed, print ``make_table(results)`` and write it to
    --markdown when given."""
    if args.dry_run:
        dry_run(conditions, args.conditions, args.seeds, args.output_root, args.opts, args.epochs)
        return 0
    results = collect(conditions, args.conditions, args.seeds, args.output_root, args.opts,
                      subset, args.table_only, args.epochs, args.discard_stale)
    text = make_table(results)
    print(text)
    if args.markdown:
        atomic_write_text(args.markdown, text + "\n")
    return 0
