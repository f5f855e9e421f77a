"""TripletX: top-k averaged, camera-aware, hardness-weighted triplet loss with a soft warm-up.

Reference semantics: the TripletX loss of the "Model B" TransReID extension. For anchor i with
positives P(i) and negatives N(i), on D = euclidean_dist of the (L2-normalised) features:

    P(i)   = same pid, j != i; with camids and cross_cam_pos only other-camera positives,
             falling back to all same-pid j != i when the anchor has no cross-camera positive
    N(i)   = other pids
    D'_ij  = D_ij / same_cam_neg_boost for negatives in the anchor's camera (camids given),
             D_ij otherwise: same-camera negatives look closer, hence harder
    d_ap   = mean of the k_eff largest D_ij over P(i),  d_an = mean of the k_eff smallest D'_ij
             over N(i), with k_eff = min(topk, |set|) per anchor
    w_i    = sigmoid(alpha * (d_ap - d_an))                      (detached hardness weight)
    l_i    = softplus(d_ap - d_an)            while soft_warmup and epoch <= warmup_epochs
             max(0, d_ap - d_an + margin)     afterwards (epoch is 1-based)
    L      = sum_i w_i l_i / sum_i w_i        over valid anchors (w rescaled to mean 1)

Deliberate differences from the reference:
- anchors without a positive or without a negative are not valid (loss 0, weight 0); the
  reference's empty-row fallback is not reproduced (docs/reference_differences.md);
- mining is masked (+-inf fill, top-k over the row, invalid slots masked), so anchors may
  have unequal numbers of positives; no reshape assumes K samples per identity;
- the same-camera boost enters the loss value through D', not only the selection;
- ``TripletXTerms.weight`` is the raw detached sigmoid; the mean-1 rescaling is done only in
  ``tripletx_loss``.
"""
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from .masks import pid_masks
from .triplet import euclidean_dist


class TripletXTerms(NamedTuple):
    """Per-anchor terms of the TripletX loss."""

    loss: torch.Tensor    # (B,) per-anchor loss l_i (0 where not valid)
    weight: torch.Tensor  # (B,) sigmoid(alpha (d_ap - d_an)), detached, not rescaled; 0 if invalid
    valid: torch.Tensor   # (B,) bool, anchor has >= 1 positive and >= 1 negative
    d_ap: torch.Tensor    # (B,) top-k mean positive distance (detached)
    d_an: torch.Tensor    # (B,) top-k mean (boosted) negative distance (detached)


def masked_topk_mean(values: torch.Tensor, mask: torch.Tensor, k: int,
                     largest: bool) -> torch.Tensor:
    """Row-wise mean of the min(k, |mask row|) largest (or smallest) masked values; 0 if empty.

    Masked-out entries are filled with -inf (largest) or +inf (smallest) so top-k never picks
    them while a row still has enough real entries; the slots beyond the row's count are
    dropped with where(), so the infinities never reach the value or the gradient.
    """
    fill = float("-inf") if largest else float("inf")
    k_row = min(k, values.size(1))
    top = values.masked_fill(~mask, fill).topk(k_row, dim=1, largest=largest).values
    count = mask.sum(1, keepdim=True).clamp(max=k_row)
    slots = torch.arange(k_row, device=values.device).view(1, -1) < count
    total = torch.where(slots, top, torch.zeros_like(top)).sum(1)
    return total / count.squeeze(1).clamp(min=1).to(values.dtype)


def tripletx_terms(feats: torch.Tensor, pids: torch.Tensor,
                   camids: Optional[torch.Tensor] = None, *, epoch: int, margin: float = 0.3,
                   soft_warmup: bool = True, warmup_epochs: int = 10, topk: int = 5,
                   norm_feat: bool = True, cross_cam_pos: bool = True,
                   same_cam_neg_boost: float = 1.2, alpha: float = 2.0) -> TripletXTerms:
    """Per-anchor TripletX terms (see the module docstring; ``epoch`` is 1-based)."""
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    x = feats if feats.dtype == torch.float64 else feats.float()
    if norm_feat:
        x = F.normalize(x, dim=1)
    dist = euclidean_dist(x, x)

    masks = pid_masks(pids, camids)
    pos_mask, neg_mask = masks.pos, masks.neg
    neg_dist = dist
    if camids is not None:
        same_cam = masks.same_cam
        if cross_cam_pos:
            cross = pos_mask & ~same_cam
            # an anchor whose positives all share its camera keeps them rather than none
            pos_mask = torch.where(cross.any(1, keepdim=True), cross, pos_mask)
        boost = torch.where(neg_mask & same_cam, torch.full_like(dist, same_cam_neg_boost),
                            torch.ones_like(dist))
        neg_dist = dist / boost

    valid = pos_mask.any(1) & neg_mask.any(1)
    d_ap = masked_topk_mean(dist, pos_mask, topk, largest=True)
    d_an = masked_topk_mean(neg_dist, neg_mask, topk, largest=False)
    diff = torch.where(valid, d_ap - d_an, torch.zeros_like(d_ap))

    zero = torch.zeros_like(diff)
    weight = torch.where(valid, torch.sigmoid(alpha * diff.detach()), zero)
    soft = soft_warmup and epoch <= warmup_epochs
    loss = F.softplus(diff) if soft else F.relu(diff + margin)
    loss = torch.where(valid, loss, zero)
    return TripletXTerms(loss, weight, valid, d_ap.detach(), d_an.detach())


def tripletx_loss(feats: torch.Tensor, pids: torch.Tensor,
                  camids: Optional[torch.Tensor] = None, *, epoch: int,
                  **kwargs) -> torch.Tensor:
    """Hardness-weighted mean sum_i w_i l_i / sum_i w_i over valid anchors (0 if none).

    Args:
        feats: (B, D) features.
        pids: (B,) identity labels.
        camids: optional (B,) camera ids (cross-camera positives, same-camera negative boost).
        epoch: current 1-based epoch (soft warm-up switch).
        **kwargs: the keyword arguments of ``tripletx_terms``.

    Example:
        >>> tripletx_loss(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), epoch=1)
    """
    terms = tripletx_terms(feats, pids, camids, epoch=epoch, **kwargs)
    if not bool(terms.valid.any()):
        return feats.sum() * 0.0
    # sigmoid may underflow to 0 for very easy anchors without normalisation; tiny keeps 0/0 out
    total = terms.weight.sum().clamp(min=torch.finfo(terms.weight.dtype).tiny)
    return (terms.weight * terms.loss).sum() / total
