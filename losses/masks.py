"""Pairwise identity masks of a batch, shared by the metric and contrastive losses.

For labels y_1..y_N (and optionally cameras c_1..c_N), all (N, N) bool:

    same[i, j]     = y_i == y_j            (the diagonal included)
    eye[i, j]      = i == j
    pos[i, j]      = same and i != j       (the positives of anchor i)
    neg[i, j]      = y_i != y_j            (the negatives of anchor i)
    same_cam[i, j] = c_i == c_j            (needs camids)

With ``col_pids`` y'_1..y'_M (other column labels, e.g. the identities of a batch gathered from
every DDP process), ``same`` and ``neg`` are the (N, M) masks y_i == y'_j and y_i != y'_j;
``eye``, ``pos`` and ``same_cam`` are defined for the square case only.

Each mask is built on first use, so a loss pays only for the ones it reads.
"""
from __future__ import annotations

from functools import cached_property
from typing import Optional

import torch


class PidMasks:
    """The masks of the module docstring for ``pids`` (N,), optional ``camids`` (N,) and optional
    column labels ``col_pids`` (M,)."""

    def __init__(self, pids: torch.Tensor, camids: Optional[torch.Tensor] = None,
                 col_pids: Optional[torch.Tensor] = None):
        self.pids = pids
        self.camids = camids
        self.col_pids = col_pids

    def _square(self, mask: str) -> None:
        if self.col_pids is not None:
            raise ValueError(f"the '{mask}' mask needs rows and columns from the same batch; "
                             "it is not defined with col_pids")

    @cached_property
    def same(self) -> torch.Tensor:
        cols = self.pids if self.col_pids is None else self.col_pids
        return self.pids.view(-1, 1) == cols.view(1, -1)

    @cached_property
    def eye(self) -> torch.Tensor:
        self._square("eye")
        return torch.eye(len(self.pids), dtype=torch.bool, device=self.pids.device)

    @cached_property
    def pos(self) -> torch.Tensor:
        return self.same & ~self.eye

    @cached_property
    def neg(self) -> torch.Tensor:
        return ~self.same

    @cached_property
    def same_cam(self) -> torch.Tensor:
        self._square("same_cam")
        if self.camids is None:
            raise ValueError("same_cam needs camids: pass them to pid_masks(pids, camids)")
        return self.camids.view(-1, 1) == self.camids.view(1, -1)


def pid_masks(pids: torch.Tensor, camids: Optional[torch.Tensor] = None, *,
              col_pids: Optional[torch.Tensor] = None) -> PidMasks:
    """Pairwise identity (and camera) masks of a batch (see the module docstring).

    Example:
        >>> m = pid_masks(torch.tensor([0, 0, 1]))
        >>> m.pos.tolist()
        [[False, True, False], [True, False, False], [False, False, False]]
        >>> pid_masks(torch.tensor([0, 1]), col_pids=torch.tensor([1, 0, 0])).same.tolist()
        [[False, True, True], [True, False, False]]
    """
    return PidMasks(pids, camids, col_pids)
