"""The phase plan: boundaries, weight specs, TRIPLETX_END, conditional K, routing, freezing, and
errors for phases that ask for disabled branches."""
import pytest

from configs import load_config
from solver.phase_plan import PhasePlan, WeightSpec

PHASED_ABC = [  # Model B's recommended A: Triplet -> B: TripletX + SupCon -> C: Triplet + SupCon
    "SOLVER.MAX_EPOCHS", "120", "SOLVER.IMS_PER_BATCH", "64",
    "LOSS.PHASED.ENABLE", "True", "LOSS.PHASED.BOUNDARIES", "[40, 80]",
    "LOSS.PHASED.METRIC_SEQ", "['triplet', 'tripletx', 'triplet']",
    "LOSS.PHASED.W_METRIC_SEQ", "[1.0, 1.2, 1.0]",
    "LOSS.PHASED.W_SUP_SPEC", "['const:0.0', 'const:0.30', 'linear:0.30->0.0']",
    "LOSS.TRIPLETX.ENABLE", "True", "LOSS.SUPCON.ENABLE", "True",
    "DATALOADER.PHASED.ENABLE", "True", "DATALOADER.PHASED.K_WHEN_TRIPLETX", "8",
    "DATALOADER.PHASED.K_WHEN_SUPCON", "16", "DATALOADER.PHASED.K_OTHER", "4",
]


def plan_of(*opts):
    return PhasePlan(load_config(opts=list(opts)))


def test_weight_spec_parsing_and_interpolation():
    assert WeightSpec.parse("const:0.30", "k").at(7, 1, 10) == pytest.approx(0.30)
    assert WeightSpec.parse(1.2, "k").at(5, 1, 10) == pytest.approx(1.2)
    lin = WeightSpec.parse("linear:0.30->0.15", "k")
    assert lin.at(31, 31, 60) == pytest.approx(0.30)
    assert lin.at(60, 31, 60) == pytest.approx(0.15)
    assert lin.at(45, 31, 60) == pytest.approx(0.30 - 0.15 * 14 / 29)
    for bad in ("0.3", "lin:0.3->0", "linear:0.3", "const:x", True):
        with pytest.raises(ValueError, match="LOSS.X"):
            WeightSpec.parse(bad, "LOSS.X")


def test_boundaries_are_one_based_and_half_open():
    plan = plan_of(*PHASED_ABC)
    names = {e: plan.state(e).name for e in (1, 40, 41, 80, 81, 120)}
    assert names == {1: "A", 40: "A", 41: "B", 80: "B", 81: "C", 120: "C"}
    assert [(p.first, p.last) for p in plan.phases] == [(1, 40), (41, 80), (81, 120)]


def test_losses_weights_and_k_follow_the_phase():
    plan = plan_of(*PHASED_ABC)
    a, b, c_first, c_last = plan.state(40), plan.state(41), plan.state(81), plan.state(120)
    assert (a.metric, a.weight("triplet"), a.weight("tripletx"), a.weight("supcon")) == (
        "triplet", 1.0, 0.0, 0.0)
    assert (b.metric, b.weight("triplet"), b.weight("tripletx")) == ("tripletx", 0.0, 1.2)
    assert b.weight("supcon") == pytest.approx(0.30)
    assert c_first.weight("supcon") == pytest.approx(0.30)
    assert c_last.weight("supcon") == pytest.approx(0.0)
    assert plan.state(100).weight("supcon") == pytest.approx(0.30 * (1 - 19 / 39))
    # K: TripletX active -> 8; else SupCon weight > 0 -> 16; else 4 (A and C's last epoch)
    assert [plan.state(e).num_instances for e in (40, 41, 80, 81, 119, 120)] == [
        4, 8, 8, 16, 16, 4]
    assert a.weight("id") == 1.0 and not a.routing
    assert plan.components() == ("id", "triplet", "tripletx", "supcon")


def test_tripletx_end_is_inclusive_and_k_follows():
    plan = plan_of("LOSS.TRIPLETX.ENABLE", "True", "LOSS.TRIPLETX.W", "1.2",
                   "LOSS.PHASED.TRIPLETX_END", "10", "SOLVER.MAX_EPOCHS", "20",
                   "DATALOADER.PHASED.ENABLE", "True")
    ten, eleven = plan.state(10), plan.state(11)
    assert (ten.metric, ten.weight("tripletx"), ten.weight("triplet"), ten.num_instances) == (
        "tripletx", 1.2, 0.0, 8)
    assert (eleven.metric, eleven.weight("tripletx"), eleven.weight("triplet"),
            eleven.num_instances) == ("triplet", 0.0, 1.0, 4)
    # within a phased TripletX phase, the retired epochs keep the phase's metric weight
    plan = plan_of(*PHASED_ABC, "LOSS.PHASED.TRIPLETX_END", "60")
    assert (plan.state(60).metric, plan.state(60).weight("tripletx")) == ("tripletx", 1.2)
    assert (plan.state(61).metric, plan.state(61).weight("triplet")) == ("triplet", 1.2)
    assert plan.state(61).num_instances == 16  # SupCon still on


def test_plan_off_is_one_phase_with_the_configured_weights():
    plan = plan_of("LOSS.ID.W", "0.5", "SOLVER.MAX_EPOCHS", "5", "DATALOADER.NUM_INSTANCE", "8")
    s = plan.state(5)
    assert (s.name, s.metric, s.num_instances) == ("A", "triplet", 8)
    assert s.weights == {"id": 0.5, "triplet": 1.0, "tripletx": 0.0, "center": 0.0,
                         "supcon": 0.0, "isgvfc": 0.0, "circle": 0.0, "tgmim": 0.0,
                         "itc": 0.0, "sdm": 0.0, "nitc": 0.0, "ritc": 0.0, "citc": 0.0,
                         "cmpm": 0.0, "sigmoid_id": 0.0, "circle_inmodal": 0.0,
                         "circle_cross": 0.0, "nc_itc": 0.0, "mlm": 0.0, "ss": 0.0,
                         "lgur_id": 0.0, "lgur_rank_m": 0.0, "lgur_rank_g": 0.0}
    sup = plan_of("LOSS.SUPCON.ENABLE", "True", "LOSS.SUPCON.W", "0.3").state(1)
    assert sup.weight("supcon") == pytest.approx(0.3)
    routed = plan_of("LOSS.BRIGHTNESS.ENABLE", "True", "LOSS.TRIPLETX.ENABLE", "True",
                     "LOSS.TRIPLETX.W", "1.2").state(1)
    assert routed.routing and routed.metric == "routed"
    assert (routed.weight("triplet"), routed.weight("tripletx")) == (1.0, 1.2)
    # DATALOADER.PHASED off: NUM_INSTANCE even while TripletX is active
    assert plan_of("LOSS.TRIPLETX.ENABLE", "True").state(1).num_instances == 4


def test_routing_only_in_the_phases_that_route():
    plan = plan_of("LOSS.PHASED.ENABLE", "True", "LOSS.PHASED.BOUNDARIES", "[2]",
                   "LOSS.PHASED.METRIC_SEQ", "['triplet', 'routed']",
                   "LOSS.PHASED.W_METRIC_SEQ", "[1.0, 1.0]",
                   "LOSS.PHASED.W_SUP_SPEC", "['const:0', 'const:0']",
                   "LOSS.TRIPLETX.ENABLE", "True", "LOSS.BRIGHTNESS.ENABLE", "True",
                   "SOLVER.MAX_EPOCHS", "4")
    assert [plan.state(e).routing for e in (1, 2, 3, 4)] == [False, False, True, True]


def test_auxiliary_schedules_with_w_seq():
    plan = plan_of("LOSS.PHASED.ENABLE", "True", "LOSS.PHASED.BOUNDARIES", "[5]",
                   "LOSS.PHASED.METRIC_SEQ", "['triplet', 'triplet']",
                   "LOSS.PHASED.W_METRIC_SEQ", "['const:1.0', 'linear:1.0->0.5']",
                   "LOSS.PHASED.W_SUP_SPEC", "['const:0', 'const:0']",
                   "LOSS.ISGVFC.ENABLE", "True", "LOSS.ISGVFC.W_SEQ",
                   "['const:0', 'linear:0.2->0.4']", "LOSS.CIRCLE.ENABLE", "True",
                   "LOSS.CIRCLE.W", "0.1", "SOLVER.MAX_EPOCHS", "7")
    assert [plan.state(e).weight("isgvfc") for e in (5, 6, 7)] == pytest.approx([0, 0.2, 0.4])
    assert plan.state(7).weight("triplet") == pytest.approx(0.5)
    assert [plan.state(e).weight("circle") for e in (1, 7)] == pytest.approx([0.1, 0.1])


@pytest.mark.parametrize("opts, match", [
    (["LOSS.PHASED.ENABLE", "True"], "LOSS.TRIPLETX.ENABLE is False"),
    (["LOSS.PHASED.ENABLE", "True", "LOSS.TRIPLETX.ENABLE", "True"],
     "LOSS.SUPCON.ENABLE is False"),
    (["LOSS.BRIGHTNESS.ENABLE", "True"], "LOSS.TRIPLETX.ENABLE is False"),
    (["LOSS.PHASED.ENABLE", "True", "LOSS.PHASED.METRIC_SEQ", "['triplet', 'routed', 'none']",
      "LOSS.TRIPLETX.ENABLE", "True", "LOSS.SUPCON.ENABLE", "True"],
     "LOSS.BRIGHTNESS.ENABLE is False"),
    (["LOSS.PHASED.ENABLE", "True", "LOSS.PHASED.METRIC_SEQ", "['triplet', 'triplet']"],
     "METRIC_SEQ has 2 entries but the plan has 3"),
    (["LOSS.PHASED.ENABLE", "True", "LOSS.PHASED.METRIC_SEQ", "['triplet', 'x', 'triplet']"],
     "'x' is not one of"),
    (["LOSS.PHASED.ENABLE", "True", "LOSS.PHASED.BOUNDARIES", "[60, 30]"], "increasing"),
    (["LOSS.ISGVFC.W_SEQ", "['const:0.5']"], "LOSS.ISGVFC.ENABLE True"),
    (["LOSS.PHASED.TRIPLETX_END", "-1"], "TRIPLETX_END"),
])
def test_inconsistent_plans_are_errors_before_training(opts, match):
    with pytest.raises(ValueError, match=match):
        plan_of(*opts)


def test_table_lists_every_run_of_epochs():
    plan = plan_of(*PHASED_ABC)
    table = plan.table()
    lines = table.splitlines()
    assert lines[1].split() == ["phase", "epochs", "metric", "weights", "K", "routing", "freeze"]
    rows = [line.split()[:3] for line in lines[2:]]
    assert rows == [["A", "1-40", "triplet"], ["B", "41-80", "tripletx"],
                    ["C", "81-119", "triplet"], ["C", "120-120", "triplet"]]
    assert "supcon=0.3->0" in table and "tripletx=1.2" in table
    short = plan_of(*PHASED_ABC[2:], "SOLVER.MAX_EPOCHS", "30").table()
    assert "phase B starts at epoch 41 > SOLVER.MAX_EPOCHS 30: not reached" in short


def test_freeze_seq_per_phase():
    plan = plan_of("LOSS.PHASED.ENABLE", "True", "LOSS.PHASED.BOUNDARIES", "[3]",
                   "LOSS.PHASED.METRIC_SEQ", "['triplet', 'triplet']",
                   "LOSS.PHASED.W_METRIC_SEQ", "[1.0, 1.0]",
                   "LOSS.PHASED.W_SUP_SPEC", "['const:0', 'const:0']",
                   "LOSS.PHASED.FREEZE_SEQ", "['backbone.patch_embed, backbone.cls_token', '']")
    assert plan.state(3).freeze == ("backbone.patch_embed", "backbone.cls_token")
    assert plan.state(4).freeze == ()


def test_every_planned_k_must_divide_the_batch_before_training():
    from datasets.make_dataloader import check_train_batches

    cfg = load_config(opts=["LOSS.TRIPLETX.ENABLE", "True", "DATALOADER.PHASED.ENABLE", "True",
                            "DATALOADER.PHASED.K_WHEN_TRIPLETX", "6"])
    plan = PhasePlan(cfg)      # K is a plan fact; K | batch is the P x K sampler's
    with pytest.raises(ValueError, match="not a multiple of K = 6"):
        check_train_batches(cfg, plan.num_instances_by_epoch())
    random = load_config(opts=["LOSS.TRIPLETX.ENABLE", "True", "DATALOADER.PHASED.ENABLE", "True",
                               "DATALOADER.PHASED.K_WHEN_TRIPLETX", "6",
                               "DATALOADER.SAMPLER", "random"])
    check_train_batches(random, PhasePlan(random).num_instances_by_epoch())  # no P x K batches
