"""LoRA on the dual encoder's towers, through the peft package (MODEL.TBPS.LORA).

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"; peft's
``LoraConfig`` / ``inject_adapter_in_model``): an adapted ``nn.Linear`` computes

    y = W x + b + (ALPHA / RANK) * B A dropout(x),

W and b frozen, A (RANK x in; Kaiming-uniform) and B (out x RANK; zeros) trained, so the adapted
model starts as the base model. The adaptation is peft's own LoRA layer; this module only says
which layers it wraps, and merges them for checkpoints.

What is adapted, in every transformer block of each tower in TOWERS (TARGETS: 'q', 'k', 'v',
'out', 'mlp'):

- ``hf_siglip`` (transformers ``SiglipVisionModel`` / ``SiglipTextModel``): the attention's
  ``q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj`` Linear layers and, with 'mlp', the MLP's
  ``fc1`` / ``fc2`` of ``encoder.layers.<i>``. Not adapted: the vision tower's attention-pooling
  head (its own ``nn.MultiheadAttention`` and MLP), the text ``head`` projection, embeddings and
  LayerNorms.
- ``open_clip`` (open_clip ``VisionTransformer`` / ``TextTransformer``): the blocks
  ``transformer.resblocks.<i>`` hold an ``nn.MultiheadAttention`` whose query / key / value
  weights are the three row blocks of one ``in_proj_weight`` (3d x d) and whose output projection
  ``out_proj`` is an ``nn.Linear`` whose ``forward`` is never called (the attention reads
  ``out_proj.weight`` directly). Neither route through it is correct with peft 0.21.2:
  targeting ``out_proj`` as a Linear leaves the adapter silently unused, and peft's LoRA
  ``MultiheadAttention`` layer (which adapts in_proj and out_proj only together, one A / B for
  the fused q / k / v) adds the out_proj delta twice in its forward (W + 2 dW) while the
  gradient sees it once (checked with 0.21.2; huggingface/peft pull request 3774, not in this
  release) and, by merging before and unmerging after every forward, rewrites the frozen W as
  (W + dW) - dW, which is not W in floating point. So each block's ``nn.MultiheadAttention`` is first re-expressed as
  :class:`SeparateProjectionAttention`: the same attention with ``q_proj`` / ``k_proj`` /
  ``v_proj`` / ``out_proj`` as four ``nn.Linear`` layers holding the rows of ``in_proj_weight``
  / ``in_proj_bias`` and ``out_proj`` (its outputs equal ``nn.MultiheadAttention``'s up to float
  rounding: ``F.scaled_dot_product_attention`` on separately projected q, k, v). peft then wraps
  those Linear layers exactly as for hf_siglip; 'mlp' adapts ``mlp.c_fc`` / ``mlp.c_proj``. Not
  adapted: ``conv1`` / embeddings, ``ln_*``, ``proj`` / ``text_projection``.

Trainable parameters: in the towers, LoRA's A and B only (every other tower parameter has
``requires_grad`` False; a tower not in TOWERS is frozen whole). Outside the towers the logit
scale / bias and the ID head train as without LoRA. The optimiser (solver/make_optimizer.py)
gives a tower's LoRA parameters its LR scale ('image_tower.' / 'text_tower.' prefixes) and no
weight decay (``DualEncoder.no_weight_decay``: :func:`is_lora_parameter`).

Checkpoints (processor/processor.py ``Trainer.save``):

- ``transformer_<epoch>.pth`` holds :func:`merged_state_dict`: a copy of the model with every
  adapter merged by peft (W + (ALPHA / RANK) B A) and open_clip's attention put back as
  ``nn.MultiheadAttention``, i.e. the plain (non-LoRA) key layout, with ``meta['lora_merged']``
  True. test.py builds the dual encoder without adapters (``build_dual_encoder(..., lora=False)``)
  and loads it strictly: no peft at test time, and the features are those of the LoRA model
  (up to float rounding of the merge and, for open_clip, of the attention form). A merged file
  also serves MODEL.PRETRAIN_CHOICE 'self' (loaded into the plain towers, then new adapters go
  on top: ``model.make_model.make_tbps_model``).
- ``resume.pth`` holds the live model (base weights and A / B under peft's key names, e.g.
  ``...q_proj.base_layer.weight`` and ``...q_proj.lora_A.default.weight``) and the optimiser
  state of A / B, so a resumed run continues exactly: the base weights never change.
"""
from __future__ import annotations

import copy
import logging
import re
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.packages import import_peft

logger = logging.getLogger("phasereid")

#: module name of a transformer block inside a tower, per family (a regex)
BLOCK_PATTERNS = {"open_clip": r"transformer\.resblocks\.\d+",
                  "hf_siglip": r"encoder\.layers\.\d+"}
#: MODEL.TBPS.LORA.TARGETS entry -> the Linear layers it names inside a block, per family
TARGET_MODULES = {
    "open_clip": {"q": ("attn.q_proj",), "k": ("attn.k_proj",), "v": ("attn.v_proj",),
                  "out": ("attn.out_proj",), "mlp": ("mlp.c_fc", "mlp.c_proj")},
    "hf_siglip": {"q": ("self_attn.q_proj",), "k": ("self_attn.k_proj",),
                  "v": ("self_attn.v_proj",), "out": ("self_attn.out_proj",),
                  "mlp": ("mlp.fc1", "mlp.fc2")},
}
_PURPOSE = "MODEL.TBPS.LORA.ENABLE True (LoRA on the dual encoder's towers)"


def is_lora_parameter(name: str) -> bool:
    """True for the name of a LoRA A or B weight (peft's ``<layer>.lora_A.<adapter>.weight``)."""
    return ".lora_A." in name or ".lora_B." in name


def has_lora(model: nn.Module) -> bool:
    """Whether ``model`` carries LoRA adapters (any :func:`is_lora_parameter`)."""
    return any(is_lora_parameter(name) for name, _ in model.named_parameters())


def target_pattern(family: str, targets: Sequence[str]) -> str:
    """The regex peft matches (``re.fullmatch``) against module names inside a tower: the
    TARGETS layers of every transformer block of ``family``."""
    if family not in TARGET_MODULES:
        raise ValueError(f"LoRA: no target modules known for MODEL.TBPS.FAMILY '{family}' "
                         f"(known: {list(TARGET_MODULES)})")
    names = [n for t in targets for n in TARGET_MODULES[family][t]]
    alternatives = "|".join(re.escape(n) for n in names)
    return rf"(?:.*\.)?{BLOCK_PATTERNS[family]}\.(?:{alternatives})"


# --------------------------------------------------------------------------------------------
# open_clip's attention with separate projections
# --------------------------------------------------------------------------------------------
class SeparateProjectionAttention(nn.Module):
    """``nn.MultiheadAttention`` (same embedding size for q / k / v, no ``bias_k`` / ``bias_v``,
    no zero attention, no dropout) with its projections as four ``nn.Linear`` layers, so that
    peft can adapt each one (module docstring). Per head h (d_h = d / heads):

        out = out_proj(concat_h softmax(q_h k_h^T / sqrt(d_h) + mask) v_h),
        q = q_proj(query), k = k_proj(key), v = v_proj(value),

    with q_proj / k_proj / v_proj the row blocks [0, d), [d, 2d), [2d, 3d) of ``in_proj_weight``
    and ``in_proj_bias``. ``attn_mask`` follows ``nn.MultiheadAttention``: (L, S) or
    (B * heads, L, S), float (added) or bool (True = not attended). Outputs equal
    ``nn.MultiheadAttention``'s up to float rounding; :meth:`to_multihead` gives the
    ``nn.MultiheadAttention`` with the same weights back.

    Example:
        >>> attn = SeparateProjectionAttention.from_multihead(block.attn)
        >>> y, _ = attn(x, x, x, need_weights=False)
    """

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True,
                 batch_first: bool = True, device=None, dtype=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by {num_heads} heads")
        kw = dict(bias=bias, device=device, dtype=dtype)
        self.embed_dim, self.num_heads, self.batch_first = embed_dim, num_heads, batch_first
        self.q_proj = nn.Linear(embed_dim, embed_dim, **kw)
        self.k_proj = nn.Linear(embed_dim, embed_dim, **kw)
        self.v_proj = nn.Linear(embed_dim, embed_dim, **kw)
        self.out_proj = nn.Linear(embed_dim, embed_dim, **kw)

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> "SeparateProjectionAttention":
        """The same attention as ``mha``, its weights copied (an error for a configuration this
        class does not compute)."""
        unsupported = [what for what, bad in (
            ("separate q / k / v sizes (kdim / vdim)", not mha._qkv_same_embed_dim),
            ("bias_k / bias_v", mha.bias_k is not None),
            ("add_zero_attn", mha.add_zero_attn),
            (f"attention dropout {mha.dropout}", mha.dropout != 0)) if bad]
        if unsupported:
            raise ValueError("LoRA on open_clip: cannot re-express an nn.MultiheadAttention with "
                             f"{', '.join(unsupported)}")
        weight = mha.in_proj_weight
        bias = mha.in_proj_bias
        new = cls(mha.embed_dim, mha.num_heads, bias=bias is not None,
                  batch_first=mha.batch_first, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            for i, proj in enumerate((new.q_proj, new.k_proj, new.v_proj)):
                rows = slice(i * mha.embed_dim, (i + 1) * mha.embed_dim)
                proj.weight.copy_(weight[rows])
                if bias is not None:
                    proj.bias.copy_(bias[rows])
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if bias is not None:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        return new.requires_grad_(weight.requires_grad)

    def to_multihead(self) -> nn.MultiheadAttention:
        """The ``nn.MultiheadAttention`` with these weights (``in_proj_weight`` = q; k; v rows)."""
        weight = self.q_proj.weight
        bias = self.q_proj.bias is not None
        mha = nn.MultiheadAttention(self.embed_dim, self.num_heads, bias=bias,
                                    batch_first=self.batch_first, device=weight.device,
                                    dtype=weight.dtype)
        projections = (self.q_proj, self.k_proj, self.v_proj)
        with torch.no_grad():
            mha.in_proj_weight.copy_(torch.cat([p.weight for p in projections]))
            mha.out_proj.weight.copy_(self.out_proj.weight)
            if bias:
                mha.in_proj_bias.copy_(torch.cat([p.bias for p in projections]))
                mha.out_proj.bias.copy_(self.out_proj.bias)
        return mha.requires_grad_(weight.requires_grad)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None, need_weights: bool = True,
                attn_mask: Optional[torch.Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False):
        """``nn.MultiheadAttention.forward``'s signature; returns (output, None)."""
        if need_weights or key_padding_mask is not None or is_causal:
            raise ValueError("SeparateProjectionAttention computes the attention output only "
                             "(need_weights False, no key_padding_mask, no is_causal: give the "
                             "causal mask as attn_mask, as open_clip does)")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, length, heads = query.shape[0], query.shape[1], self.num_heads
        q, k, v = (proj(x).unflatten(-1, (heads, -1)).transpose(1, 2)
                   for proj, x in ((self.q_proj, query), (self.k_proj, key),
                                   (self.v_proj, value)))
        mask = attn_mask
        if mask is not None:
            if mask.dtype == torch.bool:   # nn.MultiheadAttention: True = not attended
                mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                    mask, float("-inf"))
            if mask.dim() == 3:
                mask = mask.view(batch, heads, length, -1)
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        return (out if self.batch_first else out.transpose(0, 1)), None


def split_open_clip_attention_(tower: nn.Module) -> int:
    """Replace the ``nn.MultiheadAttention`` of every block ``transformer.resblocks.<i>`` under
    ``tower`` by :class:`SeparateProjectionAttention` (in place); returns how many."""
    block = re.compile(rf"(?:.*\.)?{BLOCK_PATTERNS['open_clip']}")
    count = 0
    for name, module in tower.named_modules():
        if not block.fullmatch(name):
            continue
        if not isinstance(getattr(module, "attn", None), nn.MultiheadAttention):
            raise ValueError(f"LoRA on open_clip: block '{name}' has attention "
                             f"{type(getattr(module, 'attn', None)).__name__}, not "
                             "nn.MultiheadAttention (open_clip's default ResidualAttentionBlock)")
        module.attn = SeparateProjectionAttention.from_multihead(module.attn)
        count += 1
    return count


# --------------------------------------------------------------------------------------------
# applying and merging
# --------------------------------------------------------------------------------------------
def _towers(model: nn.Module) -> Dict[str, nn.Module]:
    return {"image": model.image_tower, "text": model.text_tower}


def apply_lora(model: nn.Module, cfg) -> str:
    """Put peft LoRA adapters on the dual encoder's towers per MODEL.TBPS.LORA (module
    docstring), in place: the towers' own parameters frozen, A / B trainable. Logs and returns
    what was done, with the trainable and total parameter counts.

    Args:
        model: a ``model.dual_encoder.DualEncoder`` (its ``image_tower`` / ``text_tower``).
        cfg: the config (MODEL.TBPS.FAMILY, MODEL.TBPS.LORA.*).

    Raises:
        ImportError: peft is not installed (the message says how to install it).
        ValueError: a tower without the layers the family's targets name.
    """
    t = cfg.MODEL.TBPS
    lora = t.LORA
    peft = import_peft(_PURPOSE)
    towers = _towers(model)
    for tower in towers.values():
        tower.requires_grad_(False)
    pattern = target_pattern(t.FAMILY, lora.TARGETS)
    adapted = {}
    for name in lora.TOWERS:
        tower = towers[name]
        if t.FAMILY == "open_clip":
            split_open_clip_attention_(tower)
        config = peft.LoraConfig(r=int(lora.RANK), lora_alpha=float(lora.ALPHA),
                                 lora_dropout=float(lora.DROPOUT), target_modules=pattern,
                                 bias="none")
        try:
            peft.inject_adapter_in_model(config, tower)
        except ValueError as exc:
            raise ValueError(f"MODEL.TBPS.LORA.TARGETS {list(lora.TARGETS)} found no layer to "
                             f"adapt in the {name} tower ({t.FAMILY}): {exc}") from None
        adapted[name] = sum(1 for n, _ in tower.named_parameters() if ".lora_A." in n)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    text = (f"LoRA (peft {peft.__version__}): rank {lora.RANK}, alpha {lora.ALPHA:g} (scale "
            f"{lora.ALPHA / lora.RANK:g}), dropout {lora.DROPOUT:g}, targets "
            f"{list(lora.TARGETS)}; adapted Linear layers: "
            + ", ".join(f"{n} tower {c}" for n, c in adapted.items())
            + "".join(f"; {n} tower frozen" for n in towers if n not in adapted)
            + f"; trainable parameters {trainable:,} of {total:,} "
              f"({100.0 * trainable / total:.2f}%)")
    logger.info("%s", text)
    return text


def merge_lora_(module: nn.Module) -> int:
    """Merge every peft LoRA layer under ``module`` into its base layer (peft's ``merge`` with
    ``safe_merge``: W + (ALPHA / RANK) B A, an error if not finite) and put the base layer in its
    place, then turn every :class:`SeparateProjectionAttention` back into
    ``nn.MultiheadAttention``: the plain layout, in place. Returns the number of merged layers."""
    import_peft("merging LoRA adapters")
    from peft.tuners.tuners_utils import BaseTunerLayer
    layers = [(name, m) for name, m in module.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in layers:
        parent_name, _, child = name.rpartition(".")
        layer.merge(safe_merge=True)
        setattr(module.get_submodule(parent_name), child, layer.get_base_layer())
    attentions = [name for name, m in module.named_modules()
                  if isinstance(m, SeparateProjectionAttention)]
    for name in attentions:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).to_multihead())
    return len(layers)


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The state dict of a copy of ``model`` with its LoRA merged (:func:`merge_lora_`): the key
    layout of the same model built without LoRA. ``model`` itself is left as it is (the copy
    costs one model's memory, on its device, while the checkpoint is written)."""
    plain = copy.deepcopy(model)
    merge_lora_(plain)
    return plain.state_dict()
