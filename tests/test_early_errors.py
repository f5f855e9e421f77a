"""Errors arrive before the work (issue 13, item 4): unreadable test images stop the run before
epoch 1, and an epoch's checkpoint and resume.pth are written before it is evaluated."""
import os
import shutil

import pytest

import processor.processor as proc
import train as train_script
from conftest import tiny_opts
from datasets.bases import Record


def _copy_synth(synth_root, tmp_path):
    root = str(tmp_path / "data")
    shutil.copytree(synth_root, root)
    return root


def _a_query_image(root):
    query = next(os.path.join(d, "query") for d, subdirs, _ in os.walk(root) if "query" in subdirs)
    return os.path.join(query, sorted(os.listdir(query))[0])


def test_check_images_readable_names_the_first_bad_file(synth_root, tmp_path):
    from datasets.make_dataloader import check_images_readable

    root = _copy_synth(synth_root, tmp_path)
    good = _a_query_image(root)
    bad = str(tmp_path / "0001_c1s1_000001_00.jpg")
    with open(good, "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(b"\0" * len(data))
    records = [Record(good, 1, 0), Record(bad, 1, 0), Record(str(tmp_path / "missing.jpg"), 1, 0)]
    with pytest.raises(OSError, match=r"2 of the 3 test images cannot be read, first: .*"
                                      r"0001_c1s1_000001_00.jpg"):
        check_images_readable(records)
    check_images_readable(records[:1])


def test_a_corrupt_query_image_stops_training_before_epoch_1(synth_root, tmp_path, monkeypatch):
    root = _copy_synth(synth_root, tmp_path)
    image = _a_query_image(root)
    with open(image, "wb") as f:
        f.write(b"this is not a jpeg")
    trained = []
    real_epoch = proc.Trainer.train_epoch

    def spy(self, epoch, state):
        trained.append(epoch)
        return real_epoch(self, epoch, state)

    monkeypatch.setattr(proc.Trainer, "train_epoch", spy)
    out = str(tmp_path / "run")
    with pytest.raises(OSError, match=os.path.basename(image)):
        train_script.main(tiny_opts(root, out, **{"SOLVER.MAX_EPOCHS": 1}))
    assert trained == []
    assert not os.path.exists(os.path.join(out, "resume.pth"))


def test_a_failing_evaluation_leaves_the_epochs_checkpoint_and_resume_state(synth_root, tmp_path,
                                                                         monkeypatch):
    def evaluation_fails(*args, **kwargs):
        raise OSError("cannot read image query/0001.jpg (corrupted after training started)")

    monkeypatch.setattr(proc, "do_inference", evaluation_fails)
    out = str(tmp_path / "run")
    with pytest.raises(OSError, match="corrupted after training started"):
        train_script.main(tiny_opts(synth_root, out, **{"SOLVER.MAX_EPOCHS": 1}))
    assert os.path.isfile(os.path.join(out, "transformer_1.pth"))
    assert os.path.isfile(os.path.join(out, "resume.pth"))
