"""Loss-recipe ablation on SynthPedes (issue: phase-scheduled loss recipes).

Trains every condition x seed with train.py, evaluates the last checkpoint with test.py
(features exported), and reports mean +/- std over seeds of mAP, R1 and mINP on all queries and
on the dark-camera queries (SynthPedes cameras designed dark, mean luma < 0.35), plus the
training time. ``one_run`` / ``evaluate_subsets`` also serve bench/ablation_text.py (near-twin
subset, seconds per epoch). Resumable: a finished training or test is not redone; per-run
results are kept as JSON next to the run.

    python bench/ablation_phased.py --seeds 0 1 2 --output-root logs/ablation_phased
    python bench/ablation_phased.py --table-only --output-root logs/ablation_phased \
        --markdown docs/ablation_phased.md

Conditions are the Synth recipes (configs/Synth/synth_*.yml) with, where named, a few overrides.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import load_config  # noqa: E402
from datasets.factory import build_dataset  # noqa: E402
from utils.metrics import evaluate_features  # noqa: E402

SYNTH = os.path.join(ROOT, "configs", "Synth")
CONDITIONS = {
    "baseline": ("synth_baseline.yml", []),
    "+SupCon": ("synth_ce_triplet_pk8_prebn_supcon_prebn.yml", []),
    "+TripletX": ("synth_baseline.yml", ["LOSS.TRIPLETX.ENABLE", "True", "LOSS.TRIPLETX.W", "1.2",
                                         "LOSS.TRIPLETX.WARMUP_EPOCHS", "3",
                                         "DATALOADER.PHASED.ENABLE", "True"]),
    "+routing hard": ("synth_ce_triplet_tripletx_brightness.yml", []),
    "+routing soft": ("synth_ce_triplet_tripletx_brightness.yml",
                      ["LOSS.BRIGHTNESS.MODE", "soft"]),
    "+IS-GVFC": ("synth_baseline.yml", ["LOSS.ISGVFC.ENABLE", "True",
                                        "LOSS.ISGVFC.INCLUDE_SELF", "False"]),
    "phased A-B-C": ("synth_A_ce_triplet_B_ce_tripletx_supcon_C_ce_triplet_supcon.yml", []),
    # controls: K separately from the loss (batch 32: K 8 means only 4 identities per batch),
    # and IS-GVFC as released (self-similarity kept in each row)
    "baseline K 8": ("synth_baseline.yml", ["DATALOADER.NUM_INSTANCE", "8"]),
    "+SupCon K 4": ("synth_ce_triplet_pk8_prebn_supcon_prebn.yml",
                    ["DATALOADER.PHASED.K_WHEN_SUPCON", "4"]),
    "+IS-GVFC (self kept)": ("synth_baseline.yml", ["LOSS.ISGVFC.ENABLE", "True"]),
    "+TripletX K 4": ("synth_baseline.yml", ["LOSS.TRIPLETX.ENABLE", "True",
                                             "LOSS.TRIPLETX.W", "1.2",
                                             "LOSS.TRIPLETX.WARMUP_EPOCHS", "3"]),
    "+TripletX K 4 unnormalised": ("synth_baseline.yml", [
        "LOSS.TRIPLETX.ENABLE", "True", "LOSS.TRIPLETX.W", "1.2", "LOSS.TRIPLETX.WARMUP_EPOCHS",
        "3", "LOSS.TRIPLETX.NORM_FEAT", "False"]),
}
METRICS = ("mAP", "R1", "mINP")
EPOCH_TIME = re.compile(r"^.*Epoch \d+/\d+ \|.*\| ([\d.]+) s \|")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


def run(cmd, log_path):
    with open(log_path, "a") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log_path}")


def evaluate_subsets(cfg, features_path: str) -> dict:
    data = np.load(features_path)
    ds = build_dataset(cfg)
    nq = len(ds.query)
    qf, gf = data["feats"][:nq], data["feats"][nq:]
    pids, camids = data["pids"], data["camids"]
    subsets = {"all": np.ones(nq, dtype=bool),
               "dark": np.array([bool(r.attrs.get("dark")) for r in ds.query]),
               "near_twin": np.array([bool(r.attrs.get("near_twin")) for r in ds.query])}
    out = {}
    for name, mask in subsets.items():
        res = evaluate_features(qf[mask], gf, pids[:nq][mask], pids[nq:], camids[:nq][mask],
                                camids[nq:], metric=cfg.TEST.DISTANCE, feat_norm=cfg.TEST.FEAT_NORM)
        out[name] = {"mAP": 100 * res.mAP, "R1": 100 * res.cmc[0], "mINP": 100 * res.mINP,
                     "queries": int(res.num_valid)}
    return out


def epoch_times(train_log: str) -> list:
    """Training seconds of every epoch, from the 'Epoch e/E | ... | 12.3 s |' log lines."""
    with open(train_log) as f:
        return [float(m.group(1)) for m in map(EPOCH_TIME.search, f) if m]


def epoch_seconds(train_log: str) -> float:
    """Median training seconds per epoch of one run (the median, so an epoch slowed by another
    job on the machine does not move it)."""
    times = epoch_times(train_log)
    return float(np.median(times)) if times else float("nan")


def one_run(name: str, seed: int, root: str, extra: list, conditions: dict = None) -> dict:
    recipe, opts = (conditions or CONDITIONS)[name]
    run_dir = os.path.join(root, f"{slug(name)}_s{seed}")
    result_path = os.path.join(run_dir, "ablation_result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    os.makedirs(run_dir, exist_ok=True)
    config = os.path.join(SYNTH, recipe)
    opts = opts + ["SOLVER.SEED", str(seed), "SOLVER.EVAL_PERIOD", "0"] + extra
    cfg = load_config(config, opts + ["OUTPUT_DIR", run_dir])
    last = os.path.join(run_dir, f"transformer_{cfg.SOLVER.MAX_EPOCHS}.pth")
    start = time.time()
    run([sys.executable, "train.py", "--config_file", config, *opts, "OUTPUT_DIR", run_dir],
        os.path.join(run_dir, "ablation_stdout.txt"))
    train_s = time.time() - start
    test_dir = os.path.join(run_dir, "test")
    run([sys.executable, "test.py", "--config_file", config, *opts, "TEST.WEIGHT", last,
         "OUTPUT_DIR", test_dir, "TEST.EXPORT_FEATURES", "True", "TEST.VIS_QUERIES", "0"],
        os.path.join(run_dir, "ablation_stdout.txt"))
    result = {"condition": name, "seed": seed, "recipe": recipe, "opts": opts,
              "train_seconds": train_s,
              "epoch_seconds": epoch_seconds(os.path.join(run_dir, "train_log.txt")),
              **evaluate_subsets(cfg, os.path.join(test_dir, "features.npz"))}
    tmp = result_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, result_path)
    return result


def metric_cells(rs: list, subsets) -> list:
    """'mean ± std' (sample std over seeds) of every METRICS entry of every subset."""
    cells = []
    for subset in subsets:
        for m in METRICS:
            v = np.array([r[subset][m] for r in rs])
            cells.append(f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0:.1f}")
    return cells


def table(results: list) -> str:
    head = ("| condition | seeds | mAP | R1 | mINP | dark mAP | dark R1 | dark mINP | train s |\n"
            "|---|---|---|---|---|---|---|---|---|")
    rows = [head]
    for name in CONDITIONS:
        rs = [r for r in results if r["condition"] == name]
        if not rs:
            continue
        cells = [name, str(len(rs))] + metric_cells(rs, ("all", "dark"))
        cells.append(f"{np.mean([r['train_seconds'] for r in rs]):.0f}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def collect(args, conditions: dict, subset: str) -> list:
    """Results of every seed x condition of ``args``: run (resuming) or, with --table-only, read
    the finished ones; one progress line per run naming ``subset``'s mAP."""
    results = []
    for seed in args.seeds:
        for name in args.conditions:
            path = os.path.join(args.output_root, f"{slug(name)}_s{seed}", "ablation_result.json")
            if args.table_only:
                if os.path.exists(path):
                    with open(path) as f:
                        results.append(json.load(f))
                continue
            t = time.time()
            r = one_run(name, seed, args.output_root, list(args.opts), conditions)
            results.append(r)
            print(f"{name} seed {seed}: mAP {r['all']['mAP']:.1f} R1 {r['all']['R1']:.1f} "
                  f"{subset} mAP {r[subset]['mAP']:.1f} {r['epoch_seconds']:.1f} s/epoch "
                  f"({time.time() - t:.0f} s)", flush=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output-root", default="logs/ablation_phased")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS),
                        choices=list(CONDITIONS))
    parser.add_argument("--markdown", default="", help="also write the table to this file")
    parser.add_argument("--table-only", action="store_true", help="summarise finished runs")
    parser.add_argument("--opts", nargs="*", default=[], help="KEY VALUE for every run")
    args = parser.parse_args(argv)
    results = collect(args, CONDITIONS, "dark")
    text = table(results)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
