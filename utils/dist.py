"""Device and distributed helpers shared by train.py, test.py, the data loaders and the trainer.

- ``resolve_device(cfg)``: MODEL.DEVICE 'auto' -> CUDA when available; under DDP the process's
  local GPU (torchrun's LOCAL_RANK).
- ``init_distributed(cfg)``: join the torchrun process group (NCCL on GPU, gloo on CPU) with
  the collective timeout MODEL.DIST_TIMEOUT_S.
- ``timeout_hint(cfg)``: what to tell the user when a collective timed out.
- ``world_info()``: (world size, rank), (1, 0) without a process group.
- ``unwrap(model)``: the plain module inside a DDP wrapper.
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
