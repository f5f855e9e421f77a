"""Supervised contrastive loss (Khosla et al., NeurIPS 2020), optionally camera-aware.

With z the L2-normalised projections, temperature T, positives P(i) and contrast set A(i):

    logit_ij = z_i . z_j / T - max_k (z_i . z_k / T)          (max detached, stability only)
    l_i = -1/|P(i)| * sum_{p in P(i)} log( exp(logit_ip) / sum_{a in A(i)} exp(logit_ia) )

- ``cam_aware=False`` follows HobbitLong/SupContrast ``SupConLoss`` with contrast_mode 'all',
  one view and base_temperature == temperature (so its T / base_T factor is 1): A(i) = all
  j != i, P(i) = same pid, j != i; an anchor without a positive contributes 0 but is still
  counted in the mean (the reference clamps its positive count to 1).
- ``cam_aware=True`` (camids required): P(i) = same pid and another camera; same-pid
  same-camera samples are neither positives nor negatives, so they are also removed from
  A(i); anchors without a cross-camera positive are excluded from the mean (there is no
  reference for this mode; excluding rather than counting zeros keeps the loss scale
  independent of how many such anchors a batch has).

``anchor_weights`` (B,), non-negative, turns the mean into sum_i a_i l_i / sum_i a_i over the
counted anchors. The weights are detached: they re-weight anchors, they are not optimised.
The denominator is a logsumexp over A(i) (excluded entries filled with -inf), which equals
the reference's log(sum exp) and stays finite where exp would overflow.
"""
from typing import Optional

import torch
import torch.nn.functional as F


def supcon_loss(z: torch.Tensor, pids: torch.Tensor, camids: Optional[torch.Tensor] = None, *,
                temperature: float = 0.07, cam_aware: bool = False,
                anchor_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Supervised contrastive loss (see the module docstring).

    Args:
        z: (B, D) projections (normalised inside, not in place).
        pids: (B,) identity labels.
        camids: (B,) camera ids; required with cam_aware.
        temperature: T.
        cam_aware: positives only across cameras; same-pid same-camera samples ignored.
        anchor_weights: optional (B,) non-negative per-anchor weights (None = plain mean).

    Example:
        >>> supcon_loss(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    """
    if cam_aware and camids is None:
        raise ValueError("supcon_loss(cam_aware=True) needs camids")
    n = len(pids)
    x = F.normalize(z if z.dtype == torch.float64 else z.float(), dim=1)
    logits = x @ x.t() / temperature
    # the reference subtracts the detached row max (self included); it cancels in log_prob
    logits = logits - logits.max(1, keepdim=True).values.detach()

    same = pids.view(-1, 1) == pids.view(1, -1)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    contrast = ~eye
    pos_mask = same & ~eye
    if cam_aware:
        same_cam = camids.view(-1, 1) == camids.view(1, -1)
        ignored = same & same_cam        # self included; never a positive nor a negative
        contrast = ~ignored
        pos_mask = same & ~same_cam

    log_denom = torch.logsumexp(logits.masked_fill(~contrast, float("-inf")), 1)
    log_prob = logits - log_denom.unsqueeze(1)
    n_pos = pos_mask.sum(1)
    # where() rather than mask * log_prob: log_prob is +inf on rows with an empty contrast set
    pos_sum = torch.where(pos_mask, log_prob, torch.zeros_like(log_prob)).sum(1)
    per_anchor = -pos_sum / n_pos.clamp(min=1).to(log_prob.dtype)

    counted = n_pos > 0 if cam_aware else torch.ones_like(n_pos, dtype=torch.bool)
    if anchor_weights is None:
        weights = counted.to(per_anchor.dtype)
    else:
        if anchor_weights.shape != (n,):
            raise ValueError(f"anchor_weights must have shape ({n},), got "
                             f"{tuple(anchor_weights.shape)}")
        if bool((anchor_weights < 0).any()):
            raise ValueError("anchor_weights must be non-negative")
        weights = anchor_weights.detach().to(per_anchor) * counted
    total = weights.sum()
    if not bool(total > 0):
        return z.sum() * 0.0
    return (weights * per_anchor).sum() / total
