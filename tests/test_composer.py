"""The loss composer under the phase plan: brightness routing (hard / soft, global and JPM alike),
SupCon on the projection, dark up-weighting only when asked, schedulable auxiliaries."""
import dataclasses

import pytest
import torch

from configs import load_config
from losses.make_loss import make_loss
from solver.phase_plan import PhasePlan
from losses.supcon import supcon_loss
from losses.triplet import batch_hard_terms
from losses.tripletx import tripletx_terms

ROUTED = ["LOSS.NAMES", "['triplet']", "LOSS.TRIPLETX.ENABLE", "True",
          "LOSS.BRIGHTNESS.ENABLE", "True", "LOSS.BRIGHTNESS.THRESH", "0.35",
          "LOSS.TRIPLET.W", "1.0", "LOSS.TRIPLETX.W", "1.5", "LOSS.TRIPLET.SOFT_MARGIN", "False"]


def batch_of(n=12, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    pids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])[:n]
    camids = torch.tensor([0, 1, 2, 0, 0, 1, 2, 1, 0, 1, 1, 2])[:n]
    mu = torch.tensor([0.1, 0.5, 0.2, 0.6, 0.3, 0.7, 0.8, 0.05, 0.4, 0.36, 0.34, 0.9])[:n]
    out = {"feat": torch.randn(n, dim, generator=g, dtype=torch.float64),
           "feat_bn": torch.randn(n, dim, generator=g, dtype=torch.float64)}
    return out, {"pid": pids, "camid": camids, "brightness": mu}


def reference_routed(feat, batch, w_t, w_x, gate, epoch, cfg):
    """Per-anchor loop over the routing formula: W_X (sum g / |V|) L_X + W_T (sum(1-g)/|V|) L_T."""
    t = batch_hard_terms(feat, batch["pid"], cfg.LOSS.TRIPLET.MARGIN, False, False)
    x = tripletx_terms(feat, batch["pid"], batch["camid"], epoch=epoch)
    valid = [i for i in range(len(gate)) if t.valid[i] and x.valid[i]]
    n = len(valid)
    sx = sum(gate[i] * x.weight[i] for i in valid)
    lx = sum(gate[i] * x.weight[i] * x.loss[i] for i in valid) / sx if sx > 0 else 0.0
    st = sum(1 - gate[i] for i in valid)
    lt = sum((1 - gate[i]) * t.loss[i] for i in valid) / st if st > 0 else 0.0
    return w_x * sum(gate[i] for i in valid) / n * lx + w_t * st / n * lt


def test_hard_routing_averages_within_subsets_and_combines_by_size():
    cfg = load_config(opts=ROUTED)
    composer = make_loss(cfg, 4, 6)
    state = PhasePlan(cfg).state(12)  # after TripletX's soft warm-up: hinge
    out, batch = batch_of()
    total, parts = composer(out, batch, state)
    gate = (batch["brightness"] < 0.35).double()
    expected = reference_routed(out["feat"], batch, 1.0, 1.5, gate, 12, cfg)
    assert total.item() == pytest.approx(float(expected), rel=1e-6)
    dark = gate.bool()
    x = tripletx_terms(out["feat"], batch["pid"], batch["camid"], epoch=12)
    t = batch_hard_terms(out["feat"], batch["pid"], 0.3, False, False)
    assert parts["tripletx"].item() == pytest.approx(
        float((x.weight[dark] * x.loss[dark]).sum() / x.weight[dark].sum()))
    assert parts["triplet"].item() == pytest.approx(float(t.loss[~dark].mean()))
    assert parts["dark_share"].item() == pytest.approx(5 / 12)


def test_soft_routing_mixes_each_anchor_by_the_gate():
    cfg = load_config(opts=ROUTED + ["LOSS.BRIGHTNESS.MODE", "soft", "LOSS.BRIGHTNESS.K", "0.08"])
    composer = make_loss(cfg, 4, 6)
    out, batch = batch_of(seed=1)
    total, _ = composer(out, batch, PhasePlan(cfg).state(3))
    gate = torch.sigmoid((0.35 - batch["brightness"].double()) / 0.08)
    expected = reference_routed(out["feat"], batch, 1.0, 1.5, gate, 3, cfg)
    assert total.item() == pytest.approx(float(expected), rel=1e-6)
    hard = make_loss(load_config(opts=ROUTED), 4, 6)(out, batch, PhasePlan(cfg).state(3))[0]
    assert abs(hard.item() - total.item()) > 1e-6   # the gate is used, not computed and dropped


def test_routing_applies_to_jpm_local_features_alike():
    cfg = load_config(opts=ROUTED)
    composer = make_loss(cfg, 4, 6)
    out, batch = batch_of(seed=2)
    g = torch.Generator().manual_seed(3)
    out["local_feats"] = [torch.randn(12, 6, generator=g, dtype=torch.float64) for _ in range(2)]
    total, _ = composer(out, batch, PhasePlan(cfg).state(12))
    gate = (batch["brightness"] < 0.35).double()
    per_feat = [reference_routed(f, batch, 1.0, 1.5, gate, 12, cfg)
                for f in [out["feat"]] + out["local_feats"]]
    expected = 0.5 * per_feat[0] + 0.5 * (per_feat[1] + per_feat[2]) / 2
    assert total.item() == pytest.approx(float(expected), rel=1e-6)


def test_all_bright_batch_is_plain_triplet_and_no_tripletx_part():
    cfg = load_config(opts=ROUTED)
    composer = make_loss(cfg, 4, 6)
    out, batch = batch_of(seed=4)
    batch["brightness"] = torch.full((12,), 0.9)
    total, parts = composer(out, batch, PhasePlan(cfg).state(12))
    t = batch_hard_terms(out["feat"], batch["pid"], 0.3, False, False)
    assert total.item() == pytest.approx(float(t.loss.mean()))
    assert "tripletx" not in parts and parts["dark_share"].item() == 0.0


def test_supcon_reads_the_projection_and_dark_weight_only_when_routing():
    opts = ["LOSS.SUPCON.ENABLE", "True", "LOSS.SUPCON.W", "0.3", "LOSS.SUPCON.CAM_AWARE", "True",
            "LOSS.NAMES", "['triplet']", "LOSS.BRIGHTNESS.SUPCON_DARK_WEIGHT", "1.8"]
    out, batch = batch_of(seed=5)
    out["supcon_z"] = torch.nn.functional.normalize(out["feat_bn"], dim=1)
    plain = make_loss(load_config(opts=opts), 4, 6)
    _, parts = plain(out, batch, PhasePlan(load_config(opts=opts)).state(1))
    expected = supcon_loss(out["supcon_z"], batch["pid"], batch["camid"], temperature=0.07,
                           cam_aware=True)
    assert parts["supcon"].item() == pytest.approx(expected.item())   # not routing: no boost
    routed = make_loss(load_config(opts=opts + ROUTED[2:6]), 4, 6)
    _, parts = routed(out, batch, PhasePlan(load_config(opts=opts + ROUTED[2:6])).state(1))
    weights = torch.where(batch["brightness"] < 0.35, 1.8, 1.0)
    boosted = supcon_loss(out["supcon_z"], batch["pid"], batch["camid"], temperature=0.07,
                          cam_aware=True, anchor_weights=weights)
    assert parts["supcon"].item() == pytest.approx(boosted.item())
    assert abs(boosted.item() - expected.item()) > 1e-6
    with pytest.raises(KeyError, match="LOSS.SUPCON.ENABLE"):
        del out["supcon_z"]
        plain(out, batch, PhasePlan(load_config(opts=opts)).state(1))


@pytest.mark.parametrize("mode", ["exclude", "denominator"])
def test_supcon_cam_aware_mode_is_read(mode):
    opts = ["LOSS.SUPCON.ENABLE", "True", "LOSS.SUPCON.CAM_AWARE", "True",
            "LOSS.SUPCON.CAM_AWARE_MODE", mode, "LOSS.NAMES", "['triplet']"]
    composer = make_loss(load_config(opts=opts), 4, 6)
    out, batch = batch_of(seed=8)
    out["supcon_z"] = torch.nn.functional.normalize(out["feat_bn"], dim=1)
    _, parts = composer(out, batch, PhasePlan(load_config(opts=opts)).state(1))
    expected = supcon_loss(out["supcon_z"], batch["pid"], batch["camid"], temperature=0.07,
                           cam_aware=True, cam_aware_mode=mode)
    other = supcon_loss(out["supcon_z"], batch["pid"], batch["camid"], temperature=0.07,
                        cam_aware=True,
                        cam_aware_mode="denominator" if mode == "exclude" else "exclude")
    assert parts["supcon"].item() == pytest.approx(expected.item())
    assert abs(expected.item() - other.item()) > 1e-6
    with pytest.raises(ValueError, match="LOSS.SUPCON.CAM_AWARE_MODE"):
        make_loss(load_config(opts=[*opts[:4], "LOSS.SUPCON.CAM_AWARE_MODE", "keep", *opts[6:]]),
                  4, 6)


def test_weights_of_the_state_scale_each_component():
    opts = ["LOSS.CIRCLE.ENABLE", "True", "LOSS.CIRCLE.W", "0.25", "LOSS.ISGVFC.ENABLE", "True",
            "LOSS.ISGVFC.MEMORY", "False", "LOSS.NAMES", "['triplet']"]
    composer = make_loss(load_config(opts=opts), 4, 6)
    out, batch = batch_of(seed=6)
    state = PhasePlan(load_config(opts=opts)).state(1)
    total, parts = composer(out, batch, state)
    assert set(parts) == {"triplet", "circle", "isgvfc"}
    expected = parts["triplet"] + 0.25 * parts["circle"] + 1.0 * parts["isgvfc"]
    assert total.item() == pytest.approx(expected.item())
    off = dataclasses.replace(state, weights={**state.weights, "circle": 0.0, "isgvfc": 2.0})
    total, parts = composer(out, batch, off)
    assert set(parts) == {"triplet", "isgvfc"}
    assert total.item() == pytest.approx((parts["triplet"] + 2.0 * parts["isgvfc"]).item())


@pytest.mark.parametrize("form", ["pairwise", "batch"])
def test_circle_form_is_read(form):
    from losses.circle import batch_circle_loss, pairwise_circle_loss
    opts = ["LOSS.CIRCLE.ENABLE", "True", "LOSS.CIRCLE.FORM", form, "LOSS.CIRCLE.M", "0.4",
            "LOSS.CIRCLE.GAMMA", "32.0", "LOSS.NAMES", "['id']"]
    composer = make_loss(load_config(opts=opts), 4, 6)
    out, batch = batch_of(seed=7)
    out["logits"] = torch.randn(12, 4, dtype=torch.float64)
    _, parts = composer(out, batch, PhasePlan(load_config(opts=opts)).state(1))
    fn = pairwise_circle_loss if form == "pairwise" else batch_circle_loss
    assert parts["circle"].item() == pytest.approx(
        fn(out["feat"], batch["pid"], margin=0.4, gamma=32.0).item())
    with pytest.raises(ValueError, match="LOSS.CIRCLE.FORM"):
        make_loss(load_config(opts=opts[:2] + ["LOSS.CIRCLE.FORM", "tri"]), 4, 6)
