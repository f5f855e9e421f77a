"""The evaluator's result type and the names of the metrics it reports.

Torch-free (numpy only), so whoever only reads results -- the launcher, the test summary schema
(``utils/summary.py``), the bench tables -- does not import torch. The evaluator itself is
``utils/metrics.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

# the headline metrics, in percent, in the order tables show them: CMC rank-1/5/10, mAP, mINP
METRIC_KEYS = ("R1", "R5", "R10", "mAP", "mINP")


@dataclass
class EvalResult:
    """Result of one evaluation.

    Attributes:
        cmc: CMC curve, float64, ``cmc[k-1]`` = fraction of valid queries with a match in the top k;
            length = max_rank clipped to the gallery size.
        mAP: mean non-interpolated average precision over valid queries, in [0, 1].
        mINP: mean inverse negative penalty over valid queries, in [0, 1].
        num_valid: queries with at least one relevant gallery item after filtering.
        num_skipped: queries without one (excluded from every mean).
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid: int
    num_skipped: int

    def as_dict(self) -> Dict[str, float]:
        """R1/R5/R10, mAP and mINP in percent, plus the query counts.

        A rank beyond ``len(cmc)`` (when max_rank was set below it or clipped to a tiny gallery) is NaN,
        so a missing number is never shown as a measured one.
        """
        out = {}
        for k in (1, 5, 10):
            out[f"R{k}"] = float(self.cmc[k - 1]) * 100.0 if k <= len(self.cmc) else float("nan")
        out["mAP"] = self.mAP * 100.0
        out["mINP"] = self.mINP * 100.0
        out["num_valid"] = self.num_valid
        out["num_skipped"] = self.num_skipped
        return out
