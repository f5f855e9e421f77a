"""Released TBPS-CLIP checkpoints as the starting point of the dual encoder
(MODEL.TBPS.INIT_CHECKPOINT, INIT_CHECKPOINT_FORMAT 'tbps_clip').

The layout, read from ``Flame-Chasers/TBPS-CLIP`` (``main.py``, ``model/tbps_model.py``,
``model/visual_transformer.py``, ``model/text_transformer.py``, ``misc/build.py``):

- the file is ``torch.save({'model': model.module.state_dict(), 'optimizer': ...,
  'config': config})`` (``checkpoint_best.pth``; ``main.py`` saves the unwrapped module, but a
  'module.' DDP prefix is accepted too, as is a bare state dict). ``config`` is an
  ``easydict.EasyDict``: :func:`read_tbps_clip_checkpoint` reads it with ``weights_only=True``,
  letting ``easydict.EasyDict`` -- and nothing else -- unpickle as a ``collections.OrderedDict``
  (pure data; no code from the file runs and easydict need not be installed). Its
  ``experiment.input_resolution`` (H, W) and ``experiment.text_length`` are used when present;
- ``CLIP.visual`` is OpenAI's ``VisualTransformer`` (ViT-B/16, width 768, 12 layers, QuickGELU):
  ``visual.conv1.weight`` (no bias), ``visual.class_embedding``, ``visual.positional_embedding``
  (1 + (H/16)(W/16) rows, built for ``input_resolution``, 224 x 224 in the released configs),
  ``visual.ln_pre.*``, ``visual.transformer.resblocks.{i}.{ln_1, attn.in_proj_weight,
  attn.in_proj_bias, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}.*``, ``visual.ln_post.*``,
  ``visual.proj`` (768 x 512);
- ``CLIP.encode_text`` is the text transformer (width 512, 12 layers, causal, QuickGELU), under
  ``encode_text.``: ``token_embedding.weight`` (49408 rows), ``positional_embedding``
  (``text_length`` rows, 77), ``transformer.resblocks.*`` (as above), ``ln_final.*``,
  ``text_projection`` (512 x 512). OpenAI CLIP names the same tensors without the prefix;
- ``logit_scale`` (ln kappa, initialised ln(1 / 0.07));
- training-only heads, present when their loss was on: ``simclr_mlp.{0,2}.*`` (SS-I MLP
  512 -> 128 -> 512), ``classifier.*`` (ID loss), and the MLM branch ``cross_attn.*``,
  ``cross_modal_transformer.*``, ``ln_pre_t.*``, ``ln_pre_i.*``, ``ln_post.*``, ``mlm_head.*``.

open_clip's ``VisionTransformer`` / ``TextTransformer`` use the same names for every tower tensor
(model/dual_encoder.py builds the towers from them), so the mapping is a prefix rename:
``visual.`` -> ``image_tower.visual.``, ``encode_text.`` -> ``text_tower.text.``,
``logit_scale`` -> ``logit_scale``. The training-only heads are skipped and reported (PhaseReID's
own heads -- ``id_head``, the SS-I projection of another branch -- start fresh).

Deliberate differences from TBPS-CLIP's own loading (``misc/build.py load_checkpoint``):

- a position embedding of another grid (the checkpoint's ``input_resolution`` vs INPUT.SIZE_TRAIN)
  is resized with PhaseReID's CLIP convention (CLS row kept, bicubic;
  ``utils.weights_io.resize_pos_embed``, as ``model.clip_fusion.fit_open_clip_pos_embed``), where
  TBPS-CLIP resizes OpenAI weights bilinearly. The source grid comes from the stored config
  (non-square grids included), else from a square table;
- a text position table longer than the tower's L keeps its first L rows (as for CLIP weights,
  ``model.text_encoder.load_text_weights``); TBPS-CLIP interpolates linearly. A shorter one is an
  error;
- the load is strict for the model: every tower tensor must come from the file with its shape
  (else an error naming the keys and the config keys to check); only the model's new modules
  (``id_head``, ``logit_bias``) may be absent, and are reported as kept at init.

The report (``utils.weights_io.LoadReport``: loaded, remapped, resized, skipped with the reason,
kept at init, missing, unexpected) is logged and written to ``OUTPUT_DIR/init_checkpoint.txt``.

Images: TBPS-CLIP trains and tests with ImageNet's normalisation (``misc/data.py``:
mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)), not CLIP's, so a full-size model built
for INIT_CHECKPOINT maps INPUT.PIXEL_MEAN / STD to ImageNet's (model/dual_encoder.py).
"""
from __future__ import annotations

import collections
import logging
import math
import os
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from configs.validate import MAX_LOGIT_SCALE
from utils.weights_io import (SHAPE_MISMATCH, UNKNOWN_KEY, LoadReport, ResizedKey, read_weights,
                              resize_pos_embed, unwrap)

logger = logging.getLogger("phasereid")

_KEY = "MODEL.TBPS.INIT_CHECKPOINT"
FORMAT = "tbps_clip"
#: the report file in OUTPUT_DIR
REPORT_FILE = "init_checkpoint.txt"
#: TBPS-CLIP's image normalisation (misc/data.py: ImageNet's)
TBPS_CLIP_MEAN, TBPS_CLIP_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: TBPS-CLIP key prefix -> DualEncoder key prefix
TOWER_PREFIXES = {"visual.": "image_tower.visual.", "encode_text.": "text_tower.text."}
#: TBPS-CLIP's training-only heads (top-level prefixes) and what they are
TRAINING_ONLY = {
    "simclr_mlp.": "training-only head: SS-I projection MLP",
    "classifier.": "training-only head: ID classifier (its identities)",
    "cross_attn.": "training-only head: MLM cross-attention",
    "cross_modal_transformer.": "training-only head: MLM cross-modal transformer",
    "ln_pre_t.": "training-only head: MLM",
    "ln_pre_i.": "training-only head: MLM",
    "ln_post.": "training-only head: MLM",
    "mlm_head.": "training-only head: MLM",
}
#: model keys a TBPS-CLIP checkpoint cannot hold: PhaseReID's new modules, kept at init
NEW_IN_MODEL = {"id_head.": "PhaseReID's cross-modal ID classifier (new)",
                "logit_bias": "TBPS-CLIP has no logit bias (new)"}
_PATCH = 16   # TBPS-CLIP's ViT-B/16
# the pickled ``config`` (an easydict.EasyDict, a dict subclass): built as an OrderedDict, whose
# SETITEMS / BUILD the weights-only unpickler allows; nothing else is added to its allow-list
_EASYDICT = (collections.OrderedDict, "easydict.EasyDict")


class TbpsClipCheckpoint:
    """A TBPS-CLIP checkpoint read from disk: ``state`` (unwrapped, 'module.' stripped),
    ``input_resolution`` ((H, W) or None), ``text_length`` (int or None), ``report`` (the
    unwrapping notes), ``path``."""

    def __init__(self, path: str, state: Dict[str, torch.Tensor], report: LoadReport,
                 input_resolution: Optional[Tuple[int, int]], text_length: Optional[int]):
        self.path, self.state, self.report = path, state, report
        self.input_resolution, self.text_length = input_resolution, text_length


def _stored_experiment(raw: object) -> dict:
    """The ``config['experiment']`` mapping of a TBPS-CLIP checkpoint, or {}."""
    config = raw.get("config") if isinstance(raw, Mapping) else None
    experiment = config.get("experiment") if isinstance(config, Mapping) else None
    return dict(experiment) if isinstance(experiment, Mapping) else {}


def read_tbps_clip_checkpoint(path: str, key: str = _KEY) -> TbpsClipCheckpoint:
    """Read a TBPS-CLIP checkpoint (module docstring) and check its layout.

    Raises:
        FileNotFoundError: no such file.
        utils.weights_io.WeightFileError: the file cannot be read as weights.
        ValueError: it is not a TBPS-CLIP layout (the message says what it looks like instead).
    """
    path = os.path.expanduser(path)
    with torch.serialization.safe_globals([_EASYDICT]):
        raw, description = read_weights(path, key=key)
    report = LoadReport(source=description, source_format="TBPS-CLIP checkpoint")
    state = unwrap(raw, report, key=key)
    report.skipped = [s for s in report.skipped if s[1] != "not a tensor"]   # the wrapper's
    _check_layout(state, path, key)
    experiment = _stored_experiment(raw)
    size = experiment.get("input_resolution")
    resolution = None
    if isinstance(size, (list, tuple)) and len(size) == 2:
        resolution = (int(size[0]), int(size[1]))
    elif isinstance(size, int):
        resolution = (size, size)
    length = experiment.get("text_length")
    if resolution or length:
        report.notes.append(f"stored config: input_resolution {list(resolution or [])}, "
                            f"text_length {length}")
    return TbpsClipCheckpoint(path, state, report, resolution,
                              int(length) if isinstance(length, int) else None)


def _check_layout(state: Mapping[str, torch.Tensor], path: str, key: str) -> None:
    """A TBPS-CLIP state dict has the image tower under 'visual.' and the text tower under
    'encode_text.'; anything else is an error saying what the file looks like."""
    has = lambda prefix: any(k.startswith(prefix) for k in state)   # noqa: E731
    if has("visual.conv1.") and has("encode_text.token_embedding."):
        return
    if has("image_tower.") or has("text_tower."):
        what = ("a PhaseReID dual-encoder checkpoint: evaluate it with TEST.WEIGHT, or start "
                "from it with MODEL.PRETRAIN_CHOICE 'self' / MODEL.PRETRAIN_PATH")
    elif has("visual.") and has("token_embedding."):
        what = ("an OpenAI / open_clip CLIP state dict (text tower at the top level): give it "
                "as MODEL.TBPS.PRETRAINED")
    else:
        sample = ", ".join(sorted(state)[:6]) or "no tensors"
        what = f"not a TBPS-CLIP model (keys: {sample}, ...)"
    raise ValueError(f"{key} {path} is not a TBPS-CLIP checkpoint (INIT_CHECKPOINT_FORMAT "
                     f"'{FORMAT}': 'visual.*' and 'encode_text.*' keys, possibly under 'model' / "
                     f"'module.'): it is {what}")


def _target_key(key: str) -> Optional[str]:
    if key == "logit_scale":
        return key
    for prefix, target in TOWER_PREFIXES.items():
        if key.startswith(prefix):
            return target + key[len(prefix):]
    return None


def _source_grid(rows: int, resolution: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """The patch grid of a TBPS-CLIP image position table of ``rows`` rows (CLS + grid)."""
    if resolution is not None:
        grid = (resolution[0] // _PATCH, resolution[1] // _PATCH)
        if 1 + grid[0] * grid[1] == rows:
            return grid
    side = math.isqrt(rows - 1)
    if side * side != rows - 1:
        raise ValueError(f"{_KEY}: the image position embedding has {rows} rows, neither CLS + "
                         f"the grid of the stored input_resolution {resolution} nor CLS + a "
                         "square grid; cannot resize it")
    return side, side


def load_tbps_clip_state(model: nn.Module, ckpt: TbpsClipCheckpoint,
                         reset_logit_scale: bool = False) -> LoadReport:
    """Load a TBPS-CLIP checkpoint into a ``DualEncoder`` with open_clip towers, in place.

    Every TBPS-CLIP tensor is renamed (module docstring), position embeddings are fitted to the
    towers (image: resized to ``model.image_grid``; text: first L rows), the logit scale is
    clamped to [0, ln 100] (or skipped with ``reset_logit_scale``: the model keeps its
    1 / INIT_TEMPERATURE start), training-only heads are skipped. Nothing is loaded unless every
    tower tensor fits.

    Returns:
        the report (``ckpt.report`` filled in).

    Raises:
        ValueError: the checkpoint does not fit the model (unexpected keys, shape mismatches,
            tower tensors missing from the file), naming the keys and the config keys to check.
    """
    report = ckpt.report
    own = model.state_dict()
    out: Dict[str, torch.Tensor] = {}
    renamed = 0
    for key, value in ckpt.state.items():
        target = _target_key(key)
        if target is None:
            reason = next((why for p, why in TRAINING_ONLY.items() if key.startswith(p)), None)
            if reason:
                report.skipped.append((key, reason))
            else:
                report.unexpected.append((key, UNKNOWN_KEY))
            continue
        if key == "logit_scale" and reset_logit_scale:
            report.skipped.append((key, "MODEL.TBPS.RESET_LOGIT_PARAMS True: the scale starts "
                                        "at 1 / INIT_TEMPERATURE"))
            continue
        if target not in own:
            report.unexpected.append((key, UNKNOWN_KEY))
            continue
        if target != key:
            report.remapped.append((key, target, "TBPS-CLIP name -> DualEncoder name"))
            renamed += 1
        value = _fit(key, value, own[target], tuple(model.image_grid), ckpt, report)
        if value is None:
            report.skipped.append((key, SHAPE_MISMATCH))
            continue
        if key == "logit_scale":
            value = value.reshape(own[target].shape).clamp(0.0, math.log(MAX_LOGIT_SCALE))
        out[target] = value
    report.loaded = [k for k in own if k in out]
    for key in own:
        if key in out:
            continue
        why = next((w for p, w in NEW_IN_MODEL.items() if key.startswith(p)), None)
        if key == "logit_scale" and reset_logit_scale:
            why = "MODEL.TBPS.RESET_LOGIT_PARAMS True"
        if why:
            report.initialised.append((key, why))
        else:
            report.missing.append(key)
    problems = ([f"unexpected {k}" for k in report.unexpected_keys()]
                + [f"shape mismatch {k}: file {tuple(ckpt.state[k].shape)} vs model "
                   f"{tuple(own[_target_key(k)].shape)}" for k in report.mismatched]
                + [f"missing {k}" for k in report.missing])
    if problems:
        raise ValueError(
            f"{_KEY} {ckpt.path} does not fit the dual encoder built from the config (check "
            "MODEL.TBPS.OPEN_CLIP_MODEL: the released checkpoints are ViT-B-16; MODEL.TBPS.TINY; "
            f"MODEL.TBPS.EMBED_DIM):\n{report}\n  " + "\n  ".join(problems[:20]))
    model.load_state_dict(out, strict=False)
    return report


def _fit(key: str, value: torch.Tensor, own: torch.Tensor, grid: Tuple[int, int],
         ckpt: TbpsClipCheckpoint, report: LoadReport) -> Optional[torch.Tensor]:
    """``value`` fitted to the model's tensor ``own`` (position embeddings; ``grid`` = the image
    tower's), or None when it cannot be."""
    if value.shape == own.shape or key == "logit_scale":
        return value if value.numel() == own.numel() else None
    if key == "visual.positional_embedding" and value.ndim == 2 and \
            value.shape[1] == own.shape[1] and own.shape[0] == 1 + grid[0] * grid[1]:
        src = _source_grid(value.shape[0], ckpt.input_resolution)
        fitted = resize_pos_embed(value, src, grid, mode="bicubic")
        report.resized.append(ResizedKey(key, tuple(value.shape), tuple(fitted.shape),
                                         f"grid {src} -> {grid}, CLS kept, bicubic"))
        return fitted
    if key == "encode_text.positional_embedding" and value.ndim == 2 and \
            value.shape[1] == own.shape[1] and value.shape[0] > own.shape[0]:
        report.resized.append(ResizedKey(key, tuple(value.shape), tuple(own.shape),
                                         f"first {own.shape[0]} token positions kept "
                                         "(MODEL.TBPS.CONTEXT_LENGTH)"))
        return value[:own.shape[0]]
    return None


def load_init_checkpoint(model: nn.Module, cfg) -> LoadReport:
    """MODEL.TBPS.INIT_CHECKPOINT into ``model`` (a ``DualEncoder`` built from ``cfg``): read,
    load, log the report and write it to ``OUTPUT_DIR/init_checkpoint.txt`` (rank 0)."""
    t = cfg.MODEL.TBPS
    if t.INIT_CHECKPOINT_FORMAT != FORMAT:
        raise ValueError(f"MODEL.TBPS.INIT_CHECKPOINT_FORMAT {t.INIT_CHECKPOINT_FORMAT!r} is not "
                         f"'{FORMAT}'")
    ckpt = read_tbps_clip_checkpoint(t.INIT_CHECKPOINT)
    report = load_tbps_clip_state(model, ckpt, reset_logit_scale=bool(t.RESET_LOGIT_PARAMS))
    text = str(report)
    logger.info("Started from %s %s (TBPS-CLIP):\n%s", _KEY, t.INIT_CHECKPOINT, text)
    from utils.dist import world_info
    if world_info()[1] == 0 and cfg.OUTPUT_DIR:
        from utils.atomic import atomic_write_text
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        atomic_write_text(os.path.join(cfg.OUTPUT_DIR, REPORT_FILE), text + "\n")
    return report
