"""Loss-recipe ablation on SynthPedes (issue: phase-scheduled loss recipes).

Every condition x seed runs through the launcher package (``launcher.ablation``: train.py, then
test.py on the last checkpoint with features exported), and the table reports mean +/- std over
seeds of mAP, R1 and mINP on all queries and on the dark-camera queries (SynthPedes cameras
designed dark, mean luma < 0.35), plus the training time. Resumable: a finished training or
test is not redone; per-run results are kept as JSON in the launcher's run folder.

    python bench/ablation_phased.py --seeds 0 1 2 --output-root logs/ablation_phased
    python bench/ablation_phased.py --table-only --output-root logs/ablation_phased \
        --markdown docs/ablation_phased.md
    python bench/ablation_phased.py --dry-run --seeds 0          # the plan of every run
    python bench/ablation_phased.py --conditions baseline --seeds 0 --epochs 1 \
        --output-root /tmp/ablation_smoke                          # a smoke check

Conditions are the Synth recipes (configs/Synth/synth_*.yml) with, where named, a few overrides.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from launcher.ablation import Condition, add_arguments, metric_cells, run_ablation  # noqa: E402

CONDITIONS = [
    Condition("baseline", "synth_baseline.yml"),
    Condition("+SupCon", "synth_ce_triplet_pk8_prebn_supcon_prebn.yml"),
    Condition("+TripletX", "synth_baseline.yml", ("LOSS.TRIPLETX.ENABLE", "True",
                                                 "LOSS.TRIPLETX.W", "1.2",
                                                 "LOSS.TRIPLETX.WARMUP_EPOCHS", "3",
                                                 "DATALOADER.PHASED.ENABLE", "True")),
    Condition("+routing hard", "synth_ce_triplet_tripletx_brightness.yml"),
    Condition("+routing soft", "synth_ce_triplet_tripletx_brightness.yml",
              ("LOSS.BRIGHTNESS.MODE", "soft")),
    Condition("+IS-GVFC", "synth_baseline.yml", ("LOSS.ISGVFC.ENABLE", "True",
                                                "LOSS.ISGVFC.INCLUDE_SELF", "False")),
    Condition("phased A-B-C", "synth_A_ce_triplet_B_ce_tripletx_supcon_C_ce_triplet_supcon.yml"),
    # controls: K separately from the loss (batch 32: K 8 means only 4 identities per batch),
    # and IS-GVFC as released (self-similarity kept in each row)
    Condition("baseline K 8", "synth_baseline.yml", ("DATALOADER.NUM_INSTANCE", "8")),
    Condition("+SupCon K 4", "synth_ce_triplet_pk8_prebn_supcon_prebn.yml",
              ("DATALOADER.PHASED.K_WHEN_SUPCON", "4")),
    Condition("+IS-GVFC (self kept)", "synth_baseline.yml", ("LOSS.ISGVFC.ENABLE", "True")),
    Condition("+TripletX K 4", "synth_baseline.yml", ("LOSS.TRIPLETX.ENABLE", "True",
                                                     "LOSS.TRIPLETX.W", "1.2",
                                                     "LOSS.TRIPLETX.WARMUP_EPOCHS", "3")),
    Condition("+TripletX K 4 unnormalised", "synth_baseline.yml", (
        "LOSS.TRIPLETX.ENABLE", "True", "LOSS.TRIPLETX.W", "1.2", "LOSS.TRIPLETX.WARMUP_EPOCHS",
        "3", "LOSS.TRIPLETX.NORM_FEAT", "False")),
]


def table(results: list) -> str:
    head = ("| condition | seeds | mAP | R1 | mINP | dark mAP | dark R1 | dark mINP | train s |\n"
            "|---|---|---|---|---|---|---|---|---|")
    rows = [head]
    for cond in CONDITIONS:
        rs = [r for r in results if r["condition"] == cond.name]
        if not rs:
            continue
        cells = [cond.name, str(len(rs))] + metric_cells(rs, ("all", "dark"))
        cells.append(f"{np.mean([r['train_seconds'] for r in rs]):.0f}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, CONDITIONS, "logs/ablation_phased")
    args = parser.parse_args(argv)
    return run_ablation(args, CONDITIONS, "dark", table)


if __name__ == "__main__":
    sys.exit(main())
