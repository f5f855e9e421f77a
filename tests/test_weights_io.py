"""The one weight reader (utils/weights_io.py) and the model-side loaders (model/weights.py)."""
import logging
import math
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.weights import TRAINING_ONLY_PREFIXES, load_for_test
from utils.checkpoint import load_checkpoint
from utils.packages import import_open_clip
from utils.weights_io import (LoadReport, OpenClipPretrained, WeightFileError,
                              is_torchscript_archive, read_weights, resize_pos_embed, unwrap)


class NotWeights:
    """A pickled object of this class needs code to unpickle: weights_only refuses it."""

    def __init__(self):
        self.value = 3


def tensors():
    torch.manual_seed(0)
    return {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3)}


# ----------------------------------------------------------------------------- reading files
def test_torch_file_is_read_weights_only(tmp_path):
    path = str(tmp_path / "w.pth")
    torch.save(tensors(), path)
    obj, description = read_weights(path)
    assert description == path and obj.keys() == tensors().keys()
    assert all(torch.equal(obj[k], v) for k, v in tensors().items())
    assert not is_torchscript_archive(path)


def test_a_file_that_needs_code_is_a_clear_error(tmp_path):
    path = str(tmp_path / "pickled.pth")
    torch.save({"state_dict": tensors(), "extra": NotWeights()}, path)
    with pytest.raises(WeightFileError, match=r"(?s)MODEL.PRETRAIN_PATH: cannot read weight "
                                              r"file .*pickled.pth.*weights_only=True.*never "
                                              r"runs code") as err:
        read_weights(path, key="MODEL.PRETRAIN_PATH")
    assert err.value.path == path
    with pytest.raises(RuntimeError, match=r"(?s)cannot load checkpoint .*pickled.pth: it holds "
                                           r"Python objects"):
        load_checkpoint(path)


def test_missing_corrupt_and_jax_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.pth.*MODEL.TEXT.PRETRAINED"):
        read_weights(str(tmp_path / "nope.pth"), key="MODEL.TEXT.PRETRAINED")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a weight file")
    with pytest.raises(WeightFileError, match="bad.pth"):
        read_weights(str(bad))
    npz = tmp_path / "vit.npz"
    npz.write_bytes(b"PK")
    with pytest.raises(WeightFileError, match="JAX .npz"):
        read_weights(str(npz))


def test_safetensors_file(tmp_path, monkeypatch):
    save_file = pytest.importorskip("safetensors.torch").save_file
    path = str(tmp_path / "w.safetensors")
    save_file(tensors(), path)
    obj, _ = read_weights(path)
    assert all(torch.equal(obj[k], v) for k, v in tensors().items())
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)   # the package is not installed
    with pytest.raises(ImportError, match="needs the safetensors package: pip install "
                                          "safetensors"):
        read_weights(path)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_torchscript_archive_only_where_allowed(tmp_path):
    torch.manual_seed(0)
    net = nn.Linear(2, 3)
    path = str(tmp_path / "openai.pt")
    torch.jit.save(torch.jit.script(net), path)
    assert is_torchscript_archive(path)
    obj, _ = read_weights(path, allow_torchscript=True)
    assert obj.keys() == net.state_dict().keys()
    assert all(torch.equal(obj[k], v) for k, v in net.state_dict().items())
    with pytest.raises(WeightFileError, match="TorchScript archive"):
        read_weights(path)
    with pytest.raises(RuntimeError, match="cannot load checkpoint .*TorchScript"):
        load_checkpoint(path)


def test_load_checkpoint_can_memory_map(tmp_path):
    path = str(tmp_path / "resume.pth")
    torch.save({"epoch": 7, "model": tensors()}, path)
    assert load_checkpoint(path, mmap=True)["epoch"] == 7


def test_open_clip_tag_offline_names_the_key(monkeypatch):
    open_clip = import_open_clip("this test")

    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(RuntimeError, match=r"MODEL.TEXT.PRETRAINED 'openai' of 'ViT-B-16' could "
                                           r"not be loaded \(Failed to download\).*local weight"):
        read_weights(OpenClipPretrained("ViT-B-16", "openai"), key="MODEL.TEXT.PRETRAINED")


def test_missing_open_clip_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(ImportError) as err:
        import_open_clip("the caption tokenizer")
    assert str(err.value) == ("the caption tokenizer needs the open_clip package: pip install "
                              "open-clip-torch")


# ----------------------------------------------------------------------------- unwrap
@pytest.mark.parametrize("wrap", [
    lambda s: s,
    lambda s: {"model": s, "meta": {"epoch": 3}},
    lambda s: {"state_dict": s, "epoch": 3},
    lambda s: {"model": {"state_dict": s}},
    lambda s: {"state_dict": {"model": s}}])
def test_unwrap_wrappers_prefix_and_non_tensors(wrap):
    state = {f"module.{k}": v for k, v in tensors().items()}
    state["n_averaged"] = 5
    report = LoadReport(source="w.pth")
    out = unwrap(wrap(state), report)
    assert out.keys() == tensors().keys()
    assert report.skipped == [("n_averaged", "not a tensor")]
    assert "stripped the 'module.' prefix from 2 keys" in report.notes
    assert unwrap(wrap(dict(tensors()))).keys() == tensors().keys()   # no report needed


def test_unwrap_refuses_what_is_not_a_state_dict():
    with pytest.raises(WeightFileError, match=r"w.pth: it does not hold a state dict .* list"):
        unwrap([torch.zeros(1)], LoadReport(source="w.pth"))


# ----------------------------------------------------------------------------- resize
def bilinear_reference(grid, out_h, out_w):
    """Bilinear resize of (H, W, C) with half-pixel centres (align_corners False) as a loop."""
    in_h, in_w, _ = grid.shape

    def taps(out_i, out_n, in_n):
        src = max((out_i + 0.5) * in_n / out_n - 0.5, 0.0)
        i0 = int(math.floor(src))
        i1 = i0 + 1 if i0 < in_n - 1 else i0
        return i0, i1, src - i0

    out = torch.zeros(out_h, out_w, grid.shape[2], dtype=torch.float64)
    for y in range(out_h):
        y0, y1, wy = taps(y, out_h, in_h)
        for x in range(out_w):
            x0, x1, wx = taps(x, out_w, in_w)
            out[y, x] = ((1 - wy) * ((1 - wx) * grid[y0, x0] + wx * grid[y0, x1])
                         + wy * ((1 - wx) * grid[y1, x0] + wx * grid[y1, x1]))
    return out


def test_resize_vit_convention_keeps_cls_drops_dist_and_is_bilinear():
    """The TransReID ViT call: (1, 2 + 4*3, C) with a distillation position -> CLS + 6x2 grid."""
    torch.manual_seed(0)
    pos = torch.randn(1, 2 + 4 * 3, 5)
    new = resize_pos_embed(pos, (4, 3), (6, 2), num_prefix=2, keep_prefix=1, mode="bilinear")
    assert new.shape == (1, 1 + 12, 5)
    assert torch.equal(new[0, 0], pos[0, 0])
    want = bilinear_reference(pos[0, 2:].double().reshape(4, 3, 5), 6, 2).reshape(12, 5)
    torch.testing.assert_close(new[0, 1:].double(), want, atol=1e-6, rtol=1e-6)
    # same grid: only the distillation position goes
    same = resize_pos_embed(pos, (4, 3), (4, 3), num_prefix=2, keep_prefix=1, mode="bilinear")
    assert torch.equal(same, torch.cat([pos[:, :1], pos[:, 2:]], dim=1))
    # half precision is resized in float32 and cast back
    half = resize_pos_embed(pos.half(), (4, 3), (6, 2), num_prefix=2, keep_prefix=1,
                            mode="bilinear")
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), resize_pos_embed(
        pos.half().float(), (4, 3), (6, 2), num_prefix=2, keep_prefix=1,
        mode="bilinear").half().float())


def test_resize_clip_convention_keeps_every_prefix_row_and_is_bicubic():
    """The CLIP tower call: (prefix + gh*gw, C), bicubic as F.interpolate, prefix rows kept."""
    torch.manual_seed(1)
    pos = torch.randn(1 + 4 * 4, 6)
    assert resize_pos_embed(pos, (4, 4), (4, 4), mode="bicubic") is pos
    new = resize_pos_embed(pos, (4, 4), (3, 5), mode="bicubic")
    want = F.interpolate(pos[1:].T.reshape(1, 6, 4, 4), size=(3, 5), mode="bicubic",
                         align_corners=False)[0].reshape(6, 15).T
    torch.testing.assert_close(new, torch.cat([pos[:1], want]))
    two = torch.randn(2 + 4, 6)
    assert torch.equal(resize_pos_embed(two, (2, 2), (1, 1), num_prefix=2, mode="bicubic")[:2],
                       two[:2])
    with pytest.raises(ValueError, match=r"1 prefix rows \+ a \(3, 3\) grid"):
        resize_pos_embed(pos, (3, 3), (2, 2), mode="bicubic")


# ----------------------------------------------------------------------------- test.py's load
class Toy(nn.Module):
    def __init__(self, extra: bool):
        super().__init__()
        self.head = nn.Linear(2, 2)
        if extra:
            self.projection = nn.Linear(2, 2)
            self.tgmim = nn.Linear(2, 1)
            self.text_encoder = nn.Linear(1, 1)


def test_training_only_modules_may_be_absent_on_either_side(caplog):
    assert TRAINING_ONLY_PREFIXES == ("projection.", "tgmim.", "text_encoder.", "id_head.",
                                      "mlm_head.", "ss_head.", "text_guided.")
    logger = logging.getLogger("phasereid.test_weights_io")
    trained, tested = Toy(extra=True), Toy(extra=False)
    with caplog.at_level(logging.INFO, logger=logger.name):
        assert load_for_test(tested, {"model": trained.state_dict()}, {}, "w", logger) == "off"
    assert torch.equal(tested.head.weight, trained.head.weight)
    assert "tgmim.weight" in caplog.text and "text_encoder.weight" in caplog.text
    assert load_for_test(Toy(extra=True), {"model": tested.state_dict()}, {}, "w",
                         logger) == "off"
    other = dict(tested.state_dict(), **{"neck.weight": torch.zeros(2)})
    with pytest.raises(RuntimeError, match=r"unexpected keys \['neck.weight'\]"):
        load_for_test(tested, {"model": other}, {}, "w", logger)
