"""Market-1501 protocol evaluator: closed-form example, equality with the per-query loop, features path, errors."""
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.metrics import (EvalResult, eval_func, evaluate, evaluate_features, evaluate_loop,
                           pairwise_distance)


def eval_func_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """The reference ``eval_func`` return triple (cmc, mAP, mINP), computed by the per-query loop."""
    result = evaluate_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
    return result.cmc, result.mAP, result.mINP

# ---------------------------------------------------------------------------------------------
# Hand-worked example: 3 queries, 7 gallery items.
#
#   gallery  g0    g1    g2    g3         g4    g5    g6
#   pid       1     1     2     0 (distr.)  1     3     2
#   cam       0     1     0     2          2     0     1
#
# Query A (pid 1, cam 0), distances g0..g6 = .1 .5 .2 .3 .9 .4 .6
#   sorted: g0 g2 g3 g5 g1 g6 g4; g0 has A's pid AND camera -> removed
#   filtered: g2 g3 g5 g1 g6 g4, relevance 0 0 0 1 0 1
#   AP = (1/2)(1/4 + 2/6) = 7/24, first hit at 4, INP = 2/6 = 1/3
# Query B (pid 2, cam 1), distances .5 .2 .3 .3 .7 .8 .1 (g2 and g3 tie at .3 -> g2 first, stable)
#   sorted: g6 g1 g2 g3 g0 g4 g5; g6 (pid 2, cam 1) removed
#   filtered: g1 g2 g3 g0 g4 g5, relevance 0 1 0 0 0 0
#   AP = 1/2, first hit at 2, INP = 1/2   (an unstable tie order g3 g2 would give AP = 1/3)
# Query C (pid 3, cam 0), distances .2 .1 .4 .3 .6 .5 .7: its only pid-3 item g5 is in cam 0 -> removed,
#   no valid match -> skipped and counted.
# Means over the 2 valid queries: mAP = (7/24 + 1/2)/2 = 19/48, mINP = (1/3 + 1/2)/2 = 5/12,
# CMC (max_rank 50 clipped to G = 7) = [0, 1/2, 1/2, 1, 1, 1, 1].
#
# camera_filter=False keeps g0, g6, g5:
#   A: g0 g2 g3 g5 g1 g6 g4 -> 1 0 0 0 1 0 1: AP = (1 + 2/5 + 3/7)/3 = 64/105, INP = 3/7, first 1
#   B: g6 g1 g2 g3 ...      -> 1 0 1 0 0 0 0: AP = (1 + 2/3)/2 = 5/6,    INP = 2/3, first 1
#   C: g1 g0 g3 g2 g5 g4 g6 -> hit at 5:       AP = 1/5,                 INP = 1/5, first 5
#   mAP = 23/42, mINP = 136/315, CMC = [2/3, 2/3, 2/3, 2/3, 1, 1, 1]
# ---------------------------------------------------------------------------------------------
HAND_DIST = np.array([[.1, .5, .2, .3, .9, .4, .6],
                      [.5, .2, .3, .3, .7, .8, .1],
                      [.2, .1, .4, .3, .6, .5, .7]])
HAND_Q_PIDS, HAND_Q_CAMS = [1, 2, 3], [0, 1, 0]
HAND_G_PIDS, HAND_G_CAMS = [1, 1, 2, 0, 1, 3, 2], [0, 1, 0, 2, 2, 0, 1]


def _hand(fn, **kw):
    return fn(HAND_DIST, HAND_Q_PIDS, HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS, **kw)


@pytest.mark.parametrize("fn", [evaluate, evaluate_loop])
def test_hand_worked_example(fn):
    res = _hand(fn)
    assert isinstance(res, EvalResult)
    assert res.num_valid == 2 and res.num_skipped == 1
    assert res.mAP == pytest.approx(19 / 48, abs=1e-15)
    assert res.mINP == pytest.approx(5 / 12, abs=1e-15)
    np.testing.assert_allclose(res.cmc, [0, .5, .5, 1, 1, 1, 1], atol=1e-15)
    assert res.cmc.dtype == np.float64
    d = res.as_dict()
    assert d["R1"] == 0.0 and d["R5"] == 100.0 and np.isnan(d["R10"])  # only 7 ranks exist
    assert d["mAP"] == pytest.approx(100 * 19 / 48) and d["num_skipped"] == 1 and d["num_valid"] == 2


@pytest.mark.parametrize("fn", [evaluate, evaluate_loop])
def test_hand_worked_example_without_camera_filter(fn):
    res = _hand(fn, camera_filter=False)
    assert res.num_valid == 3 and res.num_skipped == 0
    assert res.mAP == pytest.approx(23 / 42, abs=1e-15)
    assert res.mINP == pytest.approx(136 / 315, abs=1e-15)
    np.testing.assert_allclose(res.cmc, [2 / 3] * 4 + [1] * 3, atol=1e-15)


def test_hand_example_max_rank_and_eval_func_warning():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("phasereid")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        cmc, mAP, mINP = _hand(eval_func, max_rank=3)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    np.testing.assert_allclose(cmc, [0, .5, .5])
    assert mAP == pytest.approx(19 / 48) and mINP == pytest.approx(5 / 12)
    assert any(r.levelno == logging.WARNING and "skipped 1 of 3" in r.getMessage() for r in records)


# ---------------------------------------------------------------------------------------------
# Blocked evaluator == per-query loop on random data
# ---------------------------------------------------------------------------------------------
def _random_problem(seed, num_q=57, num_g=240, num_ids=20, num_cams=4, quantum=0.05, dtype=np.float64):
    """Random ids/cameras with distractors (pid 0), a query pid absent from the gallery, a query whose
    only matches share its camera, and distances on a coarse grid (many exact ties)."""
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(1, num_ids + 1, num_g)
    g_pids[rng.random(num_g) < 0.2] = 0  # distractors
    g_cams = rng.integers(0, num_cams, num_g)
    q_pids = rng.integers(1, num_ids + 1, num_q)
    q_cams = rng.integers(0, num_cams, num_q)
    q_pids[0] = num_ids + 5  # not in the gallery
    g_pids[g_pids == q_pids[1]] = 0  # make query 1's pid appear only in its own camera
    g_pids[:3], g_cams[:3] = q_pids[1], q_cams[1]
    dist = rng.random((num_q, num_g))
    dist = (np.round(dist / quantum) * quantum).astype(dtype)
    # nudge the same-pid items forwards so the ranking is neither perfect nor random
    dist[q_pids[:, None] == g_pids[None, :]] *= 0.6
    return dist, q_pids, g_pids, q_cams, g_cams


def _assert_same(res, ref):
    assert res.num_valid == ref.num_valid and res.num_skipped == ref.num_skipped
    assert abs(res.mAP - ref.mAP) <= 1e-12 and abs(res.mINP - ref.mINP) <= 1e-12
    assert res.cmc.shape == ref.cmc.shape and np.max(np.abs(res.cmc - ref.cmc)) <= 1e-12


@pytest.mark.parametrize("seed,dtype,quantum", [(0, np.float64, 0.05), (1, np.float32, 0.02), (2, np.float64, 1e-9)])
def test_blocked_equals_loop(seed, dtype, quantum):
    dist, q_pids, g_pids, q_cams, g_cams = _random_problem(seed, quantum=quantum, dtype=dtype)
    ref = evaluate_loop(dist, q_pids, g_pids, q_cams, g_cams)
    assert ref.num_skipped >= 2  # the absent pid and the same-camera-only pid
    results = [evaluate(dist, q_pids, g_pids, q_cams, g_cams, block_size=b) for b in (1, 7, 57, 0, 1000)]
    for res in results:
        _assert_same(res, ref)
        # per-query numbers are stored, so the block size cannot change a single bit
        assert res.mAP == results[0].mAP and res.mINP == results[0].mINP
        assert np.array_equal(res.cmc, results[0].cmc)


def test_ties_are_broken_by_gallery_index():
    """All distances equal: the stable order is the gallery order, so AP is fixed by the index positions."""
    dist = np.zeros((1, 6))
    g_pids, g_cams = [5, 7, 5, 7, 7, 5], [1, 1, 1, 1, 1, 1]
    res = evaluate(dist, [5], g_pids, [0], g_cams)
    # relevant at positions 1, 3, 6: AP = (1/1 + 2/3 + 3/6)/3
    assert res.mAP == pytest.approx((1 + 2 / 3 + 3 / 6) / 3, abs=1e-15)
    assert res.mINP == pytest.approx(3 / 6, abs=1e-15)


def test_eval_func_signatures_agree_with_loop():
    dist, q_pids, g_pids, q_cams, g_cams = _random_problem(3)
    cmc, mAP, mINP = eval_func(torch.from_numpy(dist), torch.from_numpy(q_pids), g_pids.tolist(), q_cams, g_cams,
                               max_rank=20)
    cmc_l, mAP_l, mINP_l = eval_func_loop(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20)
    assert cmc.shape == (20,) and abs(mAP - mAP_l) <= 1e-12 and abs(mINP - mINP_l) <= 1e-12
    np.testing.assert_allclose(cmc, cmc_l, rtol=0, atol=1e-12)


def test_camera_filter_false_equals_loop():
    dist, q_pids, g_pids, q_cams, g_cams = _random_problem(4)
    ref = evaluate_loop(dist, q_pids, g_pids, q_cams, g_cams, camera_filter=False)
    res = evaluate(dist, q_pids, g_pids, q_cams, g_cams, camera_filter=False, block_size=5)
    _assert_same(res, ref)
    assert res.num_skipped == 1  # only the pid absent from the gallery
    with_filter = evaluate(dist, q_pids, g_pids, q_cams, g_cams)
    assert with_filter.num_skipped > res.num_skipped and with_filter.mAP != res.mAP


# ---------------------------------------------------------------------------------------------
# Features path
# ---------------------------------------------------------------------------------------------
def test_pairwise_distance_closed_form():
    torch.manual_seed(0)
    x, y = torch.randn(5, 8, dtype=torch.float64), torch.randn(7, 8, dtype=torch.float64)
    d = pairwise_distance(x, y)
    assert d.dtype == torch.float32 and d.shape == (5, 7)
    torch.testing.assert_close(d, (torch.cdist(x, y) ** 2).float(), rtol=1e-5, atol=1e-5)
    c = pairwise_distance(x, y, metric="cosine")
    torch.testing.assert_close(c, (1 - F.cosine_similarity(x[:, None], y[None], dim=2)).float(), rtol=1e-5, atol=1e-5)
    assert torch.all(pairwise_distance(x, x).diagonal() >= 0)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("feat_norm", [True, False])
def test_evaluate_features_equals_evaluate_on_distmat(metric, feat_norm):
    rng = np.random.default_rng(5)
    num_q, num_g, num_ids = 300, 500, 30  # 300 queries: several 128-row GEMM chunks and a partial one
    centres = rng.normal(size=(num_ids + 1, 24))
    q_pids, g_pids = rng.integers(1, num_ids + 1, num_q), rng.integers(0, num_ids + 1, num_g)
    q_cams, g_cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    qf = torch.from_numpy(centres[q_pids] + rng.normal(size=(num_q, 24))).float() * 3
    gf = torch.from_numpy(centres[g_pids] + rng.normal(size=(num_g, 24))).float() * 3
    qf_copy, gf_copy = qf.clone(), gf.clone()
    qn, gn = (F.normalize(qf, dim=1), F.normalize(gf, dim=1)) if feat_norm else (qf, gf)
    ref = evaluate(pairwise_distance(qn, gn, metric=metric), q_pids, g_pids, q_cams, g_cams)
    for block in (0, 1, 128, 200):
        res = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric, feat_norm=feat_norm,
                                block_size=block)
        assert res.mAP == ref.mAP and res.mINP == ref.mINP and np.array_equal(res.cmc, ref.cmc)
        assert res.num_skipped == ref.num_skipped
    assert torch.equal(qf, qf_copy) and torch.equal(gf, gf_copy)  # inputs not normalised in place
    assert 0.0 < ref.mAP < 1.0


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_no_valid_query_raises():
    dist = np.random.default_rng(0).random((3, 4))
    with pytest.raises(ValueError, match="no valid query"):
        evaluate(dist, [1, 2, 3], [4, 5, 6, 7], [0, 0, 0], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="no valid query"):
        evaluate_loop(dist, [1, 2, 3], [4, 5, 6, 7], [0, 0, 0], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="no valid query"):  # matches exist, but all in the query's camera
        evaluate(dist, [1, 1, 1], [1, 1, 9, 9], [0, 0, 0], [0, 0, 1, 1])


def test_shape_and_type_errors():
    dist = np.zeros((3, 4))
    with pytest.raises(ValueError, match="q_pids"):
        evaluate(dist, [1, 2], [1, 2, 3, 4], [0, 0, 0], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="g_camids"):
        evaluate(dist, [1, 2, 3], [1, 2, 3, 4], [0, 0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="2-D"):
        evaluate(np.zeros(4), [1], [1, 2, 3, 4], [0], [1, 1, 1, 1])
    with pytest.raises(TypeError, match="integers"):
        evaluate(dist, [1.0, 2.0, 3.0], [1, 2, 3, 4], [0, 0, 0], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="max_rank"):
        evaluate(dist, [1, 2, 3], [1, 2, 3, 4], [0, 0, 0], [1, 1, 1, 1], max_rank=0)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(np.full((3, 4), np.nan), [1, 2, 3], [1, 2, 3, 4], [0, 0, 0], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="dimensions"):
        evaluate_features(torch.zeros(3, 4), torch.zeros(4, 5), [1, 2, 3], [1, 2, 3, 4], [0, 0, 0], [1, 1, 1, 1])


@pytest.mark.parametrize("call", [
    lambda: pairwise_distance(torch.zeros(2, 3), torch.zeros(2, 3), metric="manhattan"),
    lambda: evaluate_features(torch.zeros(2, 3), torch.zeros(2, 3), [1, 2], [1, 2], [0, 0], [1, 1], metric="l1"),
])
def test_bad_metric_names_allowed_values(call):
    with pytest.raises(ValueError, match="euclidean, cosine"):
        call()
