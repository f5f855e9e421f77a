"""Released TBPS-CLIP checkpoints as the dual encoder's starting point (MODEL.TBPS.INIT_CHECKPOINT,
model/tbps_clip_weights.py): a tiny open_clip CLIP written in TBPS-CLIP's checkpoint layout (its
``main.py`` / ``misc/build.py`` naming: text tower under 'encode_text.', training-only heads, a
'module.' prefix, an easydict config) loads through the config key with every tensor equal;
reports and errors. Tiny towers (width 64, 2 layers) only."""
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from configs import ConfigError, load_config
from model.clip_fusion import OPEN_CLIP_TINY_KWARGS
from model.make_model import make_model
from model.tbps_clip_weights import REPORT_FILE, read_tbps_clip_checkpoint

SIZE = (64, 32)          # grid 4 x 2 with patch 16
#: OpenAI CLIP's text-tower names, which TBPS-CLIP's misc/build.py moves under 'encode_text.'
OPENAI_TEXT = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.",
               "text_projection")


def cfg_of(path, tmp_path, **overrides):
    opts = {"MODEL.TASK": "tbps", "MODEL.TBPS.TINY": "True", "MODEL.TBPS.PRETRAINED": "",
            "MODEL.TBPS.EMBED_DIM": "64", "MODEL.TBPS.INIT_CHECKPOINT": path,
            "MODEL.DEVICE": "cpu", "INPUT.SIZE_TRAIN": str(list(SIZE)),
            "INPUT.SIZE_TEST": str(list(SIZE)), "DATASETS.CAPTION_SOURCE": "annotation",
            "DATASETS.NAMES": "cuhkpedes", "LOSS.NAMES": "['nitc']",
            "OUTPUT_DIR": str(tmp_path / "run")}
    opts.update({k: str(v) for k, v in overrides.items()})
    return load_config(opts=[x for kv in opts.items() for x in kv])


def tiny_clip(logit_scale=3.0):
    """A square (224 x 224, grid 14 x 14) tiny open_clip CLIP with 77 text positions."""
    import open_clip
    torch.manual_seed(1)
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **OPEN_CLIP_TINY_KWARGS)
    clip.logit_scale.data.fill_(logit_scale)
    return clip


def tbps_clip_layout(clip_state, heads=True, prefix="module."):
    """``clip_state`` (OpenAI / open_clip names) renamed as TBPS-CLIP's CLIP model names it: text
    keys under 'encode_text.', 'visual.*' and 'logit_scale' as they are, plus its training-only
    heads (SS-I MLP 64 -> 16 -> 64, ID classifier, MLM modules) and a DDP prefix."""
    out = {}
    for key, value in clip_state.items():
        if key == "attn_mask":
            continue
        name = "encode_text." + key if key.startswith(OPENAI_TEXT) else key
        out[prefix + name] = value.clone()
    if heads:
        torch.manual_seed(2)
        for key, shape in {"simclr_mlp.0.weight": (16, 64), "simclr_mlp.0.bias": (16,),
                           "simclr_mlp.2.weight": (64, 16), "simclr_mlp.2.bias": (64,),
                           "classifier.weight": (11, 64), "classifier.bias": (11,),
                           "cross_attn.in_proj_weight": (192, 64), "ln_pre_t.weight": (64,),
                           "ln_post.weight": (64,), "mlm_head.fc.weight": (49408, 8)}.items():
            out[prefix + key] = torch.randn(shape)
    return out


def fake_easydict():
    """A stand-in for easydict.EasyDict (a dict subclass that mirrors its items as attributes),
    pickled under the name 'easydict.EasyDict' as TBPS-CLIP's config is."""
    class EasyDict(dict):
        def __init__(self, d=None):
            super().__init__()
            for k, v in (d or {}).items():
                setattr(self, k, EasyDict(v) if isinstance(v, dict) else v)

        def __setattr__(self, name, value):
            super().__setattr__(name, value)
            super().__setitem__(name, value)
    EasyDict.__module__, EasyDict.__qualname__ = "easydict", "EasyDict"
    return EasyDict


def save_tbps_clip(path, state, experiment=None):
    """torch.save as TBPS-CLIP's main.py: {'model', 'optimizer', 'config' (an EasyDict)}; the fake
    easydict module exists only while saving, so the load below runs without it."""
    EasyDict = fake_easydict()
    module = type(sys)("easydict")
    module.EasyDict = EasyDict
    sys.modules["easydict"] = module
    try:
        config = EasyDict({"experiment": dict(experiment or {"input_resolution": [224, 224],
                                                             "text_length": 77}),
                           "model": {"embed_dim": 64}, "device": "cuda:0"})
        torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [
            {"lr": 1e-4, "ratio": 1.0, "params": [0]}]}, "config": config}, path)
    finally:
        del sys.modules["easydict"]


def bicubic_grid(pos, src, dst):
    """Reference resize: CLS row kept, the grid interpolated bicubically (align_corners False)."""
    grid = pos[1:].reshape(1, src[0], src[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=dst, mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(dst[0] * dst[1], -1)])


def test_a_tbps_clip_checkpoint_loads_through_the_config_key(tmp_path):
    clip = tiny_clip()
    want = clip.state_dict()
    path = str(tmp_path / "checkpoint_best.pth")
    save_tbps_clip(path, tbps_clip_layout(want))
    cfg = cfg_of(path, tmp_path, **{"MODEL.TBPS.CONTEXT_LENGTH": 32})
    os.makedirs(cfg.OUTPUT_DIR)
    model = make_model(cfg, 5, 1, 1)
    got = model.state_dict()
    # every tower tensor equals the checkpoint's (position embeddings: fitted, below)
    for key, value in want.items():
        if key in ("attn_mask", "logit_scale", "visual.positional_embedding",
                   "positional_embedding"):
            continue
        target = (key.replace("visual.", "image_tower.visual.", 1) if key.startswith("visual.")
                  else "text_tower.text." + key)
        assert torch.equal(got[target], value), key
    torch.testing.assert_close(got["image_tower.visual.positional_embedding"],
                               bicubic_grid(want["visual.positional_embedding"], (14, 14), (4, 2)))
    assert torch.equal(got["text_tower.text.positional_embedding"],
                       want["positional_embedding"][:32])
    assert model.logit_scale.item() == pytest.approx(3.0)
    # TBPS-CLIP's blocks are QuickGELU
    act = model.image_tower.visual.transformer.resblocks[0].mlp.gelu
    assert type(act).__name__ == "QuickGELU"
    # the report: in the run folder, every skipped head with its reason
    text = open(os.path.join(cfg.OUTPUT_DIR, REPORT_FILE)).read()
    assert "TBPS-CLIP checkpoint" in text and "stripped the 'module.' prefix" in text
    assert "unwrapped 'model'" in text and "SS-I projection MLP: simclr_mlp.0.weight" in text
    assert "unexpected" not in text and "missing (0)" in text
    ckpt = read_tbps_clip_checkpoint(path)
    assert ckpt.input_resolution == (224, 224) and ckpt.text_length == 77
    assert not any(k.startswith("module.") for k in ckpt.state)


def test_stored_non_square_resolution_scale_clamp_and_reset(tmp_path):
    """A checkpoint trained at 96 x 32 (grid 6 x 2, known from its stored config) is resized to
    4 x 2; a logit scale above ln 100 is clamped; RESET_LOGIT_PARAMS skips it (reported)."""
    clip = tiny_clip(logit_scale=6.0)
    state = tbps_clip_layout(clip.state_dict(), heads=False, prefix="")
    torch.manual_seed(4)
    pos = torch.randn(1 + 6 * 2, 64)
    state["visual.positional_embedding"] = pos
    path = str(tmp_path / "ckpt.pth")
    save_tbps_clip(path, state, {"input_resolution": [96, 32], "text_length": 77})
    model = make_model(cfg_of(path, tmp_path), 5, 1, 1)
    torch.testing.assert_close(model.image_tower.visual.positional_embedding,
                               bicubic_grid(pos, (6, 2), (4, 2)))
    assert model.logit_scale.item() == pytest.approx(math.log(100.0))
    reset = make_model(cfg_of(path, tmp_path, **{"MODEL.TBPS.RESET_LOGIT_PARAMS": True,
                                                 "MODEL.TBPS.INIT_TEMPERATURE": 0.02}), 5, 1, 1)
    assert reset.logit_scale.item() == pytest.approx(math.log(50.0))
    text = open(os.path.join(tmp_path / "run", REPORT_FILE)).read()
    assert "RESET_LOGIT_PARAMS True" in text
    # a bare state dict (no wrapper, no config) loads too: the grid is then read as square
    torch.save(tbps_clip_layout(clip.state_dict(), heads=False, prefix=""), path)
    bare = make_model(cfg_of(path, tmp_path), 5, 1, 1)
    torch.testing.assert_close(bare.image_tower.visual.positional_embedding,
                               bicubic_grid(clip.state_dict()["visual.positional_embedding"],
                                            (14, 14), (4, 2)))


def test_id_head_and_logit_bias_are_new_and_kept_at_init(tmp_path):
    clip = tiny_clip()
    path = str(tmp_path / "ckpt.pth")
    save_tbps_clip(path, tbps_clip_layout(clip.state_dict()))
    cfg = cfg_of(path, tmp_path, **{"LOSS.NAMES": "['nitc', 'id', 'sigmoid_id']"})
    model = make_model(cfg, 5, 1, 1)
    assert model.id_head.weight.shape == (5, 64)
    text = open(os.path.join(cfg.OUTPUT_DIR, REPORT_FILE)).read()
    assert "kept at init (3)" in text and "id_head.weight" in text and "logit_bias" in text
    # the TBPS-CLIP ID classifier (its 11 identities) is skipped, not loaded into id_head
    assert "ID classifier (its identities): classifier.weight" in text


def test_mismatches_missing_and_unexpected_keys_are_errors_that_name_them(tmp_path):
    clip = tiny_clip()
    state = tbps_clip_layout(clip.state_dict())
    path = str(tmp_path / "ckpt.pth")
    # another embedding size: every projection mismatches (nothing is loaded)
    save_tbps_clip(path, state)
    with pytest.raises(ValueError, match=r"(?s)does not fit the dual encoder.*OPEN_CLIP_MODEL"
                                         r".*shape mismatch visual.proj: file \(64, 64\) vs "
                                         r"model \(64, 32\)"):
        make_model(cfg_of(path, tmp_path, **{"MODEL.TBPS.EMBED_DIM": 32}), 5, 1, 1)
    # a tower tensor absent from the file, and a key that is neither tower nor known head
    broken = dict(state)
    del broken["module.encode_text.ln_final.weight"]
    broken["module.prompt_learner.ctx"] = torch.zeros(3)
    save_tbps_clip(path, broken)
    with pytest.raises(ValueError, match=r"(?s)unexpected prompt_learner.ctx.*missing "
                                         r"text_tower.text.ln_final.weight"):
        make_model(cfg_of(path, tmp_path), 5, 1, 1)


def test_other_layouts_and_missing_files_are_clear_errors(tmp_path):
    clip = tiny_clip()
    path = str(tmp_path / "clip.pth")
    torch.save({"state_dict": clip.state_dict()}, path)
    with pytest.raises(ValueError, match="not a TBPS-CLIP checkpoint.*give it as "
                                         "MODEL.TBPS.PRETRAINED"):
        read_tbps_clip_checkpoint(path)
    torch.save({"model": {"image_tower.visual.proj": torch.zeros(2, 2)}, "meta": {}}, path)
    with pytest.raises(ValueError, match="PhaseReID dual-encoder checkpoint: evaluate it with "
                                         "TEST.WEIGHT"):
        read_tbps_clip_checkpoint(path)
    torch.save({"model": {"backbone.weight": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match=r"not a TBPS-CLIP model \(keys: backbone.weight"):
        read_tbps_clip_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_tbps_clip_checkpoint(str(tmp_path / "nope.pth"))
    # the config refuses a missing file and clashing weight sources before any work
    with pytest.raises(ConfigError, match="INIT_CHECKPOINT .*nope.pth' does not exist"):
        cfg_of(str(tmp_path / "nope.pth"), tmp_path)
    with pytest.raises(ConfigError, match="set MODEL.TBPS.PRETRAINED ''"):
        cfg_of(path, tmp_path, **{"MODEL.TBPS.PRETRAINED": path})
    for key, value in (("MODEL.TBPS.FAMILY", "hf_siglip"), ("MODEL.TBPS.ARCH", "lgur")):
        with pytest.raises(ConfigError, match="needs MODEL.TASK 'tbps', MODEL.TBPS.ARCH "
                                              "'dual_encoder' and MODEL.TBPS.FAMILY 'open_clip'"):
            cfg_of(path, tmp_path, **{key: value})
    with pytest.raises(ConfigError, match="INIT_CHECKPOINT_FORMAT 'irra' is not one of"):
        cfg_of(path, tmp_path, **{"MODEL.TBPS.INIT_CHECKPOINT_FORMAT": "irra"})


def test_the_easydict_config_needs_the_allow_list_and_nothing_else_is_allowed(tmp_path):
    """The weights-only read lets exactly 'easydict.EasyDict' through (as an OrderedDict): any
    other class in the file is still refused."""
    from utils.weights_io import WeightFileError, read_weights
    clip = tiny_clip()
    path = str(tmp_path / "ckpt.pth")
    save_tbps_clip(path, tbps_clip_layout(clip.state_dict(), heads=False))
    with pytest.raises(WeightFileError):
        read_weights(path)                       # without the allow-list: refused
    ckpt = read_tbps_clip_checkpoint(path)
    assert isinstance(ckpt.state, dict) and "visual.proj" in ckpt.state

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    torch.save({"model": tbps_clip_layout(clip.state_dict(), heads=False), "config": Evil()},
               path)
    with pytest.raises(WeightFileError):
        read_tbps_clip_checkpoint(path)
