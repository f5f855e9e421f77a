"""Names of the files a training run writes into its OUTPUT_DIR (DESIGN.md section 2).

- ``transformer_<epoch>.pth``: weights + metadata of one epoch (``utils/checkpoint.py`` writes
  and reads them);
- ``resume.pth``: the state to continue after the last complete epoch.

Defined once here, torch-free, so the launcher and the bench scripts find a run's checkpoints
without importing torch.
"""
from __future__ import annotations

import os
import re
from typing import Dict

RESUME_FILE = "resume.pth"
CHECKPOINT_RE = re.compile(r"^transformer_(\d+)\.pth$")


def checkpoint_name(epoch: int) -> str:
    """``transformer_<epoch>.pth``."""
    return f"transformer_{int(epoch)}.pth"


def checkpoint_path(output_dir: str, epoch: int) -> str:
    return os.path.join(output_dir, checkpoint_name(epoch))


def list_checkpoints(output_dir: str) -> Dict[int, str]:
    """{epoch: path} of the transformer_<epoch>.pth files in ``output_dir``, by epoch."""
    if not os.path.isdir(output_dir):
        return {}
    found = {}
    for name in os.listdir(output_dir):
        match = CHECKPOINT_RE.match(name)
        if match:
            found[int(match.group(1))] = os.path.join(output_dir, name)
    return dict(sorted(found.items()))
