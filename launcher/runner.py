"""Running one seed of an experiment: train (or resume), then test every saved checkpoint.

- First, under the run lock, the run folder's identity (``launcher.identity``): a folder that
  holds another training config stops the command (:class:`~launcher.identity.StaleRun`) or,
  with ``--discard-stale``, is emptied; the config is recorded in ``<run>/run_config.yaml``.
- ``<run>/train/`` is train.py's OUTPUT_DIR. train.py is skipped when ``transformer_<epochs>.pth``
  exists (its stored config was compared above); otherwise it runs and resumes after the last
  complete epoch on its own (resume.pth).
- Every checkpoint without a ``summary.json`` that is its result -- the file as it is now, this
  command's test config (``launcher.identity.read_test_summary``) -- is tested by test.py in a
  subprocess into ``<run>/<test_tag>/epoch_<e>/``; each result also goes to ``<run>/train/tb``
  as ``<test_tag>/<metric>`` scalars at its epoch.
- Subprocess output is echoed and appended to a log file next to the results.
- A failure does not stop the other epochs and seeds: it is recorded as a ``Failure``.
"""
from __future__ import annotations

import codecs
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

from utils.atomic import atomic_write_text
from utils.process import die_with_parent
from utils.provenance import config_fingerprint
from utils.results import METRIC_KEYS
from utils.run_files import RESUME_FILE, checkpoint_name, checkpoint_path, list_checkpoints
from utils.summary import SUMMARY_FILE

from .experiment import Experiment, RunLocked, flat, quote_command, run_lock
from .identity import (DISCARD_FLAG, RUN_CONFIG_FILE, StaleRun, check_run, discard_run,
                       read_test_summary, record_run_config, runtime_note, stale_message)


@dataclass
class Failure:
    seed: Optional[int]   # None: not about one seed (--compare-to)
    stage: str            # 'train' | 'test' | 'lock' | 'compare'
    epoch: Optional[int]
    message: str
    log: Optional[str]

    def __str__(self) -> str:
        where = "" if self.seed is None else f" for seed {self.seed}"
        where += f" epoch {self.epoch}" if self.epoch is not None else ""
        log = f" (log: {self.log})" if self.log else ""
        return f"{self.stage} failed{where}: {self.message}{log}"


def write_if_changed(path: str, text: str) -> bool:
    """Atomic write unless the file already holds ``text`` (a rerun touches nothing)."""
    if os.path.isfile(path):
        with open(path) as f:
            if f.read() == text:
                return False
    atomic_write_text(path, text)
    return True


def resume_epoch(train_dir: str) -> int:
    """The last complete epoch recorded in resume.pth (0 = none)."""
    path = os.path.join(train_dir, RESUME_FILE)
    if not os.path.isfile(path):
        return 0
    from utils.checkpoint import load_checkpoint  # imports torch: only when there is a file
    try:
        state = load_checkpoint(path)
    except Exception as exc:  # unreadable: train.py will report it properly
        print(f"  {path} could not be read ({exc})", flush=True)
        return 0
    return int(state.get("epoch", 0))


STOP_GRACE_S = 30.0       # how long a child may take to stop after SIGTERM before SIGKILL


def _die_with_parent(parent: int):
    """``preexec_fn`` of a child: Linux sends it SIGTERM when the launcher dies, even by SIGKILL
    (``utils.process.die_with_parent``), so no training or test outlives its launcher (and the
    trainer's DataLoader workers die with the trainer). Elsewhere (no prctl) this does nothing
    and a SIGKILLed launcher can leave its child running."""
    def setup() -> None:
        die_with_parent(parent, signal.SIGTERM)
    return setup


class Stopped(Exception):
    """The launcher received SIGTERM: stop the child, then exit."""


def _raise_stopped(signum, frame):
    raise Stopped(f"launcher stopped by signal {signum}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the child and wait for it (its atomic writes leave no half-written file); SIGKILL
    only when it has not stopped after STOP_GRACE_S seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def run_logged(cmd: Sequence[str], log_path: str) -> int:
    """Run ``cmd``, echo its output and append it to ``log_path``; return the exit code.

    The child dies with the launcher (SIGKILL included, on Linux); SIGINT or SIGTERM of the
    launcher stops the child with SIGTERM, waits for it, and re-raises (KeyboardInterrupt, or
    :class:`Stopped` for SIGTERM)."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_stopped) if main_thread else None
    try:
        with open(log_path, "ab") as log:
            log.write(f"$ {quote_command(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=env, preexec_fn=_die_with_parent(os.getpid()))
            try:
                for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                    log.write(chunk)
                    log.flush()
                    sys.stdout.write(decoder.decode(chunk))
                    sys.stdout.flush()
            except BaseException:
                _stop(proc)
                raise
            finally:
                proc.stdout.close()
            rc = proc.wait()
            log.write(f"[exit code {rc}]\n".encode())
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return rc


def train_seed(exp: Experiment, seed: int, failures: List[Failure]) -> None:
    tag = f"[seed {seed}]"
    train_dir = exp.train_dir(seed)
    final = checkpoint_path(train_dir, exp.epochs)
    if os.path.isfile(final):
        print(f"{tag} Skip training: {final} exists", flush=True)
        return
    done = resume_epoch(train_dir)
    what = f"resume after epoch {done}" if done else "new run"
    log = os.path.join(train_dir, "launcher_train_output.log")
    print(f"{tag} Train epochs {done + 1}..{exp.epochs} ({what}) in {train_dir}; output also in "
          f"{log}", flush=True)
    rc = run_logged(exp.train_command(seed), log)
    if rc != 0:
        failures.append(Failure(seed, "train", None, f"train.py exited with code {rc}", log))
        print(f"{tag} train.py failed (exit code {rc}); testing the checkpoints it saved",
              flush=True)
    elif not os.path.isfile(final):
        failures.append(Failure(seed, "train", None, f"train.py finished but {final} is missing "
                                "(resume.pth past --epochs? see the log)", log))


def test_seed(exp: Experiment, seed: int, failures: List[Failure]) -> None:
    tag = f"[seed {seed}]"
    writer = None
    try:
        for epoch, weight in list_checkpoints(exp.train_dir(seed)).items():
            if epoch > exp.epochs:
                continue
            folder = exp.test_dir(seed, epoch)
            if read_test_summary(exp, seed, epoch,
                                 lambda why: print(f"{tag} {why}: testing again",
                                                   flush=True)) is not None:
                print(f"{tag} Skip epoch {epoch} (already tested)", flush=True)
                continue
            log = os.path.join(folder, "test_output.log")
            print(f"{tag} Test epoch {epoch}: {weight} -> {folder}", flush=True)
            rc = run_logged(exp.test_command(seed, epoch, weight), log)
            summary = read_test_summary(exp, seed, epoch,
                                        lambda why: print(f"{tag} {why}", flush=True))
            if rc != 0 or summary is None:
                failures.append(Failure(seed, "test", epoch, f"test.py exited with code {rc}"
                                        + ("" if rc else f" without writing {SUMMARY_FILE}"),
                                        log))
                print(f"{tag} Test of epoch {epoch} failed (exit code {rc}); it will be retried "
                      "on the next run", flush=True)
                continue
            m = summary.metrics
            print(f"{tag} Epoch {epoch}: mAP {m['mAP']:.2f} R1 {m['R1']:.2f} "
                  f"(written to {os.path.join(folder, SUMMARY_FILE)})", flush=True)
            if writer is None:
                from torch.utils.tensorboard import SummaryWriter
                writer = SummaryWriter(os.path.join(exp.train_dir(seed), "tb"))
            for key in METRIC_KEYS:
                writer.add_scalar(f"{exp.test_tag}/{key}", m[key], epoch)
            writer.flush()
    finally:
        if writer is not None:
            writer.close()


def claim_run(exp: Experiment, seed: int, discard_stale: bool) -> str:
    """Under the run lock: check the run folder's identity (launcher.identity); a stale run is
    emptied with ``discard_stale``, else :class:`StaleRun`. Records the config; returns its
    fingerprint."""
    tag = f"[seed {seed}]"
    check = check_run(exp, seed)
    if check.stale:
        if not discard_stale:
            raise StaleRun(stale_message([check]))
        print(f"{tag} {check.describe()}", flush=True)
        removed = discard_run(exp, seed)
        print(f"{tag} {DISCARD_FLAG}: deleted {len(removed)} entries of {check.run_dir} "
              f"({', '.join(os.path.basename(p) for p in removed)}); training it anew",
              flush=True)
    note = runtime_note(check)
    if note:
        print(f"{tag} {note}", flush=True)
    config = exp.train_config(seed)
    if record_run_config(exp, seed, config):
        print(f"{tag} Training config recorded in "
              f"{os.path.join(check.run_dir, RUN_CONFIG_FILE)}", flush=True)
    return config_fingerprint(config)


def run_seed(exp: Experiment, seed: int, train_only: bool, failures: List[Failure],
             discard_stale: bool = False) -> Optional[float]:
    """Train (or resume) one seed under its run lock, then test its checkpoints unless
    ``train_only``. Failures are appended to ``failures``. Returns the wall seconds spent in
    train.py (None when training was not run: already complete, or the run is locked).

    Raises :class:`StaleRun` (before any work) when the run folder holds another training
    config and ``discard_stale`` is False; with it, the folder is emptied first."""
    run_dir = exp.run_dir(seed)
    print(f"[seed {seed}] Run folder {run_dir}", flush=True)
    train_seconds = None
    try:
        with run_lock(run_dir):
            sha = claim_run(exp, seed, discard_stale)
            write_if_changed(os.path.join(run_dir, "launcher.json"),
                             json.dumps(exp.record(seed, sha), indent=2) + "\n")
            trained = not os.path.isfile(checkpoint_path(exp.train_dir(seed), exp.epochs))
            start = time.time()
            train_seed(exp, seed, failures)
            train_seconds = time.time() - start if trained else None
            if train_only:
                print(f"[seed {seed}] Tests skipped (--train-only)", flush=True)
            else:
                test_seed(exp, seed, failures)
    except RunLocked as exc:
        failures.append(Failure(seed, "lock", None, str(exc), None))
        print(f"[seed {seed}] {exc}", flush=True)
    return train_seconds


# ---------------------------------------------------------------------------------------------
# dry run
# ---------------------------------------------------------------------------------------------
def print_header(exp: Experiment) -> None:
    print(f"Experiment {exp.name}: {exp.config}", flush=True)
    print(f"  toggles: {' '.join(exp.flags) or 'none (the YAML decides)'}"
          + (f" -> {' '.join(flat(exp.toggle_opts))}" if exp.toggle_opts else ""))
    print(f"  --opts: {' '.join(flat(exp.user_opts)) or 'none'}")
    print(f"  recipe: {exp.recipe}")
    print("  " + exp.plan_table.replace("\n", "\n  "), flush=True)


def print_plan(exp: Experiment, seeds: Sequence[int], train_only: bool,
               discard_stale: bool = False) -> None:
    """What a run of ``seeds`` would do (run folders, whether each holds this training config,
    epochs to train, checkpoints to test); nothing is started or written."""
    print_header(exp)
    for seed in seeds:
        tag = f"[seed {seed}]"
        train_dir = exp.train_dir(seed)
        print(f"{tag} run folder {exp.run_dir(seed)}")
        check = check_run(exp, seed)
        fresh = False
        if check.stale:
            text = check.describe().replace("\n", f"\n{tag}   ")
            if not discard_stale:
                print(f"{tag}   refused: {text}\n{tag}   (the command stops before any work; "
                      f"{DISCARD_FLAG} would empty the folder and train it anew)")
                continue
            print(f"{tag}   {DISCARD_FLAG}: the folder would be emptied and trained anew: {text}")
            fresh = True
        have = [] if fresh else [e for e in list_checkpoints(train_dir) if e <= exp.epochs]
        if exp.epochs in have:
            print(f"{tag}   train: nothing ({checkpoint_name(exp.epochs)} exists)")
            kept = planned = have
        else:
            done = 0 if fresh else resume_epoch(train_dir)
            print(f"{tag}   train: epochs {done + 1}..{exp.epochs}"
                  f"{f' (resume after epoch {done})' if done else ' (new run)'}: "
                  f"{quote_command(exp.train_command(seed))}")
            kept = [e for e in have if e <= done]   # later ones are written again
            planned = sorted(set(have) | {e for e in exp.checkpoint_epochs() if e > done})
        if train_only:
            print(f"{tag}   test: skipped (--train-only)")
            continue
        tested = [e for e in kept if read_test_summary(
            exp, seed, e, lambda why: print(f"{tag}   {why}")) is not None]
        todo = [e for e in planned if e not in tested]
        print(f"{tag}   test: epochs {todo or 'none'} -> "
              f"{os.path.join(exp.run_dir(seed), exp.test_tag)}/epoch_<N>"
              + (f"; already tested: {tested}" if tested else ""))
        if todo:
            weight = checkpoint_path(train_dir, todo[0])
            print(f"{tag}   test command (epoch {todo[0]}): "
                  f"{quote_command(exp.test_command(seed, todo[0], weight))}")
    print(f"Summaries: {exp.summary_base}.json/.md/.csv")
    print("Dry run: nothing was started or written.", flush=True)
