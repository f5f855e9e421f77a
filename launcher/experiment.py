"""The experiment: what one launcher command trains and tests, its names, folders and lock.

Run folders are named for people, from the config stem, the variant and the seed only --
``<root>/<stem>_<variant>_e<epochs>_seed<s>/`` -- so the same command always finds the same
folder. The variant names the toggles given (``launcher.toggles``; 'yaml' when none) plus
``-o<hash>`` of the training options; keys that do not change the weights
(``utils.provenance.RUNTIME_ONLY``, TEST.* among them) and ``NAME_OMITS`` are left out. The name
is not the run's identity: the resolved training config is (``Experiment.train_config``), and
``launcher.identity`` refuses a folder that holds another one. Test results go to
``<run>/test/`` or, when TEST.* options or test-only options change the numbers (keys outside
``utils.provenance.TEST_RUNTIME_ONLY``), ``<run>/test-t<hash>/``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

from configs import load_config
from solver.phase_plan import PhasePlan
from utils.provenance import is_runtime_only, is_test_runtime_only

from .toggles import ordered_flags, recipe_line, toggle_overrides, variant_name

try:  # advisory per-run lock (POSIX); released by the OS when the launcher dies
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SCRIPT = os.path.join(ROOT, "train.py")
TEST_SCRIPT = os.path.join(ROOT, "test.py")

# set by the launcher from --seeds / --epochs / --save-every and the run folder
LAUNCHER_KEYS = ("SOLVER.SEED", "SOLVER.MAX_EPOCHS", "SOLVER.CHECKPOINT_PERIOD", "OUTPUT_DIR",
                 "TEST.WEIGHT")
# Left out of the run folder's name although they are training keys (utils.provenance: other
# data, other numerics): they say where a run executes, so a changed value finds the same folder
# and is refused there, naming the key (launcher.identity), instead of starting another run.
NAME_OMITS = ("DATASETS.ROOT_DIR", "MODEL.DEVICE")
LOCK_FILE = ".launcher.lock"

Pairs = List[Tuple[str, str]]


def option_pairs(opts: Sequence[str]) -> Pairs:
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


@dataclass
class Experiment:
    """Everything fixed by the command line: the same command gives the same Experiment."""

    config: str                       # absolute path of the YAML
    root: str                         # absolute output root
    epochs: int
    save_every: int
    variant: str
    flags: List[str]                  # toggles given
    toggle_opts: Pairs
    user_opts: Pairs                  # --opts, forwarded to train.py and test.py
    test_opts: Pairs                  # --test-opts, forwarded to test.py only
    test_tag: str                     # 'test' or 'test-t<hash>'
    plan_table: str
    recipe: str
    argv: List[str] = field(default_factory=list)
    train_script: str = TRAIN_SCRIPT
    test_script: str = TEST_SCRIPT

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
        return [sys.executable, self.train_script, "--config_file", self.config,
                *self.train_opts(seed)]

    def train_config(self, seed: int):
        """The resolved config train.py will train ``seed`` with: the same YAML and options,
        through the same ``configs.load_config``. The run's identity (launcher.identity)."""
        return load_config(self.config, self.train_opts(seed))

    def test_args(self, seed: int, epoch: int, weight: str) -> List[str]:
        # no --config_file: test.py uses the resolved config stored in the checkpoint (YAML +
        # toggles + --opts as trained); --opts are forwarded again for the TEST.* keys
        return ["TEST.WEIGHT", weight, "OUTPUT_DIR", self.test_dir(seed, epoch),
                *flat(self.user_opts), *flat(self.test_opts)]

    def test_command(self, seed: int, epoch: int, weight: str) -> List[str]:
        return [sys.executable, self.test_script, *self.test_args(seed, epoch, weight)]

    def checkpoint_epochs(self) -> List[int]:
        """The epochs train.py saves: every save_every and the last."""
        return sorted({e for e in range(1, self.epochs + 1) if e % self.save_every == 0}
                      | {self.epochs})

    def record(self, seed: int, config_sha256: str) -> dict:
        """Provenance of one run (``<run>/launcher.json``); ``config_sha256``:
        ``utils.provenance.config_fingerprint`` of :meth:`train_config`."""
        return {"command": quote_command(["python", "run_phased_loss.py", *self.argv]),
                "config": self.config, "config_sha256": config_sha256,
                "seed": seed, "variant": self.variant,
                "toggles": self.flags, "toggle_opts": flat(self.toggle_opts),
                "opts": flat(self.user_opts), "test_opts": flat(self.test_opts),
                "epochs": self.epochs, "save_every": self.save_every,
                "train_command": quote_command(self.train_command(seed)),
                "train_dir": self.train_dir(seed),
                "test_dir": os.path.join(self.run_dir(seed), self.test_tag)}


def make_experiment(config: str, root: str, epochs: int, save_every: int,
                    flags: Sequence[str] = (), opts: Sequence[str] = (),
                    test_opts: Sequence[str] = (), argv: Sequence[str] = (),
                    train_script: str = TRAIN_SCRIPT,
                    test_script: str = TEST_SCRIPT) -> Experiment:
    """Resolve the toggles and options against the YAML and validate the phase plan.

    Args:
        config: the YAML recipe; root: the output root.
        flags: toggles (``launcher.toggles.OVERLAYS`` keys, e.g. ``['--phased', '--no-supcon']``).
        opts: KEY VALUE list for train.py and test.py; test_opts: for test.py only.
        argv: the command line this came from (provenance only).
    Raises:
        FileNotFoundError for a missing config; ValueError for bad options or toggles that
        clash with them, or a config whose phase plan is invalid.
    """
    config_path = os.path.abspath(config)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"--config {config}: file not found")
    flags = ordered_flags(flags)
    user = option_pairs(opts)
    base = load_config(config_path, flat(user))
    toggles = toggle_overrides(base, flags)
    clash = sorted({k for k, _ in toggles} & {k for k, _ in user})
    if clash:
        raise ValueError(f"--opts sets {', '.join(clash)}, which {' '.join(flags)} also sets: "
                         "drop one of them")
    cfg = load_config(config_path, flat(toggles + user + [("SOLVER.MAX_EPOCHS", str(epochs)),
                                                          ("SOLVER.CHECKPOINT_PERIOD",
                                                           str(save_every))]))
    try:
        plan = PhasePlan(cfg)
    except ValueError as exc:
        given = " ".join(flags) if flags else "no toggles (the YAML as written)"
        raise ValueError(f"{config} with {given}"
                         f"{' and --opts' if user else ''} gives an invalid phase plan: {exc}\n"
                         f"Toggle overrides applied: {flat(toggles) or 'none'}. Change the "
                         "toggles or the YAML.") from None
    train_keyed = [(k, v) for k, v in user if not is_runtime_only(k) and k not in NAME_OMITS]
    test_only = option_pairs(test_opts)
    test_keyed = [(k, v) for k, v in user
                  if k.startswith("TEST.") and not is_test_runtime_only(k)]
    test_keyed += [(k, v) for k, v in test_only if not is_test_runtime_only(k)]
    variant = variant_name(flags)
    if train_keyed:
        variant += f"-o{short_hash(train_keyed)}"
    test_tag = f"test-t{short_hash(test_keyed)}" if test_keyed else "test"
    return Experiment(config=config_path, root=os.path.abspath(root), epochs=epochs,
                      save_every=save_every, variant=variant, flags=flags,
                      toggle_opts=toggles, user_opts=user, test_opts=test_only,
                      test_tag=test_tag, plan_table=plan.table(), recipe=recipe_line(cfg),
                      argv=list(argv), train_script=train_script, test_script=test_script)


class RunLocked(RuntimeError):
    pass


@contextlib.contextmanager
def run_lock(run_dir: str):
    """Hold an exclusive lock on the run folder (two launchers never train one run at once)."""
    os.makedirs(run_dir, exist_ok=True)
    if fcntl is None:
        yield
        return
    handle = open(os.path.join(run_dir, LOCK_FILE), "a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"another launcher is working in {run_dir}; rerun this command "
                            "when it has finished") from None
        yield
    finally:
        handle.close()
