"""Image re-ID evaluation: CMC, mAP and mINP under the Market-1501 protocol, blocked over queries.

Protocol (the de-facto one of reid-strong-baseline / TransReID / ReID-Survey
``eval_func(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50)``), per query q:

1. rank the gallery by ascending distance; ties keep gallery index order (a *stable* sort; the references
   use an unstable ``np.argsort``, which is the one deliberate difference);
2. remove gallery items with q's pid AND q's camera (``camera_filter=False`` removes nothing);
3. relevance r_k = 1 if the k-th item of the filtered list has q's pid; G_q = the set of relevant items;
4. a query with |G_q| = 0 is skipped: it leaves every denominator and is counted in ``num_skipped``;
5. CMC_q(k) = 1 if a relevant item is within the first k filtered positions, for k = 1..max_rank
   (max_rank clipped to the gallery size; a filtered list shorter than k keeps its last value);
6. AP_q = (1/|G_q|) * sum_k r_k * (sum_{i<=k} r_i) / k over the whole filtered list (non-interpolated);
7. INP_q = |G_q| / (1-based position of the last relevant item in the filtered list) (Ye et al., AGW).

CMC, mAP and mINP are means over valid queries.

How the blocked evaluator works. Only the positions of the same-pid gallery items matter (relevant
items and removed same-camera ones). The position of item j in the stable order is
``#{g: d_g < d_j} + #{g < j: d_g == d_j}``. The first term is a binary search of d_j in the query's
row sorted by *value* (no indices needed); the second term is only computed for the few items whose
distance occurs more than once in the row. The evaluator never builds a Q x G int64 argsort. On CPU
the value sort uses ``np.sort`` (vectorised, about 10x faster than ``torch.sort``, which also makes
indices). Memory is O(block x G) and every per-query number is the same for any block size.
``evaluate_loop`` is the literal per-query numpy loop, used as the oracle in the tests and the
baseline in ``bench/bench_eval.py``.
"""
from __future__ import annotations

import logging
from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from configs.validate import DISTANCES
from utils.results import EvalResult

ArrayLike = Union[np.ndarray, torch.Tensor, list, tuple]

METRICS = DISTANCES   # TEST.DISTANCE values, stated once in configs/validate.py
# Budget for the temporaries of one query block (distance rows, sorted copy, masks).
_BLOCK_BYTES = 1 << 30
# Rough temporary bytes per (query, gallery) element of a block: distance (4-8), its sorted copy
# (4-8), the same-pid mask (1), the tie-check rows, and numpy's sort buffer.
_BYTES_PER_ELEMENT = 24
# GEMM row chunk of the distance computation. MKL gives slightly different last bits for a row when it
# sits in a GEMM call of another shape. So distances are always computed in chunks of this many rows,
# aligned to row 0. Then ``evaluate_features`` and ``pairwise_distance`` make the same calls and get
# bitwise-equal distances.
_GEMM_ROWS = 128


# ----------------------------------------------------------------------------------------------
# distances
# ----------------------------------------------------------------------------------------------
def as_feature_matrix(x: ArrayLike, name: str) -> torch.Tensor:
    """A 2-D float32 tensor view of ``x`` (a copy only when the dtype changes)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (num, dim) feature matrix, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {t.dtype}")
    return t.float()


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown distance metric {metric!r}; allowed: {', '.join(METRICS)}")


def _prepare_gallery(y: torch.Tensor, metric: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """What the gallery side needs once: (y, ||y||^2) for euclidean, (y / ||y||, unused) for cosine."""
    if metric == "euclidean":
        return y, (y * y).sum(dim=1)
    return F.normalize(y, dim=1), y.new_empty(0)


def _distance_rows_into(x: torch.Tensor, gallery: Tuple[torch.Tensor, torch.Tensor], metric: str,
                        out: torch.Tensor) -> None:
    """Write dist(x, y) into ``out`` (m, n) in GEMM chunks of ``_GEMM_ROWS`` rows aligned to x's row 0."""
    y, y_sq = gallery
    for start in range(0, x.shape[0], _GEMM_ROWS):
        xc = x[start:start + _GEMM_ROWS]
        oc = out[start:start + _GEMM_ROWS]
        if metric == "euclidean":
            torch.mm(xc, y.t(), out=oc)
            oc.mul_(-2.0).add_((xc * xc).sum(dim=1, keepdim=True)).add_(y_sq.unsqueeze(0))
            oc.clamp_(min=0.0)  # rounding can make ||x||^2 + ||y||^2 - 2xy slightly negative
        else:
            torch.mm(F.normalize(xc, dim=1), y.t(), out=oc)
            oc.neg_().add_(1.0)


def pairwise_distance(x: ArrayLike, y: ArrayLike, metric: str = "euclidean") -> torch.Tensor:
    """Distance matrix between two feature sets.

    ``'euclidean'``: squared Euclidean distance ||x||^2 + ||y||^2 - 2 x.y, clamped at 0, as
    ``euclidean_distance`` in TransReID / BoT (rank-equivalent to the Euclidean distance; on L2-normalised
    features = 2 - 2 cos). ``'cosine'``: 1 - cos(x, y).

    Args:
        x: (m, d) features (torch tensor or array); computed in float32 on x's device.
        y: (n, d) features.
        metric: 'euclidean' or 'cosine'.

    Returns:
        (m, n) float32 tensor.

    Example:
        >>> d = pairwise_distance(torch.eye(2), torch.eye(2))  # [[0, 2], [2, 0]]
    """
    _check_metric(metric)
    x, y = as_feature_matrix(x, "x"), as_feature_matrix(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: x has {x.shape[1]}, y has {y.shape[1]}")
    out = torch.empty(x.shape[0], y.shape[0], dtype=torch.float32, device=x.device)
    _distance_rows_into(x, _prepare_gallery(y, metric), metric, out)
    return out


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------
def _as_distmat(distmat: ArrayLike) -> torch.Tensor:
    """(Q, G) tensor without copying float32/float64 data; other dtypes are widened exactly."""
    d = distmat.detach() if isinstance(distmat, torch.Tensor) else torch.from_numpy(np.asarray(distmat))
    if d.dim() != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got shape {tuple(d.shape)}")
    if d.shape[0] == 0 or d.shape[1] == 0:
        raise ValueError(f"distmat is empty: shape {tuple(d.shape)}")
    if d.dtype in (torch.float16, torch.bfloat16):
        d = d.float()  # exact, so ranks and ties are unchanged
    elif not d.is_floating_point():
        d = d.double()  # exact for integers below 2**53
    return d


def _as_labels(labels: ArrayLike, name: str, length: int) -> np.ndarray:
    """pids / camids as a 1-D int64 numpy array of the expected length."""
    a = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if a.ndim != 1 or a.shape[0] != length:
        side = "row" if name.startswith("q") else "column"
        raise ValueError(f"{name} must be 1-D with {length} entries (one per distmat {side}), "
                         f"got shape {a.shape}")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got {a.dtype}")
    return a.astype(np.int64, copy=False)


def _as_split_labels(q_pids, g_pids, q_camids, g_camids, num_q: int, num_g: int):
    """Query and gallery pids and camera ids, each checked against its split's size."""
    return (_as_labels(q_pids, "q_pids", num_q), _as_labels(g_pids, "g_pids", num_g),
            _as_labels(q_camids, "q_camids", num_q), _as_labels(g_camids, "g_camids", num_g))


def _check_max_rank(max_rank: int, num_gallery: int) -> int:
    if int(max_rank) < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    return min(int(max_rank), num_gallery)  # as the references: clipped to the gallery size


def _auto_block(num_gallery: int, block_size: int, multiple: int = 1) -> int:
    """Queries per block: ``block_size``, or (0) as many as keep temporaries near ``_BLOCK_BYTES``."""
    if block_size < 0:
        raise ValueError(f"block_size must be >= 0 (0 = automatic), got {block_size}")
    if block_size == 0:
        block_size = max(1, _BLOCK_BYTES // (_BYTES_PER_ELEMENT * num_gallery))
    return max(multiple, block_size // multiple * multiple)


# ----------------------------------------------------------------------------------------------
# blocked evaluation
# ----------------------------------------------------------------------------------------------
def _sorted_values(dist: torch.Tensor) -> torch.Tensor:
    """Each row sorted ascending by value. Only values are needed, so the order among ties does not matter."""
    if dist.device.type == "cpu":
        return torch.from_numpy(np.sort(dist.numpy(), axis=1))
    return torch.sort(dist, dim=1).values


def _segment_exclusive_cumsum(x: np.ndarray, row_start_of_entry: np.ndarray) -> np.ndarray:
    """Per-row exclusive cumulative sum of ``x`` for entries grouped by row (``row_start_of_entry``: the
    index of the first entry of each entry's row)."""
    x = x.astype(np.int64)
    excl = np.cumsum(x) - x
    return excl - excl[row_start_of_entry]


def _ties_before(dist: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """#{g < col : dist[row, g] == value} for each (row, col, value), in chunks of at most B rows."""
    num_rows, num_gallery = dist.shape
    gallery_index = torch.arange(num_gallery, device=dist.device)
    out = torch.empty_like(rows)
    for s in range(0, rows.numel(), num_rows):
        e = s + num_rows
        equal = dist[rows[s:e]] == values[s:e].unsqueeze(1)
        out[s:e] = (equal & (gallery_index.unsqueeze(0) < cols[s:e].unsqueeze(1))).sum(dim=1)
    return out


class _GalleryByPid:
    """Gallery indices grouped by pid, so a query's same-pid items are found without a B x G comparison.

    Within a pid the gallery indices stay ascending (stable grouping).
    """

    def __init__(self, g_pids: np.ndarray):
        self.pids, group = np.unique(g_pids, return_inverse=True)  # sorted unique pids
        self.members = np.argsort(group, kind="stable")
        self.counts = np.bincount(group, minlength=self.pids.size)
        self.starts = np.cumsum(self.counts) - self.counts

    def same_pid_pairs(self, q_pids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(rows, cols): every (query row, gallery index) with equal pid, row-major, cols ascending in a row."""
        group = np.minimum(np.searchsorted(self.pids, q_pids), self.pids.size - 1)
        counts = np.where(self.pids[group] == q_pids, self.counts[group], 0)
        rows = np.repeat(np.arange(q_pids.size), counts)
        offset = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.members[np.repeat(self.starts[group], counts) + offset]


def _rank_block(dist: torch.Tensor, q_pids: np.ndarray, q_camids: np.ndarray, gallery: _GalleryByPid,
                g_camids: np.ndarray, camera_filter: bool) -> Tuple[np.ndarray, ...]:
    """Per-query statistics of one block of distance rows.

    The B x G work (value sort, binary searches, tie checks) runs in torch on dist's device. The
    bookkeeping of the few same-pid pairs runs in numpy: it is small, and on a loaded CPU numpy
    avoids the stalls of many tiny multi-threaded torch ops.

    Args:
        dist: (B, G) float distances.
        q_pids, q_camids: (B,) int64; g_camids: (G,) int64 (numpy).
        gallery: the gallery grouped by pid.
        camera_filter: remove same-pid same-camera gallery items.

    Returns:
        num_rel (B,) int64 |G_q|; ap_sum (B,) float64 sum_k r_k * precision@k; first, last (B,) int64
        1-based filtered positions of the first/last relevant item (first = G + 1, last = 0 when none).
    """
    num_q, num_g = dist.shape
    device = dist.device
    sorted_rows = _sorted_values(dist)
    if bool(torch.isnan(sorted_rows[:, -1]).any()):  # both sorts put NaN last
        raise ValueError("distmat contains NaN; ranks would be undefined")
    rows, cols = gallery.same_pid_pairs(q_pids)
    counts = np.bincount(rows, minlength=num_q)
    row_start = np.cumsum(counts) - counts
    slot = np.arange(rows.size) - row_start[rows]

    # Stable 0-based rank: #{d < d_j} by binary search, plus #{g < j: d_g == d_j} where d_j is tied.
    rows_t, cols_t, slot_t = (torch.from_numpy(x).to(device) for x in (rows, cols, slot))
    values = dist[rows_t, cols_t]
    thresholds = dist.new_zeros(num_q, max(int(counts.max()), 1))
    thresholds[rows_t, slot_t] = values
    rank = torch.searchsorted(sorted_rows, thresholds, side="left")[rows_t, slot_t]
    not_greater = torch.searchsorted(sorted_rows, thresholds, side="right")[rows_t, slot_t]
    tied = (not_greater - rank) > 1  # its value occurs again in the row
    if bool(tied.any()):
        rank[tied] += _ties_before(dist, rows_t[tied], cols_t[tied], values[tied])
    rank = rank.cpu().numpy()

    removed = (g_camids[cols] == q_camids[rows]) if camera_filter else np.zeros(rows.size, dtype=bool)
    # Stable ranks in a row are distinct, so this key orders by row, then rank, with no ties.
    order = np.argsort(rows * num_g + rank)
    rows, rank, removed = rows[order], rank[order], removed[order]
    relevant = ~removed
    entry_row_start = row_start[rows]
    position = rank + 1 - _segment_exclusive_cumsum(removed, entry_row_start)  # 1-based, filtered list
    hits_so_far = _segment_exclusive_cumsum(relevant, entry_row_start) + 1  # counting this relevant item

    rel_rows, rel_pos, rel_hits = rows[relevant], position[relevant], hits_so_far[relevant]
    num_rel = np.bincount(rel_rows, minlength=num_q)
    # bincount adds in input order = rank order within a query
    ap_sum = np.bincount(rel_rows, weights=rel_hits / rel_pos, minlength=num_q)
    first = np.full(num_q, num_g + 1, dtype=np.int64)
    last = np.zeros(num_q, dtype=np.int64)
    if rel_rows.size:
        new_row = np.flatnonzero(np.diff(rel_rows, prepend=-1))  # first entry of each row (rank order)
        row_end = np.append(new_row[1:], rel_rows.size) - 1
        first[rel_rows[new_row]] = rel_pos[new_row]
        last[rel_rows[row_end]] = rel_pos[row_end]
    return num_rel, ap_sum, first, last


class _QueryStats:
    """Per-query AP / INP / first-hit position, filled block by block and reduced once at the end.

    Storing per-query numbers (Q floats) instead of running sums makes the result bit-for-bit
    independent of the block size.
    """

    def __init__(self, num_query: int, max_rank: int):
        self.max_rank = max_rank
        self.num_rel = np.zeros(num_query, dtype=np.int64)
        self.ap = np.zeros(num_query, dtype=np.float64)
        self.inp = np.zeros(num_query, dtype=np.float64)
        self.first = np.zeros(num_query, dtype=np.int64)

    def add(self, start: int, num_rel: np.ndarray, ap_sum: np.ndarray, first: np.ndarray,
            last: np.ndarray) -> None:
        end = start + num_rel.shape[0]
        valid = num_rel > 0
        self.num_rel[start:end] = num_rel
        self.first[start:end] = first
        self.ap[start:end][valid] = ap_sum[valid] / num_rel[valid]
        self.inp[start:end][valid] = num_rel[valid] / last[valid].astype(np.float64)

    def result(self) -> EvalResult:
        valid = self.num_rel > 0
        num_valid = int(valid.sum())
        if num_valid == 0:
            raise ValueError(
                f"no valid query: none of the {valid.size} queries has a gallery item with its pid after "
                "removing same-pid same-camera items; check that query and gallery share identities "
                "and that camids are right")
        first = np.minimum(self.first[valid], self.max_rank + 1)
        hits_at = np.bincount(first, minlength=self.max_rank + 2)[1:self.max_rank + 1]
        return EvalResult(cmc=np.cumsum(hits_at) / num_valid, mAP=float(np.mean(self.ap[valid])),
                          mINP=float(np.mean(self.inp[valid])), num_valid=num_valid,
                          num_skipped=int(valid.size - num_valid))


def evaluate(distmat: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike,
             g_camids: ArrayLike, max_rank: int = 50, block_size: int = 0,
             camera_filter: bool = True) -> EvalResult:
    """Market-1501 protocol (module docstring) over query blocks; O(block x G) memory.

    Args:
        distmat: (Q, G) distances, numpy array or torch tensor (any device). Smaller = more similar.
        q_pids, g_pids: (Q,) / (G,) integer identities (distractors: pid 0, kept in the gallery).
        q_camids, g_camids: (Q,) / (G,) integer camera ids.
        max_rank: length of the CMC curve (clipped to G).
        block_size: queries per block; 0 = automatic (temporaries around 1 GiB).
        camera_filter: remove gallery items with the query's pid and camera (False: remove nothing,
            e.g. VehicleID, which has no cameras).

    Returns:
        EvalResult. Raises ValueError when no query has a valid match.

    Example:
        >>> res = evaluate(distmat, q_pids, g_pids, q_camids, g_camids)
        >>> res.as_dict()["mAP"]
    """
    dist = _as_distmat(distmat)
    num_q, num_g = dist.shape
    qp, gp, qc, gc = _as_split_labels(q_pids, g_pids, q_camids, g_camids, num_q, num_g)
    stats = _QueryStats(num_q, _check_max_rank(max_rank, num_g))
    gallery = _GalleryByPid(gp)
    block = _auto_block(num_g, block_size)
    for s in range(0, num_q, block):
        e = min(s + block, num_q)
        stats.add(s, *_rank_block(dist[s:e].contiguous(), qp[s:e], qc[s:e], gallery, gc, camera_filter))
    return stats.result()


def evaluate_features(qf: ArrayLike, gf: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike,
                      g_camids: ArrayLike, metric: str = "euclidean", feat_norm: bool = True,
                      max_rank: int = 50, block_size: int = 0, camera_filter: bool = True) -> EvalResult:
    """Evaluate from features, computing the distance one query block at a time (never Q x G at once).

    Identical to ``evaluate(pairwise_distance(qn, gn, metric), ...)`` with qn, gn = the
    ``F.normalize(., dim=1)``-ed features if ``feat_norm`` else the features as given. Distances are
    computed by the same GEMM calls, so they are bitwise equal. The inputs are never modified.

    Args:
        qf, gf: (Q, d) / (G, d) features (tensors or arrays); work happens on qf's device in float32.
        q_pids, g_pids, q_camids, g_camids: as in ``evaluate``.
        metric: 'euclidean' (squared, as TransReID) or 'cosine'.
        feat_norm: L2-normalise both sides first (TransReID TEST.FEAT_NORM).
        max_rank, camera_filter: as in ``evaluate``.
        block_size: queries per block, rounded down to a multiple of 128 (min 128) so that blocks fall on
            the GEMM chunk grid; 0 = automatic.

    Returns:
        EvalResult.
    """
    _check_metric(metric)
    qf, gf = as_feature_matrix(qf, "qf"), as_feature_matrix(gf, "gf")
    if qf.shape[1] != gf.shape[1]:
        raise ValueError(f"feature dimensions differ: qf has {qf.shape[1]}, gf has {gf.shape[1]}")
    if qf.shape[0] == 0 or gf.shape[0] == 0:
        raise ValueError(f"empty features: qf {tuple(qf.shape)}, gf {tuple(gf.shape)}")
    gf = gf.to(qf.device)
    if feat_norm:
        qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)  # new tensors: inputs stay untouched
    num_q, num_g = qf.shape[0], gf.shape[0]
    device = qf.device
    qp, gp, qc, gc = _as_split_labels(q_pids, g_pids, q_camids, g_camids, num_q, num_g)
    stats = _QueryStats(num_q, _check_max_rank(max_rank, num_g))
    by_pid = _GalleryByPid(gp)
    gallery = _prepare_gallery(gf, metric)
    block = min(_auto_block(num_g, block_size, multiple=_GEMM_ROWS), num_q)
    buffer = torch.empty(block, num_g, dtype=torch.float32, device=device)
    for s in range(0, num_q, block):
        e = min(s + block, num_q)
        dist = buffer[:e - s]
        _distance_rows_into(qf[s:e], gallery, metric, dist)
        stats.add(s, *_rank_block(dist, qp[s:e], qc[s:e], by_pid, gc, camera_filter))
    return stats.result()


def _log_skipped(result: EvalResult) -> None:
    if result.num_skipped > 0:
        logging.getLogger("phasereid").warning(
            "evaluation skipped %d of %d queries with no valid gallery match (excluded from CMC/mAP/mINP)",
            result.num_skipped, result.num_skipped + result.num_valid)


def eval_func(distmat: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike,
              g_camids: ArrayLike, max_rank: int = 50) -> Tuple[np.ndarray, float, float]:
    """The reference signature (reid-strong-baseline / TransReID / ReID-Survey), computed by ``evaluate``.

    Logs a warning on the 'phasereid' logger when queries were skipped.

    Returns:
        (cmc float64 array of length min(max_rank, G), mAP, mINP), fractions in [0, 1]. (The references
        return cmc as float32.)
    """
    result = evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
    _log_skipped(result)
    return result.cmc, result.mAP, result.mINP


# ----------------------------------------------------------------------------------------------
# the straightforward per-query loop (test oracle, benchmark baseline)
# ----------------------------------------------------------------------------------------------
def evaluate_loop(distmat: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike,
                  g_camids: ArrayLike, max_rank: int = 50, camera_filter: bool = True) -> EvalResult:
    """Literal per-query numpy loop of the protocol (as the reference ``eval_func``, with a stable sort).

    Slow (one stable argsort of G per query); kept as the oracle for ``evaluate``.
    """
    dist = _as_distmat(distmat).cpu().numpy()
    num_q, num_g = dist.shape
    q_pids, g_pids, q_camids, g_camids = (
        _as_labels(x, name, n)
        for x, name, n in ((q_pids, "q_pids", num_q), (g_pids, "g_pids", num_g),
                           (q_camids, "q_camids", num_q), (g_camids, "g_camids", num_g)))
    max_rank = _check_max_rank(max_rank, num_g)
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(num_q):
        if np.isnan(dist[q]).any():
            raise ValueError("distmat contains NaN; ranks would be undefined")
        order = np.argsort(dist[q], kind="stable")
        same_pid = g_pids[order] == q_pids[q]
        removed = same_pid & (g_camids[order] == q_camids[q]) if camera_filter else np.zeros_like(same_pid)
        hits = same_pid[~removed].astype(np.float64)  # r_k over the filtered list
        if not hits.any():
            continue
        cum_hits = hits.cumsum()
        cmc = np.minimum(cum_hits, 1.0)[:max_rank]
        cmc = np.pad(cmc, (0, max_rank - cmc.size), mode="edge")  # filtered list shorter than max_rank
        num_rel = hits.sum()
        all_cmc.append(cmc)
        all_ap.append((cum_hits / np.arange(1.0, hits.size + 1.0) * hits).sum() / num_rel)
        all_inp.append(num_rel / (np.flatnonzero(hits)[-1] + 1.0))
    if not all_ap:
        raise ValueError(f"no valid query: none of the {num_q} queries has a gallery item with its pid "
                         "after removing same-pid same-camera items")
    return EvalResult(cmc=np.sum(all_cmc, axis=0) / len(all_ap), mAP=float(np.mean(all_ap)),
                      mINP=float(np.mean(all_inp)), num_valid=len(all_ap), num_skipped=num_q - len(all_ap))
