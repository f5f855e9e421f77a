"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li: "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), memory-bounded.

Semantics of the primary reference, ``zhunzhong07/person-re-ranking`` ``python-version/re_ranking_feature``
(the BoT / TransReID / CLIP-ReID ``re_ranking`` is the same algorithm with the squared distance from a
float32 torch GEMM, as here), on the pool P = query + gallery (N = Q + G items):

1. d(p, i) = ||f_p - f_i||^2, each row divided by its maximum over the whole pool;
   initial rank of p = the pool sorted by d(p, .) (self included, normally first).
2. R(p, k) = {i in top k+1 of p : p in top k+1 of i} (k-reciprocal neighbours).
3. R*(p) = R(p, k1) united with R(c, round(k1/2)) for each c in R(p, k1) such that
   |R(c, round(k1/2)) & R(p, k1)| > 2/3 |R(c, round(k1/2))|. ``round`` is numpy's ``around``
   (half to even), as in the reference. The 2/3 test is done exactly in integers: 3|.| > 2|.|.
4. V_p[i] = exp(-d(p, i)) for i in R*(p), else 0; then V_p is normalised to sum 1.
5. Local query expansion (when k2 != 1): V_p <- mean of V_i over the k2 first items of p's initial rank.
6. Jaccard distance d_J(p, g) = 1 - S / (2 - S) with S = sum_i min(V_p[i], V_g[i]). This is the
   reference's form. It equals 1 - sum min / sum max because every V row sums to 1 (sum max = 2 - sum min).
7. final = (1 - lambda) d_J + lambda d, returned for query rows x gallery columns.

Deliberate differences from the reference (none changes the method):
- float32 distances, float64 V and Jaccard sums, instead of float16 everywhere;
- ties in the initial rank are broken by pool index (stable), not by an unstable ``np.argsort``;
  ranks are taken on the un-normalised distances (same order: a row is divided by a positive constant);
- the pooled distances come from a float32 GEMM (||a||^2 + ||b||^2 - 2ab, clamped at 0), not ``cdist``;
  exact duplicates normally come out with equal distances (same arithmetic), so they still tie and keep
  index order;
- memory: the reference holds several dense N x N float16 matrices and an N x N argsort. Here the
  distances are computed in row blocks and only the top max(k1+1, k2) neighbours are kept (blocked
  top-k with stable ties). V is a sparse matrix, and the Jaccard step only visits entries where both
  V rows are non-zero (inverted index over the gallery rows of V). Peak memory is O(block x N + Q x G).
"""
from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np
import scipy.sparse as sp
import torch

from utils.metrics import ArrayLike, as_feature_matrix


RERANK_VARIANT_NAME = "k-reciprocal"
# Named parameter sets: the paper's, and the one TransReID / CLIP-ReID hard-code.
RERANK_PRESETS = {"paper": (20, 6, 0.3), "transreid": (50, 15, 0.3)}

# Temporaries budget of one row block of the pooled distance matrix.
_BLOCK_BYTES = 256 << 20
# Max number of (query, k, gallery) terms expanded at once in the Jaccard step.
_JACCARD_TERMS = 1 << 23


def describe_reranking(k1: int, k2: int, lambda_value: float) -> str:
    """Name of the re-ranking variant for logs and summary.json, e.g. 'k-reciprocal(k1=20,k2=6,lambda=0.3)'."""
    return f"{RERANK_VARIANT_NAME}(k1={k1},k2={k2},lambda={lambda_value:g})"


def _check_params(k1: int, k2: int, lambda_value: float, num_pool: int) -> None:
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    if max(k1 + 1, k2) > num_pool:
        raise ValueError(f"k1 + 1 = {k1 + 1} and k2 = {k2} must not exceed the pool size "
                         f"num_query + num_gallery = {num_pool}")


def _stable_smallest(dist: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k smallest entries of each row, ordered by (value, index): the first k of a stable sort.

    topk gives the k-th smallest value; every entry <= it is a candidate (ties included), and the
    candidates are ordered exactly. Memory O(rows x N) bool + O(rows x k) indices.
    """
    kth = torch.topk(dist, k, dim=1, largest=False, sorted=True).values[:, -1:]
    rows, cols = (dist <= kth).nonzero(as_tuple=True)  # row-major, columns ascending
    values = dist[rows, cols]
    order = torch.argsort(values, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]  # by row, then value, then column
    rows, cols = rows[order], cols[order]
    counts = torch.bincount(rows, minlength=dist.shape[0])
    rank_in_row = torch.arange(rows.numel(), device=dist.device) - (torch.cumsum(counts, 0) - counts)[rows]
    return cols[rank_in_row < k].view(dist.shape[0], k)


def _pool_distances(feat: torch.Tensor, num_query: int, num_neighbours: int
                    ) -> Tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Blocked pass over the pooled squared distances (step 1).

    Returns:
        neighbours (N, num_neighbours) int64 initial rank prefix; row_max (N,) float32;
        query_dist (Q, G) float32 = d(q, g) / row_max(q), the row-normalised original distance.
    """
    num_pool = feat.shape[0]
    sq_norm = (feat * feat).sum(dim=1)
    block = max(1, _BLOCK_BYTES // (16 * num_pool))
    neighbours = torch.empty(num_pool, num_neighbours, dtype=torch.int64)
    row_max = torch.empty(num_pool, dtype=torch.float32)
    query_dist = np.empty((num_query, num_pool - num_query), dtype=np.float32)
    for s in range(0, num_pool, block):
        e = min(s + block, num_pool)
        dist = torch.mm(feat[s:e], feat.t()).mul_(-2.0)
        dist.add_(sq_norm[s:e].unsqueeze(1)).add_(sq_norm.unsqueeze(0)).clamp_(min=0.0)
        row_max[s:e] = dist.max(dim=1).values.cpu()
        neighbours[s:e] = _stable_smallest(dist, num_neighbours).cpu()
        if s < num_query:
            qe = min(e, num_query)
            block_q = dist[:qe - s, num_query:] / row_max[s:qe].to(dist.device).clamp(min=1e-12).unsqueeze(1)
            query_dist[s:qe] = block_q.cpu().numpy()
    return neighbours, row_max, query_dist


def _reciprocal(neighbours: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    """Mask (N, k+1): neighbours[p, a] is in R(p, k), i.e. p is among the top k+1 of that neighbour (step 2)."""
    top = neighbours[:, :k + 1]
    mask = torch.empty(top.shape, dtype=torch.bool)
    for s in range(0, top.shape[0], chunk):
        e = min(s + chunk, top.shape[0])
        backward = top[top[s:e]]  # (n, k+1, k+1): top lists of p's top items
        mask[s:e] = (backward == torch.arange(s, e).view(-1, 1, 1)).any(dim=2)
    return mask


def _expanded_sets(neighbours: torch.Tensor, k1: int) -> Tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of every pair (p, i) with i in R*(p) (steps 2-3), sorted by row then column."""
    half = int(np.around(k1 / 2.0))
    top, top_half = neighbours[:, :k1 + 1], neighbours[:, :half + 1]
    in_r = _reciprocal(neighbours, k1)  # (N, k1+1)
    in_r_half = _reciprocal(neighbours, half)  # (N, half+1)
    num_pool = neighbours.shape[0]
    chunk = max(1, min(4096, (64 << 20) // num_pool))  # bounds the dense membership mask below
    keys = []
    for s in range(0, num_pool, chunk):
        e = min(s + chunk, num_pool)
        p_top, p_in_r = top[s:e], in_r[s:e]
        cand_set = top_half[p_top]  # (n, k1+1, half+1): top half-list of each candidate c
        cand_in = in_r_half[p_top]  # ... and which of those are in R(c, half)
        member = torch.zeros(e - s, num_pool, dtype=torch.bool)  # member[p, i]: i in R(p, k1)
        member.scatter_(1, p_top, p_in_r)
        in_p = member.gather(1, cand_set.view(e - s, -1)).view(cand_set.shape)
        overlap = (in_p & cand_in).sum(-1)
        size = cand_in.sum(-1)
        accepted = p_in_r & (3 * overlap > 2 * size)  # c in R(p, k1) and |R(c) & R(p)| > 2/3 |R(c)|
        row_ids = torch.arange(s, e).view(-1, 1)
        keys.append((row_ids * num_pool + p_top)[p_in_r])
        expanded = cand_in & accepted.unsqueeze(-1)
        keys.append((row_ids.view(-1, 1, 1) * num_pool + cand_set)[expanded])
    keys = torch.unique(torch.cat(keys)).numpy()  # sorted, duplicates merged (set union)
    return keys // num_pool, keys % num_pool


def _encode(feat: torch.Tensor, row_max: torch.Tensor, rows: np.ndarray, cols: np.ndarray,
            chunk: int = 8192) -> sp.csr_matrix:
    """V (step 4): V[p, i] = exp(-d(p, i)) / sum over R*(p), as a sparse float64 matrix.

    d(p, i) is recomputed per pair (float32, same formula as the GEMM), in chunks that bound the gathered
    feature rows to 2 x chunk x dim.
    """
    num_pool = feat.shape[0]
    sq_norm = (feat * feat).sum(dim=1)
    rows_t, cols_t = torch.from_numpy(rows), torch.from_numpy(cols)
    dot = torch.empty(rows.size, dtype=torch.float32)
    for s in range(0, rows.size, chunk):
        r, c = rows_t[s:s + chunk], cols_t[s:s + chunk]
        dot[s:s + chunk] = (feat.index_select(0, r) * feat.index_select(0, c)).sum(dim=1)
    dist = (sq_norm[rows_t] + sq_norm[cols_t] - 2.0 * dot).clamp_(min=0.0).double()
    dist /= row_max.double().clamp(min=1e-12)[rows_t]
    weight = torch.exp(-dist).numpy()
    weight /= np.bincount(rows, weights=weight, minlength=num_pool)[rows]
    return sp.csr_matrix((weight, (rows, cols)), shape=(num_pool, num_pool))


def _local_query_expansion(v: sp.csr_matrix, neighbours: torch.Tensor, k2: int) -> sp.csr_matrix:
    """Step 5: V_p <- (1/k2) sum of V_i over the first k2 items of p's initial rank."""
    num_pool = v.shape[0]
    cols = neighbours[:, :k2].reshape(-1).numpy()
    rows = np.repeat(np.arange(num_pool), k2)
    select = sp.csr_matrix((np.ones(cols.size), (rows, cols)), shape=(num_pool, num_pool))
    return (select @ v).tocsr() / float(k2)


def _jaccard_min_sum_blocks(v: sp.csr_matrix, num_query: int) -> Iterator[Tuple[int, int, np.ndarray]]:
    """Yield (start, end, S) with S[q, g] = sum_i min(V_q[i], V_g[i]) (float64) for query rows start..end-1
    and all gallery rows (step 6).

    Only terms with V_q[i] > 0 and V_g[i] > 0 are visited: for each non-zero (q, i), the gallery rows
    that are non-zero in column i come from the CSC form of V's gallery rows (the reference's invIndex).
    Query rows are chunked so that at most ``_JACCARD_TERMS`` terms, and an output of at most the same
    number of entries, are in memory at once.
    """
    v_query = v[:num_query].tocsr()
    v_gallery = v[num_query:].tocsc()
    num_gallery = v_gallery.shape[0]
    col_start, col_count = v_gallery.indptr[:-1], np.diff(v_gallery.indptr)
    nnz_per_query = np.diff(v_query.indptr)
    query_of_nnz = np.repeat(np.arange(num_query), nnz_per_query)
    terms = np.bincount(query_of_nnz, weights=col_count[v_query.indices], minlength=num_query)
    max_rows = max(1, _JACCARD_TERMS // num_gallery)
    s = 0
    while s < num_query:
        fits = int(np.searchsorted(np.cumsum(terms[s:s + max_rows]), _JACCARD_TERMS, side="right"))
        e = s + max(1, fits)
        lo, hi = v_query.indptr[s], v_query.indptr[e]
        k, q_val = v_query.indices[lo:hi], v_query.data[lo:hi]
        n = col_count[k]
        offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        at = np.repeat(col_start[k], n) + offset
        term_min = np.minimum(np.repeat(q_val, n), v_gallery.data[at])
        flat = np.repeat(query_of_nnz[lo:hi] - s, n) * num_gallery + v_gallery.indices[at]
        yield s, e, np.bincount(flat, weights=term_min, minlength=(e - s) * num_gallery).reshape(e - s, -1)
        s = e


def re_ranking(q_feat: ArrayLike, g_feat: ArrayLike, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3) -> np.ndarray:
    """k-reciprocal re-ranked query x gallery distance (Zhong et al. 2017; see module docstring).

    Args:
        q_feat: (Q, d) query features (torch tensor or numpy). Normalise them before if desired.
        g_feat: (G, d) gallery features.
        k1: k of the k-reciprocal sets (paper 20; TransReID/CLIP-ReID 50).
        k2: size of the local query expansion (paper 6; TransReID 15); 1 disables it.
        lambda_value: weight of the original distance in the final mix (paper 0.3).

    Returns:
        (Q, G) float32 numpy array; smaller = more similar. Feed it to ``utils.metrics.evaluate``.

    Example:
        >>> dist = re_ranking(qf, gf, k1=20, k2=6, lambda_value=0.3)
    """
    q, g = as_feature_matrix(q_feat, "q_feat"), as_feature_matrix(g_feat, "g_feat")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dimensions differ: q_feat has {q.shape[1]}, g_feat has {g.shape[1]}")
    if q.shape[0] == 0 or g.shape[0] == 0:
        raise ValueError(f"empty features: q_feat {tuple(q.shape)}, g_feat {tuple(g.shape)}")
    feat = torch.cat([q, g.to(q.device)], dim=0)
    if not bool(torch.isfinite(feat).all()):
        raise ValueError("features contain NaN or inf")
    num_query, num_pool = q.shape[0], feat.shape[0]
    _check_params(k1, k2, lambda_value, num_pool)

    neighbours, row_max, query_dist = _pool_distances(feat, num_query, max(k1 + 1, k2))
    rows, cols = _expanded_sets(neighbours, k1)
    v = _encode(feat.cpu(), row_max, rows, cols)
    if k2 != 1:  # as the reference, k2 == 1 skips the expansion entirely
        v = _local_query_expansion(v, neighbours, k2)
    final = query_dist  # filled in place, query block by query block
    for s, e, min_sums in _jaccard_min_sum_blocks(v, num_query):
        jaccard = 1.0 - min_sums / (2.0 - min_sums)
        final[s:e] = (1.0 - lambda_value) * jaccard + lambda_value * final[s:e]
    return final
