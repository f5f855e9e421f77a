"""Checkpoint io: atomic writes, weights_only loading, RNG round trip, 'self' loading report."""
import os
import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from configs import load_config
from model.weights import load_model_weights
from utils import checkpoint as ck
from utils import run_files


def test_atomic_save_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "transformer_1.pth")
    ck.atomic_torch_save({"a": torch.ones(2)}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(OSError):
        ck.atomic_torch_save({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["transformer_1.pth"]  # no temp file left behind


def test_checkpoint_has_weights_and_metadata_and_loads_weights_only(tmp_path):
    cfg = load_config(opts=["SOLVER.MAX_EPOCHS", "3"])
    model = nn.Linear(3, 2)
    path = run_files.checkpoint_path(str(tmp_path), 2)
    ck.save_checkpoint(path, model, cfg, epoch=2, num_classes=5, num_cams=6, num_views=1)
    loaded = torch.load(path, weights_only=True)
    meta = ck.checkpoint_meta(loaded, path)
    assert meta["epoch"] == 2 and meta["num_classes"] == 5 and meta["num_cams"] == 6
    assert load_config(config_text=meta["config"]).SOLVER.MAX_EPOCHS == 3
    assert run_files.list_checkpoints(str(tmp_path)) == {2: path}
    with pytest.raises(ValueError, match="not a PhaseReID checkpoint"):
        ck.checkpoint_meta({"weight": torch.ones(1)}, "plain.pth")


def test_resume_state_round_trip_restores_rng(tmp_path):
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()

    class Sched:
        def state_dict(self):
            return {"last_epoch": 4}

    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    cfg_text = load_config(opts=["SOLVER.MAX_EPOCHS", "7"]).dump()
    ck.save_resume_state(str(tmp_path), 4, model, {"model": opt}, Sched(), None, {"k": 8},
                         config=cfg_text)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    state = ck.load_resume_state(str(tmp_path))  # weights_only load
    assert state["epoch"] == 4 and state["extra"] == {"k": 8}
    assert state["config"] == cfg_text   # the config it was trained with
    ck.set_rng_state(state["rng"])
    got = (random.random(), np.random.rand(), torch.rand(1))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(state["optimizers"]["model"])
    assert ck.load_resume_state(str(tmp_path / "none")) is None
    with pytest.raises(TypeError, match="resolved config"):
        ck.save_resume_state(str(tmp_path), 4, model, {"model": opt}, Sched(), None, config="")


def test_load_model_weights_reports_shape_mismatch(tmp_path):
    cfg = load_config()
    src = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5))
    path = str(tmp_path / "transformer_1.pth")
    ck.save_checkpoint(path, src, cfg, 1, 5, 1, 1)
    dst = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 7))
    report = load_model_weights(dst, path)
    assert torch.equal(dst[0].weight, src[0].weight)
    assert report.mismatched == ["1.bias", "1.weight"]
    assert "shape mismatch" in str(report)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "transformer_3.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="transformer_3.pth"):
        ck.load_checkpoint(str(path))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ck.load_checkpoint(str(tmp_path / "missing.pth"))
