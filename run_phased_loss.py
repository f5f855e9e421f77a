"""Multi-seed launcher: for every seed, train (or resume), test every saved checkpoint, summarise.

    python run_phased_loss.py --config configs/VeRi/deit_transreid_stride_baseline.yml \\
        --seeds 0 1 2 --epochs 120 --save-every 3 --output-root ./logs \\
        [--phased | --baseline] [--supcon | --no-supcon] [--tripletx | --no-tripletx] \\
        [--train-only] [--compare-to OTHER_ROOT] [--dry-run] [--discard-stale] \\
        [--opts KEY VALUE ...] [--test-opts KEY VALUE ...]

Behaviour
- One run folder per seed, named from the config stem, the variant and the seed only:
  ``<root>/<stem>_<variant>_e<epochs>_seed<s>/``. The variant names the toggles given on the
  command line ('yaml' when none) plus ``-o<hash>`` of the training --opts when there are any
  (keys that do not change the weights -- ``utils.provenance.RUNTIME_ONLY``: TEST.*,
  DATALOADER.NUM_WORKERS, SOLVER.EVAL_PERIOD, ... -- and DATASETS.ROOT_DIR, MODEL.DEVICE are left
  out). The same command always finds the same folder: no timestamps.
- The name is for people; a run is its resolved training config (the YAML with its _BASE_
  chain, the toggles, --opts and the launcher's keys, resolved as train.py resolves them). The
  first command records it in ``<run>/run_config.yaml``; every later one compares its own with
  it, with train.py's ``train/config.yaml`` and with the final checkpoint's stored config.
  Only keys that provably do not change the weights may differ: any other difference (an
  edited recipe, another file of the same name, another DATASETS.ROOT_DIR or MODEL.DEVICE) is an
  error before any work that names each differing key (old -> new) and the ways on: rerun with
  the old values, use another --output-root, or pass --discard-stale, which empties that run
  folder (train/ and every test result) and trains it anew (``launcher/identity.py``).
- ``<run>/train/`` is train.py's OUTPUT_DIR (config.yaml, train_log.txt, tb/, transformer_<e>.pth,
  resume.pth). train.py is skipped when transformer_<epochs>.pth exists; otherwise it is run and
  resumes after the last complete epoch on its own (resume.pth).
- Every checkpoint without a ``summary.json`` that is its result is tested by test.py in a
  subprocess (the same interpreter) into ``<run>/test/epoch_<e>/`` -- ``<run>/test-t<hash>/``
  when --opts holds TEST.* keys that change the numbers, or --test-opts (overrides for test.py
  only, e.g. MODEL.USE_CLIP False to test a CLIP-fusion run without fusion) are given, so results
  of another evaluation are never mistaken for these. A summary.json is the checkpoint's result
  only when it names that file as it is now (path, size, mtime: a retrained checkpoint is tested
  again) and the fingerprint of the test config this command would run; otherwise the launcher
  says why and tests again (summaries from before these fields existed are tested again too).
  test.py writes summary.json last and only on success, so a crashed or killed test is retried
  on the next run; tested epochs print ``Skip epoch N (already tested)``. Each result also goes
  into ``<run>/train/tb`` as ``test/<metric>`` scalars at its epoch.
- A failing train.py or test.py does not stop the other epochs and seeds; the launcher exits 1
  at the end and names every failure (seed, epoch, log file).
- Summaries (``<root>/summary_<stem>_<variant>_e<epochs>[_test-t<hash>].json/.md/.csv``, written
  atomically and printed): per seed the best epoch by (mAP, R1) -- selected on the test split,
  as our datasets have no validation split, which the summary says -- and the last epoch; across
  seeds the mean and sample std (ddof=1; n/a for one seed) of every metric for both; with
  --compare-to a paired t-test per metric (seeds paired by number) against another launcher's
  summary.
- ``<run>/launcher.json``: the command, config, seed, variant and options, and the training
  config's fingerprint (provenance); ``<run>/run_config.yaml``: the resolved training config.
- The summary covers every seed of the experiment under the root; a seed whose run folder holds
  another training config is left out of it, with a note.

Toggles override the YAML only when given: --supcon/--no-supcon (LOSS.SUPCON.ENABLE; 'no' also
zeroes LOSS.PHASED.W_SUP_SPEC under a phase plan), --tripletx/--no-tripletx (LOSS.TRIPLETX.ENABLE;
'no' also turns off LOSS.BRIGHTNESS and maps METRIC_SEQ 'tripletx'/'routed' to 'triplet'),
--phased/--baseline (LOSS.PHASED.ENABLE and DATALOADER.PHASED.ENABLE; --baseline = CE + Triplet:
SupCon, TripletX and brightness routing off unless --supcon / --tripletx are also given). The
resulting config is checked by building its phase plan before anything starts.

What Model B's launcher did instead: docs/reference_differences.md (run_phased_loss.py (the launcher)).

Its parts live in the ``launcher`` package: ``launcher.toggles`` (the toggles as config
overlays), ``launcher.experiment`` (names, folders, options, the run lock), ``launcher.runner``
(train.py / test.py subprocesses, logs, the resume probe, the dry run), ``launcher.report``
(best/last selection, statistics, comparison, Markdown/CSV), ``launcher.identity`` (what a run
folder holds and what of it may be reused) and ``launcher.cli`` (this command line). Test results
are read through ``utils.summary.TestSummary``.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from launcher import cli  # noqa: E402
from launcher.cli import parse_args  # noqa: E402,F401
from launcher.experiment import TEST_SCRIPT, TRAIN_SCRIPT  # noqa: E402,F401

# TRAIN_SCRIPT / TEST_SCRIPT are read when a command runs, so a wrapper script can stand in for
# train.py or test.py (the tests crash and kill them on purpose)


def build_experiment(args, argv):
    """The experiment of parsed ``args`` (see launcher.cli.build_experiment)."""
    return cli.build_experiment(args, argv, TRAIN_SCRIPT, TEST_SCRIPT)


def main(argv=None) -> int:
    return cli.main(argv, TRAIN_SCRIPT, TEST_SCRIPT)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as exc:
        print(f"run_phased_loss.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\nInterrupted: rerun the same command to continue (finished epochs and tests "
              "are kept).", file=sys.stderr)
        sys.exit(130)
