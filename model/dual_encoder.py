"""The dual encoder of text-based person search (MODEL.TASK 'tbps'; DESIGN.md section 6).

An image tower and a text tower, each with a projected global feature and token features, a
learnable logit scale and, for SigLIP, its learnable logit bias. ``model(batch)`` reads the batch
dict (DESIGN.md section 2: ``img`` (B, 3, H, W) normalised with INPUT.PIXEL_MEAN / STD,
``text_ids`` (B, L) int64, ``text_mask`` (B, L) bool, from ``datasets.tokenize.build_tokenizer``)
and returns a dict:

- ``img_feat`` (B, D), ``txt_feat`` (B, D): the projected global features, NOT L2-normalised
  (every loss of losses/tbps.py normalises its inputs itself; the text-to-image evaluation
  normalises too). Row i of both is the pair (image i, caption i) of the batch;
- ``img_tokens`` (B, N, D): the image tower's N = gh * gw patch tokens after its final
  LayerNorm, in row-major (gh, gw) order (``model.image_grid``), mapped by the same projection
  as ``img_feat`` (IRRA's convention, ``x @ proj`` on every token); the CLS / pooled token is
  not among them;
- ``txt_tokens`` (B, L, D): every caption position after the final LayerNorm, mapped by the same
  projection as ``txt_feat``; padding positions included (``text_mask`` says which are real);
- ``logit_scale``: kappa (0-dim tensor, = 1 / temperature), the learnable scale (below);
- ``logit_bias`` (0-dim tensor, hf_siglip only): SigLIP's learnable bias b;
- ``tgmim_pred`` (B, 3, gh*r, gw*r), ``tgmim_mask`` (B, gh, gw) bool, ``tgmim_attn`` (B, N, L):
  only from ``model(batch, tgmim=True)`` with LOSS.TGMIM.ENABLE (below).

``model(batch, mlm=True)`` (IRRA's IRR, model/mlm.py; the model built with 'mlm' in LOSS.NAMES)
also runs the text tower on the batch's masked captions ``mlm_ids`` (datasets/mlm.py) and the
IRR head on their token features and the image's ``[img_feat; img_tokens]``, and returns
``mlm_logits`` (B, L, vocabulary) and the batch's ``mlm_labels`` (B, L).

``encode_image(img)`` / ``encode_text(text_ids, text_mask)`` give ``img_feat`` / ``txt_feat``
alone, for the text-to-image evaluation (test images and test captions are encoded separately).

Training-only forward options (decided per epoch by ``processor.processor.forward_options``):
``stop_features`` (N-ITC's stop-gradient second forward), ``ss`` (SS-I: the batch's SimCLR views
``img_ss1`` / ``img_ss2`` through the image tower and ``ss_head`` -> ``ss_z1`` / ``ss_z2``) and
``mvs`` (the MVS view, for the losses with LOSS.<NAME>.MVS: the batch's ``img_mvs`` through the
image tower -> ``img_mvs_feat``, and ``img_mvs_stop`` under no_grad with ``stop_features``
unless ``mvs_stop`` False); see :meth:`DualEncoder.forward`.

Towers (MODEL.TBPS.FAMILY):

- ``open_clip``: open_clip's own ``VisionTransformer`` and ``TextTransformer`` of the CLIP
  architecture MODEL.TBPS.OPEN_CLIP_MODEL (e.g. 'ViT-B-16', as IRRA and TBPS-CLIP), built with
  open_clip's tower builders. img_feat = ln_post(CLS) @ proj; txt_feat = ln_final(x)[EOT] @
  text_projection (causal text attention; EOT = the highest id). Weights (PRETRAINED): an
  open_clip pretrained tag, read as the state dict of ``open_clip.create_model(name, tag)``
  (downloaded once into open_clip's cache; QuickGELU follows the tag), or a local CLIP state dict
  (open_clip's or OpenAI's key layout; an OpenAI TorchScript archive with ALLOW_TORCHSCRIPT),
  both read by ``utils.weights_io.read_weights``; '' = random init. The image tower is built for
  INPUT.SIZE_TRAIN: a loaded position embedding of another (square) grid is resized once at load,
  CLIP convention (CLS row kept, bicubic; ``model.clip_fusion.fit_open_clip_pos_embed``), which
  is IRRA's recipe for 384 x 128. Towers from timm or Hugging Face inside open_clip (its SigLIP,
  ResNet and CoCa architectures) are not supported: use FAMILY 'hf_siglip' for SigLIP.
- ``hf_siglip``: a ``transformers.SiglipModel`` from MODEL.TBPS.HF_MODEL (a local folder,
  ``from_pretrained(path, local_files_only=True)``, or a hub id; its tokenizer comes from the same
  place, datasets/tokenize.py). img_feat = the vision tower's attention-pooling (MAP) head output,
  img_tokens = post_layernorm(patch tokens) (SigLIP's vision tower has no projection, so D is its
  width); txt_feat = head(final_layer_norm(x)[last position]) (SigLIP pools the LAST position, so
  captions are padded to L), txt_tokens = head(final_layer_norm(x)). The patch-grid position
  table (no CLS in SigLIP) is resized once at build to INPUT.SIZE_TRAIN's grid (bicubic,
  ``utils.weights_io.resize_pos_embed``), so non-square inputs work. HF_ATTENTION_MASK decides
  whether ``text_mask`` is passed as the attention mask.
- TINY: random-init towers of the family (width 64, 2 layers, 2 heads, patch 16, native size 224;
  D = MODEL.TBPS.EMBED_DIM), for tests and the SynthPedes quickstart. Their tokenizer is CLIP's
  BPE (vocabulary 49408), which ships with open_clip.

Input normalisation: images arrive normalised with INPUT.PIXEL_MEAN / STD and are mapped to the
tower's own normalisation by ``model.clip_fusion.ClipInput`` (one affine map per channel): the
pretrained tag's mean / std (open_clip; OpenAI CLIP's for a weight file) or SigLIP's 0.5 / 0.5.
Random-init and TINY towers take the images as they come.

Logit scale and bias: the parameter is s = ln kappa (``logit_scale``) and b (``logit_bias``),
initialised from MODEL.TBPS.INIT_TEMPERATURE (kappa_0 = 1 / tau_0) and INIT_LOGIT_BIAS for
random-init towers and with RESET_LOGIT_PARAMS, else from the loaded weights (a loaded scale above
100 is clamped at build). kappa <= 100 (CLIP's clamp) is kept in two places:

- on the parameter, after each optimiser step, as open_clip trains CLIP
  (``logit_scale.clamp_(0, ln 100)``): :meth:`DualEncoder.clamp_logit_scale_`, for the training
  loop to call after ``optimizer.step()``. This is the clamp that bounds the parameter;
- in the forward, as a safety bound on the value with a straight-through gradient
  (:func:`bounded_logit_scale`): kappa = exp(min(s, ln 100)), whose gradient is that of exp(s)
  at the bound instead of zero. ``torch.clamp``'s gradient is 0 at and beyond the bound, which
  would pin s at ln 100 for good once the step clamp had put it there.

LR rules and freezing: :meth:`DualEncoder.lr_scales` gives 'image_tower.' IMAGE_LR_SCALE,
'text_tower.' TEXT_LR_SCALE, 'logit_scale' / 'logit_bias' LOGIT_LR_SCALE (solver/make_optimizer.py
merges them under SOLVER.LR_SCALES); the 0-dim logit parameters get no weight decay with
SOLVER.NO_DECAY_BIAS_NORM. A tower is frozen for some phases by LOSS.PHASED.FREEZE_SEQ with the
prefix 'image_tower' or 'text_tower' (the trainer drops those parameters' gradients).

TG-MIM (LOSS.TGMIM.ENABLE; model/tgmim.py, REFERENCES.md section 5): the image re-ID model's
``TGMIMHead`` on the image tower, built by :func:`build_tgmim_head` (grid = the tower's patch
grid, stride = its patch size, a mask token of the patch-embedding width). In epochs where
TG-MIM weighs > 0 the trainer calls ``model(batch, tgmim=True)``: after the clean forward, the
image tower runs a second time with the masked patches' embeddings replaced by the mask token
before the class token / position embeddings (SimMIM; ``forward_masked`` of each tower, which
runs the library's own forward), its final patch tokens (the ``img_tokens`` space) attend to the
same forward's ``txt_tokens`` (padding from ``text_mask``), and the decoder predicts the
INPUT-normalised ``batch['img']`` (the target; not the tower-normalised input). The head is
training-only: ``tgmim.`` is among ``model.weights.TRAINING_ONLY_PREFIXES``, so
``transformer_<epoch>.pth`` leaves it out and test.py loads checkpoints with or without it.
FREEZE_SEQ entries 'image_tower_but_last<k>' / 'text_tower_but_last<k>' freeze a tower except its
last k blocks (:meth:`DualEncoder.freeze_prefixes`).

LoRA (MODEL.TBPS.LORA.ENABLE; model/lora.py): peft adapters on the towers' attention (and MLP)
Linear layers, applied by :func:`build_dual_encoder` once the model is built; only the adapters
train in the towers, their parameters get the tower's LR scale and no weight decay
(:meth:`DualEncoder.no_weight_decay`). MODEL.TBPS.GRAD_CHECKPOINTING recomputes each transformer
block's activations in the backward pass (:func:`enable_grad_checkpointing`).
"""
from __future__ import annotations

import logging
import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from configs.validate import MAX_LOGIT_SCALE, TBPS_FAMILIES, is_local_path
from datasets.tokenize import tbps_context_length
from utils.hf_hub import hf_from_pretrained
from utils.packages import import_open_clip
from utils.weights_io import (LoadReport, OpenClipPretrained, read_weights, resize_pos_embed,
                              unwrap)

from .clip_fusion import (OPEN_CLIP_TINY_KWARGS, TINY_HEADS, TINY_LAYERS, TINY_NATIVE_SIZE,
                          TINY_PATCH, ClipInput, fit_open_clip_pos_embed)
from .lora import apply_lora, is_lora_parameter
from .mlm import IRRHead
from .tbps_clip_weights import TBPS_CLIP_MEAN, TBPS_CLIP_STD
from .text_encoder import (CLIP_VOCAB_SIZE, build_text_tower, load_text_weights,
                           text_state_from_clip)
from .tgmim import TGMIMHead

logger = logging.getLogger("phasereid")

#: ln of the largest logit scale (CLIP: kappa <= 100)
MAX_LN_SCALE = math.log(MAX_LOGIT_SCALE)
#: SigLIP's image normalisation (its image processors: mean = std = 0.5 per channel)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
#: CLIP BPE special ids (the tiny towers' tokenizer): start / end of text
CLIP_SOT_ID, CLIP_EOT_ID = 49406, 49407
#: LOSS.PHASED.FREEZE_SEQ entries of the dual encoder's own form (DualEncoder.freeze_prefixes)
_BUT_LAST = re.compile(r"^(image|text)_tower_but_last(\d+)$")
_KEY = "MODEL.TBPS.PRETRAINED"
_HF_KEY = "MODEL.TBPS.HF_MODEL"
_PURPOSE = "dual-encoder (MODEL.TASK 'tbps')"


# --------------------------------------------------------------------------------------------
# logit scale
# --------------------------------------------------------------------------------------------
def bounded_logit_scale(param: torch.Tensor, max_scale: float = MAX_LOGIT_SCALE) -> torch.Tensor:
    """kappa = exp(min(s, ln max_scale)) for the parameter s = ln kappa, with a straight-through
    gradient: d kappa / d s = kappa also at and beyond the bound (``torch.clamp`` would give 0
    there). Independent of any loss; see the module docstring."""
    bound = math.log(max_scale)
    excess = (param - bound).clamp(min=0).detach()
    return (param - excess).exp()


# --------------------------------------------------------------------------------------------
# towers: forward(...) -> (global feature (B, D), token features (B, N, D))
# --------------------------------------------------------------------------------------------
def _project(tokens: torch.Tensor, proj) -> torch.Tensor:
    """open_clip projections are a (width, D) matrix or an ``nn.Linear`` (or absent)."""
    if proj is None:
        return tokens
    return proj(tokens) if isinstance(proj, nn.Module) else tokens @ proj


def masked_patch_forward(tower: nn.Module, patch_embed: nn.Module, img: torch.Tensor,
                         token_mask: torch.Tensor, mask_token: torch.Tensor) -> torch.Tensor:
    """The patch tokens (B, N, D) of ``tower(img)`` with the masked patches' embeddings replaced
    by ``mask_token`` (SimMIM; TG-MIM's masked forward, model/tgmim.py).

    ``patch_embed`` is the tower's patch convolution (open_clip ``conv1``, SigLIP
    ``embeddings.patch_embedding``): its output (B, width, gh, gw) is taken by a forward hook,
    the positions where ``token_mask`` (B, gh, gw) is True are set to the mask token (width,),
    and the library's own forward carries on unchanged: class token and position embeddings
    added after the replacement, then patch dropout / ln_pre, the blocks (with gradient
    checkpointing or LoRA where the tower has them), the final LayerNorm and, for open_clip, the
    projection. So the masked forward is the tower's forward, not a copy of it: with an
    all-False mask the tokens equal the normal forward's exactly, and the pooled output (unused
    here) is computed as usual. The hook is removed again on return, also on an error.
    """
    width = int(patch_embed.out_channels)
    if mask_token.numel() != width:
        raise ValueError(f"TG-MIM mask token of {mask_token.numel()} values for patch embeddings "
                         f"of width {width}")

    def replace(module, args, output):
        b, _, gh, gw = output.shape
        if tuple(token_mask.shape) != (b, gh, gw):
            raise ValueError(f"TG-MIM token mask of shape {tuple(token_mask.shape)} does not fit "
                             f"the image tower's patch grid (B, gh, gw) = {(b, gh, gw)}")
        token = mask_token.reshape(1, width, 1, 1).to(output.dtype)
        return torch.where(token_mask.unsqueeze(1), token, output)

    handle = patch_embed.register_forward_hook(replace)
    try:
        return tower(img)[1]
    finally:
        handle.remove()


def check_text_shape(ids: torch.Tensor, mask: Optional[torch.Tensor], context_length: int,
                     built: str, key: str) -> None:
    """Tokenised captions must be (B, context_length) with a mask of the same shape; the error
    says what the model is ``built`` for and the config ``key`` of its context length (the dual
    encoder's and LGUR's text sides share it)."""
    if ids.ndim != 2 or ids.shape[1] != context_length:
        raise ValueError(f"text_ids of shape {tuple(ids.shape)}: {built} (B, {context_length}) "
                         f"({key}; tokenise with datasets.tokenize.build_tokenizer of the same "
                         "config)")
    if mask is None or mask.shape != ids.shape:
        raise ValueError("text_mask must be given with the shape of text_ids")


class OpenClipImageTower(nn.Module):
    """open_clip ``VisionTransformer`` (built with ``output_tokens``): global = its pooled,
    projected output; tokens = the LayerNorm-ed patch tokens @ proj."""

    #: FREEZE_SEQ '..._but_last<k>' stages (:meth:`DualEncoder.freeze_prefixes`): the modules
    #: before the blocks, and the block list
    STEM = ("visual.conv1.", "visual.class_embedding", "visual.positional_embedding",
            "visual.ln_pre.")
    BLOCKS = "visual.transformer.resblocks"

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    @property
    def grid(self) -> Tuple[int, int]:
        return tuple(self.visual.grid_size)

    @property
    def patch_embed(self) -> nn.Module:
        """The patch convolution (its output: the patch embeddings before CLS / positions)."""
        return self.visual.conv1

    @property
    def patch_size(self) -> Tuple[int, int]:
        return tuple(int(p) for p in self.visual.patch_size)

    def forward(self, img: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        pooled, tokens = self.visual(img)
        return pooled, _project(tokens, self.visual.proj)

    def forward_masked(self, img: torch.Tensor, token_mask: torch.Tensor,
                       mask_token: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, D) (as ``forward``'s) of the masked image
        (:func:`masked_patch_forward`): conv1 -> masked patches replaced -> class_embedding /
        positional_embedding -> patch_dropout -> ln_pre -> transformer -> ln_post -> @ proj."""
        return masked_patch_forward(self, self.patch_embed, img, token_mask, mask_token)


class OpenClipTextTower(nn.Module):
    """open_clip ``TextTransformer`` (built with ``output_tokens``): global = ln_final(x) at the
    end-of-text token @ text_projection; tokens = ln_final(x) @ text_projection. ``text_mask``
    is not needed: CLIP's causal attention keeps padding after EOT out of every real token."""

    STEM = ("text.token_embedding.", "text.positional_embedding", "text.cls_emb")
    BLOCKS = "text.transformer.resblocks"

    def __init__(self, text: nn.Module):
        super().__init__()
        self.text = text

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        pooled, tokens = self.text(ids)
        return pooled, _project(tokens, self.text.text_projection)


class SiglipImageTower(nn.Module):
    """HF ``SiglipVisionModel``: global = its attention-pooling head (``pooler_output``);
    tokens = post_layernorm(patch tokens) (no projection in SigLIP's vision tower)."""

    STEM = ("vision.embeddings.",)
    BLOCKS = "vision.encoder.layers"

    def __init__(self, vision: nn.Module):
        super().__init__()
        self.vision = vision

    @property
    def patch_embed(self) -> nn.Module:
        """The patch convolution (its output: the patch embeddings before the positions)."""
        return self.vision.embeddings.patch_embedding

    @property
    def patch_size(self) -> Tuple[int, int]:
        patch = int(self.vision.embeddings.patch_size)
        return patch, patch

    def forward(self, img: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.vision(pixel_values=img)
        return out.pooler_output, out.last_hidden_state

    def forward_masked(self, img: torch.Tensor, token_mask: torch.Tensor,
                       mask_token: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, D) (as ``forward``'s) of the masked image
        (:func:`masked_patch_forward`): embeddings.patch_embedding -> masked patches replaced ->
        + position_embedding -> encoder -> post_layernorm (no CLS in SigLIP)."""
        return masked_patch_forward(self, self.patch_embed, img, token_mask, mask_token)


class SiglipTextTower(nn.Module):
    """HF ``SiglipTextModel``: global = head(final_layer_norm(x)[last position]) (its
    ``pooler_output``); tokens = head(final_layer_norm(x)). ``use_mask``: pass ``text_mask`` as
    the attention mask (MODEL.TBPS.HF_ATTENTION_MASK)."""

    STEM = ("text.embeddings.",)
    BLOCKS = "text.encoder.layers"

    def __init__(self, text: nn.Module, use_mask: bool):
        super().__init__()
        self.text = text
        self.use_mask = bool(use_mask)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.text(input_ids=ids, attention_mask=mask.long() if self.use_mask else None)
        return out.pooler_output, self.text.head(out.last_hidden_state)


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
class DualEncoder(nn.Module):
    """Image tower + text tower + logit scale (and bias); see the module docstring.

    Args:
        image_tower: ``forward(img) -> (global (B, D), tokens (B, N, D))``.
        text_tower: ``forward(ids, mask) -> (global (B, D), tokens (B, L, D))``.
        preprocess: INPUT-normalised image -> the tower's input (``ClipInput`` or Identity).
        embed_dim: D of the global and token features.
        context_length: L the text tower is built for (``text_ids`` must have L columns).
        image_grid: (gh, gw) of the image tower's patch tokens.
        logit_scale: initial ln kappa.
        logit_bias: initial b, or None for a model without a bias (CLIP).
        lr_scales: parameter-name prefix -> LR scale (:meth:`lr_scales`).
        family: 'open_clip' or 'hf_siglip' (for messages and logs).
        num_classes: > 0 builds ``id_head``, the cross-modal ID classifier (its weight and bias
            are outputs ``id_weight`` / ``id_bias`` for ``losses.tbps.cross_modal_id_loss``).
        mlm_head: IRRA's IRR head (``model.mlm.IRRHead``) for ``forward(batch, mlm=True)``, or
            None. Training-only, like ``id_head``.
        ss_hidden: > 0 builds ``ss_head``, SS-I's projection MLP Linear(D, ss_hidden) -> ReLU ->
            Linear(ss_hidden, D) (TBPS-CLIP ``simclr_mlp`` 512 -> 128 -> 512; torch's default
            Linear init, as there). Training-only, like ``id_head``.
        tgmim: optional :class:`model.tgmim.TGMIMHead` (LOSS.TGMIM.ENABLE): the TG-MIM branch
            of ``forward(batch, tgmim=True)``; the image tower needs ``forward_masked``.

    Example:
        >>> out = model({"img": img, "text_ids": ids, "text_mask": mask})
        >>> out["img_feat"].shape, out["txt_tokens"].shape   # (B, D), (B, L, D)
    """

    def __init__(self, image_tower: nn.Module, text_tower: nn.Module, preprocess: nn.Module, *,
                 embed_dim: int, context_length: int, image_grid: Sequence[int], logit_scale: float,
                 logit_bias: Optional[float] = None, lr_scales: Optional[Dict[str, float]] = None,
                 family: str = "", num_classes: int = 0, mlm_head: Optional[nn.Module] = None,
                 ss_hidden: int = 0, tgmim: Optional[nn.Module] = None):
        super().__init__()
        self.preprocess = preprocess
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        if logit_bias is None:
            self.register_parameter("logit_bias", None)
        else:
            self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias)))
        self.embed_dim = int(embed_dim)
        self.context_length = int(context_length)
        self.image_grid = tuple(int(g) for g in image_grid)
        self.family = family
        self._lr_scales = dict(lr_scales or {})
        self.id_head = None
        if num_classes > 0:
            self.id_head = nn.Linear(self.embed_dim, int(num_classes))
            nn.init.normal_(self.id_head.weight, std=0.001)
            nn.init.zeros_(self.id_head.bias)
        self.mlm_head = mlm_head
        self.ss_head = None
        if ss_hidden > 0:
            self.ss_head = nn.Sequential(nn.Linear(self.embed_dim, int(ss_hidden)), nn.ReLU(),
                                         nn.Linear(int(ss_hidden), self.embed_dim))
        if tgmim is not None and not hasattr(image_tower, "forward_masked"):
            raise ValueError(f"TG-MIM needs an image tower with a masked forward; "
                             f"{type(image_tower).__name__} has none")
        self.tgmim = tgmim

    @property
    def feat_dim(self) -> int:
        """D of the global features (the composer's feature size)."""
        return self.embed_dim

    def lr_scales(self) -> Dict[str, float]:
        """Parameter-name prefix -> LR scale (merged under SOLVER.LR_SCALES by the optimiser)."""
        return dict(self._lr_scales)

    def no_weight_decay(self) -> set:
        """Names of the parameters the optimiser never decays, whatever SOLVER.NO_DECAY_BIAS_NORM
        says: the LoRA A / B weights (MODEL.TBPS.LORA; model/lora.py)."""
        return {name for name, _ in self.named_parameters() if is_lora_parameter(name)}

    def freeze_prefixes(self, entry: str) -> Optional[List[str]]:
        """The parameter-name prefixes a LOSS.PHASED.FREEZE_SEQ entry of the dual encoder's own
        form stands for, or None for an ordinary prefix (``solver.phase_plan.frozen_parameters``
        asks the model first).

        'image_tower_but_last<k>' / 'text_tower_but_last<k>' (1 <= k <= the tower's blocks):
        the tower frozen except its last k transformer blocks and what follows them. Frozen:
        the stem (open_clip image: conv1, class_embedding, positional_embedding, ln_pre; open_clip
        text: token_embedding, positional_embedding; SigLIP: embeddings) and blocks 0 .. n-k-1.
        Trained: blocks n-k .. n-1 and the tower's head (open_clip: ln_post / proj, ln_final /
        text_projection; SigLIP: post_layernorm and the pooling head, final_layer_norm and head).
        LoRA parameters inside frozen blocks are frozen with them.

        Raises:
            ValueError: k outside 1 .. n (the message names the entry and n).
        """
        match = _BUT_LAST.match(entry)
        if not match:
            return None
        side, k = match.group(1), int(match.group(2))
        tower = getattr(self, f"{side}_tower")
        blocks = tower.get_submodule(tower.BLOCKS)
        n = len(blocks)
        if not 1 <= k <= n:
            raise ValueError(f"LOSS.PHASED.FREEZE_SEQ entry '{entry}': the {side} tower has {n} "
                             f"blocks, so k must be in 1..{n} ('{side}_tower' freezes it whole)")
        names = [name for name, _ in tower.named_parameters()]
        stem = [p for p in tower.STEM if any(name.startswith(p) for name in names)]
        return [f"{side}_tower.{p}" for p in stem] + \
            [f"{side}_tower.{tower.BLOCKS}.{i}." for i in range(n - k)]

    @property
    def kappa(self) -> torch.Tensor:
        """The logit scale kappa = exp(s), bounded by 100 (:func:`bounded_logit_scale`)."""
        return bounded_logit_scale(self.logit_scale)

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the parameter s = ln kappa to [0, ln 100] in place, as open_clip does after every
        optimiser step (call it after ``optimizer.step()``)."""
        self.logit_scale.clamp_(0.0, MAX_LN_SCALE)

    def _check_text(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        check_text_shape(ids, mask, self.context_length, "the text tower is built for",
                         "MODEL.TBPS.CONTEXT_LENGTH")

    def encode_image(self, img: torch.Tensor) -> torch.Tensor:
        """img_feat (B, D), not normalised, of INPUT-normalised images (B, 3, H, W)."""
        return self.image_tower(self.preprocess(img))[0]

    def encode_text(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """txt_feat (B, D), not normalised, of tokenised captions (B, L)."""
        self._check_text(text_ids, text_mask)
        return self.text_tower(text_ids, text_mask)[0]

    def _view(self, batch: dict, key: str, option: str) -> torch.Tensor:
        if batch.get(key) is None:
            raise KeyError(f"the dual encoder's {option} forward needs the batch's '{key}' view "
                           f"(datasets/tbps_augment.py; the trainer asks the training set for it "
                           f"in epochs where its loss weighs > 0); the batch has {sorted(batch)}")
        return batch[key]

    def forward(self, batch: dict, stop_features: bool = False, ss: bool = False,
                mvs: bool = False, mlm: bool = False, tgmim: bool = False,
                mvs_stop: Optional[bool] = None) -> Dict[str, torch.Tensor]:
        """The outputs of a batch of (image, caption) pairs (module docstring).

        ``stop_features=True`` also runs the towers a second time on the same batch under
        ``torch.no_grad`` in the current mode (TBPS-CLIP's stop-gradient forward for N-ITC's soft
        targets; with dropout / drop-path it differs from the first) and returns ``img_stop`` /
        ``txt_stop``. With ``id_head`` the outputs also hold ``id_weight`` / ``id_bias``.

        ``ss=True`` (SS-I): ``ss_z1`` / ``ss_z2`` (B, D) = ``ss_head``(image tower global
        feature) of the batch's ``img_ss1`` / ``img_ss2`` (one image-tower forward of the 2B
        views), not normalised. ``mvs=True`` (MVS-I): ``img_mvs_feat`` (B, D) = the image
        tower's global feature of ``img_mvs``, and with ``mvs_stop`` (None = ``stop_features``)
        its no-grad second forward ``img_mvs_stop`` (TBPS-CLIP's ``image_1_features_s``; only
        N-ITC's MVS-I reads it).
        ``mlm=True`` adds ``mlm_logits`` / ``mlm_labels`` (:meth:`_mlm`; needs ``mlm_head``).
        ``tgmim=True`` (epochs where the phase plan gives TG-MIM a weight > 0) adds the masked,
        text-guided forward's ``tgmim_pred``, ``tgmim_mask``, ``tgmim_attn``
        (:meth:`_masked_image_modelling`)."""
        missing = [k for k in ("img", "text_ids", "text_mask") if batch.get(k) is None]
        if missing:
            raise KeyError(f"the dual encoder (MODEL.TASK 'tbps') needs batch fields {missing}; "
                           f"the batch has {sorted(batch)} (captions: DATASETS.CAPTION_SOURCE "
                           "'annotation' or 'attributes')")
        ids, mask = batch["text_ids"], batch["text_mask"]
        self._check_text(ids, mask)
        img_feat, img_tokens = self.image_tower(self.preprocess(batch["img"]))
        txt_feat, txt_tokens = self.text_tower(ids, mask)
        out = {"img_feat": img_feat, "txt_feat": txt_feat, "img_tokens": img_tokens,
               "txt_tokens": txt_tokens, "logit_scale": self.kappa}
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias
        if self.id_head is not None:
            out["id_weight"], out["id_bias"] = self.id_head.weight, self.id_head.bias
        if stop_features:
            with torch.no_grad():
                out["img_stop"] = self.image_tower(self.preprocess(batch["img"]))[0]
                out["txt_stop"] = self.text_tower(ids, mask)[0]
        if mlm:
            out.update(self._mlm(batch, mask, img_feat, img_tokens))
        if ss:
            if self.ss_head is None:
                raise RuntimeError("ss=True (SS-I) but the dual encoder has no ss_head: it is "
                                   "built with 'ss' in LOSS.NAMES")
            views = torch.cat([self._view(batch, "img_ss1", "SS-I"),
                               self._view(batch, "img_ss2", "SS-I")])
            z = self.ss_head(self.image_tower(self.preprocess(views))[0])
            out["ss_z1"], out["ss_z2"] = z.chunk(2)
        if mvs:
            view = self._view(batch, "img_mvs", "MVS-I")
            out["img_mvs_feat"] = self.image_tower(self.preprocess(view))[0]
            if stop_features if mvs_stop is None else mvs_stop:
                with torch.no_grad():
                    out["img_mvs_stop"] = self.image_tower(self.preprocess(view))[0]
        if tgmim:
            out.update(self._masked_image_modelling(batch["img"], txt_tokens, mask))
        return out

    def _mlm(self, batch: dict, mask: torch.Tensor, img_feat: torch.Tensor,
             img_tokens: torch.Tensor) -> Dict[str, torch.Tensor]:
        """IRRA's IRR forward: the text tower on the masked captions ``mlm_ids`` (same
        ``text_mask``: masking keeps every position), the IRR head on their tokens and the
        image's ``[img_feat; img_tokens]`` (model/mlm.py) -> ``mlm_logits`` (B, L, V) and the
        batch's ``mlm_labels`` (B, L)."""
        if self.mlm_head is None:
            raise RuntimeError("model(batch, mlm=True) but the dual encoder has no IRR head "
                               "(mlm_head): it is built when LOSS.NAMES has 'mlm'")
        missing = [k for k in ("mlm_ids", "mlm_labels") if batch.get(k) is None]
        if missing:
            raise KeyError(f"the IRR / MLM forward needs batch fields {missing} (the training "
                           "items carry them when LOSS.NAMES has 'mlm', datasets/mlm.py); the "
                           f"batch has {sorted(batch)}")
        mlm_ids, labels = batch["mlm_ids"], batch["mlm_labels"]
        if mlm_ids.shape != mask.shape or labels.shape != mask.shape:
            raise ValueError(f"mlm_ids {tuple(mlm_ids.shape)} / mlm_labels "
                             f"{tuple(labels.shape)} must have the shape of text_ids "
                             f"{tuple(mask.shape)}")
        masked_tokens = self.text_tower(mlm_ids, mask)[1]
        image = torch.cat([img_feat.unsqueeze(1), img_tokens], dim=1)
        return {"mlm_logits": self.mlm_head(masked_tokens, image), "mlm_labels": labels}

    def _masked_image_modelling(self, img: torch.Tensor, txt_tokens: torch.Tensor,
                                text_mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        """TG-MIM on the image tower (model/tgmim.py, as ``ReIDModel`` does on the TransReID
        ViT): a token mask of the head's ratio and mode, the tower's masked forward (the masked
        patch embeddings replaced by the head's mask token before the class token / positions;
        ``forward_masked``), the final patch tokens (the space of ``img_tokens``) attending to
        ``txt_tokens`` of the same text forward (not detached: the text tower learns from TG-MIM
        too; padding from ``text_mask``), the pixel decoder.

        The reconstruction target (the composer's 'tgmim', losses/tgmim.py) is ``batch['img']``
        as it comes, INPUT.PIXEL_MEAN / STD-normalised, not the tower's input: the decoder learns
        to predict INPUT-normalised pixels (for pretrained towers ``preprocess`` maps them to the
        tower's normalisation by a per-channel affine map; for random-init towers the two are the
        same). So the image must have INPUT.SIZE_TRAIN (the tower's grid times its patch, up to
        remainder rows / columns that no patch covers): ``preprocess`` would otherwise resize it
        and the prediction would not line up with the target.
        """
        if self.tgmim is None:
            raise RuntimeError("tgmim=True but the dual encoder has no TG-MIM branch: set "
                               "LOSS.TGMIM.ENABLE True")
        stride = self.tgmim.stride
        cells = (img.shape[-2] // stride, img.shape[-1] // stride)
        if cells != self.image_grid:
            raise ValueError(f"TG-MIM: an image of {tuple(img.shape[-2:])} pixels does not give "
                             f"the image tower's {self.image_grid} grid of {stride}-pixel patches;"
                             " the reconstruction target is batch['img']: train at "
                             "INPUT.SIZE_TRAIN")
        mask = self.tgmim.sample_mask(img.shape[0], img.device)
        tokens = self.image_tower.forward_masked(self.preprocess(img), mask,
                                                 self.tgmim.mask_token)
        pred, attn = self.tgmim(tokens, txt_tokens, text_mask)
        return {"tgmim_pred": pred, "tgmim_mask": mask, "tgmim_attn": attn}


# --------------------------------------------------------------------------------------------
# open_clip towers
# --------------------------------------------------------------------------------------------
def _open_clip_arch(t) -> Tuple[dict, bool]:
    """(vision_cfg with embed_dim, quick_gelu) of MODEL.TBPS (TINY or OPEN_CLIP_MODEL); only
    open_clip's own ViT image towers."""
    open_clip = import_open_clip(f"the {_PURPOSE} open_clip towers")
    if t.TINY:
        return {"embed_dim": int(t.EMBED_DIM),
                "vision_cfg": dict(OPEN_CLIP_TINY_KWARGS["vision_cfg"])}, False
    model_cfg = open_clip.get_model_config(t.OPEN_CLIP_MODEL)
    if model_cfg is None:
        raise ValueError(f"MODEL.TBPS.OPEN_CLIP_MODEL '{t.OPEN_CLIP_MODEL}' is not an open_clip "
                         "architecture; see open_clip.list_models() (e.g. 'ViT-B-16')")
    vision = model_cfg["vision_cfg"]
    other = ("a timm image tower" if vision.get("timm_model_name") else
             "a ResNet image tower" if isinstance(vision.get("layers"), (list, tuple)) else
             "an attentional-pool image tower" if vision.get("attentional_pool") else
             "a Hugging Face text tower" if model_cfg["text_cfg"].get("hf_model_name") else
             "a multimodal decoder (CoCa)" if "multimodal_cfg" in model_cfg else "")
    if other:
        raise ValueError(f"MODEL.TBPS.OPEN_CLIP_MODEL '{t.OPEN_CLIP_MODEL}' has {other}; the "
                         "dual encoder's open_clip family takes open_clip's own ViT image and "
                         "text transformers (CLIP architectures such as 'ViT-B-16'). For SigLIP "
                         "use MODEL.TBPS.FAMILY 'hf_siglip'")
    return {"embed_dim": int(model_cfg["embed_dim"]), "vision_cfg": dict(vision)}, \
        bool(model_cfg.get("quick_gelu", False))


def _open_clip_tag(t) -> Optional[str]:
    """PRETRAINED as an open_clip tag (None for '' or a file); an unknown tag is an error."""
    value = t.PRETRAINED
    if not value or is_local_path(value):
        if value and not os.path.isfile(os.path.expanduser(value)):
            raise FileNotFoundError(f"{_KEY} file not found: {value}")
        return None
    if t.TINY:
        raise ValueError(f"MODEL.TBPS.TINY True with {_KEY} '{value}': a tag names the weights of "
                         "a full-size model; set PRETRAINED '' (random init) or a local file "
                         "holding tiny-tower weights")
    open_clip = import_open_clip(f"the {_PURPOSE} open_clip towers")
    tags = open_clip.list_pretrained_tags_by_model(t.OPEN_CLIP_MODEL)
    if value not in tags:
        raise ValueError(f"{_KEY} '{value}' is neither a local file nor a pretrained tag of "
                         f"'{t.OPEN_CLIP_MODEL}' (tags: {tags})")
    return value


def _read_open_clip_state(t, tag: Optional[str]) -> Tuple[Dict[str, torch.Tensor], str]:
    """The CLIP state dict of PRETRAINED (a tag or a file; ``utils.weights_io.read_weights``) and
    its description. Read before the towers are built, so a missing download fails fast."""
    if tag:
        raw, description = read_weights(OpenClipPretrained(t.OPEN_CLIP_MODEL, tag), key=_KEY)
    else:
        raw, description = read_weights(os.path.expanduser(t.PRETRAINED), key=_KEY,
                                        allow_torchscript=bool(t.ALLOW_TORCHSCRIPT),
                                        torchscript_key="MODEL.TBPS.ALLOW_TORCHSCRIPT")
    state = unwrap(raw, LoadReport(source=description), key=_KEY)
    if not any(k.startswith("visual.") for k in state):
        raise ValueError(f"{_KEY} {description} has no 'visual.*' keys: it is not a CLIP state "
                         "dict (open_clip's or OpenAI's layout, both towers in one file)")
    return state, description


def _load_open_clip_state(image: OpenClipImageTower, text: OpenClipTextTower, t,
                          state: Dict[str, torch.Tensor],
                          description: str) -> Tuple[str, Optional[float], Optional[float]]:
    """Load a CLIP state dict into both towers, strictly (the image position embedding fitted to
    the tower's grid, the text one truncated to L). Returns (report line, the state's logit
    scale or None, its logit bias or None)."""
    visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    resized = fit_open_clip_pos_embed(visual, image.visual, f"{_KEY} {description}")
    try:
        image.visual.load_state_dict(visual, strict=True)
    except RuntimeError as exc:
        raise RuntimeError(f"{_KEY} {description} does not fit the image tower of "
                           f"MODEL.TBPS.OPEN_CLIP_MODEL '{t.OPEN_CLIP_MODEL}' (TINY "
                           f"{bool(t.TINY)}): {exc}") from None
    text_state, layout = text_state_from_clip(state)
    text_report = load_text_weights(text.text, text_state, f"{description} ({layout})",
                                    section="MODEL.TBPS").strip()
    scale, bias = state.get("logit_scale"), state.get("logit_bias")
    report = (f"loaded {len(visual)} image tensors from {description}"
              + (f" ({resized})" if resized else "") + f"; {text_report}")
    return (report, None if scale is None else float(scale.reshape(-1)[0]),
            None if bias is None else float(bias.reshape(-1)[0]))


def build_open_clip_towers(cfg, context_length: int, load_weights: bool):
    """(image tower, text tower, logit scale or None, logit bias or None, tower mean / std or
    None, description) of FAMILY 'open_clip' (module docstring). The mean / std follow from the
    config alone, so a model built with ``load_weights`` False (test.py) preprocesses alike."""
    t = cfg.MODEL.TBPS
    size = tuple(int(s) for s in cfg.INPUT.SIZE_TRAIN)
    tag = _open_clip_tag(t)
    arch, quick_gelu = _open_clip_arch(t)
    loaded = _read_open_clip_state(t, tag) if (load_weights and t.PRETRAINED) else None
    open_clip = import_open_clip(f"the {_PURPOSE} open_clip towers")
    if tag:
        quick_gelu = quick_gelu or bool(
            open_clip.get_pretrained_cfg(t.OPEN_CLIP_MODEL, tag).get("quick_gelu", False))
    # a TBPS-CLIP checkpoint (INIT_CHECKPOINT, loaded over these towers by model/make_model.py)
    # is OpenAI's CLIP fine-tuned: QuickGELU blocks whatever OPEN_CLIP_MODEL's variant says
    quick_gelu = quick_gelu or bool(t.INIT_CHECKPOINT)
    from open_clip.model import _build_vision_tower
    patch = arch["vision_cfg"].get("patch_size", 16)
    if size[0] < patch or size[1] < patch:
        raise ValueError(f"INPUT.SIZE_TRAIN {list(size)} is smaller than the image tower's patch "
                         f"{patch}")
    visual = _build_vision_tower(arch["embed_dim"], dict(arch["vision_cfg"], image_size=size,
                                                         output_tokens=True),
                                 quick_gelu=quick_gelu)
    text = build_text_tower(t.OPEN_CLIP_MODEL, bool(t.TINY), context_length, quick_gelu,
                            embed_dim=arch["embed_dim"], section="MODEL.TBPS", purpose=_PURPOSE)
    image_tower, text_tower = OpenClipImageTower(visual), OpenClipTextTower(text)
    name = (f"tiny ({TINY_LAYERS} layers, width 64, D {t.EMBED_DIM})" if t.TINY
            else f"'{t.OPEN_CLIP_MODEL}'") + (" QuickGELU" if quick_gelu else "")
    scale = bias = mean_std = None
    if loaded is None and t.INIT_CHECKPOINT and load_weights:
        source = "weights to come from MODEL.TBPS.INIT_CHECKPOINT (TBPS-CLIP)"
    elif loaded is None:
        source = "random init" + ("" if load_weights else " (weights to come from a checkpoint)")
    else:
        source, scale, bias = _load_open_clip_state(image_tower, text_tower, t, *loaded)
    if t.INIT_CHECKPOINT and not t.TINY:   # TBPS-CLIP trained with ImageNet's normalisation
        mean_std = (TBPS_CLIP_MEAN, TBPS_CLIP_STD)
    elif t.PRETRAINED and not t.TINY:   # from the config alone: the same with load_weights False
        pretrained_cfg = open_clip.get_pretrained_cfg(t.OPEN_CLIP_MODEL, tag) if tag else {}
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        mean_std = (pretrained_cfg.get("mean", OPENAI_DATASET_MEAN),
                    pretrained_cfg.get("std", OPENAI_DATASET_STD))
    return (image_tower, text_tower, scale, bias, mean_std,
            f"open_clip {name} towers, {source}")


# --------------------------------------------------------------------------------------------
# Hugging Face SigLIP towers
# --------------------------------------------------------------------------------------------
def resize_siglip_pos_embed(vision: nn.Module, size: Sequence[int]) -> Optional[str]:
    """Resize a HF ``SiglipVisionModel``'s patch-grid position table (square s x s, no CLS) to
    input ``size`` (H, W) in place, once: ``utils.weights_io.resize_pos_embed`` (bicubic, no
    prefix rows), a new ``position_embedding`` table and ``position_ids`` for gh * gw patches in
    row-major order (the order of the patch convolution's flattened output). Returns what was
    done, or None when the grid already fits."""
    emb = vision.embeddings
    patch = int(emb.patch_size)
    old = emb.position_embedding.weight
    side = math.isqrt(old.shape[0])
    if side * side != old.shape[0]:
        raise ValueError(f"SigLIP position table of {old.shape[0]} rows is not a square grid")
    if size[0] < patch or size[1] < patch:
        raise ValueError(f"INPUT.SIZE_TRAIN {list(size)} is smaller than the SigLIP patch {patch}")
    grid = (int(size[0]) // patch, int(size[1]) // patch)
    if grid == (side, side):
        return None
    new = resize_pos_embed(old.detach(), (side, side), grid, num_prefix=0, mode="bicubic")
    table = nn.Embedding(new.shape[0], new.shape[1]).to(device=old.device, dtype=old.dtype)
    with torch.no_grad():
        table.weight.copy_(new)
    emb.position_embedding = table
    emb.register_buffer("position_ids", torch.arange(new.shape[0], device=old.device)
                        .expand((1, -1)), persistent=False)
    emb.num_patches = emb.num_positions = new.shape[0]
    return f"position table resized from grid {(side, side)} to {grid}"


def _tiny_siglip_config(embed_dim: int, context_length: int):
    from transformers import SiglipConfig
    width = int(embed_dim)
    if width % TINY_HEADS:
        raise ValueError(f"MODEL.TBPS.EMBED_DIM {width} must be divisible by the tiny towers' "
                         f"{TINY_HEADS} heads")
    common = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=TINY_LAYERS,
                  num_attention_heads=TINY_HEADS)
    return SiglipConfig(
        text_config=dict(common, vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=context_length,
                         pad_token_id=0, bos_token_id=CLIP_SOT_ID, eos_token_id=CLIP_EOT_ID),
        vision_config=dict(common, image_size=TINY_NATIVE_SIZE, patch_size=TINY_PATCH))


def build_hf_siglip_towers(cfg, context_length: int, load_weights: bool):
    """(image tower, text tower, logit scale or None, logit bias or None, tower mean / std or
    None, description) of FAMILY 'hf_siglip' (module docstring)."""
    t = cfg.MODEL.TBPS
    try:
        from transformers import AutoConfig, SiglipConfig, SiglipModel
    except ImportError as exc:
        raise ImportError("MODEL.TBPS.FAMILY 'hf_siglip' needs the transformers package: pip "
                          "install transformers") from exc
    scale = bias = mean_std = None
    if t.TINY:
        net = SiglipModel(_tiny_siglip_config(t.EMBED_DIM, context_length))
        source = f"tiny ({TINY_LAYERS} layers, width {t.EMBED_DIM}), random init"
    else:
        config = hf_from_pretrained(AutoConfig, t.HF_MODEL, _HF_KEY, "config")
        if not isinstance(config, SiglipConfig):
            raise ValueError(f"{_HF_KEY} '{t.HF_MODEL}' is a '{config.model_type}' model; FAMILY "
                             "'hf_siglip' takes SigLIP models (model_type 'siglip')")
        if load_weights:
            net = hf_from_pretrained(SiglipModel, t.HF_MODEL, _HF_KEY, "model weights")
            scale = float(net.logit_scale.detach().reshape(-1)[0])
            bias = float(net.logit_bias.detach().reshape(-1)[0])
            source = f"'{t.HF_MODEL}'"
        else:
            net = SiglipModel(config)
            source = f"'{t.HF_MODEL}' architecture, weights to come from a checkpoint"
        mean_std = (SIGLIP_MEAN, SIGLIP_STD)
    net = net.float()
    text_max = int(net.config.text_config.max_position_embeddings)
    if not 2 <= context_length <= text_max:
        raise ValueError(f"MODEL.TBPS.CONTEXT_LENGTH {context_length} must be in 2..{text_max} "
                         f"(the text position table of {_HF_KEY} '{t.HF_MODEL}')")
    width, proj = int(net.config.vision_config.hidden_size), int(net.text_model.head.out_features)
    if width != proj:
        raise ValueError(f"{_HF_KEY} '{t.HF_MODEL}': the image features ({width}-d) and the "
                         f"projected text features ({proj}-d) differ in size")
    resized = resize_siglip_pos_embed(net.vision_model, tuple(cfg.INPUT.SIZE_TRAIN))
    image_tower = SiglipImageTower(net.vision_model)
    text_tower = SiglipTextTower(net.text_model, use_mask=bool(t.HF_ATTENTION_MASK))
    desc = f"HF SigLIP towers {source}" + (f"; {resized}" if resized else "")
    return image_tower, text_tower, scale, bias, mean_std, desc


# --------------------------------------------------------------------------------------------
# the factory
# --------------------------------------------------------------------------------------------
def _logit_init(t, loaded: Optional[float], init: float, what: str, notes: list) -> float:
    if loaded is None or t.RESET_LOGIT_PARAMS:
        return init
    if what == "scale" and not 0.0 <= loaded <= MAX_LN_SCALE:
        clamped = min(max(loaded, 0.0), MAX_LN_SCALE)
        notes.append(f"loaded logit scale {math.exp(loaded):.4g} clamped to "
                     f"{math.exp(clamped):.4g}")
        return clamped
    return loaded


def enable_grad_checkpointing(image: nn.Module, text: nn.Module) -> str:
    """Activation checkpointing in every transformer block of both towers (in place):
    open_clip's ``set_grad_checkpointing``; for HF towers transformers'
    ``activation_checkpointing_enable`` (non-reentrant, so frozen inputs need no gradient; its
    input-embedding hook that would make them require one is removed again: it would only pull
    a frozen tower into the backward pass). Returns a description for the log."""
    for tower in (image, text):
        if isinstance(tower, OpenClipImageTower):
            tower.visual.set_grad_checkpointing(True)
        elif isinstance(tower, OpenClipTextTower):
            tower.text.set_grad_checkpointing(True)
        else:
            net = tower.vision if isinstance(tower, SiglipImageTower) else tower.text
            net.activation_checkpointing_enable({"use_reentrant": False})
            net.disable_input_require_grads()
    return "activation checkpointing in both towers"


def build_dual_encoder(cfg, load_weights: bool = True, num_classes: int = 0,
                       lora: bool = True) -> DualEncoder:
    """The dual encoder of a config (MODEL.TASK 'tbps'; see the module docstring).

    Args:
        cfg: the config (MODEL.TBPS.*, INPUT.SIZE_TRAIN / SIZE_TEST / PIXEL_MEAN / PIXEL_STD).
        load_weights: load the towers' weights (PRETRAINED / HF_MODEL). False builds the same
            architecture at random init, for loading a PhaseReID checkpoint over it (test.py);
            hf_siglip still reads HF_MODEL's config.
        num_classes: training identities; with 'id' in LOSS.NAMES (the cross-modal ID loss) the
            model gets its classifier ``id_head`` (Linear(D, num_classes), N(0, 0.001) weights,
            zero bias, IRRA; LR x MODEL.TBPS.ID_LR_SCALE). Training-only: test.py ignores it.
            With 'mlm' in LOSS.NAMES the model gets IRRA's IRR head ``mlm_head``
            (``model.mlm.IRRHead``: width D, LOSS.MLM.HEADS heads (0 = D / 64, IRRA's rule, at
            least 1), LOSS.MLM.LAYERS blocks, the text tower's vocabulary; LR x
            LOSS.MLM.LR_SCALE). Training-only too.
            With 'ss' in LOSS.NAMES the model gets SS-I's ``ss_head`` (LOSS.SS.HIDDEN_DIM),
            training-only too (``model.weights.TRAINING_ONLY_PREFIXES``).
        lora: with MODEL.TBPS.LORA.ENABLE, put the LoRA adapters on the towers
            (``model.lora.apply_lora``). False builds the plain towers whatever the config says:
            test.py (a checkpoint holds merged LoRA weights in the plain layout) and
            MODEL.PRETRAIN_CHOICE 'self' (its weights load into the plain towers first).

    Raises:
        ValueError: an unknown FAMILY, an unsupported architecture, a bad size or length.
        FileNotFoundError / OSError / RuntimeError: weights or files that are not on disk and
            cannot be downloaded (the message names the key and how to provide them).
        ImportError: open_clip / transformers missing, or peft with LoRA on.
    """
    t = cfg.MODEL.TBPS
    if t.FAMILY not in TBPS_FAMILIES:
        raise ValueError(f"MODEL.TBPS.FAMILY '{t.FAMILY}' is not one of {list(TBPS_FAMILIES)}")
    size = tuple(int(s) for s in cfg.INPUT.SIZE_TRAIN)
    if size != tuple(int(s) for s in cfg.INPUT.SIZE_TEST):
        raise ValueError("INPUT.SIZE_TRAIN and INPUT.SIZE_TEST differ; the dual encoder's image "
                         "tower is built for one size: use the same size for both")
    length = tbps_context_length(cfg)
    build = build_open_clip_towers if t.FAMILY == "open_clip" else build_hf_siglip_towers
    image, text, loaded_scale, loaded_bias, mean_std, desc = build(cfg, length, load_weights)
    if t.GRAD_CHECKPOINTING:
        desc += "; " + enable_grad_checkpointing(image, text)

    notes: list = []
    scale = _logit_init(t, loaded_scale, math.log(1.0 / t.INIT_TEMPERATURE), "scale", notes)
    bias = None
    # a bias where the towers have one (SigLIP) and wherever the sigmoid identity loss needs one
    if t.FAMILY == "hf_siglip" or loaded_bias is not None or "sigmoid_id" in cfg.LOSS.NAMES:
        bias = _logit_init(t, loaded_bias, float(t.INIT_LOGIT_BIAS), "bias", notes)
    if mean_std is None:
        preprocess, norm = nn.Identity(), "as INPUT.PIXEL_MEAN / STD (random-init towers)"
    else:
        preprocess = ClipInput(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, mean_std[0],
                               mean_std[1], size, "bicubic")
        norm = f"mapped to the tower's mean {list(mean_std[0])} / std {list(mean_std[1])}"
    if isinstance(image, OpenClipImageTower):
        grid = image.grid
    else:
        patch = int(image.vision.embeddings.patch_size)
        grid = (size[0] // patch, size[1] // patch)
    scales = {"image_tower.": float(t.IMAGE_LR_SCALE), "text_tower.": float(t.TEXT_LR_SCALE),
              "logit_scale": float(t.LOGIT_LR_SCALE)}
    if bias is not None:
        scales["logit_bias"] = float(t.LOGIT_LR_SCALE)
    id_classes = 0
    if "id" in cfg.LOSS.NAMES:
        if num_classes < 1:
            raise ValueError("LOSS.NAMES has 'id' (the cross-modal ID loss) but the number of "
                             "training identities is unknown (num_classes 0)")
        id_classes = int(num_classes)
        scales["id_head."] = float(t.ID_LR_SCALE)
    mlm_head = None
    if "mlm" in cfg.LOSS.NAMES:
        mlm_head = build_mlm_head(cfg, _feature_dim(image), text)
        scales["mlm_head."] = float(cfg.LOSS.MLM.LR_SCALE)
    ss_hidden = int(cfg.LOSS.SS.HIDDEN_DIM) if "ss" in cfg.LOSS.NAMES else 0
    embed_dim = _feature_dim(image)
    tgmim = build_tgmim_head(cfg, image, text, grid, embed_dim) if cfg.LOSS.TGMIM.ENABLE else None
    model = DualEncoder(image, text, preprocess, embed_dim=embed_dim,
                        context_length=length, image_grid=grid, logit_scale=scale,
                        logit_bias=bias, lr_scales=scales, family=t.FAMILY,
                        num_classes=id_classes, mlm_head=mlm_head, ss_hidden=ss_hidden,
                        tgmim=tgmim)
    logger.info("Dual encoder (MODEL.TASK 'tbps'): %s; input %dx%d, grid %dx%d, images %s; "
                "captions of %d tokens; D %d; logit scale %.4g%s%s; LR scales %s", desc, size[0],
                size[1], grid[0], grid[1], norm, length, model.embed_dim, math.exp(scale),
                f", bias {bias:.4g}" if bias is not None else "",
                f" ({'; '.join(notes)})" if notes else "", scales)
    if tgmim is not None:
        logger.info("TG-MIM head on the image tower (training only): grid %dx%d, stride %d, mask "
                    "token %d-d, tokens %d-d attend to %d-d caption tokens, target batch['img'] "
                    "(INPUT-normalised)", grid[0], grid[1], tgmim.stride,
                    tgmim.mask_token.shape[-1], embed_dim, tgmim.text_proj.in_features)
    if lora and t.LORA.ENABLE:
        apply_lora(model, cfg)
    return model


def build_mlm_head(cfg, width: int, text_tower: nn.Module) -> IRRHead:
    """IRRA's IRR head for a dual encoder of token width ``width`` (LOSS.MLM.HEADS, 0 = IRRA's
    width / 64, at least 1; LOSS.MLM.LAYERS) predicting the text tower's vocabulary."""
    m = cfg.LOSS.MLM
    heads = int(m.HEADS) or max(1, width // 64)
    if width % heads:
        raise ValueError(f"LOSS.MLM.HEADS {m.HEADS} does not divide the dual encoder's token "
                         f"width {width}: use a divisor, or 0 for IRRA's width / 64")
    return IRRHead(width, _text_vocab_size(text_tower), heads=heads, layers=int(m.LAYERS))


def _text_vocab_size(tower: nn.Module) -> int:
    """The number of token ids the text tower embeds."""
    if isinstance(tower, OpenClipTextTower):
        return int(tower.text.token_embedding.num_embeddings)
    return int(tower.text.embeddings.token_embedding.num_embeddings)


def _text_token_dim(tower: nn.Module) -> int:
    """Width of the text tower's ``txt_tokens`` (after its projection, if any)."""
    if isinstance(tower, OpenClipTextTower):
        proj = tower.text.text_projection
        if proj is None:
            return int(tower.text.width)
        return int(proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])
    return int(tower.text.head.out_features)


def build_tgmim_head(cfg, image: nn.Module, text: nn.Module, grid: Sequence[int],
                     embed_dim: int) -> TGMIMHead:
    """The TG-MIM head of the dual encoder (LOSS.TGMIM.*; model/tgmim.py): grid = the image
    tower's patch grid, stride = its (square) patch size, a mask token of the patch-embedding
    width, queries = ``img_tokens`` (embed_dim), keys / values = ``txt_tokens`` (the text
    tower's token width). Every image tower of the dual encoder (open_clip ViT, HF SigLIP ViT,
    their tiny forms) has a masked forward; anything else is an error."""
    if not hasattr(image, "forward_masked"):
        raise ValueError(f"LOSS.TGMIM.ENABLE True: the image tower {type(image).__name__} has no "
                         "masked forward (TG-MIM runs on the open_clip ViT and HF SigLIP ViT "
                         "towers); set LOSS.TGMIM.ENABLE False")
    ph, pw = image.patch_size
    if ph != pw:
        raise ValueError(f"LOSS.TGMIM.ENABLE True: TG-MIM decodes square stride cells; the image "
                         f"tower's patch {[ph, pw]} is not square")
    g = cfg.LOSS.TGMIM
    return TGMIMHead(embed_dim, _text_token_dim(text), tuple(grid), ph,
                     decoder_dim=g.DECODER_DIM, heads=g.HEADS, mask_ratio=g.MASK_RATIO,
                     mask_mode=g.MASK_MODE, mask_dim=int(image.patch_embed.out_channels))


def _feature_dim(tower: nn.Module) -> int:
    """D of img_feat, read from the image tower."""
    if isinstance(tower, OpenClipImageTower):
        return int(tower.visual.output_dim)
    return int(tower.vision.config.hidden_size)
