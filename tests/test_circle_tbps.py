"""The circle-loss strategies on the dual encoder (losses/circle_tbps.py): each loss equals a
straightforward loop over the pairs (float64; ties of identities, no positive / no negative
pairs), the alphas are detached (gradients equal the closed form with constant alphas), NC-ITC is
a hand loop of BCE-with-logits, gathered NC-ITC averages to the whole-batch loss, the composer
computes each by name, the circle losses are never gathered, the curriculum is a phase-plan
weight spec, and bad configs are errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from configs import ConfigError, load_config
from conftest import three_phase_opts
from losses import make_loss as M
from losses.circle_tbps import circle_inmodal_loss, cross_modal_circle_loss, nc_itc_loss
from losses.tbps import Columns
from solver.phase_plan import PhasePlan
from test_tbps_train import composer_of, outputs_of, tbps_opts

PIDS = [torch.tensor([0, 0, 0, 1, 1, 2]),       # ties of three, an identity with one pair
        torch.tensor([3, 3, 3, 3, 3, 3]),       # no negative pair
        torch.tensor([0, 1, 2, 3, 4, 5])]       # no in-modal positive pair; cross: the diagonal


def feats(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_(),
            torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_())


def cos(a, b):
    return [[float(F.cosine_similarity(a[i], b[j], dim=0)) for j in range(len(b))]
            for i in range(len(a))]


def lse(xs):
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs))


def softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def circle_loop(s, pos, neg, m, g):
    """One circle loss over the pairs (i, j) with pos(i, j) / neg(i, j)."""
    lp = [-g * max(1 + m - s[i][j], 0) * (s[i][j] - (1 - m))
          for i in range(len(s)) for j in range(len(s[0])) if pos(i, j)]
    ln = [g * max(s[i][j] + m, 0) * (s[i][j] - m)
          for i in range(len(s)) for j in range(len(s[0])) if neg(i, j)]
    return softplus(lse(lp) + lse(ln)) if lp and ln else 0.0


def inmodal_loop(v, t, y, m, g):
    y = y.tolist()
    pos = lambda i, j: i != j and y[i] == y[j]           # noqa: E731
    neg = lambda i, j: y[i] != y[j]                       # noqa: E731
    with torch.no_grad():
        return 0.5 * (circle_loop(cos(v, v), pos, neg, m, g) + circle_loop(cos(t, t), pos, neg, m, g))


def cross_loop(v, t, y, m, g):
    y = y.tolist()
    with torch.no_grad():
        return circle_loop(cos(v, t), lambda i, j: y[i] == y[j], lambda i, j: y[i] != y[j], m, g)


def nc_itc_loop(v, t, y, m, g, cv=None, ct=None, cy=None):
    """1/2 sum over the directions of mean_ij BCE(x_ij, Y_ij), BCE(x, y) = -y log s(x) - (1 - y)
    log(1 - s(x)), written out; -log s(z) = softplus(-z) and -log(1 - s(z)) = softplus(z), so that
    gamma 64 does not round 1 - s(z) to 0."""
    cv, ct, cy = (v, t, y) if cv is None else (cv, ct, cy)
    y, cy = y.tolist(), cy.tolist()
    total = 0.0
    with torch.no_grad():
        for s in (cos(v, ct), cos(t, cv)):
            acc = 0.0
            for i in range(len(s)):
                for j in range(len(s[0])):
                    x = s[i][j]
                    if y[i] == cy[j]:
                        z = g * max(1 + m - x, 0) * (x - (1 - m))
                        acc += softplus(-z)
                    else:
                        z = g * max(x + m, 0) * (x - m)
                        acc += softplus(z)
            total += 0.5 * acc / (len(s) * len(s[0]))
    return total


# -- values ------------------------------------------------------------------------------------
@pytest.mark.parametrize("pids", PIDS)
@pytest.mark.parametrize("m, g", [(0.25, 64.0), (0.35, 128.0), (0.4, 2.0)])
def test_losses_equal_the_pair_loops(pids, m, g):
    v, t = feats()
    assert circle_inmodal_loss(v, t, pids, margin=m, gamma=g).item() == pytest.approx(
        inmodal_loop(v, t, pids, m, g), rel=1e-10, abs=1e-12)
    assert cross_modal_circle_loss(v, t, pids, margin=m, gamma=g).item() == pytest.approx(
        cross_loop(v, t, pids, m, g), rel=1e-10, abs=1e-12)
    assert nc_itc_loss(v, t, pids, margin=m, gamma=g).item() == pytest.approx(
        nc_itc_loop(v, t, pids, m, g), rel=1e-10)


def test_empty_pair_sets_give_zero_with_a_graph_and_parts():
    v, t = feats()
    for loss in (circle_inmodal_loss(v, t, PIDS[1]), circle_inmodal_loss(v, t, PIDS[2]),
                 cross_modal_circle_loss(v, t, PIDS[1])):
        assert loss.item() == 0.0 and loss.requires_grad
        gv, gt = torch.autograd.grad(loss, (v, t))
        assert not gv.any() and not gt.any()
    # distinct identities: the cross-modal positives are the own pairs, so it is not 0
    assert cross_modal_circle_loss(v, t, PIDS[2]).item() > 0
    total, parts = circle_inmodal_loss(v, t, PIDS[0], return_parts=True)
    assert total.item() == pytest.approx(0.5 * float(parts["img"] + parts["txt"]))
    total, parts = nc_itc_loss(v, t, PIDS[0], return_parts=True)
    # local batch: S^{t2i} = (S^{i2t})^T and the identity mask is symmetric
    assert float(parts["i2t"]) == pytest.approx(float(parts["t2i"]))


def test_inputs_unchanged_and_float32_inputs_give_float32():
    v, t = feats()
    v32, t32 = v.detach().float(), t.detach().float()
    keep = v32.clone()
    for fn in (circle_inmodal_loss, cross_modal_circle_loss, nc_itc_loss):
        out = fn(v32, t32, PIDS[0])
        assert out.dtype == torch.float32 and torch.equal(v32, keep)
        assert out.item() == pytest.approx(fn(v, t, PIDS[0]).item(), rel=1e-4)


# -- gradients: the closed form with constant (detached) alphas ---------------------------------
def _sim(a, b):
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()


def _circle_grad(s, pos, neg, m, g):
    """dL/ds of softplus(LSE_p(-g a_p (s - 1 + m)) + LSE_n(g a_n (s - m))) with a_p, a_n
    constants: sigmoid(z) softmax_p(.) (-g a_p) on positives, sigmoid(z) softmax_n(.) g a_n."""
    s = s.detach()
    ap, an = (1 + m - s).clamp_min(0), (s + m).clamp_min(0)
    lp = (-g * ap * (s - 1 + m)).masked_fill(~pos, -math.inf)
    ln = (g * an * (s - m)).masked_fill(~neg, -math.inf)
    z = torch.logsumexp(lp.flatten(), 0) + torch.logsumexp(ln.flatten(), 0)
    wp = torch.softmax(lp.flatten(), 0).view_as(s)
    wn = torch.softmax(ln.flatten(), 0).view_as(s)
    return torch.sigmoid(z) * (wp * (-g * ap) + wn * (g * an))


def _grads_of(surrogate, v, t):
    return torch.autograd.grad(surrogate, (v, t))


@pytest.mark.parametrize("m, g", [(0.25, 8.0), (0.35, 3.0)])
def test_gradients_are_the_closed_form_with_detached_alphas(m, g):
    v, t = feats(seed=1)
    y = PIDS[0]
    same = y.view(-1, 1) == y.view(1, -1)
    eye = torch.eye(len(y), dtype=torch.bool)
    # cross-modal
    got = _grads_of(cross_modal_circle_loss(v, t, y, margin=m, gamma=g), v, t)
    s = _sim(v, t)
    want = _grads_of((s * _circle_grad(s, same, ~same, m, g)).sum(), v, t)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-12)
    # in-modal: each modality's loss moves only its own features
    got = _grads_of(circle_inmodal_loss(v, t, y, margin=m, gamma=g), v, t)
    sv, st = _sim(v, v), _sim(t, t)
    surrogate = 0.5 * ((sv * _circle_grad(sv, same & ~eye, ~same, m, g)).sum()
                       + (st * _circle_grad(st, same & ~eye, ~same, m, g)).sum())
    for a, b in zip(got, _grads_of(surrogate, v, t)):
        assert torch.allclose(a, b, atol=1e-12)
    # NC-ITC: dBCE/dx = sigmoid(x) - Y, dx/ds = g a (a constant)
    got = _grads_of(nc_itc_loss(v, t, y, margin=m, gamma=g), v, t)
    surrogate = 0
    for s in (_sim(v, t), _sim(t, v)):
        sd = s.detach()
        ap, an = (1 + m - sd).clamp_min(0), (sd + m).clamp_min(0)
        x = torch.where(same, g * ap * (sd - 1 + m), g * an * (sd - m))
        dx = torch.where(same, g * ap, g * an)
        surrogate = surrogate + 0.5 * (s * (torch.sigmoid(x) - same.double()) * dx).sum() / s.numel()
    for a, b in zip(got, _grads_of(surrogate, v, t)):
        assert torch.allclose(a, b, atol=1e-12)


# -- gathered NC-ITC ---------------------------------------------------------------------------
def test_gathered_nc_itc_averages_to_the_whole_batch_loss():
    v, t = feats(n=8, seed=2)
    y = torch.tensor([0, 0, 1, 1, 2, 0, 3, 3])
    whole = nc_itc_loss(v, t, y)
    per_process = [nc_itc_loss(v[r * 4:(r + 1) * 4], t[r * 4:(r + 1) * 4], y[r * 4:(r + 1) * 4],
                               columns=Columns(v, t, y, r * 4)) for r in range(2)]
    assert (sum(per_process) / 2).item() == pytest.approx(whole.item(), rel=1e-12)
    assert per_process[1].item() == pytest.approx(
        nc_itc_loop(v[4:], t[4:], y[4:], 0.25, 64.0, v, t, y), rel=1e-10)
    with pytest.raises(ValueError, match="needs the columns' pids"):
        nc_itc_loss(v[:4], t[:4], y[:4], columns=Columns(v, t, None, 0))


# -- composer, plan, config ----------------------------------------------------------------------
NAMES = ["sigmoid_id", "circle_inmodal", "circle_cross", "nc_itc"]
OPTS = {"LOSS.CIRCLE_INMODAL.M": "0.3", "LOSS.CIRCLE_INMODAL.GAMMA": "16.0",
        "LOSS.CIRCLE_CROSS.M": "0.35", "LOSS.CIRCLE_CROSS.GAMMA": "128.0",
        "LOSS.CIRCLE_CROSS.W": "0.5", "LOSS.NC_ITC.M": "0.2", "LOSS.NC_ITC.GAMMA": "32.0"}


def _expected(out, y, cols=None):
    v, t = out["img_feat"], out["txt_feat"]
    return {"circle_inmodal": circle_inmodal_loss(v, t, y, margin=0.3, gamma=16.0),
            "circle_cross": cross_modal_circle_loss(v, t, y, margin=0.35, gamma=128.0),
            "nc_itc": nc_itc_loss(v, t, y, margin=0.2, gamma=32.0, columns=cols)}


def test_composer_computes_each_by_name_with_its_config(synth_root, tmp_path):
    cfg, composer, plan = composer_of(synth_root, tmp_path, NAMES, **OPTS)
    out, batch = outputs_of(), {"pid": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    total, parts = composer(out, batch, plan.state(1))
    expected = _expected(out, batch["pid"])
    for name, value in expected.items():
        assert torch.allclose(parts[name], value.detach(), atol=1e-6), name
    assert torch.allclose(total, parts["sigmoid_id"] + 0.1 * expected["circle_inmodal"]
                          + 0.5 * expected["circle_cross"] + expected["nc_itc"], atol=1e-5)


def test_under_ddp_only_nc_itc_takes_the_gathered_columns(synth_root, tmp_path, monkeypatch):
    cfg, composer, plan = composer_of(synth_root, tmp_path, NAMES[1:], **OPTS)
    out, batch = outputs_of(), {"pid": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    other = outputs_of(seed=5)
    cols = Columns(torch.cat([out["img_feat"], other["img_feat"]]),
                   torch.cat([out["txt_feat"], other["txt_feat"]]),
                   torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 0, 1, 2, 3]), 0)
    monkeypatch.setattr(M, "world_info", lambda: (2, 0))
    asked = []
    monkeypatch.setattr(M, "gather_columns", lambda img, txt, pids=None: asked.append(1) or cols)
    _, parts = composer(out, batch, plan.state(1))
    expected = _expected(out, batch["pid"], cols)
    for name, value in expected.items():
        assert torch.allclose(parts[name], value.detach(), atol=1e-6), name
    assert len(asked) == 1
    assert not torch.allclose(parts["nc_itc"], _expected(out, batch["pid"])["nc_itc"].detach())
    # without NC-ITC nothing is gathered
    cfg, composer, plan = composer_of(synth_root, tmp_path, ["circle_inmodal", "circle_cross"])
    asked.clear()
    composer(out, batch, plan.state(1))
    assert not asked


def test_follow_up_curriculum_is_a_phase_plan_weight_spec(synth_root, tmp_path):
    cfg, composer, plan = composer_of(
        synth_root, tmp_path, ["sigmoid_id", "circle_cross"], **{"SOLVER.MAX_EPOCHS": "30"},
        **three_phase_opts("[5, 20]",
                           CIRCLE_CROSS=["const:0", "linear:0->0.1", "const:0.1"]))
    w = {e: plan.state(e).weight("circle_cross") for e in (1, 5, 6, 13, 20, 21, 30)}
    assert w == pytest.approx({1: 0, 5: 0, 6: 0, 13: 0.05, 20: 0.1, 21: 0.1, 30: 0.1})
    out, batch = outputs_of(), {"pid": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    _, parts = composer(out, batch, plan.state(5))
    assert "circle_cross" not in parts and "sigmoid_id" in parts      # weight 0: not computed
    assert "circle_cross" in composer(out, batch, plan.state(6 + 1))[1]


@pytest.mark.parametrize("opts, match", [
    ({"LOSS.CIRCLE_CROSS.GAMMA": "0.0"}, "LOSS.CIRCLE_CROSS.GAMMA"),
    ({"LOSS.NC_ITC.M": "-0.1"}, "LOSS.NC_ITC.M"),
    ({"LOSS.CIRCLE_INMODAL.W": "-1"}, "LOSS.CIRCLE_INMODAL.W"),
    ({"LOSS.NAMES": "['sigmoid_id']", "LOSS.CIRCLE_CROSS.W_SEQ": "['const:0.1']"},
     "LOSS.NAMES contains 'circle_cross'"),
])
def test_config_errors(synth_root, tmp_path, opts, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        cfg = load_config(opts=tbps_opts(synth_root, str(tmp_path), **opts))
        PhasePlan(cfg)


def test_circle_strategies_are_tbps_losses_only(synth_root, tmp_path):
    from conftest import tiny_opts
    with pytest.raises(ConfigError, match="text-based person search losses"):
        load_config(opts=tiny_opts(synth_root, str(tmp_path),
                                   **{"LOSS.NAMES": "['id', 'circle_cross']"}))


# -- MVS on the strategies' losses --------------------------------------------------------------
MVS_OPTS = {"LOSS.SIGMOID_ID.MVS": "True", "LOSS.CIRCLE_CROSS.MVS": "True",
            "LOSS.NC_ITC.MVS": "True"}


def _with_mvs_view(out, seed=7):
    g = torch.Generator().manual_seed(seed)
    return {**out, "img_mvs_feat": torch.randn(out["img_feat"].shape, generator=g,
                                               requires_grad=True)}


def test_mvs_averages_each_loss_with_the_same_loss_on_the_mvs_view(synth_root, tmp_path):
    """sigmoid_id, circle_cross and nc_itc with LOSS.<NAME>.MVS: 1/2 [L(I, T) + L(I~, T)]; the
    in-modal circle (no MVS in the reference) is unchanged."""
    names = ["sigmoid_id", "circle_inmodal", "circle_cross", "nc_itc"]
    cfg, composer, plan = composer_of(synth_root, tmp_path, names, **OPTS, **MVS_OPTS)
    out, batch = _with_mvs_view(outputs_of()), {"pid": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    y, t, vm = batch["pid"], out["txt_feat"], out["img_mvs_feat"]
    total, parts = composer(out, batch, plan.state(1))
    plain = {**_expected(out, y), "sigmoid_id": M.sigmoid_identity_loss(
        out["img_feat"], t, y, out["logit_scale"], out["logit_bias"])}
    on_view = {"circle_cross": cross_modal_circle_loss(vm, t, y, margin=0.35, gamma=128.0),
               "nc_itc": nc_itc_loss(vm, t, y, margin=0.2, gamma=32.0),
               "sigmoid_id": M.sigmoid_identity_loss(vm, t, y, out["logit_scale"],
                                                     out["logit_bias"])}
    for name, mvs in on_view.items():
        assert not torch.allclose(mvs, plain[name]), name
        assert torch.allclose(parts[f"{name}_mvs"], mvs.detach(), atol=1e-6), name
        assert torch.allclose(parts[name], 0.5 * (plain[name] + mvs).detach(), atol=1e-6), name
    assert torch.allclose(parts["circle_inmodal"], plain["circle_inmodal"].detach(), atol=1e-6)
    assert "circle_inmodal_mvs" not in parts
    assert torch.allclose(total, parts["sigmoid_id"] + 0.1 * parts["circle_inmodal"]
                          + 0.5 * parts["circle_cross"] + parts["nc_itc"], atol=1e-5)
    total.backward()
    assert vm.grad is not None and vm.grad.abs().sum() > 0
    missing = {k: x for k, x in out.items() if k != "img_mvs_feat"}
    with pytest.raises(KeyError, match="forward of the MVS view"):
        composer(missing, batch, plan.state(1))


def test_gathered_mvs_takes_the_mvs_view_of_every_process(synth_root, tmp_path, monkeypatch):
    """Under DDP the MVS term of a GATHER loss compares the local MVS rows with the MVS view's
    features of every process (text columns unchanged); the circle loss stays local."""
    cfg, composer, plan = composer_of(synth_root, tmp_path, ["nc_itc", "circle_cross"], **OPTS,
                                      **{"LOSS.NC_ITC.MVS": "True",
                                         "LOSS.CIRCLE_CROSS.MVS": "True"})
    out, batch = _with_mvs_view(outputs_of()), {"pid": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    other = _with_mvs_view(outputs_of(seed=5), seed=9)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 0, 1, 2, 3])
    cols = Columns(torch.cat([out["img_feat"], other["img_feat"]]),
                   torch.cat([out["txt_feat"], other["txt_feat"]]), pids, 0)
    mvs_all = torch.cat([out["img_mvs_feat"], other["img_mvs_feat"]])
    monkeypatch.setattr(M, "world_info", lambda: (2, 0))
    monkeypatch.setattr(M, "gather_columns", lambda img, txt, pids=None: cols)
    monkeypatch.setattr(M, "all_gather_with_grad", lambda x: mvs_all)
    _, parts = composer(out, batch, plan.state(1))
    y, t, vm = batch["pid"], out["txt_feat"], out["img_mvs_feat"]
    want = nc_itc_loss(vm, t, y, margin=0.2, gamma=32.0, columns=cols._replace(img=mvs_all))
    assert torch.allclose(parts["nc_itc_mvs"], want.detach(), atol=1e-6)
    assert torch.allclose(parts["circle_cross_mvs"], cross_modal_circle_loss(
        vm, t, y, margin=0.35, gamma=128.0).detach(), atol=1e-6)


def test_mvs_view_and_forward_only_in_epochs_where_an_mvs_loss_weighs(synth_root, tmp_path):
    from datasets.tbps_augment import view_pipelines
    from processor.processor import batch_views, forward_options
    phased = {"SOLVER.MAX_EPOCHS": "3", "LOSS.CIRCLE_CROSS.MVS": "True",
              **three_phase_opts(CIRCLE_CROSS=["const:0", "const:0.1", "const:0"])}
    cfg, _, plan = composer_of(synth_root, tmp_path, ["nitc", "circle_cross"], **phased)
    assert list(view_pipelines(cfg)) == ["img_mvs"]
    assert batch_views(plan.state(1), cfg) == () and batch_views(plan.state(3), cfg) == ()
    assert batch_views(plan.state(2), cfg) == ("img_mvs",)
    # N-ITC's stop-gradient forward is on, but its MVS-I is off: no stop forward of the view
    assert forward_options(plan.state(2), cfg) == {"stop_features": True, "mvs": True,
                                                   "mvs_stop": False}
    cfg, _, plan = composer_of(synth_root, tmp_path, ["nitc", "circle_cross"],
                               **{**phased, "LOSS.NITC.MVS": "True"})
    assert forward_options(plan.state(2), cfg) == {"stop_features": True, "mvs": True}
    cfg, _, plan = composer_of(synth_root, tmp_path, ["sigmoid_id", "circle_cross"])
    assert view_pipelines(cfg) == {} and forward_options(plan.state(1), cfg) == {}


def test_the_model_skips_the_mvs_stop_forward_when_told(synth_root, tmp_path):
    from model.make_model import make_model
    cfg = load_config(opts=tbps_opts(synth_root, str(tmp_path), **{
        "LOSS.NAMES": "['nitc', 'nc_itc']", "LOSS.NC_ITC.MVS": "True"}))
    model = make_model(cfg, 6, 1, 1)
    g = torch.Generator().manual_seed(0)
    batch = {"img": torch.randn(2, 3, 64, 32, generator=g), "img_mvs":
             torch.randn(2, 3, 64, 32, generator=g), "text_ids": torch.zeros(2, 77,
                                                                             dtype=torch.long),
             "text_mask": torch.ones(2, 77, dtype=torch.bool)}
    out = model(batch, stop_features=True, mvs=True, mvs_stop=False)
    assert "img_mvs_feat" in out and "img_stop" in out and "img_mvs_stop" not in out
    assert "img_mvs_stop" in model(batch, stop_features=True, mvs=True)


@pytest.mark.parametrize("key", ["LOSS.SIGMOID_ID.MVS", "LOSS.CIRCLE_CROSS.MVS",
                                 "LOSS.NC_ITC.MVS"])
def test_mvs_of_a_loss_that_is_off_is_an_error(synth_root, tmp_path, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + " True"):
        load_config(opts=tbps_opts(synth_root, str(tmp_path),
                                   **{"LOSS.NAMES": "['itc']", key: "True"}))
