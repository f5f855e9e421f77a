"""Load timm ViT/DeiT and TransReID weights into ``TransReIDBackbone``, reporting every change.

Reference: TransReID ``TransReID.load_param`` (damo-cv/TransReID,
``model/backbones/vit_pytorch.py``):
unwrap 'model' / 'state_dict'; skip classifier and distillation keys; reshape linear patch weights
to conv; on a pos_embed mismatch keep the CLS position, drop the distillation token's position and
resize the patch grid bilinearly (``F.interpolate(..., mode='bilinear')``, align_corners False) from
the square source grid (14x14 at 224) to the model's grid; JPM b1/b2 are copies of the loaded last
block + final norm (``build_transformer_local``).

Deliberate differences (what each one changes for a user: docs/reference_differences.md,
"Weight loading"):

- A distillation token is detected from the state dict (a ``dist_token`` key, or a pos_embed whose
  length is 2 + a square), never from the file name.
- Nothing is dropped silently: a ``LoadReport`` lists remapped, resized, copied, skipped, missing
  and unexpected keys and the keys left for the caller; ``strict`` loads (the default) raise on
  missing parameters, unknown keys and shape mismatches.
- Sources are read by ``utils.weights_io.read_weights`` (``torch.load(..., weights_only=True)``,
  safetensors, 'timm:<name>'): loading never runs code.

Supported sources (after unwrapping 'model' / 'state_dict' and a 'module.' prefix):

- timm ViT / DeiT / DeiT-distilled state dicts (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
  ``blocks.{i}``, ``norm``, ``head``...). Blocks beyond the model's depth are unexpected (reported).
- TransReID checkpoints (``base.*``, optional ``b1.*`` / ``b2.*``, heads ``bottleneck*`` /
  ``classifier*``): ``base.X -> X``; with JPM keys ``b1.0 -> blocks.{L-1}``, ``b1.1 -> norm``
  (TransReID's ``base.blocks.{L-1}`` / ``base.norm`` are unused by its JPM forward: skipped),
  ``b2 -> b2``; ``base.fc`` is a classifier (skipped); heads are left for the caller.
- PhaseReID model state dicts (``backbone.*`` + heads): ``backbone.X -> X``, heads left for the
  caller.
- ``'timm:<model_name>'``: ``timm.create_model(name, pretrained=True)`` (needs internet).

With JPM on and no ``b2`` keys in the source, ``b2`` is filled with copies of the loaded last block
and final norm (the global branch b1 *is* the last block + norm in ``TransReIDBackbone``).
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from utils.weights_io import (UNKNOWN_KEY, SHAPE_MISMATCH, LoadReport, ResizedKey, Source,
                              StateDict, read_weights, resize_pos_embed, unwrap)

_CLASSIFIER_PREFIXES = ("head.", "head_dist.", "fc_norm.", "pre_logits.", "fc.", "head_drop.")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.*)$")


# ---------------------------------------------------------------------------- format mapping
def _map_prefixed_model(state: StateDict, prefix: str, report: LoadReport,
                        origin: Dict[str, str]) -> StateDict:
    """Keep ``prefix``-ed keys (prefix stripped, ``origin`` records the source name); everything
    else is left for the caller."""
    out: StateDict = {}
    for key, value in state.items():
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
            origin[key[len(prefix):]] = key
        else:
            report.left_for_caller.append(key)
    report.notes.append(f"stripped the '{prefix}' prefix from {len(out)} keys")
    return out


def _map_transreid(state: StateDict, report: LoadReport, origin: Dict[str, str]) -> StateDict:
    """TransReID checkpoint -> timm-style names (see module docstring)."""
    base = _map_prefixed_model({k: v for k, v in state.items() if not k.startswith(("b1.", "b2."))},
                               "base.", report, origin)
    src_blocks = {int(m.group(1)) for m in map(_BLOCK_RE.match, base) if m}
    b1 = {k[len("b1."):]: v for k, v in state.items() if k.startswith("b1.")}
    if b1:
        if not src_blocks:
            raise ValueError("TransReID checkpoint has b1.* keys but no base.blocks.*")
        last = max(src_blocks)
        for key in [k for k in base if k.startswith((f"blocks.{last}.", "norm."))]:
            base.pop(key)
            report.skipped.append(("base." + key, "unused by TransReID's JPM forward "
                                                  "(b1 holds the trained last block + norm)"))
        why = "TransReID JPM global branch b1 = last block + final norm"
        for key, value in b1.items():
            if key.startswith("0."):
                dst = f"blocks.{last}.{key[2:]}"
            elif key.startswith("1."):
                dst = f"norm.{key[2:]}"
            else:
                report.unexpected.append(("b1." + key, UNKNOWN_KEY))
                continue
            report.remapped.append(("b1." + key, dst, why))
            base[dst] = value
            origin[dst] = "b1." + key
    for key, value in state.items():
        if key.startswith("b2."):
            base[key] = value
    return base


def _pos_embed_layout(pos_embed: torch.Tensor, has_dist_key: bool, num_patches: int,
                      source_grid_size: Optional[Tuple[int, int]]
                      ) -> Tuple[int, Tuple[int, int], str]:
    """(number of prefix tokens, source grid, how the prefix count was decided)."""
    tokens = pos_embed.shape[1]
    if has_dist_key:
        prefix, how = 2, "distillation token detected from the 'dist_token' key"
    elif tokens - 1 == num_patches or _is_square(tokens - 1) or source_grid_size is not None:
        prefix, how = 1, ""
    elif _is_square(tokens - 2):
        prefix, how = 2, (f"distillation token detected from the pos_embed shape "
                          f"({tokens} = 2 + {math.isqrt(tokens - 2)}^2)")
    else:
        raise ValueError(f"cannot infer the patch grid of pos_embed {tuple(pos_embed.shape)}; "
                         f"pass source_grid_size=(rows, cols)")
    grid_tokens = tokens - prefix
    if source_grid_size is not None:
        grid = tuple(source_grid_size)
        if grid[0] * grid[1] != grid_tokens:
            raise ValueError(f"source_grid_size {grid} does not match pos_embed with "
                             f"{grid_tokens} patch positions")
    elif _is_square(grid_tokens):
        side = math.isqrt(grid_tokens)
        grid = (side, side)
    else:
        grid = (-1, grid_tokens)  # non-square: only usable when it already matches the model
    return prefix, grid, how


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


# ---------------------------------------------------------------------------- filter
def checkpoint_filter_fn(state_dict: Mapping[str, object], backbone, strict: bool = True,
                         source_grid_size: Optional[Tuple[int, int]] = None,
                         report: Optional[LoadReport] = None) -> Tuple[StateDict, LoadReport]:
    """Convert a timm ViT/DeiT, TransReID or PhaseReID state dict to ``backbone``'s keys.

    Args:
        state_dict: the (possibly wrapped) source mapping.
        backbone: a ``TransReIDBackbone`` (its state dict gives the target keys and shapes).
        strict: shape mismatches raise (True) or are skipped and reported (False).
        source_grid_size: the source's patch grid when it is not square (e.g. a TransReID
            checkpoint trained at another stride); inferred as sqrt otherwise.
        report: an existing report to fill (its ``source`` is kept).

    Returns:
        (filtered state dict ready for ``backbone.load_state_dict``, report). The report's
        ``missing`` / ``initialised`` lists are computed against the backbone.

    Raises:
        ValueError: shape mismatch (strict) or an un-inferable source grid.
    """
    report = report if report is not None else LoadReport()
    state = unwrap(state_dict, report)
    origin: Dict[str, str] = {}  # mapped key -> source key, for reporting in source names
    if any(k.startswith("base.") for k in state):
        report.source_format = "TransReID"
        state = _map_transreid(state, report, origin)
    elif any(k.startswith("backbone.") for k in state):
        report.source_format = "PhaseReID"
        state = _map_prefixed_model(state, "backbone.", report, origin)
    else:
        report.source_format = "timm ViT/DeiT"

    target = backbone.state_dict()
    num_blocks = len(backbone.blocks)
    has_dist_key = "dist_token" in state
    out: StateDict = {}
    mismatched: List[str] = []
    for key, value in state.items():
        src = origin.get(key, key)
        if key.startswith(_CLASSIFIER_PREFIXES):
            report.skipped.append((src, "classifier / pre-logits head"))
            continue
        if key == "dist_token":
            report.skipped.append((src, "DeiT distillation token"))
            continue
        block = _BLOCK_RE.match(key)
        if block and int(block.group(1)) >= num_blocks:
            report.unexpected.append(
                (src, f"blocks beyond the model's depth ({num_blocks} blocks built)"))
            continue
        if key.startswith("b2.") and key not in target:
            report.unexpected.append((src, "JPM local branch (model built without JPM)"))
            continue
        if key not in target:
            report.unexpected.append((src, UNKNOWN_KEY))
            continue
        if (key == "patch_embed.proj.weight" and value.ndim == 2
                and value.numel() == target[key].numel()):
            value = value.reshape(target[key].shape)
            report.remapped.append((key, key, "linear patch weight reshaped to conv"))
        if key == "pos_embed" and (value.shape != target[key].shape or has_dist_key):
            value = _fit_pos_embed(value, has_dist_key, backbone, source_grid_size, report)
        if value.shape != target[key].shape:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model "
                              f"{tuple(target[key].shape)}")
            report.skipped.append((src, SHAPE_MISMATCH))
            continue
        out[key] = value

    if mismatched and strict:
        raise ValueError("shape mismatch between the checkpoint and the model (wrong preset "
                         "or patch size?):\n  " + "\n  ".join(mismatched))
    if getattr(backbone, "jpm", False) and not any(k.startswith("b2.") for k in out):
        _copy_last_block_to_b2(out, target, num_blocks, report)

    report.loaded = [k for k in target if k in out]
    for key in target:
        if key not in out:
            if key == "sie_embed":
                report.initialised.append((key, "SIE table: new in TransReID, kept at init"))
            else:
                report.missing.append(key)
    return out, report


def _fit_pos_embed(value: torch.Tensor, has_dist_key: bool, backbone,
                   source_grid_size: Optional[Tuple[int, int]], report: LoadReport) -> torch.Tensor:
    prefix, src_grid, how = _pos_embed_layout(value, has_dist_key, backbone.num_patches,
                                              source_grid_size)
    dst_grid = tuple(backbone.grid_size)
    if src_grid[0] < 0:
        if src_grid[1] != backbone.num_patches:
            raise ValueError(f"pos_embed has a non-square grid of {src_grid[1]} positions; pass "
                             f"source_grid_size=(rows, cols) to resize it to {dst_grid}")
        src_grid = dst_grid
    if how:
        report.notes.append(how)
    notes = []
    if prefix == 2:
        notes.append("distillation-token position dropped")
    if src_grid != dst_grid:
        notes.append(f"grid {src_grid[0]}x{src_grid[1]} -> {dst_grid[0]}x{dst_grid[1]} bilinear")
    resized = resize_pos_embed(value, src_grid, dst_grid, num_prefix=prefix, keep_prefix=1,
                               mode="bilinear")
    report.resized.append(ResizedKey("pos_embed", tuple(value.shape), tuple(resized.shape),
                                     "; ".join(notes)))
    return resized


def _copy_last_block_to_b2(out: StateDict, target: Mapping[str, torch.Tensor], num_blocks: int,
                           report: LoadReport) -> None:
    """JPM: b2 = copy of the loaded last block (b2.0) and final norm (b2.1), as TransReID."""
    last = num_blocks - 1
    why = "JPM local branch b2 = copy of the loaded last block + final norm"
    for key in target:
        if not key.startswith("b2."):
            continue
        src = (f"blocks.{last}.{key[len('b2.0.'):]}" if key.startswith("b2.0.")
               else f"norm.{key[len('b2.1.'):]}")
        if src in out:
            out[key] = out[src].clone()
            report.copied.append((key, src, why))


def load_vit_pretrained(backbone, source: Source, strict: bool = True,
                        source_grid_size: Optional[Tuple[int, int]] = None) -> LoadReport:
    """Load ViT/DeiT/TransReID weights into a ``TransReIDBackbone`` and return the report.

    Args:
        backbone: the ``TransReIDBackbone``.
        source: weight file path, 'timm:<model_name>' or a state dict (see module docstring).
        strict: raise on shape mismatches, on model parameters the source does not provide
            (other than the SIE table) and on source keys unknown to the architecture (e.g.
            layer-scale gammas, register tokens). Blocks beyond the model's depth and JPM keys
            for a model without JPM are only reported.
        source_grid_size: patch grid of a non-square source pos_embed.

    Returns:
        LoadReport (log ``str(report)``).

    Raises:
        FileNotFoundError: missing file (names MODEL.PRETRAIN_PATH).
        ValueError: strict violations, listed with the report.

    Example:
        >>> report = load_vit_pretrained(backbone, "pretrained/vit_base.pth")
        >>> logger.info("%s", report)
    """
    raw, description = read_weights(source, key="MODEL.PRETRAIN_PATH")
    report = LoadReport(source=description)
    filtered, report = checkpoint_filter_fn(raw, backbone, strict, source_grid_size, report)
    unknown = [k for k, why in report.unexpected if why == UNKNOWN_KEY]
    if strict and (report.missing or unknown):
        raise ValueError(f"weights do not fit the model (strict load):\n{report}\n"
                         f"missing: {report.missing}\nunknown keys: {unknown}\n"
                         f"Check the preset (MODEL.TRANSFORMER_TYPE) against the weight file, or "
                         f"load with strict=False to keep the init for missing parameters.")
    result = backbone.load_state_dict(filtered, strict=False)
    if result.unexpected_keys:  # the filter only emits model keys; this guards that invariant
        raise RuntimeError(f"internal error: filtered keys not in the model: "
                           f"{result.unexpected_keys}")
    return report
