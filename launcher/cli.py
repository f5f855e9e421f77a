"""The launcher's command line (``run_phased_loss.py`` is its entry point; its docstring is the
user documentation): parse, build the experiment, run every seed, write the summaries."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import List, Optional, Sequence

from .experiment import TEST_SCRIPT, TRAIN_SCRIPT, Experiment, make_experiment
from .identity import DISCARD_FLAG, StaleRun, check_run, stale_message
from .report import build_summary, compare, find_other_summary, seed_record, write_summaries
from .runner import Failure, Stopped, print_header, print_plan, run_seed
from .toggles import OVERLAYS


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Multi-seed launcher: train each seed (resuming), test every saved "
                    "checkpoint with test.py, summarise best/last epochs across seeds.")
    p.add_argument("--config", required=True, help="YAML recipe (configs/<Dataset>/*.yml)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="SOLVER.SEED of each run (default 0 1 2)")
    p.add_argument("--epochs", type=int, default=120, help="SOLVER.MAX_EPOCHS (default 120)")
    p.add_argument("--save-every", type=int, default=1,
                   help="SOLVER.CHECKPOINT_PERIOD: a checkpoint (tested later) every N epochs "
                        "and at the last (default 1)")
    p.add_argument("--output-root", default="./logs", help="where run folders and summaries go")
    p.add_argument("--train-only", "--no-test", dest="train_only", action="store_true",
                   help="skip the external test.py runs (in-training evaluation, "
                        "SOLVER.EVAL_PERIOD, is left as configured)")
    # toggles: each a config overlay (launcher/toggles.py); absent = as in the YAML
    for dest, on, off, on_value, off_value in (("supcon", "--supcon", "--no-supcon", True, False),
                                               ("tripletx", "--tripletx", "--no-tripletx", True,
                                                False),
                                               ("mode", "--phased", "--baseline", "phased",
                                                "baseline")):
        group = p.add_mutually_exclusive_group()
        group.add_argument(on, dest=dest, action="store_const", const=on_value, default=None,
                           help=OVERLAYS[on].help)
        group.add_argument(off, dest=dest, action="store_const", const=off_value,
                           help=OVERLAYS[off].help)
    p.add_argument("--compare-to", default=None,
                   help="another launcher output root (or its summary_*.json): paired t-test "
                        "per metric over the common seeds")
    p.add_argument(DISCARD_FLAG, dest="discard_stale", action="store_true",
                   help="a run folder that holds results of another training config (the "
                        "launcher names the keys that differ) is emptied and trained anew; "
                        "without it such a folder stops the command before any work")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (run folders, epochs to train, checkpoints to test) "
                        "and do nothing else")
    p.add_argument("--opts", nargs="*", default=[],
                   help="KEY VALUE config overrides, forwarded to train.py and test.py")
    p.add_argument("--test-opts", nargs="*", default=[],
                   help="KEY VALUE overrides for test.py only, e.g. MODEL.USE_CLIP False (train "
                        "with CLIP fusion, test without); results go to their own test folder")
    args = p.parse_args(argv)
    for name in ("epochs", "save_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 1")
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds {args.seeds} repeats a seed")
    return args


def toggle_flags(args) -> List[str]:
    """The toggles given on the command line, in a fixed order."""
    flags = []
    if args.mode is not None:
        flags.append(f"--{args.mode}")
    if args.supcon is not None:
        flags.append("--supcon" if args.supcon else "--no-supcon")
    if args.tripletx is not None:
        flags.append("--tripletx" if args.tripletx else "--no-tripletx")
    return flags


def build_experiment(args, argv: Sequence[str], train_script: str = TRAIN_SCRIPT,
                     test_script: str = TEST_SCRIPT) -> Experiment:
    """The experiment of parsed command-line ``args`` (toggles and --opts resolved against the
    YAML, phase plan validated)."""
    return make_experiment(args.config, args.output_root, args.epochs, args.save_every,
                           flags=toggle_flags(args), opts=args.opts, test_opts=args.test_opts,
                           argv=argv, train_script=train_script, test_script=test_script)


def run_experiment(exp: Experiment, seeds: Sequence[int], train_only: bool = False,
                   compare_to: Optional[str] = None, discard_stale: bool = False) -> int:
    """Run every seed, then summarise every seed of the experiment on disk; 0 when nothing
    failed, else 1 (every failure printed).

    Raises :class:`StaleRun` before any work when a seed's run folder holds results of another
    training config, unless ``discard_stale`` (then that folder is emptied and trained anew)."""
    print_header(exp)
    stale = [c for c in (check_run(exp, s) for s in seeds) if c.stale]
    if stale and not discard_stale:
        raise StaleRun(stale_message(stale))
    failures: List[Failure] = []
    for seed in seeds:
        run_seed(exp, seed, train_only, failures, discard_stale)
    # the summary covers every seed of this experiment under the root, not only this command's
    all_seeds = sorted(set(seeds) | set(exp.seeds_on_disk()))
    comparison = None
    if compare_to:
        try:
            comparison = compare([seed_record(exp, s) for s in all_seeds],
                                 find_other_summary(compare_to,
                                                    os.path.basename(exp.summary_base)),
                                 epochs=exp.epochs)
        except (OSError, ValueError, KeyError) as exc:
            failures.append(Failure(None, "compare", None, f"--compare-to {compare_to}: "
                                    f"{exc}", None))
    summary = build_summary(exp, all_seeds, failures, comparison)
    print(write_summaries(exp, summary), flush=True)
    if failures:
        print(f"{len(failures)} failure(s); rerun the same command to retry (finished work is "
              "kept):", flush=True)
        for f in failures:
            print(f"  {f}", flush=True)
        return 1
    print("Done: " + ("every seed trained (tests skipped, --train-only)." if train_only
                      else "every seed trained and every saved checkpoint tested."), flush=True)
    return 0


def main(argv=None, train_script: str = TRAIN_SCRIPT, test_script: str = TEST_SCRIPT) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    exp = build_experiment(args, argv, train_script, test_script)
    if args.compare_to and not os.path.exists(args.compare_to):
        raise FileNotFoundError(f"--compare-to {args.compare_to}: no such file or folder")
    if args.dry_run:
        print_plan(exp, args.seeds, args.train_only, args.discard_stale)
        return 0
    try:
        return run_experiment(exp, args.seeds, args.train_only, args.compare_to,
                              args.discard_stale)
    except Stopped as exc:
        print(f"{exc}: the running train.py / test.py was stopped (SIGTERM) and has exited; "
              "rerun the same command to resume", file=sys.stderr)
        return 128 + int(signal.SIGTERM)
