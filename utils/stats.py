"""Statistics over seeds: mean and sample standard deviation, paired t-test.

Used by the multi-seed launcher (run_phased_loss.py) to summarise per-seed metrics and to compare
two recipes trained on the same seeds.

- ``mean_std``: arithmetic mean and the *sample* standard deviation (Bessel-corrected, ddof=1,
  the ``numpy.std(x, ddof=1)`` / ``statistics.stdev`` definition); with one value the sample std
  is undefined and is returned as None (reported as "n/a"), never as 0.
- ``paired_ttest``: Student's paired t-test (``scipy.stats.ttest_rel``, two-sided) on the
  differences a_i - b_i of values paired by seed. With fewer than two pairs, or when every
  difference is the same (the t statistic is undefined), p is None and ``reason`` says why.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as _scipy_stats


def mean_std(values: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (ddof=1) of ``values``.

    Args:
        values: the per-seed numbers.
    Returns:
        (mean, std): (None, None) for no values, (x, None) for one value.

    Example:
        >>> mean_std([1.0, 2.0, 3.0])
        (2.0, 1.0)
    """
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        return None, None
    mean = float(x.mean())
    if x.size == 1:
        return mean, None
    return mean, float(x.std(ddof=1))


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> Dict[str, object]:
    """Two-sided paired t-test of ``a`` against ``b`` (same order = same seed).

    t = mean(d) / (std(d, ddof=1) / sqrt(n)), d = a - b, n - 1 degrees of freedom
    (``scipy.stats.ttest_rel``).

    Args:
        a, b: equally long sequences, element i of both from the same seed.
    Returns:
        {'n': pairs, 'mean_diff': mean(a - b) or None, 't': statistic or None,
         'p': two-sided p-value or None, 'reason': None or why p is undefined}.

    Example:
        >>> paired_ttest([80.1, 81.0, 79.5], [79.0, 80.2, 79.1])["p"]  # doctest: +ELLIPSIS
        0.0...
    """
    a = np.asarray(list(a), dtype=np.float64)
    b = np.asarray(list(b), dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_ttest needs equally long sequences, got {a.size} and {b.size}")
    n = int(a.size)
    result: Dict[str, object] = {"n": n, "mean_diff": float((a - b).mean()) if n else None,
                                 "t": None, "p": None, "reason": None}
    if n < 2:
        result["reason"] = f"{n} paired seed(s): a paired t-test needs at least 2"
        return result
    diff = a - b
    if np.all(diff == diff[0]):
        result["reason"] = (f"every paired difference equals {diff[0]:g}: the t statistic is "
                            "undefined (zero variance)")
        return result
    test = _scipy_stats.ttest_rel(a, b)
    t, p = float(test.statistic), float(test.pvalue)
    if not (math.isfinite(t) and math.isfinite(p)):
        result["reason"] = f"scipy.stats.ttest_rel returned t={t}, p={p}"
        return result
    result["t"], result["p"] = t, p
    return result
