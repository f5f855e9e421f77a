"""Atomic file writes: a temp file in the target's folder, flushed, fsync'ed, renamed over it.

A crash (or a kill) never leaves a truncated file under the final name: readers see the old file
or the new one. Torch-free, so the launcher and the summary schema (``utils/summary.py``) use it
without importing torch; ``utils/checkpoint.py`` writes checkpoints through the same helper.
"""
from __future__ import annotations

import os
import tempfile
from typing import IO, Callable


def atomic_write(path: str, mode: str, write: Callable[[IO], None], suffix: str = "") -> None:
    """``write(f)`` into a temp file next to ``path`` (opened with ``mode``, 'w' or 'wb'),
    fsync, then rename over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Atomically write ``text`` to ``path`` (configs, summaries, launcher records)."""
    atomic_write(path, "w", lambda f: f.write(text))
