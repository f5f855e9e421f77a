"""What a run folder holds, and what of it a launcher command may reuse.

Run identity. A run folder's name (``Experiment.run_dir``) is for people; what the folder holds is
decided by the resolved training config: the one train.py resolves from the same YAML and
options (``Experiment.train_config``). The first command that uses a run folder records it in
``<run>/run_config.yaml``. Every later command compares its own config with each config the
folder holds -- ``run_config.yaml``, train.py's ``train/config.yaml`` (for a folder from before
run_config.yaml existed) and the stored config of the final checkpoint
``train/transformer_<epochs>.pth`` -- with ``utils.provenance.compare_configs``. Keys that provably
do not change the weights (``utils.provenance.RUNTIME_ONLY``) may differ; any other difference
(DATASETS.ROOT_DIR and MODEL.DEVICE included) makes the run *stale*, and the command stops before
any work with :class:`StaleRun`, naming each differing key (old -> new) and the ways on: rerun
with the old values, use another ``--output-root``, or pass ``--discard-stale``, which empties
that run folder (train/ and every test result) and trains it again.

Test results. A ``summary.json`` is an epoch's result only when it names the checkpoint file as
it is now (path, size, mtime) and the fingerprint of the test config this command would run
(:func:`expected_test_config`: test.py's own resolution, ``utils.eval_config``, of the
checkpoint's stored config and this command's test options). The rule is
``utils.summary.TestSummary.mismatch``; anything else is tested again.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from utils.atomic import atomic_write_text
from utils.eval_config import has_clip_tower, resolve_eval_config
from utils.provenance import ConfigComparison, compare_configs, evaluation_fingerprint
from utils.run_files import checkpoint_path
from utils.segments import CONFIG_FILE
from utils.summary import SUMMARY_FILE, TestSummary

from .experiment import LOCK_FILE, Experiment

RUN_CONFIG_FILE = "run_config.yaml"
DISCARD_FLAG = "--discard-stale"


class StaleRun(ValueError):
    """A run folder holds results of another training config (nothing was started)."""


@dataclass
class RunCheck:
    """This command's training config against what one run folder holds.

    ``source``: the stored config that differs (a file), None when none does; ``comparison``:
    its comparison with this command's config (else that of the first stored config, for the
    runtime-only keys that differ; None for a folder without any).
    """

    seed: int
    run_dir: str
    source: Optional[str] = None
    comparison: Optional[ConfigComparison] = None

    @property
    def stale(self) -> bool:
        return self.source is not None

    def describe(self) -> str:
        return (f"{self.run_dir} holds results of another training config; the keys that "
                f"differ ({self.source} -> this command):\n{self.comparison.describe()}")


def stale_message(checks: Sequence[RunCheck]) -> str:
    """The error of stale runs: each run's differing keys, then how to proceed."""
    runs = "\n".join(c.describe() for c in checks)
    return (f"{runs}\nNothing was started. To reuse those results, rerun with the values they "
            "were made with; to keep them and train this config too, use another --output-root; "
            f"to delete them (everything in the run folder) and train this config there, rerun "
            f"with {DISCARD_FLAG}.")


# -- the configs a run folder holds -----------------------------------------------------------
_CHECKPOINTS: Dict[Tuple[str, int, int], Tuple[str, bool]] = {}


def checkpoint_config(path: str) -> Tuple[str, bool]:
    """(stored config YAML, holds the CLIP fusion tower) of a checkpoint file; read once per
    file version (path, size, mtime) in this process. Imports torch (only here).

    Raises FileNotFoundError, RuntimeError (unreadable) or ValueError (not a PhaseReID
    checkpoint)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _CHECKPOINTS:
        from utils.checkpoint import checkpoint_meta, load_checkpoint
        ckpt = load_checkpoint(path, mmap=True)
        meta = checkpoint_meta(ckpt, path)
        _CHECKPOINTS[key] = (meta["config"], has_clip_tower(ckpt["model"]))
    return _CHECKPOINTS[key]


def stored_configs(exp: Experiment, seed: int) -> Iterator[Tuple[str, str]]:
    """(file, YAML) of every config the run folder holds, the cheapest first; the final
    checkpoint is read only when it is reached."""
    for path in (os.path.join(exp.run_dir(seed), RUN_CONFIG_FILE),
                 os.path.join(exp.train_dir(seed), CONFIG_FILE)):
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                yield path, f.read()
    final = checkpoint_path(exp.train_dir(seed), exp.epochs)
    if os.path.isfile(final):
        try:
            yield final, checkpoint_config(final)[0]
        except (OSError, RuntimeError, ValueError) as exc:   # test.py will report it
            print(f"[seed {seed}] {final}: its stored config could not be read ({exc})",
                  flush=True)


def check_run(exp: Experiment, seed: int) -> RunCheck:
    """Compare this command's training config of ``seed`` with every config its run folder
    holds (see the module docstring); reads, never writes."""
    new = exp.train_config(seed)
    check = RunCheck(seed, exp.run_dir(seed))
    for source, text in stored_configs(exp, seed):
        cmp = compare_configs(text, new)
        if check.comparison is None:
            check.comparison = cmp
        if cmp.kind != "identical":
            check.source, check.comparison = source, cmp
            break
    return check


def runtime_note(check: RunCheck) -> Optional[str]:
    """What a fresh (not stale) comparison found that does not change the weights."""
    cmp = check.comparison
    if cmp is None or check.stale:
        return None
    notes = []
    if cmp.runtime_changed:
        notes.append("runtime-only keys differ from the run's recorded config (they do not "
                     f"change the weights):\n{cmp.describe('runtime_changed')}")
    if cmp.new_at_default:
        notes.append("keys added to the code since the run's config was recorded, at their "
                     f"defaults: {', '.join(cmp.new_at_default)}")
    return "\n".join(notes) or None


def discard_run(exp: Experiment, seed: int) -> List[str]:
    """Empty the run folder of ``seed`` (everything but its lock file); returns what was
    removed."""
    run_dir = exp.run_dir(seed)
    removed = []
    for name in sorted(os.listdir(run_dir)):
        if name == LOCK_FILE:
            continue
        path = os.path.join(run_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
        removed.append(path)
    return removed


def record_run_config(exp: Experiment, seed: int, config) -> Optional[str]:
    """Write ``<run>/run_config.yaml`` (the resolved training config) unless the run already
    has one: like train.py's config.yaml it is never rewritten while the run lives. Returns the
    path when written."""
    path = os.path.join(exp.run_dir(seed), RUN_CONFIG_FILE)
    if os.path.isfile(path):
        return None
    atomic_write_text(path, config.dump())
    return path


# -- test results -------------------------------------------------------------------------------
def expected_test_config(exp: Experiment, seed: int, epoch: int, weight: str) -> str:
    """``evaluation_fingerprint`` of the config this command's test.py run would evaluate
    ``weight`` with."""
    stored, tower = checkpoint_config(weight)
    cfg = resolve_eval_config(exp.test_args(seed, epoch, weight), stored_config=stored,
                              clip_tower=tower)
    return evaluation_fingerprint(cfg)


def read_test_summary(exp: Experiment, seed: int, epoch: int,
                      say: Optional[Callable[[str], None]] = None) -> Optional[TestSummary]:
    """The summary.json of ``epoch`` when it is the result of the checkpoint on disk now under
    this command's test config (``TestSummary.mismatch``); else None: the epoch is untested, and
    ``say`` (when given) is told why an existing summary.json does not count."""
    say = say or (lambda message: None)
    path = os.path.join(exp.test_dir(seed, epoch), SUMMARY_FILE)
    if not os.path.isfile(path):
        return None
    try:
        summary = TestSummary.read(path)
    except (OSError, ValueError, TypeError) as exc:
        say(f"{path} is unreadable ({exc})")
        return None
    weight = checkpoint_path(exp.train_dir(seed), epoch)
    try:
        expected = expected_test_config(exp, seed, epoch, weight)
    except (OSError, RuntimeError, ValueError) as exc:
        say(f"{path} does not count: the config of {weight} could not be read ({exc})")
        return None
    why = summary.mismatch(epoch, weight, expected)
    if why is not None:
        say(f"{path} does not count: {why}")
        return None
    return summary
