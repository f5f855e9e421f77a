"""Circle loss (Sun et al., CVPR 2020) on the dual encoder: the strategies of the mSigLIP
circle-loss study (REFERENCES.md section 5, "Circle strategies"; seeds/001).

Reference: pahmlam/Research_on_CircleLoss_for_TBPS-mSigLIP, ``model/objectives.py``
(``CircleLoss`` / ``compute_cir``, ``compute_cross_modal_circle``, ``compute_intrinsic_nitc``),
composed per ``loss.strategy`` in ``model/tbps.py`` ``TBPS.forward``. Conventions of
losses/tbps.py: raw features in (L2-normalised here), float64 kept, anything else computed in
float32 with autocast off. With s a cosine similarity, margin m and scale gamma, the logits are
those of losses/circle.py (``circle_logits``, alphas detached):

    alpha_p = [1 + m - s]_+,  alpha_n = [s + m]_+        (no gradient)
    logit_p = -gamma alpha_p (s - (1 - m)),   logit_n = gamma alpha_n (s - m)

Losses
------
* ``circle_inmodal_loss`` (strategy ``auxiliary``): 1/2 [Circle(V V^T) + Circle(T T^T)], each
  ONE circle loss over the whole batch (``circle_loss_over_pairs``): positives every ordered
  pair (i, j), j != i, of one identity, negatives every pair of two identities, the diagonal
  out. Each pair is counted in both orders, as the reference (its masks are the full square);
  losses/circle.py ``batch_circle_loss`` counts it once, which adds log 2 to each logsumexp, so
  the two are different numbers. 0 (with a graph) when the batch has no positive or no negative
  pair (the reference returns a constant 0 there).
* ``cross_modal_circle_loss`` (strategies ``circle_only`` and ``auxiliary_cross``): ONE circle
  loss on S = V T^T: positives every (i, j) with y_i == y_j, the diagonal (own pair) included,
  negatives the others; 0 (with a graph) when every pair shares one identity.
* ``nc_itc_loss`` (strategy ``intrinsic``, "NC-ITC"): circle-shaped logits on S^{i2t} = V T^T
  and S^{t2i} = T V^T, BCE-with-logits against the identity indicator Y_ij = [y_i == y'_j]:

      x_ij = gamma alpha_p (s_ij - (1 - m))  if Y_ij  else  gamma alpha_n (s_ij - m)
      L = 1/2 [ mean_ij BCE(x^{i2t}_ij, Y_ij) + mean_ij BCE(x^{t2i}_ij, Y_ij) ]

  i.e. x = -logit_p on positives and logit_n on negatives. The mean runs over all N x M entries
  (F.binary_cross_entropy_with_logits' default). The reference takes the model's logit scale
  and bias as arguments but does not use them; neither does this function.

Rows and columns: the two circle losses are one logsumexp over the whole local batch, not a mean
over rows, so a DDP-gathered batch would not give the single-process loss (losses/tbps.py,
"Rows and columns"); they take the local batch only, as the reference (one GPU). NC-ITC is a
mean over its rows, so it takes ``columns=gather_columns(img, txt, pids)``.

Not here (REFERENCES.md section 5): the strategies' "NITC" is ``losses.tbps.
sigmoid_identity_loss`` (``compute_constrative`` with ``use_sigmoid`` from the m_siglip
backbone config, softlabel_ratio 0), C-ITC is ``losses.tbps.citc_loss``, SimCLR
self-supervision (SS) is 'ss' (``losses.simclr``), and multi-view supervision (MVS: the loss
averaged with the same loss on an augmented image view) is LOSS.<NAME>.MVS, applied by
losses/make_loss.py to the cross-modal circle loss and NC-ITC (and the sigmoid loss) as the
reference; the in-modal circle loss has no MVS there and none here.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .circle import circle_logits, circle_loss_over_pairs
from .masks import pid_masks
from .tbps import Columns, _columns, _full_precision, _result, _unit

__all__ = ["circle_inmodal_loss", "cross_modal_circle_loss", "nc_itc_loss"]


def _local_batch(img: torch.Tensor, txt: torch.Tensor, pids: torch.Tensor):
    """(unit image features, unit text features, pid masks) of a checked local batch."""
    _columns(img, txt, pids, None)
    v, t = _unit(img), _unit(txt)
    return v, t, pid_masks(pids.reshape(-1).to(v.device))


def circle_inmodal_loss(img: torch.Tensor, txt: torch.Tensor, pids: torch.Tensor, *,
                        margin: float = 0.25, gamma: float = 64.0,
                        return_parts: bool = False):
    """In-modal circle loss, 1/2 [Circle(image x image) + Circle(text x text)] (module docstring).

    Reference: ``model/objectives.py`` ``CircleLoss.forward`` (via ``compute_cir``), averaged over
    the two modalities in ``model/tbps.py`` (strategy ``auxiliary``); m 0.25, gamma 64 (yaml).

    Args:
        img, txt: (N, D) raw features; pids: (N,).
        margin: m. gamma: scale.
        return_parts: also return {'img', 'txt'} (the two circle losses).

    Example:
        >>> circle_inmodal_loss(torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0, 0, 1, 1]))
    """
    with _full_precision(img):
        v, t, masks = _local_batch(img, txt, pids)
        img_loss = circle_loss_over_pairs(v @ v.t(), masks.pos, masks.neg, margin, gamma)
        txt_loss = circle_loss_over_pairs(t @ t.t(), masks.pos, masks.neg, margin, gamma)
        return _result(0.5 * (img_loss + txt_loss), {"img": img_loss, "txt": txt_loss},
                       return_parts)


def cross_modal_circle_loss(img: torch.Tensor, txt: torch.Tensor, pids: torch.Tensor, *,
                            margin: float = 0.25, gamma: float = 64.0) -> torch.Tensor:
    """Cross-modal circle loss on S = V T^T, positives every same-identity pair including the
    own pair (module docstring).

    Reference: ``model/objectives.py`` ``compute_cross_modal_circle`` (strategies ``circle_only``,
    weighted by nitc_loss_weight 1, and ``auxiliary_cross``, by circle_loss_weight 0.1). Its
    signature default gamma is 128, but ``model/tbps.py`` passes the yaml's circle_gamma 64.

    Args:
        img, txt: (N, D) raw features; pids: (N,). margin: m. gamma: scale.

    Example:
        >>> cross_modal_circle_loss(torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0, 0, 1, 2]))
    """
    with _full_precision(img):
        v, t, masks = _local_batch(img, txt, pids)
        return circle_loss_over_pairs(v @ t.t(), masks.same, masks.neg, margin, gamma)


def _nc_itc_direction(s: torch.Tensor, same: torch.Tensor, margin: float,
                      gamma: float) -> torch.Tensor:
    """mean_ij BCE-with-logits(x_ij, Y_ij) with the circle-shaped x of the module docstring."""
    logit_p, logit_n = circle_logits(s, margin, gamma)
    x = torch.where(same, -logit_p, logit_n)
    return F.binary_cross_entropy_with_logits(x, same.to(s.dtype))


def nc_itc_loss(img: torch.Tensor, txt: torch.Tensor, pids: torch.Tensor, *,
                margin: float = 0.25, gamma: float = 64.0, columns: Optional[Columns] = None,
                return_parts: bool = False):
    """NC-ITC: the sigmoid (BCE) image-text loss with circle-shaped logits (module docstring).

    Reference: ``model/objectives.py`` ``compute_intrinsic_nitc`` (strategy ``intrinsic``, in
    place of "NITC", weighted by nitc_loss_weight 1). Its signature defaults are m 0.35,
    gamma 80, but ``model/tbps.py`` passes the yaml's circle_margin 0.25 / circle_gamma 64. No
    logit scale or bias (the reference ignores them). With gathered columns: local rows against
    the columns of every process in both directions (losses/tbps.py conventions); the reference
    does not gather.

    Args:
        img, txt: (N, D) raw features; pids: (N,). margin: m. gamma: scale.
        columns: ``gather_columns(img, txt, pids)``; None = local batch.
        return_parts: also return {'i2t', 't2i'}.

    Example:
        >>> nc_itc_loss(torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0, 0, 1, 2]))
    """
    cols = _columns(img, txt, pids, columns)
    with _full_precision(img):
        v, t, cv, ct = _unit(img), _unit(txt), _unit(cols.img), _unit(cols.txt)
        same = pid_masks(pids.reshape(-1).to(v.device),
                         col_pids=cols.pids.reshape(-1).to(v.device)).same
        i2t = _nc_itc_direction(v @ ct.t(), same, margin, gamma)
        t2i = _nc_itc_direction(t @ cv.t(), same, margin, gamma)
        return _result(0.5 * (i2t + t2i), {"i2t": i2t, "t2i": t2i}, return_parts)
