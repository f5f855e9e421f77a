"""NT-Xent (SimCLR's normalised temperature-scaled cross-entropy), TBPS-CLIP's SS-I loss.

Reference: Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
(ICML 2020), the NT-Xent loss; TBPS-CLIP (Cao et al., AAAI 2024) ``model/tbps_model.py``
(``compute_simclr_loss``, ``ss``: two SimCLR views -> image encoder -> ``simclr_mlp`` 512 -> 128
-> 512 -> L2; temperature 0.1, weight ``ss_ratio`` 0.4; REFERENCES.md section 5 SS-I).

For the 2N views z_1..z_2N of N images (views 2k-1 and 2k of image k), sim = cosine:

    l(i, j) = -log [ exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) ]
    L = 1/(2N) sum_k [ l(2k-1, 2k) + l(2k, 2k-1) ]

Every view is an anchor once; its positive is the other view of its image; the other 2N - 2
views are its negatives. Under DDP (``columns``) the anchors are the local 2N views and the
candidates the 2M views of every process (TBPS-CLIP gathers both views), which is the mean of
the processes' losses as for every loss of losses/tbps.py (local rows, gathered columns).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .tbps import Columns, _compute, _full_precision

__all__ = ["nt_xent_loss"]


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, *,
                 columns: Optional[Columns] = None) -> torch.Tensor:
    """NT-Xent over the 2N views (module docstring).

    Args:
        z1, z2: (N, D) raw projections of the first and the second view of N images (row i of
            both = image i); L2-normalised here, the inputs are not modified.
        temperature: tau (TBPS-CLIP 0.1).
        columns: ``losses.tbps.gather_columns(z1, z2)``: ``img`` = the first views and ``txt`` =
            the second views of every process (M rows each), ``offset`` = the local rows' first
            index among them; None = the local batch.

    Returns:
        scalar: 1/2 [mean over first-view anchors + mean over second-view anchors].

    Example:
        >>> nt_xent_loss(torch.randn(4, 8), torch.randn(4, 8), 0.1)
    """
    if z1.dim() != 2 or z1.shape != z2.shape or len(z1) == 0:
        raise ValueError(f"z1 and z2 must be non-empty (N, D) of one shape, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = len(z1)
    if columns is None:
        all1, all2, offset = z1, z2, 0
    else:
        all1, all2, offset = columns.img, columns.txt, columns.offset
        if all1.shape != all2.shape or all1.shape[1:] != z1.shape[1:] \
                or not 0 <= offset <= len(all1) - n:
            raise ValueError(f"columns ({tuple(all1.shape)}, {tuple(all2.shape)}, offset "
                             f"{offset}) do not fit {n} local rows of size {z1.shape[1]}")
    with _full_precision(z1):
        a, b = F.normalize(_compute(z1), dim=1), F.normalize(_compute(z2), dim=1)
        ca, cb = F.normalize(_compute(all1), dim=1), F.normalize(_compute(all2), dim=1)
        target = torch.arange(n, device=a.device) + offset
        self_mask = torch.zeros(n, len(ca), dtype=torch.bool, device=a.device)
        self_mask[torch.arange(n, device=a.device), target] = True
        # anchors of view 1: [sim to every view 2 | sim to every other view 1]; the positive is
        # column ``target`` of the first block
        logits_a = torch.cat([a @ cb.t(), (a @ ca.t()).masked_fill(self_mask, float("-inf"))], 1)
        logits_b = torch.cat([b @ ca.t(), (b @ cb.t()).masked_fill(self_mask, float("-inf"))], 1)
        loss_a = F.cross_entropy(logits_a / temperature, target)
        loss_b = F.cross_entropy(logits_b / temperature, target)
        return 0.5 * (loss_a + loss_b)
