"""The text encoder of text-guided losses (TG-MIM): an open_clip text tower returning per-token
features.

Which tower (MODEL.TEXT.*):
- ``OPEN_CLIP_MODEL`` names an open_clip architecture (e.g. 'ViT-B-16'); its ``text_cfg`` builds
  an open_clip ``TextTransformer`` (causal CLIP text transformer, final LayerNorm) with
  ``output_tokens`` on, so the forward returns every token's feature (width of the tower, no
  projection), the keys/values of TG-MIM's cross-attention.
- ``PRETRAINED``: an open_clip pretrained tag (e.g. 'openai', 'laion2b_s34b_b88k'; the full CLIP
  model is created through ``open_clip.create_model`` -- a download the first time -- and its text
  weights are copied), a local weight file (a full CLIP state dict as open_clip saves it, a
  ``{'state_dict': ...}`` wrapper, an OpenAI TorchScript archive, or a text-tower-only state
  dict), or '' for random init. 'openai' weights use QuickGELU, as open_clip does for them.
- ``TINY``: a random-init tower of width 64, 2 layers, 2 heads (CLIP BPE vocabulary), for tests
  and SynthPedes; a local PRETRAINED file of the same shape may be loaded into it.
- ``CONTEXT_LENGTH`` L <= the architecture's (77): the tower is built for L tokens and a loaded
  position embedding keeps its first L rows (reported).
- ``FREEZE`` True: no gradients, always in eval mode (dropout off), forward under no_grad;
  False: trained at BASE_LR * LR_SCALE (``ReIDModel.lr_scales``).

Every load returns a report saying where the weights came from, how many tensors were loaded and
what was remapped (a 'text.' prefix, a truncated position embedding).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from utils.packages import import_open_clip
from utils.weights_io import LoadReport, OpenClipPretrained, read_weights, unwrap

logger = logging.getLogger("phasereid")

CLIP_VOCAB_SIZE = 49408
TINY_TEXT_CFG = {"vocab_size": CLIP_VOCAB_SIZE, "width": 64, "heads": 2, "layers": 2}
_KEY = "MODEL.TEXT.PRETRAINED"
_TEXT_KEYS = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.",
              "text_projection", "cls_emb")


class TextEncoder(nn.Module):
    """Per-token text features from an open_clip ``TextTransformer``.

    Args:
        tower: an open_clip TextTransformer built with ``output_tokens=True``.
        frozen: no gradients and always eval mode.
        lr_scale: LR factor of a trainable tower (MODEL.TEXT.LR_SCALE; ``ReIDModel.lr_scales``).

    Call: ``tokens = encoder(text_ids, text_mask)`` -> (B, L, width) after the final LayerNorm.
    ``text_mask`` is not used by the causal tower itself (CLIP's causal attention already keeps
    real tokens from seeing the padding after the end-of-text token); consumers use it to ignore
    padding as keys.
    """

    def __init__(self, tower: nn.Module, frozen: bool, lr_scale: float = 1.0):
        super().__init__()
        self.tower = tower
        self.frozen = frozen
        self.lr_scale = float(lr_scale)
        self.width = int(tower.width)
        self.context_length = int(tower.context_length)
        if frozen:
            for p in self.tower.parameters():
                p.requires_grad_(False)
            self.tower.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.tower.eval()
        return self

    def forward(self, text_ids: torch.Tensor, text_mask: torch.Tensor = None) -> torch.Tensor:
        if text_ids.shape[1] != self.context_length:
            raise ValueError(f"text_ids have {text_ids.shape[1]} tokens but the text encoder is "
                             f"built for {self.context_length} (MODEL.TEXT.CONTEXT_LENGTH)")
        if self.frozen:
            with torch.no_grad():
                _, tokens = self.tower(text_ids)
            return tokens.detach()
        _, tokens = self.tower(text_ids)
        return tokens


def build_text_tower(model_name: str, tiny: bool, context_length: int,
                     quick_gelu: bool = False, embed_dim: Optional[int] = None,
                     section: str = "MODEL.TEXT", purpose: str = "TG-MIM") -> nn.Module:
    """A random-init open_clip TextTransformer (tokens output) for ``model_name`` or TINY.

    ``embed_dim``: the width of its projection (default: the architecture's ``embed_dim``; TINY:
    its width, 64). ``section`` / ``purpose``: the config section whose OPEN_CLIP_MODEL /
    CONTEXT_LENGTH keys the messages name, and who uses the tower (the dual encoder of
    model/dual_encoder.py builds its text tower here too).
    """
    open_clip = import_open_clip(f"the {purpose} text encoder")
    from open_clip.model import _build_text_tower

    if tiny:   # random init: its position embedding is built for any length
        text_cfg, native_dim = dict(TINY_TEXT_CFG), TINY_TEXT_CFG["width"]
        native = None
    else:
        model_cfg = open_clip.get_model_config(model_name)
        if model_cfg is None:
            raise ValueError(f"{section}.OPEN_CLIP_MODEL '{model_name}' is not an open_clip "
                             "architecture; see open_clip.list_models() (e.g. 'ViT-B-16')")
        text_cfg, native_dim = dict(model_cfg["text_cfg"]), model_cfg["embed_dim"]
        if text_cfg.get("hf_model_name"):
            raise ValueError(f"{section}.OPEN_CLIP_MODEL '{model_name}' has a Hugging Face text "
                             f"tower ({text_cfg['hf_model_name']}); {purpose} supports open_clip's "
                             "own text transformers (CLIP and SigLIP architectures)")
        quick_gelu = quick_gelu or bool(model_cfg.get("quick_gelu", False))
        native = int(text_cfg.get("context_length", 77))
    if context_length < 2 or (native is not None and context_length > native):
        limit = f"in 2..{native} (the position embedding of '{model_name}')" if native else ">= 2"
        raise ValueError(f"{section}.CONTEXT_LENGTH {context_length} must be {limit}")
    text_cfg.update(context_length=context_length, output_tokens=True)
    return _build_text_tower(native_dim if embed_dim is None else int(embed_dim), text_cfg,
                             quick_gelu=quick_gelu)


def read_text_weights(source, allow_torchscript: bool = False) -> Dict[str, torch.Tensor]:
    """The state dict of MODEL.TEXT.PRETRAINED: a local file (a plain or wrapped state dict, or,
    with ``allow_torchscript`` (MODEL.TEXT.ALLOW_TORCHSCRIPT), an OpenAI TorchScript archive) or
    an ``OpenClipPretrained`` tag, read by ``utils.weights_io.read_weights``."""
    raw, description = read_weights(source, key=_KEY, allow_torchscript=allow_torchscript,
                                    torchscript_key="MODEL.TEXT.ALLOW_TORCHSCRIPT")
    return unwrap(raw, LoadReport(source=description), key=_KEY)


def text_state_from_clip(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], str]:
    """The text-tower part of a CLIP state dict, keyed as an open_clip TextTransformer.

    open_clip's ``CLIP`` keeps the text tower at the top level (``transformer.*``,
    ``token_embedding.weight``, ``positional_embedding``, ``ln_final.*``, ``text_projection``);
    ``CustomTextCLIP`` nests it under ``text.``. Returns (state, what was remapped).
    """
    nested = {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
    if nested:
        return nested, "keys under 'text.' (CustomTextCLIP layout)"
    flat = {k: v for k, v in state.items() if k.startswith(_TEXT_KEYS)}
    return flat, "top-level text keys (CLIP layout)"


def load_text_weights(tower: nn.Module, state: Dict[str, torch.Tensor], source: str,
                      section: str = "MODEL.TEXT") -> str:
    """Strictly load text weights into ``tower``; returns the report. ``section``: the config
    section named in the error (its OPEN_CLIP_MODEL / TINY keys)."""
    own = tower.state_dict()
    notes = []
    pos = state.get("positional_embedding")
    if pos is not None and pos.shape[0] > own["positional_embedding"].shape[0]:
        keep = own["positional_embedding"].shape[0]
        state = dict(state, positional_embedding=pos[:keep])
        notes.append(f"positional embedding truncated {pos.shape[0]} -> {keep} tokens")
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(k for k in own if k in state and own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise RuntimeError(
            f"text weights from {source} do not fit {section}.OPEN_CLIP_MODEL's tower: missing "
            f"{missing[:8]}, unexpected {unexpected[:8]}, shape mismatch {mismatched[:8]}; "
            f"check {section}.OPEN_CLIP_MODEL / {section}.TINY match the file")
    tower.load_state_dict(state, strict=True)
    return f"  loaded {len(state)} text tensors from {source}" + (
        f"; {'; '.join(notes)}" if notes else "")


def build_text_encoder(cfg) -> Tuple[TextEncoder, str]:
    """The TextEncoder of a config and a report of where its weights came from."""
    t = cfg.MODEL.TEXT
    pretrained = t.PRETRAINED
    is_file = bool(pretrained) and os.path.isfile(pretrained)
    if t.TINY and pretrained and not is_file:
        raise ValueError(f"MODEL.TEXT.TINY True with MODEL.TEXT.PRETRAINED '{pretrained}': a tag "
                         "names weights of a full-size model; set PRETRAINED '' (random init) or "
                         "a local file holding tiny-tower weights")
    quick_gelu = pretrained == "openai"
    tower = build_text_tower(t.OPEN_CLIP_MODEL, t.TINY, t.CONTEXT_LENGTH, quick_gelu)
    name = "tiny text tower" if t.TINY else f"'{t.OPEN_CLIP_MODEL}' text tower"
    if not pretrained:
        report = f"  {name}: random init"
    elif is_file:
        state, layout = text_state_from_clip(
            read_text_weights(pretrained, allow_torchscript=bool(t.ALLOW_TORCHSCRIPT)))
        report = f"  {name}: " + load_text_weights(tower, state, f"{pretrained} ({layout})").strip()
    else:
        state = _pretrained_text_state(t.OPEN_CLIP_MODEL, pretrained)
        report = f"  {name}: " + load_text_weights(
            tower, state, f"open_clip '{t.OPEN_CLIP_MODEL}' / '{pretrained}'").strip()
    return TextEncoder(tower, frozen=bool(t.FREEZE), lr_scale=t.LR_SCALE), report


def _pretrained_text_state(model_name: str, tag: str) -> Dict[str, torch.Tensor]:
    """Text weights of an open_clip pretrained tag (downloaded once into open_clip's cache)."""
    open_clip = import_open_clip("the TG-MIM text encoder")
    if tag not in open_clip.list_pretrained_tags_by_model(model_name):
        raise ValueError(f"MODEL.TEXT.PRETRAINED '{tag}' is neither a local file nor a pretrained "
                         f"tag of '{model_name}' (tags: "
                         f"{open_clip.list_pretrained_tags_by_model(model_name)})")
    state, _ = text_state_from_clip(read_text_weights(OpenClipPretrained(model_name, tag)))
    return state
