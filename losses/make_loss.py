"""Compose the training loss from named components (fast-reid style).

total = sum over active components of w_name * L_name, where each component is a small pure
function of the model output dict and the batch dict. Every component value is returned by
name so the processor logs each one (console, tensorboard).

Components (LOSS.NAMES):
- 'id':      label-smoothed CE on ``logits``; with JPM, 0.5 * CE(global) + 0.5 * mean_k
             CE(local_k), as TransReID.
- 'triplet': batch-hard triplet on LOSS.TRIPLET.FEAT_SRC ('pre_bn' -> ``feat``, 'bnneck' ->
             ``feat_bn``); with JPM, 0.5 * global + 0.5 * mean_k local_k, as TransReID.
- 'center':  center loss on the pre-BN global feature (its centres have their own optimiser).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from .center import CenterLoss
from .softmax_ce import cross_entropy_label_smooth
from .triplet import triplet_loss

KNOWN_LOSSES = ("id", "triplet", "center")

# which model branch produces each output key (for the error message)
_BRANCH_OF = {
    "logits": "the classifier (model in training mode)",
    "local_feats": "JPM (MODEL.JPM True)",
    "local_feats_bn": "JPM (MODEL.JPM True)",
    "local_logits": "JPM (MODEL.JPM True)",
}


def output_key(outputs: dict, key: str, loss: str) -> torch.Tensor:
    """``outputs[key]``, or an error naming the branch that produces it."""
    if key not in outputs:
        branch = _BRANCH_OF.get(key, "the model")
        raise KeyError(f"loss '{loss}' needs model output '{key}', produced by {branch}; "
                       f"the model returned {sorted(outputs)}")
    return outputs[key]


def feature_keys(feat_src: str) -> Tuple[str, str]:
    """(global key, local key) for a FEAT_SRC value."""
    if feat_src == "pre_bn":
        return "feat", "local_feats"
    if feat_src == "bnneck":
        return "feat_bn", "local_feats_bn"
    raise ValueError(f"FEAT_SRC '{feat_src}' is not 'pre_bn' or 'bnneck'")


def global_and_local(fn, outputs: dict, key: str, local_key: str, loss: str) -> torch.Tensor:
    """fn(global) or, when the model has JPM local outputs, 0.5 fn(global) + 0.5 mean_k fn(local_k)."""
    value = fn(output_key(outputs, key, loss))
    if local_key in outputs:
        local = torch.stack([fn(x) for x in outputs[local_key]]).mean()
        value = 0.5 * value + 0.5 * local
    return value


class LossComposer(nn.Module):
    """Named loss components with weights.

    Args:
        cfg: the config (LOSS.*).
        num_classes: training identities (center loss).
        feat_dim: global feature size (center loss).

    Call: ``total, parts = composer(outputs, batch, weights=None)`` where ``parts`` maps each
    active component name to its (unweighted, detached) value and ``weights`` (name -> w)
    overrides LOSS.<NAME>.W, e.g. from the phase plan. A component with weight 0 is skipped.
    """

    def __init__(self, cfg, num_classes: int, feat_dim: int):
        super().__init__()
        unknown = [n for n in cfg.LOSS.NAMES if n not in KNOWN_LOSSES]
        if unknown:
            raise ValueError(f"LOSS.NAMES has unknown losses {unknown}; known: {KNOWN_LOSSES}")
        self.cfg = cfg.LOSS
        self.names = list(cfg.LOSS.NAMES)
        self.weights = {name: float(cfg.LOSS[name.upper()].W) for name in self.names}
        self.center = CenterLoss(num_classes, feat_dim) if "center" in self.names else None

    def component(self, name: str, outputs: dict, batch: dict) -> torch.Tensor:
        pids = batch["pid"]
        if name == "id":
            eps = self.cfg.ID.LABEL_SMOOTH
            return global_and_local(lambda z: cross_entropy_label_smooth(z, pids, eps),
                                    outputs, "logits", "local_logits", name)
        if name == "triplet":
            c = self.cfg.TRIPLET
            key, local_key = feature_keys(c.FEAT_SRC)
            return global_and_local(
                lambda f: triplet_loss(f, pids, c.MARGIN, c.SOFT_MARGIN, c.NORM_FEAT),
                outputs, key, local_key, name)
        if name == "center":
            return self.center(output_key(outputs, "feat", name), pids)
        raise ValueError(f"unknown loss component '{name}'")

    def forward(self, outputs: dict, batch: dict,
                weights: Optional[Dict[str, float]] = None) -> Tuple[torch.Tensor, Dict[str, float]]:
        weights = self.weights if weights is None else weights
        total = None
        parts: Dict[str, torch.Tensor] = {}
        for name in self.names:
            w = weights.get(name, 0.0)
            if w == 0.0:
                continue
            value = self.component(name, outputs, batch)
            parts[name] = value.detach()
            total = w * value if total is None else total + w * value
        if total is None:
            raise ValueError("every loss component has weight 0: nothing to train")
        return total, parts


def make_loss(cfg, num_classes: int, feat_dim: int) -> LossComposer:
    """The loss composer for a config (see :class:`LossComposer`)."""
    return LossComposer(cfg, num_classes, feat_dim)
