"""Train/test camera (view) mismatch: test ids that no training image has leave their SIE rows
untrained; train.py and test.py warn naming them, and test.py records them in summary.json."""
import json
import os

import pytest

import datasets.make_dataloader as mdl
import test as test_script
import train as train_script
from configs import load_config
from conftest import tiny_opts
from datasets.bases import Record, ReIDDataset, relabel_pids
from model.make_model import make_model
from utils.checkpoint import save_checkpoint
from utils.run_files import checkpoint_path


def _record(pid, camid, viewid=0):
    return Record(path=f"/nowhere/{pid}_{camid}_{viewid}.jpg", pid=pid, camid=camid, viewid=viewid)


def test_unseen_test_ids_lists_cameras_and_views_absent_from_training():
    from datasets.bases import unseen_test_ids
    train = [_record(0, 0, 0), _record(0, 2, 1), _record(1, 2, 0)]
    query = [_record(7, 3, 0), _record(8, 0, 2)]
    gallery = [_record(7, 5, 0), _record(8, 2, 1), _record(0, 0, 0)]
    ds = ReIDDataset("fake", train, query, gallery)
    assert unseen_test_ids(ds) == {"camera": [3, 5], "view": [2]}
    covered = ReIDDataset("fake", train, [_record(7, 2, 1)], [_record(7, 0, 0)])
    assert unseen_test_ids(covered) == {"camera": [], "view": []}


@pytest.fixture
def train_without_last_camera(monkeypatch):
    """The tiny SynthPedes with every training image of its highest test camera removed."""
    real = mdl.build_dataset
    dropped = {}

    def build(cfg):
        ds = real(cfg)
        camid = max(r.camid for r in ds.test)
        assert any(r.camid == camid for r in ds.train)   # the real split covers it
        dropped["camid"] = camid
        train = relabel_pids([r for r in ds.train if r.camid != camid])
        return ReIDDataset(ds.name, train, ds.query, ds.gallery, info=ds.info)

    monkeypatch.setattr(mdl, "build_dataset", build)
    return dropped


def test_train_py_warns_about_test_cameras_absent_from_training(synth_root, tmp_path,
                                                                train_without_last_camera):
    out = str(tmp_path / "run")
    assert train_script.main(tiny_opts(synth_root, out, **{"SOLVER.MAX_EPOCHS": 1,
                                                           "SOLVER.EVAL_PERIOD": 0})) == 0
    camid = train_without_last_camera["camid"]
    log = open(os.path.join(out, "train_log.txt")).read()
    assert f"test camera id(s) [{camid}] never occur in the training split" in log
    assert "MODEL.SIE_CAMERA" in log and "WARNING" in log
    # without SIE there is no untrained row, so no warning
    quiet = str(tmp_path / "nosie")
    train_script.main(tiny_opts(synth_root, quiet, **{"SOLVER.MAX_EPOCHS": 1,
                                                      "SOLVER.EVAL_PERIOD": 0,
                                                      "MODEL.SIE_CAMERA": False}))
    assert "never occur in the training split" not in open(
        os.path.join(quiet, "train_log.txt")).read()


def _untrained_checkpoint(synth_root, tmp_path):
    opts = tiny_opts(synth_root, str(tmp_path / "ckpt"), **{"MODEL.SIE_VIEW": True})
    cfg = load_config(opts=opts)
    ds = mdl.build_dataset(cfg)
    model = make_model(cfg, ds.num_train_pids, ds.num_cams, ds.num_views)
    path = checkpoint_path(str(tmp_path / "ckpt"), 1)
    save_checkpoint(path, model, cfg, 1, ds.num_train_pids, ds.num_cams, ds.num_views)
    return path


def test_test_py_warns_and_records_unseen_ids_in_the_summary(synth_root, tmp_path, monkeypatch):
    weight = _untrained_checkpoint(synth_root, tmp_path)
    assert test_script.main(["TEST.WEIGHT", weight, "OUTPUT_DIR", str(tmp_path / "full")]) == 0
    summary = json.load(open(tmp_path / "full" / "summary.json"))
    assert summary["unseen_test_cameras"] == [] and summary["unseen_test_views"] == []

    real = mdl.build_dataset

    def train_without(cfg):
        ds = real(cfg)
        train = relabel_pids([r for r in ds.train if r.camid != 5 and r.viewid != 2])
        return ReIDDataset(ds.name, train, ds.query, ds.gallery, info=ds.info)

    monkeypatch.setattr(mdl, "build_dataset", train_without)
    out = tmp_path / "mismatch"
    assert test_script.main(["TEST.WEIGHT", weight, "OUTPUT_DIR", str(out)]) == 0
    summary = json.load(open(out / "summary.json"))
    assert summary["unseen_test_cameras"] == [5] and summary["unseen_test_views"] == [2]
    log = open(out / "test_log.txt").read()
    assert "test camera id(s) [5] never occur" in log and "MODEL.SIE_CAMERA" in log
    assert "test view id(s) [2] never occur" in log and "MODEL.SIE_VIEW" in log
