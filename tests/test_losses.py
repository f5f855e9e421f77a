"""Losses: closed forms on tiny inputs and equality with straightforward reference loops."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from configs import load_config
from losses.center import CenterLoss
from losses.make_loss import make_loss
from solver.phase_plan import PhasePlan
from losses.softmax_ce import cross_entropy_label_smooth
from losses.triplet import batch_hard_terms, triplet_loss


def test_label_smoothing_closed_form():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    target = torch.tensor([0])
    eps = 0.1
    logp = F.log_softmax(logits, 1)[0]
    q = torch.tensor([1 - eps + eps / 3, eps / 3, eps / 3])
    expected = -(q * logp).sum()
    assert torch.allclose(cross_entropy_label_smooth(logits, target, eps), expected)
    assert torch.allclose(cross_entropy_label_smooth(logits, target, 0.0), -logp[0])


def reference_triplet(x, pids, margin, soft):
    """Per-anchor loop: hardest positive (other same-pid), hardest negative, mean over valid."""
    n = len(pids)
    losses = []
    for i in range(n):
        dp = [torch.dist(x[i], x[j]) for j in range(n) if j != i and pids[j] == pids[i]]
        dn = [torch.dist(x[i], x[j]) for j in range(n) if pids[j] != pids[i]]
        if not dp or not dn:
            continue
        d = max(dp) - min(dn)
        losses.append(math.log1p(math.exp(d)) if soft else max(0.0, d + margin))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("soft", [False, True])
def test_batch_hard_triplet_equals_reference_loop_with_unequal_positives(soft):
    torch.manual_seed(0)
    x = torch.randn(11, 5, dtype=torch.float64)
    pids = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4])  # 3 and 4 have no positive
    loss = triplet_loss(x, pids, margin=0.3, soft_margin=soft)
    assert abs(loss.item() - reference_triplet(x, pids, 0.3, soft)) < 1e-5
    terms = batch_hard_terms(x, pids, 0.3, soft)
    assert terms.valid.tolist() == [True] * 9 + [False, False]


def test_triplet_closed_form_and_no_valid_anchor():
    x = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [0.0, 5.0]])
    pids = torch.tensor([0, 0, 1, 1])
    # anchor 0: d_ap 3, d_an 4 -> 0; anchor 1: d_ap 3, d_an 5 -> 0; anchor 2: d_ap 1, d_an 4 ->0
    # anchor 3: d_ap 1, d_an min(5, sqrt(34)) = 5 -> 0; with margin 3: anchor 0: 3-4+3 = 2,
    # anchor 1: 3-5+3 = 1, anchor 2: 1-4+3 = 0, anchor 3: 1-5+3 = 0 -> mean 0.75
    assert abs(triplet_loss(x, pids, margin=3.0).item() - 0.75) < 1e-5
    lone = triplet_loss(torch.randn(3, 2, requires_grad=True), torch.tensor([0, 1, 2]))
    assert lone.item() == 0.0 and lone.requires_grad


def test_center_loss_value():
    loss = CenterLoss(2, 2)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    feats = torch.tensor([[1.0, 0.0], [1.0, 3.0]])
    assert abs(loss(feats, torch.tensor([0, 1])).item() - (1.0 + 4.0) / 2) < 1e-6


def test_composer_names_weights_and_jpm_halves():
    cfg = load_config(opts=["LOSS.NAMES", "['id', 'triplet']", "LOSS.ID.W", "0.5",
                            "LOSS.TRIPLET.W", "2.0", "LOSS.TRIPLET.SOFT_MARGIN", "True"])
    composer = make_loss(cfg, num_classes=3, feat_dim=4)
    state = PhasePlan(cfg).state(1)
    torch.manual_seed(0)
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    out = {"feat": torch.randn(6, 4), "feat_bn": torch.randn(6, 4), "logits": torch.randn(6, 3)}
    total, parts = composer(out, {"pid": pids}, state)
    assert set(parts) == {"id", "triplet"}
    id_ = F.cross_entropy(out["logits"], pids)
    tri = triplet_loss(out["feat"], pids, soft_margin=True)
    assert torch.allclose(total, 0.5 * id_ + 2.0 * tri)
    # JPM: 0.5 * global + 0.5 * mean of the parts, for id and triplet alike
    out["local_logits"] = [torch.randn(6, 3) for _ in range(2)]
    out["local_feats"] = [torch.randn(6, 4) for _ in range(2)]
    _, parts = composer(out, {"pid": pids}, state)
    id_local = torch.stack([F.cross_entropy(z, pids) for z in out["local_logits"]]).mean()
    assert torch.allclose(parts["id"], 0.5 * id_ + 0.5 * id_local)
    tri_local = torch.stack([triplet_loss(f, pids, soft_margin=True)
                             for f in out["local_feats"]]).mean()
    assert torch.allclose(parts["triplet"], 0.5 * tri + 0.5 * tri_local)
    # a weight of 0 skips the component; a missing branch is a clear error
    no_triplet = dataclasses.replace(state, weights={**state.weights, "triplet": 0.0})
    _, parts = composer(out, {"pid": pids}, no_triplet)
    assert set(parts) == {"id"}
    with pytest.raises(KeyError, match="classifier"):
        composer({"feat": out["feat"]}, {"pid": pids}, state)


def test_composer_rejects_unknown_loss():
    with pytest.raises(ValueError, match="unknown losses"):
        make_loss(load_config(opts=["LOSS.NAMES", "['id', 'arcface']"]), 3, 4)
    with pytest.raises(ValueError, match="LOSS.<NAME>.ENABLE"):
        make_loss(load_config(opts=["LOSS.NAMES", "['id', 'supcon']"]), 3, 4)
