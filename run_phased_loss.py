"""Multi-seed launcher: for every seed, train (or resume), test every saved checkpoint, summarise.

    python run_phased_loss.py --config configs/VeRi/deit_transreid_stride_baseline.yml \\
        --seeds 0 1 2 --epochs 120 --save-every 3 --output-root ./logs \\
        [--phased | --baseline] [--supcon | --no-supcon] [--tripletx | --no-tripletx] \\
        [--train-only] [--compare-to OTHER_ROOT] [--dry-run] [--opts KEY VALUE ...] \\
        [--test-opts KEY VALUE ...]

Behaviour
- One run folder per seed, named from the config stem, the variant and the seed only:
  ``<root>/<stem>_<variant>_e<epochs>_seed<s>/``. The variant names the toggles given on the
  command line ('yaml' when none) plus ``-o<hash>`` of the training --opts when there are any
  (keys that say where or how a run executes rather than what it trains -- TEST.*,
  DATASETS.ROOT_DIR, MODEL.DEVICE, DATALOADER.NUM_WORKERS, SOLVER.EVAL_PERIOD -- are left out).
  The same command always finds the same folder: no timestamps.
- ``<run>/train/`` is train.py's OUTPUT_DIR (config.yaml, train_log.txt, tb/, transformer_<e>.pth,
  resume.pth). train.py is skipped when transformer_<epochs>.pth exists; otherwise it is run and
  resumes after the last complete epoch on its own (resume.pth).
- Every checkpoint without a ``summary.json`` is tested by test.py in a subprocess (the same
  interpreter) into ``<run>/test/epoch_<e>/`` -- ``<run>/test-t<hash>/`` when --opts holds TEST.*
  keys that change the numbers, or --test-opts (overrides for test.py only, e.g. MODEL.USE_CLIP
  False to test a CLIP-fusion run without fusion) are given, so results of another evaluation
  are never mistaken for these.
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
- ``<run>/launcher.json``: the command, config, seed, variant and options (provenance).

Toggles override the YAML only when given: --supcon/--no-supcon (LOSS.SUPCON.ENABLE; 'no' also
zeroes LOSS.PHASED.W_SUP_SPEC under a phase plan), --tripletx/--no-tripletx (LOSS.TRIPLETX.ENABLE;
'no' also turns off LOSS.BRIGHTNESS and maps METRIC_SEQ 'tripletx'/'routed' to 'triplet'),
--phased/--baseline (LOSS.PHASED.ENABLE and DATALOADER.PHASED.ENABLE; --baseline = CE + Triplet:
SupCon, TripletX and brightness routing off unless --supcon / --tripletx are also given). The
resulting config is checked by building its phase plan before anything starts.

Model B launcher defects fixed here: default-off toggles overrode the
YAML (a SupCon recipe launched without --supcon trained the baseline) -> only explicit flags
override; --opts were not forwarded to the backfill tests -> forwarded to train.py and test.py;
results were scraped from log text ("mAP: 82.7%") -> read from test.py's summary.json;
--no-test set SOLVER.EVAL_PERIOD 0 and crashed -> --train-only/--no-test skip external tests
only; minute-stamped run names restarted training whenever the clock moved -> deterministic
names; resume trained MAX_EPOCHS more epochs -> train.py stops at MAX_EPOCHS; hard-coded dataset
prefix, test window and environment-variable roots -> everything from the config and the
command line; a half-written test folder counted as tested -> only summary.json counts.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import csv
import glob
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from configs import load_config  # noqa: E402
from processor.inference import METRIC_KEYS  # noqa: E402
from solver.phase_plan import PhasePlan  # noqa: E402
from utils.checkpoint import atomic_write_text, checkpoint_path, list_checkpoints  # noqa: E402
from utils.stats import mean_std, paired_ttest  # noqa: E402

try:  # advisory per-run lock (POSIX); released by the OS when the launcher dies
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

TRAIN_SCRIPT = os.path.join(ROOT, "train.py")
TEST_SCRIPT = os.path.join(ROOT, "test.py")

# set by the launcher from --seeds / --epochs / --save-every and the run folder
LAUNCHER_KEYS = ("SOLVER.SEED", "SOLVER.MAX_EPOCHS", "SOLVER.CHECKPOINT_PERIOD", "OUTPUT_DIR",
                 "TEST.WEIGHT")
# where / how a run executes, not what it trains: not part of the run name
RUNTIME_KEYS = ("DATASETS.ROOT_DIR", "MODEL.DEVICE", "DATALOADER.NUM_WORKERS",
                "SOLVER.EVAL_PERIOD")
# TEST.* keys that do not change the metrics: not part of the test folder name
TEST_OUTPUT_KEYS = ("TEST.IMS_PER_BATCH", "TEST.VIS_QUERIES", "TEST.VIS_TOPK",
                    "TEST.EXPORT_FEATURES", "TEST.EVAL_BLOCK")
SUMMARY_FILE = "summary.json"
KINDS = ("best", "last")


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
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
    supcon = p.add_mutually_exclusive_group()
    supcon.add_argument("--supcon", dest="supcon", action="store_const", const=True,
                        default=None, help="LOSS.SUPCON.ENABLE True (absent: as in the YAML)")
    supcon.add_argument("--no-supcon", dest="supcon", action="store_const", const=False,
                        help="SupCon off (and LOSS.PHASED.W_SUP_SPEC all 'const:0.0' when "
                             "phased)")
    tripletx = p.add_mutually_exclusive_group()
    tripletx.add_argument("--tripletx", dest="tripletx", action="store_const", const=True,
                          default=None, help="LOSS.TRIPLETX.ENABLE True (absent: as in the YAML)")
    tripletx.add_argument("--no-tripletx", dest="tripletx", action="store_const", const=False,
                          help="TripletX and brightness routing off; METRIC_SEQ tripletx/routed "
                               "-> triplet")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--phased", dest="mode", action="store_const", const="phased",
                      default=None, help="LOSS.PHASED.ENABLE and DATALOADER.PHASED.ENABLE True "
                                         "(absent: as in the YAML)")
    mode.add_argument("--baseline", dest="mode", action="store_const", const="baseline",
                      help="phase plan off; CE + Triplet (SupCon / TripletX / brightness off "
                           "unless --supcon / --tripletx)")
    p.add_argument("--compare-to", default=None,
                   help="another launcher output root (or its summary_*.json): paired t-test "
                        "per metric over the common seeds")
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


def option_pairs(opts: Sequence[str]) -> List[Tuple[str, str]]:
    """KEY VALUE list -> pairs; odd length, repeated keys and launcher-owned keys are errors."""
    opts = [str(o) for o in opts]
    if len(opts) % 2:
        raise ValueError(f"--opts must be KEY VALUE pairs, got an odd number of items: {opts}")
    pairs = list(zip(opts[::2], opts[1::2]))
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"--opts gives {', '.join(repeated)} more than once; keep one value")
    owned = [k for k in keys if k in LAUNCHER_KEYS]
    if owned:
        raise ValueError(f"--opts sets {', '.join(owned)}, which the launcher sets itself "
                         "(--seeds, --epochs, --save-every, the run folder, each checkpoint): "
                         "drop it from --opts")
    return pairs


def flat(pairs: Sequence[Tuple[str, str]]) -> List[str]:
    return [item for pair in pairs for item in pair]


def quote_command(cmd: Sequence[str]) -> str:
    """A shell-ready command line; yacs list values get double quotes ("['a', 'b']")."""
    out = []
    for part in cmd:
        part = str(part)
        if "'" in part and not any(c in part for c in '"$`\\!'):
            out.append(f'"{part}"')
        else:
            out.append(shlex.quote(part))
    return " ".join(out)


def short_hash(pairs: Sequence[Tuple[str, str]]) -> str:
    """8 hex digits of the sorted KEY VALUE pairs (stable across runs and machines)."""
    text = json.dumps(sorted(pairs))
    return hashlib.sha1(text.encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------------------------
# toggles -> config overrides
# ---------------------------------------------------------------------------------------------
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


def toggle_overrides(cfg, args) -> List[Tuple[str, str]]:
    """KEY VALUE pairs the given toggles imply for ``cfg`` (the YAML + --opts); none when no
    toggle is given (the YAML decides)."""
    out: List[Tuple[str, str]] = []
    supcon, tripletx = args.supcon, args.tripletx
    if args.mode == "phased":
        out += [("LOSS.PHASED.ENABLE", "True"), ("DATALOADER.PHASED.ENABLE", "True")]
    elif args.mode == "baseline":
        out += [("LOSS.PHASED.ENABLE", "False"), ("DATALOADER.PHASED.ENABLE", "False")]
        supcon = False if supcon is None else supcon
        tripletx = False if tripletx is None else tripletx
    phased = args.mode == "phased" or (args.mode is None and bool(cfg.LOSS.PHASED.ENABLE))
    n_phases = len(cfg.LOSS.PHASED.BOUNDARIES) + 1
    if supcon is True:
        out.append(("LOSS.SUPCON.ENABLE", "True"))
    elif supcon is False:
        out.append(("LOSS.SUPCON.ENABLE", "False"))
        if phased:
            out.append(("LOSS.PHASED.W_SUP_SPEC", str(["const:0.0"] * n_phases)))
    if tripletx is True:
        out.append(("LOSS.TRIPLETX.ENABLE", "True"))
    elif tripletx is False:
        out += [("LOSS.TRIPLETX.ENABLE", "False"), ("LOSS.BRIGHTNESS.ENABLE", "False")]
        if phased:
            seq = ["triplet" if m in ("tripletx", "routed") else str(m)
                   for m in cfg.LOSS.PHASED.METRIC_SEQ]
            out.append(("LOSS.PHASED.METRIC_SEQ", str(seq)))
    return out


def recipe_line(cfg) -> str:
    """One line saying which losses the resolved config trains."""
    on = lambda flag: "on" if flag else "off"  # noqa: E731
    return (f"phase plan {on(cfg.LOSS.PHASED.ENABLE)}, conditional PxK "
            f"{on(cfg.DATALOADER.PHASED.ENABLE)}, SupCon {on(cfg.LOSS.SUPCON.ENABLE)}, "
            f"TripletX {on(cfg.LOSS.TRIPLETX.ENABLE)}, brightness routing "
            f"{on(cfg.LOSS.BRIGHTNESS.ENABLE)}")


# ---------------------------------------------------------------------------------------------
# the experiment: names, folders, options
# ---------------------------------------------------------------------------------------------
@dataclass
class Experiment:
    """Everything fixed by the command line: the same command gives the same Experiment."""

    config: str                       # absolute path of the YAML
    root: str                         # absolute output root
    epochs: int
    save_every: int
    variant: str
    flags: List[str]                  # toggles given
    toggle_opts: List[Tuple[str, str]]
    user_opts: List[Tuple[str, str]]  # --opts, forwarded to train.py and test.py
    test_opts: List[Tuple[str, str]]  # --test-opts, forwarded to test.py only
    test_tag: str                     # 'test' or 'test-t<hash>'
    plan_table: str
    recipe: str
    argv: List[str] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return os.path.splitext(os.path.basename(self.config))[0]

    @property
    def name(self) -> str:
        return f"{self.stem}_{self.variant}_e{self.epochs}"

    @property
    def summary_base(self) -> str:
        suffix = "" if self.test_tag == "test" else f"_{self.test_tag}"
        return os.path.join(self.root, f"summary_{self.name}{suffix}")

    def run_dir(self, seed: int) -> str:
        return os.path.join(self.root, f"{self.name}_seed{seed}")

    def train_dir(self, seed: int) -> str:
        return os.path.join(self.run_dir(seed), "train")

    def test_dir(self, seed: int, epoch: int) -> str:
        return os.path.join(self.run_dir(seed), self.test_tag, f"epoch_{epoch}")

    def seeds_on_disk(self) -> List[int]:
        """Seeds of this experiment that already have a run folder under the root."""
        prefix = f"{self.name}_seed"
        found = []
        if os.path.isdir(self.root):
            for entry in os.listdir(self.root):
                if entry.startswith(prefix) and entry[len(prefix):].isdigit():
                    found.append(int(entry[len(prefix):]))
        return sorted(found)

    def train_opts(self, seed: int) -> List[str]:
        return flat([("SOLVER.SEED", str(seed)), ("SOLVER.MAX_EPOCHS", str(self.epochs)),
                     ("SOLVER.CHECKPOINT_PERIOD", str(self.save_every))]
                    + self.toggle_opts + self.user_opts
                    + [("OUTPUT_DIR", self.train_dir(seed))])

    def train_command(self, seed: int) -> List[str]:
        return [sys.executable, TRAIN_SCRIPT, "--config_file", self.config,
                *self.train_opts(seed)]

    def test_command(self, seed: int, epoch: int, weight: str) -> List[str]:
        # no --config_file: test.py uses the resolved config stored in the checkpoint (YAML +
        # toggles + --opts as trained); --opts are forwarded again for the TEST.* keys
        return [sys.executable, TEST_SCRIPT, "TEST.WEIGHT", weight,
                "OUTPUT_DIR", self.test_dir(seed, epoch), *flat(self.user_opts),
                *flat(self.test_opts)]

    def checkpoint_epochs(self) -> List[int]:
        """The epochs train.py saves: every save_every and the last."""
        return sorted({e for e in range(1, self.epochs + 1) if e % self.save_every == 0}
                      | {self.epochs})


def build_experiment(args, argv: Sequence[str]) -> Experiment:
    """Resolve the toggles and --opts against the YAML and validate the phase plan."""
    config = os.path.abspath(args.config)
    if not os.path.isfile(config):
        raise FileNotFoundError(f"--config {args.config}: file not found")
    user = option_pairs(args.opts)
    base = load_config(config, flat(user))
    toggles = toggle_overrides(base, args)
    flags = toggle_flags(args)
    clash = sorted({k for k, _ in toggles} & {k for k, _ in user})
    if clash:
        raise ValueError(f"--opts sets {', '.join(clash)}, which {' '.join(flags)} also sets: "
                         "drop one of them")
    cfg = load_config(config, flat(toggles + user + [("SOLVER.MAX_EPOCHS", str(args.epochs)),
                                                     ("SOLVER.CHECKPOINT_PERIOD",
                                                      str(args.save_every))]))
    try:
        plan = PhasePlan(cfg)
    except ValueError as exc:
        given = " ".join(flags) if flags else "no toggles (the YAML as written)"
        raise ValueError(f"{args.config} with {given}"
                         f"{' and --opts' if user else ''} gives an invalid phase plan: {exc}\n"
                         f"Toggle overrides applied: {flat(toggles) or 'none'}. Change the "
                         "toggles or the YAML.") from None
    train_keyed = [(k, v) for k, v in user
                   if not k.startswith("TEST.") and k not in RUNTIME_KEYS]
    test_only = option_pairs(args.test_opts)
    test_keyed = [(k, v) for k, v in user
                  if k.startswith("TEST.") and k not in TEST_OUTPUT_KEYS]
    test_keyed += [(k, v) for k, v in test_only if k not in TEST_OUTPUT_KEYS]
    variant = "-".join(f.lstrip("-").replace("no-supcon", "nosup").replace("no-tripletx", "notx")
                       for f in flags) or "yaml"
    if train_keyed:
        variant += f"-o{short_hash(train_keyed)}"
    test_tag = f"test-t{short_hash(test_keyed)}" if test_keyed else "test"
    return Experiment(config=config, root=os.path.abspath(args.output_root), epochs=args.epochs,
                      save_every=args.save_every, variant=variant, flags=flags,
                      toggle_opts=toggles, user_opts=user, test_opts=test_only,
                      test_tag=test_tag,
                      plan_table=plan.table(), recipe=recipe_line(cfg), argv=list(argv))


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
def write_if_changed(path: str, text: str) -> bool:
    """Atomic write unless the file already holds ``text`` (a rerun touches nothing)."""
    if os.path.isfile(path):
        with open(path) as f:
            if f.read() == text:
                return False
    atomic_write_text(path, text)
    return True


def read_test_summary(folder: str, epoch: int) -> Optional[dict]:
    """test.py's summary.json in ``folder`` when it is complete and of ``epoch``; else None
    (the epoch counts as untested)."""
    path = os.path.join(folder, SUMMARY_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            summary = json.load(f)
    except (OSError, ValueError) as exc:
        print(f"  {path} is unreadable ({exc}): testing again", flush=True)
        return None
    metrics = summary.get("metrics", {}) if isinstance(summary, dict) else {}
    missing = [k for k in METRIC_KEYS if k not in metrics]
    if missing or summary.get("epoch") != epoch:
        print(f"  {path} is not a complete result of epoch {epoch} (missing {missing}, epoch "
              f"{summary.get('epoch')}): testing again", flush=True)
        return None
    return summary


def resume_epoch(train_dir: str) -> int:
    """The last complete epoch recorded in resume.pth (0 = none)."""
    path = os.path.join(train_dir, "resume.pth")
    if not os.path.isfile(path):
        return 0
    import torch
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # unreadable: train.py will report it properly
        print(f"  {path} could not be read ({exc})", flush=True)
        return 0
    return int(state.get("epoch", 0))


@contextlib.contextmanager
def run_lock(run_dir: str):
    """Hold an exclusive lock on the run folder (two launchers never train one run at once)."""
    os.makedirs(run_dir, exist_ok=True)
    if fcntl is None:
        yield
        return
    handle = open(os.path.join(run_dir, ".launcher.lock"), "a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"another launcher is working in {run_dir}; rerun this command "
                            "when it has finished") from None
        yield
    finally:
        handle.close()


class RunLocked(RuntimeError):
    pass


def run_logged(cmd: Sequence[str], log_path: str) -> int:
    """Run ``cmd``, echo its output and append it to ``log_path``; return the exit code."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with open(log_path, "ab") as log:
        log.write(f"$ {quote_command(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env)
        try:
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                log.write(chunk)
                log.flush()
                sys.stdout.write(decoder.decode(chunk))
                sys.stdout.flush()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        rc = proc.wait()
        log.write(f"[exit code {rc}]\n".encode())
    return rc


# ---------------------------------------------------------------------------------------------
# one seed: train, then test every checkpoint
# ---------------------------------------------------------------------------------------------
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


def launcher_record(exp: Experiment, seed: int) -> dict:
    return {"command": quote_command(["python", "run_phased_loss.py", *exp.argv]),
            "config": exp.config, "seed": seed, "variant": exp.variant, "toggles": exp.flags,
            "toggle_opts": flat(exp.toggle_opts), "opts": flat(exp.user_opts),
            "test_opts": flat(exp.test_opts),
            "epochs": exp.epochs, "save_every": exp.save_every,
            "train_command": quote_command(exp.train_command(seed)),
            "train_dir": exp.train_dir(seed),
            "test_dir": os.path.join(exp.run_dir(seed), exp.test_tag)}


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
            if read_test_summary(folder, epoch) is not None:
                print(f"{tag} Skip epoch {epoch} (already tested)", flush=True)
                continue
            log = os.path.join(folder, "test_output.log")
            print(f"{tag} Test epoch {epoch}: {weight} -> {folder}", flush=True)
            rc = run_logged(exp.test_command(seed, epoch, weight), log)
            summary = read_test_summary(folder, epoch)
            if rc != 0 or summary is None:
                failures.append(Failure(seed, "test", epoch, f"test.py exited with code {rc}"
                                        + ("" if rc else f" without writing {SUMMARY_FILE}"),
                                        log))
                print(f"{tag} Test of epoch {epoch} failed (exit code {rc}); it will be retried "
                      "on the next run", flush=True)
                continue
            m = summary["metrics"]
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


def run_seed(exp: Experiment, seed: int, train_only: bool, failures: List[Failure]) -> None:
    run_dir = exp.run_dir(seed)
    print(f"[seed {seed}] Run folder {run_dir}", flush=True)
    try:
        with run_lock(run_dir):
            write_if_changed(os.path.join(run_dir, "launcher.json"),
                             json.dumps(launcher_record(exp, seed), indent=2) + "\n")
            train_seed(exp, seed, failures)
            if train_only:
                print(f"[seed {seed}] Tests skipped (--train-only)", flush=True)
            else:
                test_seed(exp, seed, failures)
    except RunLocked as exc:
        failures.append(Failure(seed, "lock", None, str(exc), None))
        print(f"[seed {seed}] {exc}", flush=True)


# ---------------------------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------------------------
def seed_record(exp: Experiment, seed: int) -> dict:
    """Best (by (mAP, R1); ties -> earlier epoch) and last epoch of one seed, from disk."""
    ckpts = [e for e in list_checkpoints(exp.train_dir(seed)) if e <= exp.epochs]
    tested = {}
    for e in ckpts:
        summary = read_test_summary(exp.test_dir(seed, e), e)
        if summary is not None:
            tested[e] = summary
    untested = [e for e in ckpts if e not in tested]
    complete = exp.epochs in ckpts
    best = None
    if tested:
        epoch = max(sorted(tested), key=lambda e: (tested[e]["metrics"]["mAP"],
                                                  tested[e]["metrics"]["R1"], -e))
        best = {"epoch": epoch, "metrics": pick_metrics(tested[epoch])}
    last = ({"epoch": exp.epochs, "metrics": pick_metrics(tested[exp.epochs])}
            if exp.epochs in tested else None)
    notes = []
    if not complete:
        notes.append(f"training incomplete (transformer_{exp.epochs}.pth missing)")
    if untested:
        notes.append(f"untested checkpoints: epochs {untested}")
    return {"seed": seed, "run_dir": exp.run_dir(seed), "checkpoints": ckpts,
            "tested": sorted(tested), "untested": untested, "best": best, "last": last,
            "in_statistics": complete and not untested, "note": "; ".join(notes) or None,
            "_summaries": tested}


def pick_metrics(summary: dict) -> Dict[str, float]:
    return {k: float(summary["metrics"][k]) for k in METRIC_KEYS}


def aggregate(records: Sequence[dict]) -> dict:
    """Mean and sample std (ddof=1) per metric over the seeds in the statistics."""
    out = {}
    for kind in KINDS:
        rows = [r[kind]["metrics"] for r in records if r["in_statistics"] and r[kind]]
        stats = {}
        for key in METRIC_KEYS:
            mean, std = mean_std([row[key] for row in rows])
            stats[key] = {"mean": mean, "std": std}
        out[kind] = {"n": len(rows), "seeds": [r["seed"] for r in records
                                               if r["in_statistics"] and r[kind]],
                     "metrics": stats}
    return out


def evaluation_info(records: Sequence[dict]) -> dict:
    """Split(s) and evaluation description of the test results (they should all agree)."""
    fields = ("split", "dataset", "feature", "feat_norm", "distance", "re_ranking", "clip_fusion")
    seen: Dict[str, list] = {f: [] for f in fields}
    for r in records:
        for s in r["_summaries"].values():
            for f in fields:
                value = s.get(f)
                if value not in seen[f]:
                    seen[f].append(value)
    return {f: (v[0] if len(v) == 1 else {"mixed": v}) if v else None for f, v in seen.items()}


def find_other_summary(path: str, own_name: str) -> str:
    """--compare-to: a summary_*.json file, or a root holding one (or one named like ours)."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--compare-to {path}: no such file or folder")
    found = sorted(glob.glob(os.path.join(path, "summary_*.json")))
    if len(found) == 1:
        return found[0]
    same = [f for f in found if os.path.basename(f) == f"{own_name}.json"]
    if same:
        return same[0]
    if not found:
        raise FileNotFoundError(f"--compare-to {path}: no summary_*.json there (run the other "
                                "launcher to the end first)")
    raise ValueError(f"--compare-to {path} holds several summaries "
                     f"({', '.join(os.path.basename(f) for f in found)}): pass one of the files")


def compare(records: Sequence[dict], other_path: str) -> dict:
    """Paired t-test per metric (ours - theirs) over the seeds both have in their statistics."""
    with open(other_path) as f:
        other = json.load(f)
    theirs = {int(s["seed"]): s for s in other["seeds"] if s.get("in_statistics")}
    result = {"other": os.path.abspath(other_path), "other_experiment": other.get("experiment"),
              "test": "paired t-test, two-sided (scipy.stats.ttest_rel), ours - other, seeds "
                      "paired by number"}
    for kind in KINDS:
        ours = {r["seed"]: r for r in records if r["in_statistics"] and r[kind]}
        common = sorted(s for s in ours if s in theirs and theirs[s].get(kind))
        metrics = {}
        for key in METRIC_KEYS:
            a = [ours[s][kind]["metrics"][key] for s in common]
            b = [float(theirs[s][kind]["metrics"][key]) for s in common]
            metrics[key] = paired_ttest(a, b)
        result[kind] = {"seeds": common, "metrics": metrics}
    return result


def build_summary(exp: Experiment, seeds: Sequence[int], failures: Sequence[Failure],
                  comparison: Optional[dict]) -> dict:
    records = [seed_record(exp, s) for s in seeds]
    info = evaluation_info(records)
    split = info["split"]
    split_text = ", ".join(split) if isinstance(split, list) else str(split)
    summary = {
        "experiment": exp.name, "config": exp.config, "variant": exp.variant,
        "toggles": exp.flags, "opts": flat(exp.user_opts), "epochs": exp.epochs,
        "save_every": exp.save_every, "test_folder": exp.test_tag, "evaluation": info,
        "selection": (f"best = the tested checkpoint with the highest (mAP, R1), earlier epoch "
                      f"on ties, selected on the test split ({split_text}): there is no "
                      "validation split, so best-epoch numbers are optimistic; 'last' = epoch "
                      f"{exp.epochs}, no selection"),
        "std": "sample standard deviation (ddof=1); null when n = 1",
        "statistics_rule": "a seed enters mean/std and comparisons when its training is complete "
                           "and every saved checkpoint is tested",
        "seeds": [{k: v for k, v in r.items() if not k.startswith("_")} for r in records],
        "aggregate": aggregate(records),
        "compare": comparison,
        "failures": [str(f) for f in failures],
    }
    return summary


def fmt(x: Optional[float], digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def fmt_p(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def summary_markdown(s: dict) -> str:
    keys = list(METRIC_KEYS)
    head = "| " + " | ".join(keys) + " |"
    lines = [f"# {s['experiment']}", "",
             f"- config: `{s['config']}`; variant `{s['variant']}` (toggles: "
             f"{' '.join(s['toggles']) or 'none'}; --opts: {' '.join(s['opts']) or 'none'})",
             f"- {s['epochs']} epochs, a checkpoint every {s['save_every']}; results in "
             f"`<run>/{s['test_folder']}/epoch_<N>/summary.json`",
             f"- evaluation: {json.dumps(s['evaluation'])}",
             f"- **{s['selection']}**", f"- std: {s['std']}; {s['statistics_rule']}", "",
             "## Per seed", "",
             "| seed | kind | epoch " + head, "|---|---|---|" + "---|" * len(keys)]
    for r in s["seeds"]:
        for kind in KINDS:
            entry = r[kind]
            label = "best (test-selected)" if kind == "best" else "last"
            cells = ([fmt(entry["metrics"][k]) for k in keys] if entry else ["-"] * len(keys))
            lines.append(f"| {r['seed']} | {label} | {entry['epoch'] if entry else '-'} | "
                         + " | ".join(cells) + " |")
    lines += ["", "## Across seeds (mean ± sample std)", "",
              "| kind | n " + head, "|---|---|" + "---|" * len(keys)]
    for kind in KINDS:
        agg = s["aggregate"][kind]
        cells = []
        for k in keys:
            m = agg["metrics"][k]
            cells.append(f"{fmt(m['mean'])} ± {fmt(m['std'])}" if m["mean"] is not None else "-")
        label = "best (test-selected)" if kind == "best" else "last"
        lines.append(f"| {label} | {agg['n']} | " + " | ".join(cells) + " |")
    left_out = [r for r in s["seeds"] if not r["in_statistics"]]
    if left_out:
        lines += ["", "Not in the statistics:"]
        lines += [f"- seed {r['seed']}: {r['note']}" for r in left_out]
    if s["compare"]:
        c = s["compare"]
        lines += ["", f"## Paired t-test vs `{c.get('other_experiment')}` ({c['other']})", "",
                  f"{c['test']}.", "",
                  "| kind | seeds | metric | mean diff | t | p | note |",
                  "|---|---|---|---|---|---|---|"]
        for kind in KINDS:
            for k in keys:
                t = c[kind]["metrics"][k]
                lines.append(f"| {kind} | {', '.join(map(str, c[kind]['seeds'])) or '-'} | {k} | "
                             f"{fmt(t['mean_diff'])} | {fmt(t['t'], 3)} | {fmt_p(t['p'])} | "
                             f"{t['reason'] or ''} |")
    if s["failures"]:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in s["failures"]]
    return "\n".join(lines) + "\n"


def summary_csv(s: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["experiment", "row", "kind", "epoch", "n", *METRIC_KEYS])
    name = s["experiment"]
    for r in s["seeds"]:
        for kind in KINDS:
            e = r[kind]
            w.writerow([name, f"seed{r['seed']}", kind, e["epoch"] if e else "", "",
                        *[e["metrics"][k] if e else "" for k in METRIC_KEYS]])
    for kind in KINDS:
        agg = s["aggregate"][kind]
        for stat in ("mean", "std"):
            w.writerow([name, stat, kind, "", agg["n"],
                        *["" if agg["metrics"][k][stat] is None else agg["metrics"][k][stat]
                          for k in METRIC_KEYS]])
    if s["compare"]:
        for kind in KINDS:
            c = s["compare"][kind]
            for stat in ("mean_diff", "p"):
                w.writerow([name, f"{stat}_paired_t", kind, "", len(c["seeds"]),
                            *["" if c["metrics"][k][stat] is None else c["metrics"][k][stat]
                              for k in METRIC_KEYS]])
    return buf.getvalue()


def write_summaries(exp: Experiment, summary: dict) -> str:
    base = exp.summary_base
    text = summary_markdown(summary)
    atomic_write_text(base + ".json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(base + ".md", text)
    atomic_write_text(base + ".csv", summary_csv(summary))
    print(f"Summaries written: {base}.json, .md, .csv", flush=True)
    return text


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


def print_plan(exp: Experiment, seeds: Sequence[int], train_only: bool) -> None:
    print_header(exp)
    for seed in seeds:
        tag = f"[seed {seed}]"
        train_dir = exp.train_dir(seed)
        print(f"{tag} run folder {exp.run_dir(seed)}")
        have = [e for e in list_checkpoints(train_dir) if e <= exp.epochs]
        if exp.epochs in have:
            print(f"{tag}   train: nothing (transformer_{exp.epochs}.pth exists)")
            planned = have
        else:
            done = resume_epoch(train_dir)
            print(f"{tag}   train: epochs {done + 1}..{exp.epochs}"
                  f"{f' (resume after epoch {done})' if done else ' (new run)'}: "
                  f"{quote_command(exp.train_command(seed))}")
            planned = sorted(set(have) | {e for e in exp.checkpoint_epochs() if e > done})
        if train_only:
            print(f"{tag}   test: skipped (--train-only)")
            continue
        tested = [e for e in planned if read_test_summary(exp.test_dir(seed, e), e) is not None]
        todo = [e for e in planned if e not in tested]
        print(f"{tag}   test: epochs {todo or 'none'} -> "
              f"{os.path.join(exp.run_dir(seed), exp.test_tag)}/epoch_<N>"
              + (f"; already tested: {tested}" if tested else ""))
        if todo:
            weight = os.path.join(train_dir, f"transformer_{todo[0]}.pth")
            print(f"{tag}   test command (epoch {todo[0]}): "
                  f"{quote_command(exp.test_command(seed, todo[0], weight))}")
    print(f"Summaries: {exp.summary_base}.json/.md/.csv")
    print("Dry run: nothing was started or written.", flush=True)


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    exp = build_experiment(args, argv)
    if args.compare_to and not os.path.exists(args.compare_to):
        raise FileNotFoundError(f"--compare-to {args.compare_to}: no such file or folder")
    if args.dry_run:
        print_plan(exp, args.seeds, args.train_only)
        return 0
    print_header(exp)
    failures: List[Failure] = []
    for seed in args.seeds:
        run_seed(exp, seed, args.train_only, failures)
    # the summary covers every seed of this experiment under the root, not only this command's
    seeds = sorted(set(args.seeds) | set(exp.seeds_on_disk()))
    comparison = None
    if args.compare_to:
        try:
            comparison = compare([seed_record(exp, s) for s in seeds],
                                 find_other_summary(args.compare_to,
                                                    os.path.basename(exp.summary_base)))
        except (OSError, ValueError, KeyError) as exc:
            failures.append(Failure(None, "compare", None, f"--compare-to {args.compare_to}: "
                                    f"{exc}", None))
    summary = build_summary(exp, seeds, failures, comparison)
    print(write_summaries(exp, summary), flush=True)
    if failures:
        print(f"{len(failures)} failure(s); rerun the same command to retry (finished work is "
              "kept):", flush=True)
        for f in failures:
            print(f"  {f}", flush=True)
        return 1
    print("Done: " + ("every seed trained (tests skipped, --train-only)." if args.train_only
                      else "every seed trained and every saved checkpoint tested."), flush=True)
    return 0


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
