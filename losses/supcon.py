"""Supervised contrastive loss (Khosla et al., NeurIPS 2020), optionally camera-aware.

With z the L2-normalised projections, temperature T, positives P(i) and contrast set A(i):

    logit_ij = z_i . z_j / T - max_k (z_i . z_k / T)          (max detached, stability only)
    l_i = -1/|P(i)| * sum_{p in P(i)} log( exp(logit_ip) / sum_{a in A(i)} exp(logit_ia) )

- ``cam_aware=False`` follows HobbitLong/SupContrast ``SupConLoss`` with contrast_mode 'all',
  one view and base_temperature == temperature (so its T / base_T factor is 1): A(i) = all
  j != i, P(i) = same pid, j != i; an anchor without a positive contributes 0 but is still
  counted in the mean (the reference clamps its positive count to 1).
- ``cam_aware=True`` (camids required): P(i) = same pid and another camera; anchors without a
  cross-camera positive are excluded from the mean (excluding rather than counting zeros keeps
  the loss scale independent of how many such anchors a batch has). What happens to the other
  same-pid samples, the ones in the anchor's camera, is ``cam_aware_mode``:
  - 'exclude' (default): they are neither positives nor negatives, so they are also removed
    from A(i) = all j != i except them;
  - 'denominator': they stay in A(i) = all j != i: not positives, yet pushed away through the
    denominator. This is the camera-aware SupCon of the Model B TransReID extension
    (``loss/supcon_loss.py``), for reproducing its published recipes (docs/
    reference_differences.md, losses/supcon.py).
  Without ``cam_aware`` the mode has no effect.

``anchor_weights`` (B,), non-negative, turns the mean into sum_i a_i l_i / sum_i a_i over the
counted anchors. The weights are detached: they re-weight anchors, they are not optimised.
The denominator is a logsumexp over A(i) (excluded entries filled with -inf), which equals
the reference's log(sum exp) and stays finite where exp would overflow.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from configs.validate import CAM_AWARE_MODES

from .masks import pid_masks



def check_cam_aware_mode(mode: str) -> None:
    """LOSS.SUPCON.CAM_AWARE_MODE is 'exclude' or 'denominator'."""
    if mode not in CAM_AWARE_MODES:
        raise ValueError(f"LOSS.SUPCON.CAM_AWARE_MODE '{mode}' is not "
                         f"{' or '.join(repr(m) for m in CAM_AWARE_MODES)}")


def supcon_loss(z: torch.Tensor, pids: torch.Tensor, camids: Optional[torch.Tensor] = None, *,
                temperature: float = 0.07, cam_aware: bool = False,
                cam_aware_mode: str = "exclude",
                anchor_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Supervised contrastive loss (see the module docstring).

    Args:
        z: (B, D) projections (normalised inside, not in place).
        pids: (B,) identity labels.
        camids: (B,) camera ids; required with cam_aware.
        temperature: T.
        cam_aware: positives only across cameras.
        cam_aware_mode: with cam_aware, same-pid same-camera samples are left out of the
            contrast set ('exclude') or stay in it ('denominator', Model B).
        anchor_weights: optional (B,) non-negative per-anchor weights (None = plain mean).

    Example:
        >>> supcon_loss(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    """
    check_cam_aware_mode(cam_aware_mode)
    if cam_aware and camids is None:
        raise ValueError("supcon_loss(cam_aware=True) needs camids")
    n = len(pids)
    x = F.normalize(z if z.dtype == torch.float64 else z.float(), dim=1)
    logits = x @ x.t() / temperature
    # the reference subtracts the detached row max (self included); it cancels in log_prob
    logits = logits - logits.max(1, keepdim=True).values.detach()

    masks = pid_masks(pids, camids if cam_aware else None)
    contrast = ~masks.eye
    pos_mask = masks.pos
    if cam_aware:
        pos_mask = masks.same & ~masks.same_cam
        if cam_aware_mode == "exclude":
            contrast = ~(masks.same & masks.same_cam)   # self included; neither pos nor neg

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
