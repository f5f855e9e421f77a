"""Text-to-image evaluator: closed-form example, equality with the per-query loop and with IRRA's ``rank``
semantics (ties included), block-size invariance, the i2t switch, the features path, errors."""
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.metrics import (EvalResult, cosine_similarity_matrix, eval_t2i, eval_t2i_features,
                           eval_t2i_loop)


# ---------------------------------------------------------------------------------------------
# IRRA's ``rank`` (anosorae/IRRA utils/metrics.py, get_mAP=True), re-written from reading it.
# ---------------------------------------------------------------------------------------------
def irra_rank(similarity, q_pids, g_pids, max_rank=10, stable=True):
    """(cmc, mAP, mINP) as fractions, by IRRA's recipe on whole matrices, in float64.

    IRRA: order = argsort(similarity, descending) over each row; matches = g_pids[order] == q_pid;
    CMC = cumsum(matches)[:, :max_rank] clipped at 1, mean over queries; AP = sum_k matches_k * cumsum_k / k
    divided by the number of matches; INP = cumsum at the last match / (its 0-based index + 1); means over
    all queries (IRRA multiplies by 100). IRRA's argsort is not stable: ``stable=False`` is its literal
    call (tie order unspecified), ``stable=True`` the deterministic tie rule PhaseReID states.
    """
    similarity = torch.as_tensor(similarity, dtype=torch.float64)
    q_pids, g_pids = torch.as_tensor(q_pids), torch.as_tensor(g_pids)
    if stable:
        order = torch.sort(similarity, dim=1, descending=True, stable=True).indices
    else:
        order = torch.argsort(similarity, dim=1, descending=True)
    matches = g_pids[order] == q_pids.view(-1, 1)
    cum = matches.cumsum(1).double()
    cmc = cum[:, :max_rank].clamp(max=1).mean(0)
    k = torch.arange(1, matches.shape[1] + 1, dtype=torch.float64)
    num_rel = matches.sum(1).double()
    ap = (cum / k * matches).sum(1) / num_rel
    last = (matches * k).amax(1)  # 1-based position of the last match
    inp = num_rel / last
    return cmc.numpy(), float(ap.mean()), float(inp.mean())


# ---------------------------------------------------------------------------------------------
# Hand-worked example: 3 captions (pids 1, 2, 3) x 5 images (pids g0..g4 = 1 2 1 3 2), integer similarities.
#
#   t0 (pid 1): 2 3 2 1 3 -> order g1 g4 g0 g2 g3 (3s: g1 before g4; 2s: g0 before g2), hits 0 0 1 1 0
#       AP = (1/3 + 2/4)/2 = 5/12, INP = 2/4, first hit 3
#   t1 (pid 2): 1 1 1 1 1 -> all tied: gallery order g0..g4, hits 0 1 0 0 1
#       AP = (1/2 + 2/5)/2 = 9/20, INP = 2/5, first 2   (a reversed tie order g4..g0 would give AP 3/4)
#   t2 (pid 3): 0 0 0 1 0 -> g3 first: AP = INP = 1, first 1
#   t2i: mAP = (5/12 + 9/20 + 1)/3 = 28/45, mINP = (1/2 + 2/5 + 1)/3 = 19/30, CMC (G = 5) = 1/3 2/3 1 1 1
#
# i2t on the same matrix (each image column queries the 3 captions; one caption per pid):
#   g0 (1): 2 1 0 -> t0 first, AP 1 | g1 (2): 3 1 0 -> t1 2nd, AP 1/2 | g2 (1): 2 1 0 -> AP 1
#   g3 (3): 1 1 1 -> tied, t0 t1 t2: t2 3rd, AP 1/3 | g4 (2): 3 1 0 -> AP 1/2
#   one relevant item each, so INP = AP: mAP = mINP = (1 + 1/2 + 1 + 1/3 + 1/2)/5 = 2/3, CMC (G = 3) = 2/5 4/5 1
# ---------------------------------------------------------------------------------------------
HAND_SIM = np.array([[2, 3, 2, 1, 3],
                     [1, 1, 1, 1, 1],
                     [0, 0, 0, 1, 0]])
HAND_T_PIDS, HAND_V_PIDS = [1, 2, 3], [1, 2, 1, 3, 2]


@pytest.mark.parametrize("fn", [eval_t2i, eval_t2i_loop])
def test_hand_worked_example(fn):
    res = fn(HAND_SIM, HAND_T_PIDS, HAND_V_PIDS)
    assert isinstance(res, EvalResult) and res.num_valid == 3 and res.num_skipped == 0
    assert res.mAP == pytest.approx(28 / 45, abs=1e-15) and res.mINP == pytest.approx(19 / 30, abs=1e-15)
    np.testing.assert_allclose(res.cmc, [1 / 3, 2 / 3, 1, 1, 1], atol=1e-15)  # max_rank 10 clipped to G = 5
    d = res.as_dict()
    assert d["R1"] == pytest.approx(100 / 3) and d["R5"] == 100.0 and np.isnan(d["R10"])

    back = fn(HAND_SIM, HAND_T_PIDS, HAND_V_PIDS, i2t=True)
    assert back.num_valid == 5 and back.num_skipped == 0
    assert back.mAP == pytest.approx(2 / 3, abs=1e-15) and back.mINP == pytest.approx(2 / 3, abs=1e-15)
    np.testing.assert_allclose(back.cmc, [2 / 5, 4 / 5, 1], atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Random problems with many ties
# ---------------------------------------------------------------------------------------------
def _tied_problem(seed, num_t=60, num_v=45, num_ids=12, levels=6):
    """Integer-valued similarities in 0..levels-1 (many exact ties), raised by 2 for same-pid pairs so the
    ranking is neither perfect nor random; every pid present on both sides."""
    rng = np.random.default_rng(seed)
    v_pids = np.concatenate([np.arange(num_ids), rng.integers(0, num_ids, num_v - num_ids)])
    t_pids = np.concatenate([np.arange(num_ids), rng.integers(0, num_ids, num_t - num_ids)])
    rng.shuffle(v_pids), rng.shuffle(t_pids)
    sim = rng.integers(0, levels, (num_t, num_v)) + 2 * (t_pids[:, None] == v_pids[None, :])
    return sim.astype(np.float32), t_pids, v_pids


def _assert_same(res, ref):
    assert res.num_valid == ref.num_valid and res.num_skipped == ref.num_skipped
    assert abs(res.mAP - ref.mAP) <= 1e-12 and abs(res.mINP - ref.mINP) <= 1e-12
    assert res.cmc.shape == ref.cmc.shape and np.max(np.abs(res.cmc - ref.cmc)) <= 1e-12


def _assert_bitwise(res, ref):
    assert res.mAP == ref.mAP and res.mINP == ref.mINP and np.array_equal(res.cmc, ref.cmc)
    assert res.num_valid == ref.num_valid and res.num_skipped == ref.num_skipped


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("i2t", [False, True])
def test_equals_loop_and_irra_rank_with_ties(seed, i2t):
    sim, t_pids, v_pids = _tied_problem(seed)
    ref = eval_t2i_loop(sim, t_pids, v_pids, i2t=i2t)
    num_q = sim.shape[1] if i2t else sim.shape[0]
    results = [eval_t2i(sim, t_pids, v_pids, i2t=i2t, block_size=b) for b in (1, 7, num_q, 0, 1000)]
    for res in results:
        _assert_same(res, ref)
        _assert_bitwise(res, results[0])  # per-query numbers are stored: the block size changes no bit
    assert ref.cmc.shape == (10,) and 0.0 < ref.mAP < 1.0

    rows, q_pids, g_pids = (sim.T, v_pids, t_pids) if i2t else (sim, t_pids, v_pids)
    cmc, mAP, mINP = irra_rank(rows, q_pids, g_pids, max_rank=10)
    assert abs(ref.mAP - mAP) <= 1e-12 and abs(ref.mINP - mINP) <= 1e-12
    np.testing.assert_allclose(ref.cmc, cmc, rtol=0, atol=1e-12)


def test_tie_rule_differs_from_reverse_order():
    """The same problem with the column order reversed (ties then broken the other way) gives other numbers,
    so the equality above really checks the tie rule."""
    sim, t_pids, v_pids = _tied_problem(0)
    res = eval_t2i(sim, t_pids, v_pids)
    flipped = eval_t2i(sim[:, ::-1].copy(), t_pids, v_pids[::-1].copy())
    assert flipped.mAP != pytest.approx(res.mAP, abs=1e-6)


def test_irra_literal_argsort_without_ties():
    """Continuous similarities (no ties): IRRA's own unstable argsort gives the same numbers."""
    rng = np.random.default_rng(7)
    t_pids, v_pids = rng.integers(0, 15, 80), np.concatenate([np.arange(15), rng.integers(0, 15, 35)])
    t_pids[:15] = np.arange(15)
    sim = rng.standard_normal((80, 50)) + 1.5 * (t_pids[:, None] == v_pids[None, :])
    for rows, q_pids, g_pids, i2t in ((sim, t_pids, v_pids, False), (sim.T, v_pids, t_pids, True)):
        res = eval_t2i(torch.from_numpy(sim), torch.from_numpy(t_pids), v_pids.tolist(), i2t=i2t, block_size=9)
        cmc, mAP, mINP = irra_rank(rows, q_pids, g_pids, stable=False)
        assert abs(res.mAP - mAP) <= 1e-12 and abs(res.mINP - mINP) <= 1e-12
        np.testing.assert_allclose(res.cmc, cmc, rtol=0, atol=1e-12)


def test_i2t_switch_equals_transposed_call():
    sim, t_pids, v_pids = _tied_problem(3)
    for b in (0, 4):
        _assert_bitwise(eval_t2i(sim, t_pids, v_pids, i2t=True, block_size=b),
                        eval_t2i(np.ascontiguousarray(sim.T), v_pids, t_pids, block_size=b))


def test_dtypes_give_the_same_numbers():
    """Integer, float32, float64 and float16 inputs of the same integer values rank identically."""
    sim, t_pids, v_pids = _tied_problem(4, levels=5)
    ref = eval_t2i(sim.astype(np.float64), t_pids, v_pids)
    for s in (sim.astype(np.int64), sim, torch.from_numpy(sim).half()):
        _assert_bitwise(eval_t2i(s, t_pids, v_pids), ref)


# ---------------------------------------------------------------------------------------------
# Skipped queries
# ---------------------------------------------------------------------------------------------
def test_query_without_relevant_item_is_skipped_counted_and_logged():
    sim, t_pids, v_pids = _tied_problem(5)
    t_pids = t_pids.copy()
    t_pids[:3] = 99  # no image of pid 99
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("phasereid")
    logger.addHandler(handler)
    try:
        res = eval_t2i(sim, t_pids, v_pids, block_size=2)
    finally:
        logger.removeHandler(handler)
    assert res.num_skipped == 3 and res.num_valid == sim.shape[0] - 3
    _assert_same(res, eval_t2i_loop(sim, t_pids, v_pids))
    cmc, mAP, mINP = irra_rank(sim[3:], t_pids[3:], v_pids)  # IRRA on the valid queries only
    assert abs(res.mAP - mAP) <= 1e-12 and abs(res.mINP - mINP) <= 1e-12
    assert any(r.levelno == logging.WARNING and "skipped 3 of 60" in r.getMessage() for r in records)
    # i2t on the same inputs: an image whose pid lost all its captions is skipped alike by both
    _assert_same(eval_t2i(sim, t_pids, v_pids, i2t=True), eval_t2i_loop(sim, t_pids, v_pids, i2t=True))


def test_no_valid_query_raises():
    sim = np.zeros((2, 3))
    for fn in (eval_t2i, eval_t2i_loop):
        with pytest.raises(ValueError, match="no valid query.*captions vs images"):
            fn(sim, [1, 2], [3, 4, 5])


# ---------------------------------------------------------------------------------------------
# Features path
# ---------------------------------------------------------------------------------------------
def test_features_path_equals_similarity_path():
    rng = np.random.default_rng(8)
    num_t, num_v, num_ids = 300, 140, 25  # 300 queries: several 128-row GEMM chunks and a partial one
    centres = rng.normal(size=(num_ids, 16))
    t_pids, v_pids = rng.integers(0, num_ids, num_t), rng.integers(0, num_ids, num_v)
    txt = torch.from_numpy(centres[t_pids] + rng.normal(size=(num_t, 16))).float() * 3
    img = torch.from_numpy(centres[v_pids] + rng.normal(size=(num_v, 16))).float() * 2
    txt_copy, img_copy = txt.clone(), img.clone()

    sim = cosine_similarity_matrix(txt, img)
    torch.testing.assert_close(sim, F.normalize(txt, dim=1) @ F.normalize(img, dim=1).t(), rtol=1e-5, atol=1e-6)
    ref = eval_t2i(sim, t_pids, v_pids)
    ref_i2t = eval_t2i(cosine_similarity_matrix(img, txt), v_pids, t_pids)
    for block in (0, 1, 128, 200):
        _assert_bitwise(eval_t2i_features(txt, img, t_pids, v_pids, block_size=block), ref)
        _assert_bitwise(eval_t2i_features(txt, img, t_pids, v_pids, i2t=True, block_size=block), ref_i2t)
    _assert_same(ref_i2t, eval_t2i(sim, t_pids, v_pids, i2t=True))  # transposed GEMM: equal up to rounding
    assert torch.equal(txt, txt_copy) and torch.equal(img, img_copy)  # inputs not normalised in place
    assert 0.0 < ref.mAP < 1.0


# ---------------------------------------------------------------------------------------------
# Errors name the argument
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [eval_t2i, eval_t2i_loop])
def test_shape_and_value_errors(fn):
    sim = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"similarity must be 2-D \(num_captions, num_images\)"):
        fn(np.zeros(4), [1], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="similarity is empty"):
        fn(np.zeros((0, 4)), [], [1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"q_pids must be 1-D with 3 entries \(one per similarity row"):
        fn(sim, [1, 2], [1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"g_pids must be 1-D with 4 entries \(one per similarity column"):
        fn(sim, [1, 2, 3], [[1, 2, 3, 4]])
    with pytest.raises(TypeError, match="g_pids must hold integers"):
        fn(sim, [1, 2, 3], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="max_rank"):
        fn(sim, [1, 2, 3], [1, 2, 3, 4], max_rank=0)
    with pytest.raises(ValueError, match="similarity contains NaN"):
        fn(np.full((3, 4), np.nan), [1, 2, 3], [1, 2, 3, 4])


def test_feature_errors_name_the_argument():
    with pytest.raises(ValueError, match="txt_feats has 4, img_feats has 5"):
        eval_t2i_features(torch.zeros(3, 4), torch.zeros(2, 5), [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="img_feats must be a 2-D"):
        eval_t2i_features(torch.zeros(3, 4), torch.zeros(4), [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"img_pids must be 1-D with 2 entries \(one per img_feats row"):
        eval_t2i_features(torch.zeros(3, 4), torch.ones(2, 4), [1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match=r"txt_pids must be 1-D with 3 entries \(one per txt_feats row"):
        eval_t2i_features(torch.zeros(3, 4), torch.ones(2, 4), [1, 2], [1, 2])
    with pytest.raises(ValueError, match="block_size"):
        eval_t2i(np.zeros((2, 2)), [1, 2], [1, 2], block_size=-1)
