"""Text-guidance ablation on SynthPedes (issue: captions, text encoder, TG-MIM, CLIP fusion).

Conditions: the baseline recipe, + TG-MIM (annotation captions, tiny text tower), + IS-GVFC +
TG-MIM, + CLIP fusion (tiny open_clip tower, minimal fusion). Every condition x seed runs
through the launcher package (``launcher.ablation``: train.py, then test.py on the last
checkpoint with features exported); the table gives mean +/- std over seeds of mAP / R1 / mINP
on all queries and on the near-twin queries (queries
whose identity has a near-twin in the gallery: SynthPedes identities that differ from another
only in shoes, bag, hat, logo or hair colour), and the training seconds per epoch (the median
over every epoch of every seed, read from the train logs) with its difference to the baseline.
Resumable (per-run JSON in the launcher's run folder).

    python bench/ablation_text.py --seeds 0 1 2 --output-root logs/ablation_text
    python bench/ablation_text.py --table-only --output-root logs/ablation_text \
        --markdown docs/ablation_text_table.md
    python bench/ablation_text.py --dry-run --seeds 0            # the plan of every run
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from launcher.ablation import (Condition, add_arguments, epoch_times,  # noqa: E402
                               metric_cells, run_ablation)

CONDITIONS = [
    Condition("baseline", "synth_baseline.yml"),
    Condition("+TG-MIM", "synth_tgmim.yml"),
    Condition("+IS-GVFC +TG-MIM", "synth_tgmim.yml", ("LOSS.ISGVFC.ENABLE", "True",
                                                     "LOSS.ISGVFC.INCLUDE_SELF", "False")),
    Condition("+CLIP fusion (tiny)", "synth_openclip_minimal.yml"),
    # control: VFE-TPS's weight (10) instead of the recipe's 1
    Condition("+TG-MIM W 10", "synth_tgmim.yml", ("LOSS.TGMIM.W", "10.0")),
]


def table(results: list, timing_seeds=None) -> str:
    head = ("| condition | seeds | mAP | R1 | mINP | near-twin mAP | near-twin R1 | "
            "near-twin mINP | s / epoch | extra s / epoch |\n" + "|---" * 10 + "|")
    rows = [head]

    def seconds(name: str) -> float:
        """Median over every epoch of every seed of a condition (robust to epochs slowed by
        other jobs on the machine)."""
        times = []
        for r in results:
            if timing_seeds and r["seed"] not in timing_seeds:
                continue
            if r["condition"] == name and os.path.exists(r["train_log"]):
                times += epoch_times(r["train_log"])
        return float(np.median(times)) if times else float("nan")

    base_s = seconds("baseline")
    for cond in CONDITIONS:
        rs = [r for r in results if r["condition"] == cond.name]
        if not rs:
            continue
        cells = [cond.name, str(len(rs))] + metric_cells(rs, ("all", "near_twin"))
        per_epoch = seconds(cond.name)
        cells += [f"{per_epoch:.1f}", f"{per_epoch - base_s:+.1f}"]
        rows.append("| " + " | ".join(cells) + " |")
    queries = sorted({(r["all"]["queries"], r["near_twin"]["queries"]) for r in results})
    note = "".join(f"\n\nQueries: {a} in all, {b} near-twin." for a, b in queries[:1])
    return "\n".join(rows) + note


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, CONDITIONS, "logs/ablation_text")
    parser.add_argument("--timing-seeds", type=int, nargs="*", default=None,
                        help="seconds per epoch from these seeds' runs only (e.g. the seed whose "
                             "conditions ran back to back on a quiet machine); default all")
    args = parser.parse_args(argv)
    return run_ablation(args, CONDITIONS, "near_twin", lambda results: table(results, args.timing_seeds))


if __name__ == "__main__":
    sys.exit(main())
