"""Phase-scheduled training end to end on CPU (tiny ViT, tiny SynthPedes): the plan drives the
losses, K (loader rebuilt only when K changes), routing and freezing, and everything is logged."""
import json
import os

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import processor.processor as proc
import test as test_script
import train as train_script
from conftest import tiny_opts
from utils.checkpoint import load_checkpoint

PHASED = {
    "MODEL.JPM": "True", "MODEL.SHIFT_NUM": "2",
    "SOLVER.MAX_EPOCHS": "3", "SOLVER.EVAL_PERIOD": "0", "SOLVER.CHECKPOINT_PERIOD": "3",
    "LOSS.NAMES": "['id']",
    "LOSS.PHASED.ENABLE": "True", "LOSS.PHASED.BOUNDARIES": "[1, 2]",
    "LOSS.PHASED.METRIC_SEQ": "['triplet', 'tripletx', 'routed']",
    "LOSS.PHASED.W_METRIC_SEQ": "[1.0, 1.2, 1.0]",
    "LOSS.PHASED.W_SUP_SPEC": "['const:0.0', 'const:0.3', 'const:0.3']",
    "LOSS.TRIPLETX.ENABLE": "True", "LOSS.SUPCON.ENABLE": "True", "LOSS.SUPCON.CAM_AWARE": "True",
    "LOSS.SUPCON.PROJ_HIDDEN": "32", "LOSS.SUPCON.PROJ_DIM": "16",
    "LOSS.BRIGHTNESS.ENABLE": "True",
    "DATALOADER.PHASED.ENABLE": "True", "DATALOADER.PHASED.K_WHEN_TRIPLETX": "8",
    "DATALOADER.PHASED.K_WHEN_SUPCON": "8", "DATALOADER.PHASED.K_OTHER": "4",
}


def scalars(out, tag):
    events = EventAccumulator(os.path.join(out, "tb"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_phase_plan_drives_losses_k_routing_and_logs(synth_root, tmp_path, monkeypatch):
    builds, batches = [], []
    real_build = proc.build_train_loader

    def counting_build(cfg, train_set, num_instances):
        builds.append(num_instances)
        return real_build(cfg, train_set, num_instances)

    real_check = proc.check_finite

    def spy(total, parts, epoch, iteration):
        batches.append((epoch, set(parts)))
        return real_check(total, parts, epoch, iteration)

    monkeypatch.setattr(proc, "build_train_loader", counting_build)
    monkeypatch.setattr(proc, "check_finite", spy)
    out = str(tmp_path / "phased")
    train_script.main(tiny_opts(synth_root, out, **PHASED))
    assert builds == [4, 8]   # rebuilt once, when K changed (epoch 2), not at epoch 3
    parts = {e: set.union(*[p for ep, p in batches if ep == e]) for e in (1, 2, 3)}
    assert parts[1] == {"id", "triplet"}
    assert parts[2] == {"id", "tripletx", "supcon"}
    assert {"id", "supcon", "dark_share"} <= parts[3] and "triplet" in parts[3]
    assert [v for _, v in scalars(out, "phase/K")] == [4, 8, 8]
    assert [v for _, v in scalars(out, "phase/index")] == [0, 1, 2]
    assert [round(v, 3) for _, v in scalars(out, "weight/supcon")] == [0.0, 0.3, 0.3]
    assert [round(v, 3) for _, v in scalars(out, "weight/tripletx")] == [0.0, 1.2, 1.0]
    assert [v for _, v in scalars(out, "phase/routing")] == [0.0, 0.0, 1.0]
    assert len(scalars(out, "train/dark_share")) == 1
    log = open(os.path.join(out, "train_log.txt")).read()
    assert "Phase plan (LOSS.PHASED" in log
    assert "phase B (tripletx) K 8" in log and "phase C (routed) K 8" in log
    weight = os.path.join(out, "transformer_3.pth")
    model = load_checkpoint(weight)["model"]
    # the SupCon head is training-only: left out of the checkpoint (resume.pth keeps it), and
    # testing with or without it gives the same features
    assert not any(k.startswith("projection.") for k in model)
    assert any(k.startswith("projection.") for k in load_checkpoint(
        os.path.join(out, "resume.pth"))["model"])
    summaries = []
    for extra in ([], ["LOSS.SUPCON.ENABLE", "False"]):
        test_dir = str(tmp_path / f"test{len(extra)}")
        assert test_script.main(["TEST.WEIGHT", weight, "OUTPUT_DIR", test_dir, *extra]) == 0
        with open(os.path.join(test_dir, "summary.json")) as f:
            summaries.append(json.load(f)["metrics"])
    assert summaries[0] == summaries[1]
    with pytest.raises(RuntimeError, match="does not match"):
        test_script.main(["TEST.WEIGHT", weight, "OUTPUT_DIR", str(tmp_path / "bad"),
                          "MODEL.JPM", "False"])


def test_freeze_seq_keeps_frozen_weights(synth_root, tmp_path, monkeypatch):
    snapshots = {}
    real_run = proc.Trainer.run

    def run(self, start_epoch):
        snapshots["init"] = {k: v.clone() for k, v in proc.unwrap(self.model).state_dict().items()}
        return real_run(self, start_epoch)

    monkeypatch.setattr(proc.Trainer, "run", run)
    out = str(tmp_path / "frozen")
    train_script.main(tiny_opts(synth_root, out, **{
        "SOLVER.MAX_EPOCHS": "2", "SOLVER.EVAL_PERIOD": "0", "LOSS.PHASED.ENABLE": "True",
        "LOSS.PHASED.BOUNDARIES": "[1]", "LOSS.PHASED.METRIC_SEQ": "['triplet', 'triplet']",
        "LOSS.PHASED.W_METRIC_SEQ": "[1.0, 1.0]", "LOSS.PHASED.W_SUP_SPEC": "['const:0', 'const:0']",
        "LOSS.PHASED.FREEZE_SEQ": "['backbone', '']"}))
    init = snapshots["init"]
    first = load_checkpoint(os.path.join(out, "transformer_1.pth"))["model"]
    second = load_checkpoint(os.path.join(out, "transformer_2.pth"))["model"]
    backbone = [k for k in init if k.startswith("backbone.")]
    assert backbone and all(torch.equal(first[k], init[k]) for k in backbone)
    assert not torch.equal(first["head.classifier.weight"], init["head.classifier.weight"])
    assert any(not torch.equal(second[k], first[k]) for k in backbone)   # phase B trains it
