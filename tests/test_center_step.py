"""The centre update of the center loss (Trainer.backward_and_step / step_centers).

BoT's rule: the centres move by SGD (LOSS.CENTER.LR) on the gradient of the UNWEIGHTED centre
loss, whatever the epoch's loss weight, and with AMP they see the same unscaled gradient as
without it (an overflow step leaves them untouched, as it leaves the model). A CPU GradScaler
takes the same code path as the CUDA one.
"""
import pytest
import torch
import torch.nn as nn

from configs import load_config
from losses.make_loss import make_loss
from processor.processor import Trainer
from solver.phase_plan import PhasePlan

NUM_CLASSES, DIM, LR = 4, 6, 0.5
PIDS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


class TinyModel(nn.Module):
    """feat = Linear(x), logits = Linear(feat): what the 'id' and 'center' components read."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(5, DIM)
        self.head = nn.Linear(DIM, NUM_CLASSES)

    def forward(self, batch):
        feat = self.body(batch["img"])
        return {"feat": feat, "logits": self.head(feat)}


def make_trainer(center_w, center_w_seq=()):
    cfg = load_config(opts=["LOSS.NAMES", "['id', 'center']", "LOSS.CENTER.W", str(center_w),
                            "LOSS.CENTER.W_SEQ", str(list(center_w_seq)),
                            "LOSS.CENTER.LR", str(LR), "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = TinyModel()
    composer = make_loss(cfg, NUM_CLASSES, DIM)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    center_optimizer = torch.optim.SGD(composer.center.parameters(), lr=cfg.LOSS.CENTER.LR)
    trainer = Trainer(cfg, model, None, composer, PhasePlan(cfg), optimizer, center_optimizer,
                      None, torch.device("cpu"))
    return trainer


def one_step(trainer, extra=0.0):
    """One iteration on a fixed batch; returns (centres before, centres after, state)."""
    state = trainer.plan.state(1)
    x = torch.randn(len(PIDS), 5, generator=torch.Generator().manual_seed(1))
    outputs = trainer.model({"img": x})
    total, _ = trainer.composer(outputs, {"pid": PIDS}, state)
    total = total + extra * trainer.model.body.weight.sum()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.center_optimizer.zero_grad(set_to_none=True)
    before = trainer.composer.center.centers.detach().clone()
    trainer.backward_and_step(total, state.weight("center"))
    return before, trainer.composer.center.centers.detach().clone(), state


def expected_centres(model_state, before):
    """c - lr * d(unweighted centre loss)/dc on the batch of ``one_step``, with the features of
    the model weights before the step."""
    model = TinyModel()
    model.load_state_dict(model_state)
    x = torch.randn(len(PIDS), 5, generator=torch.Generator().manual_seed(1))
    centres = before.clone().requires_grad_(True)
    feat = model({"img": x})["feat"].detach()
    loss = (feat - centres[PIDS]).pow(2).sum(1).clamp(1e-12, 1e12).mean()
    (grad,) = torch.autograd.grad(loss, centres)
    return before - LR * grad


@pytest.mark.parametrize("center_w, center_w_seq", [
    (0.0005, ()),                       # the fixed weight
    (0.0005, ("const:0.05",)),          # the epoch's weight differs from LOSS.CENTER.W
    (0.0, ("const:0.3",)),              # W 0 with a positive W_SEQ (was a division by zero)
])
def test_centre_update_does_not_depend_on_the_loss_weight(center_w, center_w_seq):
    trainer = make_trainer(center_w, center_w_seq)
    model_state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    before, after, state = one_step(trainer)
    assert state.weight("center") > 0
    assert torch.allclose(after, expected_centres(model_state, before), rtol=1e-5, atol=1e-6)
    assert not torch.equal(after, before)


def test_two_weights_give_identical_centre_updates():
    a = one_step(make_trainer(0.0005, ("const:0.0005",)))
    b = one_step(make_trainer(0.0005, ("const:0.5",)))
    assert torch.equal(a[0], b[0])
    assert torch.allclose(a[1], b[1], rtol=1e-5, atol=1e-6)


def test_zero_centre_weight_leaves_centres_unchanged():
    trainer = make_trainer(0.0005, ("const:0.0",))
    before, after, state = one_step(trainer)
    assert state.weight("center") == 0.0
    assert trainer.composer.center.centers.grad is None
    assert torch.equal(after, before)


def test_amp_centre_update_equals_the_unscaled_one():
    plain = make_trainer(0.0005)
    _, plain_after, _ = one_step(plain)
    amp = make_trainer(0.0005)
    amp.scaler = torch.amp.GradScaler("cpu")          # init scale 65536, as on CUDA
    before, amp_after, _ = one_step(amp)
    assert amp.scaler.get_scale() == 65536.0          # no overflow: the scale did not back off
    assert torch.allclose(amp_after, plain_after, rtol=1e-5, atol=1e-6)
    assert not torch.equal(amp_after, before)
    for p, q in zip(plain.model.parameters(), amp.model.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)


def test_amp_overflow_step_leaves_centres_and_model_unchanged():
    trainer = make_trainer(0.0005)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 126)
    model_before = [p.detach().clone() for p in trainer.model.parameters()]
    # d total / d body.weight ~ 10, times the scale 2^126: overflows float32 (inf); the centre
    # gradients (0.0005 x centre loss) stay finite
    before, after, _ = one_step(trainer, extra=10.0)
    assert trainer.scaler.get_scale() == 2.0 ** 125   # the scaler saw the overflow
    for p, q in zip(model_before, trainer.model.parameters()):
        assert torch.equal(p, q)
    assert torch.isfinite(after).all()
    assert torch.equal(after, before)
    # the next, finite step moves the centres by BoT's update again
    trainer.scaler = torch.amp.GradScaler("cpu")
    model_state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    before, after, _ = one_step(trainer)
    assert torch.allclose(after, expected_centres(model_state, before), rtol=1e-5, atol=1e-6)
