"""TBPS losses (losses/tbps.py): plain-Python reference loops in float64 (local batch and local
rows against a larger set of columns), closed forms, edge cases, SDM / R-ITC as one KL form,
gradcheck, precision, and a 2-process gloo run showing that the gathered losses and their DDP
gradients equal the single-process loss on the concatenated batch."""
import copy
import gc
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from losses.masks import pid_masks
from losses.simclr import nt_xent_loss
from losses.tbps import (Columns, citc_loss, cmpm_loss, cross_modal_id_loss, gather_columns,
                         identity_kl_loss, identity_targets, itc_loss, nitc_alpha_at, nitc_loss,
                         ritc_loss, sdm_loss, sigmoid_identity_loss)
from utils.dist import all_gather_with_grad


# ---------------- plain-Python reference loops (float64) ----------------
# Every loop takes the rows (V, T, Y) and the columns (CV, CT, CY) as lists and the offset of
# the rows among the columns; without explicit columns they are the rows themselves.

def _lists(x):
    return [[float(a) for a in r] for r in x]


def _cos(a, b):
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


def _proj(a, b):   # a . b / |b|
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(y * y for y in b))


def _log_softmax(xs):
    m = max(xs)
    lz = m + math.log(sum(math.exp(x - m) for x in xs))
    return [x - lz for x in xs]


def _q(y, cy):
    count = sum(1 for c in cy if c == y)
    return [(1.0 / count if c == y else 0.0) for c in cy]


def _setup(img, txt, pids, cols):
    V, T, Y = _lists(img), _lists(txt), [int(p) for p in pids]
    if cols is None:
        return V, T, Y, V, T, Y, 0
    CY = None if cols.pids is None else [int(p) for p in cols.pids]
    return V, T, Y, _lists(cols.img), _lists(cols.txt), CY, cols.offset


def loop_itc(img, txt, pids, scale, cols=None):
    V, T, _, CV, CT, _, off = _setup(img, txt, pids, cols)
    i2t = [-_log_softmax([scale * _cos(V[i], c) for c in CT])[off + i] for i in range(len(V))]
    t2i = [-_log_softmax([scale * _cos(T[i], c) for c in CV])[off + i] for i in range(len(V))]
    return 0.5 * (sum(i2t) / len(V) + sum(t2i) / len(V))


def loop_identity_kl(img, txt, pids, scale, eps, directions, cols=None):
    V, T, Y, CV, CT, CY, _ = _setup(img, txt, pids, cols)
    terms = []
    for rows, others in ((V, CT), (T, CV)):
        total = 0.0
        for i, a in enumerate(rows):
            logp = _log_softmax([scale * _cos(a, b) for b in others])
            q = _q(Y[i], CY)
            total += sum(math.exp(lp) * (lp - math.log(qj + eps)) for lp, qj in zip(logp, q))
        terms.append(total / len(rows))
    return sum(terms) if directions == "sum" else 0.5 * sum(terms)


def loop_nitc(img, txt, pids, scale, alpha=0.0, img_stop=None, txt_stop=None, cols=None,
              stop_cols=None):
    V, T, Y, CV, CT, CY, _ = _setup(img, txt, pids, cols)
    if alpha > 0:
        SV, ST, _, SCV, SCT, _, _ = _setup(img_stop, txt_stop, pids, stop_cols)
    terms = []
    for d, (rows, others) in enumerate(((V, CT), (T, CV))):
        total = 0.0
        for i, a in enumerate(rows):
            logp = _log_softmax([scale * _cos(a, b) for b in others])
            q = _q(Y[i], CY)
            if alpha > 0:
                s_row, s_others = (SV[i], SCT) if d == 0 else (ST[i], SCV)
                soft = [math.exp(x) for x in _log_softmax([scale * _cos(s_row, b)
                                                            for b in s_others])]
                q = [alpha * s + (1 - alpha) * qj for s, qj in zip(soft, q)]
            total += -sum(qj * lp for qj, lp in zip(q, logp))
        terms.append(total / len(rows))
    return 0.5 * sum(terms)


def loop_citc(img, txt, pids, w_in=0.25, w_cross=0.25, cols=None):
    V, T, _, CV, CT, _, _ = _setup(img, txt, pids, cols)
    n, m = len(V), len(CV)
    inmodal = sum((_cos(V[i], CV[j]) - _cos(T[i], CT[j])) ** 2
                  for i in range(n) for j in range(m)) / (n * m)
    cross = sum((_cos(V[i], CT[j]) - _cos(T[i], CV[j])) ** 2
                for i in range(n) for j in range(m)) / (n * m)
    return w_in * inmodal + w_cross * cross


def loop_cmpm(img, txt, pids, eps=1e-8, cols=None):
    V, T, Y, CV, CT, CY, _ = _setup(img, txt, pids, cols)
    loss = 0.0
    for rows, others in ((V, CT), (T, CV)):
        total = 0.0
        for i, a in enumerate(rows):
            logp = _log_softmax([_proj(a, b) for b in others])     # raw row, unit column
            q = _q(Y[i], CY)
            total += sum(math.exp(lp) * (lp - math.log(qj + eps)) for lp, qj in zip(logp, q))
        loss += total / len(rows)
    return loss


def loop_sigmoid(img, txt, pids, scale, bias, cols=None):
    _, T, Y, CV, _, CY, _ = _setup(img, txt, pids, cols)
    total = 0.0
    for i, t in enumerate(T):
        for j, v in enumerate(CV):
            z = 1.0 if Y[i] == CY[j] else -1.0
            total += -math.log(1.0 / (1.0 + math.exp(-z * (scale * _cos(t, v) + bias))))
    return total / len(T)


def loop_id(img, txt, pids, weight, bias):
    W, b = _lists(weight), [float(x) for x in bias]
    terms = []
    for feats in (_lists(img), _lists(txt)):
        total = 0.0
        for x, y in zip(feats, pids):
            logits = [sum(wc * xd for wc, xd in zip(row, x)) + bc for row, bc in zip(W, b)]
            total += -_log_softmax(logits)[int(y)]
        terms.append(total / len(feats))
    return 0.5 * sum(terms)


# ---------------- data ----------------

PIDS = torch.tensor([3, 1, 3, 0, 1, 3, 2, 0])      # repeated, unordered, one split across halves


def pairs(n=8, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, d, generator=g, dtype=torch.float64)
    txt = img + 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64)   # correlated pairs
    return img.to(dtype), txt.to(dtype)


def stop_pairs(img, txt, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (img + 0.1 * torch.randn(img.shape, generator=g, dtype=img.dtype),
            txt + 0.1 * torch.randn(txt.shape, generator=g, dtype=txt.dtype))


def block(img, txt, pids, lo, hi):
    """Rows lo..hi-1 against the whole batch as columns (what one DDP process computes)."""
    return img[lo:hi], txt[lo:hi], pids[lo:hi], Columns(img, txt, pids, lo)


# (name, function of (img, txt, pids, columns, stop), reference loop of the same)
SCALE = 4.0
CASES = {
    "itc": (lambda i, t, y, c, s: itc_loss(i, t, SCALE, columns=c),
            lambda i, t, y, c, s: loop_itc(i, t, y, SCALE, c)),
    "sdm": (lambda i, t, y, c, s: sdm_loss(i, t, y, SCALE, columns=c),
            lambda i, t, y, c, s: loop_identity_kl(i, t, y, SCALE, 1e-8, "sum", c)),
    "ritc": (lambda i, t, y, c, s: ritc_loss(i, t, y, SCALE, columns=c),
             lambda i, t, y, c, s: loop_identity_kl(i, t, y, SCALE, 0.01, "mean", c)),
    "nitc": (lambda i, t, y, c, s: nitc_loss(i, t, y, SCALE, columns=c),
             lambda i, t, y, c, s: loop_nitc(i, t, y, SCALE, cols=c)),
    "nitc_soft": (lambda i, t, y, c, s: nitc_loss(i, t, y, SCALE, alpha=0.3, img_stop=s[0],
                                                  txt_stop=s[1], columns=c, stop_columns=s[2]),
                  lambda i, t, y, c, s: loop_nitc(i, t, y, SCALE, 0.3, s[0], s[1], c, s[2])),
    "citc": (lambda i, t, y, c, s: citc_loss(i, t, columns=c),
             lambda i, t, y, c, s: loop_citc(i, t, y, cols=c)),
    "cmpm": (lambda i, t, y, c, s: cmpm_loss(i, t, y, columns=c),
             lambda i, t, y, c, s: loop_cmpm(i, t, y, cols=c)),
    "sigmoid": (lambda i, t, y, c, s: sigmoid_identity_loss(i, t, y, SCALE, -1.5, columns=c),
                lambda i, t, y, c, s: loop_sigmoid(i, t, y, SCALE, -1.5, c)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_reference_loop_local_and_row_blocks(name):
    fn, loop = CASES[name]
    img, txt = pairs()
    si, st = stop_pairs(img, txt)
    got = fn(img, txt, PIDS, None, (si, st, None))
    want = loop(img, txt, PIDS, None, (si, st, None))
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)
    # rows = half of the batch, columns = all of it (one DDP process's share), both halves
    halves = []
    for lo, hi in ((0, 4), (4, 8)):
        ri, rt, ry, cols = block(img, txt, PIDS, lo, hi)
        stop = (si[lo:hi], st[lo:hi], Columns(si, st, None, lo))
        part = fn(ri, rt, ry, cols, stop)
        assert part.item() == pytest.approx(loop(ri, rt, ry, cols, stop), rel=1e-10, abs=1e-12)
        halves.append(part)
    # every loss is a mean over its rows: the mean of the halves is the whole-batch loss
    assert (0.5 * (halves[0] + halves[1])).item() == pytest.approx(got.item(), rel=1e-12)


def test_id_loss_equals_reference_loop_with_one_shared_classifier():
    img, txt = pairs()
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(4, 5, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    got, parts = cross_modal_id_loss(img, txt, PIDS, weight, bias, return_parts=True)
    assert got.item() == pytest.approx(loop_id(img, txt, PIDS, weight, bias), rel=1e-10)
    for key, feats in (("img", img), ("txt", txt)):
        want = F.cross_entropy(feats @ weight.t() + bias, PIDS).item()
        assert parts[key].item() == pytest.approx(want, rel=1e-12)


# ---------------- SDM and R-ITC: one KL implementation ----------------

def test_sdm_and_ritc_are_one_kl_form_with_their_constants():
    img, txt = pairs()
    base = dict(img=img, txt=txt, pids=PIDS)
    assert torch.equal(sdm_loss(img, txt, PIDS),
                       identity_kl_loss(**base, logit_scale=50.0, eps=1e-8, directions="sum"))
    assert torch.equal(ritc_loss(img, txt, PIDS, 7.0),
                       identity_kl_loss(**base, logit_scale=7.0, eps=0.01, directions="mean"))
    # the averaging over the two directions is the only difference between 'sum' and 'mean'
    s = identity_kl_loss(**base, logit_scale=7.0, eps=0.01, directions="sum")
    m = identity_kl_loss(**base, logit_scale=7.0, eps=0.01, directions="mean")
    assert s.item() == pytest.approx(2 * m.item(), rel=1e-12)
    # eps matters: 1e-8 vs 0.01 give different values on the same inputs
    assert abs(sdm_loss(img, txt, PIDS, 7.0).item() - s.item()) > 1e-3
    with pytest.raises(ValueError, match="directions"):
        identity_kl_loss(**base, logit_scale=7.0, eps=0.01, directions="avg")


def test_ritc_is_tbps_clip_kl_div_and_sdm_is_irra_expression():
    """Direction check against the references' own expressions (written out here)."""
    img, txt = pairs()
    v, t = F.normalize(img, dim=1), F.normalize(txt, dim=1)
    q = identity_targets(PIDS, dtype=torch.float64)
    kappa = 7.0
    # TBPS-CLIP: F.kl_div(log(Q + eps), log P, log_target=True, reduction='batchmean'), 1/2 sum
    kl = [F.kl_div((q + 0.01).log(), F.log_softmax(kappa * a @ b.t(), 1), log_target=True,
                   reduction="batchmean") for a, b in ((v, t), (t, v))]
    assert ritc_loss(img, txt, PIDS, kappa).item() == pytest.approx(0.5 * (kl[0] + kl[1]).item(),
                                                                   rel=1e-12)
    # IRRA: softmax(x) * (log_softmax(x) - log(labels / labels.sum(1) + eps)), summed directions
    labels = (PIDS.view(-1, 1) == PIDS.view(1, -1)).double()
    dist_ = labels / labels.sum(dim=1)          # IRRA's broadcast (= row sum on this mask)
    irra = sum(torch.mean(torch.sum(F.softmax(x, 1) * (F.log_softmax(x, 1)
                                                        - torch.log(dist_ + 1e-8)), 1))
               for x in (kappa * t @ v.t(), kappa * v @ t.t()))
    assert sdm_loss(img, txt, PIDS, kappa).item() == pytest.approx(irra.item(), rel=1e-12)


# ---------------- closed forms and edge cases ----------------

def test_closed_forms():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    img = torch.tensor([e1, e2], dtype=torch.float64) * torch.tensor([[3.0], [0.5]],
                                                                     dtype=torch.float64)
    # ITC, kappa 1, orthogonal pairs: both rows softmax([1, 0]) -> CE = log(1 + e^-1)
    assert itc_loss(img, img.clone(), 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    # C-ITC: v = (e1, e2), t = (e1, e1): in-modal off-diagonals (0 - 1)^2 -> 2/4; cross-modal
    # cos(v_i, t_j) = [[1, 1], [0, 0]] against its transpose -> 2/4; 0.25 * 0.5 + 0.25 * 0.5
    txt = torch.tensor([e1, e1], dtype=torch.float64)
    total, parts = citc_loss(img, txt, return_parts=True)
    assert parts["inmodal"].item() == pytest.approx(0.5)
    assert parts["crossmodal"].item() == pytest.approx(0.5)
    assert total.item() == pytest.approx(0.25)
    assert citc_loss(img, img.clone()).item() == 0.0                 # identical spaces
    # sigmoid identity loss, one pair with cos 1: -log sigmoid(kappa + b)
    one = torch.tensor([e1], dtype=torch.float64)
    got = sigmoid_identity_loss(one, one.clone(), torch.tensor([0]), 2.0, -0.5)
    assert got.item() == pytest.approx(math.log(1 + math.exp(-1.5)))


def test_batch_of_one_pair():
    img, txt = pairs(n=1)
    y = torch.tensor([5])
    assert itc_loss(img, txt, 10.0).item() == pytest.approx(0.0, abs=1e-12)
    assert nitc_loss(img, txt, y, 10.0).item() == pytest.approx(0.0, abs=1e-12)
    assert citc_loss(img, txt).item() == pytest.approx(0.0, abs=1e-12)
    # p = 1 on the only column, q = 1: each direction is -log(1 + eps)
    assert sdm_loss(img, txt, y).item() == pytest.approx(-2 * math.log(1 + 1e-8), abs=1e-15)
    assert ritc_loss(img, txt, y, 3.0).item() == pytest.approx(-math.log(1.01), rel=1e-12)


def test_one_identity_in_the_batch():
    img, txt = pairs(n=5)
    same = torch.zeros(5, dtype=torch.long)
    for name, (fn, loop) in CASES.items():
        if name == "nitc_soft":
            continue
        assert fn(img, txt, same, None, None).item() == pytest.approx(
            loop(img, txt, same, None, None), rel=1e-10, abs=1e-12), name
    # identical features and one identity: P uniform = Q, so N-ITC = log N and the KL ~ 0
    flat = torch.ones(5, 3, dtype=torch.float64)
    assert nitc_loss(flat, flat, same, 10.0).item() == pytest.approx(math.log(5))
    assert sdm_loss(flat, flat, same).item() == pytest.approx(0.0, abs=1e-6)
    # no negatives: the sigmoid loss only pulls, sum_j softplus(-(kappa + b)) per row
    assert sigmoid_identity_loss(flat, flat, same, 2.0, -1.0).item() == pytest.approx(
        5 * math.log(1 + math.exp(-1.0)))


def test_all_distinct_identities():
    img, txt = pairs()
    distinct = torch.arange(8)
    si, st = stop_pairs(img, txt)
    for name, (fn, loop) in CASES.items():
        assert fn(img, txt, distinct, None, (si, st, None)).item() == pytest.approx(
            loop(img, txt, distinct, None, (si, st, None)), rel=1e-10, abs=1e-12), name
    # Q is the identity matrix: hard-label N-ITC is ITC
    assert nitc_loss(img, txt, distinct, 3.0).item() == pytest.approx(
        itc_loss(img, txt, 3.0).item(), rel=1e-12)


# ---------------- N-ITC soft labels ----------------

def test_nitc_alpha_schedule_is_tbps_clip_ramp():
    iters = 7
    for i in range(iters):        # epoch 0 of TBPS-CLIP: softlabel_ratio * min(1, i / len)
        assert nitc_alpha_at(0 + i / iters) == pytest.approx(0.5 * min(1.0, i / iters))
    assert nitc_alpha_at(0.0) == 0.0
    assert nitc_alpha_at(1.0) == 0.5 and nitc_alpha_at(4.3) == 0.5
    assert nitc_alpha_at(0.5, ratio=0.2) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        nitc_alpha_at(-0.1)
    with pytest.raises(ValueError):
        nitc_alpha_at(0.5, ratio=1.5)


def test_nitc_soft_targets_need_stop_features_and_carry_no_gradient():
    img, txt = pairs()
    with pytest.raises(ValueError, match="img_stop"):
        nitc_loss(img, txt, PIDS, 3.0, alpha=0.5)
    si, st = stop_pairs(img, txt)
    si.requires_grad_(True)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    nitc_loss(img, txt, PIDS, scale, alpha=0.5, img_stop=si, txt_stop=st).backward()
    assert si.grad is None and scale.grad is not None
    # alpha 0 ignores the stop features; alpha 1 uses only them
    hard = nitc_loss(img, txt, PIDS, 3.0)
    assert torch.equal(nitc_loss(img, txt, PIDS, 3.0, alpha=0.0, img_stop=si, txt_stop=st), hard)
    soft = nitc_loss(img, txt, PIDS, 3.0, alpha=1.0, img_stop=si, txt_stop=st)
    assert soft.item() == pytest.approx(loop_nitc(img, txt, PIDS, 3.0, 1.0, si.detach(), st),
                                        rel=1e-10)
    with pytest.raises(ValueError, match="stop_columns"):
        ri, rt, ry, cols = block(img, txt, PIDS, 0, 4)
        nitc_loss(ri, rt, ry, 3.0, alpha=0.5, img_stop=si[:4], txt_stop=st[:4], columns=cols)


# ---------------- gradients ----------------

def _tiny(n=4, d=3, seed=5):
    img, txt = pairs(n=n, d=d, seed=seed)
    return img.requires_grad_(True), txt.requires_grad_(True)


def test_gradcheck():
    img, txt = _tiny()
    y = torch.tensor([0, 1, 0, 2])
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)
    si, st = stop_pairs(img.detach(), txt.detach())
    w = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    checks = {
        "itc": (lambda a, b, k: itc_loss(a, b, k), (img, txt, scale)),
        "sdm": (lambda a, b: sdm_loss(a, b, y, 5.0), (img, txt)),
        # kappa inside the soft targets is detached by design, so the soft form is checked
        # w.r.t. the features and kappa's gradient on the hard form
        "nitc": (lambda a, b: nitc_loss(a, b, y, 3.0, alpha=0.4, img_stop=si, txt_stop=st),
                 (img, txt)),
        "nitc_scale": (lambda a, b, k: nitc_loss(a, b, y, k), (img, txt, scale)),
        "ritc": (lambda a, b, k: ritc_loss(a, b, y, k), (img, txt, scale)),
        "citc": (lambda a, b: citc_loss(a, b), (img, txt)),
        "cmpm": (lambda a, b: cmpm_loss(a, b, y), (img, txt)),
        "sigmoid": (lambda a, b, k, c: sigmoid_identity_loss(a, b, y, k, c),
                    (img, txt, scale, bias)),
        "id": (lambda a, b, W: cross_modal_id_loss(a, b, y, W), (img, txt, w)),
    }
    for name, (fn, inputs) in checks.items():
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7), name


def test_gradcheck_row_block_against_columns():
    """Gradients flow into the rows and into the columns (another process's view of them)."""
    img, txt = _tiny(n=4)
    y = torch.tensor([0, 1, 0, 2])

    def fn(a, b):
        return sdm_loss(a[:2], b[:2], y[:2], 5.0, columns=Columns(a, b, y, 0))
    assert torch.autograd.gradcheck(fn, (img, txt), eps=1e-6, atol=1e-7)


# ---------------- precision, inputs, masks ----------------

def test_half_precision_inputs_are_computed_in_float32_and_left_unchanged():
    img, txt = pairs(dtype=torch.float32)
    ref = sdm_loss(img, txt, PIDS, 10.0)
    hi, ht = img.bfloat16(), txt.bfloat16()
    copies = hi.clone(), ht.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = sdm_loss(hi, ht, PIDS, 10.0)
    assert got.dtype == torch.float32
    assert torch.equal(hi, copies[0]) and torch.equal(ht, copies[1])
    assert got.item() == pytest.approx(sdm_loss(hi.float(), ht.float(), PIDS, 10.0).item(),
                                       rel=1e-6)
    assert got.item() == pytest.approx(ref.item(), rel=0.05)


def test_bad_arguments_are_clear_errors():
    img, txt = pairs()
    with pytest.raises(ValueError, match="same shape"):
        sdm_loss(img, txt[:, :3], PIDS)
    with pytest.raises(ValueError, match="pids"):
        sdm_loss(img, txt, PIDS[:5])
    with pytest.raises(ValueError, match="logit_scale"):
        itc_loss(img, txt, 0.0)
    with pytest.raises(ValueError, match="offset"):
        itc_loss(img[:4], txt[:4], 2.0, columns=Columns(img, txt, None, 6))
    with pytest.raises(ValueError, match="pids"):
        sdm_loss(img[:4], txt[:4], PIDS[:4], columns=Columns(img, txt, None, 0))


def test_pid_masks_with_column_labels():
    m = pid_masks(torch.tensor([0, 1]), col_pids=torch.tensor([1, 0, 0]))
    assert m.same.tolist() == [[False, True, True], [True, False, False]]
    assert m.neg.tolist() == [[True, False, False], [False, True, True]]
    with pytest.raises(ValueError, match="col_pids"):
        m.pos
    q = identity_targets(torch.tensor([0, 1]), torch.tensor([1, 0, 0]))
    assert q.tolist() == [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]


def test_gather_without_process_group_is_the_local_batch():
    img, txt = pairs()
    cols = gather_columns(img, txt, PIDS)
    assert cols.offset == 0 and cols.img is img and cols.txt is txt
    assert torch.equal(cols.pids, PIDS)
    assert all_gather_with_grad(img) is img


# ---------------- 2 processes, gloo: gathered loss and gradients ----------------

class _PairModel(nn.Module):
    """Two linear towers (+ the parameters the loss needs), float64."""

    def __init__(self, name):
        super().__init__()
        self.img = nn.Linear(6, 5)
        self.txt = nn.Linear(6, 5)
        self.log_scale = (nn.Parameter(torch.tensor(math.log(4.0)))
                          if name in ("itc", "ritc", "nitc", "nitc_soft", "sigmoid") else None)
        self.bias = nn.Parameter(torch.tensor(-1.0)) if name == "sigmoid" else None
        self.classifier = nn.Linear(5, 4) if name == "id" else None

    def forward(self, xi, xt):
        return self.img(xi), self.txt(xt)


def _loss(name, model, img, txt, pids, cols, stop):
    k = model.log_scale.exp() if model.log_scale is not None else None
    if name == "itc":
        return itc_loss(img, txt, k, columns=cols)
    if name == "sdm":
        return sdm_loss(img, txt, pids, columns=cols)
    if name == "ritc":
        return ritc_loss(img, txt, pids, k, columns=cols)
    if name == "nitc":
        return nitc_loss(img, txt, pids, k, columns=cols)
    if name == "nitc_soft":
        return nitc_loss(img, txt, pids, k, alpha=0.35, img_stop=stop[0], txt_stop=stop[1],
                         columns=cols, stop_columns=stop[2])
    if name == "citc":
        return citc_loss(img, txt, columns=cols)
    if name == "cmpm":
        return cmpm_loss(img, txt, pids, columns=cols)
    if name == "sigmoid":
        return sigmoid_identity_loss(img, txt, pids, k, model.bias, columns=cols)
    if name == "ss":     # SS-I's NT-Xent: the two "towers" stand for the two views' heads
        return nt_xent_loss(img, txt, 0.1, columns=cols)
    if name == "id":     # per-sample: not gathered
        return cross_modal_id_loss(img, txt, pids, model.classifier.weight,
                                   model.classifier.bias)
    raise KeyError(name)


DDP_CASES = ("itc", "sdm", "ritc", "nitc", "nitc_soft", "citc", "cmpm", "sigmoid", "id", "ss")


def _ddp_worker(rank, world, init_file):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        xi = torch.randn(8, 6, generator=g, dtype=torch.float64)
        xt = torch.randn(8, 6, generator=g, dtype=torch.float64)
        pids = PIDS.clone()
        n = len(pids) // world
        lo = rank * n
        for name in DDP_CASES:
            torch.manual_seed(0)
            base = _PairModel(name).double()
            # single process: the whole batch, local columns
            single = copy.deepcopy(base)
            img, txt = single(xi, xt)
            img.retain_grad()
            with torch.no_grad():
                si, st = single(xi, xt)
            loss = _loss(name, single, img, txt, pids, None, (si, st, None))
            loss.backward()
            # DDP: half the batch per process, gathered columns
            ddp = nn.parallel.DistributedDataParallel(copy.deepcopy(base))
            img_r, txt_r = ddp(xi[lo:lo + n], xt[lo:lo + n])
            img_r.retain_grad()
            with torch.no_grad():
                si_r, st_r = ddp.module(xi[lo:lo + n], xt[lo:lo + n])
            cols = None if name == "id" else gather_columns(img_r, txt_r, pids[lo:lo + n])
            stop = (si_r, st_r, gather_columns(si_r, st_r))
            loss_r = _loss(name, ddp.module, img_r, txt_r, pids[lo:lo + n], cols, stop)
            loss_r.backward()
            if cols is not None:
                assert torch.equal(cols.img.detach(), img.detach()), name
                assert torch.equal(cols.pids, pids) and cols.offset == lo, name
            # the mean of the processes' losses is the single-process loss
            mean = loss_r.detach().clone()
            dist.all_reduce(mean)
            mean /= world
            assert torch.allclose(mean, loss.detach(), rtol=1e-12, atol=0), (name, mean, loss)
            # DDP averages parameter gradients: equal to the single-process gradients
            for (pname, p_ddp), p_one in zip(ddp.module.named_parameters(), single.parameters()):
                assert torch.allclose(p_ddp.grad, p_one.grad, rtol=1e-10, atol=1e-13), \
                    (name, pname, p_ddp.grad, p_one.grad)
            # a process's own features get W x its rows of the single-process gradient
            # (d sum_s L_s / dx_r, and sum_s L_s = W x the single-process loss)
            assert torch.allclose(img_r.grad, world * img.grad[lo:lo + n], rtol=1e-10,
                                  atol=1e-13), name
        # unequal local batches are an error on every process, not a hang
        with pytest.raises(ValueError, match="same number of rows"):
            all_gather_with_grad(torch.zeros(2 + rank, 3))
        # DDP wrappers hold the process group; drop them and meet before tearing it down
        # (a rank destroying gloo while its peer is still in a collective aborts the process)
        del ddp
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_gather_equals_single_process(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "pg_init")), nprocs=2, join=True)
