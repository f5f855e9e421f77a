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

Text-to-image retrieval (``eval_t2i``; DESIGN.md section 3, REFERENCES.md 1.3, IRRA's ``rank``): every
caption queries every test image once; relevant = same pid; no camera filter; similarity = cosine of
L2-normalised features, higher = more similar. The gallery is ranked by descending similarity, equal
similarities in ascending gallery index; then steps 3-7 above with nothing removed. It runs on the same
blocked ranker (on -similarity, which a stable ascending sort orders exactly so). ``i2t=True`` is the
image-to-text direction on the same inputs; ``eval_t2i_features`` computes the similarity per query
block from features; ``eval_t2i_loop`` is its per-query loop (tests, ``bench/bench_t2i_eval.py``).
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
def _as_distmat(distmat: ArrayLike, name: str = "distmat",
                shape_names: str = "num_query, num_gallery") -> torch.Tensor:
    """(Q, G) tensor without copying float32/float64 data; other dtypes are widened exactly."""
    d = distmat.detach() if isinstance(distmat, torch.Tensor) else torch.from_numpy(np.asarray(distmat))
    if d.dim() != 2:
        raise ValueError(f"{name} must be 2-D ({shape_names}), got shape {tuple(d.shape)}")
    if d.shape[0] == 0 or d.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(d.shape)}")
    if d.dtype in (torch.float16, torch.bfloat16):
        d = d.float()  # exact, so ranks and ties are unchanged
    elif not d.is_floating_point():
        d = d.double()  # exact for integers below 2**53
    return d


def _as_labels(labels: ArrayLike, name: str, length: int, per: str = "") -> np.ndarray:
    """pids / camids as a 1-D int64 numpy array of the expected length (``per``: what each entry labels)."""
    a = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if a.ndim != 1 or a.shape[0] != length:
        per = per or ("distmat row" if name.startswith("q") else "distmat column")
        raise ValueError(f"{name} must be 1-D with {length} entries (one per {per}), "
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
                g_camids: np.ndarray, camera_filter: bool, nan_name: str = "distmat") -> Tuple[np.ndarray, ...]:
    """Per-query statistics of one block of distance rows.

    The B x G work (value sort, binary searches, tie checks) runs in torch on dist's device. The
    bookkeeping of the few same-pid pairs runs in numpy: it is small, and on a loaded CPU numpy
    avoids the stalls of many tiny multi-threaded torch ops.

    Args:
        dist: (B, G) float distances.
        q_pids, q_camids: (B,) int64; g_camids: (G,) int64 (numpy).
        gallery: the gallery grouped by pid.
        camera_filter: remove same-pid same-camera gallery items (False: q_camids, g_camids are not read).
        nan_name: what the NaN error calls the input.

    Returns:
        num_rel (B,) int64 |G_q|; ap_sum (B,) float64 sum_k r_k * precision@k; first, last (B,) int64
        1-based filtered positions of the first/last relevant item (first = G + 1, last = 0 when none).
    """
    num_q, num_g = dist.shape
    device = dist.device
    sorted_rows = _sorted_values(dist)
    if bool(torch.isnan(sorted_rows[:, -1]).any()):  # both sorts put NaN last
        raise ValueError(f"{nan_name} contains NaN; ranks would be undefined")
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


_REID_NO_MATCH = ("has a gallery item with its pid after removing same-pid same-camera items; check that "
                  "query and gallery share identities and that camids are right")


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

    def result(self, no_match: str = _REID_NO_MATCH) -> EvalResult:
        """Means over valid queries; ``no_match`` completes the error when there is none."""
        valid = self.num_rel > 0
        num_valid = int(valid.sum())
        if num_valid == 0:
            raise ValueError(f"no valid query: none of the {valid.size} queries {no_match}")
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
# text-to-image retrieval (DESIGN.md section 3, REFERENCES.md 1.3)
# ----------------------------------------------------------------------------------------------
_T2I_NO_MATCH = ("has an item with its pid on the other side (captions vs images); check that both sides "
                 "come from the same split")


def _similarity_rows_into(xn: torch.Tensor, yn: torch.Tensor, out: torch.Tensor) -> None:
    """Write xn @ yn.T into ``out`` (m, n) in GEMM chunks of ``_GEMM_ROWS`` rows aligned to xn's row 0."""
    for start in range(0, xn.shape[0], _GEMM_ROWS):
        torch.mm(xn[start:start + _GEMM_ROWS], yn.t(), out=out[start:start + _GEMM_ROWS])


def _normalized_pair(x: ArrayLike, y: ArrayLike, x_name: str, y_name: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both feature sets as float32, L2-normalised row-wise, on x's device (new tensors: inputs stay untouched)."""
    x, y = as_feature_matrix(x, x_name), as_feature_matrix(y, y_name)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x_name} has {x.shape[1]}, {y_name} has {y.shape[1]}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError(f"empty features: {x_name} {tuple(x.shape)}, {y_name} {tuple(y.shape)}")
    return F.normalize(x, dim=1), F.normalize(y.to(x.device), dim=1)


def cosine_similarity_matrix(x: ArrayLike, y: ArrayLike) -> torch.Tensor:
    """cos(x_i, y_j) = <x_i / ||x_i||, y_j / ||y_j||>: the similarity ``eval_t2i_features`` ranks by.

    Computed by the same normalisation and GEMM calls as ``eval_t2i_features``, so
    ``eval_t2i(cosine_similarity_matrix(t, v), tp, vp)`` equals ``eval_t2i_features(t, v, tp, vp)`` bit for
    bit (and ``cosine_similarity_matrix(v, t)`` is what ``eval_t2i_features(..., i2t=True)`` ranks by).

    Args:
        x: (m, d) features (tensor or array); computed in float32 on x's device.
        y: (n, d) features.

    Returns:
        (m, n) float32 tensor.
    """
    xn, yn = _normalized_pair(x, y, "x", "y")
    out = torch.empty(xn.shape[0], yn.shape[0], dtype=torch.float32, device=xn.device)
    _similarity_rows_into(xn, yn, out)
    return out


def _rank_retrieval(fill_neg_similarity, num_q: int, q_pids: np.ndarray, g_pids: np.ndarray, max_rank: int,
                    block: int, dtype: torch.dtype, device: torch.device, nan_name: str) -> EvalResult:
    """The t2i protocol over query blocks: ``fill_neg_similarity(s, e, out)`` writes -similarity of queries s:e.

    Ascending -similarity in a stable order = descending similarity, ties by ascending gallery index
    (negation is exact), so the re-ID block ranker ``_rank_block`` does the work, with nothing removed.
    """
    num_g = g_pids.size
    stats = _QueryStats(num_q, _check_max_rank(max_rank, num_g))
    by_pid = _GalleryByPid(g_pids)
    no_cams = np.zeros(max(num_q, num_g), dtype=np.int64)  # never read: camera_filter=False
    block = min(block, num_q)
    buffer = torch.empty(block, num_g, dtype=dtype, device=device)
    for s in range(0, num_q, block):
        e = min(s + block, num_q)
        neg_sim = buffer[:e - s]
        fill_neg_similarity(s, e, neg_sim)
        stats.add(s, *_rank_block(neg_sim, q_pids[s:e], no_cams[:e - s], by_pid, no_cams[:num_g],
                                  camera_filter=False, nan_name=nan_name))
    result = stats.result(no_match=_T2I_NO_MATCH)
    _log_skipped(result)
    return result


def _t2i_labels(q_pids: ArrayLike, g_pids: ArrayLike, num_q: int, num_g: int,
                rows: str, cols: str) -> Tuple[np.ndarray, np.ndarray]:
    return _as_labels(q_pids, "q_pids", num_q, per=rows), _as_labels(g_pids, "g_pids", num_g, per=cols)


def eval_t2i(similarity: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike, max_rank: int = 10,
             i2t: bool = False, block_size: int = 0) -> EvalResult:
    """Text-to-image retrieval metrics (IRRA ``rank`` protocol, deterministic ties), blocked over queries.

    Protocol (REFERENCES.md 1.3; IRRA ``utils/metrics.py`` ``rank(similarity, q_pids, g_pids, max_rank=10,
    get_mAP=True)``): every caption (row) queries every image (column) once; relevant = same pid; no
    camera filter, nothing removed. Per query: rank the gallery by **descending similarity, equal
    similarities in ascending gallery index** (a stable sort); then CMC, non-interpolated AP and INP exactly
    as steps 3-7 of the module docstring. IRRA sorts with ``torch.argsort(descending=True)``, whose order
    among ties is unspecified (it does vary on CPU); without ties both give the same numbers
    (docs/reference_differences.md). A query whose pid has no item on the other side is skipped,
    counted in ``num_skipped`` and logged as a warning (IRRA's protocol always has one; its ``rank`` would
    give NaN / fail); no valid query at all is a ValueError.

    Higher similarity = more similar: pass cosine similarities of L2-normalised features
    (``cosine_similarity_matrix``, or ``eval_t2i_features`` to never hold the Q x G matrix). Memory: the input
    plus O(block x G).

    Args:
        similarity: (num_captions, num_images) numpy array or torch tensor (any device); floats or integers.
        q_pids: (num_captions,) integer pids of the rows (the t2i queries).
        g_pids: (num_images,) integer pids of the columns (the t2i gallery).
        max_rank: length of the CMC curve (IRRA's default 10), clipped to the gallery size.
        i2t: image-to-text on the same inputs: each image (column) queries all captions (rows); identical to
            ``eval_t2i(similarity.T, g_pids, q_pids)`` without transposing the matrix.
        block_size: queries per block; 0 = automatic (temporaries around 1 GiB).

    Returns:
        EvalResult (fractions; ``as_dict()`` gives R1/R5/R10/mAP/mINP in percent, as IRRA's table).

    Example:
        >>> sim = cosine_similarity_matrix(text_feats, image_feats)
        >>> eval_t2i(sim, text_pids, image_pids).as_dict()["R1"]
        >>> eval_t2i(sim, text_pids, image_pids, i2t=True).as_dict()["mAP"]
    """
    sim = _as_distmat(similarity, "similarity", "num_captions, num_images")
    num_t, num_v = sim.shape
    tp, vp = _t2i_labels(q_pids, g_pids, num_t, num_v, "similarity row (caption)", "similarity column (image)")
    queries = sim.t() if i2t else sim  # a view: rows are the queries
    qp, gp = (vp, tp) if i2t else (tp, vp)

    def fill(s, e, out):
        torch.neg(queries[s:e], out=out)

    return _rank_retrieval(fill, queries.shape[0], qp, gp, max_rank, _auto_block(gp.size, block_size),
                           sim.dtype, sim.device, "similarity")


def eval_t2i_features(txt_feats: ArrayLike, img_feats: ArrayLike, txt_pids: ArrayLike, img_pids: ArrayLike,
                      max_rank: int = 10, i2t: bool = False, block_size: int = 0) -> EvalResult:
    """``eval_t2i`` from features: cosine of L2-normalised features, one query block at a time.

    The Q x G similarity never exists at once (ICFG-PEDES: 19,848^2 float32 = 1.5 GiB). Equal bit for bit to
    ``eval_t2i(cosine_similarity_matrix(txt_feats, img_feats), txt_pids, img_pids)``; with ``i2t`` to
    ``eval_t2i(cosine_similarity_matrix(img_feats, txt_feats), img_pids, txt_pids)`` (image rows x caption
    columns; the transposed caption x image matrix can differ in the last bit). Inputs are never modified.

    Args:
        txt_feats, img_feats: (num_captions, d) / (num_images, d) features (tensors or arrays); work happens on
            txt_feats' device in float32.
        txt_pids, img_pids: (num_captions,) / (num_images,) integer pids.
        max_rank, i2t: as in ``eval_t2i``.
        block_size: queries per block, rounded down to a multiple of 128 (min 128) so that blocks fall on the
            GEMM chunk grid; 0 = automatic.

    Returns:
        EvalResult.
    """
    tn, vn = _normalized_pair(txt_feats, img_feats, "txt_feats", "img_feats")
    tp = _as_labels(txt_pids, "txt_pids", tn.shape[0], per="txt_feats row")
    vp = _as_labels(img_pids, "img_pids", vn.shape[0], per="img_feats row")
    qn, gn, qp, gp = (vn, tn, vp, tp) if i2t else (tn, vn, tp, vp)

    def fill(s, e, out):
        _similarity_rows_into(qn[s:e], gn, out)
        out.neg_()

    return _rank_retrieval(fill, qn.shape[0], qp, gp, max_rank, _auto_block(gp.size, block_size, _GEMM_ROWS),
                           torch.float32, qn.device, "similarity")


# ----------------------------------------------------------------------------------------------
# the straightforward per-query loops (test oracles, benchmark baselines)
# ----------------------------------------------------------------------------------------------
def _loop_query(hits: np.ndarray, max_rank: int):
    """(CMC row, AP, INP) of one query from its ranked relevance list r_1..r_n (bool), None if no r_k is 1."""
    hits = hits.astype(np.float64)
    if not hits.any():
        return None
    cum_hits = hits.cumsum()
    cmc = np.minimum(cum_hits, 1.0)[:max_rank]
    cmc = np.pad(cmc, (0, max_rank - cmc.size), mode="edge")  # ranked list shorter than max_rank
    num_rel = hits.sum()
    ap = (cum_hits / np.arange(1.0, hits.size + 1.0) * hits).sum() / num_rel
    return cmc, ap, num_rel / (np.flatnonzero(hits)[-1] + 1.0)


def _loop_result(per_query: list, no_match: str) -> EvalResult:
    """Means over the queries ``_loop_query`` did not skip (None)."""
    valid = [p for p in per_query if p is not None]
    if not valid:
        raise ValueError(f"no valid query: none of the {len(per_query)} queries {no_match}")
    cmc, ap, inp = zip(*valid)
    return EvalResult(cmc=np.sum(cmc, axis=0) / len(valid), mAP=float(np.mean(ap)), mINP=float(np.mean(inp)),
                      num_valid=len(valid), num_skipped=len(per_query) - len(valid))


def evaluate_loop(distmat: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike,
                  g_camids: ArrayLike, max_rank: int = 50, camera_filter: bool = True) -> EvalResult:
    """Literal per-query numpy loop of the protocol (as the reference ``eval_func``, with a stable sort).

    Slow (one stable argsort of G per query); kept as the oracle for ``evaluate``.
    """
    dist = _as_distmat(distmat).cpu().numpy()
    num_q, num_g = dist.shape
    q_pids, g_pids, q_camids, g_camids = _as_split_labels(q_pids, g_pids, q_camids, g_camids, num_q, num_g)
    max_rank = _check_max_rank(max_rank, num_g)
    per_query = []
    for q in range(num_q):
        if np.isnan(dist[q]).any():
            raise ValueError("distmat contains NaN; ranks would be undefined")
        order = np.argsort(dist[q], kind="stable")
        same_pid = g_pids[order] == q_pids[q]
        removed = same_pid & (g_camids[order] == q_camids[q]) if camera_filter else np.zeros_like(same_pid)
        per_query.append(_loop_query(same_pid[~removed], max_rank))  # r_k over the filtered list
    return _loop_result(per_query, _REID_NO_MATCH)


def eval_t2i_loop(similarity: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike, max_rank: int = 10,
                  i2t: bool = False) -> EvalResult:
    """Literal per-query numpy loop of the ``eval_t2i`` protocol (same arguments, no blocks).

    Slow (one stable argsort of G per query); kept as the oracle for ``eval_t2i`` and the baseline of
    ``bench/bench_t2i_eval.py``.
    """
    sim = _as_distmat(similarity, "similarity", "num_captions, num_images").cpu().numpy()
    num_t, num_v = sim.shape
    tp, vp = _t2i_labels(q_pids, g_pids, num_t, num_v, "similarity row (caption)", "similarity column (image)")
    queries, qp, gp = (sim.T, vp, tp) if i2t else (sim, tp, vp)
    max_rank = _check_max_rank(max_rank, gp.size)
    per_query = []
    for q in range(qp.size):
        if np.isnan(queries[q]).any():
            raise ValueError("similarity contains NaN; ranks would be undefined")
        order = np.argsort(-queries[q], kind="stable")  # descending similarity, ties by ascending gallery index
        per_query.append(_loop_query(gp[order] == qp[q], max_rank))
    return _loop_result(per_query, _T2I_NO_MATCH)
