"""CLIP fusion (model/clip_fusion.py; REFERENCES.md 3.4): fusion formulas, towers (frozen /
trained at the scaled LR), input conversion, position-embedding resizing, weight loading, clear
errors, and "train with fusion, test without" through test.py. Towers are tiny and random-init
(MODEL.CLIP_TINY); nothing is downloaded."""
import json
import logging
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import test as test_script
import train as train_script
from configs import load_config
from conftest import tiny_opts
from model import clip_fusion as cf
from model.make_model import make_model
from model.weights import load_for_test
from solver.make_optimizer import make_optimizer
from utils.weights_io import resize_pos_embed

TINY = ["MODEL.TRANSFORMER_TYPE", "vit_tiny", "MODEL.VIT_DEPTH", "1", "MODEL.DROP_PATH", "0.0",
        "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "MODEL.USE_CLIP", "True",
        "MODEL.CLIP_TINY", "True", "MODEL.CLIP_INPUT_SIZE", "[32, 32]"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build(*opts, jpm=True):
    cfg = load_config(opts=TINY + ["MODEL.JPM", str(jpm)] + list(opts))
    torch.manual_seed(0)
    return cfg, make_model(cfg, 8, 2, 1)


@pytest.fixture
def log_lines():
    """Messages of the 'phasereid' logger (setup_logger turns its propagation off)."""
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger, handler = logging.getLogger("phasereid"), Keep(logging.INFO)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def backbone_and_clip(model, img):
    with torch.no_grad():
        raw = model.backbone(img)
        c = model.clip_fusion.tower(model.clip_fusion.preprocess(img))
    return raw, c


# -- fusion formulas -----------------------------------------------------------------------
def test_minimal_replaces_the_global_feature_and_leaves_the_parts():
    _, model = build("MODEL.CLIP_FUSION", "minimal")
    model.eval()
    img = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        out = model({"img": img})
    raw, c = backbone_and_clip(model, img)
    proj = model.clip_fusion.global_head.proj
    assert out["clip_feat"].shape == (3, 64) and out["feat"].shape == (3, 192)
    torch.testing.assert_close(out["clip_feat"], c)
    with torch.no_grad():
        torch.testing.assert_close(out["feat"], proj(torch.cat([raw["feat"], c], dim=1)))
        torch.testing.assert_close(out["feat_bn"], model.head.bn(out["feat"]))
    assert not torch.allclose(out["feat"], raw["feat"])
    for fused, plain in zip(out["local_feats"], raw["local_feats"]):
        torch.testing.assert_close(fused, plain)
    assert model.clip_fusion.local_head is None and "clip_gate" not in out
    assert model.test_feature(out, "before").shape == (3, 192 * 5)


def quickwin_reference(head, g, c):
    """a = sigmoid(MLP([LN(g); LN(c)])), out = Linear([(1 - a) LN(g); a LN(c)])."""
    ln_g = F.layer_norm(g, g.shape[1:], head.norm_feat.weight, head.norm_feat.bias, 1e-5)
    ln_c = F.layer_norm(c, c.shape[1:], head.norm_clip.weight, head.norm_clip.bias, 1e-5)
    first, second = head.gate[0], head.gate[2]
    a = torch.sigmoid(second(torch.relu(first(torch.cat([ln_g, ln_c], dim=1)))))
    return head.proj(torch.cat([(1 - a) * ln_g, a * ln_c], dim=1)), a


def test_quickwin_gates_the_global_feature_and_every_part_with_one_shared_head():
    _, model = build("MODEL.CLIP_FUSION", "quickwin")
    model.eval()
    img = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        out = model({"img": img})
        raw, c = backbone_and_clip(model, img)
        fusion = model.clip_fusion
        assert fusion.local_head is not None and fusion.local_head is not fusion.global_head
        want, gate = quickwin_reference(fusion.global_head, raw["feat"], c)
        torch.testing.assert_close(out["feat"], want)
        torch.testing.assert_close(out["clip_gate"], gate)
        assert out["clip_gate"].shape == (3, 1)
        assert len(out["local_feats"]) == 4
        for fused, plain in zip(out["local_feats"], raw["local_feats"]):
            torch.testing.assert_close(fused, quickwin_reference(fusion.local_head, plain, c)[0])
            assert not torch.allclose(fused, plain)
        # the gate weighs CLIP by a and the ReID feature by 1 - a: a -> 1 ignores g, a -> 0 c
        head = fusion.global_head
        for bias, kept in ((60.0, "clip"), (-60.0, "feat")):
            head.gate[2].bias.fill_(bias)
            other = torch.randn_like(raw["feat"]) if kept == "clip" else torch.randn_like(c)
            a = head(raw["feat"], c)[0]
            b = head(other, c)[0] if kept == "clip" else head(raw["feat"], other)[0]
            torch.testing.assert_close(a, b)


def test_quickwin_without_jpm_fuses_the_global_feature_only(log_lines):
    _, model = build("MODEL.CLIP_FUSION", "quickwin", jpm=False)
    assert model.clip_fusion.local_head is None
    assert any("no JPM parts" in line for line in log_lines)
    with torch.no_grad():
        out = model.eval()({"img": torch.randn(2, 3, 64, 32)})
    assert "local_feats" not in out and out["feat"].shape == (2, 192)


def afem_reference(afem, t):
    """Per channel j: t_j + W[j // (C / 32)] * relu(BN(Linear(t))_j), BN with batch statistics."""
    lin, bn = afem.f[0], afem.f[1]
    y = t @ lin.weight.T + lin.bias
    mean, var = y.mean(0), y.var(0, unbiased=False)
    per_group = t.shape[1] // 32
    out = torch.empty_like(t)
    for j in range(t.shape[1]):
        y_j = (y[:, j] - mean[j]) / torch.sqrt(var[j] + bn.eps) * bn.weight[j] + bn.bias[j]
        out[:, j] = t[:, j] + afem.group_scale[j // per_group] * torch.clamp(y_j, min=0)
    return out


def test_afem_formula():
    torch.manual_seed(0)
    afem = cf.AFEM(64).train()
    with torch.no_grad():
        afem.f[1].weight.uniform_(0.5, 1.5)
        afem.f[1].bias.uniform_(-0.5, 0.5)
    assert afem.group_scale.shape == (32,) and afem.group_scale.requires_grad
    t = torch.randn(6, 64)
    torch.testing.assert_close(afem(t), afem_reference(afem, t))
    with pytest.raises(ValueError, match="divisible by 32"):
        cf.AFEM(48)


def test_hf_fusion_is_global_only_with_semantic_refinement(log_lines):
    _, model = build("MODEL.CLIP_IMPL", "hf", "MODEL.CLIP_FUSION", "quickwin")
    assert any("'quickwin' is not used with CLIP_IMPL 'hf'" in line for line in log_lines)
    model.eval()
    img = torch.randn(3, 3, 64, 32)
    head = model.clip_fusion.global_head
    with torch.no_grad():
        out = model({"img": img})
        raw, t = backbone_and_clip(model, img)
        want = head.proj(torch.cat([raw["feat"], t], dim=1)) + head.refine(head.afem(t))
        torch.testing.assert_close(out["feat"], want)
        for fused, plain in zip(out["local_feats"], raw["local_feats"]):
            torch.testing.assert_close(fused, plain)
    assert out["clip_feat"].shape == (3, 64)
    log_lines.clear()
    _, plain_refine = build("MODEL.CLIP_IMPL", "hf", "MODEL.CLIP_USE_AFEM", "False")
    assert plain_refine.clip_fusion.global_head.afem is None
    _, no_refine = build("MODEL.CLIP_IMPL", "hf", "MODEL.CLIP_USE_SEM_REFINE", "False")
    head = no_refine.clip_fusion.global_head
    assert head.refine is None and head.afem is None
    assert any("CLIP_USE_AFEM has no effect" in line for line in log_lines)
    no_refine.eval()
    with torch.no_grad():
        raw, t = backbone_and_clip(no_refine, img)
        torch.testing.assert_close(no_refine({"img": img})["feat"],
                                   head.proj(torch.cat([raw["feat"], t], dim=1)))


# -- towers and optimiser groups ---------------------------------------------------------------
def test_open_clip_tower_is_frozen_and_stays_in_eval_mode():
    cfg, model = build("MODEL.CLIP_FUSION", "quickwin")
    tower = model.clip_fusion.tower
    model.train()
    assert not any(m.training for m in tower.modules())
    assert model.clip_fusion.global_head.training
    assert not any(p.requires_grad for p in tower.parameters())
    out = model({"img": torch.randn(4, 3, 64, 32)})
    (out["feat"].sum() + sum(f.sum() for f in out["local_feats"])).backward()
    assert all(p.grad is None for p in tower.parameters())
    assert model.clip_fusion.global_head.proj.weight.grad is not None
    assert model.clip_fusion.local_head.proj.weight.grad is not None
    optimizer, _ = make_optimizer(cfg, model)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for p in tower.parameters())
    assert model.lr_scales() == {}
    model.eval().train()
    assert not tower.training


def test_hf_tower_trains_at_base_lr_times_clip_lr_scale():
    cfg, model = build("MODEL.CLIP_IMPL", "hf", "SOLVER.OPTIMIZER_NAME", "SGD",
                       "SOLVER.BASE_LR", "0.01", "MODEL.CLIP_LR_SCALE", "0.2",
                       "SOLVER.BIAS_LR_FACTOR", "2.0")
    tower = model.clip_fusion.tower
    assert model.lr_scales() == {"clip_fusion.tower.": 0.2}
    model.train()
    assert tower.training
    model({"img": torch.randn(4, 3, 64, 32)})["feat"].sum().backward()
    assert all(p.grad is not None for p in tower.parameters())

    def lrs(cfg, net):
        optimizer, _ = make_optimizer(cfg, net)
        return {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}

    lr = lrs(cfg, model)
    for name, p in tower.named_parameters():
        assert lr[id(p)] == pytest.approx(0.01 * 0.2 * (2.0 if name.endswith(".bias") else 1.0))
    assert lr[id(model.backbone.patch_embed.proj.weight)] == pytest.approx(0.01)
    assert lr[id(model.clip_fusion.global_head.proj.weight)] == pytest.approx(0.01)

    class DDPLike(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert lrs(cfg, DDPLike(model)) == lr
    # explicit SOLVER.LR_SCALES: wins on the same prefix; the longest prefix wins overall
    cfg2 = cfg.clone()
    cfg2.defrost()
    cfg2.SOLVER.LR_SCALES = ["clip_fusion.tower.=0.5", "clip_fusion.tower.net.encoder.=1.0"]
    lr = lrs(cfg2, model)
    for name, p in tower.named_parameters():
        scale = 1.0 if name.startswith("net.encoder.") else 0.5
        assert lr[id(p)] == pytest.approx(0.01 * scale * (2.0 if name.endswith(".bias") else 1.0))

    _, frozen = build("MODEL.CLIP_IMPL", "hf", "MODEL.CLIP_FINETUNE", "False")
    frozen.train()
    assert frozen.lr_scales() == {} and not frozen.clip_fusion.tower.training
    assert not any(p.requires_grad for p in frozen.clip_fusion.tower.parameters())


# -- input conversion and position embeddings --------------------------------------------------
@pytest.mark.parametrize("impl,mode", [("open_clip", "bicubic"), ("hf", "bilinear")])
def test_reid_normalised_pixels_reach_the_tower_clip_normalised(impl, mode):
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    _, model = build("MODEL.CLIP_IMPL", impl, "INPUT.PIXEL_MEAN", str(list(IMAGENET_MEAN)),
                     "INPUT.PIXEL_STD", str(list(IMAGENET_STD)))
    pre = model.clip_fusion.preprocess
    assert pre.mode == mode and pre.size == (32, 32)
    pixel = torch.tensor([0.2, 0.6, 0.9])
    reid = ((pixel - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))
    out = pre(reid.view(1, 3, 1, 1).expand(2, 3, 64, 32))
    assert out.shape == (2, 3, 32, 32)
    clip = (pixel - torch.tensor(OPENAI_DATASET_MEAN)) / torch.tensor(OPENAI_DATASET_STD)
    torch.testing.assert_close(out[1, :, 17, 3], clip)   # (0.2 - 0.48145) / 0.26863 = -1.0478
    assert clip[0].item() == pytest.approx(-1.04776, abs=1e-4)
    img = torch.rand(1, 3, 64, 32)
    x01 = img * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(
        1, 3, 1, 1)
    want = F.interpolate((x01 - torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1))
                         / torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1), size=(32, 32),
                         mode=mode, align_corners=False)
    torch.testing.assert_close(pre(img), want)


def test_pos_embed_resize_keeps_the_prefix_row_and_the_row_major_grid():
    gh, gw = 3, 4
    rows = torch.arange(gh).repeat_interleave(gw).float()
    cols = torch.arange(gw).repeat(gh).float() * 10
    grid = torch.stack([rows, cols, torch.full_like(rows, 5.0)], dim=1)
    pos = torch.cat([torch.tensor([[9.0, -9.0, 1.0]]), grid])
    assert resize_pos_embed(pos, (gh, gw), (gh, gw), mode="bicubic") is pos
    new = resize_pos_embed(pos, (gh, gw), (6, 2), mode="bicubic")
    assert new.shape == (1 + 12, 3)
    torch.testing.assert_close(new[0], pos[0])
    g = new[1:].reshape(6, 2, 3)
    torch.testing.assert_close(g[:, 0, 0], g[:, 1, 0])    # the row channel varies along h only
    torch.testing.assert_close(g[0, :, 1], g[5, :, 1])    # the column channel along w only
    torch.testing.assert_close(g[..., 2], torch.full((6, 2), 5.0))
    ref = F.interpolate(grid.T.reshape(1, 3, gh, gw), size=(6, 2), mode="bicubic",
                        align_corners=False)[0]
    torch.testing.assert_close(g.permute(2, 0, 1), ref)
    with pytest.raises(ValueError, match="grid"):
        resize_pos_embed(pos, (4, 4), (2, 2), mode="bicubic")


def test_open_clip_tower_takes_a_non_square_input():
    _, model = build("MODEL.CLIP_INPUT_SIZE", "[64, 32]")
    visual = model.clip_fusion.tower.net
    assert tuple(visual.grid_size) == (4, 2) and visual.positional_embedding.shape == (9, 64)
    with torch.no_grad():
        assert model.eval()({"img": torch.randn(2, 3, 64, 32)})["clip_feat"].shape == (2, 64)


def test_hf_pos_embed_resize_and_square_inputs_only():
    from transformers import CLIPVisionConfig, CLIPVisionModel
    net = CLIPVisionModel(CLIPVisionConfig(hidden_size=64, intermediate_size=128,
                                           num_hidden_layers=1, num_attention_heads=2,
                                           image_size=64, patch_size=16))
    old = cf._hf_embeddings(net).position_embedding.weight.detach().clone()
    assert "grid (4, 4)" in cf.resize_hf_pos_embed(net, (32, 32))
    emb = cf._hf_embeddings(net)
    assert emb.position_embedding.weight.shape == (5, 64) and emb.position_ids.shape == (1, 5)
    assert emb.image_size == 32 and emb.num_patches == 4 and net.config.image_size == 32
    torch.testing.assert_close(emb.position_embedding.weight,
                               resize_pos_embed(old, (4, 4), (2, 2), mode="bicubic"))
    assert net(pixel_values=torch.randn(1, 3, 32, 32)).pooler_output.shape == (1, 64)
    with pytest.raises(ValueError, match="not square"):
        cf.resize_hf_pos_embed(net, (32, 16))
    with pytest.raises(ValueError, match="not square"):
        build("MODEL.CLIP_IMPL", "hf", "MODEL.CLIP_INPUT_SIZE", "[64, 32]")


def test_hf_tower_from_a_local_folder_is_resized_to_clip_input_size(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel
    torch.manual_seed(3)
    src = CLIPVisionModel(CLIPVisionConfig(hidden_size=64, intermediate_size=128,
                                           num_hidden_layers=1, num_attention_heads=2,
                                           image_size=64, patch_size=16))
    src.save_pretrained(str(tmp_path / "tiny_hf"))
    _, model = build("MODEL.CLIP_IMPL", "hf", "MODEL.CLIP_TINY", "False",
                     "MODEL.CLIP_HF_ID", str(tmp_path / "tiny_hf"))
    got = model.clip_fusion.tower.net.state_dict()
    want = src.state_dict()
    pos_key = next(k for k in want if k.endswith("position_embedding.weight"))
    assert all(torch.equal(got[k], want[k]) for k in want if k != pos_key)
    torch.testing.assert_close(got[pos_key], resize_pos_embed(want[pos_key], (4, 4), (2, 2),
                                                              mode="bicubic"))


# -- weight loading and clear errors -----------------------------------------------------------
@pytest.mark.parametrize("content,size", [("full", 224), ("visual", 224), ("full", 32)])
def test_clip_pretrain_weight_file_loads_into_the_tower(tmp_path, content, size):
    import open_clip
    torch.manual_seed(1)
    src = open_clip.create_model("ViT-B-16", pretrained=None, **cf.OPEN_CLIP_TINY_KWARGS)
    path = str(tmp_path / "clip.pt")
    torch.save(src.state_dict() if content == "full" else src.visual.state_dict(), path)
    _, model = build("MODEL.CLIP_PRETRAIN", path, "MODEL.CLIP_INPUT_SIZE", f"[{size}, {size}]")
    got, want = model.clip_fusion.tower.net.state_dict(), src.visual.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want if k != "positional_embedding")
    grid = size // 16
    torch.testing.assert_close(got["positional_embedding"], resize_pos_embed(
        want["positional_embedding"], (14, 14), (grid, grid), mode="bicubic"))


def test_missing_weight_file_and_offline_downloads_name_the_key(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="CLIP_PRETRAIN"):
        build("MODEL.CLIP_PRETRAIN", str(tmp_path / "nope.pt"))
    import open_clip
    import transformers

    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'laion2b_s34b_b88k'")

    def offline_hf(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(open_clip, "create_model", offline)
    monkeypatch.setattr(transformers.CLIPVisionModel, "from_pretrained", offline_hf)
    with pytest.raises(RuntimeError, match=r"(?s)CLIP_PRETRAIN 'laion2b_s34b_b88k'.*Failed to "
                                           r"download.*local file.*CLIP_TINY True"):
        build("MODEL.CLIP_TINY", "False", "MODEL.CLIP_PRETRAIN", "laion2b_s34b_b88k")
    with pytest.raises(OSError, match=r"(?s)CLIP_HF_ID 'wkcn/TinyCLIP.*local folder.*CLIP_TINY"):
        build("MODEL.CLIP_IMPL", "hf", "MODEL.CLIP_TINY", "False")


@pytest.mark.parametrize("impl,module,hint", [
    ("hf", "transformers", "MODEL.CLIP_IMPL 'hf' needs the transformers package: "
                           "pip install transformers"),
    ("open_clip", "open_clip", "MODEL.CLIP_IMPL 'open_clip' needs the open_clip package: "
                               "pip install open-clip-torch")])
def test_missing_package_is_a_clear_error(monkeypatch, impl, module, hint):
    monkeypatch.setitem(sys.modules, module, None)   # `import module` now raises ImportError
    with pytest.raises(ImportError) as err:
        build("MODEL.CLIP_IMPL", impl)
    assert str(err.value) == hint


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="CLIP_IMPL 'clip'"):
        build("MODEL.CLIP_IMPL", "clip")
    with pytest.raises(ValueError, match="CLIP_FUSION 'gated'"):
        build("MODEL.CLIP_FUSION", "gated")
    with pytest.raises(ValueError, match="transformer"):
        build("MODEL.NAME", "resnet50")
    with pytest.raises(ValueError, match="CLIP_LR_SCALE"):
        build("MODEL.CLIP_IMPL", "hf", "MODEL.CLIP_LR_SCALE", "0.0")


def test_synth_clip_recipes_build_and_forward(repo_root):
    for name, impl in (("synth_openclip_minimal", "open_clip"), ("synth_tinyclip_quickwin", "hf")):
        cfg = load_config(os.path.join(repo_root, "configs", "Synth", f"{name}.yml"),
                          ["MODEL.VIT_DEPTH", "1"])
        assert cfg.MODEL.USE_CLIP and cfg.MODEL.CLIP_TINY and cfg.MODEL.CLIP_IMPL == impl
        model = make_model(cfg, 150, 6, 3).eval()
        with torch.no_grad():
            out = model({"img": torch.randn(2, 3, *cfg.INPUT.SIZE_TEST),
                         "camid": torch.tensor([0, 5])})
        assert out["feat"].shape == (2, 192) and out["clip_feat"].shape == (2, 64)
        assert model.clip_fusion.preprocess.size == (64, 64)


# -- test.py: train with fusion, test with and without -----------------------------------------
def test_load_weights_reports_the_fusion_state(tmp_path):
    cfg_on, fused = build()
    cfg_off = load_config(opts=TINY + ["MODEL.JPM", "True", "MODEL.USE_CLIP", "False"])
    plain = make_model(cfg_off, 8, 2, 1)
    logger = logging.getLogger("phasereid.test_clip_fusion")
    assert load_for_test(plain, {"model": plain.state_dict()}, {}, "w", logger) == "off"
    assert load_for_test(fused, {"model": fused.state_dict()}, {}, "w", logger) == "on"
    assert load_for_test(plain, {"model": fused.state_dict()}, {}, "w",
                                    logger) == "disabled at test"
    with pytest.raises(RuntimeError, match="missing keys"):   # no fusion weights to test with
        load_for_test(fused, {"model": plain.state_dict()}, {}, "w", logger)
    with pytest.raises(RuntimeError, match="USE_CLIP False"):  # plain TransReID file
        load_for_test(fused, plain.state_dict(), None, "w", logger)


@pytest.mark.slow
def test_train_with_fusion_then_test_with_and_without(synth_root, tmp_path):
    out = str(tmp_path / "run")
    assert train_script.main(tiny_opts(synth_root, out, **{
        "SOLVER.MAX_EPOCHS": 1, "SOLVER.EVAL_PERIOD": 0, "MODEL.USE_CLIP": True,
        "MODEL.CLIP_TINY": True, "MODEL.CLIP_INPUT_SIZE": "[32, 32]",
        "TEST.VIS_QUERIES": 0})) == 0
    weight = os.path.join(out, "transformer_1.pth")
    results = {}
    for name, extra in (("on", []), ("off", ["MODEL.USE_CLIP", "False"])):
        result_dir = str(tmp_path / name)
        assert test_script.main(["TEST.WEIGHT", weight, "OUTPUT_DIR", result_dir,
                                 "TEST.EXPORT_FEATURES", "True"] + extra) == 0
        results[name] = (json.load(open(os.path.join(result_dir, "summary.json"))),
                         np.load(os.path.join(result_dir, "features.npz"))["feats"],
                         open(os.path.join(result_dir, "test_log.txt")).read())
    (s_on, f_on, log_on), (s_off, f_off, log_off) = results["on"], results["off"]
    assert s_on["clip_fusion"] == "on" and s_off["clip_fusion"] == "disabled at test"
    assert not np.allclose(f_on, f_off)
    assert s_on["metrics"]["mAP"] != s_off["metrics"]["mAP"]
    assert "CLIP fusion trained but disabled for this test" in log_off
    assert "tensors not loaded; expect lower accuracy than with fusion" in log_off
    assert "disabled for this test" not in log_on
    # any other mismatch stays a strict error
    for extra in (["MODEL.CLIP_FUSION", "quickwin"],
                  ["MODEL.USE_CLIP", "False", "MODEL.JPM", "True"]):
        with pytest.raises(RuntimeError, match="does not match"):
            test_script.main(["TEST.WEIGHT", weight, "OUTPUT_DIR", str(tmp_path / "bad")] + extra)
