"""IRRA's implicit relation reasoning (IRR) loss: cross-entropy of masked-token prediction.

Reference: IRRA ``model/objectives.py`` ``compute_mcm_or_mlm`` (``F.cross_entropy(scores,
labels, ignore_index=0)``, mean over the targets) on the IRR head's logits (model/mlm.py) and
the masking's labels (datasets/mlm.py: the original id at chosen positions, 0 elsewhere):

    L = (1 / |T|) sum_{(b, l) in T} -log softmax(z_bl)[y_bl],   T = {(b, l) : y_bl != 0}

over the local batch (a per-token mean, never gathered). IRRA weighs it 1. A batch without any
target (every caption empty) gives 0 with a zero gradient, where ``F.cross_entropy`` would give
NaN. ``mlm_accuracy`` is IRRA's logged ``mlm_acc``: the share of targets whose arg-max logit is
the label.

Precision: float64 logits are kept (the tests use it); any other dtype is computed in float32,
as IRRA casts the scores with ``.float()``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: the label of positions that are not targets (datasets/mlm.py)
IGNORE_LABEL = 0


def _flat(logits: torch.Tensor, labels: torch.Tensor):
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"mlm logits {tuple(logits.shape)} do not fit labels "
                         f"{tuple(labels.shape)}: expected (..., V) and (...)")
    z = logits.reshape(-1, logits.shape[-1])
    y = labels.reshape(-1).to(z.device).long()
    if (y < 0).any() or (y >= z.shape[1]).any():
        raise ValueError(f"mlm labels outside the vocabulary 0..{z.shape[1] - 1}")
    return z, y


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions with a label != 0 (module docstring).

    Args:
        logits: (B, L, V) vocabulary logits of the IRR head (``mlm_logits``).
        labels: (B, L) int ids, 0 = not a target (``mlm_labels``).

    Returns:
        A scalar (float32, or float64 for float64 logits).
    """
    z, y = _flat(logits, labels)
    if z.dtype != torch.float64:
        z = z.float()
    targets = y != IGNORE_LABEL
    if not targets.any():
        return z.sum() * 0.0
    with torch.autocast(z.device.type, enabled=False):
        return F.cross_entropy(z[targets], y[targets])


@torch.no_grad()
def mlm_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of the targets (label != 0) whose arg-max logit is the label (IRRA's ``mlm_acc``);
    0 without targets."""
    z, y = _flat(logits, labels)
    targets = y != IGNORE_LABEL
    if not targets.any():
        return torch.zeros((), device=z.device)
    return (z[targets].argmax(dim=1) == y[targets]).float().mean()
