"""MODEL.NAME 'timm': any timm model under the BNNeck head (model/backbones/timm_net.py)."""
import os

import pytest
import timm
import torch

import test as test_script
import train as train_script
from configs import load_config
from configs.validate import ConfigError
from conftest import tiny_opts
from model.backbones.timm_net import TimmBackbone
from utils.summary import TestSummary


def test_cnn_feature_and_tokens_follow_timm():
    torch.manual_seed(0)
    net = TimmBackbone("resnet18", (64, 32), last_stride=2).eval()
    x = torch.randn(2, 3, 64, 32)
    out = net(x)
    ref = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    ref.load_state_dict(net.net.state_dict())
    assert net.feat_dim == 512 and not net.sized
    assert torch.allclose(out["feat"], ref(x), atol=1e-6)   # timm's own pooled feature
    assert out["patch_tokens"].shape == (2, 2 * 1, 512)      # 64x32 / 32


def test_last_stride_one_doubles_the_final_map_of_a_resnet():
    net = TimmBackbone("resnet18", (64, 32), last_stride=1)
    assert net(torch.randn(1, 3, 64, 32))["patch_tokens"].shape == (1, 4 * 2, 512)
    with pytest.raises(ValueError, match="MODEL.LAST_STRIDE 1 is supported for timm "
                                         "ResNet-layout models"):
        TimmBackbone("efficientnet_b0", (64, 32), last_stride=1)


def test_vit_is_built_for_the_input_size_and_its_pos_embed_resized_on_load(tmp_path):
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False)   # 14x14 grid + head
    path = str(tmp_path / "vit.pth")
    torch.save(source.state_dict(), path)
    net = TimmBackbone("vit_tiny_patch16_224", (64, 32))
    assert net.sized and net.net.patch_embed.grid_size == (4, 2)
    report = net.load_pretrained(path)
    assert [k for k, _ in report.skipped] == ["head.weight", "head.bias"]
    assert [r.key for r in report.resized] == ["pos_embed"]
    assert torch.equal(net.net.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert torch.equal(net.net.pos_embed[0, 0], source.pos_embed[0, 0])   # CLS row kept
    assert net(torch.randn(1, 3, 64, 32))["feat"].shape == (1, 192)


def test_cnn_weights_load_from_a_timm_file_and_mismatches_are_errors(tmp_path):
    source = timm.create_model("resnet18", pretrained=False)
    path = str(tmp_path / "r18.pth")
    torch.save(source.state_dict(), path)
    net = TimmBackbone("resnet18", (64, 32))
    report = net.load_pretrained(path)
    assert [k for k, _ in report.skipped] == ["fc.weight", "fc.bias"] and not report.missing
    assert torch.equal(net.net.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit timm 'resnet18'"):
        TimmBackbone("resnet18", (64, 32)).load_pretrained(path)


def test_train_and_test_a_timm_cnn_end_to_end(synth_root, tmp_path):
    out = str(tmp_path / "run")
    opts = tiny_opts(synth_root, out, **{"MODEL.NAME": "timm", "MODEL.TIMM_NAME": "resnet18",
                                         "MODEL.LAST_STRIDE": 2, "MODEL.SIE_CAMERA": False,
                                         "SOLVER.MAX_EPOCHS": 1})
    assert train_script.main(opts) == 0
    weight = os.path.join(out, "transformer_1.pth")
    test_dir = str(tmp_path / "test")
    assert test_script.main(["TEST.WEIGHT", weight, "OUTPUT_DIR", test_dir]) == 0
    summary = TestSummary.read(os.path.join(test_dir, "summary.json"))
    assert summary.epoch == 1 and 0 <= summary.metrics["mAP"] <= 100


def test_transreid_only_features_are_refused_at_load():
    with pytest.raises(ConfigError, match="MODEL.SIE_CAMERA True is a TransReID ViT feature"):
        load_config(opts=["MODEL.NAME", "timm", "MODEL.TIMM_NAME", "resnet18",
                          "MODEL.SIE_CAMERA", "True"])
