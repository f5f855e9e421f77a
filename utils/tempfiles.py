"""Temporary files left by killed writers: whose they are, when they are stale, removing them.

Atomic writers (``utils/checkpoint.py``, the SynthPedes generator) write into a temporary file
or folder next to the target and rename it at the end. A process killed with SIGKILL cannot
remove its temporary (up to a full checkpoint or a whole dataset in size), so the next run in
that folder does, but only when the owner is provably gone:

- the temporary's name carries its owner, ``<pid>@<host>`` (:func:`owner_tag`);
- owner on THIS host: stale iff no process with that pid exists (``os.kill(pid, 0)`` raises
  ProcessLookupError). A live owner's file is never touched; a reused pid only keeps a stale
  file longer;
- owner on another host (a shared file system), or a name without an owner (written before
  owners were recorded): stale iff not modified for ``STALE_AFTER_SECONDS`` (24 h): a pid from
  another machine says nothing here, and no writer leaves its file untouched that long.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import time
from typing import List, Optional, Pattern

logger = logging.getLogger("phasereid")

STALE_AFTER_SECONDS = 24 * 3600

# '@' separates pid and host in a name, so it is removed from the host name.
_OWNER_RE = re.compile(r"^(?P<pid>\d+)@(?P<host>[^@]+)$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "unknown-host"


def owner_tag() -> str:
    """``<pid>@<host>`` of the calling process, for a temporary's name (call it at write time:
    a forked process has its own pid)."""
    return f"{os.getpid()}@{_host()}"


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this machine (also when it belongs to another
    user, or is a zombie not yet reaped)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(path: str, owner: Optional[str], now: Optional[float] = None) -> Optional[str]:
    """Why the temporary ``path`` (owner tag ``owner`` from its name, or None) may be removed,
    or None when it may not (module docstring)."""
    match = _OWNER_RE.match(owner or "")
    if match and match.group("host") == _host():
        pid = int(match.group("pid"))
        return None if pid_alive(pid) else f"its writer, process {pid}, is gone"
    try:
        age = (time.time() if now is None else now) - os.lstat(path).st_mtime
    except FileNotFoundError:
        return None
    if age > STALE_AFTER_SECONDS:
        return f"untouched for {age / 3600:.0f} h"
    return None


def remove_stale_temporaries(folder: str, pattern: Pattern[str]) -> List[str]:
    """Remove the stale entries of ``folder`` whose name matches ``pattern`` (files or folders).

    Args:
        folder: the folder to clean (a missing folder has nothing to clean).
        pattern: a compiled regex of the temporary names; its optional group ``owner`` is the
            owner tag (absent or not matched: the age rule applies).

    Returns:
        the removed paths. Each removal is logged; one that fails (e.g. a read-only folder) is
        a warning naming the path, never an error.
    """
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        match = pattern.match(name)
        if not match:
            continue
        path = os.path.join(folder, name)
        reason = stale_reason(path, match.groupdict().get("owner"))
        if reason is None:
            continue
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except FileNotFoundError:
            continue   # another process cleaned it first
        except OSError as exc:
            logger.warning("Cannot remove the stale temporary %s: %s", path, exc)
            continue
        logger.info("Removed the stale temporary %s (%s)", path, reason)
        removed.append(path)
    return removed
