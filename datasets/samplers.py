"""P x K identity batch samplers (single process and DDP).

Semantics follow TransReID / reid-strong-baseline ``RandomIdentitySampler``: for every identity
its image indices are shuffled (identities with fewer than K images are first padded by
sampling WITH replacement up to K) and cut into chunks of K (an incomplete last chunk is
dropped); a batch takes one chunk from each of P identities drawn without replacement among
those with chunks left; the epoch ends when fewer than P identities have chunks left.

Differences from the reference, on purpose:
- batches are yielded as index lists (a batch sampler), so "every batch is P ids x K images"
  holds by construction;
- the order is a pure function of (seed, epoch): ``set_epoch`` must be called each epoch and a
  resumed run reproduces the same batches;
- the DDP version draws P x world_size identities per step from one shared plan and gives rank r
  the r-th group of P, so ranks see disjoint identities at every step and the same number of
  batches (the reference DDP sampler: docs/reference_differences.md).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterator, List, Sequence

import numpy as np
from torch.utils.data import Sampler


def _group_by_pid(pids: Sequence[int]) -> Dict[int, List[int]]:
    groups: Dict[int, List[int]] = defaultdict(list)
    for index, pid in enumerate(pids):
        groups[int(pid)].append(index)
    return dict(sorted(groups.items()))


def check_pk_batch(batch_size: int, num_instances: int,
                   where: str = "DATALOADER.NUM_INSTANCE") -> None:
    """A P x K batch needs K >= 1 dividing the (per-process) batch: P = batch / K is whole."""
    if num_instances < 1 or batch_size % num_instances:
        raise ValueError(f"batch size {batch_size} (SOLVER.IMS_PER_BATCH per process) is not a "
                         f"multiple of K = {num_instances} ({where}): P = batch / K must be whole")


def plan_pk_steps(groups: Dict[int, List[int]], num_instances: int, ids_per_step: int,
                  rng: np.random.Generator) -> List[List[List[int]]]:
    """One epoch's plan: a list of steps, each a list of ``ids_per_step`` chunks of K indices."""
    chunks: Dict[int, List[List[int]]] = {}
    for pid, idxs in groups.items():
        idxs = np.asarray(idxs)
        if len(idxs) < num_instances:
            idxs = rng.choice(idxs, size=num_instances, replace=True)
        idxs = rng.permutation(idxs)
        usable = len(idxs) - len(idxs) % num_instances
        chunks[pid] = [idxs[i:i + num_instances].tolist() for i in range(0, usable, num_instances)]
    steps = []
    available = [pid for pid in chunks if chunks[pid]]
    while len(available) >= ids_per_step:
        chosen = rng.choice(len(available), size=ids_per_step, replace=False)
        step = []
        for j in chosen:
            pid = available[j]
            step.append(chunks[pid].pop(0))
        steps.append(step)
        available = [pid for pid in available if chunks[pid]]
    return steps


class PKBatchSampler(Sampler):
    """Yields batches of P identities x K images (index lists); with num_replicas > 1, the DDP
    version: rank ``rank`` gets its own P identities at every step.

    Args:
        pids: the training pid of every dataset item (index i -> pids[i]).
        batch_size: images per batch (P x K); must be divisible by num_instances.
        num_instances: K, images per identity in a batch.
        seed: base seed; the epoch's order is derived from (seed, epoch).
        num_replicas, rank: DDP world size and this process's rank; ``batch_size`` is then the
            per-process batch (SOLVER.IMS_PER_BATCH / world size). All ranks build the same plan
            from (seed, epoch), so they agree on the number of steps without communication.

    Example:
        >>> sampler = PKBatchSampler(pids, batch_size=64, num_instances=4, seed=0)
        >>> sampler.set_epoch(1)
        >>> loader = DataLoader(dataset, batch_sampler=sampler)
    """

    def __init__(self, pids: Sequence[int], batch_size: int, num_instances: int, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        check_pk_batch(batch_size, num_instances)
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for world size {num_replicas}")
        self.groups = _group_by_pid(pids)
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.num_pids_per_batch = batch_size // num_instances
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._cached = (None, None)
        needed = self.num_pids_per_batch * num_replicas
        if len(self.groups) < needed:
            raise ValueError(
                f"P x K sampling needs {needed} identities per step (P={self.num_pids_per_batch}"
                f" x world size {num_replicas}) but the training set has {len(self.groups)}; "
                "lower SOLVER.IMS_PER_BATCH or raise DATALOADER.NUM_INSTANCE")

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches are yielded (1-based, as the training loop counts)."""
        self.epoch = epoch

    def _plan(self) -> List[List[List[int]]]:
        # cached per epoch: __len__ and __iter__ must agree and the plan costs a full pass
        if self._cached[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            steps = plan_pk_steps(self.groups, self.num_instances,
                                  self.num_pids_per_batch * self.num_replicas, rng)
            self._cached = (self.epoch, steps)
        return self._cached[1]

    def __iter__(self) -> Iterator[List[int]]:
        p = self.num_pids_per_batch
        for step in self._plan():
            mine = step[self.rank * p:(self.rank + 1) * p]
            yield [index for chunk in mine for index in chunk]

    def __len__(self) -> int:
        return len(self._plan())


class RandomBatchSampler(Sampler):
    """Plain shuffled batches (DATALOADER.SAMPLER 'random'), deterministic given (seed, epoch).

    In DDP each rank takes every world_size-th batch-sized slice of one shared permutation.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0):
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[List[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)
        for step in range(len(self)):
            start = (step * self.num_replicas + self.rank) * self.batch_size
            yield order[start:start + self.batch_size].tolist()

    def __len__(self) -> int:
        return self.num_items // (self.batch_size * self.num_replicas)
