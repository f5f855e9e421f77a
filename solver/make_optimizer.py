"""Optimiser with TransReID-style parameter groups.

For every trainable parameter: lr = BASE_LR * scale * (BIAS_LR_FACTOR for biases), where scale
is the factor of the longest prefix matching the parameter name (1 if none) among SOLVER.LR_SCALES
and the scales the model itself requires (``model.lr_scales()``, e.g. a trained HF CLIP tower at
MODEL.CLIP_LR_SCALE; an explicit SOLVER.LR_SCALES entry wins for the same prefix);
weight decay = WEIGHT_DECAY, or 0 for biases, normalisation weights and the token/position/SIE
embeddings when SOLVER.NO_DECAY_BIAS_NORM is True, and 0 always for the parameters the model names
in its ``no_weight_decay()`` (the dual encoder's LoRA A / B weights, model/lora.py). Parameters
with the same (scale, decay) share one group; each group keeps its ``lr_scale`` so the scheduler
can set lr = base(epoch) * scale.
SOLVER.FUSED_OPTIMIZER selects torch's fused kernel of the same optimizer (``fused=True``).
The center-loss centres get their own SGD (LOSS.CENTER.LR), as reid-strong-baseline.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

import torch

from configs.validate import OPTIMIZERS

_NO_DECAY_NAMES = ("cls_token", "pos_embed", "dist_token", "sie_embed")


def parse_lr_scales(entries: List[str]) -> Dict[str, float]:
    """['classifier=10', ...] -> {'classifier': 10.0}; malformed entries are an error."""
    scales = {}
    for entry in entries:
        prefix, sep, value = entry.partition("=")
        try:
            if not sep or not prefix:
                raise ValueError
            scales[prefix.strip()] = float(value)
        except ValueError:
            raise ValueError(f"SOLVER.LR_SCALES entry '{entry}' is not 'prefix=scale'") from None
    return scales


def lr_scale_of(name: str, scales: Dict[str, float]) -> float:
    matches = [p for p in scales if name.startswith(p)]
    return scales[max(matches, key=len)] if matches else 1.0


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or any(t in name for t in _NO_DECAY_NAMES)


def model_lr_scales(model: torch.nn.Module) -> Dict[str, float]:
    """The prefix -> scale map a model requires (its ``lr_scales()``; {} without one). A DDP
    wrapper is unwrapped."""
    net = model.module if hasattr(model, "module") else model
    own = getattr(net, "lr_scales", None)
    return dict(own()) if callable(own) else {}


def model_no_weight_decay(model: torch.nn.Module) -> Set[str]:
    """The parameter names a model excludes from weight decay (its ``no_weight_decay()``; an
    empty set without one). A DDP wrapper is unwrapped."""
    net = model.module if hasattr(model, "module") else model
    own = getattr(net, "no_weight_decay", None)
    return set(own()) if callable(own) else set()


def param_groups(cfg, model: torch.nn.Module) -> List[dict]:
    s = cfg.SOLVER
    net = model.module if hasattr(model, "module") else model   # names without 'module.'
    explicit = parse_lr_scales(list(s.LR_SCALES))
    unused = [p for p in explicit if not any(n.startswith(p) for n, _ in net.named_parameters())]
    if unused:
        raise ValueError(f"SOLVER.LR_SCALES prefixes {unused} match no parameter of the model")
    scales = {**model_lr_scales(net), **explicit}
    never_decayed = model_no_weight_decay(net)
    groups: Dict[Tuple[float, float], List[torch.Tensor]] = {}
    for name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        scale = lr_scale_of(name, scales)
        if name.endswith(".bias"):
            scale *= s.BIAS_LR_FACTOR
        no_decay = name in never_decayed or (s.NO_DECAY_BIAS_NORM and is_no_decay(name, param))
        decay = 0.0 if no_decay else s.WEIGHT_DECAY
        groups.setdefault((scale, decay), []).append(param)
    return [{"params": params, "lr": s.BASE_LR * scale, "lr_scale": scale, "weight_decay": decay}
            for (scale, decay), params in groups.items()]


def make_optimizer(cfg, model: torch.nn.Module, center_loss: Optional[torch.nn.Module] = None):
    """(optimizer, center_optimizer or None) for SOLVER.OPTIMIZER_NAME 'SGD' | 'Adam' | 'AdamW'."""
    s = cfg.SOLVER
    groups = param_groups(cfg, model)
    fused = {"fused": True} if s.FUSED_OPTIMIZER else {}
    if s.OPTIMIZER_NAME == "SGD":
        optimizer = torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM, **fused)
    elif s.OPTIMIZER_NAME == "Adam":
        optimizer = torch.optim.Adam(groups, lr=s.BASE_LR, **fused)
    elif s.OPTIMIZER_NAME == "AdamW":
        optimizer = torch.optim.AdamW(groups, lr=s.BASE_LR, **fused)
    else:
        raise ValueError(f"SOLVER.OPTIMIZER_NAME '{s.OPTIMIZER_NAME}' is not one of "
                         f"{list(OPTIMIZERS)}")
    center_optimizer = None
    if center_loss is not None:
        center_optimizer = torch.optim.SGD(center_loss.parameters(), lr=cfg.LOSS.CENTER.LR)
    return optimizer, center_optimizer
