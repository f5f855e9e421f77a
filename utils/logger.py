"""The 'phasereid' logger: console + a log file in OUTPUT_DIR (rank 0 only under DDP).

:func:`log_crash` wraps the body of train.py / test.py: an exception that escapes it is written
with its traceback to the log file before it propagates (the process still exits non-zero with
the traceback on stderr), so train_log.txt / test_log.txt say how a run ended.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys

FILE_ONLY = "file_only"   # a record with this attribute set is not echoed on the console


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, FILE_ONLY, False)


def setup_logger(output_dir: str, filename: str, rank: int = 0) -> logging.Logger:
    """Configure the 'phasereid' logger; other ranks log warnings and errors only."""
    logger = logging.getLogger("phasereid")
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    console.addFilter(_not_file_only)
    logger.addHandler(console)
    if rank == 0 and output_dir:
        os.makedirs(output_dir, exist_ok=True)
        file_handler = logging.FileHandler(os.path.join(output_dir, filename), mode="a")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


@contextlib.contextmanager
def log_crash(logger: logging.Logger, hint=None):
    """Log an exception escaping the block, with its traceback, to the log file, then re-raise.

    The record is kept off the console (Python prints the traceback to stderr anyway).
    ``hint(exc)`` may return an extra line for the log (e.g. what a DDP timeout means), or None.
    """
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        logger.error("Stopped by %s: %s", type(exc).__name__, exc, exc_info=True,
                     extra={FILE_ONLY: True})
        extra_line = hint(exc) if hint is not None else None
        if extra_line:
            logger.error("%s", extra_line)   # console and file
        raise
