"""Atomic file writes: a temp file in the target's folder, flushed, fsync'ed, renamed over it.

A crash (or a kill) never leaves a truncated file under the final name: readers see the old file
or the new one. Torch-free, so the launcher and the summary schema (``utils/summary.py``) use it
without importing torch; ``utils/checkpoint.py`` writes checkpoints through the same helper.

The temporary, ``.tmp-<pid>@<host>-XXXXXXXX[.pth]``, gets the permissions of a plainly created
file (0o666 & ~umask, 0644 under the usual umask 022; mkstemp's own 0600 would hide checkpoints
from the rest of a group) before the rename. A writer killed by SIGKILL leaves its temporary
behind: every atomic write first removes the stale temporaries of its folder, those whose writer
is gone (``utils/tempfiles.py``), so the next run in a folder cleans up after a killed one.
"""
from __future__ import annotations

import errno
import os
import re
import tempfile
from typing import IO, Callable

from utils.tempfiles import owner_tag, remove_stale_temporaries

# The writer's temporaries: '.tmp-<owner>-' + mkstemp's 8 random characters [+ '.pth'];
# the owner part is optional so that nameless temporaries of earlier versions match too.
TEMP_RE = re.compile(r"^\.tmp-(?:(?P<owner>\d+@[^@]+)-)?[a-z0-9_]{8}(?:\.pth)?$")


def _umask() -> int:
    """The process's umask (read from /proc on Linux, else set-and-restore)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str, mode: str, write: Callable[[IO], None], suffix: str = "") -> None:
    """``write(f)`` into a temp file next to ``path`` (opened with ``mode``, 'w' or 'wb'),
    fsync, then rename over ``path``; the file gets 0o666 & ~umask, and stale temporaries of
    killed writers in the folder are removed first (module docstring)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(folder, TEMP_RE)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{owner_tag()}-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path} (the "
                          f"partial temporary file was removed; free space in {folder} and "
                          "rerun: training resumes after the last complete epoch)") from exc
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Atomically write ``text`` to ``path`` (configs, summaries, launcher records)."""
    atomic_write(path, "w", lambda f: f.write(text))
