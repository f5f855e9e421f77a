"""k-reciprocal re-ranking vs a plain-loop transcription of Zhong et al. (CVPR 2017) / re_ranking_feature."""
import numpy as np
import pytest
import torch

from utils.reranking import RERANK_PRESETS, describe_reranking, re_ranking


def _k_reciprocal(initial_rank, p, k):
    """R(p, k): items in p's top k+1 that have p in their own top k+1."""
    return [i for i in initial_rank[p, :k + 1] if p in initial_rank[i, :k + 1]]


def reference_re_ranking(q_feat, g_feat, k1, k2, lambda_value):
    """Step-by-step float64 loops over the pool, following the reference python-version.

    Ties in the initial rank are broken by pool index (stable argsort), as in utils.reranking.
    """
    feat = np.concatenate([q_feat, g_feat]).astype(np.float64)
    num_query, num_pool = q_feat.shape[0], feat.shape[0]
    dist = np.zeros((num_pool, num_pool))
    for p in range(num_pool):
        for i in range(num_pool):
            dist[p, i] = np.sum((feat[p] - feat[i]) ** 2)
        dist[p] /= dist[p].max()  # each row divided by its max
    initial_rank = np.argsort(dist, axis=1, kind="stable")

    half = int(np.around(k1 / 2))
    v = np.zeros((num_pool, num_pool))
    for p in range(num_pool):
        r_p = _k_reciprocal(initial_rank, p, k1)
        expansion = set(r_p)
        for c in r_p:
            r_c = _k_reciprocal(initial_rank, c, half)
            if len(set(r_c) & set(r_p)) > 2.0 / 3.0 * len(r_c):
                expansion |= set(r_c)
        for i in expansion:
            v[p, i] = np.exp(-dist[p, i])
        v[p] /= v[p].sum()

    if k2 != 1:
        v_qe = np.zeros_like(v)
        for p in range(num_pool):
            v_qe[p] = np.mean(v[initial_rank[p, :k2]], axis=0)
        v = v_qe

    final = np.zeros((num_query, num_pool - num_query))
    for q in range(num_query):
        for j in range(num_pool - num_query):
            g = num_query + j
            jaccard = 1.0 - np.minimum(v[q], v[g]).sum() / np.maximum(v[q], v[g]).sum()
            final[q, j] = (1 - lambda_value) * jaccard + lambda_value * dist[q, g]
    return final


def _identity_features(num_query, num_gallery, num_ids=40, dim=16, seed=0):
    """Clustered features: images of one id scatter around its centre, so k-reciprocal sets are non-trivial."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, dim))
    q_ids = rng.integers(0, num_ids, num_query)
    g_ids = rng.integers(0, num_ids, num_gallery)
    qf = centres[q_ids] + 0.6 * rng.normal(size=(num_query, dim))
    gf = centres[g_ids] + 0.6 * rng.normal(size=(num_gallery, dim))
    return qf.astype(np.float32), gf.astype(np.float32)


@pytest.fixture(scope="module")
def features():
    return _identity_features(30, 200)


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (7, 3, 0.5), (5, 1, 0.0)])
def test_matches_reference_loop(features, k1, k2, lam):
    qf, gf = features
    expected = reference_re_ranking(qf, gf, k1, k2, lam)
    got = re_ranking(torch.from_numpy(qf), torch.from_numpy(gf), k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_defaults_are_paper_values(features):
    qf, gf = features
    expected = reference_re_ranking(qf, gf, 20, 6, 0.3)
    got = re_ranking(qf, gf)  # numpy inputs, default parameters
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert RERANK_PRESETS["paper"] == (20, 6, 0.3)


def test_expansion_changes_the_ranking(features):
    """Re-ranking is not a no-op on clustered data: the Jaccard term reorders some gallery items."""
    qf, gf = features
    pure_jaccard = re_ranking(qf, gf, lambda_value=0.0)
    original_only = re_ranking(qf, gf, lambda_value=1.0)
    assert not np.array_equal(np.argsort(pure_jaccard, axis=1), np.argsort(original_only, axis=1))
    # lambda = 1 leaves the row-normalised squared Euclidean distance
    pool = np.concatenate([qf, gf]).astype(np.float64)
    d = ((pool[:30, None, :] - pool[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(original_only, (d / d.max(axis=1, keepdims=True))[:, 30:], atol=1e-5)


def test_shape_dtype_and_inputs_untouched(features):
    qf, gf = features
    q_t, g_t = torch.from_numpy(qf.copy()), torch.from_numpy(gf.copy())
    out = re_ranking(q_t, g_t, k1=6, k2=2, lambda_value=0.3)
    assert out.shape == (30, 200) and out.dtype == np.float32 and isinstance(out, np.ndarray)
    assert torch.equal(q_t, torch.from_numpy(qf)) and torch.equal(g_t, torch.from_numpy(gf))
    assert np.all(out >= 0) and np.all(out <= 1 + 1e-6)


def test_distance_ties_follow_stable_order():
    """Small-integer features give exactly computed distances with many ties (and duplicate items);
    neighbour lists must follow the stable (value, index) order like the reference loop."""
    rng = np.random.default_rng(3)
    qf = rng.integers(-2, 3, size=(8, 4)).astype(np.float32)
    gf = rng.integers(-2, 3, size=(60, 4)).astype(np.float32)
    gf[10] = gf[11] = gf[12]
    qf[2] = gf[5]
    for k1, k2 in ((6, 3), (20, 6)):
        expected = reference_re_ranking(qf, gf, k1, k2, 0.3)
        np.testing.assert_allclose(re_ranking(qf, gf, k1=k1, k2=k2, lambda_value=0.3), expected, atol=1e-5)


def test_parameter_errors(features):
    qf, gf = features
    with pytest.raises(ValueError, match="k1"):
        re_ranking(qf, gf, k1=0)
    with pytest.raises(ValueError, match="lambda"):
        re_ranking(qf, gf, lambda_value=1.5)
    with pytest.raises(ValueError, match="pool size"):
        re_ranking(qf[:2], gf[:3], k1=20)
    with pytest.raises(ValueError, match="dimensions"):
        re_ranking(qf, gf[:, :8])


def test_describe_names_variant():
    assert describe_reranking(20, 6, 0.3) == "k-reciprocal(k1=20,k2=6,lambda=0.3)"
    assert describe_reranking(*RERANK_PRESETS["transreid"]) == "k-reciprocal(k1=50,k2=15,lambda=0.3)"
