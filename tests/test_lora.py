"""LoRA on the dual encoder's towers through peft (model/lora.py; MODEL.TBPS.LORA): what trains,
the B = 0 start, the merged checkpoint that test.py loads without adapters, no weight decay on
A / B, an exact resume, activation checkpointing, config errors and a missing peft. Tiny towers
of both families (width 32, 2 layers) on 64 x 32 images."""
import copy
import logging
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from configs import ConfigError, load_config
from datasets.tokenize import build_tokenizer
from model.lora import (SeparateProjectionAttention, apply_lora, has_lora, is_lora_parameter,
                        merged_state_dict)
from model.make_model import make_model
from model.weights import load_for_test
from solver.make_optimizer import make_optimizer, param_groups
from utils.checkpoint import (load_checkpoint, load_resume_state, rng_state, save_checkpoint,
                              save_resume_state, set_rng_state)

SIZE = (64, 32)
CAPTIONS = ["A man in a RED shirt and blue jeans.", "a woman with a black bag",
            "a child with a yellow umbrella"]
FAMILIES = ["open_clip", "hf_siglip"]
LORA = {"MODEL.TBPS.LORA.ENABLE": True, "MODEL.TBPS.LORA.RANK": 4,
        "MODEL.TBPS.LORA.ALPHA": 8.0, "MODEL.TBPS.LORA.DROPOUT": 0.0}


def tbps_cfg(family, **overrides):
    opts = {"MODEL.TASK": "tbps", "MODEL.TBPS.FAMILY": family, "MODEL.TBPS.TINY": True,
            "MODEL.TBPS.PRETRAINED": "", "MODEL.TBPS.EMBED_DIM": 32, "MODEL.DEVICE": "cpu",
            "INPUT.SIZE_TRAIN": list(SIZE), "INPUT.SIZE_TEST": list(SIZE),
            "DATASETS.CAPTION_SOURCE": "annotation", "DATASETS.NAMES": "cuhkpedes",
            "LOSS.NAMES": "['itc', 'id']", "SOLVER.OPTIMIZER_NAME": "AdamW",
            "SOLVER.BASE_LR": 0.01, "SOLVER.WEIGHT_DECAY": 0.05}
    opts.update(overrides)
    return load_config(opts=[str(x) for kv in opts.items() for x in kv])


def lora_cfg(family, **overrides):
    """A tiny config with LoRA on (rank 4, alpha 8, no dropout) and ``overrides`` over it."""
    return tbps_cfg(family, **{**LORA, **overrides})


def build(cfg, seed=0, lora=True):
    torch.manual_seed(seed)
    return make_model(cfg, 4, 1, 1, lora=lora)


def batch_of(cfg, n=3):
    ids, mask = build_tokenizer(cfg)(CAPTIONS[:n])
    gen = torch.Generator().manual_seed(0)
    return {"img": torch.randn(n, 3, *SIZE, generator=gen), "text_ids": ids, "text_mask": mask,
            "pid": torch.arange(n)}


def loss_of(out, batch):
    """Symmetric InfoNCE plus the ID loss: every trainable parameter gets a gradient."""
    img, txt = F.normalize(out["img_feat"], dim=1), F.normalize(out["txt_feat"], dim=1)
    logits = out["logit_scale"] * img @ txt.t() + out.get("logit_bias", 0.0)
    target = torch.arange(len(logits))
    id_logits = out["img_feat"] @ out["id_weight"].t() + out["id_bias"]
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)
            + F.cross_entropy(id_logits, batch["pid"]))


def train_steps(model, optimizer, batch, steps):
    model.train()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_of(model(batch), batch).backward()
        optimizer.step()


def features(model, batch):
    model.eval()
    with torch.no_grad():
        return (model.encode_image(batch["img"]),
                model.encode_text(batch["text_ids"], batch["text_mask"]))


def randomise_b_(model):
    """Non-zero B (A is random already), so the adapters change the function."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


# ----------------------------------------------------------------------------- what trains
@pytest.mark.parametrize("family", FAMILIES)
def test_only_lora_logit_and_id_parameters_train(family, caplog):
    with caplog.at_level(logging.INFO, logger="phasereid"):
        model = build(lora_cfg(family))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n, _ in model.named_parameters() if is_lora_parameter(n)}
    extra = {"logit_scale", "id_head.weight", "id_head.bias"} | (
        {"logit_bias"} if family == "hf_siglip" else set())
    assert trainable == lora | extra
    # 2 blocks x q / k / v / out x 2 towers, an A and a B each
    assert len(lora) == 2 * 4 * 2 * 2
    proj = "attn" if family == "open_clip" else "self_attn"
    for tower in ("image_tower", "text_tower"):
        assert any(f"{tower}." in n and f".{proj}.q_proj.lora_A." in n for n in lora)
    assert has_lora(model)
    log = "\n".join(r.getMessage() for r in caplog.records)
    total = sum(p.numel() for p in model.parameters())
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert f"trainable parameters {count:,} of {total:,}" in log and "rank 4, alpha 8" in log


def test_towers_and_targets_choose_the_adapted_layers():
    cfg = lora_cfg("hf_siglip", **{"MODEL.TBPS.LORA.TOWERS": "['image']",
                                   "MODEL.TBPS.LORA.TARGETS": "['v', 'mlp']"})
    model = build(cfg)
    adapted = {n.split(".lora_A.")[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert adapted == {f"image_tower.vision.encoder.layers.{i}.{m}" for i in range(2)
                       for m in ("self_attn.v_proj", "mlp.fc1", "mlp.fc2")}
    assert not any(p.requires_grad for p in model.text_tower.parameters())   # frozen whole
    # the pooling head's own attention is not a target
    assert not any("head." in n for n in adapted)


# ----------------------------------------------------------------------------- B = 0 start
@pytest.mark.parametrize("family", FAMILIES)
def test_initial_lora_forward_equals_the_base(family):
    cfg = lora_cfg(family)
    plain = build(cfg, lora=False)
    adapted = apply_lora_copy(plain, cfg)
    batch = batch_of(cfg)
    plain.eval(), adapted.eval()
    with torch.no_grad():
        a, b = plain(batch), adapted(batch)
    for key in ("img_feat", "txt_feat", "img_tokens", "txt_tokens"):
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)


def apply_lora_copy(model, cfg):
    copy_ = copy.deepcopy(model)
    apply_lora(copy_, cfg)
    return copy_


@pytest.mark.parametrize("batch_first", [True, False])
def test_separate_projection_attention_is_multihead_attention(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    sep = SeparateProjectionAttention.from_multihead(mha)
    x = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    causal = torch.full((5, 5), float("-inf")).triu(1)
    per_head = torch.randn(2 * 4, 5, 5)
    for mask in (None, causal, causal.isinf(), per_head):
        want = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
        torch.testing.assert_close(sep(x, x, x, need_weights=False, attn_mask=mask)[0], want)
    back = sep.to_multihead()
    for (n, p), (m, q) in zip(mha.state_dict().items(), back.state_dict().items()):
        assert n == m and torch.equal(p, q)
    with pytest.raises(ValueError, match="need_weights False"):
        sep(x, x, x)


# ----------------------------------------------------------------------------- a training step
@pytest.mark.parametrize("family", FAMILIES)
def test_training_changes_lora_parameters_only(family):
    cfg = lora_cfg(family)
    model = build(cfg)
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    optimizer, _ = make_optimizer(cfg, model)
    train_steps(model, optimizer, batch_of(cfg), 2)   # step 1 moves B only (A's gradient is 0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for name, value in model.state_dict().items():
        changed = not torch.equal(value, before[name])
        assert changed == (name in trainable), name


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("family", FAMILIES)
def test_merged_checkpoint_is_evaluated_without_adapters(family, tmp_path):
    cfg = lora_cfg(family)
    model = build(cfg)
    randomise_b_(model)
    batch = batch_of(cfg)
    want = features(model, batch)
    live = {n: p.clone() for n, p in model.state_dict().items()}
    path = str(tmp_path / "transformer_1.pth")
    save_checkpoint(path, model, cfg, 1, 4, 1, 1, exclude_prefixes=("id_head.",),
                    merged_lora_state=merged_state_dict(model))
    # the live model is untouched by the merge of its copy
    assert all(torch.equal(v, live[n]) for n, v in model.state_dict().items())
    ckpt = load_checkpoint(path)
    assert ckpt["meta"]["lora_merged"] is True
    assert not any("lora_" in k or "base_layer" in k for k in ckpt["model"])
    # test.py: the stored config (LoRA on), the towers built without adapters, a strict load
    stored = load_config(config_text=ckpt["meta"]["config"])
    assert stored.MODEL.TBPS.LORA.ENABLE
    plain = make_model(stored, 4, 1, 1, load_weights=False, lora=False)
    assert not has_lora(plain)
    load_for_test(plain, ckpt, ckpt["meta"], path, logging.getLogger("phasereid"))
    got = features(plain, batch)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(want[0], features(build(cfg, lora=False), batch)[0], atol=1e-3)


def test_a_merged_checkpoint_loads_as_pretrain_self_under_new_adapters(tmp_path):
    cfg = lora_cfg("open_clip")
    model = build(cfg)
    randomise_b_(model)
    path = str(tmp_path / "transformer_1.pth")
    save_checkpoint(path, model, cfg, 1, 4, 1, 1, merged_lora_state=merged_state_dict(model))
    again = build(lora_cfg("open_clip", **{"MODEL.PRETRAIN_CHOICE": "self",
                                                   "MODEL.PRETRAIN_PATH": path}), seed=5)
    assert has_lora(again)
    batch = batch_of(cfg)
    for g, w in zip(features(again, batch), features(model, batch)):   # fresh B = 0 on top
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


class _Scheduler:
    """resume.pth stores a scheduler state; the LR schedule is not under test here."""

    def state_dict(self):
        return {}


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_continues_bit_exactly(family, tmp_path):
    cfg = lora_cfg(family, **{"MODEL.TBPS.LORA.DROPOUT": 0.1})   # dropout draws RNG
    batch = batch_of(cfg)
    model = build(cfg)
    optimizer, _ = make_optimizer(cfg, model)
    train_steps(model, optimizer, batch, 2)
    save_resume_state(str(tmp_path), 2, model, {"model": optimizer}, _Scheduler(), None,
                      config=cfg.dump())
    rng = rng_state()
    train_steps(model, optimizer, batch, 2)
    resumed = build(cfg, seed=7)
    state = load_resume_state(str(tmp_path))
    resumed.load_state_dict(state["model"])
    optimizer2, _ = make_optimizer(cfg, resumed)
    optimizer2.load_state_dict(state["optimizers"]["model"])
    set_rng_state(rng)
    train_steps(resumed, optimizer2, batch, 2)
    want = model.state_dict()
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, want[name]), name


# ----------------------------------------------------------------------------- optimiser
@pytest.mark.parametrize("no_decay_bias_norm", [True, False])
def test_lora_parameters_get_no_weight_decay(no_decay_bias_norm):
    cfg = lora_cfg("open_clip", **{"SOLVER.NO_DECAY_BIAS_NORM": no_decay_bias_norm,
                                           "MODEL.TBPS.IMAGE_LR_SCALE": 0.5})
    model = build(cfg)
    decay_of, scale_of = {}, {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in param_groups(cfg, model):
        for p in group["params"]:
            decay_of[names[id(p)]] = group["weight_decay"]
            scale_of[names[id(p)]] = group["lr_scale"]
    lora = [n for n in decay_of if is_lora_parameter(n)]
    assert lora and all(decay_of[n] == 0.0 for n in lora)
    assert decay_of["id_head.weight"] == 0.05           # other weights keep their decay
    assert set(decay_of) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(scale_of[n] == 0.5 for n in lora if n.startswith("image_tower."))
    assert all(scale_of[n] == 1.0 for n in lora if n.startswith("text_tower."))


# ----------------------------------------------------------------------------- checkpointing
@pytest.mark.parametrize("family", FAMILIES)
def test_grad_checkpointing_gives_the_same_gradients(family):
    grads = []
    for on in (False, True):
        cfg = lora_cfg(family, **{"MODEL.TBPS.GRAD_CHECKPOINTING": on})
        model = build(cfg)
        randomise_b_(model)
        model.train()
        batch = batch_of(cfg)
        loss_of(model(batch), batch).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
        if on and family == "open_clip":
            assert model.image_tower.visual.transformer.grad_checkpointing
            assert model.text_tower.text.transformer.grad_checkpointing
        elif on:
            assert model.image_tower.vision.encoder.layers[0].gradient_checkpointing
            assert model.text_tower.text.encoder.layers[1].gradient_checkpointing
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("overrides,message", [
    ({"MODEL.TBPS.LORA.RANK": 0}, "MODEL.TBPS.LORA.RANK 0 must be an integer >= 1"),
    ({"MODEL.TBPS.LORA.ALPHA": 0.0}, "MODEL.TBPS.LORA.ALPHA 0.0 must be a number > 0"),
    ({"MODEL.TBPS.LORA.DROPOUT": 1.0}, "MODEL.TBPS.LORA.DROPOUT 1.0 must be a number >= 0"),
    ({"MODEL.TBPS.LORA.TARGETS": "['q', 'qkv']"}, "'qkv' is not one of"),
    ({"MODEL.TBPS.LORA.TARGETS": "[]"}, "MODEL.TBPS.LORA.TARGETS is empty"),
    ({"MODEL.TBPS.LORA.TARGETS": "['q', 'v', 'q']"}, r"names \['q'\] more than once"),
    ({"MODEL.TBPS.LORA.TOWERS": "['audio']"}, "'audio' is not one of"),
    ({"MODEL.TBPS.LORA.TOWERS": "[]"}, "MODEL.TBPS.LORA.TOWERS is empty"),
])
def test_bad_lora_values_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        lora_cfg("open_clip", **overrides)


def test_lora_outside_the_dual_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match="LoRA is built for the dual encoder of MODEL.TASK "
                                          "'tbps' only"):
        load_config(opts=["MODEL.TBPS.LORA.ENABLE", "True", "MODEL.DEVICE", "cpu"])


def test_missing_peft_is_one_clear_error(monkeypatch):
    cfg = lora_cfg("hf_siglip")
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError) as err:
        build(cfg)
    assert str(err.value) == ("MODEL.TBPS.LORA.ENABLE True (LoRA on the dual encoder's towers) "
                              "needs the peft package: pip install peft==0.21.2")
    # without LoRA, and for test.py (adapters left out), peft is not needed
    assert not has_lora(build(cfg, lora=False))


# ----------------------------------------------------------------------------- end to end
def test_train_then_test_py_without_peft(synth_root, tmp_path, monkeypatch):
    """train.py with LoRA writes a merged transformer_1.pth (and resume.pth with the adapters);
    test.py evaluates it with peft unavailable, and its plain model is the trained LoRA model."""
    import test as test_script
    import train
    from test_tbps_e2e import QUICKSTART, TINY
    from utils.summary import TestSummary

    out = tmp_path / "run"
    lora = [x for kv in LORA.items() for x in map(str, kv)]
    assert train.main(["--config_file", QUICKSTART, *TINY, *lora, "SOLVER.MAX_EPOCHS", "1",
                       "DATASETS.ROOT_DIR", synth_root, "OUTPUT_DIR", str(out)]) == 0
    weight = str(out / "transformer_1.pth")
    ckpt = load_checkpoint(weight)
    assert ckpt["meta"]["lora_merged"] and not any("lora_" in k for k in ckpt["model"])
    resume = load_resume_state(str(out))
    assert any(is_lora_parameter(k) for k in resume["model"])

    monkeypatch.setitem(sys.modules, "peft", None)
    assert test_script.main(["TEST.WEIGHT", weight, "OUTPUT_DIR", str(tmp_path / "test")]) == 0
    assert TestSummary.read(str(tmp_path / "test" / "summary.json")).epoch == 1
    monkeypatch.undo()

    cfg = load_config(config_text=ckpt["meta"]["config"])
    trained = make_model(cfg, ckpt["meta"]["num_classes"], 1, 1)
    trained.load_state_dict(resume["model"])
    plain = make_model(cfg, ckpt["meta"]["num_classes"], 1, 1, load_weights=False, lora=False)
    load_for_test(plain, ckpt, ckpt["meta"], weight, logging.getLogger("phasereid"))
    batch = batch_of(cfg)
    for got, want in zip(features(plain, batch), features(trained, batch)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
