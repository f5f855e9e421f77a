"""Epoch-wise learning-rate schedules, stepped at the start of every (1-based) epoch.

'cosine' = TransReID's timm ``CosineLRScheduler(t_initial=MAX_EPOCHS, lr_min=BASE_LR *
COSINE_MIN_FACTOR, warmup_t=WARMUP_EPOCHS, warmup_lr_init=BASE_LR * WARMUP_FACTOR)`` called as
``scheduler.step(epoch)`` with the 1-based epoch t:
    t <  warmup: lr = w0 + t (base - w0) / warmup
    t >= warmup: lr = min + (base - min) (1 + cos(pi t / MAX_EPOCHS)) / 2   (cosine not offset)
'multistep' = reid-strong-baseline's WarmupMultiStepLR, also stepped at epoch start (t = epoch):
    lr = base * warmup(t) * GAMMA ** (number of STEPS <= t),
    warmup(t) = WARMUP_FACTOR (1 - t / warmup) + t / warmup for t < warmup, else 1.
Each parameter group gets lr(t) * its ``lr_scale``.
"""
from __future__ import annotations

import bisect
import math

from configs.validate import SCHEDULERS


class EpochLRScheduler:
    """Sets the optimiser's learning rates for an epoch; ``step(epoch)`` at every epoch start."""

    def __init__(self, cfg, optimizer):
        s = cfg.SOLVER
        if s.SCHEDULER not in SCHEDULERS:
            raise ValueError(f"SOLVER.SCHEDULER '{s.SCHEDULER}' is not one of {list(SCHEDULERS)}")
        if s.SCHEDULER == "multistep" and list(s.STEPS) != sorted(s.STEPS):
            raise ValueError(f"SOLVER.STEPS {list(s.STEPS)} must be increasing")
        self.optimizer = optimizer
        self.kind = s.SCHEDULER
        self.base_lr = s.BASE_LR
        self.max_epochs = s.MAX_EPOCHS
        self.warmup = s.WARMUP_EPOCHS
        self.warmup_factor = s.WARMUP_FACTOR
        self.min_lr = s.BASE_LR * s.COSINE_MIN_FACTOR
        self.steps = list(s.STEPS)
        self.gamma = s.GAMMA
        self.last_epoch = 0

    def lr_at(self, t: int) -> float:
        """The base learning rate at (1-based) epoch t."""
        if self.kind == "cosine":
            if t < self.warmup:
                w0 = self.base_lr * self.warmup_factor
                return w0 + t * (self.base_lr - w0) / self.warmup
            return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (
                1 + math.cos(math.pi * t / self.max_epochs))
        factor = 1.0
        if t < self.warmup:
            alpha = t / self.warmup
            factor = self.warmup_factor * (1 - alpha) + alpha
        return self.base_lr * factor * self.gamma ** bisect.bisect_right(self.steps, t)

    def step(self, epoch: int) -> float:
        lr = self.lr_at(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.last_epoch = epoch
        return lr

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = state["last_epoch"]


def make_scheduler(cfg, optimizer) -> EpochLRScheduler:
    return EpochLRScheduler(cfg, optimizer)
