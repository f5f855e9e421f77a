"""The 'phasereid' logger: console + a log file in OUTPUT_DIR (rank 0 only under DDP)."""
from __future__ import annotations

import logging
import os
import sys


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
    logger.addHandler(console)
    if rank == 0 and output_dir:
        os.makedirs(output_dir, exist_ok=True)
        file_handler = logging.FileHandler(os.path.join(output_dir, filename), mode="a")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger
