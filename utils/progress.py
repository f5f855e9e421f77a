"""Progress of a loop: a tqdm bar on a terminal, plain lines in a redirected log.

tqdm redraws its bar with carriage returns, which a log file (the launcher's captured output,
``train.py ... 2> log``) keeps as tens of KB of frames per epoch. When stderr is not a terminal,
:func:`progress` prints a plain line instead at every quarter of the loop and at least every
:data:`PLAIN_INTERVAL_S` seconds, e.g.::

    epoch 3/30  45/149 batches  loss 6.123  5.2 it/s  9 s
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Optional

from tqdm import tqdm

PLAIN_INTERVAL_S = 30.0   # longest silence between two plain lines
PLAIN_STEPS = 4           # plain lines at 1/4, 2/4, 3/4 and the end of a loop of known length


def progress(iterable: Iterable, desc: str, total: Optional[int] = None, disable: bool = False,
             unit: str = "batches"):
    """Wrap ``iterable`` with a progress display on stderr.

    Args:
        iterable: what the loop runs over.
        desc: the leading text ('epoch 3/30', 'features').
        total: number of items (default ``len(iterable)`` where it has one).
        disable: show nothing (e.g. DDP ranks other than 0).
        unit: what an item is, for the plain lines.

    Returns:
        An iterable with ``set_postfix(**values)`` (shown at the end of the bar or line): a tqdm
        bar when stderr is a terminal, a :class:`PlainProgress` otherwise.
    """
    if total is None:
        try:
            total = len(iterable)
        except TypeError:   # no length: plain lines by time only
            total = None
    if _is_terminal(sys.stderr):
        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True,
                    disable=disable)
    return PlainProgress(iterable, desc, total, disable, unit)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # closed or replaced streams
        return False


class PlainProgress:
    """Iterates ``iterable`` and prints one line per quarter (and every PLAIN_INTERVAL_S)."""

    def __init__(self, iterable: Iterable, desc: str, total: Optional[int], disable: bool,
                 unit: str = "batches", stream=None):
        self.iterable = iterable
        self.desc = desc
        self.total = total
        self.disable = disable
        self.unit = unit
        self.stream = stream
        self.postfix = ""

    def set_postfix(self, **values) -> None:
        self.postfix = "  ".join(f"{k} {v}" for k, v in values.items())

    def __len__(self) -> int:
        return len(self.iterable)

    def __iter__(self):
        if self.disable:
            yield from self.iterable
            return
        start = last = time.time()
        milestones = sorted({self.total * i // PLAIN_STEPS for i in range(1, PLAIN_STEPS + 1)}
                            - {0}) if self.total else []
        n = 0
        for item in self.iterable:
            yield item
            n += 1
            now = time.time()
            due = milestones and n >= milestones[0]
            if due or now - last >= PLAIN_INTERVAL_S:
                self._line(n, now - start)
                last = now
                while milestones and n >= milestones[0]:
                    milestones.pop(0)
        if not self.total and n:
            self._line(n, time.time() - start)

    def _line(self, n: int, elapsed: float) -> None:
        count = f"{n}/{self.total}" if self.total else str(n)
        parts = [self.desc, f"{count} {self.unit}"]
        if self.postfix:
            parts.append(self.postfix)
        parts += [f"{n / max(elapsed, 1e-9):.1f} it/s", f"{elapsed:.0f} s"]
        print("  ".join(parts), file=self.stream or sys.stderr, flush=True)
