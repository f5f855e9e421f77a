"""Which config keys decide the trained weights, and how two resolved configs differ.

A run's identity is its resolved config minus the keys listed in :data:`RUNTIME_ONLY`, which
provably do not change the trained weights (``tests/test_resume_config.py`` trains with every one
of them changed and gets bit-identical weights; ``tests/test_worker_invariance.py`` does the same
for the worker count). train.py compares a resume.pth's stored config with the new one through
:func:`compare_configs`, and the launcher compares a run folder's stored config with the one its
command resolves the same way (``launcher/identity.py``).

A test's identity is the weight file it evaluated plus :func:`evaluation_fingerprint` of the
config test.py ran with (``utils/summary.py`` records both in summary.json). Torch-free (yaml and
the config defaults only), so any tool can use it.

Example::

    cmp = compare_configs(stored_yaml, cfg)        # YAML strings, CfgNodes or flat dicts
    if cmp.kind == "incompatible":
        raise ValueError(cmp.describe())
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple, Union

import yaml

# Keys (a name ending in '.' covers a whole section) that do not change the trained weights.
RUNTIME_ONLY: Dict[str, str] = {
    "OUTPUT_DIR": "the run folder itself",
    "TEST.": "evaluation only: in-training evaluation runs under a forked RNG and no training "
             "decision reads its result",
    "SOLVER.EVAL_PERIOD": "when to evaluate (same reason as TEST.*)",
    "SOLVER.CHECKPOINT_PERIOD": "which epochs get a transformer_<epoch>.pth file",
    "MODEL.DIST_TIMEOUT_S": "how long a DDP collective waits before failing",
    "DATALOADER.NUM_WORKERS": "every random choice of a training item is seeded by (SOLVER.SEED, "
                              "epoch, index), not by the worker that loads it",
    "DATALOADER.CACHE_IMAGES": "the cached pipeline gives exactly the uncached items "
                               "(tests/test_worker_invariance.py: items and weights equal)",
}
# Not listed, on purpose: MODEL.DEVICE (CPU and CUDA differ numerically, and AMP is used on CUDA
# only), MODEL.DIST_TRAIN (per-process batches and BatchNorm statistics), DATASETS.ROOT_DIR
# (another folder may hold other data). A change of one of them is a change of the run.

# Keys of test.py's resolved config that do not change a test's numbers. The weight file is not
# part of the test config: summary.json names it on its own (path, size, mtime).
TEST_RUNTIME_ONLY: Dict[str, str] = {
    "OUTPUT_DIR": "where the results go",
    "TEST.WEIGHT": "the weight file, recorded on its own with its size and mtime",
    "TEST.IMS_PER_BATCH": "the model is in eval mode: each image's feature is computed alone",
    "TEST.EVAL_BLOCK": "the blocked evaluation equals the unblocked one (tests/test_metrics.py)",
    "TEST.VIS_QUERIES": "the ranked-list figure only",
    "TEST.VIS_TOPK": "the ranked-list figure only",
    "TEST.EXPORT_FEATURES": "whether features.npz is written",
    "DATALOADER.NUM_WORKERS": "the test transforms are deterministic",
    "DATALOADER.CACHE_IMAGES": "training only; test.py does not read it",
    "SOLVER.EVAL_PERIOD": "training only; test.py does not read it",
    "SOLVER.CHECKPOINT_PERIOD": "training only; test.py does not read it",
    "MODEL.DIST_TIMEOUT_S": "training only; test.py does not read it",
}

# Keys whose change continues the same run for more epochs; train.py resumes under such a change
# only with --allow-extend and records the new segment. Value: why the result then differs from
# a run started with the new value.
EXTENSION_KEYS: Dict[str, str] = {
    "SOLVER.MAX_EPOCHS": "the LR schedule (cosine over MAX_EPOCHS) and the phase plan's last "
                         "phase depend on MAX_EPOCHS, so the epochs trained before the change "
                         "followed the old schedule",
}

ABSENT = "<absent>"
ConfigLike = Union[str, Mapping, object]


def is_runtime_only(key: str) -> bool:
    """True for a dotted key listed in (or under a section listed in) :data:`RUNTIME_ONLY`."""
    return _listed(key, RUNTIME_ONLY)


def is_test_runtime_only(key: str) -> bool:
    """True for a dotted key listed in :data:`TEST_RUNTIME_ONLY` (it does not change a test's
    numbers)."""
    return _listed(key, TEST_RUNTIME_ONLY)


def _listed(key: str, keys) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in keys)


def flatten_config(config: ConfigLike) -> Dict[str, object]:
    """{dotted key: value} of a config given as a YAML string, a yacs CfgNode (anything with
    ``dump()``) or a nested mapping; values as YAML reads them back (lists, not tuples)."""
    if isinstance(config, str):
        tree = yaml.safe_load(config) or {}
    elif hasattr(config, "dump"):
        tree = yaml.safe_load(config.dump()) or {}
    else:
        tree = config
    flat: Dict[str, object] = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(tree, "")
    return flat


def training_config(config: ConfigLike) -> Dict[str, object]:
    """The flattened config without its runtime-only keys: what decides the weights."""
    return {k: v for k, v in flatten_config(config).items() if not is_runtime_only(k)}


def config_fingerprint(config: ConfigLike) -> str:
    """sha256 (hex) of :func:`training_config` as canonical JSON: equal for two configs exactly
    when they train the same weights as far as the config can tell."""
    text = json.dumps(training_config(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def evaluation_fingerprint(config: ConfigLike) -> str:
    """sha256 (hex) of what decides a test's numbers besides the weights: the config test.py
    evaluated with, without :data:`TEST_RUNTIME_ONLY` keys and without keys at their default.

    Leaving defaults out keeps the fingerprints of earlier tests valid when a key is added to
    the code later (at its default, it changes nothing: the rule :func:`compare_configs` applies
    to training configs). A stored config (a checkpoint's) holds every key it knew, so a changed
    default never hides a difference: the stored value then differs from one of the two
    defaults.
    """
    defaults = _defaults()
    kept = {k: v for k, v in flatten_config(config).items()
            if not is_test_runtime_only(k) and (k not in defaults or defaults[k] != v)}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=1)
def _defaults() -> Dict[str, object]:
    """The flattened defaults (cached: callers only read it)."""
    from configs.defaults import get_cfg_defaults   # yacs only, no torch
    return flatten_config(get_cfg_defaults())


@dataclass
class ConfigComparison:
    """How a new config differs from an old one.

    ``changed``: training keys with different values, {key: (old, new)} (ABSENT for a key one side
    lacks); ``runtime_changed``: the same for runtime-only keys; ``new_at_default``: keys the old
    config predates (added to the code since) whose new value is their default, taken as
    unchanged. ``kind``: 'identical' (no training key changed), 'extension' (only
    :data:`EXTENSION_KEYS` changed, each in its allowed direction) or 'incompatible'.
    """

    changed: Dict[str, Tuple[object, object]] = field(default_factory=dict)
    runtime_changed: Dict[str, Tuple[object, object]] = field(default_factory=dict)
    new_at_default: Tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        if not self.changed:
            return "identical"
        if all(k in EXTENSION_KEYS and _extends(k, *v) for k, v in self.changed.items()):
            return "extension"
        return "incompatible"

    def describe(self, which: str = "changed") -> str:
        """One '  KEY: old -> new' line per key of ``changed`` or ``runtime_changed``."""
        items = getattr(self, which)
        return "\n".join(f"  {k}: {_show(old)} -> {_show(new)}" for k, (old, new) in items.items())


def _extends(key: str, old, new) -> bool:
    if key == "SOLVER.MAX_EPOCHS":
        return isinstance(old, int) and isinstance(new, int) and new > old
    return False


def _show(value) -> str:
    return value if value is ABSENT else repr(value)


def compare_configs(old: ConfigLike, new: ConfigLike) -> ConfigComparison:
    """Compare two resolved configs key by key (see :class:`ConfigComparison`)."""
    a, b = flatten_config(old), flatten_config(new)
    defaults = None
    result = ConfigComparison()
    new_at_default = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, ABSENT), b.get(key, ABSENT)
        if va == vb:
            continue
        if va is ABSENT and vb is not ABSENT:
            defaults = _defaults() if defaults is None else defaults
            if key in defaults and defaults[key] == vb:
                new_at_default.append(key)
                continue
        target = result.runtime_changed if is_runtime_only(key) else result.changed
        target[key] = (va, vb)
    result.new_at_default = tuple(new_at_default)
    return result


__all__ = ["RUNTIME_ONLY", "TEST_RUNTIME_ONLY", "EXTENSION_KEYS", "ABSENT", "is_runtime_only",
           "is_test_runtime_only", "flatten_config", "training_config", "config_fingerprint",
           "evaluation_fingerprint", "compare_configs", "ConfigComparison"]


def code_version(root: Optional[str] = None) -> dict:
    """Which code produced a run: ``{"commit": HEAD's sha or None, "dirty": tracked files differ
    from HEAD (True / False / None), "diff_sha256": sha256 of ``git diff HEAD`` when dirty}`` of
    the checkout at ``root`` (default: this repository). None fields when git or the checkout is
    not there (a copied tree): the record then says so instead of guessing. Untracked files (run
    outputs, data) do not count as dirty.

    Example:
        >>> code_version()["commit"]   # e.g. '4336089...'
    """
    import subprocess

    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> Optional[bytes]:
        try:
            done = subprocess.run(("git",) + args, cwd=root, capture_output=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if head is None:
        return {"commit": None, "dirty": None, "diff_sha256": None}
    diff = git("diff", "HEAD", "--no-ext-diff", "--binary")
    dirty = None if diff is None else bool(diff.strip())
    return {"commit": head.decode().strip(), "dirty": dirty,
            "diff_sha256": hashlib.sha256(diff).hexdigest() if dirty else None}
