"""Pairwise identity masks of a batch, shared by the metric and contrastive losses.

For labels y_1..y_N (and optionally cameras c_1..c_N), all (N, N) bool:

    same[i, j]     = y_i == y_j            (the diagonal included)
    eye[i, j]      = i == j
    pos[i, j]      = same and i != j       (the positives of anchor i)
    neg[i, j]      = y_i != y_j            (the negatives of anchor i)
    same_cam[i, j] = c_i == c_j            (needs camids)

Each mask is built on first use, so a loss pays only for the ones it reads.
"""
from __future__ import annotations

from functools import cached_property
from typing import Optional

import torch


class PidMasks:
    """The masks of the module docstring for ``pids`` (N,) and optional ``camids`` (N,)."""

    def __init__(self, pids: torch.Tensor, camids: Optional[torch.Tensor] = None):
        self.pids = pids
        self.camids = camids

    @cached_property
    def same(self) -> torch.Tensor:
        return self.pids.view(-1, 1) == self.pids.view(1, -1)

    @cached_property
    def eye(self) -> torch.Tensor:
        return torch.eye(len(self.pids), dtype=torch.bool, device=self.pids.device)

    @cached_property
    def pos(self) -> torch.Tensor:
        return self.same & ~self.eye

    @cached_property
    def neg(self) -> torch.Tensor:
        return ~self.same

    @cached_property
    def same_cam(self) -> torch.Tensor:
        if self.camids is None:
            raise ValueError("same_cam needs camids: pass them to pid_masks(pids, camids)")
        return self.camids.view(-1, 1) == self.camids.view(1, -1)


def pid_masks(pids: torch.Tensor, camids: Optional[torch.Tensor] = None) -> PidMasks:
    """Pairwise identity (and camera) masks of a batch (see the module docstring).

    Example:
        >>> m = pid_masks(torch.tensor([0, 0, 1]))
        >>> m.pos.tolist()
        [[False, True, False], [True, False, False], [False, False, False]]
    """
    return PidMasks(pids, camids)
