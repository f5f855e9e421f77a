"""End to end on CPU with a tiny ViT and the tiny SynthPedes: train.py, resume, test.py."""
import json
import os

import pytest
import torch

import processor.processor as proc
import test as test_script
import train as train_script
from conftest import tiny_opts
from utils.checkpoint import load_checkpoint
from utils.run_files import list_checkpoints


@pytest.fixture
def record_losses(monkeypatch):
    """Record (epoch, iteration, total loss) of every training step."""
    seen = []
    original = proc.check_finite

    def spy(total, parts, epoch, iteration):
        seen.append((epoch, iteration, total.item()))
        return original(total, parts, epoch, iteration)

    monkeypatch.setattr(proc, "check_finite", spy)
    return seen


def first_loss_of(seen, epoch):
    return next(loss for e, it, loss in seen if e == epoch and it == 1)


@pytest.mark.slow
def test_resume_gives_the_same_epoch_3_as_an_uninterrupted_run(synth_root, tmp_path,
                                                              record_losses, monkeypatch):
    straight = str(tmp_path / "straight")
    assert train_script.main(["--config_file", ""] + tiny_opts(
        synth_root, straight, **{"SOLVER.MAX_EPOCHS": 3})) == 0
    uninterrupted = first_loss_of(record_losses, 3)
    record_losses.clear()

    resumed = str(tmp_path / "resumed")
    real_epoch = proc.Trainer.train_epoch

    def killed_in_epoch_3(self, epoch, *args, **kwargs):
        if epoch == 3:
            raise KeyboardInterrupt("killed")
        return real_epoch(self, epoch, *args, **kwargs)

    monkeypatch.setattr(proc.Trainer, "train_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_script.main(tiny_opts(synth_root, resumed, **{"SOLVER.MAX_EPOCHS": 3}))
    monkeypatch.setattr(proc.Trainer, "train_epoch", real_epoch)
    assert not any(e == 3 for e, _, _ in record_losses)
    record_losses.clear()
    train_script.main(tiny_opts(synth_root, resumed, **{"SOLVER.MAX_EPOCHS": 3}))
    assert {e for e, _, _ in record_losses} == {3}  # epochs 1-2 were not retrained
    assert first_loss_of(record_losses, 3) == pytest.approx(uninterrupted, abs=1e-6)
    a = load_checkpoint(os.path.join(straight, "transformer_3.pth"))["model"]
    b = load_checkpoint(os.path.join(resumed, "transformer_3.pth"))["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    # a finished run does nothing when started again
    record_losses.clear()
    train_script.main(tiny_opts(synth_root, resumed, **{"SOLVER.MAX_EPOCHS": 3}))
    assert record_losses == []


def test_outputs_of_a_run(synth_root, tmp_path):
    out = str(tmp_path / "run")
    train_script.main(tiny_opts(synth_root, out, **{"SOLVER.MAX_EPOCHS": 3,
                                                    "SOLVER.CHECKPOINT_PERIOD": 2,
                                                    "SOLVER.EVAL_PERIOD": 2}))
    assert sorted(list_checkpoints(out)) == [2, 3]  # every period and the last epoch
    for name in ("config.yaml", "train_log.txt", "resume.pth"):
        assert os.path.isfile(os.path.join(out, name)), name
    log = open(os.path.join(out, "train_log.txt")).read()
    assert "Epoch 1/3 | phase A" in log and " id " in log and " triplet " in log
    assert "img/s" in log and "mAP" in log
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(os.path.join(out, "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/id", "train/triplet", "train/lr", "train/images_per_s",
            "eval/mAP", "eval/R1"} <= tags
    assert [e.step for e in events.Scalars("eval/mAP")] == [2, 3]  # every period and the last
    meta = load_checkpoint(os.path.join(out, "transformer_3.pth"))["meta"]
    assert meta["epoch"] == 3 and meta["num_classes"] == 8 and "SOLVER" in meta["config"]


def test_evaluation_does_not_change_training(synth_root, tmp_path):
    # iterating the test loader draws from torch's RNG; evaluate() must give it back
    runs = {}
    for period in (1, 0):
        out = str(tmp_path / f"eval{period}")
        train_script.main(tiny_opts(synth_root, out, **{"SOLVER.EVAL_PERIOD": period}))
        runs[period] = load_checkpoint(os.path.join(out, "transformer_2.pth"))["model"]
    assert all(torch.equal(runs[1][k], runs[0][k]) for k in runs[0])


def test_eval_period_zero_never_evaluates(synth_root, tmp_path):
    out = str(tmp_path / "noeval")
    train_script.main(tiny_opts(synth_root, out, **{"SOLVER.MAX_EPOCHS": 1,
                                                    "SOLVER.EVAL_PERIOD": 0}))
    assert "Evaluation" not in open(os.path.join(out, "train_log.txt")).read()


def test_non_finite_loss_names_the_component_and_keeps_checkpoints(synth_root, tmp_path,
                                                                   monkeypatch):
    out = str(tmp_path / "nan")
    train_script.main(tiny_opts(synth_root, out, **{"SOLVER.MAX_EPOCHS": 1}))
    ckpt = os.path.join(out, "transformer_1.pth")
    before = open(ckpt, "rb").read()
    import losses.make_loss as ml
    real = ml.triplet_loss
    monkeypatch.setattr(ml, "triplet_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(FloatingPointError, match="'triplet'"):
        train_script.main(["--allow-extend"] + tiny_opts(synth_root, out,
                                                         **{"SOLVER.MAX_EPOCHS": 2}))
    assert open(ckpt, "rb").read() == before
    assert not os.path.exists(os.path.join(out, "transformer_2.pth"))
    assert load_checkpoint(os.path.join(out, "resume.pth"))["epoch"] == 1


def test_test_py_with_the_checkpoint_alone(synth_root, tmp_path):
    out = str(tmp_path / "run")
    train_script.main(tiny_opts(synth_root, out, **{"SOLVER.MAX_EPOCHS": 1}))
    weight = os.path.join(out, "transformer_1.pth")
    assert test_script.main(["TEST.WEIGHT", weight, "TEST.EXPORT_FEATURES", "True"]) == 0
    result_dir = os.path.join(out, "test_transformer_1")
    summary = json.load(open(os.path.join(result_dir, "summary.json")))
    assert set(summary["metrics"]) >= {"R1", "R5", "R10", "mAP", "mINP", "num_valid"}
    assert summary["epoch"] == 1 and summary["dataset"] == "synth"
    assert summary["re_ranking"] == "none" and summary["feat_norm"] is True
    assert os.path.isfile(os.path.join(result_dir, "ranked_list.png"))
    assert os.path.isfile(os.path.join(result_dir, "features.npz"))
    assert "mINP" in open(os.path.join(result_dir, "test_log.txt")).read()
    # with a config file, overrides (re-ranking) reach the evaluation and the summary
    cfg_file = os.path.join(out, "config.yaml")
    other = str(tmp_path / "rr")
    assert test_script.main(["--config_file", cfg_file, "TEST.WEIGHT", weight, "OUTPUT_DIR", other,
                             "TEST.RE_RANKING", "True", "TEST.RE_RANKING_K1", "5",
                             "TEST.RE_RANKING_K2", "2"]) == 0
    summary = json.load(open(os.path.join(other, "summary.json")))
    assert "k1=5" in summary["re_ranking"]


def test_failed_test_leaves_no_summary(synth_root, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    train_script.main(tiny_opts(synth_root, out, **{"SOLVER.MAX_EPOCHS": 1}))
    weight = os.path.join(out, "transformer_1.pth")
    assert test_script.main(["TEST.WEIGHT", weight]) == 0
    summary = os.path.join(out, "test_transformer_1", "summary.json")
    assert os.path.isfile(summary)

    def crash(*args, **kwargs):
        raise RuntimeError("killed midway")

    monkeypatch.setattr(test_script, "evaluate_model", crash)
    with pytest.raises(RuntimeError, match="killed midway"):
        test_script.main(["TEST.WEIGHT", weight])
    assert not os.path.exists(summary)  # the stale summary of the earlier test is gone too


def test_unknown_camera_is_a_clear_error(synth_root, tmp_path):
    out = str(tmp_path / "run")
    train_script.main(tiny_opts(synth_root, out, **{"SOLVER.MAX_EPOCHS": 1}))
    meta = load_checkpoint(os.path.join(out, "transformer_1.pth"))["meta"]
    from configs import load_config
    from model.make_model import make_model
    cfg = load_config(config_text=meta["config"])
    model = make_model(cfg, meta["num_classes"], 2, meta["num_views"]).eval()  # 2 cameras
    with pytest.raises(ValueError, match="camera"):
        model({"img": torch.zeros(1, 3, 64, 32), "camid": torch.tensor([5]),
               "viewid": torch.tensor([0])})


def test_test_py_evaluates_a_plain_transreid_checkpoint(synth_root, tmp_path):
    """A TransReID-style full-model state dict (base./bottleneck/classifier keys) is evaluated
    with --config_file, with backbone and heads mapped."""
    out = str(tmp_path / "run")
    train_script.main(tiny_opts(synth_root, out, **{"SOLVER.MAX_EPOCHS": 1}))
    ours = load_checkpoint(os.path.join(out, "transformer_1.pth"))["model"]
    plain = {}
    for key, value in ours.items():
        if key.startswith("backbone."):
            plain["base." + key[len("backbone."):]] = value
        elif key.startswith("head.bn."):
            plain["bottleneck." + key[len("head.bn."):]] = value
        elif key.startswith("head.classifier."):
            plain["classifier." + key[len("head.classifier."):]] = value
    weight = str(tmp_path / "transreid_style.pth")
    torch.save(plain, weight)
    res_plain, res_ours = str(tmp_path / "plain"), str(tmp_path / "ours")
    cfg_file = os.path.join(out, "config.yaml")
    for w, d in ((weight, res_plain), (os.path.join(out, "transformer_1.pth"), res_ours)):
        assert test_script.main(["--config_file", cfg_file, "TEST.WEIGHT", w, "OUTPUT_DIR", d,
                                 "TEST.NECK_FEAT", "after"]) == 0
    a = json.load(open(os.path.join(res_plain, "summary.json")))["metrics"]
    b = json.load(open(os.path.join(res_ours, "summary.json")))["metrics"]
    assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-6)
    assert "heads loaded" in open(os.path.join(res_plain, "test_log.txt")).read()


def test_gradient_clipping_is_applied_when_configured(synth_root, tmp_path, monkeypatch):
    calls = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        calls.append(max_norm)
        return real(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    train_script.main(tiny_opts(synth_root, str(tmp_path / "clip"), **{
        "SOLVER.MAX_EPOCHS": 1, "SOLVER.EVAL_PERIOD": 0}))
    assert calls == []
    train_script.main(tiny_opts(synth_root, str(tmp_path / "clip2"), **{
        "SOLVER.MAX_EPOCHS": 1, "SOLVER.EVAL_PERIOD": 0, "SOLVER.GRAD_CLIP": 0.5}))
    assert calls and set(calls) == {0.5}
