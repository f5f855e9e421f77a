"""Batch-hard triplet loss with masked mining.

Reference: reid-strong-baseline / TransReID ``TripletLoss`` (Hermans et al. 2017): Euclidean
distance d = sqrt(clamp(|x|^2 + |y|^2 - 2 x.y, 1e-12)); for every anchor the hardest positive
d_ap = max over same-pid samples and the hardest negative d_an = min over other pids; loss =
mean max(0, d_ap - d_an + m) or, with the soft margin, mean log(1 + exp(d_ap - d_an)).

Deliberate difference: the reference reshapes the masked distances to (N, -1), which requires
the same number of positives for every anchor. Here mining is masked, so anchors may have
unequal numbers of positives (brightness routing, cross-camera positives, P x K with
replacement); the anchor itself is not its own positive, and anchors without a positive or
without a negative are excluded from the mean (reported by ``valid``).
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .masks import pid_masks


class TripletTerms(NamedTuple):
    """Per-anchor terms of a batch-hard triplet loss."""

    loss: torch.Tensor   # (B,) per-anchor loss (0 where not valid)
    valid: torch.Tensor  # (B,) bool, anchor has a positive and a negative
    d_ap: torch.Tensor   # (B,) hardest-positive distance (detached)
    d_an: torch.Tensor   # (B,) hardest-negative distance (detached)


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sqrt(clamp(|x|^2 + |y|^2 - 2 x.y, min=1e-12)), as in the reference implementations."""
    xx = x.pow(2).sum(1, keepdim=True)
    yy = y.pow(2).sum(1, keepdim=True).t()
    return (xx + yy - 2.0 * x @ y.t()).clamp(min=1e-12).sqrt()


def batch_hard_terms(feats: torch.Tensor, pids: torch.Tensor, margin: float = 0.3,
                     soft_margin: bool = False, norm_feat: bool = False) -> TripletTerms:
    """Per-anchor batch-hard triplet terms (see the module docstring)."""
    x = F.normalize(feats.float(), dim=1) if norm_feat else feats.float()
    dist = euclidean_dist(x, x)
    masks = pid_masks(pids)
    pos_mask, neg_mask = masks.pos, masks.neg
    valid = pos_mask.any(1) & neg_mask.any(1)
    d_ap = dist.masked_fill(~pos_mask, float("-inf")).max(1).values
    d_an = dist.masked_fill(~neg_mask, float("inf")).min(1).values
    diff = torch.where(valid, d_ap - d_an, torch.zeros_like(d_ap))
    loss = F.softplus(diff) if soft_margin else F.relu(diff + margin)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return TripletTerms(loss, valid, d_ap.detach(), d_an.detach())


def triplet_loss(feats: torch.Tensor, pids: torch.Tensor, margin: float = 0.3,
                 soft_margin: bool = False, norm_feat: bool = False) -> torch.Tensor:
    """Mean batch-hard triplet loss over valid anchors (0 when no anchor is valid).

    Args:
        feats: (B, D) features.
        pids: (B,) identity labels.
        margin: hinge margin m (ignored with soft_margin).
        soft_margin: use log(1 + exp(d_ap - d_an)) instead of the hinge.
        norm_feat: L2-normalise the features first.

    Example:
        >>> triplet_loss(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), 0.3)
    """
    terms = batch_hard_terms(feats, pids, margin, soft_margin, norm_feat)
    count = terms.valid.sum()
    if count == 0:
        return feats.sum() * 0.0
    return terms.loss.sum() / count
