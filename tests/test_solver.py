"""Solver: parameter groups and the warmup + cosine / multistep schedules."""
import math

import pytest
import torch
import torch.nn as nn

from configs import load_config
from solver.make_optimizer import make_optimizer
from solver.scheduler import make_scheduler


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.classifier = nn.Linear(4, 2, bias=False)
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))


def test_param_groups_bias_factor_no_decay_and_scales():
    cfg = load_config(opts=["SOLVER.BASE_LR", "0.1", "SOLVER.LR_SCALES", "['classifier=10']",
                            "SOLVER.BIAS_LR_FACTOR", "2.0", "SOLVER.WEIGHT_DECAY", "0.01"])
    model = Tiny()
    opt, center_opt = make_optimizer(cfg, model)
    assert center_opt is None
    where = {}
    for group in opt.param_groups:
        for p in group["params"]:
            where[id(p)] = (group["lr"], group["weight_decay"])
    assert where[id(model.backbone.weight)] == (0.1, 0.01)
    assert where[id(model.backbone.bias)] == (pytest.approx(0.2), 0.0)
    assert where[id(model.norm.weight)] == (0.1, 0.0)
    assert where[id(model.pos_embed)] == (0.1, 0.0)
    assert where[id(model.classifier.weight)] == (pytest.approx(1.0), 0.01)


def test_unknown_lr_scale_prefix_is_an_error():
    cfg = load_config(opts=["SOLVER.LR_SCALES", "['head=2']"])
    with pytest.raises(ValueError, match="head"):
        make_optimizer(cfg, Tiny())


def test_cosine_schedule_matches_transreid_formula():
    cfg = load_config(opts=["SOLVER.BASE_LR", "0.008", "SOLVER.MAX_EPOCHS", "120",
                            "SOLVER.WARMUP_EPOCHS", "5"])
    opt, _ = make_optimizer(cfg, Tiny())
    sched = make_scheduler(cfg, opt)
    base, w0, lo = 0.008, 0.008 * 0.01, 0.008 * 0.002
    assert sched.step(1) == pytest.approx(w0 + (base - w0) / 5)
    assert sched.step(4) == pytest.approx(w0 + 4 * (base - w0) / 5)
    assert sched.step(5) == pytest.approx(lo + 0.5 * (base - lo) * (1 + math.cos(math.pi * 5 / 120)))
    assert sched.step(120) == pytest.approx(lo)
    biases = [g for g in opt.param_groups if g["lr_scale"] == 2.0]
    assert biases and biases[0]["lr"] == pytest.approx(2 * lo)


def test_multistep_schedule():
    cfg = load_config(opts=["SOLVER.SCHEDULER", "multistep", "SOLVER.BASE_LR", "1.0",
                            "SOLVER.STEPS", "[4, 6]", "SOLVER.WARMUP_EPOCHS", "2",
                            "SOLVER.WARMUP_FACTOR", "0.1"])
    opt, _ = make_optimizer(cfg, Tiny())
    sched = make_scheduler(cfg, opt)
    lrs = [sched.step(e) for e in range(1, 8)]
    assert lrs == pytest.approx([0.55, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_fused_optimizer_is_the_same_update_rule(name):
    """SOLVER.FUSED_OPTIMIZER picks torch's fused kernel; three steps match the default
    implementation up to rounding, group settings included."""
    torch.manual_seed(0)
    models = [Tiny(), Tiny()]
    models[1].load_state_dict(models[0].state_dict())
    opts = []
    for model, fused in zip(models, ("False", "True")):
        cfg = load_config(opts=["SOLVER.OPTIMIZER_NAME", name, "SOLVER.BASE_LR", "0.01",
                                "SOLVER.WEIGHT_DECAY", "0.05", "SOLVER.FUSED_OPTIMIZER", fused])
        opts.append(make_optimizer(cfg, model)[0])
    assert not opts[0].defaults.get("fused") and opts[1].defaults["fused"] is True
    x = torch.randn(8, 4)
    for _ in range(3):
        for model, opt in zip(models, opts):
            opt.zero_grad()
            model.classifier(model.norm(model.backbone(x))).square().sum().backward()
            model.pos_embed.grad = torch.ones_like(model.pos_embed)
            opt.step()
    for (name_a, a), (_, b) in zip(models[0].named_parameters(), models[1].named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name_a
    assert not torch.equal(models[0].backbone.weight, Tiny().backbone.weight)
