"""Loading weights into PhaseReID models: checkpoints for test.py, MODEL.PRETRAIN_CHOICE 'self',
plain TransReID / timm files, and the training-only modules that checkpoints leave out.

Reading a weight source (torch files with ``weights_only=True``, safetensors, TorchScript
archives, 'timm:' and open_clip tags), unwrapping it, the ``LoadReport`` and the
position-embedding resize are ``utils/weights_io.py`` (it imports only torch, so
``utils/checkpoint.py`` and the launcher read files without importing the model). This module
holds what needs the model. The key mapping of each architecture stays with it
(``model/backbones/vit_weights.py``, ``ResNet50Backbone.load_pretrained``,
``model/text_encoder.py``, ``model/clip_fusion.py``).
"""
from __future__ import annotations

import logging
import re
from typing import Optional

import torch.nn as nn

from utils.checkpoint import load_checkpoint
from utils.weights_io import (SHAPE_MISMATCH, UNKNOWN_KEY, LoadReport, Source, read_weights,
                              unwrap)

from .backbones.vit_weights import load_vit_pretrained
from .dual_encoder import DualEncoder

#: Parameter-name prefixes of the training-only modules: the SupCon projection, the TG-MIM head
#: and the text encoder (image re-ID), the identity classifier, the IRR / MLM head and SS-I's
#: projection head of the dual encoder (MODEL.TASK 'tbps'), LGUR's identity classifiers and its
#: text-guided block (model/lgur.py). They do not contribute to the test feature, so
#: ``transformer_<epoch>.pth`` leaves them out (``resume.pth`` keeps them) and
#: :func:`load_for_test` accepts a checkpoint with or without them.
TRAINING_ONLY_PREFIXES = ("projection.", "tgmim.", "text_encoder.", "id_head.", "mlm_head.",
                          "ss_head.", "text_guided.")
#: CLIP fusion (MODEL.USE_CLIP): a checkpoint trained with it may be tested without it ("train
#: with fusion, test without", MODEL.USE_CLIP False); its keys are then dropped, reported.
CLIP_FUSION_PREFIX = "clip_fusion."

_TRANSREID_HEAD = re.compile(r"^(bottleneck|classifier)(?:_(\d+))?\.(.+)$")


def load_model_weights(model: nn.Module, path: str) -> LoadReport:
    """Load a PhaseReID checkpoint's weights into ``model``: matching keys and shapes only.

    Used for MODEL.PRETRAIN_CHOICE 'self' (finetune from our own checkpoint; a classifier of a
    different size is skipped and reported as a shape mismatch). test.py loads strictly instead
    (:func:`load_for_test`).

    Returns:
        LoadReport: ``loaded``, ``mismatched`` (skipped for their shape), ``missing`` (model keys
        not in the file, kept at init), ``unexpected`` (file keys the model has no place for).
    """
    report = LoadReport(source=path, source_format="PhaseReID checkpoint")
    state = unwrap(load_checkpoint(path), report)
    own = model.state_dict()
    usable = {}
    for key in sorted(state):
        if key not in own:
            report.unexpected.append((key, UNKNOWN_KEY))
        elif own[key].shape != state[key].shape:
            report.skipped.append((key, SHAPE_MISMATCH))
        else:
            usable[key] = state[key]
    model.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    report.missing = sorted(k for k in own if k not in state)
    return report


def load_transreid_model(model: nn.Module, source: Source) -> str:
    """Load a plain TransReID full-model checkpoint (or a timm ViT file) for evaluation.

    The backbone goes through ``load_vit_pretrained`` (base / b1 / b2 remapped and reported);
    TransReID's heads map as bottleneck -> head.bn, classifier -> head.classifier,
    bottleneck_k / classifier_k -> local_heads[k-1]. A classifier of another size is skipped
    (it is not used at test time).

    Args:
        model: a ``ReIDModel`` with a TransReID ViT backbone.
        source: a file path or an already loaded state dict.

    Returns:
        The report text.
    """
    raw, description = read_weights(source)
    state = unwrap(raw, LoadReport(source=description))
    report = load_vit_pretrained(model.backbone, state)
    own = model.state_dict()
    heads, skipped = {}, []
    for key in report.left_for_caller:
        match = _TRANSREID_HEAD.match(key)
        if not match:
            skipped.append(key)
            continue
        kind, part, rest = match.groups()
        prefix = "head" if part is None else f"local_heads.{int(part) - 1}"
        target = f"{prefix}.{'bn' if kind == 'bottleneck' else 'classifier'}.{rest}"
        if target in own and own[target].shape == state[key].shape:
            heads[target] = state[key]
        else:
            skipped.append(key)
    model.load_state_dict(heads, strict=False)
    return (f"{report}\n  heads loaded: {len(heads)} tensors"
            + (f"; head keys skipped: {', '.join(skipped)}" if skipped else ""))


def load_for_test(model: nn.Module, ckpt: object, meta: Optional[dict], path: str,
                  logger: logging.Logger) -> str:
    """Load the weights test.py evaluates.

    A PhaseReID checkpoint (``meta`` given) loads strictly, except the training-only modules
    (``TRAINING_ONLY_PREFIXES``; present or absent, reported) and the CLIP fusion of a checkpoint
    tested with MODEL.USE_CLIP False (dropped, reported as a warning). This holds for the dual
    encoder of MODEL.TASK 'tbps' too (it has no CLIP fusion: 'off'). A plain TransReID / timm
    file (``meta`` None) goes through :func:`load_transreid_model`, with a load report; a dual
    encoder takes only PhaseReID checkpoints (its towers' own weights come from MODEL.TBPS).

    Args:
        model: the model built from the test config.
        ckpt: the loaded file (``utils.checkpoint.load_checkpoint``).
        meta: the checkpoint's metadata, or None for a plain weight file.
        path: the file, for messages.
        logger: where the reports go.

    Returns:
        The CLIP fusion state for summary.json: 'on' (the model fuses, with the checkpoint's
        fusion weights), 'off' (neither has fusion) or 'disabled at test' (trained with fusion,
        evaluated without it).

    Raises:
        RuntimeError: the checkpoint does not match the model (other missing / unexpected keys,
            shapes), a plain file is tested with CLIP fusion on, or a plain file is given for a
            dual encoder.
    """
    fused = getattr(model, "clip_fusion", None) is not None
    if meta is not None:
        try:
            result = model.load_state_dict(ckpt["model"], strict=False)
        except RuntimeError as exc:
            raise RuntimeError(f"{path} does not match the model built from the config: {exc}\n"
                               "Test with the checkpoint's own config (omit --config_file).") from None
        missing = [k for k in result.missing_keys if not k.startswith(TRAINING_ONLY_PREFIXES)]
        unexpected = [k for k in result.unexpected_keys
                      if not k.startswith(TRAINING_ONLY_PREFIXES)]
        dropped = [] if fused else [k for k in unexpected if k.startswith(CLIP_FUSION_PREFIX)]
        unexpected = [k for k in unexpected if k not in set(dropped)]
        if missing or unexpected:
            raise RuntimeError(f"{path} does not match the model built from the config: missing "
                               f"keys {missing}, unexpected keys {unexpected}\n"
                               "Test with the checkpoint's own config (omit --config_file).")
        skipped = [k for k in result.missing_keys + result.unexpected_keys
                   if k.startswith(TRAINING_ONLY_PREFIXES)]
        if skipped:
            logger.info("Training-only keys not loaded (not used for test features): %s",
                        ", ".join(skipped))
        if dropped:
            logger.warning("CLIP fusion trained but disabled for this test (MODEL.USE_CLIP "
                           "False): %d tensors not loaded; expect lower accuracy than with "
                           "fusion", len(dropped))
            return "disabled at test"
        return "on" if fused else "off"
    if isinstance(model, DualEncoder):
        raise RuntimeError(f"{path} is a plain (non-PhaseReID) weight file, not a PhaseReID "
                           "checkpoint (transformer_<epoch>.pth); a dual encoder (MODEL.TASK "
                           "'tbps') takes its towers' weights from MODEL.TBPS.PRETRAINED / "
                           "HF_MODEL: give them there and omit TEST.WEIGHT to evaluate it "
                           "zero-shot")
    if fused:
        raise RuntimeError(f"{path} is a plain (non-PhaseReID) weight file without CLIP fusion "
                           "weights; test it with MODEL.USE_CLIP False")
    report = load_transreid_model(model, ckpt)
    logger.info("Loaded plain (non-PhaseReID) weights from %s\n%s", path, report)
    return "off"
