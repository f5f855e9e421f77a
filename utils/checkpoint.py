"""Checkpoint files: atomic writes, weights + metadata, resume state (DESIGN.md section 2).

- ``transformer_<epoch>.pth``: {'model': state_dict, 'meta': {'config': YAML string, 'epoch',
  'num_classes', 'num_cams', 'num_views', 'format', 'excluded', 'lora_merged'}} -- enough for
  test.py to evaluate the file on its own; training-only modules (``excluded`` prefixes: the
  SupCon projection, the TG-MIM head and text encoder) are left out. A model with LoRA adapters
  (MODEL.TBPS.LORA) is saved merged, in the plain layout (``model.lora.merged_state_dict``;
  ``lora_merged`` True), so test.py builds it without adapters.
- ``resume.pth`` (rewritten after every completed epoch): the model, optimiser(s), scheduler,
  AMP scaler, RNG states, sampler position and phase, so training continues exactly where the
  last complete epoch ended, and the resolved config (YAML) it was trained with: train.py
  continues it only under the same config (utils/segments.py).

Every file holds only tensors and plain Python values, so it loads with
``torch.load(..., weights_only=True)``: opening a downloaded weight file never runs code.
Writes go to a temporary file in the same folder that is flushed, fsync'ed and renamed over
the target, so a crash never leaves a truncated checkpoint under the final name
(``utils/atomic.py``: the file's permissions, stale temporaries of killed writers removed).
"""
from __future__ import annotations

import os
import random
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from utils.weights_io import WeightFileError, read_weights

from utils.atomic import atomic_write
from utils.run_files import RESUME_FILE

CHECKPOINT_FORMAT = "phasereid-v1"


def atomic_torch_save(obj, path: str) -> None:
    """torch.save to a temp file next to ``path``, fsync, then rename over ``path``."""
    atomic_write(path, "wb", lambda f: torch.save(obj, f), suffix=".pth")


def model_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The state dict of a (possibly DDP-wrapped) model."""
    return (model.module if hasattr(model, "module") else model).state_dict()


def save_checkpoint(path: str, model, cfg, epoch: int, num_classes: int, num_cams: int,
                    num_views: int, exclude_prefixes: Sequence[str] = (),
                    merged_lora_state: Optional[Dict[str, torch.Tensor]] = None,
                    cost: Optional[dict] = None) -> None:
    """Write weights + metadata (resolved config as YAML, epoch, class/camera/view counts).

    ``exclude_prefixes``: parameter-name prefixes left out of the file (training-only modules
    such as a text encoder, which the test feature does not use; resume.pth keeps them). The
    metadata lists them under 'excluded'. ``merged_lora_state``: the state dict to write instead
    of the model's, for a model with LoRA adapters (``model.lora.merged_state_dict``: adapters
    merged, plain layout); the metadata then says ``lora_merged`` True. ``cost``: the training
    cost so far (plain values, ``processor.processor.Trainer.cost``), stored as meta['cost'].
    """
    prefixes = tuple(exclude_prefixes)
    full = model_state_dict(model) if merged_lora_state is None else merged_lora_state
    state = {k: v for k, v in full.items() if not (prefixes and k.startswith(prefixes))}
    meta = {"format": CHECKPOINT_FORMAT, "config": cfg.dump(), "epoch": int(epoch),
            "num_classes": int(num_classes), "num_cams": int(num_cams),
            "num_views": int(num_views), "excluded": list(prefixes),
            "lora_merged": merged_lora_state is not None}
    if cost is not None:
        meta["cost"] = dict(cost)
    atomic_torch_save({"model": state, "meta": meta}, path)


def load_checkpoint(path: str, mmap: bool = False) -> dict:
    """Read a checkpoint file (``transformer_<epoch>.pth``, ``resume.pth`` or a plain weight
    file) through the one weight reader, ``utils.weights_io.read_weights`` (weights_only).

    Args:
        path: the file.
        mmap: memory-map the file instead of reading it whole (to read one field, e.g. the
            epoch of a large resume.pth).

    Returns:
        The object stored in the file (a dict for every file PhaseReID writes).

    Raises:
        FileNotFoundError: no such file (the message names it).
        RuntimeError: the file is truncated, corrupt or holds more than tensors and plain values
            (the message names it and says why).
    """
    try:
        obj, _ = read_weights(path, mmap=mmap)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except WeightFileError as exc:
        raise RuntimeError(f"cannot load checkpoint {path}: {exc.reason}") from exc
    return obj


def checkpoint_meta(ckpt: dict, path: str) -> dict:
    """The metadata of a PhaseReID checkpoint, or an error saying what the file is not."""
    if not isinstance(ckpt, dict) or "meta" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path} is not a PhaseReID checkpoint (no 'meta'/'model'); pass the "
                         "config with --config_file and load plain weights through "
                         "MODEL.PRETRAIN_CHOICE 'imagenet'")
    return ckpt["meta"]


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states as tensors / plain values."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy(), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(value):
    """random.setstate needs tuples; a save/load round trip may have turned them into lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_to_tuple(v) for v in value)
    return value


def save_resume_state(output_dir: str, epoch: int, model, optimizers: Dict[str, object],
                      scheduler, scaler, extra: Optional[dict] = None, *, config: str) -> str:
    """Rewrite OUTPUT_DIR/resume.pth with everything needed to continue after ``epoch``;
    ``config`` is the resolved config (``cfg.dump()``) the epochs were trained with."""
    if not isinstance(config, str) or not config:
        raise TypeError("save_resume_state needs the resolved config as a YAML string "
                        "(cfg.dump())")
    state = {"format": CHECKPOINT_FORMAT, "epoch": int(epoch), "config": config,
             "model": model_state_dict(model),
             "optimizers": {k: opt.state_dict() for k, opt in optimizers.items()},
             "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None,
             "rng": rng_state(), "extra": extra or {}}
    path = os.path.join(output_dir, RESUME_FILE)
    atomic_torch_save(state, path)
    return path


def load_resume_state(output_dir: str) -> Optional[dict]:
    """The resume state in ``output_dir``, or None when training has not completed an epoch."""
    path = os.path.join(output_dir, RESUME_FILE)
    if not os.path.isfile(path):
        return None
    return load_checkpoint(path)
