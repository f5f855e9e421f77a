"""train.py never resumes under another config silently (issue 13 item 2): resume.pth stores the
resolved config; identical training keys resume, a raised MAX_EPOCHS needs --allow-extend and is
recorded as a segment, anything else is refused before anything is written."""
import json
import os
import shutil

import pytest
import torch
import yaml

import train as train_script
from conftest import tiny_opts, tree_digest
from utils.checkpoint import load_checkpoint
from utils.run_files import list_checkpoints

# utils.provenance / utils.segments are imported inside the tests, so that on code without them
# each test fails on the behaviour it checks (ResumeRefused is a ValueError)
ResumeRefused = ValueError

ONE_EPOCH = {"SOLVER.MAX_EPOCHS": 1, "SOLVER.EVAL_PERIOD": 0}


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):
    """A finished 1-epoch run (copied by each test)."""
    out = str(tmp_path_factory.mktemp("trained") / "run")
    assert train_script.main(tiny_opts(synth_root, out, **ONE_EPOCH)) == 0
    return out


@pytest.fixture
def run_dir(trained, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(trained, out)
    return out


def test_resume_pth_stores_the_config_and_history_records_the_first_segment(run_dir):
    from utils.provenance import code_version, config_fingerprint
    stored = load_checkpoint(os.path.join(run_dir, "resume.pth"))["config"]
    assert stored == open(os.path.join(run_dir, "config.yaml")).read()
    history = json.load(open(os.path.join(run_dir, "history.json")))
    assert history["segments"] == [{
        "segment": 1, "first_epoch": 1, "last_epoch": 1,
        "config_sha256": config_fingerprint(stored), "config_file": "config.yaml",
        "changed_keys": {}, "command": history["segments"][0]["command"],
        "code": code_version()}]
    # the code that ran: this checkout's commit (tests run in a git checkout)
    assert len(history["segments"][0]["code"]["commit"]) == 40


@pytest.mark.parametrize("changes, named", [
    ({"SOLVER.BASE_LR": 0.05, "SOLVER.MAX_EPOCHS": 2},
     ["SOLVER.BASE_LR: 0.001 -> 0.05", "SOLVER.MAX_EPOCHS: 1 -> 2"]),
    ({"SOLVER.OPTIMIZER_NAME": "SGD", "SOLVER.MAX_EPOCHS": 2},
     ["SOLVER.OPTIMIZER_NAME: 'AdamW' -> 'SGD'"]),
])
def test_another_config_is_refused_before_anything_is_written(synth_root, run_dir, changes,
                                                               named):
    before = tree_digest(run_dir)
    opts = tiny_opts(synth_root, run_dir, **{**ONE_EPOCH, **changes})
    for argv in (opts, ["--allow-extend"] + opts):   # the flag allows extensions only
        with pytest.raises(ResumeRefused) as err:
            train_script.main(argv)
        from utils.segments import ResumeRefused as Refused
        assert isinstance(err.value, Refused)
        message = str(err.value)
        for line in named:
            assert line in message
        assert "another OUTPUT_DIR" in message and "resume.pth" in message
        assert tree_digest(run_dir) == before     # config.yaml, logs, checkpoints: all untouched


def test_raised_max_epochs_needs_allow_extend_and_is_recorded(synth_root, run_dir):
    from utils.provenance import config_fingerprint
    first_config = open(os.path.join(run_dir, "config.yaml")).read()
    opts = tiny_opts(synth_root, run_dir, **{**ONE_EPOCH, "SOLVER.MAX_EPOCHS": 2})
    before = tree_digest(run_dir)
    with pytest.raises(ResumeRefused, match="--allow-extend") as err:
        train_script.main(opts)
    assert "SOLVER.MAX_EPOCHS: 1 -> 2" in str(err.value) and "schedule" in str(err.value)
    assert tree_digest(run_dir) == before

    assert train_script.main(["--allow-extend"] + opts) == 0
    assert sorted(list_checkpoints(run_dir)) == [1, 2]
    assert open(os.path.join(run_dir, "config.yaml")).read() == first_config   # segment 1's
    segments = json.load(open(os.path.join(run_dir, "history.json")))["segments"]
    assert [(s["segment"], s["first_epoch"], s["last_epoch"]) for s in segments] == [
        (1, 1, 1), (2, 2, 2)]
    assert segments[1]["changed_keys"] == {"SOLVER.MAX_EPOCHS": [1, 2]}
    assert segments[1]["config_file"] == os.path.join("config_history", "segment_2.yaml")
    second = open(os.path.join(run_dir, segments[1]["config_file"])).read()
    assert yaml.safe_load(second)["SOLVER"]["MAX_EPOCHS"] == 2
    assert segments[1]["config_sha256"] == config_fingerprint(second)
    assert load_checkpoint(os.path.join(run_dir, "resume.pth"))["config"] == second
    log = open(os.path.join(run_dir, "train_log.txt")).read()
    assert "Continuing after epoch 1 under a changed config" in log

    # the same command again: identical to segment 2, complete, nothing to do or record
    before = tree_digest(run_dir)
    assert train_script.main(opts) == 0
    after = tree_digest(run_dir)
    assert {k: v for k, v in after.items() if k != "train_log.txt"} == {
        k: v for k, v in before.items() if k != "train_log.txt"}


def test_runtime_only_change_resumes_without_a_flag(synth_root, run_dir):
    assert train_script.main(["--allow-extend"] + tiny_opts(
        synth_root, run_dir, **{**ONE_EPOCH, "SOLVER.MAX_EPOCHS": 2})) == 0
    opts = tiny_opts(synth_root, run_dir, **{**ONE_EPOCH, "SOLVER.MAX_EPOCHS": 3,
                                             "TEST.DISTANCE": "cosine"})
    with pytest.raises(ResumeRefused, match="MAX_EPOCHS: 2 -> 3"):
        train_script.main(opts)   # compared with the last segment, not the first
    os.remove(os.path.join(run_dir, "transformer_2.pth"))
    resume = load_checkpoint(os.path.join(run_dir, "resume.pth"))
    torch.save({**resume, "epoch": 1}, os.path.join(run_dir, "resume.pth"))   # as if killed
    assert train_script.main(tiny_opts(synth_root, run_dir, **{
        **ONE_EPOCH, "SOLVER.MAX_EPOCHS": 2, "TEST.DISTANCE": "cosine",
        "SOLVER.CHECKPOINT_PERIOD": 5})) == 0
    assert os.path.isfile(os.path.join(run_dir, "transformer_2.pth"))
    log = open(os.path.join(run_dir, "train_log.txt")).read()
    assert "Runtime-only keys differ" in log and "TEST.DISTANCE: 'euclidean' -> 'cosine'" in log
    segments = json.load(open(os.path.join(run_dir, "history.json")))["segments"]
    assert len(segments) == 2   # no new segment: the weights' config did not change
    # the resume is recorded with the code that continued the run
    assert [r["from_epoch"] for r in segments[1]["resumes"]] == [2]
    assert len(segments[1]["resumes"][0]["code"]["commit"]) == 40


def test_resume_file_without_a_config_is_refused_unless_allowed(synth_root, run_dir):
    path = os.path.join(run_dir, "resume.pth")
    old = load_checkpoint(path)
    del old["config"]   # as written before resume files stored their config
    torch.save(old, path)
    os.remove(os.path.join(run_dir, "history.json"))
    opts = tiny_opts(synth_root, run_dir, **{**ONE_EPOCH, "SOLVER.MAX_EPOCHS": 2})
    before = tree_digest(run_dir)
    with pytest.raises(ResumeRefused, match="does not record the config"):
        train_script.main(opts)
    assert tree_digest(run_dir) == before
    assert train_script.main(["--allow-extend"] + opts) == 0
    segments = json.load(open(os.path.join(run_dir, "history.json")))["segments"]
    assert segments[0]["config_sha256"] is None and segments[0]["last_epoch"] == 1
    assert segments[0]["code"] is None   # not known for a segment trained before the record
    assert len(segments[1]["code"]["commit"]) == 40
    assert segments[1]["changed_keys"] == "unknown" and segments[1]["first_epoch"] == 2


def test_options_after_the_overrides_are_a_clear_error(synth_root, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_script.main(tiny_opts(synth_root, str(tmp_path / "x")) + ["--allow-extend"])
    assert "options go before the KEY VALUE overrides" in capsys.readouterr().err


# every runtime-only key, changed: the trained weights stay bit-identical
RUNTIME_CHANGES = {
    "OUTPUT_DIR": None,   # the two runs use different folders anyway
    "TEST.": {"TEST.IMS_PER_BATCH": 5, "TEST.NECK_FEAT": "after", "TEST.FEAT_NORM": False,
              "TEST.DISTANCE": "cosine", "TEST.RE_RANKING": True, "TEST.RE_RANKING_K1": 4,
              "TEST.RE_RANKING_K2": 2, "TEST.MAX_RANK": 5, "TEST.EVAL_BLOCK": 3,
              "TEST.VIS_QUERIES": 0},
    "SOLVER.EVAL_PERIOD": {"SOLVER.EVAL_PERIOD": 1},
    "SOLVER.CHECKPOINT_PERIOD": {"SOLVER.CHECKPOINT_PERIOD": 2},
    "MODEL.DIST_TIMEOUT_S": {"MODEL.DIST_TIMEOUT_S": 7},
    "DATALOADER.NUM_WORKERS": None,   # tests/test_worker_invariance.py: 0 vs 2 workers
    "DATALOADER.CACHE_IMAGES": {"DATALOADER.CACHE_IMAGES": True},
}


def test_runtime_only_keys_do_not_change_the_weights(synth_root, tmp_path):
    from utils.provenance import RUNTIME_ONLY
    assert set(RUNTIME_CHANGES) == set(RUNTIME_ONLY)   # a new entry needs its proof here
    changes = {k: v for group in RUNTIME_CHANGES.values() if group for k, v in group.items()}
    weights = []
    for name, extra in (("a", {"SOLVER.EVAL_PERIOD": 0}), ("b", changes)):
        out = str(tmp_path / name)
        assert train_script.main(tiny_opts(synth_root, out, **extra)) == 0
        weights.append(load_checkpoint(os.path.join(out, "transformer_2.pth"))["model"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
