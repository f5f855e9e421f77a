"""The machine's fp32 matmul throughput, recorded beside every timing PhaseReID reports.

CPU machines of the same kind differ about 4x in speed (AVX-512 vs AVX2 only), so a seconds-per-
iteration figure means little without it. The measurement follows ``../shared/tools/matmul_gflops.py``
(square fp32 matmuls, median rate of several rounds) at a smaller size so it costs well under a
second; on CUDA it times the device with synchronisation.
"""
from __future__ import annotations

import statistics
import time
from typing import Optional

import torch


def matmul_gflops(device: Optional[torch.device] = None, n: int = 1024, rounds: int = 5,
                  per_round: int = 4) -> float:
    """Median fp32 matmul GFLOP/s of ``rounds`` rounds of ``per_round`` (n x n) @ (n x n) products
    on ``device`` (CPU by default), with the threads torch uses now.

    Example:
        >>> rate = matmul_gflops()   # e.g. 190.3 on a 2-core AVX-512 EPYC
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):
        a @ b
    sync()
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(per_round):
            a @ b
        sync()
        rates.append(per_round * 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return round(statistics.median(rates), 1)
