"""The TBPS loss study table (docs/tbps_loss_study.md) from the launcher summaries and train logs
under logs/tbps_loss_study/ (run the commands of docs/tbps_loss_study.md first).

    python bench/tbps_loss_study_table.py
"""
import glob
import json
import os
import re
import statistics as st

import yaml
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "logs",
                    "tbps_loss_study")
LABEL = {"itc": "ITC", "sdm": "SDM", "sdm_id": "SDM + ID", "nitc_ritc": "N-ITC + R-ITC",
         "sigmoid_id": "sigmoid identity"}
print("| loss | kind | R1 | mAP | mINP | best epochs (seeds 0/1/2) | s / iteration | ΔR1 vs ITC (p) | ΔmAP vs ITC (p) | ΔmINP vs ITC (p) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name, label in LABEL.items():
    files = sorted(glob.glob(f"{ROOT}/{name}/summary_*.json"))
    if not files:
        continue
    s = json.load(open(files[-1]))
    secs = []   # seconds per iteration: the run's batch (its config.yaml) / images per second
    for train_dir in glob.glob(f"{ROOT}/{name}/*seed*/train"):
        with open(os.path.join(train_dir, "config.yaml")) as f:
            batch = yaml.safe_load(f)["SOLVER"]["IMS_PER_BATCH"]
        log = open(os.path.join(train_dir, "train_log.txt")).read()
        secs += [batch / float(m.group(1))
                 for m in re.finditer(r"\| [\d.]+ s \| ([\d.]+) img/s", log)]
    for kind in ("best", "last"):
        agg = s["aggregate"][kind]["metrics"]
        cell = lambda k: f"{agg[k]['mean']:.1f} ± {agg[k]['std']:.1f}"
        epochs = "/".join(str(r[kind]["epoch"]) for r in s["seeds"])
        cmp = s.get("compare") or {}
        def d(k):
            c = cmp.get(kind, {}).get("metrics", {}).get(k)
            return "–" if not c or c.get("p") is None else f"{c['mean_diff']:+.1f} ({c['p']:.3f})"
        kl = "val-selected" if kind == "best" else "last"
        print(f"| {label} | {kl} | {cell('R1')} | {cell('mAP')} | {cell('mINP')} | {epochs} | "
              f"{st.mean(secs):.4f} | {d('R1')} | {d('mAP')} | {d('mINP')} |")
