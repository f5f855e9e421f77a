"""TG-MIM and IS-GVFC on the dual encoder of MODEL.TASK 'tbps' (model/dual_encoder.py): the image
towers' masked forward (open_clip ViT, HF SigLIP ViT, tiny forms), the TG-MIM head's outputs, the
loss and its gradients, the phase plan deciding when the masked forward runs, IS-GVFC on img_feat,
a TG-MIM checkpoint evaluated by test.py without the head, and FREEZE_SEQ's
'<tower>_but_last<k>' entries. Tiny random-init towers (2 blocks) on 64 x 32 images (grid 4 x 2,
patch 16)."""
import math

import numpy as np
import pytest
import torch

from configs import load_config
from conftest import tiny_opts
from losses.make_loss import make_loss
from losses.tgmim import tgmim_loss
from model.clip_fusion import ClipInput
from model.dual_encoder import build_dual_encoder
from model.make_model import make_model
from processor.processor import Trainer, forward_options
from solver.phase_plan import PhasePlan, frozen_parameters
from test_dual_encoder import SIZE, batch_of, tbps_cfg

FAMILIES = ["open_clip", "hf_siglip"]
TGMIM = {"LOSS.TGMIM.ENABLE": True, "LOSS.TGMIM.HEADS": 4}
PATCH = 16


def tgmim_model(family, **overrides):
    cfg = tbps_cfg(family, **{**TGMIM, **overrides})
    torch.manual_seed(0)
    return cfg, build_dual_encoder(cfg)


def patch_embed_of(model):
    tower = model.image_tower
    return tower.visual.conv1 if hasattr(tower, "visual") else \
        tower.vision.embeddings.patch_embedding


# -- the masked forward of each tower ------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_masked_forward_with_nothing_masked_is_the_forward(family):
    _, model = tgmim_model(family)
    model.eval()
    img = model.preprocess(batch_of(tbps_cfg(family))["img"])
    nothing = torch.zeros(2, 4, 2, dtype=torch.bool)
    with torch.no_grad():
        tokens = model.image_tower(img)[1]
        masked = model.image_tower.forward_masked(img, nothing, model.tgmim.mask_token)
    assert masked.shape == tokens.shape == (2, 8, model.embed_dim)
    assert torch.allclose(masked, tokens, atol=1e-6)
    # the hook is gone afterwards: the plain forward is unchanged
    assert not patch_embed_of(model)._forward_hooks


@pytest.mark.parametrize("family", FAMILIES)
def test_mask_token_replaces_the_patch_embedding_before_the_positions(family):
    """Reference: masking a patch with the mask token t = patch_embed(Q) (the embedding of a
    16 x 16 pixel patch Q) must equal the plain forward of the image whose masked cells hold Q.
    This holds only if the replacement happens on the patch embeddings, at the right
    (row-major) positions, with the class token and position embeddings added afterwards."""
    _, model = tgmim_model(family)
    model.eval()
    img = model.preprocess(batch_of(tbps_cfg(family))["img"])
    torch.manual_seed(3)
    patch = torch.randn(1, 3, PATCH, PATCH)
    mask = torch.zeros(2, 4, 2, dtype=torch.bool)
    cells = [(0, 0, 0), (0, 2, 1), (1, 3, 0), (1, 1, 1)]
    edited = img.clone()
    for b, r, c in cells:
        mask[b, r, c] = True
        edited[b, :, r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH] = patch[0]
    with torch.no_grad():
        token = patch_embed_of(model)(patch).reshape(1, 1, -1)
        masked = model.image_tower.forward_masked(img, mask, token)
        reference = model.image_tower(edited)[1]
        plain = model.image_tower(img)[1]
    assert torch.allclose(masked, reference, atol=1e-5)
    assert not torch.allclose(masked, plain, atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_masked_positions_depend_on_the_mask_token(family):
    _, model = tgmim_model(family)
    img = model.preprocess(batch_of(tbps_cfg(family))["img"])
    mask = torch.zeros(2, 4, 2, dtype=torch.bool)
    mask[0, 1, 1] = mask[1, 2, 0] = True
    token = model.tgmim.mask_token
    # a random change (a constant shift would vanish in open_clip's ln_pre)
    shift = torch.randn(token.shape, generator=torch.Generator().manual_seed(0))
    tokens = model.image_tower.forward_masked(img, mask, token)
    other = model.image_tower.forward_masked(img, mask, token.detach() + shift)
    flat = mask.flatten(1)
    assert (tokens - other)[flat].abs().amax(-1).min() > 1e-4
    # the gradient of the masked positions' tokens reaches the mask token; through a random
    # projection: SigLIP's tokens end in post_layernorm (gamma 1 at init), so their plain sum is
    # constant and its gradient is zero up to rounding
    weights = torch.randn(tokens[flat].shape, generator=torch.Generator().manual_seed(1))
    grad, = torch.autograd.grad((tokens[flat] * weights).sum(), token)
    assert grad.abs().sum() > 1e-3
    # without a masked position the mask token plays no part
    nothing = torch.zeros_like(mask)
    assert torch.equal(model.image_tower.forward_masked(img, nothing, token),
                       model.image_tower.forward_masked(img, nothing, token.detach() + shift))


def test_masked_forward_rejects_a_mask_of_another_grid_and_a_wrong_token():
    _, model = tgmim_model("open_clip")
    img = model.preprocess(batch_of(tbps_cfg("open_clip"))["img"])
    with pytest.raises(ValueError, match=r"does not fit the image tower's patch grid"):
        model.image_tower.forward_masked(img, torch.zeros(2, 2, 4, dtype=torch.bool),
                                         model.tgmim.mask_token)
    with pytest.raises(ValueError,
                       match="mask token of 32 values for patch embeddings of width 64"):
        model.image_tower.forward_masked(img, torch.zeros(2, 4, 2, dtype=torch.bool),
                                         torch.zeros(1, 1, 32))
    assert not patch_embed_of(model)._forward_hooks   # removed after the error too


# -- the head and the model's outputs ------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_tgmim_outputs_and_head_shapes(family):
    cfg, model = tgmim_model(family)
    head = model.tgmim
    width = 64 if family == "open_clip" else 32   # tiny open_clip: width 64, projected to D 32
    assert head.grid == (4, 2) and head.stride == PATCH
    assert tuple(head.mask_token.shape) == (1, 1, width)
    assert head.text_proj.in_features == model.embed_dim == 32
    batch = batch_of(cfg)
    plain = model(batch)
    assert not any(k.startswith("tgmim") for k in plain)
    out = model(batch, tgmim=True)
    n, length = 8, batch["text_ids"].shape[1]
    assert out["tgmim_pred"].shape == (2, 3, 64, 32)
    assert out["tgmim_mask"].shape == (2, 4, 2) and out["tgmim_mask"].dtype == torch.bool
    assert out["tgmim_mask"].flatten(1).sum(1).tolist() == [round(0.6 * n)] * 2
    attn = out["tgmim_attn"]
    assert attn.shape == (2, n, length)
    assert torch.allclose(attn.sum(-1), torch.ones(2, n), atol=1e-5)
    # the keys are the caption's tokens of the same forward: padding gets no attention
    assert (attn.masked_select(~batch["text_mask"][:, None, :].expand_as(attn)) == 0).all()
    # the clean outputs are those of the plain forward (the masked pass is a second forward)
    assert torch.allclose(out["img_feat"], plain["img_feat"], atol=1e-6)


def test_tgmim_without_the_head_and_at_another_size_are_errors():
    cfg = tbps_cfg("open_clip")
    model = build_dual_encoder(cfg)
    assert model.tgmim is None
    with pytest.raises(RuntimeError, match="no TG-MIM branch: set LOSS.TGMIM.ENABLE True"):
        model(batch_of(cfg), tgmim=True)
    cfg, model = tgmim_model("open_clip")
    # a pretrained tower's ClipInput resizes another size for the clean forward; the target
    # would then not line up with the prediction
    model.preprocess = ClipInput(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, (0.5,) * 3,
                                 (0.5,) * 3, SIZE, "bicubic")
    batch = batch_of(cfg)
    batch["img"] = torch.randn(2, 3, 96, 32)
    model(batch)
    with pytest.raises(ValueError, match="reconstruction target is batch\\['img'\\]"):
        model(batch, tgmim=True)
    with pytest.raises(ValueError, match="LOSS.TGMIM.HEADS 5 must divide the image width 32"):
        tgmim_model("open_clip", **{"LOSS.TGMIM.HEADS": 5})


@pytest.mark.parametrize("family", FAMILIES)
def test_tgmim_loss_is_finite_and_its_gradient_reaches_token_head_and_towers(family):
    cfg, model = tgmim_model(family, **{"LOSS.TGMIM.W": 2.0})
    composer, plan = make_loss(cfg, 4, model.embed_dim), PhasePlan(cfg)
    state = plan.state(1)
    assert state.weight("tgmim") == 2.0 and forward_options(state, cfg) == {"tgmim": True}
    batch = {**batch_of(cfg), "pid": torch.tensor([0, 1])}
    out = model(batch, **forward_options(state, cfg))
    total, parts = composer(out, batch, state)
    expected = tgmim_loss(out["tgmim_pred"], batch["img"], out["tgmim_mask"])
    assert torch.isfinite(parts["tgmim"]) and torch.allclose(parts["tgmim"], expected.detach())
    total.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for name in ("tgmim.mask_token", "tgmim.text_proj.weight", "tgmim.cross_attn.in_proj_weight",
                 "tgmim.decoder.0.weight", "tgmim.decoder.2.weight"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    patch = [n for n in grads if n.startswith("image_tower.") and
             ("conv1" in n or "patch_embedding" in n) and n.endswith("weight")]
    blocks = [n for n in grads if n.startswith("image_tower.") and
              (".resblocks.0." in n or ".layers.0." in n)]
    assert patch and blocks
    for name in patch + blocks[:2]:
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    # the caption tokens are not detached: the text tower learns from TG-MIM too
    model.zero_grad()
    out = model(batch, tgmim=True)
    tgmim_loss(out["tgmim_pred"], batch["img"], out["tgmim_mask"]).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for n, p in model.named_parameters() if n.startswith("text_tower."))


def test_tgmim_target_is_the_input_normalised_image():
    """With a pretrained tower's normalisation (``preprocess`` a ClipInput) the target is still
    batch['img'], not the tower's input."""
    cfg, model = tgmim_model("open_clip")
    model.preprocess = ClipInput(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, (0.1, 0.2, 0.3),
                                 (0.5, 0.4, 0.3), SIZE, "bicubic")
    composer, plan = make_loss(cfg, 4, 32), PhasePlan(cfg)
    batch = {**batch_of(cfg), "pid": torch.tensor([0, 1])}
    out = model(batch, tgmim=True)
    _, parts = composer(out, batch, plan.state(1))
    on_input = tgmim_loss(out["tgmim_pred"], batch["img"], out["tgmim_mask"])
    on_tower = tgmim_loss(out["tgmim_pred"], model.preprocess(batch["img"]), out["tgmim_mask"])
    assert torch.allclose(parts["tgmim"], on_input.detach())
    assert not torch.allclose(on_input, on_tower)


# -- forward options of the phase plan -----------------------------------------------------------
def test_forward_options_ask_for_the_masked_forward_only_where_tgmim_weighs(synth_root, tmp_path):
    phased = {"LOSS.PHASED.ENABLE": True, "LOSS.PHASED.BOUNDARIES": "[1]",
              "LOSS.PHASED.METRIC_SEQ": "['none', 'none']", "LOSS.PHASED.W_METRIC_SEQ": "[0, 0]",
              "LOSS.PHASED.W_SUP_SPEC": "['const:0', 'const:0']", "SOLVER.MAX_EPOCHS": 2,
              "LOSS.TGMIM.W_SEQ": "['const:0', 'const:10']"}
    cfg = tbps_cfg(**{**TGMIM, **phased})
    plan = PhasePlan(cfg)
    assert forward_options(plan.state(1), cfg) == {}
    assert forward_options(plan.state(2), cfg) == {"tgmim": True}
    cfg = tbps_cfg(**{**TGMIM, **phased, "LOSS.NAMES": "['nitc']"})
    plan = PhasePlan(cfg)
    assert forward_options(plan.state(1), cfg) == {"stop_features": True}
    assert forward_options(plan.state(2), cfg) == {"stop_features": True, "tgmim": True}
    model = build_dual_encoder(cfg)
    out = model(batch_of(cfg), **forward_options(plan.state(2), cfg))
    assert {"img_stop", "txt_stop", "tgmim_pred", "tgmim_mask", "tgmim_attn"} <= set(out)


# -- training, IS-GVFC, test.py ------------------------------------------------------------------
TBPS = {"MODEL.TASK": "tbps", "MODEL.TBPS.TINY": "True", "MODEL.TBPS.PRETRAINED": "",
        "MODEL.TBPS.EMBED_DIM": "32", "DATASETS.CAPTION_SOURCE": "annotation",
        "DATASETS.SYNTH_VAL_IDS": "2", "MODEL.SIE_CAMERA": "False", "LOSS.NAMES": "['itc']",
        "SOLVER.EVAL_PERIOD": "0", "SOLVER.WARMUP_EPOCHS": "0"}


def test_tgmim_trains_only_in_its_epochs_and_its_checkpoint_tests_without_the_head(
        synth_root, tmp_path, monkeypatch):
    """Epoch 1 (TG-MIM weight 0) never calls the masked forward; epoch 2 (weight 10) calls it
    every iteration; transformer_2.pth holds no head, and test.py evaluates it."""
    import test as test_script
    import train
    from model.dual_encoder import OpenClipImageTower
    from utils.checkpoint import load_checkpoint
    from utils.summary import TestSummary
    calls, per_epoch = [], {}
    masked = OpenClipImageTower.forward_masked
    epoch_fn = Trainer.train_epoch

    def counting(self, *args, **kwargs):
        calls.append(1)
        return masked(self, *args, **kwargs)

    def train_epoch(self, epoch, state):
        before = len(calls)
        stats = epoch_fn(self, epoch, state)
        per_epoch[epoch] = (len(calls) - before, stats)
        return stats

    monkeypatch.setattr(OpenClipImageTower, "forward_masked", counting)
    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    out = tmp_path / "run"
    opts = tiny_opts(synth_root, str(out), **{
        **TBPS, **{k: str(v) for k, v in TGMIM.items()}, "SOLVER.MAX_EPOCHS": "2",
        "LOSS.PHASED.ENABLE": "True", "LOSS.PHASED.BOUNDARIES": "[1]",
        "LOSS.PHASED.METRIC_SEQ": "['none', 'none']", "LOSS.PHASED.W_METRIC_SEQ": "[0, 0]",
        "LOSS.PHASED.W_SUP_SPEC": "['const:0', 'const:0']",
        "LOSS.TGMIM.W_SEQ": "['const:0', 'const:10']"})
    assert train.main(["--config_file", ""] + opts) == 0
    assert per_epoch[1][0] == 0 and "tgmim" not in per_epoch[1][1]
    assert per_epoch[2][0] > 0 and math.isfinite(per_epoch[2][1]["tgmim"])
    log = open(out / "train_log.txt").read()
    assert "TG-MIM head on the image tower" in log
    ckpt = load_checkpoint(str(out / "transformer_2.pth"))
    assert not any(k.startswith("tgmim.") for k in ckpt["model"])
    resume = torch.load(out / "resume.pth", weights_only=True)
    assert any(k.startswith("tgmim.") for k in resume["model"])   # resume keeps the head
    test_out = tmp_path / "test"
    assert test_script.main(["TEST.WEIGHT", str(out / "transformer_2.pth"), "OUTPUT_DIR",
                             str(test_out)]) == 0
    summary = TestSummary.read(str(test_out / "summary.json"))
    assert summary.protocol == "text-to-image" and summary.epoch == 2
    # test.py builds the model without the head (utils/eval_config.py: LOSS.TGMIM.ENABLE False);
    # a model built with it from the stored config loads the file too, the head reported
    import logging
    from model.weights import load_for_test
    cfg = load_config(config_text=ckpt["meta"]["config"])
    with_head = make_model(cfg, ckpt["meta"]["num_classes"], 1, 1, load_weights=False)
    assert with_head.tgmim is not None
    records = []
    logger = logging.getLogger("tbps_tgmim_test")
    logger.addHandler(type("H", (logging.Handler,), {"emit": lambda s, r: records.append(
        r.getMessage())})())
    logger.setLevel(logging.INFO)
    assert load_for_test(with_head, ckpt, ckpt["meta"], "x.pth", logger) == "off"
    assert any("Training-only keys not loaded" in r and "tgmim.mask_token" in r for r in records)


def isgvfc_reference(feats, pids, temperature, eps=1e-8):
    """mean_i KL(p_i || q_i + eps), p_i = softmax_j(cos(v_i, v_j) / T) with j = i included,
    q_i = same-identity indicator / its row sum (VFE-TPS compute_iikl): a plain loop."""
    x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    n, total = len(x), 0.0
    for i in range(n):
        logits = [float(x[i] @ x[j]) / temperature for j in range(n)]
        top = max(logits)
        z = sum(math.exp(s - top) for s in logits)
        same = [1.0 if pids[j] == pids[i] else 0.0 for j in range(n)]
        for j in range(n):
            p = math.exp(logits[j] - top) / z
            total += p * (math.log(p) - math.log(same[j] / sum(same) + eps))
    return total / n


def test_isgvfc_reads_img_feat_of_the_dual_encoder():
    cfg = tbps_cfg(**{"LOSS.ISGVFC.ENABLE": True, "LOSS.ISGVFC.MEMORY": False,
                      "LOSS.ISGVFC.T": 0.5})
    model = build_dual_encoder(cfg)
    composer, plan = make_loss(cfg, 4, 32), PhasePlan(cfg)
    ids, mask = batch_of(cfg)["text_ids"], batch_of(cfg)["text_mask"]
    torch.manual_seed(1)
    batch = {"img": torch.randn(4, 3, *SIZE), "text_ids": ids.repeat(2, 1),
             "text_mask": mask.repeat(2, 1), "pid": torch.tensor([0, 0, 1, 1])}
    out = model(batch)
    total, parts = composer(out, batch, plan.state(1))
    ref = isgvfc_reference(out["img_feat"].detach().double().numpy(), [0, 0, 1, 1], 0.5)
    assert parts["isgvfc"].item() == pytest.approx(ref, rel=1e-4, abs=1e-6)
    total.backward()
    assert model.image_tower.visual.conv1.weight.grad.abs().sum() > 0


def test_isgvfc_trains_a_tbps_epoch(synth_root, tmp_path):
    import train
    out = tmp_path / "run"
    opts = tiny_opts(synth_root, str(out), **{**TBPS, "LOSS.ISGVFC.ENABLE": "True",
                                              "SOLVER.MAX_EPOCHS": "1"})
    assert train.main(["--config_file", ""] + opts) == 0
    epoch_line = [line for line in open(out / "train_log.txt") if "Epoch 1/1" in line][0]
    value = float(epoch_line.split(" isgvfc ")[1].split()[0])
    assert math.isfinite(value) and value > 0
    assert (out / "transformer_1.pth").exists()


# -- FREEZE_SEQ: a tower but its last k blocks -----------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_but_last_k_freezes_the_stem_and_the_first_blocks_only(family):
    cfg = tbps_cfg(family)
    model = build_dual_encoder(cfg)
    frozen = {id(p) for p in frozen_parameters(model, ["image_tower_but_last1"])}
    names = {n for n, p in model.named_parameters() if id(p) in frozen}
    blocks = (".visual.transformer.resblocks." if family == "open_clip"
              else ".vision.encoder.layers.")
    stem = (("conv1", "class_embedding", "positional_embedding", "ln_pre")
            if family == "open_clip" else ("embeddings",))
    for name, _ in model.named_parameters():
        if not name.startswith("image_tower."):
            want = False
        elif blocks in name:
            want = name.split(blocks)[1].startswith("0.")     # block 0 of 2
        else:
            want = name.split(".")[2] in stem
        assert (name in names) == want, name
    # the text tower: its stem alone with k = 2 (both blocks train), the whole stem + block 0
    # with k = 1
    text2 = {n for n, p in model.named_parameters()
             if id(p) in {id(q) for q in frozen_parameters(model, ["text_tower_but_last2"])}}
    text1 = {n for n, p in model.named_parameters()
             if id(p) in {id(q) for q in frozen_parameters(model, ["text_tower_but_last1"])}}
    assert text2 and text2 < text1 and all(n.startswith("text_tower.") for n in text1)
    assert not any(".0." in n for n in text2) and any(".0." in n for n in text1 - text2)
    assert not any(".1." in n for n in text1)
    for bad in ("image_tower_but_last0", "image_tower_but_last3"):
        with pytest.raises(ValueError, match=f"'{bad}': the image tower has 2 blocks, so k "
                                             "must be in 1..2"):
            frozen_parameters(model, [bad])
    with pytest.raises(ValueError, match="prefix 'image_tower_but_lastx' matches no parameter"):
        frozen_parameters(model, ["image_tower_but_lastx"])


def test_but_last_k_in_a_phase_leaves_the_frozen_part_unchanged():
    cfg = tbps_cfg(**{"LOSS.PHASED.ENABLE": True, "LOSS.PHASED.BOUNDARIES": "[1]",
                      "LOSS.PHASED.METRIC_SEQ": "['none', 'none']",
                      "LOSS.PHASED.W_METRIC_SEQ": "[0.0, 0.0]",
                      "LOSS.PHASED.W_SUP_SPEC": "['const:0', 'const:0']",
                      "LOSS.PHASED.FREEZE_SEQ": "['image_tower_but_last1, text_tower', '']",
                      "SOLVER.MAX_EPOCHS": 2})
    plan = PhasePlan(cfg)
    model = build_dual_encoder(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(cfg, model, None, None, plan, optimizer, None, None, torch.device("cpu"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.apply_freeze(plan.state(1))
    out = model(batch_of(cfg))
    total = (out["logit_scale"] * (out["img_feat"] * out["txt_feat"]).sum(1)).mean()
    optimizer.zero_grad()
    trainer.backward_and_step(total, 0.0)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert not any(n.startswith("text_tower.") for n in moved)
    assert not any(n.startswith(("image_tower.visual.conv1", "image_tower.visual.ln_pre",
                                 "image_tower.visual.transformer.resblocks.0.")) for n in moved)
    assert "image_tower.visual.proj" in moved and "image_tower.visual.ln_post.weight" in moved
    assert any(n.startswith("image_tower.visual.transformer.resblocks.1.") for n in moved)


def test_a_bad_freeze_entry_stops_training_before_epoch_1(synth_root, tmp_path):
    import os
    import train
    out = tmp_path / "run"
    opts = tiny_opts(synth_root, str(out), **{
        **TBPS, "SOLVER.MAX_EPOCHS": "2", "LOSS.PHASED.ENABLE": "True",
        "LOSS.PHASED.BOUNDARIES": "[1]", "LOSS.PHASED.METRIC_SEQ": "['none', 'none']",
        "LOSS.PHASED.W_METRIC_SEQ": "[0, 0]", "LOSS.PHASED.W_SUP_SPEC": "['const:0', 'const:0']",
        "LOSS.PHASED.FREEZE_SEQ": "['', 'image_tower_but_last5']"})
    with pytest.raises(ValueError, match="'image_tower_but_last5': the image tower has 2 blocks"):
        train.main(["--config_file", ""] + opts)
    assert not any(name.endswith(".pth") for name in os.listdir(out))


def test_tbps_config_accepts_tgmim_and_still_rejects_image_reid_branches(synth_root, tmp_path):
    from configs import ConfigError
    opts = tiny_opts(synth_root, str(tmp_path), **{**TBPS, "LOSS.TGMIM.ENABLE": "True",
                                                   "LOSS.ISGVFC.ENABLE": "True"})
    cfg = load_config(opts=opts)
    assert cfg.LOSS.TGMIM.ENABLE and cfg.MODEL.NAME == "transformer"
    cfg = load_config(opts=opts + ["MODEL.NAME", "resnet50"])   # not read by the dual encoder
    assert make_model(cfg, 6, 1, 1).tgmim is not None
    with pytest.raises(ConfigError, match="CIRCLE.ENABLE True is an image re-ID branch"):
        load_config(opts=opts + ["LOSS.CIRCLE.ENABLE", "True"])


@pytest.mark.parametrize("family", FAMILIES)
def test_masked_forward_with_lora_and_gradient_checkpointing(family):
    """The masked forward is the tower's own forward: it holds with peft's LoRA layers (and
    open_clip's re-expressed attention) and activation checkpointing, and the mask token and the
    adapters get gradients."""
    pytest.importorskip("peft")
    cfg, model = tgmim_model(family, **{"MODEL.TBPS.LORA.ENABLE": True,
                                        "MODEL.TBPS.GRAD_CHECKPOINTING": True})
    img = model.preprocess(batch_of(cfg)["img"])
    nothing = torch.zeros(2, 4, 2, dtype=torch.bool)
    model.eval()
    with torch.no_grad():
        masked = model.image_tower.forward_masked(img, nothing, model.tgmim.mask_token)
        assert torch.allclose(masked, model.image_tower(img)[1], atol=1e-6)
    model.train()
    out = model(batch_of(cfg), tgmim=True)
    tgmim_loss(out["tgmim_pred"], batch_of(cfg)["img"], out["tgmim_mask"]).backward()
    assert model.tgmim.mask_token.grad.abs().sum() > 0
    lora = [p for n, p in model.named_parameters()
            if n.startswith("image_tower.") and ".lora_A." in n]
    assert lora and all(p.grad is not None for p in lora)
