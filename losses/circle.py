"""Circle loss on cosine similarities (Sun et al., "Circle Loss", CVPR 2020).

With s the cosine similarity of L2-normalised features, margin m and scale gamma:

    alpha_p = clamp_min(1 + m - s_p, 0),  alpha_n = clamp_min(s_n + m, 0)   (both detached)
    Delta_p = 1 - m,                      Delta_n = m
    logit_p = -gamma * alpha_p * (s_p - Delta_p),  logit_n = gamma * alpha_n * (s_n - Delta_n)
    L = softplus(logsumexp(logit_p) + logsumexp(logit_n))

The alphas are detached as in the paper's reference code: they weight each similarity by its
distance from the optimum but are not themselves optimised.

Two ways to form the sets:

- ``pairwise_circle_loss`` follows fast-reid ``pairwise_circleloss``: one L per anchor i over
  its positives (same pid, j != i) and negatives (other pids), then the mean over anchors.
  Deliberate difference: anchors without a positive or without a negative are excluded from
  the mean, so the loss scale does not depend on how many such anchors a batch has (fast-reid
  counts them as ~0; docs/reference_differences.md); 0 with a graph when none is valid.
- ``batch_circle_loss`` follows TinyZeaMays/CircleLoss (``convert_label_to_similarity`` +
  ``CircleLoss``): every unordered pair i < j once, positives = same-pid pairs, negatives =
  the other pairs, and a single L over the whole batch; 0 with a graph when there is no
  positive or no negative pair.

Excluded entries are masked with -inf inside the logsumexp (``masked_logsumexp``), which is
exact, unlike adding a large finite negative constant.
"""
import torch
import torch.nn.functional as F

from .masks import PidMasks, pid_masks


def _compute_dtype(x: torch.Tensor) -> torch.Tensor:
    """x in float32 at least (half/bfloat16 -> float32, float64 kept)."""
    return x if x.dtype == torch.float64 else x.float()


def masked_logsumexp(x: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log sum_{mask} exp(x) along ``dim``; -inf where the mask is empty.

    Excluded entries are filled with -inf, which is exact (a large finite negative constant is
    not). The gradient stays finite: an all -inf slice has a NaN logsumexp backward only at
    the filled entries, and masked_fill's backward sets exactly those to zero.
    """
    return torch.logsumexp(x.masked_fill(~mask, float("-inf")), dim)


def _similarities(feats: torch.Tensor, pids: torch.Tensor) -> tuple[torch.Tensor, PidMasks]:
    """(cosine similarity matrix of the L2-normalised features, the batch's pid masks)."""
    x = F.normalize(_compute_dtype(feats), dim=1)
    return x @ x.t(), pid_masks(pids)


def circle_logits(s: torch.Tensor, margin: float, gamma: float):
    """(logit_p, logit_n) of the module docstring for every similarity in s (any shape); the
    alphas do not carry gradients."""
    alpha_p = (1.0 + margin - s.detach()).clamp_min(0.0)
    alpha_n = (s.detach() + margin).clamp_min(0.0)
    logit_p = -gamma * alpha_p * (s - (1.0 - margin))
    logit_n = gamma * alpha_n * (s - margin)
    return logit_p, logit_n


def pairwise_circle_loss(feats: torch.Tensor, pids: torch.Tensor, margin: float = 0.25,
                         gamma: float = 128.0) -> torch.Tensor:
    """Per-anchor circle loss, mean over anchors with a positive and a negative.

    Args:
        feats: (B, D) features (normalised inside).
        pids: (B,) identity labels.
        margin: relaxation m.
        gamma: scale.

    Example:
        >>> pairwise_circle_loss(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    """
    s, masks = _similarities(feats, pids)
    pos_mask, neg_mask = masks.pos, masks.neg
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not bool(valid.any()):
        return feats.sum() * 0.0
    logit_p, logit_n = circle_logits(s, margin, gamma)
    z = masked_logsumexp(logit_p, pos_mask, 1) + masked_logsumexp(logit_n, neg_mask, 1)
    # invalid anchors have z = -inf; replace before softplus so they add neither value nor NaN
    z = torch.where(valid, z, torch.zeros_like(z))
    return F.softplus(z)[valid].mean()


def batch_circle_loss(feats: torch.Tensor, pids: torch.Tensor, margin: float = 0.25,
                      gamma: float = 128.0) -> torch.Tensor:
    """One circle loss over all unordered pairs of the batch (TinyZeaMays semantics); arguments
    as :func:`pairwise_circle_loss`."""
    s, masks = _similarities(feats, pids)
    same = masks.same
    # i < j: every unordered pair once, the diagonal never
    upper = torch.ones_like(same).triu(diagonal=1)
    return circle_loss_over_pairs(s, same & upper, ~same & upper, margin, gamma)


def circle_loss_over_pairs(s: torch.Tensor, pos_mask: torch.Tensor, neg_mask: torch.Tensor,
                           margin: float, gamma: float) -> torch.Tensor:
    """ONE circle loss over the whole matrix: softplus(LSE_{pos_mask} logit_p + LSE_{neg_mask}
    logit_n) on the similarities ``s`` (any shape) and bool masks of its shape; 0 with a graph
    when either mask is empty. ``batch_circle_loss`` and the text-based person search strategies
    (losses/circle_tbps.py) are this function with their masks."""
    if not (bool(pos_mask.any()) and bool(neg_mask.any())):
        return s.sum() * 0.0
    logit_p, logit_n = circle_logits(s, margin, gamma)
    z = (masked_logsumexp(logit_p.flatten(), pos_mask.flatten(), 0)
         + masked_logsumexp(logit_n.flatten(), neg_mask.flatten(), 0))
    return F.softplus(z)
