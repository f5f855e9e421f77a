"""TransReID ViT backbone, weight loading and ResNet-50 backbone (CPU, random-init weights)."""

import pytest
import timm
import torch
import torch.nn.functional as F

from model.backbones.resnet import build_resnet50_backbone
from model.backbones.vit_transreid import (TransReIDBackbone, build_transreid_backbone,
                                           overlap_grid_size, shift_and_shuffle_patches)
from model.backbones.vit_weights import (UNKNOWN_KEY, checkpoint_filter_fn, load_vit_pretrained)


@pytest.fixture(scope="module")
def timm_vit_tiny():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()


@pytest.fixture(scope="module")
def vit_tiny_file(timm_vit_tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "vit_tiny.pth"
    torch.save(timm_vit_tiny.state_dict(), path)
    return str(path)


def tiny(**kwargs):
    args = dict(img_size=(256, 128), stride_size=16, drop_path_rate=0.0)
    args.update(kwargs)
    return build_transreid_backbone("vit_tiny", **args)


# ----------------------------------------------------------------------------- timm equivalence
def test_timm_vit_tiny_state_dict_gives_timm_features(timm_vit_tiny, vit_tiny_file):
    model = tiny(img_size=224, stride_size=16).eval()
    report = load_vit_pretrained(model, vit_tiny_file)
    assert report.missing == [] and report.unexpected == [] and report.resized == []
    assert sorted(report.skipped_keys()) == ["head.bias", "head.weight"]
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = timm_vit_tiny.forward_features(x)
        out = model(x)
        feats = model.forward_features(x)
    torch.testing.assert_close(out["feat"], ref[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["patch_tokens"], ref[:, 1:], atol=1e-5, rtol=0)


def test_stride12_resizes_pos_embed_14x14_to_21x10(timm_vit_tiny, vit_tiny_file):
    model = tiny(stride_size=12)
    report = load_vit_pretrained(model, vit_tiny_file)
    assert model.grid_size == (21, 10)
    (entry,) = report.resized
    assert entry.key == "pos_embed"
    assert entry.from_shape == (1, 197, 192) and entry.to_shape == (1, 211, 192)
    assert "14x14 -> 21x10" in str(report)
    src = timm_vit_tiny.pos_embed.detach()
    torch.testing.assert_close(model.pos_embed[:, :1].detach(), src[:, :1], atol=0, rtol=0)
    grid = src[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(21, 10), mode="bilinear", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, 210, -1)
    torch.testing.assert_close(model.pos_embed[:, 1:].detach(), expected)
    x = torch.randn(1, 3, 256, 128)
    assert model(x)["patch_tokens"].shape == (1, 210, 192)


def test_deit_distilled_detected_from_keys_not_file_name(tmp_path):
    torch.manual_seed(0)
    deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False)
    path = tmp_path / "imagenet_tiny.pth"  # no 'distilled' in the name
    torch.save({"model": deit.state_dict()}, path)
    model = build_transreid_backbone("deit_tiny", img_size=224, stride_size=16)
    report = load_vit_pretrained(model, str(path))
    assert "dist_token" in report.skipped_keys()
    assert {"head_dist.weight", "head_dist.bias"} <= set(report.skipped_keys())
    text = str(report)
    assert "distillation token" in text and "distillation-token position dropped" in text
    src = deit.pos_embed.detach()
    expected = torch.cat([src[:, :1], src[:, 2:]], dim=1)  # CLS kept, dist position dropped
    torch.testing.assert_close(model.pos_embed.detach(), expected, atol=0, rtol=0)


def test_distillation_position_detected_from_shape_without_dist_token_key():
    torch.manual_seed(0)
    state = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False).state_dict()
    state.pop("dist_token")
    model = build_transreid_backbone("deit_tiny", img_size=224, stride_size=16)
    report = load_vit_pretrained(model, state)
    assert "198 = 2 + 14^2" in str(report)
    torch.testing.assert_close(model.pos_embed[:, 1:].detach(), state["pos_embed"][:, 2:])


def test_linear_patch_weight_and_wrappers(timm_vit_tiny):
    state = {k: v.clone() for k, v in timm_vit_tiny.state_dict().items()}
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"].reshape(192, -1)
    wrapped = {"state_dict": {"module." + k: v for k, v in state.items()}}
    model = tiny(img_size=224, depth=1)
    report = load_vit_pretrained(model, wrapped)
    assert ("patch_embed.proj.weight", "patch_embed.proj.weight",
            "linear patch weight reshaped to conv") in report.remapped
    assert "stripped the 'module.' prefix from 152 keys" in report.notes
    torch.testing.assert_close(model.patch_embed.proj.weight.detach(),
                               timm_vit_tiny.patch_embed.proj.weight.detach(), atol=0, rtol=0)


def test_depth_truncation_reports_extra_blocks_as_unexpected(vit_tiny_file):
    model = tiny(depth=2)
    assert len(model.blocks) == 2
    report = load_vit_pretrained(model, vit_tiny_file)
    unexpected = report.unexpected_keys()
    assert len(unexpected) == 10 * 12 and all(k.startswith("blocks.") for k in unexpected)
    assert not any(k.startswith(("blocks.0.", "blocks.1.")) for k in unexpected)
    assert "blocks.2.* (12)" in str(report)


def test_strict_load_errors(timm_vit_tiny, tmp_path):
    state = dict(timm_vit_tiny.state_dict())
    state.pop("norm.weight")
    with pytest.raises(ValueError, match="norm.weight"):
        load_vit_pretrained(tiny(depth=1), state)
    report = load_vit_pretrained(tiny(depth=1), state, strict=False)
    assert report.missing == ["norm.weight"]
    small = timm.create_model("vit_small_patch16_224", pretrained=False, depth=1).state_dict()
    with pytest.raises(ValueError, match="shape mismatch"):
        load_vit_pretrained(tiny(depth=1), small)
    extra = dict(timm_vit_tiny.state_dict())
    extra["blocks.0.ls1.gamma"] = torch.ones(192)  # layer scale: would change the function
    with pytest.raises(ValueError, match="unknown keys"):
        load_vit_pretrained(tiny(depth=1), extra)
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="MODEL.PRETRAIN_PATH") as err:
        load_vit_pretrained(tiny(depth=1), str(missing))
    assert str(missing) in str(err.value)
    with pytest.raises(RuntimeError, match="MODEL.PRETRAIN_PATH"):
        load_vit_pretrained(tiny(depth=1), "timm:no_such_model_xyz")


def test_mlp_ratio_sets_the_hidden_width_of_every_block():
    model = build_transreid_backbone("vit_tiny", img_size=(64, 32), depth=2, mlp_ratio=2.0)
    assert [b.mlp.fc1.out_features for b in model.blocks] == [384, 384]
    assert [b.mlp.fc2.in_features for b in model.blocks] == [384, 384]
    assert build_transreid_backbone("vit_tiny", img_size=(64, 32), depth=1).blocks[0].mlp \
        .fc1.out_features == 768
    assert model(torch.randn(2, 3, 64, 32))["feat"].shape == (2, 192)
    from configs import load_config
    from model.make_model import make_model
    cfg = load_config(opts=["MODEL.NAME", "transformer", "MODEL.TRANSFORMER_TYPE", "vit_tiny",
                            "MODEL.VIT_DEPTH", "1", "MODEL.VIT_MLP_RATIO", "1.5",
                            "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]"])
    assert make_model(cfg, 5, 1, 1).backbone.blocks[0].mlp.fc1.out_features == 288


def test_conv_stem_gives_the_patch_grid_and_trains_from_the_first_layer():
    model = build_transreid_backbone("vit_tiny", img_size=(64, 32), depth=1, stem="conv",
                                     camera_num=2)
    assert model.grid_size == (4, 2) and model.num_patches == 8
    assert [c.out_channels for c in model.patch_embed.convs if isinstance(c, torch.nn.Conv2d)] \
        == [24, 48, 96, 192]
    out = model(torch.randn(3, 3, 64, 32), camids=torch.tensor([0, 1, 0]))
    assert out["patch_tokens"].shape == (3, 8, 192)
    out["feat"].square().sum().backward()
    assert model.patch_embed.convs[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="stride 16"):
        build_transreid_backbone("vit_tiny", img_size=(64, 32), stride_size=12, stem="conv")
    with pytest.raises(ValueError, match="divisible by 16"):
        build_transreid_backbone("vit_tiny", img_size=(72, 32), stem="conv")
    with pytest.raises(ValueError, match="'patch', 'conv'"):
        build_transreid_backbone("vit_tiny", img_size=(64, 32), stem="hybrid")


def test_conv_stem_config_rules():
    from configs import load_config
    from configs.validate import ConfigError
    with pytest.raises(ConfigError, match="random init only"):
        load_config(opts=["MODEL.VIT_STEM", "conv", "MODEL.PRETRAIN_CHOICE", "imagenet",
                          "MODEL.STRIDE_SIZE", "[16, 16]"])
    with pytest.raises(ConfigError, match=r"STRIDE_SIZE \[12, 12\]"):
        load_config(opts=["MODEL.VIT_STEM", "conv", "MODEL.STRIDE_SIZE", "[12, 12]"])
    with pytest.raises(ConfigError, match="VIT_STEM"):
        load_config(opts=["MODEL.VIT_STEM", "convolutional"])
    with pytest.raises(ConfigError, match=r"INPUT.SIZE_TRAIN \[72, 32\]"):
        load_config(opts=["MODEL.VIT_STEM", "conv", "INPUT.SIZE_TRAIN", "[72, 32]"])
    with pytest.raises(ConfigError, match="IMAGE_PRETRAINED 'timm:deit_small"):
        load_config(opts=["MODEL.VIT_STEM", "conv", "MODEL.TASK", "tbps", "MODEL.TBPS.ARCH",
                          "lgur", "MODEL.LGUR.IMAGE_BACKBONE", "transreid",
                          "MODEL.LGUR.IMAGE_PRETRAINED", "timm:deit_small_patch16_224",
                          "LOSS.NAMES", "['id']"], check_paths=False)


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="vit_small"):
        build_transreid_backbone("vit_huge")


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("size,stride,grid", [
    ((256, 128), 16, (16, 8)), ((256, 128), 12, (21, 10)), ((256, 256), 12, (21, 21)),
    ((256, 128), 11, (22, 11)), ((224, 224), 16, (14, 14)), ((256, 128), (12, 16), (21, 8))])
def test_grid_sizes(size, stride, grid):
    assert overlap_grid_size(size, stride) == grid
    model = tiny(img_size=size, stride_size=stride, depth=1)
    assert model.grid_size == grid and model.num_patches == grid[0] * grid[1]
    assert model.pos_embed.shape == (1, 1 + grid[0] * grid[1], 192)


def test_wrong_input_size_is_an_error():
    with pytest.raises(ValueError, match="256, 128"):
        tiny(depth=1)(torch.randn(1, 3, 224, 224))


# ----------------------------------------------------------------------------- SIE
def test_sie_changes_output_only_when_camera_differs():
    model = tiny(depth=1, camera_num=3, sie_coe=3.0).eval()
    img = torch.randn(1, 3, 256, 128).expand(2, -1, -1, -1)
    with torch.no_grad():
        same = model(img, camids=torch.tensor([1, 1]))["feat"]
        diff = model(img, camids=torch.tensor([0, 2]))["feat"]
    torch.testing.assert_close(same[0], same[1], atol=0, rtol=0)
    assert (diff[0] - diff[1]).abs().max() > 1e-3
    torch.testing.assert_close(diff[1], model(img[:1], camids=torch.tensor([2]))["feat"][0])


def test_sie_row_is_camera_times_views_plus_view_on_every_token():
    model = tiny(depth=1, camera_num=3, view_num=2, sie_coe=1.5).eval()
    assert model.sie_embed.shape == (6, 1, 192)
    x = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        base = torch.cat([model.cls_token.expand(2, -1, -1), model.patch_embed(x)], 1)
        base = base + model.pos_embed
        tokens = model.embed_tokens(x, camids=torch.tensor([2, 0]), viewids=torch.tensor([1, 1]))
    delta = tokens - base
    torch.testing.assert_close(delta[0], 1.5 * model.sie_embed[5].expand(base.shape[1], -1))
    torch.testing.assert_close(delta[1], 1.5 * model.sie_embed[1].expand(base.shape[1], -1))


def test_sie_id_out_of_range_is_a_clear_error():
    model = tiny(depth=1, camera_num=3)
    x = torch.randn(2, 3, 256, 128)
    with pytest.raises(ValueError, match=r"camera id 3 .*3 rows.*built for 3 cameras"):
        model(x, camids=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="camera id -1"):
        model(x, camids=torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="pass camids"):
        model(x)
    views = tiny(depth=1, view_num=2)
    with pytest.raises(ValueError, match=r"view id 2 .*built for 2 views"):
        views(x, viewids=torch.tensor([2, 0]))
    assert tiny(depth=1, camera_num=1).sie_embed is None  # one camera = SIE off


# ----------------------------------------------------------------------------- JPM
def test_shift_and_shuffle_permutation_hand_computed():
    def ids(n):
        return torch.arange(n, dtype=torch.float32).view(1, n, 1)

    # N=10, start at patch 3 (1-based): [2..9, 0, 1]; view(2, 5).T
    out = shift_and_shuffle_patches(ids(10), shift_num=3, groups=2)
    assert out.flatten().long().tolist() == [2, 7, 3, 8, 4, 9, 5, 0, 6, 1]
    # N=9 (odd): shifted [4..8, 0..3], + copy of the second-to-last (2) -> 10 tokens
    out = shift_and_shuffle_patches(ids(9), shift_num=5, groups=2)
    assert out.flatten().long().tolist() == [4, 0, 5, 1, 6, 2, 7, 3, 8, 2]
    assert shift_and_shuffle_patches(ids(6), 1, 1).flatten().long().tolist() == list(range(6))
    with pytest.raises(ValueError, match="shift_num"):
        shift_and_shuffle_patches(ids(6), 0, 2)


def _expected_locals(model, trunk, parts):
    cls = trunk[:, :1]
    return [model.b2(torch.cat([cls, trunk[:, [1 + i for i in part]]], dim=1))[:, 0]
            for part in parts]


@pytest.mark.parametrize("rearrange,parts", [
    # 64x48 / 16 -> 4x3 = 12 patches; shift 3: [2..11, 0, 1]; view(2, 6).T:
    # [2, 8, 3, 9, 4, 10, 5, 11, 6, 0, 7, 1] -> 4 parts of 3
    (True, [[2, 8, 3], [9, 4, 10], [5, 11, 6], [0, 7, 1]]),
    (False, [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]),
])
def test_jpm_parts_use_the_expected_tokens(rearrange, parts):
    torch.manual_seed(0)
    model = tiny(img_size=(64, 48), depth=2, jpm=True, shift_num=3, shuffle_groups=2,
                 divide_length=4, rearrange=rearrange).eval()
    for p in model.b2.parameters():  # make b2 differ from the last block
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        out = model(x)
        trunk = model.forward_trunk(x)
        expected = _expected_locals(model, trunk, parts)
        final = model.norm(model.blocks[-1](trunk))
    assert len(out["local_feats"]) == 4
    for got, want in zip(out["local_feats"], expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["feat"], final[:, 0])


def test_jpm_output_shapes_and_remainder_dropped():
    model = tiny(stride_size=12, depth=2, jpm=True, divide_length=4).eval()  # N = 210, 52 per part
    with torch.no_grad():
        out = model(torch.randn(3, 3, 256, 128))
    assert out["feat"].shape == (3, 192) and out["patch_tokens"].shape == (3, 210, 192)
    assert [f.shape for f in out["local_feats"]] == [torch.Size([3, 192])] * 4
    assert "local_feats" not in tiny(depth=1)(torch.randn(1, 3, 256, 128))
    with pytest.raises(ValueError, match="shuffle_groups"):
        # N = 12: 5 divides neither 12 nor 13
        tiny(depth=1, jpm=True, shuffle_groups=5, img_size=(64, 48))
    with pytest.raises(ValueError, match="shift_num"):
        tiny(depth=1, jpm=True, shift_num=0)


def test_jpm_branches_equal_loaded_last_block(timm_vit_tiny, vit_tiny_file):
    model = tiny(jpm=True, stride_size=12).eval()
    report = load_vit_pretrained(model, vit_tiny_file)
    assert "b2.0.* <- blocks.11.* (12)" in str(report) and "b2.1.* <- norm.* (2)" in str(report)
    src = timm_vit_tiny.state_dict()
    for key, value in model.blocks[-1].state_dict().items():  # b1 = last block
        torch.testing.assert_close(value, src[f"blocks.11.{key}"], atol=0, rtol=0)
        torch.testing.assert_close(model.b2[0].state_dict()[key], src[f"blocks.11.{key}"],
                                   atol=0, rtol=0)
    for key in ("weight", "bias"):
        torch.testing.assert_close(model.norm.state_dict()[key], src[f"norm.{key}"])
        torch.testing.assert_close(model.b2[1].state_dict()[key], src[f"norm.{key}"])
    assert model.b2[0].attn.qkv.weight.data_ptr() != model.blocks[-1].attn.qkv.weight.data_ptr()
    plain = tiny(stride_size=12).eval()
    load_vit_pretrained(plain, vit_tiny_file)
    x = torch.randn(1, 3, 256, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["feat"], plain(x)["feat"], atol=1e-6, rtol=0)


def test_every_parameter_gets_a_gradient_with_jpm_and_sie():
    model = tiny(depth=2, jpm=True, camera_num=2, view_num=2, drop_path_rate=0.1).train()
    out = model(torch.randn(2, 3, 256, 128), camids=torch.tensor([0, 1]),
                viewids=torch.tensor([1, 0]))
    loss = out["feat"].pow(2).sum() + sum(f.pow(2).sum() for f in out["local_feats"])
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert no_grad == []


def test_transreid_jpm_checkpoint_maps_base_b1_b2_and_leaves_heads():
    torch.manual_seed(0)
    trained = tiny(depth=2, jpm=True, camera_num=3).eval()
    ckpt = {}
    for key, value in trained.state_dict().items():
        if key.startswith("blocks.1."):
            ckpt["b1.0." + key[len("blocks.1."):]] = value
            ckpt["base." + key] = torch.randn_like(value)  # TransReID's unused copy
        elif key.startswith("norm."):
            ckpt["b1.1." + key[len("norm."):]] = value
            ckpt["base." + key] = torch.randn_like(value)
        elif key.startswith("b2."):
            ckpt[key] = value
        else:
            ckpt["base." + key] = value
    ckpt.update({"base.fc.weight": torch.zeros(1000, 192), "classifier.weight": torch.zeros(5, 192),
                 "bottleneck.weight": torch.ones(192), "classifier_1.weight": torch.zeros(5, 192)})
    fresh = tiny(depth=2, jpm=True, camera_num=3).eval()
    report = load_vit_pretrained(fresh, {"model": ckpt})
    assert report.source_format == "TransReID"
    assert report.left_for_caller == ["classifier.weight", "bottleneck.weight",
                                      "classifier_1.weight"]
    assert "base.fc.weight" in report.skipped_keys() and "base.norm.weight" in report.skipped_keys()
    assert "b1.0.* -> blocks.1.* (12)" in str(report)
    assert report.copied == [] and report.missing == [] and report.initialised == []
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, atol=0, rtol=0)


def test_filter_returns_complete_state_dict_for_strict_load(vit_tiny_file):
    model = tiny(jpm=True, depth=3)
    filtered, report = checkpoint_filter_fn(torch.load(vit_tiny_file, weights_only=True), model)
    model.load_state_dict(filtered, strict=True)  # every key provided, b2 included
    assert not any(why == UNKNOWN_KEY for _, why in report.unexpected)
    assert isinstance(model, TransReIDBackbone)


# ----------------------------------------------------------------------------- ResNet-50
def test_resnet50_shapes_and_torchvision_round_trip(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    x = torch.randn(2, 3, 128, 64)
    bot = build_resnet50_backbone(last_stride=1).eval()
    with torch.no_grad():
        out = bot(x)
    assert bot.feat_dim == 2048
    assert out["feat"].shape == (2, 2048) and out["patch_tokens"].shape == (2, 8 * 4, 2048)
    torch.testing.assert_close(out["feat"], out["patch_tokens"].mean(1))

    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None).eval()
    path = tmp_path / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    net = build_resnet50_backbone(last_stride=2, pretrained_path=str(path)).eval()
    assert sorted(net.load_report.skipped_keys()) == ["fc.bias", "fc.weight"]
    assert net.load_report.missing == []
    tv.fc = torch.nn.Identity()
    with torch.no_grad():
        out = net(x)
        torch.testing.assert_close(out["feat"], tv(x), atol=1e-4, rtol=1e-4)
    assert out["patch_tokens"].shape == (2, 4 * 2, 2048)
    with pytest.raises(FileNotFoundError, match="MODEL.PRETRAIN_PATH"):
        build_resnet50_backbone(pretrained_path=str(tmp_path / "missing.pth"))
