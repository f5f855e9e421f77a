"""A crash's traceback reaches train_log.txt / test_log.txt (issue 13 item 8, train/test part)."""
import os

import pytest

import processor.processor as proc
import test as test_script
import train as train_script
from conftest import tiny_opts


def test_training_crash_is_written_to_train_log(synth_root, tmp_path, monkeypatch, capsys):
    def crash(self, epoch, *args, **kwargs):
        raise RuntimeError(f"simulated crash in epoch {epoch}")

    monkeypatch.setattr(proc.Trainer, "train_epoch", crash)
    out = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="simulated crash in epoch 1"):
        train_script.main(tiny_opts(synth_root, out, **{"SOLVER.MAX_EPOCHS": 1}))
    log = open(os.path.join(out, "train_log.txt")).read()
    assert "Stopped by RuntimeError: simulated crash in epoch 1" in log
    assert "Traceback (most recent call last)" in log and "in crash" in log
    assert "Traceback" not in capsys.readouterr().out   # the console gets it once, on stderr


def test_evaluation_crash_is_written_to_test_log(synth_root, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    train_script.main(tiny_opts(synth_root, out, **{"SOLVER.MAX_EPOCHS": 1,
                                                    "SOLVER.EVAL_PERIOD": 0}))

    def crash(*args, **kwargs):
        raise ValueError("simulated corrupt query image")

    monkeypatch.setattr(test_script, "evaluate_model", crash)
    result = str(tmp_path / "test")
    with pytest.raises(ValueError, match="simulated corrupt query image"):
        test_script.main(["TEST.WEIGHT", os.path.join(out, "transformer_1.pth"),
                          "OUTPUT_DIR", result])
    log = open(os.path.join(result, "test_log.txt")).read()
    assert "Stopped by ValueError: simulated corrupt query image" in log
    assert "Traceback (most recent call last)" in log
    assert not os.path.exists(os.path.join(result, "summary.json"))


def test_a_clean_run_logs_no_crash(synth_root, tmp_path):
    out = str(tmp_path / "run")
    train_script.main(tiny_opts(synth_root, out, **{"SOLVER.MAX_EPOCHS": 1,
                                                    "SOLVER.EVAL_PERIOD": 0}))
    assert "Stopped by" not in open(os.path.join(out, "train_log.txt")).read()
