"""The config test.py evaluates a checkpoint with, resolved in one place (torch-free).

test.py resolves its config here; the launcher resolves it the same way, from a checkpoint's
stored config and the options its test command passes, to know whether a ``summary.json`` was
written under the config its command would test with (``utils.provenance.evaluation_fingerprint``
of both; ``utils.summary.TestSummary.mismatch``).

The resolution: the recipe (``config_file``) or else the checkpoint's stored, already resolved
config; the KEY VALUE options over it; then what test.py always sets itself:

- ``OUTPUT_DIR``: the value given in the options, else ``<checkpoint folder>/test_<stem>/``
  (zero-shot: the config's own OUTPUT_DIR);
- ``MODEL.PRETRAIN_CHOICE 'none'``: the weights come from ``TEST.WEIGHT`` (zero-shot: from the
  dual encoder's MODEL.TBPS towers alone);
- ``LOSS.TGMIM.ENABLE False`` and, for MODEL.TASK 'reid', ``DATASETS.CAPTION_SOURCE 'none'``:
  training-only branches are not built (TG-MIM's text encoder is not part of the test feature,
  and building it could need a download); image re-ID test images need no captions. MODEL.TASK
  'tbps' keeps its caption source: the test captions are its queries;
- ``MODEL.CLIP_PRETRAIN ''`` when the checkpoint holds the open_clip tower's weights;
- ``MODEL.DIST_TRAIN False``: one process.

Cross-domain testing (TEST.DATASET, MODEL.TASK 'tbps'): :func:`cross_domain_config` gives the
config of the dataset evaluated (DATASETS.NAMES / ROOT_DIR replaced, no held-out or few-shot
identities); the resolved config itself keeps the training dataset (its validation split is
where the best epoch is selected). Zero-shot evaluation refuses TEST.DATASET (nothing was trained
on another dataset: name the dataset as DATASETS.NAMES).

Zero-shot (:func:`is_zero_shot`): with MODEL.TASK 'tbps' and no ``TEST.WEIGHT`` in the options,
test.py evaluates the dual encoder as its recipe builds it (``--config_file`` required); with
MODEL.TASK 'reid' a missing ``TEST.WEIGHT`` stays an error.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence

from configs import load_config

CLIP_TOWER_PREFIX = "clip_fusion.tower."


def option_value(opts: Sequence[str], key: str) -> Optional[str]:
    """The value given for ``key`` in a KEY VALUE list, or None."""
    for k, v in zip(opts[::2], opts[1::2]):
        if k == key:
            return v
    return None


def require_weight(opts: Sequence[str]) -> str:
    """The ``TEST.WEIGHT`` given in ``opts``; an error saying how to give it when there is none."""
    weight = option_value([str(o) for o in opts], "TEST.WEIGHT")
    if not weight:
        raise ValueError("give the checkpoint to evaluate: python test.py [--config_file CFG] "
                         "TEST.WEIGHT path/to/transformer_<epoch>.pth (a MODEL.TASK 'tbps' "
                         "recipe without TEST.WEIGHT is evaluated zero-shot: python test.py "
                         "--config_file CFG)")
    return weight


def is_zero_shot(opts: Sequence[str]) -> bool:
    """No ``TEST.WEIGHT`` in ``opts``: test.py evaluates the model as built from its recipe
    (allowed for MODEL.TASK 'tbps' only; :func:`resolve_eval_config` says so otherwise)."""
    return not option_value([str(o) for o in opts], "TEST.WEIGHT")


def has_clip_tower(state_keys: Iterable[str]) -> bool:
    """Whether a checkpoint's state dict holds the CLIP fusion tower's weights."""
    return any(k.startswith(CLIP_TOWER_PREFIX) for k in state_keys)


def resolve_eval_config(opts: Sequence[str], config_file: str = "",
                        stored_config: Optional[str] = None, clip_tower: bool = False):
    """test.py's frozen config (see the module docstring).

    Args:
        opts: test.py's KEY VALUE options; ``TEST.WEIGHT`` among them names the checkpoint.
        config_file: ``--config_file`` (a recipe); empty: use ``stored_config``.
        stored_config: the checkpoint's stored config (YAML), used when there is no recipe.
        clip_tower: the checkpoint holds the CLIP fusion tower (:func:`has_clip_tower`).
    Raises:
        ValueError: no ``TEST.WEIGHT`` in ``opts`` (except zero-shot: a MODEL.TASK 'tbps' recipe
            given as ``config_file`` whose TEST.WEIGHT is empty too), neither a recipe nor a
            stored config, or a bad key or value.
    """
    opts = [str(o) for o in opts]
    zero_shot = is_zero_shot(opts)
    weight = "" if zero_shot and config_file else require_weight(opts)
    if config_file:
        # no path checks: the weights come from TEST.WEIGHT, not MODEL.PRETRAIN_PATH
        cfg = load_config(config_file, opts, freeze=False, check_paths=False)
    elif stored_config is not None:
        cfg = load_config(config_text=stored_config, opts=opts, freeze=False)
    else:
        raise ValueError(f"{weight}: no config to evaluate it with; pass --config_file")
    if zero_shot and (cfg.MODEL.TASK != "tbps" or cfg.TEST.WEIGHT):
        require_weight(opts)   # image re-ID has no zero-shot model; a recipe's own weight:
        # give it on the command line, where it is recorded and fingerprinted
    if zero_shot and cfg.TEST.DATASET:
        raise ValueError(f"TEST.DATASET {cfg.TEST.DATASET!r} without TEST.WEIGHT: a zero-shot "
                         "model was not trained on DATASETS.NAMES, so there is no cross-domain "
                         f"pair; evaluate it with DATASETS.NAMES {cfg.TEST.DATASET} (and "
                         "DATASETS.ROOT_DIR) instead")
    out_dir = option_value(opts, "OUTPUT_DIR")
    if out_dir is None and not zero_shot:
        stem = os.path.splitext(os.path.basename(weight))[0]
        out_dir = os.path.join(os.path.dirname(os.path.abspath(weight)), f"test_{stem}")
    if out_dir is not None:
        cfg.OUTPUT_DIR = out_dir
    cfg.MODEL.PRETRAIN_CHOICE = "none"
    cfg.LOSS.TGMIM.ENABLE = False
    if cfg.MODEL.TASK != "tbps":
        cfg.DATASETS.CAPTION_SOURCE = "none"
    if clip_tower:
        cfg.MODEL.CLIP_PRETRAIN = ""
    cfg.MODEL.DIST_TRAIN = False
    cfg.freeze()
    return cfg


def cross_domain_config(cfg):
    """The config of the dataset test.py evaluates under TEST.DATASET (cross-domain testing), or
    None without it: a frozen copy of ``cfg`` with DATASETS.NAMES = TEST.DATASET,
    DATASETS.ROOT_DIR = TEST.ROOT_DIR (or the training root), and none of the training dataset's
    identity selections (DATASETS.VAL_IDS / SYNTH_VAL_IDS 0, TRAIN_ID_FRACTION 1.0: they pick
    TRAINING identities and never change a test split). CAPTION_SOURCE, CAPTION_LANG and the
    SYNTH_* generator keys apply to the evaluated dataset as they are."""
    if not cfg.TEST.DATASET:
        return None
    out = cfg.clone()
    out.defrost()
    d = out.DATASETS
    d.NAMES = cfg.TEST.DATASET
    d.ROOT_DIR = cfg.TEST.ROOT_DIR or cfg.DATASETS.ROOT_DIR
    d.VAL_IDS, d.SYNTH_VAL_IDS, d.TRAIN_ID_FRACTION = 0, 0, 1.0
    out.freeze()
    return out
