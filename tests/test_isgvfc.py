"""IS-GVFC loss: closed forms, an explicit loop, KL direction, memory behaviour, gradients."""
import math

import pytest
import torch

from losses.isgvfc import ISGVFCLoss, isgvfc_loss


def loop_isgvfc(feats, pids, temperature=0.02, eps=1e-8, bank=(), repeat=False,
                include_self=True):
    """Plain-Python reference: rows = batch, then bank entries of batch pids; per anchor
    sum_j p_j (log p_j - log(q_j + eps)), mean over anchors. Without self: j != i, and anchors
    with no other positive are skipped."""
    rows = [([float(v) for v in f], int(y)) for f, y in zip(feats, pids)]
    batch_pids = [int(y) for y in pids]
    if repeat:   # once per occurrence of the pid in the batch, in batch order
        for y in batch_pids:
            rows += [([float(v) for v in f], y) for f, yb in bank if int(yb) == y]
    else:
        rows += [([float(v) for v in f], int(yb)) for f, yb in bank if int(yb) in batch_pids]

    def unit(v):
        n = math.sqrt(sum(a * a for a in v))
        return [a / n for a in v]

    xs = [unit(f) for f, _ in rows]
    ys = [y for _, y in rows]
    total, anchors = 0.0, 0
    for i in range(len(xs)):
        others = [j for j in range(len(xs)) if include_self or j != i]
        npos = sum(1 for j in others if ys[j] == ys[i])
        if npos == 0:
            continue
        anchors += 1
        s = {j: sum(a * b for a, b in zip(xs[i], xs[j])) / temperature for j in others}
        m = max(s.values())
        z = sum(math.exp(v - m) for v in s.values())
        for j in others:
            p = math.exp(s[j] - m) / z
            q = (1.0 / npos) if ys[j] == ys[i] else 0.0
            total += p * (math.log(p) - math.log(q + eps))
    return total / anchors if anchors else 0.0


def rand_batch(seed=0, n=6, d=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64).float()


# ---------------- closed forms, loop equality, direction ----------------

def test_closed_form_two_orthogonal_features():
    feats = torch.tensor([[3.0, 0.0], [0.0, 0.5]])   # norms differ: normalised inside
    eps = 1e-8
    p0, p1 = math.e / (math.e + 1), 1 / (math.e + 1)  # softmax([1, 0]) at T = 1
    # different identities: target one-hot on the anchor itself
    diff = p0 * (math.log(p0) - math.log(1 + eps)) + p1 * (math.log(p1) - math.log(eps))
    got = isgvfc_loss(feats, torch.tensor([0, 1]), temperature=1.0, eps=eps)
    assert got.item() == pytest.approx(diff, rel=1e-6)
    # same identity: target [1/2, 1/2]
    same = p0 * (math.log(p0) - math.log(0.5 + eps)) + p1 * (math.log(p1) - math.log(0.5 + eps))
    got = isgvfc_loss(feats, torch.tensor([7, 7]), temperature=1.0, eps=eps)
    assert got.item() == pytest.approx(same, rel=1e-6)


def test_kl_direction_is_prediction_first():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pids = torch.tensor([0, 1, 0])
    T, eps = 0.5, 1e-8
    x = torch.nn.functional.normalize(feats.double(), dim=1)
    logp = torch.log_softmax(x @ x.t() / T, 1)
    same = (pids[:, None] == pids[None, :]).double()
    q = same / same.sum(1, keepdim=True)
    forward_kl = (logp.exp() * (logp - torch.log(q + eps))).sum(1).mean().item()   # KL(p||q)
    reverse_kl = (q * (torch.log(q + eps) - logp)).sum(1).mean().item()            # KL(q||p)
    got = isgvfc_loss(feats, pids, temperature=T, eps=eps).item()
    assert got == pytest.approx(forward_kl, rel=1e-5)
    assert abs(got - reverse_kl) > 1.0


@pytest.mark.parametrize("temperature", [0.02, 0.1, 1.0])
def test_matches_loop(temperature):
    feats = rand_batch(1)
    pids = torch.tensor([0, 0, 1, 1, 2, 3])
    got = isgvfc_loss(feats, pids, temperature=temperature)
    assert got.item() == pytest.approx(loop_isgvfc(feats, pids, temperature), rel=1e-4, abs=1e-5)


def test_default_temperature_is_logit_scale_50():
    feats, pids = rand_batch(2), torch.tensor([0, 0, 1, 1, 2, 2])
    assert ISGVFCLoss().temperature == 0.02
    assert torch.allclose(isgvfc_loss(feats, pids), isgvfc_loss(feats, pids, temperature=1 / 50))


def test_bank_matches_loop_and_ignores_other_identities():
    feats, pids = rand_batch(3), torch.tensor([0, 0, 1, 1, 2, 3])
    bank_feats, bank_pids = rand_batch(4, n=5), torch.tensor([0, 2, 5, 5, 0])
    bank = list(zip(bank_feats, bank_pids))
    got = isgvfc_loss(feats, pids, temperature=0.1, bank_feats=bank_feats, bank_pids=bank_pids)
    assert got.item() == pytest.approx(loop_isgvfc(feats, pids, 0.1, bank=bank), rel=1e-4)
    # entries of identities absent from the batch change nothing
    only_other = isgvfc_loss(feats, pids, 0.1, bank_feats=bank_feats[2:4], bank_pids=bank_pids[2:4])
    assert torch.allclose(only_other, isgvfc_loss(feats, pids, 0.1))
    # released-code mode: an entry is used once per occurrence of its pid in the batch
    rep = isgvfc_loss(feats, pids, 0.1, bank_feats=bank_feats, bank_pids=bank_pids,
                      repeat_bank=True)
    assert rep.item() == pytest.approx(loop_isgvfc(feats, pids, 0.1, bank=bank, repeat=True),
                                       rel=1e-4)
    assert abs(rep.item() - got.item()) > 1e-4


def test_singleton_anchors_and_edge_cases():
    # one row: p = q = 1 -> -log(1 + eps) ~ 0
    one = isgvfc_loss(torch.randn(1, 8), torch.tensor([3]))
    assert torch.isfinite(one) and abs(one.item()) < 1e-6
    # all identities distinct: one-hot targets, finite and equal to the loop
    feats, pids = rand_batch(5, n=4), torch.tensor([0, 1, 2, 3])
    got = isgvfc_loss(feats, pids, temperature=0.1)
    assert got.item() == pytest.approx(loop_isgvfc(feats, pids, 0.1), rel=1e-4)
    # empty batch: zero, still backpropagates
    empty = torch.zeros(0, 8, requires_grad=True)
    z = isgvfc_loss(empty, torch.zeros(0, dtype=torch.long))
    z.backward()
    assert z.item() == 0.0
    # an all-zero feature gives no NaN
    feats = torch.randn(4, 8)
    feats[1] = 0
    assert torch.isfinite(isgvfc_loss(feats, torch.tensor([0, 0, 1, 1])))
    with pytest.raises(ValueError):
        isgvfc_loss(torch.randn(3, 8), torch.tensor([0, 1]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_computed_in_float32(dtype):
    feats = rand_batch(6, n=8, d=16).to(dtype).requires_grad_()
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = isgvfc_loss(feats, pids)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, isgvfc_loss(feats.detach().float(), pids), rtol=1e-5, atol=1e-6)
    loss.backward()
    assert feats.grad.dtype == dtype and torch.isfinite(feats.grad.float()).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = isgvfc_loss(feats.detach().float(), pids)
    assert auto.dtype == torch.float32
    assert torch.allclose(auto, isgvfc_loss(feats.detach().float(), pids), rtol=1e-5)


# ---------------- gradients and sanity ----------------

def test_gradient_flows_to_every_feature():
    feats = rand_batch(7).requires_grad_()
    before = feats.detach().clone()
    isgvfc_loss(feats, torch.tensor([0, 0, 1, 1, 2, 2]), temperature=0.1).backward()
    assert torch.isfinite(feats.grad).all()
    assert (feats.grad.norm(dim=1) > 0).all()
    assert torch.equal(feats.detach(), before)   # not modified in place


def test_loss_falls_as_same_identity_features_are_pulled_together():
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    feats = rand_batch(8, d=8).requires_grad_()

    def same_cos():
        x = torch.nn.functional.normalize(feats.detach(), dim=1)
        return torch.stack([x[i] @ x[i + 1] for i in (0, 2, 4)]).mean().item()

    first, cos0 = None, same_cos()
    for _ in range(30):
        feats.grad = None
        loss = isgvfc_loss(feats, pids, temperature=0.5)
        first = loss.item() if first is None else first
        loss.backward()
        with torch.no_grad():                        # plain gradient descent, lr 1
            feats -= feats.grad
    assert isgvfc_loss(feats, pids, temperature=0.5).item() < 0.8 * first
    assert same_cos() > cos0 + 0.1
    # at the default temperature: same-pid pairs made identical beat the same pairs kept apart
    apart = rand_batch(9, d=8)
    together = apart.clone()
    together[1], together[3], together[5] = together[0], together[2], together[4]
    assert isgvfc_loss(together, pids).item() < 1e-3
    assert isgvfc_loss(apart, pids).item() == pytest.approx(math.log(2), abs=1e-3)


def test_saturation_at_default_temperature_and_include_self_false():
    """Released semantics: self logit 1/T dominates, loss ~ log(#positives), gradient ~ 0 for
    features whose same-identity cosines are low; include_self=False keeps a gradient."""
    g = torch.Generator().manual_seed(0)
    pids = torch.arange(4).repeat_interleave(4)
    feats = torch.randn(16, 64, generator=g).requires_grad_()
    loss = isgvfc_loss(feats, pids)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(4), abs=1e-4)
    assert feats.grad.norm() < 1e-6
    feats.grad = None
    isgvfc_loss(feats, pids, include_self=False).backward()
    assert feats.grad.norm() > 1e-3


def test_include_self_false_matches_loop_and_drops_lonely_anchors():
    feats, pids = rand_batch(18), torch.tensor([0, 0, 1, 1, 2, 3])   # 2, 3 have no other
    got = isgvfc_loss(feats, pids, temperature=0.1, include_self=False)
    assert got.item() == pytest.approx(loop_isgvfc(feats, pids, 0.1, include_self=False), rel=1e-4)
    bank_feats, bank_pids = rand_batch(19, n=3), torch.tensor([2, 9, 0])   # gives 2 a positive
    got = isgvfc_loss(feats, pids, 0.1, bank_feats=bank_feats, bank_pids=bank_pids,
                      include_self=False)
    ref = loop_isgvfc(feats, pids, 0.1, bank=list(zip(bank_feats, bank_pids)), include_self=False)
    assert got.item() == pytest.approx(ref, rel=1e-4)
    lonely = torch.randn(3, 8, requires_grad=True)
    for f in (lonely, lonely[:1]):                   # no anchor has another positive; one row
        z = isgvfc_loss(f, torch.arange(len(f)), include_self=False)
        z.backward()
        assert z.item() == 0.0 and torch.isfinite(lonely.grad).all()
    x = rand_batch(20).requires_grad_()
    isgvfc_loss(x, pids, include_self=False).backward()
    assert torch.isfinite(x.grad).all()
    m = ISGVFCLoss(include_self=False)
    assert m(feats, pids).item() == pytest.approx(
        isgvfc_loss(feats, pids, include_self=False).item())


# ---------------- memory ----------------

def assert_memory_holds(m, feats, pids, seed=98):
    """``m``'s memory holds exactly the rows ``feats`` with ``pids`` (in any order; the loss does
    not depend on it): a probe batch with one sample of every stored identity gets the loss of
    an explicit bank of those rows. The probe runs in eval mode, so it is not appended."""
    count, training = len(m), m.training
    probe_pids = torch.unique(pids)
    probe = rand_batch(seed, n=len(probe_pids), d=feats.shape[1])
    got = m.eval()(probe, probe_pids)
    m.train(training)
    assert len(m) == count == len(pids)
    expected = isgvfc_loss(probe, probe_pids, m.temperature, bank_feats=feats, bank_pids=pids,
                           repeat_bank=m.repeat_memory, include_self=m.include_self)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert abs(got.item() - isgvfc_loss(probe, probe_pids, m.temperature).item()) > 1e-4


def distinct_rows(values):
    """One feature row per value, no two collinear (the loss sees directions only)."""
    v = values.float()
    return torch.stack([v, v.sin(), v.cos()], 1)


def test_memory_stores_detached_float32_copies_and_reset_empties_it():
    m = ISGVFCLoss(temperature=0.1)
    feats = rand_batch(10).half().requires_grad_()
    pids = torch.tensor([0, 0, 1, 1, 2, 3])
    m(feats, pids)
    stored = feats.detach().float().clone()
    assert len(m) == 6
    assert_memory_holds(m, stored, pids)
    with torch.no_grad():
        feats.add_(1)                                # later changes to feats do not leak in
    assert_memory_holds(m, stored, pids)
    m.reset()
    assert len(m) == 0
    assert m(feats.detach().float(), pids).item() == pytest.approx(
        isgvfc_loss(feats.detach().float(), pids, 0.1).item())


def test_memory_bound_keeps_the_newest_entries():
    m = ISGVFCLoss(memory_size=5)
    for b in range(3):
        rows = torch.arange(4 * b, 4 * b + 4, dtype=torch.float32)
        m.push(distinct_rows(rows), rows.long())
    assert len(m) == 5
    newest = torch.arange(7, 12)
    assert_memory_holds(m, distinct_rows(newest), newest)
    m.push(distinct_rows(torch.arange(20, 27)), torch.arange(20, 27))   # > size
    assert_memory_holds(m, distinct_rows(torch.arange(22, 27)), torch.arange(22, 27))
    wrapped = rand_batch(21, n=3, d=3)
    m.push(wrapped, torch.tensor([22, 30, 24]))                        # wraps the ring
    bank_feats = torch.cat([distinct_rows(torch.arange(25, 27)), wrapped])
    bank_pids = torch.tensor([25, 26, 22, 30, 24])
    assert_memory_holds(m, bank_feats, bank_pids)
    feats, pids = rand_batch(22, n=4, d=3), torch.tensor([22, 22, 24, 25])
    assert m(feats, pids).item() == pytest.approx(isgvfc_loss(
        feats, pids, bank_feats=bank_feats, bank_pids=bank_pids).item(), rel=1e-6)
    assert len(m) == 5
    assert_memory_holds(m, torch.cat([bank_feats[[4]], feats]), torch.tensor([24, 22, 22, 24, 25]))
    none = ISGVFCLoss(memory_size=0)
    none(torch.ones(2, 3), torch.zeros(2, dtype=torch.long))
    assert len(none) == 0


def test_memory_not_in_state_dict_and_off_switches():
    m = ISGVFCLoss()
    m(rand_batch(11), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert len(m) == 6 and m.state_dict() == {} and list(m.buffers()) == []
    off = ISGVFCLoss(use_memory=False)
    off(rand_batch(11), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert len(off) == 0
    ev = ISGVFCLoss().eval()                         # evaluation mode stores nothing
    ev(rand_batch(11), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert len(ev) == 0


def test_memory_changes_the_loss_as_documented_and_gets_no_gradient():
    m = ISGVFCLoss(temperature=0.1)
    f1, p1 = rand_batch(12), torch.tensor([0, 0, 1, 1, 2, 2])
    m(f1.requires_grad_(), p1)
    f2 = rand_batch(13).requires_grad_()
    p2 = torch.tensor([0, 0, 3, 3, 4, 4])           # pid 0 seen before; 1, 2 not in batch
    loss = m(f2, p2)
    expected = isgvfc_loss(f2, p2, 0.1, bank_feats=f1.detach(), bank_pids=p1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() == pytest.approx(
        loop_isgvfc(f2.detach(), p2, 0.1, bank=list(zip(f1.detach(), p1))), rel=1e-4)
    assert abs(loss.item() - isgvfc_loss(f2, p2, 0.1).item()) > 1e-3
    loss.backward()
    assert f1.grad is None
    assert torch.isfinite(f2.grad).all() and f2.grad.abs().sum() > 0
    assert len(m) == 12                              # f2 appended after its loss
    # a batch with no identity in the memory gets the plain loss
    f3, p3 = rand_batch(14), torch.tensor([8, 8, 9, 9, 10, 10])
    assert m(f3, p3).item() == pytest.approx(isgvfc_loss(f3, p3, 0.1).item(), rel=1e-6)
    # a bank tensor that requires grad is still treated as a constant
    bank = f1.detach().clone().requires_grad_()
    isgvfc_loss(f2.detach().requires_grad_(), p2, 0.1, bank_feats=bank, bank_pids=p1).backward()
    assert bank.grad is None


def test_repeat_memory_reproduces_released_code():
    m = ISGVFCLoss(temperature=0.1, repeat_memory=True)
    f1, p1 = rand_batch(15), torch.tensor([0, 0, 1, 1, 2, 2])
    m(f1, p1)
    f2, p2 = rand_batch(16), torch.tensor([0, 0, 1, 5, 6, 6])
    got = m(f2, p2)
    ref = loop_isgvfc(f2, p2, 0.1, bank=list(zip(f1, p1)), repeat=True)
    assert got.item() == pytest.approx(ref, rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_memory_lives_on_the_feature_device():
    m = ISGVFCLoss()
    feats = rand_batch(17).cuda().requires_grad_()
    pids = torch.tensor([0, 0, 1, 1, 2, 2])          # CPU pids are moved
    m(feats, pids)
    loss = m(feats, pids)
    loss.backward()
    assert loss.device == feats.device and torch.isfinite(feats.grad).all()
    assert loss.item() == pytest.approx(isgvfc_loss(
        feats.detach(), pids, bank_feats=feats.detach(), bank_pids=pids).item(), rel=1e-5)
