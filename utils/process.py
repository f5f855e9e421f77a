"""Processes that die with their parent (Linux ``prctl(PR_SET_PDEATHSIG)``).

Two owners start child processes: the launcher (train.py / test.py, ``launcher.runner``) and the
DataLoader (its workers, ``datasets.make_dataloader``). Both ask Linux to signal the child when
its parent dies, so nothing outlives a killed launcher or trainer: a DataLoader worker whose
trainer died can otherwise block for ever in its exit, its queue's feeder thread writing to a
pipe that only it and its sibling workers still hold open (seen after a SIGTERM of the
launcher during an epoch's start with DATALOADER.NUM_WORKERS 2). Torch-free.
"""
from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1      # linux/prctl.h


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> bool:
    """In the child: ask Linux to send ``sig`` to this process when its parent dies (even by
    SIGKILL). ``parent`` is the pid the child was started from; when it has already died (this
    process was re-parented before the request took effect) ``sig`` is sent at once. Returns
    False where prctl is missing (not Linux): there the child can outlive its parent."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig)) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return True
