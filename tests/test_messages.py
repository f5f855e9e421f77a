"""Messages that say what is wrong (issue 13, items 6 and 10): weights_only refusals in our own
words, TorchScript text weights only when opted in, a text file passed as a weight, disk full,
dataset file names and folder names."""
import errno
import logging
import os

import pytest
import torch
import torch.nn as nn

import utils.checkpoint as ck
import utils.atomic as atomic
from configs import load_config
from datasets.bases import DatasetFormatError
from datasets.dukemtmc import load_dukemtmcreid
from datasets.market1501 import load_market1501
from datasets.msmt17 import load_msmt17
from datasets.veri import load_veri
from model.text_encoder import build_text_encoder
from test_datasets import make_duke, make_market, make_msmt17, make_veri, write_images
from utils.weights_io import WeightFileError, read_weights


class NeedsCode:
    """Unpickling an instance needs this class: weights_only refuses it."""


# ------------------------------------------------------------------ weights_only, in our words
def test_a_weights_only_refusal_never_advises_weights_only_false(tmp_path):
    path = str(tmp_path / "pickled.pth")
    torch.save({"model": {"w": torch.ones(2)}, "extra": NeedsCode()}, path)
    with pytest.raises(WeightFileError) as err:
        read_weights(path, key="MODEL.PRETRAIN_PATH")
    assert "NeedsCode" in str(err.value)            # what it needs, in our words
    with pytest.raises(RuntimeError) as loaded:
        ck.load_checkpoint(path)
    for message in (str(err.value), str(loaded.value)):
        assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert err.value.__cause__ is None              # torch's advice is not chained either


def test_a_corrupt_weight_file_message_has_no_torch_advice(tmp_path):
    path = str(tmp_path / "broken.pth")
    torch.save({"w": torch.ones(100)}, path)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match="cannot load checkpoint .*broken.pth") as err:
        ck.load_checkpoint(path)
    assert "weights_only=False" not in str(err.value)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_torchscript_text_weights_are_opt_in_and_logged(tmp_path):
    path = str(tmp_path / "openai.pt")
    torch.jit.save(torch.jit.script(nn.Linear(2, 3)), path)
    opts = ["MODEL.TEXT.TINY", "True", "MODEL.TEXT.PRETRAINED", path]
    assert load_config(opts=opts).MODEL.TEXT.ALLOW_TORCHSCRIPT is False   # the default
    with pytest.raises(WeightFileError, match=r"TorchScript archive.*set "
                                              r"MODEL.TEXT.ALLOW_TORCHSCRIPT True"):
        build_text_encoder(load_config(opts=opts))
    records = _Records()
    logging.getLogger("phasereid").addHandler(records)
    try:
        # read with torch.jit.load now; a Linear's weights then do not fit the text tower
        with pytest.raises(RuntimeError, match="text weights from .*openai.pt.* do not fit"):
            build_text_encoder(load_config(opts=opts + ["MODEL.TEXT.ALLOW_TORCHSCRIPT", "True"]))
    finally:
        logging.getLogger("phasereid").removeHandler(records)
    assert any("TorchScript archive" in m and "MODEL.TEXT.ALLOW_TORCHSCRIPT" in m
               for m in records.messages)


# ------------------------------------------------------------------ a text file as TEST.WEIGHT
def test_a_yaml_file_as_test_weight_says_what_it_is(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(load_config().dump())
    with pytest.raises(RuntimeError, match=r"config.yaml is a text file \(YAML\), not a weight "
                                           r"file"):
        ck.load_checkpoint(str(path))
    import test as test_script
    with pytest.raises(RuntimeError, match=r"is a text file \(YAML\), not a weight file"):
        test_script.main(["TEST.WEIGHT", str(path), "OUTPUT_DIR", str(tmp_path / "out")])
    notes = tmp_path / "notes.txt"
    notes.write_text("epoch 3 looked best\n")
    with pytest.raises(RuntimeError, match=r"notes.txt is a text file \(plain text\)"):
        ck.load_checkpoint(str(notes))


# ------------------------------------------------------------------ disk full
def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_names_the_path_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = str(tmp_path / "transformer_3.pth")
    monkeypatch.setattr(ck.torch, "save", _disk_full)
    with pytest.raises(OSError, match="no space left on device while writing .*transformer_3.pth") \
            as err:
        ck.atomic_torch_save({"w": torch.ones(1)}, path)
    assert err.value.errno == errno.ENOSPC
    assert os.listdir(str(tmp_path)) == []
    monkeypatch.setattr(atomic.os, "fsync", _disk_full)
    summary = str(tmp_path / "summary.json")
    with pytest.raises(OSError, match="no space left on device while writing .*summary.json"):
        atomic.atomic_write_text(summary, "{}")
    assert os.listdir(str(tmp_path)) == []


def test_other_write_errors_pass_through_unchanged(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(ck.torch, "save", denied)
    with pytest.raises(PermissionError, match="Permission denied"):
        ck.atomic_torch_save({"w": torch.ones(1)}, str(tmp_path / "a.pth"))


# ------------------------------------------------------------------ dataset file names
@pytest.mark.parametrize("name, what", [("0001-2_c2s2_000001_01.jpg", "pid '0001-2'"),
                                        ("00a1_c2s2_000001_01.jpg", "cannot parse")])
def test_a_market_name_with_a_bad_number_names_the_file(tmp_path, name, what):
    base = make_market(str(tmp_path), gallery_extra=(name,))
    with pytest.raises(DatasetFormatError, match=what) as err:
        load_market1501(str(tmp_path))
    assert os.path.join(base, "bounding_box_test", name) in str(err.value)


def test_a_veri_name_with_a_bad_number_names_the_file(tmp_path):
    base = make_veri(str(tmp_path))
    write_images(os.path.join(base, "image_test"), ["0002--1_c003_00001_0.jpg"])
    with pytest.raises(DatasetFormatError, match=r"pid '0002--1' in .*0002--1_c003_00001_0.jpg"):
        load_veri(str(tmp_path))


# ------------------------------------------------------------------ official folder names
def test_market_reads_the_release_folder_name(tmp_path):
    make_market(str(tmp_path), folder="Market-1501-v15.09.15")
    ds = load_market1501(str(tmp_path))
    assert len(ds.train) == 4 and "Market-1501-v15.09.15" in ds.info["folder"]


def test_market_reads_torchreids_nested_folder(tmp_path):
    make_market(str(tmp_path), folder=os.path.join("market1501", "Market-1501-v15.09.15"))
    ds = load_market1501(str(tmp_path))
    assert len(ds.train) == 4
    assert ds.info["folder"].endswith(os.path.join("market1501", "Market-1501-v15.09.15"))


def test_market_prefers_market1501_and_says_so(tmp_path):
    make_market(str(tmp_path))
    make_market(str(tmp_path), folder="Market-1501-v15.09.15")
    ds = load_market1501(str(tmp_path))
    assert "Market-1501-v15.09.15/ also present, not read" in ds.info["folder"]


def _make_veri_as(root, folder):
    make_veri(root)
    os.rename(os.path.join(root, "VeRi"), os.path.join(root, folder))


@pytest.mark.parametrize("loader, make, folder, target", [
    (load_market1501, make_market, "Market-1501", "market1501"),
    (load_dukemtmcreid, make_duke, "dukemtmc-reid-v2", "dukemtmcreid"),
    (load_veri, _make_veri_as, "veri", "VeRi"),
    (load_msmt17, make_msmt17, "MSMT17-V2", "MSMT17_V2"),
])
def test_a_near_folder_name_gets_the_exact_rename(tmp_path, loader, make, folder, target):
    make(str(tmp_path), folder)
    with pytest.raises(FileNotFoundError) as err:
        loader(str(tmp_path))
    src, dst = os.path.join(str(tmp_path), folder), os.path.join(str(tmp_path), target)
    assert f"mv '{src}' '{dst}'" in str(err.value)
