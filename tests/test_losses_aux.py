"""Auxiliary losses (TripletX, SupCon, Circle): equality with explicit loops and closed forms.

The loop references are written independently of the vectorised code (Python lists over
anchors / pairs, float64) so a change of semantics in either shows up as a mismatch.
"""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from losses.circle import batch_circle_loss, pairwise_circle_loss
from losses.supcon import supcon_loss
from losses.triplet import batch_hard_terms
from losses.tripletx import tripletx_loss, tripletx_terms

# ---------------------------------------------------------------------------------- TripletX

# pid 0: cams 0,1,1 (anchor 0 has 2 cross-cam positives, anchors 1 and 2 have 1 each);
# pid 1: both cam 2 (no cross-cam positive -> fallback to all positives);
# pid 2: 4 samples over cams 0,1,2,0; pid 3: singleton (not valid); pid 4: cams 1,0
PIDS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])
CAMS = torch.tensor([0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 1, 0])
VALID = [True] * 9 + [False, True, True]


def feats64(seed=0, n=12, d=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def reference_tripletx(x, pids, camids, epoch, margin=0.3, soft_warmup=True, warmup_epochs=10,
                       topk=5, norm_feat=True, cross_cam_pos=True, boost=1.2, alpha=2.0):
    """Loop over anchors; returns (weighted loss tensor, per-anchor losses, weights as floats)."""
    if norm_feat:
        x = x / x.norm(dim=1, keepdim=True)
    n = len(pids)
    losses, weights = {}, {}
    for i in range(n):
        pos = [j for j in range(n) if j != i and pids[j] == pids[i]]
        if camids is not None and cross_cam_pos:
            cross = [j for j in pos if camids[j] != camids[i]]
            pos = cross if cross else pos
        neg = [j for j in range(n) if pids[j] != pids[i]]
        if not pos or not neg:
            continue
        dp = [torch.dist(x[i], x[j]) for j in pos]
        dp = sorted(dp, key=lambda t: t.detach().item(), reverse=True)[:topk]
        dn = []
        for j in neg:
            factor = boost if camids is not None and camids[j] == camids[i] else 1.0
            dn.append(torch.dist(x[i], x[j]) / factor)
        dn = sorted(dn, key=lambda t: t.detach().item())[:topk]
        d = sum(dp) / len(dp) - sum(dn) / len(dn)
        weights[i] = 1.0 / (1.0 + math.exp(-alpha * d.detach().item()))   # a constant: no gradient
        losses[i] = F.softplus(d) if soft_warmup and epoch <= warmup_epochs else F.relu(d + margin)
    total = sum(weights[i] * losses[i] for i in losses) / sum(weights.values())
    return total, losses, weights


@pytest.mark.parametrize("topk", [1, 2, 5])
@pytest.mark.parametrize("epoch", [3, 20])
def test_tripletx_equals_reference_loop(topk, epoch):
    x = feats64()
    kw = dict(epoch=epoch, topk=topk, margin=0.6)
    terms = tripletx_terms(x, PIDS, CAMS, **kw)
    ref_total, ref_losses, ref_w = reference_tripletx(x, PIDS, CAMS, epoch, margin=0.6, topk=topk)
    assert terms.valid.tolist() == VALID
    assert terms.loss.dtype == torch.float64
    for i in range(len(PIDS)):
        expected_l = float(ref_losses[i]) if i in ref_losses else 0.0
        expected_w = ref_w.get(i, 0.0)
        assert abs(terms.loss[i].item() - expected_l) < 1e-9, i
        assert abs(terms.weight[i].item() - expected_w) < 1e-9, i
    loss = tripletx_loss(x, PIDS, CAMS, **kw)
    assert abs(loss.item() - float(ref_total)) < 1e-9


def test_tripletx_cross_camera_fallback_and_unequal_positives():
    # the anchors' positive sets, checked through d_ap with topk large (mean over the set)
    x = feats64(1)
    xn = x / x.norm(dim=1, keepdim=True)
    terms = tripletx_terms(x, PIDS, CAMS, epoch=1, topk=10)
    d = torch.cdist(xn, xn)
    assert abs(terms.d_ap[0] - (d[0, 1] + d[0, 2]) / 2) < 1e-9   # 2 cross-cam positives
    assert abs(terms.d_ap[1] - d[1, 0]) < 1e-9                   # 2 is same-camera: dropped
    assert abs(terms.d_ap[3] - d[3, 4]) < 1e-9                   # same-camera only: fallback
    no_cross = tripletx_terms(x, PIDS, CAMS, epoch=1, topk=10, cross_cam_pos=False)
    assert abs(no_cross.d_ap[1] - (d[1, 0] + d[1, 2]) / 2) < 1e-9


def test_tripletx_soft_hinge_switch_at_boundary_epochs():
    x = feats64(2)
    margin = 0.3

    def check(terms, soft):
        diff = terms.d_ap - terms.d_an
        expected = F.softplus(diff) if soft else F.relu(diff + margin)
        expected = torch.where(terms.valid, expected, torch.zeros_like(expected))
        assert torch.allclose(terms.loss, expected, atol=1e-12)
        # the two forms differ on this batch, so the check can tell them apart
        other = F.relu(diff + margin) if soft else F.softplus(diff)
        assert not torch.allclose(terms.loss[terms.valid], other[terms.valid])

    check(tripletx_terms(x, PIDS, CAMS, epoch=1, warmup_epochs=10), soft=True)
    check(tripletx_terms(x, PIDS, CAMS, epoch=10, warmup_epochs=10), soft=True)
    check(tripletx_terms(x, PIDS, CAMS, epoch=11, warmup_epochs=10), soft=False)
    check(tripletx_terms(x, PIDS, CAMS, epoch=1, soft_warmup=False), soft=False)


def test_tripletx_same_camera_negative_factor_closed_form():
    # anchor 0 (pid 0, cam 0) at the origin; positive 1 (cam 1) at distance 1; negatives:
    # 2 (cam 0) at distance 1.2, 3 (cam 1) at distance 1.1. topk=1, no normalisation.
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.2], [0.0, 1.1]], dtype=torch.float64)
    pids = torch.tensor([0, 0, 1, 1])
    cams = torch.tensor([0, 1, 0, 1])
    kw = dict(epoch=20, topk=1, norm_feat=False, margin=0.3)
    plain = tripletx_terms(x, pids, cams, same_cam_neg_boost=1.0, **kw)
    boosted = tripletx_terms(x, pids, cams, same_cam_neg_boost=1.2, **kw)
    assert abs(plain.d_an[0].item() - 1.1) < 1e-9           # nearest raw negative
    assert abs(plain.loss[0].item() - (1.0 - 1.1 + 0.3)) < 1e-9
    assert abs(boosted.d_an[0].item() - 1.2 / 1.2) < 1e-9    # same-camera 1.2 / 1.2 = 1.0 wins
    assert abs(boosted.loss[0].item() - (1.0 - 1.0 + 0.3)) < 1e-9
    # without camids there is no boost
    none = tripletx_terms(x, pids, None, same_cam_neg_boost=1.2, **kw)
    assert abs(none.d_an[0].item() - 1.1) < 1e-9


@pytest.mark.parametrize("epoch", [1, 20])
def test_tripletx_weights_are_detached(epoch):
    x = feats64(3).requires_grad_(True)
    loss = tripletx_loss(x, PIDS, CAMS, epoch=epoch, margin=0.6)
    (grad,) = torch.autograd.grad(loss, x)
    x_ref = x.detach().clone().requires_grad_(True)
    ref, _, _ = reference_tripletx(x_ref, PIDS, CAMS, epoch, margin=0.6)
    (grad_ref,) = torch.autograd.grad(ref, x_ref)
    assert torch.allclose(grad, grad_ref, atol=1e-10)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    terms = tripletx_terms(x, PIDS, CAMS, epoch=epoch)
    assert not terms.weight.requires_grad and not terms.d_ap.requires_grad


def test_tripletx_topk1_is_batch_hard_on_normalised_features():
    torch.manual_seed(0)
    x = torch.randn(11, 5)
    pids = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4])
    terms = tripletx_terms(x, pids, None, epoch=20, topk=1, margin=0.3)
    hard = batch_hard_terms(x, pids, margin=0.3, norm_feat=True)
    assert terms.valid.tolist() == hard.valid.tolist()
    assert torch.allclose(terms.d_ap[hard.valid], hard.d_ap[hard.valid], atol=1e-6)
    assert torch.allclose(terms.d_an[hard.valid], hard.d_an[hard.valid], atol=1e-6)
    assert torch.allclose(terms.loss, hard.loss, atol=1e-6)
    w = terms.weight
    expected = (w * hard.loss).sum() / w.sum()
    assert torch.allclose(tripletx_loss(x, pids, None, epoch=20, topk=1), expected, atol=1e-6)
    # topk > 1 averages more than the hardest sample, so it differs on this batch
    top3 = tripletx_terms(x, pids, None, epoch=20, topk=3)
    assert not torch.allclose(top3.d_an[hard.valid], hard.d_an[hard.valid])


def test_tripletx_no_valid_anchor_keeps_graph_and_dtype():
    x = torch.randn(3, 4, requires_grad=True)
    loss = tripletx_loss(x, torch.tensor([0, 1, 2]), epoch=1)
    assert loss.item() == 0.0 and loss.requires_grad
    one_id = tripletx_loss(x, torch.tensor([5, 5, 5]), epoch=1)
    assert one_id.item() == 0.0 and one_id.requires_grad
    half = tripletx_loss(torch.randn(6, 4).half(), torch.tensor([0, 0, 1, 1, 2, 2]), epoch=1)
    assert half.dtype == torch.float32


# ------------------------------------------------------------------------------------ SupCon

SC_PIDS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 4, 4])
SC_CAMS = torch.tensor([0, 1, 0, 2, 2, 0, 1, 1, 3, 0])
# cam-aware: anchors 3, 4 (pid 1, one camera) and 7 (singleton) have no cross-camera positive


def reference_supcon_mask_algebra(z, labels, temperature):
    """SupContrast SupConLoss re-done with its mask algebra, n_views = 1, contrast_mode 'all'."""
    features = F.normalize(z, dim=1).unsqueeze(1)              # (B, n_views=1, D)
    batch_size, n_views = features.shape[:2]
    mask = (labels.view(-1, 1) == labels.view(1, -1)).to(z.dtype).repeat(n_views, n_views)
    contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
    anchor_feature = contrast_feature
    dot = anchor_feature @ contrast_feature.T / temperature
    logits = dot - dot.max(dim=1, keepdim=True).values.detach()
    logits_mask = torch.ones_like(mask) - torch.eye(batch_size * n_views, dtype=z.dtype)
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    pos_pairs = mask.sum(1)
    pos_pairs = torch.where(pos_pairs < 1e-6, torch.ones_like(pos_pairs), pos_pairs)
    mean_log_prob_pos = (mask * log_prob).sum(1) / pos_pairs
    loss = -(temperature / temperature) * mean_log_prob_pos
    return loss.view(n_views, batch_size).mean()


def reference_supcon_loop(z, pids, camids, temperature, cam_aware):
    """Per-anchor loop: {anchor index: l_i} over the counted anchors."""
    x = [v / v.norm() for v in z]
    n = len(pids)
    out = {}
    for i in range(n):
        def ignored(j):
            if j == i:
                return True
            return cam_aware and pids[j] == pids[i] and camids[j] == camids[i]
        contrast = [j for j in range(n) if not ignored(j)]
        pos = [j for j in contrast if pids[j] == pids[i]]
        if not pos:
            if not cam_aware:
                out[i] = 0.0 * z.sum()
            continue
        denom = sum(torch.exp(x[i].dot(x[j]) / temperature) for j in contrast)
        terms = [torch.log(torch.exp(x[i].dot(x[p]) / temperature) / denom) for p in pos]
        out[i] = -sum(terms) / len(terms)
    return out


def test_supcon_equals_supcontrast_reference():
    z = feats64(10, n=10, d=8)
    for t in (0.07, 0.5):
        loss = supcon_loss(z, SC_PIDS, temperature=t)
        ref = reference_supcon_mask_algebra(z, SC_PIDS, t)
        loop = reference_supcon_loop(z, SC_PIDS, None, t, cam_aware=False)
        assert abs(loss.item() - ref.item()) < 1e-9
        # the singleton anchor 7 counts as a zero in the mean (divisor of 10, not 9)
        assert abs(loss.item() - float(sum(loop.values())) / 10) < 1e-9
    # camids are ignored without cam_aware
    assert torch.equal(supcon_loss(z, SC_PIDS, SC_CAMS), supcon_loss(z, SC_PIDS))


def test_supcon_cam_aware_equals_loop_and_excludes_anchors():
    z = feats64(11, n=10, d=8)
    loop = reference_supcon_loop(z, SC_PIDS, SC_CAMS, 0.1, cam_aware=True)
    assert sorted(loop) == [0, 1, 2, 5, 6, 8, 9]
    loss = supcon_loss(z, SC_PIDS, SC_CAMS, temperature=0.1, cam_aware=True)
    assert abs(loss.item() - float(sum(loop.values())) / len(loop)) < 1e-9
    # excluded anchors carry no weight: zeroing their weights changes nothing
    w = torch.ones(10, dtype=torch.float64)
    w[[3, 4, 7]] = 0.0
    weighted = supcon_loss(z, SC_PIDS, SC_CAMS, temperature=0.1, cam_aware=True, anchor_weights=w)
    assert abs(weighted.item() - loss.item()) < 1e-12
    # differs from the plain loss on the same batch
    assert abs(loss.item() - supcon_loss(z, SC_PIDS, temperature=0.1).item()) > 1e-3


def test_supcon_cam_aware_same_camera_positive_is_ignored():
    # anchor 0 (pid 0, cam 0): sample 2 is same pid, same camera -> neither positive nor negative,
    # so moving it leaves l_0 unchanged; in the plain loss it is a positive and l_0 changes
    z = feats64(12, n=10, d=8)
    moved = z.clone()
    moved[2] = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(99))
    only_0 = torch.zeros(10, dtype=torch.float64)
    only_0[0] = 1.0
    kw = dict(temperature=0.1, anchor_weights=only_0)
    a = supcon_loss(z, SC_PIDS, SC_CAMS, cam_aware=True, **kw)
    b = supcon_loss(moved, SC_PIDS, SC_CAMS, cam_aware=True, **kw)
    assert abs(a.item() - b.item()) < 1e-12
    loop = reference_supcon_loop(z, SC_PIDS, SC_CAMS, 0.1, cam_aware=True)
    assert abs(a.item() - loop[0].item()) < 1e-9
    plain_a = supcon_loss(z, SC_PIDS, **kw)
    plain_b = supcon_loss(moved, SC_PIDS, **kw)
    assert abs(plain_a.item() - plain_b.item()) > 1e-4


def test_supcon_anchor_weights_and_edge_cases():
    z = feats64(13, n=10, d=8)
    w = torch.rand(10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    loop = reference_supcon_loop(z, SC_PIDS, None, 0.2, cam_aware=False)
    expected = sum(w[i] * loop[i] for i in range(10)) / w.sum()
    got = supcon_loss(z, SC_PIDS, temperature=0.2, anchor_weights=w)
    assert abs(got.item() - expected.item()) < 1e-9
    ones = torch.ones(10, dtype=torch.float64)
    assert abs(supcon_loss(z, SC_PIDS, temperature=0.2, anchor_weights=ones).item()
               - supcon_loss(z, SC_PIDS, temperature=0.2).item()) < 1e-12
    with pytest.raises(ValueError):
        supcon_loss(z, SC_PIDS, cam_aware=True)
    with pytest.raises(ValueError):
        supcon_loss(z, SC_PIDS, anchor_weights=-ones)
    # no cross-camera positive anywhere: 0 with a graph and finite gradients
    zz = torch.randn(4, 3, requires_grad=True)
    none = supcon_loss(zz, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1]), cam_aware=True)
    assert none.item() == 0.0 and none.requires_grad
    # anchors without a cross-camera positive next to valid ones: finite gradients
    zz = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    loss = supcon_loss(zz, torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 0, 0, 1, 1]),
                       cam_aware=True)
    (g,) = torch.autograd.grad(loss, zz)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_supcon_gradient_matches_loop():
    z = feats64(14, n=10, d=8).requires_grad_(True)
    loss = supcon_loss(z, SC_PIDS, SC_CAMS, temperature=0.1, cam_aware=True)
    (g,) = torch.autograd.grad(loss, z)
    z2 = z.detach().clone().requires_grad_(True)
    loop = reference_supcon_loop(z2, SC_PIDS, SC_CAMS, 0.1, cam_aware=True)
    (g2,) = torch.autograd.grad(sum(loop.values()) / len(loop), z2)
    assert torch.allclose(g, g2, atol=1e-9)


def reference_supcon_denominator_loop(z, pids, camids, temperature):
    """Model B's camera-aware SupCon as a loop: {anchor index: l_i} over the counted anchors.
    Positives = same pid on another camera; the contrast set is every j != i (same-pid
    same-camera samples stay in the denominator); anchors without a positive are not counted."""
    x = [v / v.norm() for v in z]
    n = len(pids)
    out = {}
    for i in range(n):
        contrast = [j for j in range(n) if j != i]
        pos = [j for j in contrast if pids[j] == pids[i] and camids[j] != camids[i]]
        if not pos:
            continue
        denom = sum(torch.exp(x[i].dot(x[j]) / temperature) for j in contrast)
        out[i] = -sum(torch.log(torch.exp(x[i].dot(x[p]) / temperature) / denom)
                      for p in pos) / len(pos)
    return out


@pytest.mark.parametrize("mode", ["exclude", "denominator"])
def test_supcon_cam_aware_modes_equal_their_loops_with_gradients(mode):
    z = feats64(15, n=10, d=8).requires_grad_(True)
    loss = supcon_loss(z, SC_PIDS, SC_CAMS, temperature=0.1, cam_aware=True,
                       cam_aware_mode=mode)
    z2 = z.detach().clone().requires_grad_(True)
    if mode == "exclude":
        loop = reference_supcon_loop(z2, SC_PIDS, SC_CAMS, 0.1, cam_aware=True)
    else:
        loop = reference_supcon_denominator_loop(z2, SC_PIDS, SC_CAMS, 0.1)
    assert sorted(loop) == [0, 1, 2, 5, 6, 8, 9]
    expected = sum(loop.values()) / len(loop)
    assert abs(loss.item() - expected.item()) < 1e-9
    (g,) = torch.autograd.grad(loss, z)
    (g2,) = torch.autograd.grad(expected, z2)
    assert torch.allclose(g, g2, atol=1e-9)


def test_supcon_denominator_mode_keeps_same_camera_samples_in_the_denominator():
    z = feats64(16, n=10, d=8)
    kw = dict(temperature=0.1, cam_aware=True)
    exclude = supcon_loss(z, SC_PIDS, SC_CAMS, **kw)
    assert torch.equal(exclude, supcon_loss(z, SC_PIDS, SC_CAMS, cam_aware_mode="exclude", **kw))
    denominator = supcon_loss(z, SC_PIDS, SC_CAMS, cam_aware_mode="denominator", **kw)
    # the extra denominator terms only lower log p of the positives: a larger loss
    assert denominator.item() > exclude.item() + 1e-6
    # anchor 0 (pid 0, cam 0): sample 2 (pid 0, cam 0) is not a positive but is in A(0), so
    # moving it changes l_0 in 'denominator' mode only
    moved = z.clone()
    moved[2] = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(99))
    only_0 = torch.zeros(10, dtype=torch.float64)
    only_0[0] = 1.0
    kw["anchor_weights"] = only_0
    a = supcon_loss(z, SC_PIDS, SC_CAMS, cam_aware_mode="denominator", **kw)
    b = supcon_loss(moved, SC_PIDS, SC_CAMS, cam_aware_mode="denominator", **kw)
    assert abs(a.item() - b.item()) > 1e-4
    # without cam_aware the mode has no effect (SupContrast semantics)
    assert torch.equal(supcon_loss(z, SC_PIDS, SC_CAMS, cam_aware_mode="denominator"),
                       supcon_loss(z, SC_PIDS))
    with pytest.raises(ValueError, match="'exclude' or 'denominator'"):
        supcon_loss(z, SC_PIDS, SC_CAMS, cam_aware=True, cam_aware_mode="keep")


# ------------------------------------------------------------------------------------ Circle

C_PIDS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])   # unequal positives, 3 is a singleton


def circle_pair_logits(s, positive, margin, gamma, detach_alpha=True):
    a = s.detach() if detach_alpha else s
    if positive:
        alpha = torch.clamp(1 + margin - a, min=0.0)
        return -gamma * alpha * (s - (1 - margin))
    alpha = torch.clamp(a + margin, min=0.0)
    return gamma * alpha * (s - margin)


def reference_pairwise_circle(x, pids, margin, gamma, detach_alpha=True):
    x = [v / v.norm() for v in x]
    n = len(pids)
    losses = []
    for i in range(n):
        lp = [circle_pair_logits(x[i].dot(x[j]), True, margin, gamma, detach_alpha)
              for j in range(n) if j != i and pids[j] == pids[i]]
        ln = [circle_pair_logits(x[i].dot(x[j]), False, margin, gamma, detach_alpha)
              for j in range(n) if pids[j] != pids[i]]
        if not lp or not ln:
            continue
        losses.append(F.softplus(torch.logsumexp(torch.stack(lp), 0)
                                 + torch.logsumexp(torch.stack(ln), 0)))
    return sum(losses) / len(losses)


def reference_batch_circle(x, pids, margin, gamma, detach_alpha=True):
    x = [v / v.norm() for v in x]
    n = len(pids)
    lp, ln = [], []
    for i in range(n):
        for j in range(i + 1, n):
            s = x[i].dot(x[j])
            if pids[i] == pids[j]:
                lp.append(circle_pair_logits(s, True, margin, gamma, detach_alpha))
            else:
                ln.append(circle_pair_logits(s, False, margin, gamma, detach_alpha))
    return F.softplus(torch.logsumexp(torch.stack(lp), 0) + torch.logsumexp(torch.stack(ln), 0))


@pytest.mark.parametrize("fn, ref", [(pairwise_circle_loss, reference_pairwise_circle),
                                     (batch_circle_loss, reference_batch_circle)])
@pytest.mark.parametrize("margin, gamma", [(0.25, 128.0), (0.4, 16.0)])
def test_circle_equals_loop_and_alphas_are_detached(fn, ref, margin, gamma):
    x = feats64(20, n=10, d=4).requires_grad_(True)
    loss = fn(x, C_PIDS, margin=margin, gamma=gamma)
    (g,) = torch.autograd.grad(loss, x)
    x2 = x.detach().clone().requires_grad_(True)
    expected = ref(x2, C_PIDS, margin, gamma)
    (g2,) = torch.autograd.grad(expected, x2)
    assert abs(loss.item() - expected.item()) < 1e-9 * max(1.0, abs(expected.item()))
    assert torch.isfinite(g).all()
    assert torch.allclose(g, g2, rtol=1e-7, atol=1e-9)
    # with gradients through the alphas the gradient is different, so the check has teeth
    x3 = x.detach().clone().requires_grad_(True)
    (g3,) = torch.autograd.grad(ref(x3, C_PIDS, margin, gamma, detach_alpha=False), x3)
    assert not torch.allclose(g, g3, rtol=1e-3, atol=1e-6)


def test_batch_circle_single_pair_closed_form():
    # one positive pair (0, 1) with s_p = cos 60deg = 0.5 and one negative pair... plus the two
    # cross pairs: place 2 orthogonal to both so s_n = 0 for both negative pairs
    x = torch.tensor([[1.0, 0.0, 0.0], [0.5, math.sqrt(3) / 2, 0.0], [0.0, 0.0, 1.0]],
                     dtype=torch.float64)
    pids = torch.tensor([0, 0, 1])
    m, gamma = 0.25, 128.0
    logit_p = -gamma * (1 + m - 0.5) * (0.5 - (1 - m))
    logit_n = gamma * (0 + m) * (0 - m)
    expected = math.log1p(math.exp(logit_p + logit_n + math.log(2)))   # two equal negatives
    assert abs(batch_circle_loss(x, pids).item() - expected) < 1e-9


def test_circle_defaults_and_degenerate_batches():
    for fn in (pairwise_circle_loss, batch_circle_loss):
        params = inspect.signature(fn).parameters
        assert params["margin"].default == 0.25 and params["gamma"].default == 128.0
        x = torch.randn(3, 4, requires_grad=True)
        for pids in (torch.tensor([0, 1, 2]), torch.tensor([7, 7, 7])):
            loss = fn(x, pids)
            assert loss.item() == 0.0 and loss.requires_grad
    # a singleton anchor next to valid ones: excluded, finite gradients
    x = torch.randn(5, 4, requires_grad=True)
    loss = pairwise_circle_loss(x, torch.tensor([0, 0, 1, 1, 2]))
    (g,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(g).all() and loss.item() > 0
