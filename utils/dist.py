"""Device and distributed helpers shared by train.py, test.py, the data loaders and the trainer.

- ``resolve_device(cfg)``: MODEL.DEVICE 'auto' -> CUDA when available; under DDP the process's
  local GPU (torchrun's LOCAL_RANK).
- ``init_distributed(cfg)``: join the torchrun process group (NCCL on GPU, gloo on CPU) with
  the collective timeout MODEL.DIST_TIMEOUT_S.
- ``timeout_hint(cfg)``: what to tell the user when a collective timed out.
- ``world_info()``: (world size, rank), (1, 0) without a process group.
- ``unwrap(model)``: the plain module inside a DDP wrapper.
- ``all_gather_with_grad(x)``: the rows of every process, concatenated in rank order, with the
  gradient flowing back to each process's own rows (cross-batch negatives for contrastive losses).
"""
from __future__ import annotations

import datetime
import os
from typing import Callable, Optional, Tuple

import torch
import torch.distributed as dist


def resolve_device(cfg) -> torch.device:
    """MODEL.DEVICE 'auto' -> CUDA when available; under DDP, the process's local GPU."""
    name = cfg.MODEL.DEVICE
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"MODEL.DEVICE '{cfg.MODEL.DEVICE}' but CUDA is not available; "
                           "use MODEL.DEVICE cpu")
    if cfg.MODEL.DIST_TRAIN and name == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init_distributed(cfg) -> int:
    """Join the torchrun process group (NCCL on GPU, gloo on CPU); returns the rank.

    Every collective (and the rendezvous) fails after MODEL.DIST_TIMEOUT_S seconds instead of
    torch's 30 minutes, so one stuck or dead rank stops the job.
    """
    if not cfg.MODEL.DIST_TRAIN:
        return 0
    if "RANK" not in os.environ:
        raise RuntimeError("MODEL.DIST_TRAIN True needs torchrun (RANK/WORLD_SIZE not set): "
                           "torchrun --nproc_per_node N train.py --config_file CFG ...")
    if cfg.MODEL.DIST_TIMEOUT_S <= 0:
        raise ValueError(f"MODEL.DIST_TIMEOUT_S must be > 0 seconds, got {cfg.MODEL.DIST_TIMEOUT_S}")
    backend = "nccl" if torch.cuda.is_available() and cfg.MODEL.DEVICE != "cpu" else "gloo"
    dist.init_process_group(backend=backend,
                            timeout=datetime.timedelta(seconds=cfg.MODEL.DIST_TIMEOUT_S))
    return dist.get_rank()


def timeout_hint(cfg) -> Callable[[BaseException], Optional[str]]:
    """``hint(exc)`` for utils.logger.log_crash: a line explaining a timed-out collective."""
    def hint(exc: BaseException) -> Optional[str]:
        if not cfg.MODEL.DIST_TRAIN or "timed out" not in str(exc).lower():
            return None
        return (f"A DDP collective timed out after MODEL.DIST_TIMEOUT_S = "
                f"{cfg.MODEL.DIST_TIMEOUT_S} s: another process stopped or is stuck (see its "
                "output). If the processes only waited for rank 0 (dataset generation, "
                "evaluation), raise MODEL.DIST_TIMEOUT_S.")
    return hint


def world_info() -> Tuple[int, int]:
    """(world size, rank): (1, 0) unless torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (evaluation runs on the plain module, on rank 0 only)."""
    return model.module if hasattr(model, "module") else model


class _AllGatherWithGrad(torch.autograd.Function):
    """cat(x_0, ..., x_{W-1}) forward; backward all-reduces (sums) the gradient of the gathered
    tensor over the processes and returns this process's rows of the sum."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.rows = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()     # all_reduce works in place; autograd owns grad
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = ctx.rank * ctx.rows
        return grad[start:start + ctx.rows], None


def all_gather_with_grad(x: torch.Tensor, group=None) -> torch.Tensor:
    """The (B, ...) tensors of every process concatenated in rank order: (W * B, ...).

    Without an initialised process group (or with one process) ``x`` itself is returned. Every
    process must call it (it is a collective) with the same number of rows: a different count is
    a ``ValueError`` on every process, raised before the data are exchanged.

    Gradient: a loss L_r on process r may use the gathered rows of every process. The backward
    sums the gradients w.r.t. the gathered tensor over all processes (all-reduce) and keeps this
    process's rows, so process r receives d(sum_s L_s)/dx_r: the gradient of the sum of all
    processes' losses w.r.t. its own rows, including the terms where other processes use them as
    negatives. DDP then averages parameter gradients over the W processes, so the step follows
    the gradient of mean_s L_s (TBPS-CLIP ``model/shared_modules.py`` ``AllGather`` computes the
    same; torch.distributed.nn.all_gather does it with reduce-scatter, which gloo lacks).

    The cheaper alternative (all-gather without gradient, then put the local tensor back into its
    slot, as open_clip's ``gather_features(gather_with_grad=False)``) gives process r only
    dL_r/dx_r. That is enough when every process computes the whole-batch loss (global rows
    and columns), but not for PhaseReID's contrastive losses, whose rows are the local batch and
    whose columns are the gathered one: the terms where other processes' rows look at x_r as a
    column would be lost.

    Example:
        >>> feats_all = all_gather_with_grad(feats)   # (W * B, D); (B, D) outside DDP
    """
    if not (dist.is_available() and dist.is_initialized()):
        return x
    world = dist.get_world_size(group)
    if world == 1:
        return x
    rows = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    counts = [torch.empty_like(rows) for _ in range(world)]
    dist.all_gather(counts, rows, group=group)
    counts = [int(c.item()) for c in counts]
    if len(set(counts)) > 1:
        raise ValueError(f"all_gather_with_grad needs the same number of rows on every process, "
                         f"got {counts} (rank order); use a sampler that gives every process "
                         "equal batches (drop the last incomplete batch)")
    return _AllGatherWithGrad.apply(x, group)
