"""LGUR's losses (Shao et al., ACM MM 2022; seeds/003; REFERENCES.md section 5 'LGUR').

Pure functions of the part features F~ (N, K, OUT_DIM) of ``model/lgur.py`` (row i of every
feature is the pair (image i, caption i) of the batch) and the pair identities y.

* ``lgur_ranking_loss(F1, F2)``: the bidirectional ranking loss L_RK on the cosine of the
  concatenated parts, s_ij = cos(concat F1_i, concat F2_j) (the released
  ``calculate_similarity_part``: concatenate, then L2-normalise the whole):
      L_RK = sum_i relu(m - s_ii + s_{i n(i)})  +  sum_j relu(m - s_jj + s_{n'(j) j})
  with F1 anchors on the rows and F2 anchors on the columns; the positive is the anchor's own
  pair (i, i), negatives are the columns / rows of ANOTHER identity (y_j != y_i). Negative rule
  (MODEL.LGUR.RANK_NEGATIVE):
    - 'hardest' (the paper: "one hard negative sample ... in a mini-batch"; default): n(i) =
      argmax_{j : y_j != y_i} s_ij;
    - 'random_semi_hard' (the released ``loss/RankingLoss.py``): n(i) drawn uniformly from the
      semi-hard negatives s_ii - m < s_ij < s_ii (0 < m - s_ii + s_ij < m), from torch's RNG
      (or ``generator``).
  Anchors without a negative (all one identity; no semi-hard one) add nothing. DIFFERENCE: when
  no anchor of a direction has a semi-hard negative the released code still adds one triplet
  (the last anchor with its first negative); here that direction adds 0. Reduction
  (MODEL.LGUR.RANK_REDUCTION): 'sum' over anchors, as the released code (the paper gives the
  loss of one pair only); 'mean' divides each direction by its number of anchors with a negative.
* ``lgur_id_loss(F)``: L_ID(F~) = (1/K) sum_k CE(W_k f_k + b_k, y): prototype k's own
  classifier on part k (raw, not normalised), averaged over the prototypes (the paper's 1/K sum;
  the released ``calculate_part_id`` with one ``Id_Loss`` per part).

The loss components of the composer (losses/make_loss.py; LOSS.<NAME>.W / W_SEQ):
  'lgur_id'     = L_ID(T_re) + L_ID(V_re) + L_ID(T) + L_ID(V_g)
  'lgur_rank_m' = L_RK(T_re, V_re) + L_RK(T, V_g)                (with 'lgur_id': the paper's L_M)
  'lgur_rank_g' = L_RK(T_re, T) + L_RK(V_re, V_g)                (the paper's L_G)
L = L_M + L_G is all three at weight 1. The released training script sums the same terms
(``id_loss + id_loss_dict`` = the four L_ID, each ``Id_Loss`` adding the image and the text CE;
the four ranking terms ``ranking_loss``, ``ranking_loss_dict``, ``..._dict_text``,
``..._dict_image``), so the default weights reproduce it; the grouping into three scheduled
components is PhaseReID's.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

from configs.validate import LGUR_RANK_NEGATIVES, LGUR_RANK_REDUCTIONS

__all__ = ["lgur_similarity", "lgur_ranking_loss", "lgur_id_loss", "lgur_components"]


def _flat(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1) if x.dim() > 2 else x
    return x if x.dtype == torch.float64 else x.float()


def lgur_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """s_ij = cos(concat a_i, concat b_j), (N, M); parts (N, K, O) or flat (N, D) features."""
    return F.normalize(_flat(a), dim=1) @ F.normalize(_flat(b), dim=1).t()


def _anchor_terms(s: torch.Tensor, pids: torch.Tensor, margin: float, negative: str,
                  generator: Optional[torch.Generator]):
    """(terms (N,), has_negative (N,) bool) for the anchors on the rows of ``s``."""
    n = s.shape[0]
    pos = s.diagonal()
    other = pids.view(-1, 1) != pids.view(1, -1)
    sd = s.detach()
    if negative == "hardest":
        cand = other
        score = sd.masked_fill(~cand, float("-inf"))
    else:   # random_semi_hard: s_ii - m < s_ij < s_ii, one drawn uniformly
        gap = sd - sd.diagonal().view(-1, 1) + margin
        cand = other & (gap > 0) & (gap < margin)
        u = torch.rand(n, n, generator=generator, device=s.device if generator is None
                       else generator.device).to(s.device)
        score = u.masked_fill(~cand, -1.0)
    has = cand.any(dim=1)
    neg_idx = score.argmax(dim=1)
    neg = s.gather(1, neg_idx.view(-1, 1)).squeeze(1)
    terms = F.relu(margin - pos + neg) * has.to(s.dtype)
    return terms, has


def lgur_ranking_loss(f1: torch.Tensor, f2: torch.Tensor, pids: torch.Tensor, *,
                      margin: float = 0.3, negative: str = "hardest", reduction: str = "sum",
                      generator: Optional[torch.Generator] = None,
                      return_parts: bool = False):
    """L_RK(F1, F2) (module docstring): F1 anchors on the rows of S, F2 anchors on its columns.

    Args:
        f1, f2: (N, K, O) parts (or (N, D)) of the same N pairs; raw (normalised here).
        pids: (N,) identities.
        margin: alpha (0.3).
        negative: 'hardest' | 'random_semi_hard'.
        reduction: 'sum' | 'mean' over the anchors that have a negative (per direction).
        generator: RNG of the semi-hard draw (None: torch's default RNG).
        return_parts: also return {'rows': ..., 'cols': ...} (detached).
    """
    if negative not in LGUR_RANK_NEGATIVES:
        raise ValueError(f"negative '{negative}' is not one of {list(LGUR_RANK_NEGATIVES)}")
    if reduction not in LGUR_RANK_REDUCTIONS:
        raise ValueError(f"reduction '{reduction}' is not one of {list(LGUR_RANK_REDUCTIONS)}")
    with torch.autocast(f1.device.type, enabled=False):
        s = lgur_similarity(f1, f2)
        sides = {}
        for name, mat in (("rows", s), ("cols", s.t())):
            terms, has = _anchor_terms(mat, pids, float(margin), negative, generator)
            total = terms.sum()
            if reduction == "mean":
                total = total / has.sum().clamp(min=1).to(total.dtype)
            sides[name] = total
        loss = sides["rows"] + sides["cols"]
    if return_parts:
        return loss, {k: v.detach() for k, v in sides.items()}
    return loss


def lgur_id_loss(parts: torch.Tensor, pids: torch.Tensor, weight: torch.Tensor,
                 bias: Optional[torch.Tensor] = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """L_ID = (1/K) sum_k CE(weight[k] parts[:, k] + bias[k], y).

    Args:
        parts: (N, K, O) raw part features.
        pids: (N,) class indices in 0..C-1.
        weight: (K, C, O) the K classifiers; bias: (K, C) or None.
        label_smoothing: epsilon of the CE target (0 = plain CE, LGUR).
    """
    with torch.autocast(parts.device.type, enabled=False):
        x = parts if parts.dtype == torch.float64 else parts.float()
        w = weight.to(x.dtype)
        logits = torch.einsum("nko,kco->nkc", x, w)
        if bias is not None:
            logits = logits + bias.to(x.dtype).unsqueeze(0)
        k = logits.shape[1]
        target = pids.view(-1, 1).expand(-1, k)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               label_smoothing=float(label_smoothing))


def lgur_components(outputs: Dict[str, torch.Tensor], pids: torch.Tensor, name: str, *,
                    margin: float = 0.3, negative: str = "hardest", reduction: str = "sum",
                    label_smoothing: float = 0.0) -> torch.Tensor:
    """The composer's component ``name`` ('lgur_id', 'lgur_rank_m', 'lgur_rank_g'; module
    docstring) from the model outputs ``lgur_v_re``, ``lgur_t_re``, ``lgur_t``, ``lgur_v_g``
    (and ``lgur_id_weight`` / ``lgur_id_bias``)."""
    v_re, t_re, t, v_g = (outputs[k] for k in ("lgur_v_re", "lgur_t_re", "lgur_t", "lgur_v_g"))
    if name == "lgur_id":
        w, b = outputs["lgur_id_weight"], outputs.get("lgur_id_bias")
        return sum(lgur_id_loss(f, pids, w, b, label_smoothing) for f in (t_re, v_re, t, v_g))
    rk = dict(margin=margin, negative=negative, reduction=reduction)
    if name == "lgur_rank_m":
        return lgur_ranking_loss(t_re, v_re, pids, **rk) + lgur_ranking_loss(t, v_g, pids, **rk)
    if name == "lgur_rank_g":
        return lgur_ranking_loss(t_re, t, pids, **rk) + lgur_ranking_loss(v_re, v_g, pids, **rk)
    raise ValueError(f"unknown LGUR loss component '{name}'")
