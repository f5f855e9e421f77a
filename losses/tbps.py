"""Text-based person search (TBPS) losses on the global features of a dual encoder.

Pure functions of image features v, text features t (row i of both is one image-caption pair),
the pair identities y and the logit scale; each returns a scalar tensor (``return_parts=True``:
also a dict of its detached components, for logging). Names and semantics follow
/work/shared/REFERENCES.md §5; where public code and papers disagree, the docstring says which is
followed. The background of every deliberate difference is in docs/reference_differences.md
(losses/tbps.py).

Conventions (every loss)
------------------------
* Features go in raw: each loss L2-normalises them itself with ``F.normalize`` (norm clamped at
  1e-12: an all-zero feature gives cosine 0, not NaN) and never modifies its inputs. CMPM's row
  side and the ID classifier use the raw features, as their references do.
* s_ij = cos(a_i, b_j). kappa = ``logit_scale``, a multiplier (kappa = 1 / tau), a float or a
  0-dim tensor (a learnable scale gets its gradient). Clamping a learned scale (CLIP and
  TBPS-CLIP: kappa <= 100) is the model's job.
* Identity targets Q: Q_ij = [y_i == y'_j] / #{k : y'_k == y_i}, the same-identity mask
  normalised by its row sum (``identity_targets``). The same Q serves both directions, since
  image i and caption i share y_i.
* Rows and columns. Without ``columns`` the rows and the columns are the local batch (N x N).
  ``columns=gather_columns(img, txt, pids)`` makes the columns the batch of every DDP process
  (M = W x N, the local batch at rows ``offset``..``offset + N - 1`` of it), while the rows stay
  local, as TBPS-CLIP does for N-ITC, R-ITC and SS (``logit_scale * image_features @
  text_features_gathered.t()``). Every loss here is a mean over its rows, so with equal local
  batches the mean over the processes of their losses is the single-process loss on the
  concatenated batch, and with ``utils.dist.all_gather_with_grad`` (sum over processes in the
  backward) and DDP's gradient averaging the step is that loss's gradient. C-ITC follows the same
  rule; TBPS-CLIP computes it on gathered x gathered features (every process the whole value):
  the mean over processes and the gradient are identical (DIFFERENCE in the logged per-process
  value only).
* Precision: float64 inputs are kept (the tests use it); any other dtype is computed in float32
  with autocast disabled, and the result is a float32 scalar.

Losses
------
* ``itc_loss``            CLIP InfoNCE.
* ``identity_kl_loss``    KL(P || Q + eps) per direction, with explicit eps, averaging over the
                          two directions and scale; ``sdm_loss`` (IRRA) and ``ritc_loss``
                          (TBPS-CLIP) are this function with their constants.
* ``nitc_loss``           TBPS-CLIP N-ITC: cross-entropy against identity (soft) targets;
                          ``nitc_alpha_at`` gives its soft-label ratio schedule.
* ``citc_loss``           TBPS-CLIP C-ITC (CyCLIP's cyclic consistency).
* ``cmpm_loss``           CMPM (Zhang & Lu, ECCV 2018), row-sum normalised targets.
* ``sigmoid_identity_loss``  the mSigLIP repos' sigmoid loss with +-1 identity labels (called
                          "NITC" there; it is not TBPS-CLIP's N-ITC).
* ``cross_modal_id_loss`` ID loss, one classifier shared by both modalities.
IS-GVFC (image x image) is ``losses.isgvfc.isgvfc_loss`` on the image tower's global features.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F

from utils.dist import all_gather_with_grad, world_info

from .masks import pid_masks
from .softmax_ce import cross_entropy_label_smooth

__all__ = ["Columns", "gather_columns", "identity_targets", "itc_loss", "identity_kl_loss",
           "sdm_loss", "ritc_loss", "nitc_loss", "nitc_alpha_at", "citc_loss", "cmpm_loss",
           "sigmoid_identity_loss", "cross_modal_id_loss"]

Scale = Union[float, torch.Tensor]
Parts = Dict[str, torch.Tensor]
DIRECTION_AVERAGING = ("sum", "mean")


class Columns(NamedTuple):
    """What a loss compares its rows against: the batch of every process (or the local batch).

    ``img`` (M, D) and ``txt`` (M, D) raw features, ``pids`` (M,) (None where a loss needs no
    identities), ``offset``: the index of the local batch's first row among the M columns.
    """
    img: torch.Tensor
    txt: torch.Tensor
    pids: Optional[torch.Tensor]
    offset: int


def gather_columns(img: torch.Tensor, txt: torch.Tensor,
                   pids: Optional[torch.Tensor] = None) -> Columns:
    """The features (and identities) of every DDP process as loss columns.

    Uses ``utils.dist.all_gather_with_grad`` (gradient back to each process's own rows, summed
    over the processes). Without a process group the columns are the local batch, offset 0.
    Gather once per step and pass the result to every loss that should see the whole batch; for
    N-ITC's stop-gradient features gather the detached features (no backward runs through them).

    Example:
        >>> cols = gather_columns(out["img_feat"], out["txt_feat"], batch["pid"])
        >>> loss = sdm_loss(out["img_feat"], out["txt_feat"], batch["pid"], columns=cols)
    """
    if img.shape != txt.shape:
        raise ValueError(f"img {tuple(img.shape)} and txt {tuple(txt.shape)} features differ")
    _, rank = world_info()
    return Columns(all_gather_with_grad(img), all_gather_with_grad(txt),
                   None if pids is None else all_gather_with_grad(pids.reshape(-1)),
                   rank * img.shape[0])


def identity_targets(pids: torch.Tensor, col_pids: Optional[torch.Tensor] = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Q (N, M): Q_ij = [y_i == y'_j] / #{k : y'_k == y_i} (columns default to the rows).

    Every row must have a positive column (its own pair does when the columns contain the rows).
    """
    same = pid_masks(pids.reshape(-1), col_pids=None if col_pids is None
                     else col_pids.reshape(-1).to(pids.device)).same.to(dtype)
    return same / same.sum(1, keepdim=True)


def nitc_alpha_at(progress: float, ratio: float = 0.5) -> float:
    """TBPS-CLIP's soft-label ratio alpha: ``ratio * min(1, progress)``.

    ``progress`` is the number of epochs done, fractional: (epoch - 1) + i / iters_per_epoch for
    the 0-based iteration i of the 1-based epoch. alpha thus rises linearly from 0 over the first
    epoch and stays at ``ratio`` (``softlabel_ratio`` 0.5) afterwards, as TBPS-CLIP ``main.py``
    (``alpha = softlabel_ratio * min(1, i / len(train_loader))`` in epoch 0).

    Example:
        >>> nitc_alpha_at(0.25), nitc_alpha_at(3.0)
        (0.125, 0.5)
    """
    if progress < 0:
        raise ValueError(f"progress must be >= 0 epochs, got {progress}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"the soft-label ratio must be in [0, 1], got {ratio}")
    return ratio * min(1.0, float(progress))


# ---- shared pieces ----------------------------------------------------------------------------

def _compute(x: torch.Tensor) -> torch.Tensor:
    """float64 kept, anything else float32."""
    return x if x.dtype == torch.float64 else x.float()


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(_compute(x), dim=1)


def _scale(logit_scale: Scale, like: torch.Tensor) -> Scale:
    if torch.is_tensor(logit_scale):
        if logit_scale.numel() != 1:
            raise ValueError(f"logit_scale must be a scalar, got shape {tuple(logit_scale.shape)}")
        return logit_scale.reshape(()).to(like.dtype)
    if logit_scale <= 0:
        raise ValueError(f"logit_scale must be > 0 (it is 1 / temperature), got {logit_scale}")
    return float(logit_scale)


@contextmanager
def _full_precision(x: torch.Tensor):
    with torch.autocast(device_type=x.device.type, enabled=False):
        yield


def _columns(img: torch.Tensor, txt: torch.Tensor, pids: Optional[torch.Tensor],
             columns: Optional[Columns]) -> Columns:
    """Check the local batch and its columns; the local batch when ``columns`` is None."""
    if img.dim() != 2 or img.shape != txt.shape:
        raise ValueError(f"img and txt must be (N, D) of the same shape, got {tuple(img.shape)} "
                         f"and {tuple(txt.shape)}")
    if len(img) == 0:
        raise ValueError("empty batch")
    if pids is not None and pids.numel() != len(img):
        raise ValueError(f"{len(img)} pairs but {pids.numel()} pids")
    if columns is None:
        return Columns(img, txt, pids, 0)
    m = len(columns.img)
    if columns.img.shape[1:] != img.shape[1:] or columns.txt.shape != columns.img.shape:
        raise ValueError(f"columns ({tuple(columns.img.shape)}, {tuple(columns.txt.shape)}) do "
                         f"not match the rows' feature size {img.shape[1]}")
    if not 0 <= columns.offset <= m - len(img):
        raise ValueError(f"columns.offset {columns.offset} does not place {len(img)} rows "
                         f"among {m} columns")
    if pids is not None and (columns.pids is None or columns.pids.numel() != m):
        raise ValueError("this loss needs the columns' pids: gather_columns(img, txt, pids)")
    return columns


def _row_kl(logits: torch.Tensor, q: torch.Tensor, eps: float) -> torch.Tensor:
    """mean_i sum_j p_ij (log p_ij - log(q_ij + eps)), p = softmax of each row of ``logits``."""
    log_p = F.log_softmax(logits, dim=1)
    return (log_p.exp() * (log_p - torch.log(q + eps))).sum(1).mean()


def _row_ce(logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """mean_i -sum_j q_ij log p_ij (cross-entropy against a target distribution per row)."""
    return -(q * F.log_softmax(logits, dim=1)).sum(1).mean()


def _result(total: torch.Tensor, parts: Parts, return_parts: bool):
    if return_parts:
        return total, {k: v.detach() for k, v in parts.items()}
    return total


# ---- ITC --------------------------------------------------------------------------------------

def itc_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: Scale, *,
             columns: Optional[Columns] = None, return_parts: bool = False):
    """ITC: CLIP's symmetric InfoNCE with one positive per row, the row's own pair.

        L = 1/2 [ mean_i CE(kappa s(v_i, T), offset + i) + mean_i CE(kappa s(t_i, V), offset + i) ]

    over the columns T (texts) and V (images). Reference: CLIP (Radford et al., 2021); IRRA
    ``model/objectives.py`` ``compute_itc`` (kappa fixed 1 / 0.02 there), TBPS-CLIP's learnable
    kappa (init 1 / 0.07, <= 100). Identities play no part: another caption of the same person is
    a negative (use N-ITC, SDM or R-ITC for identity targets). With gathered columns this is
    open_clip's ``ClipLoss(local_loss=True, gather_with_grad=True)``.

    Args:
        img, txt: (N, D) raw features of N pairs.
        logit_scale: kappa (float or 0-dim tensor).
        columns: ``gather_columns(img, txt)`` for the cross-process batch; None = local batch.
        return_parts: also return {'i2t', 't2i'}.

    Example:
        >>> itc_loss(torch.randn(4, 8), torch.randn(4, 8), logit_scale=1 / 0.07)
    """
    cols = _columns(img, txt, None, columns)
    with _full_precision(img):
        v, t, cv, ct = _unit(img), _unit(txt), _unit(cols.img), _unit(cols.txt)
        k = _scale(logit_scale, v)
        target = torch.arange(len(v), device=v.device) + cols.offset
        i2t = F.cross_entropy(k * v @ ct.t(), target)
        t2i = F.cross_entropy(k * t @ cv.t(), target)
        return _result(0.5 * (i2t + t2i), {"i2t": i2t, "t2i": t2i}, return_parts)


# ---- SDM / R-ITC: one implementation ----------------------------------------------------------

def identity_kl_loss(img: torch.Tensor, txt: torch.Tensor, pids: torch.Tensor,
                     logit_scale: Scale, *, eps: float, directions: str,
                     columns: Optional[Columns] = None, return_parts: bool = False):
    """KL of the predicted matching distribution to the identity targets, per direction.

        P^{i2t}_ij = softmax_j(kappa s(v_i, t_j)),   P^{t2i}_ij = softmax_j(kappa s(t_i, v_j))
        KL_d = (1/N) sum_i sum_j P^d_ij [log P^d_ij - log(Q_ij + eps)]         (d = i2t, t2i)
        L = KL_i2t + KL_t2i  (directions 'sum')   or   1/2 (KL_i2t + KL_t2i)  ('mean')

    The prediction P weighs the terms (KL(P || Q + eps), the "reverse" KL); eps is added to Q
    inside the log only (Q + eps is not renormalised), so log eps is the finite cost of
    probability put on another identity, and L can be very slightly negative (>= -log(1 + M eps)
    per direction). This single form is IRRA's SDM and TBPS-CLIP's R-ITC; they differ only in the
    arguments (``sdm_loss``, ``ritc_loss``).

    Args:
        img, txt: (N, D) raw features; pids: (N,) identities of the pairs.
        logit_scale: kappa. eps: added to Q in the log. directions: 'sum' or 'mean'.
        columns: ``gather_columns(img, txt, pids)``; None = local batch.
        return_parts: also return {'i2t', 't2i'} (the two KL terms).
    """
    if directions not in DIRECTION_AVERAGING:
        raise ValueError(f"directions must be 'sum' or 'mean', got {directions!r}")
    if eps <= 0:
        raise ValueError(f"eps must be > 0 (log(0) otherwise), got {eps}")
    cols = _columns(img, txt, pids, columns)
    with _full_precision(img):
        v, t, cv, ct = _unit(img), _unit(txt), _unit(cols.img), _unit(cols.txt)
        k = _scale(logit_scale, v)
        q = identity_targets(pids, cols.pids, v.dtype)
        i2t = _row_kl(k * v @ ct.t(), q, eps)
        t2i = _row_kl(k * t @ cv.t(), q, eps)
        total = i2t + t2i if directions == "sum" else 0.5 * (i2t + t2i)
        return _result(total, {"i2t": i2t, "t2i": t2i}, return_parts)


def sdm_loss(img: torch.Tensor, txt: torch.Tensor, pids: torch.Tensor,
             logit_scale: Scale = 50.0, *, eps: float = 1e-8,
             columns: Optional[Columns] = None, return_parts: bool = False):
    """SDM (IRRA, Jiang & Ye, CVPR 2023): ``identity_kl_loss`` with directions summed (no 1/2),
    eps 1e-8 and kappa = 1 / 0.02 = 50 fixed.

    Reference: IRRA ``model/objectives.py`` ``compute_sdm`` (without its optional ``image_id``
    mixing, which IRRA does not use). IRRA normalises the targets with ``labels /
    labels.sum(dim=1)``, which divides column j by the count of y_j; on its square symmetric mask
    that equals the row normalisation used here, which is also what a rectangular (gathered) Q
    needs. IRRA does not gather across processes.

    Example:
        >>> sdm_loss(torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0, 0, 1, 2]))
    """
    return identity_kl_loss(img, txt, pids, logit_scale, eps=eps, directions="sum",
                            columns=columns, return_parts=return_parts)


def ritc_loss(img: torch.Tensor, txt: torch.Tensor, pids: torch.Tensor, logit_scale: Scale, *,
              eps: float = 0.01, columns: Optional[Columns] = None, return_parts: bool = False):
    """R-ITC (TBPS-CLIP, Cao et al., AAAI 2024): ``identity_kl_loss`` with the two directions
    averaged, eps 0.01 (``ritc_eps``), the model's learnable kappa and hard identity targets.

    Reference: TBPS-CLIP ``model/tbps_model.py`` ``CLIP.forward`` (``ritc``): ``F.kl_div(log(Q +
    eps), log P, log_target=True, reduction='batchmean')`` per direction, which is sum P (log P -
    log(Q + eps)) / N, then 1/2 of the sum; local rows against gathered columns. Weight 1.

    Example:
        >>> ritc_loss(torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0, 0, 1, 2]), 1 / 0.07)
    """
    return identity_kl_loss(img, txt, pids, logit_scale, eps=eps, directions="mean",
                            columns=columns, return_parts=return_parts)


# ---- N-ITC ------------------------------------------------------------------------------------

def nitc_loss(img: torch.Tensor, txt: torch.Tensor, pids: torch.Tensor, logit_scale: Scale, *,
              alpha: float = 0.0, img_stop: Optional[torch.Tensor] = None,
              txt_stop: Optional[torch.Tensor] = None, columns: Optional[Columns] = None,
              stop_columns: Optional[Columns] = None, return_parts: bool = False):
    """N-ITC (TBPS-CLIP): cross-entropy of the predicted matching distribution against identity
    targets softened by the model's own stop-gradient predictions.

        Q'^{i2t} = alpha softmax_j(kappa s(v~_i, t~_j)) + (1 - alpha) Q      (no gradient)
        Q'^{t2i} = alpha softmax_j(kappa s(t~_i, v~_j)) + (1 - alpha) Q
        L = 1/2 [ mean_i -sum_j Q'^{i2t}_ij log P^{i2t}_ij
                + mean_i -sum_j Q'^{t2i}_ij log P^{t2i}_ij ]

    v~, t~ are the stop-gradient features (``img_stop``, ``txt_stop``); kappa in Q' is detached.
    alpha = 0 gives cross-entropy against Q; with all-distinct identities that is ITC.

    Reference: TBPS-CLIP ``model/tbps_model.py`` ``calc_contrastive`` (local rows against gathered
    columns, also for the stop features), with v~, t~ from a second forward of the same batch
    under ``torch.no_grad`` in training mode, and alpha from ``nitc_alpha_at`` (0 -> 0.5 over the
    first epoch). Weight 1. alpha > 0 without stop features is an error, not a silent choice;
    pass ``img.detach(), txt.detach()`` to use the current features, as the mSigLIP repos do
    (identical to a second forward only without dropout / drop-path).

    Args:
        img, txt: (N, D) raw features; pids: (N,); logit_scale: kappa.
        alpha: soft-label ratio in [0, 1]. img_stop, txt_stop: (N, D) stop-gradient features,
            required when alpha > 0 (detached here).
        columns: ``gather_columns(img, txt, pids)``; stop_columns: ``gather_columns(img_stop,
            txt_stop)``, required with ``columns`` when alpha > 0. None = local batch.
        return_parts: also return {'i2t', 't2i'}.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    cols = _columns(img, txt, pids, columns)
    with _full_precision(img):
        v, t, cv, ct = _unit(img), _unit(txt), _unit(cols.img), _unit(cols.txt)
        k = _scale(logit_scale, v)
        q = identity_targets(pids, cols.pids, v.dtype)
        q_i2t = q_t2i = q
        if alpha > 0:
            if img_stop is None or txt_stop is None:
                raise ValueError("nitc_loss with alpha > 0 needs img_stop and txt_stop (TBPS-CLIP: "
                                 "a second forward under torch.no_grad; img.detach(), "
                                 "txt.detach() use the current features)")
            if columns is not None and stop_columns is None:
                raise ValueError("nitc_loss with gathered columns and alpha > 0 needs "
                                 "stop_columns=gather_columns(img_stop, txt_stop)")
            scols = _columns(img_stop, txt_stop, None, stop_columns)
            if len(scols.img) != len(cols.img) or scols.offset != cols.offset:
                raise ValueError("stop_columns must be gathered like columns")
            with torch.no_grad():
                k_stop = k.detach() if torch.is_tensor(k) else k
                sv, st = _unit(img_stop.detach()), _unit(txt_stop.detach())
                scv, sct = _unit(scols.img.detach()), _unit(scols.txt.detach())
                q_i2t = alpha * F.softmax(k_stop * sv @ sct.t(), dim=1) + (1 - alpha) * q
                q_t2i = alpha * F.softmax(k_stop * st @ scv.t(), dim=1) + (1 - alpha) * q
        i2t = _row_ce(k * v @ ct.t(), q_i2t)
        t2i = _row_ce(k * t @ cv.t(), q_t2i)
        return _result(0.5 * (i2t + t2i), {"i2t": i2t, "t2i": t2i}, return_parts)


# ---- C-ITC ------------------------------------------------------------------------------------

def citc_loss(img: torch.Tensor, txt: torch.Tensor, *, inmodal_weight: float = 0.25,
              crossmodal_weight: float = 0.25, columns: Optional[Columns] = None,
              return_parts: bool = False):
    """C-ITC (TBPS-CLIP, from CyCLIP, Goel et al., NeurIPS 2022): cyclic consistency.

        in-modal    = mean_{i,j} (s(v_i, v_j) - s(t_i, t_j))^2
        cross-modal = mean_{i,j} (s(v_i, t_j) - s(t_i, v_j))^2
        L = inmodal_weight * in-modal + crossmodal_weight * cross-modal      (lambda 0.25 / 0.25)

    i over the rows (local batch), j over the columns. The mean over i and j is the code's
    (TBPS-CLIP ``model/tbps_model.py``, ``citc``: ``.square().mean()`` of kappa-scaled logits
    divided by kappa^2, so kappa cancels and is not an argument here); CyCLIP's paper divides by N
    only, a pure scale: the code's mean keeps the published weight 0.1 meaningful. DIFFERENCE:
    TBPS-CLIP computes it on gathered x gathered features; local rows x gathered columns give the
    same mean over processes and the same gradient (module docstring).

    Args:
        img, txt: (N, D) raw features. columns: ``gather_columns(img, txt)``; None = local batch.
        return_parts: also return {'inmodal', 'crossmodal'} (unweighted).
    """
    cols = _columns(img, txt, None, columns)
    with _full_precision(img):
        v, t, cv, ct = _unit(img), _unit(txt), _unit(cols.img), _unit(cols.txt)
        inmodal = (v @ cv.t() - t @ ct.t()).square().mean()
        crossmodal = (v @ ct.t() - t @ cv.t()).square().mean()
        total = inmodal_weight * inmodal + crossmodal_weight * crossmodal
        return _result(total, {"inmodal": inmodal, "crossmodal": crossmodal}, return_parts)


# ---- CMPM -------------------------------------------------------------------------------------

def cmpm_loss(img: torch.Tensor, txt: torch.Tensor, pids: torch.Tensor, *, eps: float = 1e-8,
              columns: Optional[Columns] = None, return_parts: bool = False):
    """CMPM (Zhang & Lu, "Deep Cross-Modal Projection Learning", ECCV 2018).

        p^{i2t}_ij = softmax_j(v_i . t_j / |t_j|),   p^{t2i}_ij = softmax_j(t_i . v_j / |v_j|)
        L = sum_d (1/N) sum_i sum_j p^d_ij [log p^d_ij - log(Q_ij + eps)]

    The rows are the raw features (their norm acts as the temperature; there is no kappa), the
    columns are normalised: the projection of v_i on the direction of t_j. Q is normalised by its
    row sum, as in the paper and LGUR ``loss/loss.py``; IRRA ``model/objectives.py``
    ``compute_cmpm`` divides by the row's L2 norm instead (its Q rows then do not sum to 1).

    Args:
        img, txt: (N, D) raw features; pids: (N,). eps: added to Q in the log.
        columns: ``gather_columns(img, txt, pids)``; None = local batch.
        return_parts: also return {'i2t', 't2i'}.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    cols = _columns(img, txt, pids, columns)
    with _full_precision(img):
        v, t = _compute(img), _compute(txt)
        cv, ct = _unit(cols.img), _unit(cols.txt)
        q = identity_targets(pids, cols.pids, v.dtype)
        i2t = _row_kl(v @ ct.t(), q, eps)
        t2i = _row_kl(t @ cv.t(), q, eps)
        return _result(i2t + t2i, {"i2t": i2t, "t2i": t2i}, return_parts)


# ---- sigmoid identity loss (mSigLIP repos) ----------------------------------------------------

def sigmoid_identity_loss(img: torch.Tensor, txt: torch.Tensor, pids: torch.Tensor,
                          logit_scale: Scale, logit_bias: Scale, *,
                          columns: Optional[Columns] = None) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss with identity labels, text rows against image columns.

        z_ij = +1 if y_i == y'_j else -1,     l_ij = kappa s(t_i, v_j) + b
        L = (1/N) sum_i sum_j -log sigmoid(z_ij l_ij)

    Reference: the mSigLIP TBPS repos (hungphongtrn/PERSON_RLF, pahmlam/Research_on_CircleLoss_
    for_TBPS-mSigLIP, ``model/objectives.py`` ``compute_constrative`` with ``use_sigmoid``; the
    +-1 targets from ``model/tbps.py`` ``prepare_sim_targets``), which call it "NITC". It is a
    different loss from TBPS-CLIP's N-ITC (``nitc_loss``) and named apart here. kappa and b are
    SigLIP's learned scale (<= 100) and bias. SigLIP (Zhai et al., ICCV 2023) uses +1 on the
    diagonal only; these repos give every same-identity pair +1. Only the t2i direction, as
    there. Not implemented: those repos' alpha > 0 branch, which mixes sigmoid probabilities of
    the stop features into the +-1 labels.

    Args:
        img, txt: (N, D) raw features; pids: (N,); logit_scale: kappa; logit_bias: b.
        columns: ``gather_columns(img, txt, pids)``; None = local batch.
    """
    cols = _columns(img, txt, pids, columns)
    with _full_precision(img):
        t, cv = _unit(txt), _unit(cols.img)
        logits = _scale(logit_scale, t) * t @ cv.t()
        logits = logits + (logit_bias.reshape(()).to(t.dtype) if torch.is_tensor(logit_bias)
                           else float(logit_bias))
        z = pid_masks(pids.reshape(-1), col_pids=cols.pids.reshape(-1)).same.to(t.dtype) * 2 - 1
        return F.softplus(-z * logits).sum(1).mean()        # -log sigmoid(x) = softplus(-x)


# ---- ID ---------------------------------------------------------------------------------------

def cross_modal_id_loss(img: torch.Tensor, txt: torch.Tensor, pids: torch.Tensor,
                        weight: torch.Tensor, bias: Optional[torch.Tensor] = None, *,
                        label_smoothing: float = 0.0, return_parts: bool = False):
    """ID loss with ONE linear classifier (``weight`` (C, D), ``bias`` (C,)) shared by both
    modalities: L = 1/2 [CE(W v + b, y) + CE(W t + b, y)].

    Reference: IRRA ``model/objectives.py`` ``compute_id`` (the instance loss of Zheng et al.,
    "Dual-Path Convolutional Image-Text Embeddings", arXiv 1711.05535) with IRRA's classifier
    on the raw (unnormalised) global features, N(0, 0.001) init, LR x5 (model side); TBPS-CLIP's
    ``id`` task is the same. No label smoothing in either (``label_smoothing`` 0; the re-ID CE of
    ``losses/softmax_ce.py`` is used). Per-sample, so it is never gathered.

    Args:
        img, txt: (N, D) raw features; pids: (N,) class indices 0..C-1.
        weight, bias: the shared classifier's parameters (e.g. ``model.classifier.weight``).
        return_parts: also return {'img', 'txt'}.
    """
    _columns(img, txt, pids, None)
    with _full_precision(img):
        v, t = _compute(img), _compute(txt)
        w = weight.to(v.dtype)
        b = None if bias is None else bias.to(v.dtype)
        y = pids.reshape(-1).to(v.device)
        ce_img = cross_entropy_label_smooth(F.linear(v, w, b), y, label_smoothing)
        ce_txt = cross_entropy_label_smooth(F.linear(t, w, b), y, label_smoothing)
        return _result(0.5 * (ce_img + ce_txt), {"img": ce_img, "txt": ce_txt}, return_parts)
