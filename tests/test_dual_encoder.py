"""The dual encoder of MODEL.TASK 'tbps' (model/dual_encoder.py) and its tokenizer
(datasets/tokenize.py): output contract, weight loading with a non-square position-embedding
resize, a local HF SigLIP folder, clear errors, the logit-scale clamp, LR groups and FREEZE_SEQ.
Tiny towers (width 32-64, 2 layers) on 64 x 32 images only."""
import importlib.util
import io
import math
import os

import pytest
import torch

from configs import ConfigError, load_config
from datasets.tokenize import HFCaptionTokenizer, build_tokenizer
from model.clip_fusion import OPEN_CLIP_TINY_KWARGS
from model.dual_encoder import (MAX_LN_SCALE, DualEncoder, bounded_logit_scale,
                                build_dual_encoder)
from model.make_model import make_model
from utils.weights_io import resize_pos_embed

SIZE = (64, 32)          # grid 4 x 2 with patch 16
CAPTIONS = ["A man in a RED shirt and blue jeans.", "a woman with a black bag"]


def tbps_cfg(family="open_clip", tiny=True, **overrides):
    opts = {"MODEL.TASK": "tbps", "MODEL.TBPS.FAMILY": family, "MODEL.TBPS.TINY": str(tiny),
            "MODEL.TBPS.PRETRAINED": "", "MODEL.TBPS.EMBED_DIM": "32", "MODEL.DEVICE": "cpu",
            "INPUT.SIZE_TRAIN": str(list(SIZE)), "INPUT.SIZE_TEST": str(list(SIZE)),
            "DATASETS.CAPTION_SOURCE": "annotation", "DATASETS.NAMES": "cuhkpedes",
            "LOSS.NAMES": "['itc']"}
    opts.update({k: str(v) for k, v in overrides.items()})
    return load_config(opts=[x for kv in opts.items() for x in kv])


def batch_of(cfg, n=2):
    ids, mask = build_tokenizer(cfg)(CAPTIONS[:n])
    torch.manual_seed(0)
    return {"img": torch.randn(n, 3, *SIZE), "text_ids": ids, "text_mask": mask}


def tiny_clip(embed_dim=64, logit_scale=None):
    """A square (224 x 224, grid 14 x 14) tiny open_clip CLIP, as open_clip builds it."""
    import open_clip
    torch.manual_seed(1)
    kwargs = dict(OPEN_CLIP_TINY_KWARGS, embed_dim=embed_dim)
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **kwargs)
    if logit_scale is not None:
        clip.logit_scale.data.fill_(logit_scale)
    return clip


# ----------------------------------------------------------------------------- output contract
@pytest.mark.parametrize("family", ["open_clip", "hf_siglip"])
def test_output_dict_contract_and_shapes(family):
    cfg = tbps_cfg(family)
    model = make_model(cfg, 5, 2, 1)
    assert isinstance(model, DualEncoder) and model.image_grid == (4, 2)
    batch = batch_of(cfg)
    out = model(batch)
    keys = {"img_feat", "txt_feat", "img_tokens", "txt_tokens", "logit_scale"}
    assert set(out) == keys | ({"logit_bias"} if family == "hf_siglip" else set())
    L = 77 if family == "open_clip" else 64          # the tower's own length (CONTEXT_LENGTH 0)
    assert batch["text_ids"].shape == (2, L) and model.context_length == L
    assert out["img_feat"].shape == (2, 32) and out["txt_feat"].shape == (2, 32)
    assert out["img_tokens"].shape == (2, 4 * 2, 32) and out["txt_tokens"].shape == (2, L, 32)
    assert out["logit_scale"].shape == () and out["logit_scale"].item() == pytest.approx(1 / 0.07)
    if family == "hf_siglip":
        assert out["logit_bias"].item() == -10.0
    # global features are not normalised, and they are the pooled token of the same projection
    assert not torch.allclose(out["img_feat"].norm(dim=1), torch.ones(2))
    rows = torch.arange(2)
    pooled_at = (batch["text_ids"].argmax(dim=1) if family == "open_clip"   # EOT
                 else torch.full((2,), L - 1))                             # SigLIP: last position
    torch.testing.assert_close(out["txt_feat"], out["txt_tokens"][rows, pooled_at])
    if family == "open_clip":   # img_feat = ln_post(CLS) @ proj, tokens = ln_post(patches) @ proj
        visual = model.image_tower.visual
        x = visual.ln_post(visual.transformer(visual._embeds(batch["img"])))
        torch.testing.assert_close(out["img_feat"], x[:, 0] @ visual.proj)
        torch.testing.assert_close(out["img_tokens"], x[:, 1:] @ visual.proj)
    # the evaluator's entry points give the same features; every part trains
    model.eval()
    with torch.no_grad():
        out = model(batch)
        torch.testing.assert_close(model.encode_image(batch["img"]), out["img_feat"])
        torch.testing.assert_close(model.encode_text(batch["text_ids"], batch["text_mask"]),
                                   out["txt_feat"])
    model.train()
    out = model(batch)
    (out["logit_scale"] * (out["img_feat"] * out["txt_feat"]).sum()
     + out["img_tokens"].sum() + out["txt_tokens"].sum()).backward()
    assert model.logit_scale.grad is not None
    for name, param in model.named_parameters():
        assert name == "logit_bias" or param.grad is not None, name
    with pytest.raises(KeyError, match="text_ids"):
        model({"img": batch["img"]})
    with pytest.raises(ValueError, match="CONTEXT_LENGTH"):
        model.encode_text(batch["text_ids"][:, :10], batch["text_mask"][:, :10])


def test_siglip_attention_mask_hides_padding_only_when_asked():
    """HF_ATTENTION_MASK True (the mSigLIP repos): a padding token other than the pooled last one
    cannot change txt_feat; False (SigLIP's pretraining): every position is attended."""
    for use_mask, changes in ((True, False), (False, True)):
        cfg = tbps_cfg("hf_siglip", **{"MODEL.TBPS.HF_ATTENTION_MASK": use_mask})
        torch.manual_seed(0)
        model = build_dual_encoder(cfg).eval()
        batch = batch_of(cfg, n=1)
        ids, mask = batch["text_ids"], batch["text_mask"]
        first_pad = int(mask.sum())
        other = ids.clone()
        other[0, first_pad] = 320                  # a padding position, not the last one
        with torch.no_grad():
            a, b = model.encode_text(ids, mask), model.encode_text(other, mask)
        assert (not torch.allclose(a, b)) == changes


# ----------------------------------------------------------------------------- open_clip weights
def test_open_clip_weight_file_loads_at_a_non_square_size(tmp_path):
    """A square tiny CLIP state dict (grid 14 x 14) loads into towers built for 64 x 32: every
    tensor as saved, the image position embedding resized once to 4 x 2 (CLS kept, bicubic)."""
    clip = tiny_clip(logit_scale=3.0)
    path = str(tmp_path / "clip.pth")
    torch.save({"state_dict": clip.state_dict()}, path)
    model = build_dual_encoder(tbps_cfg(**{"MODEL.TBPS.PRETRAINED": path,
                                           "MODEL.TBPS.EMBED_DIM": 64}))
    got, want = model.image_tower.visual.state_dict(), clip.visual.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want if k != "positional_embedding")
    expected = resize_pos_embed(want["positional_embedding"], (14, 14), (4, 2), mode="bicubic")
    torch.testing.assert_close(got["positional_embedding"], expected)
    assert got["positional_embedding"].shape == (1 + 4 * 2, 64)
    text = model.text_tower.text.state_dict()
    for key, value in text.items():
        assert torch.equal(value, clip.state_dict()[key]), key
    assert model.logit_scale.item() == pytest.approx(3.0)      # the file's own scale is kept
    assert isinstance(model.preprocess, torch.nn.Identity)     # tiny towers: INPUT's normalisation
    # RESET_LOGIT_PARAMS starts a fresh scale at 1 / INIT_TEMPERATURE; a file's scale above 100
    # is clamped at build
    reset = build_dual_encoder(tbps_cfg(**{"MODEL.TBPS.PRETRAINED": path,
                                           "MODEL.TBPS.EMBED_DIM": 64,
                                           "MODEL.TBPS.RESET_LOGIT_PARAMS": True,
                                           "MODEL.TBPS.INIT_TEMPERATURE": 0.02}))
    assert reset.logit_scale.item() == pytest.approx(math.log(50.0))
    torch.save(tiny_clip(logit_scale=6.0).state_dict(), path)
    high = build_dual_encoder(tbps_cfg(**{"MODEL.TBPS.PRETRAINED": path,
                                          "MODEL.TBPS.EMBED_DIM": 64}))
    assert high.logit_scale.item() == pytest.approx(MAX_LN_SCALE)
    # test.py builds the same architecture without reading the towers' weights
    bare = build_dual_encoder(tbps_cfg(**{"MODEL.TBPS.PRETRAINED": path,
                                          "MODEL.TBPS.EMBED_DIM": 64}), load_weights=False)
    assert {k: v.shape for k, v in bare.state_dict().items()} == \
        {k: v.shape for k, v in high.state_dict().items()}


def test_make_model_self_loads_a_phasereid_checkpoint(tmp_path):
    cfg = tbps_cfg("hf_siglip")
    torch.manual_seed(3)
    src = build_dual_encoder(cfg)
    src.logit_bias.data.fill_(-4.0)
    path = str(tmp_path / "transformer_1.pth")
    torch.save({"model": src.state_dict()}, path)
    model = make_model(tbps_cfg("hf_siglip", **{"MODEL.PRETRAIN_CHOICE": "self",
                                                "MODEL.PRETRAIN_PATH": path}), 5, 2, 1)
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- HF SigLIP folder
def save_tiny_siglip(folder, with_tokenizer):
    """A tiny SiglipModel (native 32 x 32, grid 2 x 2, 16 positions) saved with save_pretrained,
    plus (with_tokenizer) a SiglipTokenizer on a sentencepiece model trained here."""
    from transformers import SiglipConfig, SiglipModel
    vocab = 40
    if with_tokenizer:
        import sentencepiece as spm
        from transformers import SiglipTokenizer
        model_file = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter([c.lower() for c in CAPTIONS] * 50), model_writer=model_file,
            vocab_size=vocab, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
            pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", hard_vocab_limit=False,
            minloglevel=2)
        spiece = os.path.join(folder, "spiece.model")
        with open(spiece, "wb") as f:
            f.write(model_file.getvalue())
        tokenizer = SiglipTokenizer(vocab_file=spiece, model_max_length=16)
        tokenizer.save_pretrained(folder)
        vocab = tokenizer.vocab_size
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = SiglipConfig(
        text_config=dict(common, vocab_size=vocab, max_position_embeddings=16, pad_token_id=1,
                         bos_token_id=None, eos_token_id=1),
        vision_config=dict(common, image_size=32, patch_size=16))
    torch.manual_seed(2)
    net = SiglipModel(config)
    with torch.no_grad():
        net.logit_scale.fill_(2.0)
        net.logit_bias.fill_(-5.0)
    net.save_pretrained(folder)
    return net


def test_hf_siglip_model_loads_from_a_local_folder(tmp_path):
    net = save_tiny_siglip(str(tmp_path), with_tokenizer=False)
    cfg = tbps_cfg("hf_siglip", tiny=False, **{"MODEL.TBPS.HF_MODEL": str(tmp_path)})
    model = build_dual_encoder(cfg)
    assert model.context_length == 16 and model.image_grid == (4, 2)
    got = {**{f"vision_model.{k}": v for k, v in model.image_tower.vision.state_dict().items()},
           **{f"text_model.{k}": v for k, v in model.text_tower.text.state_dict().items()}}
    want = net.state_dict()
    pos = "vision_model.embeddings.position_embedding.weight"
    assert set(got) == set(want) - {"logit_scale", "logit_bias"}
    assert all(torch.equal(got[k], want[k]) for k in got if k != pos)
    torch.testing.assert_close(got[pos], resize_pos_embed(want[pos], (2, 2), (4, 2), num_prefix=0,
                                                          mode="bicubic"))
    assert model.logit_scale.item() == 2.0 and model.logit_bias.item() == -5.0
    # images normalised with INPUT's mean / std reach the tower with SigLIP's 0.5 / 0.5, also in
    # a model built without its weights (test.py loads a checkpoint over it)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    cfg = tbps_cfg("hf_siglip", tiny=False, **{"MODEL.TBPS.HF_MODEL": str(tmp_path),
                                               "INPUT.PIXEL_MEAN": mean, "INPUT.PIXEL_STD": std})
    img = torch.randn(1, 3, *SIZE)
    pixels = img * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    for built in (build_dual_encoder(cfg), build_dual_encoder(cfg, load_weights=False)):
        torch.testing.assert_close(built.preprocess(img), (pixels - 0.5) / 0.5)
    ids = torch.randint(0, 40, (2, 16))
    out = model({"img": torch.randn(2, 3, *SIZE), "text_ids": ids,
                 "text_mask": torch.ones_like(ids, dtype=torch.bool)})
    assert out["img_tokens"].shape == (2, 8, 32) and out["txt_tokens"].shape == (2, 16, 32)


@pytest.mark.skipif(importlib.util.find_spec("sentencepiece") is None,
                    reason="SigLIP's tokenizer needs the sentencepiece package "
                           "(requirements.txt pins it)")
def test_hf_siglip_tokenizer_loads_from_the_same_folder(tmp_path):
    save_tiny_siglip(str(tmp_path), with_tokenizer=True)
    cfg = tbps_cfg("hf_siglip", tiny=False, **{"MODEL.TBPS.HF_MODEL": str(tmp_path)})
    tok = build_tokenizer(cfg)
    assert isinstance(tok, HFCaptionTokenizer) and tok.context_length == 16
    ids, mask = tok([CAPTIONS[0], "a black bag"])
    assert ids.shape == mask.shape == (2, 16) and ids.dtype == torch.int64
    # sentencepiece pieces end with SigLIP's </s>, which is also its pad token: the mask is the
    # tokenizer's attention mask (row 0 is long enough to be truncated, the end token kept last)
    assert tok.tokenizer.pad_token_id == tok.tokenizer.eos_token_id
    assert bool(mask[0].all()) and int(ids[0, -1]) == tok.tokenizer.eos_token_id
    n = int(mask[1].sum())
    assert n < 16 and not mask[1, n:].any() and int(ids[1, n - 1]) == tok.tokenizer.eos_token_id
    pieces = tok.tokens(ids[1])
    assert len(pieces) == n and pieces[-1] == "</s>" and "".join(pieces[:-1]).replace(
        "\u2581", " ").strip() == "a black bag"
    assert tok(["A MAN"])[0].tolist() == tok(["a man"])[0].tolist()   # lower-cased
    import pickle
    assert torch.equal(pickle.loads(pickle.dumps(tok))(["a black bag"])[0], ids[1:])  # workers
    model = build_dual_encoder(cfg)
    out = model({"img": torch.randn(2, 3, *SIZE), "text_ids": ids, "text_mask": mask})
    assert out["txt_feat"].shape == (2, 32)


# ----------------------------------------------------------------------------- clear errors
def test_missing_weights_and_folders_name_the_key(tmp_path, monkeypatch):
    import open_clip
    import transformers

    with pytest.raises(ValueError, match=r"PRETRAINED 'no_such_tag' is neither a local file nor "
                                         r"a pretrained tag of 'ViT-B-16' \(tags: \[.*'openai'"):
        build_dual_encoder(tbps_cfg(tiny=False, **{"MODEL.TBPS.PRETRAINED": "no_such_tag"}))
    with pytest.raises(ValueError, match="TINY True with MODEL.TBPS.PRETRAINED 'openai'"):
        build_dual_encoder(tbps_cfg(**{"MODEL.TBPS.PRETRAINED": "openai"}))

    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'openai'")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(RuntimeError, match=r"(?s)MODEL.TBPS.PRETRAINED 'openai' of 'ViT-B-16' "
                                           r"could not be loaded \(Failed to download.*local weight"
                                           r" file.*torch.save\(open_clip.create_model\('ViT-B-16'"
                                           r", pretrained='openai'\).*set MODEL.TBPS.PRETRAINED"):
        build_dual_encoder(tbps_cfg(tiny=False, **{"MODEL.TBPS.PRETRAINED": "openai"}))

    missing = str(tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="MODEL.TBPS.PRETRAINED .*missing.pth' does not exist"):
        tbps_cfg(**{"MODEL.TBPS.PRETRAINED": missing})
    with pytest.raises(ConfigError, match="MODEL.TBPS.HF_MODEL .*nope' is not a folder"):
        tbps_cfg("hf_siglip", tiny=False, **{"MODEL.TBPS.HF_MODEL": str(tmp_path / "nope")})

    def not_cached(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", not_cached)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", not_cached)
    hub = tbps_cfg("hf_siglip", tiny=False)          # the default hub id
    hint = (r"(?s)MODEL.TBPS.HF_MODEL: cannot load the {} \(OSError: We couldn't connect.*"
            r"'google/siglip-base-patch16-256-multilingual' is not a local folder.*hf download "
            r"google/siglip-base-patch16-256-multilingual --local-dir DIR.*save_pretrained.*set "
            r"MODEL.TBPS.HF_MODEL to DIR")
    with pytest.raises(OSError, match=hint.format("config")):
        build_dual_encoder(hub)
    with pytest.raises(OSError, match=hint.format("config")):   # the tokenizer's L comes first
        build_tokenizer(hub)
    with pytest.raises(OSError, match=hint.format("tokenizer")):
        build_tokenizer(tbps_cfg("hf_siglip", tiny=False, **{"MODEL.TBPS.CONTEXT_LENGTH": 64}))
    import utils.hf_hub
    monkeypatch.setattr(utils.hf_hub.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(OSError, match="install the sentencepiece package"):
        build_tokenizer(tbps_cfg("hf_siglip", tiny=False, **{"MODEL.TBPS.CONTEXT_LENGTH": 64}))


def test_config_rules():
    with pytest.raises(ConfigError, match="MODEL.TASK 'search' is not one of"):
        tbps_cfg(**{"MODEL.TASK": "search"})
    with pytest.raises(ConfigError, match="MODEL.TBPS.FAMILY 'siglip' is not one of"):
        tbps_cfg("siglip")
    with pytest.raises(ConfigError, match="INIT_TEMPERATURE 0.005 must be a number >= 0.01"):
        tbps_cfg(**{"MODEL.TBPS.INIT_TEMPERATURE": 0.005})
    with pytest.raises(ConfigError, match="CONTEXT_LENGTH 1 must be 0 or an integer >= 2"):
        tbps_cfg(**{"MODEL.TBPS.CONTEXT_LENGTH": 1})
    with pytest.raises(ConfigError, match="PRETRAIN_CHOICE 'imagenet' does not apply to "
                                          "MODEL.TASK 'tbps'"):
        tbps_cfg(**{"MODEL.PRETRAIN_CHOICE": "imagenet", "MODEL.PRETRAIN_PATH": "timm:x"})
    assert load_config().MODEL.TASK == "reid"       # image re-ID stays the default


# ----------------------------------------------------------------------------- logit scale
def test_logit_scale_is_bounded_by_100_with_a_live_gradient():
    s = torch.tensor(math.log(10.0), requires_grad=True)
    kappa = bounded_logit_scale(s)
    kappa.backward()
    assert kappa.item() == pytest.approx(10.0) and s.grad.item() == pytest.approx(10.0)
    for above in (MAX_LN_SCALE, math.log(200.0)):      # at and beyond the bound
        s = torch.tensor(above, requires_grad=True)
        kappa = bounded_logit_scale(s)
        kappa.backward()
        assert kappa.item() == pytest.approx(100.0)
        assert s.grad.item() == pytest.approx(100.0)   # torch.clamp would give 0 here
    model = build_dual_encoder(tbps_cfg())
    model.logit_scale.data.fill_(math.log(200.0))
    assert model(batch_of(tbps_cfg()))["logit_scale"].item() == pytest.approx(100.0)
    model.clamp_logit_scale_()                           # after an optimiser step (open_clip)
    assert model.logit_scale.item() == pytest.approx(MAX_LN_SCALE)
    model.logit_scale.data.fill_(-1.0)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == 0.0


# ----------------------------------------------------------------------------- LR and freezing
def test_lr_scales_give_each_tower_and_the_logit_parameters_their_group():
    from solver.make_optimizer import param_groups
    cfg = tbps_cfg("hf_siglip", **{"MODEL.TBPS.IMAGE_LR_SCALE": 0.1,
                                   "MODEL.TBPS.TEXT_LR_SCALE": 0.2,
                                   "MODEL.TBPS.LOGIT_LR_SCALE": 5.0,
                                   "SOLVER.LR_SCALES": "['text_tower.text.head=0.3']",
                                   "SOLVER.BIAS_LR_FACTOR": 1.0, "SOLVER.BASE_LR": 0.01})
    model = build_dual_encoder(cfg)
    assert model.lr_scales() == {"image_tower.": 0.1, "text_tower.": 0.2, "logit_scale": 5.0,
                                 "logit_bias": 5.0}
    groups = param_groups(cfg, model)
    scale_of = {id(p): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}
    for name, param in model.named_parameters():
        want = (0.1 if name.startswith("image_tower.") else
                0.3 if name.startswith("text_tower.text.head") else
                0.2 if name.startswith("text_tower.") else 5.0)
        assert scale_of[id(param)][0] == want, name
    assert scale_of[id(model.logit_scale)][1] == 0.0 and scale_of[id(model.logit_bias)][1] == 0.0
    assert sorted({round(g["lr"], 9) for g in groups}) == [0.001, 0.002, 0.003, 0.05]


def test_freeze_seq_prefix_freezes_exactly_one_tower():
    """LOSS.PHASED.FREEZE_SEQ ['image_tower', ''] -> in phase A the trainer's freezer drops the
    image tower's gradients (and only those): after a step the image tower is unchanged and the
    text tower and the logit scale have moved; phase B trains everything."""
    from processor.processor import Trainer
    from solver.phase_plan import PhasePlan
    cfg = tbps_cfg(**{"LOSS.NAMES": "['itc']", "LOSS.PHASED.ENABLE": True,
                      "LOSS.PHASED.BOUNDARIES": "[1]", "LOSS.PHASED.METRIC_SEQ": "['none', 'none']",
                      "LOSS.PHASED.W_METRIC_SEQ": "[0.0, 0.0]",
                      "LOSS.PHASED.W_SUP_SPEC": "['const:0', 'const:0']",
                      "LOSS.PHASED.FREEZE_SEQ": "['image_tower', '']", "SOLVER.MAX_EPOCHS": 2,
                      "SOLVER.AMP": False})
    plan = PhasePlan(cfg)
    model = build_dual_encoder(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(cfg, model, None, None, plan, optimizer, None, None, torch.device("cpu"))
    image_ids = {id(p) for p in model.image_tower.parameters()}

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = plan.state(1)
    assert state.freeze == ("image_tower",)
    trainer.apply_freeze(state)
    assert {id(p) for p in trainer._frozen} == image_ids
    out = model(batch_of(cfg))
    total = (out["logit_scale"] * (out["img_feat"] * out["txt_feat"]).sum(1)).mean()
    optimizer.zero_grad()
    trainer.backward_and_step(total, 0.0)
    for name, param in model.named_parameters():
        moved = not torch.equal(param, before[name])
        if name.startswith("image_tower."):
            assert not moved, name
    assert not torch.equal(model.logit_scale, before["logit_scale"])
    assert not torch.equal(model.text_tower.text.text_projection, before[
        "text_tower.text.text_projection"])
    trainer.apply_freeze(plan.state(2))
    assert trainer._frozen == []
