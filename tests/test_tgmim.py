"""TG-MIM: token masks, the masked-pixel L1, the text-guided head, the text encoder and its
weight loading, the attention figure, and the whole branch training on one batch."""
import json
import os

import numpy as np
import pytest
import torch

from configs import load_config
from losses.tgmim import patchify, tgmim_loss
from model.backbones.vit_transreid import build_transreid_backbone
from model.text_encoder import (TextEncoder, build_text_encoder, build_text_tower,
                                text_state_from_clip)
from model.tgmim import TGMIMHead, block_token_mask, random_token_mask
from solver.phase_plan import PhasePlan
from utils.visualize import save_figure, tgmim_attention_figure


# -- masks -------------------------------------------------------------------------------
def test_random_mask_has_the_exact_count_and_differs_per_image():
    torch.manual_seed(0)
    mask = random_token_mask(4, (8, 4), 0.6)
    assert mask.shape == (4, 8, 4) and mask.dtype == torch.bool
    assert mask.flatten(1).sum(1).tolist() == [round(0.6 * 32)] * 4
    assert not torch.equal(mask[0], mask[1])


def test_block_mask_is_made_of_rectangles_and_never_overshoots():
    torch.manual_seed(0)
    grid = (21, 10)
    target = round(0.4 * 210)
    mask = block_token_mask(6, grid, 0.4)
    counts = mask.flatten(1).sum(1)
    assert (counts <= target).all() and (counts >= target - 4).all(), counts
    # blockwise: masked tokens have masked neighbours far more often than random masking
    def neighbour_share(m):
        m = m.float()
        right = (m[:, :, 1:] * m[:, :, :-1]).sum() / m[:, :, :-1].sum()
        return right.item()
    rand = random_token_mask(6, grid, 0.4)
    assert neighbour_share(mask) > neighbour_share(rand) + 0.2


# -- the loss ----------------------------------------------------------------------------
def test_loss_is_the_mean_abs_error_over_masked_pixels_only():
    # 1 image, 2x1 token grid, stride 2: prediction 4x2 pixels, image 5x3 (cropped)
    img = torch.zeros(1, 3, 5, 3)
    pred = torch.zeros(1, 3, 4, 2)
    pred[:, :, :2, :] = 1.0      # token 0 predicts 1 everywhere (error 1)
    pred[:, :, 2:, :] = 3.0      # token 1 predicts 3 (error 3)
    mask = torch.tensor([[[True], [False]]])
    assert tgmim_loss(pred, img, mask).item() == pytest.approx(1.0)
    mask = torch.tensor([[[True], [True]]])
    assert tgmim_loss(pred, img, mask).item() == pytest.approx(2.0)
    img_before = img.clone()
    tgmim_loss(pred, img, mask, norm_target=True)
    assert torch.equal(img, img_before)


def test_loss_matches_a_pixel_loop_and_norm_target_normalises_each_cell():
    torch.manual_seed(1)
    pred, img = torch.randn(2, 3, 6, 4), torch.randn(2, 3, 7, 5)
    mask = torch.tensor([[[1, 0], [0, 1], [1, 1]], [[0, 0], [1, 0], [0, 0]]], dtype=torch.bool)
    total, count = 0.0, 0
    for b in range(2):
        for y in range(6):
            for x in range(4):
                if mask[b, y // 2, x // 2]:
                    total += (pred[b, :, y, x] - img[b, :, y, x]).abs().sum().item()
                    count += 3
    assert tgmim_loss(pred, img, mask).item() == pytest.approx(total / count, rel=1e-5)
    # normalised target: a prediction equal to the normalised cell gives 0 on that cell
    cells = patchify(img[..., :6, :4], 2)
    normed = (cells - cells.mean(-1, keepdim=True)) / (cells.var(-1, keepdim=True,
                                                                 unbiased=False) + 1e-6).sqrt()
    unpatch = normed.reshape(2, 3, 2, 2, 2, 3).permute(0, 5, 1, 3, 2, 4).reshape(2, 3, 6, 4)
    assert tgmim_loss(unpatch, img, mask, norm_target=True).item() == pytest.approx(0.0, abs=1e-5)


# -- the head and the text encoder ---------------------------------------------------------
def tiny_text_encoder(frozen=True, context=16):
    torch.manual_seed(0)
    return TextEncoder(build_text_tower("ViT-B-16", True, context), frozen=frozen)


def test_head_shapes_attention_and_padding():
    torch.manual_seed(0)
    head = TGMIMHead(dim=32, text_dim=64, grid=(4, 2), stride=4, decoder_dim=16, heads=4)
    patches, text = torch.randn(3, 8, 32), torch.randn(3, 6, 64)
    text_mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]],
                             dtype=torch.bool)
    pred, attn = head(patches, text, text_mask)
    assert pred.shape == (3, 3, 16, 8) and attn.shape == (3, 8, 6)
    assert torch.allclose(attn.sum(-1), torch.ones(3, 8), atol=1e-5)
    assert (attn[~text_mask.unsqueeze(1).expand(-1, 8, -1)] == 0).all()
    with pytest.raises(ValueError, match="HEADS 5 must divide"):
        TGMIMHead(32, 64, (4, 2), 4, heads=5)


def test_text_gradients_flow_only_when_the_encoder_is_trainable():
    head = TGMIMHead(dim=32, text_dim=64, grid=(4, 2), stride=4, decoder_dim=16, heads=4)
    ids = torch.randint(1, 1000, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.bool)
    for frozen in (True, False):
        enc = tiny_text_encoder(frozen=frozen)
        enc.train()
        assert enc.tower.training is not frozen
        pred, _ = head(torch.randn(2, 8, 32), enc(ids, mask), mask)
        pred.square().mean().backward()
        grads = [p.grad for p in enc.parameters()]
        if frozen:
            assert all(not p.requires_grad for p in enc.parameters())
            assert all(g is None for g in grads)
        else:
            assert all(g is not None for g in grads if g is not None) and any(
                g is not None and g.abs().sum() > 0 for g in grads)
        assert head.text_proj.weight.grad is not None
        head.zero_grad()


def test_text_weights_load_from_a_saved_open_clip_model(tmp_path):
    import open_clip
    from open_clip.model import CLIP

    torch.manual_seed(3)
    clip = CLIP(embed_dim=64, vision_cfg={"image_size": 32, "layers": 1, "width": 64,
                                          "patch_size": 16},
                text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                          "layers": 2})
    path = tmp_path / "tiny_clip.pth"
    torch.save({"state_dict": clip.state_dict()}, path)
    cfg = load_config(opts=["MODEL.TEXT.TINY", "True", "MODEL.TEXT.PRETRAINED", str(path),
                            "MODEL.TEXT.CONTEXT_LENGTH", "24"])
    enc, report = build_text_encoder(cfg)
    assert "loaded" in report and "truncated 77 -> 24" in report
    assert torch.equal(enc.tower.token_embedding.weight, clip.token_embedding.weight)
    assert torch.equal(enc.tower.positional_embedding, clip.positional_embedding[:24])
    # the tokens equal the CLIP text transformer's own (same weights, truncated context)
    tok = open_clip.get_tokenizer("ViT-B-16", context_length=24)
    ids = tok(["a woman with a red bag"])
    x = clip.token_embedding(ids) + clip.positional_embedding[:24]
    x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:24, :24]))
    assert torch.allclose(enc(ids), x, atol=1e-5)
    # a file of another shape is a clear error
    state, _ = text_state_from_clip(clip.state_dict())
    bad = tmp_path / "bad.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("ln_final")}, bad)
    cfg = load_config(opts=["MODEL.TEXT.TINY", "True", "MODEL.TEXT.PRETRAINED", str(bad)])
    with pytest.raises(RuntimeError, match="missing.*ln_final"):
        build_text_encoder(cfg)
    cfg = load_config(opts=["MODEL.TEXT.TINY", "True"])   # PRETRAINED 'openai' is a tag
    with pytest.raises(ValueError, match="TINY True with MODEL.TEXT.PRETRAINED 'openai'"):
        build_text_encoder(cfg)


# -- the figure ----------------------------------------------------------------------------
def test_attention_figure_draws(tmp_path):
    attn = np.random.default_rng(0).random((8, 6))
    attn /= attn.sum(1, keepdims=True)
    tokens = ["<start_of_text>", "a ", "red ", "bag ", "<end_of_text>", ""]
    fig = tgmim_attention_figure(np.zeros((16, 8, 3)), attn, (4, 2), tokens,
                                 token_mask=np.eye(4, 2, dtype=bool), top=3, title="t")
    path = os.path.join(tmp_path, "attn.png")
    save_figure(fig, path)
    assert os.path.getsize(path) > 1000
    with pytest.raises(ValueError, match="grid 4x3"):
        tgmim_attention_figure(np.zeros((16, 8, 3)), attn, (4, 3), tokens)


# -- the masked backbone forward -----------------------------------------------------------
def test_masked_forward_replaces_masked_patch_embeddings_only():
    torch.manual_seed(0)
    vit = build_transreid_backbone("vit_tiny", img_size=(64, 32), stride_size=16, depth=1,
                                   drop_path_rate=0.0).eval()
    img = torch.randn(2, 3, 64, 32)
    mask_token = torch.randn(1, 1, vit.feat_dim)
    none = torch.zeros(2, vit.num_patches, dtype=torch.bool)
    assert torch.allclose(vit.embed_tokens(img, token_mask=none, mask_token=mask_token),
                          vit.embed_tokens(img))
    mask = none.clone()
    mask[0, 1] = True
    masked = vit.embed_tokens(img, token_mask=mask, mask_token=mask_token)
    clean = vit.embed_tokens(img)
    diff = (masked - clean).abs().sum(-1)
    assert diff[0, 2] > 0 and diff[0, [0, 1, 3, 4, 5, 6, 7, 8]].sum() == 0 and diff[1].sum() == 0
    expected = mask_token[0, 0] + vit.pos_embed[0, 2]
    assert torch.allclose(masked[0, 2], expected, atol=1e-6)


# -- the branch in the model, training, checkpoints ---------------------------------------
TGMIM_OPTS = {
    "DATASETS.CAPTION_SOURCE": "annotation", "MODEL.TEXT.TINY": "True",
    "MODEL.TEXT.PRETRAINED": "''", "MODEL.TEXT.CONTEXT_LENGTH": "64",
    "LOSS.TGMIM.ENABLE": "True", "LOSS.TGMIM.W": "1.0", "LOSS.TGMIM.DECODER_DIM": "32",
    "LOSS.TGMIM.HEADS": "4",
}


def tgmim_model(synth_root, tmp_path, **overrides):
    from conftest import tiny_opts
    from datasets.make_dataloader import build_train_loader, make_dataloader
    from losses.make_loss import make_loss
    from model.make_model import make_model

    cfg = load_config(opts=tiny_opts(synth_root, str(tmp_path), **{**TGMIM_OPTS, **overrides}))
    data = make_dataloader(cfg)
    torch.manual_seed(0)
    model = make_model(cfg, data.num_classes, data.dataset.num_cams, data.dataset.num_views)
    composer = make_loss(cfg, data.num_classes, model.feat_dim)
    data.train_set.set_epoch(1)
    batch = next(iter(build_train_loader(cfg, data.train_set, 4)))
    return cfg, model, composer, batch


def forward(model, batch):
    return model(batch, tgmim=True)


def test_tgmim_loss_falls_when_overfitting_one_batch(synth_root, tmp_path):
    cfg, model, composer, batch = tgmim_model(synth_root, tmp_path)
    state = PhasePlan(cfg).state(1)
    assert state.weight("tgmim") == 1.0
    model.train()
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    losses = []
    for _ in range(40):
        torch.manual_seed(0)          # the same mask every step: a fixed reconstruction task
        outputs = forward(model, batch)
        total, parts = composer(outputs, batch, state)
        assert {"id", "triplet", "tgmim"} <= set(parts)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(parts["tgmim"].item())
    assert losses[-1] < 0.75 * losses[0] and losses == sorted(losses, reverse=True), losses[::8]
    assert outputs["tgmim_pred"].shape == (batch["img"].shape[0], 3, 64, 32)
    assert outputs["tgmim_mask"].shape == (batch["img"].shape[0], 4, 2)
    assert outputs["tgmim_attn"].shape == (batch["img"].shape[0], 8, 64)


@pytest.mark.parametrize("frozen", [True, False])
def test_model_text_gradients_only_when_trainable(synth_root, tmp_path, frozen):
    from solver.make_optimizer import param_groups

    cfg, model, composer, batch = tgmim_model(synth_root, tmp_path,
                                              **{"MODEL.TEXT.FREEZE": str(frozen),
                                                 "MODEL.TEXT.LR_SCALE": "0.1"})
    model.train()
    total, _ = composer(forward(model, batch), batch, PhasePlan(cfg).state(1))
    total.backward()
    # the pooled-output projection is not used by TG-MIM (it reads the tokens)
    text_grads = [p.grad for n, p in model.text_encoder.named_parameters()
                  if "text_projection" not in n]
    head_grads = [p.grad for p in model.tgmim.parameters()]
    assert all(g is not None for g in head_grads)
    if frozen:
        assert all(g is None for g in text_grads)
        assert model.lr_scales() == {}
    else:
        assert all(g is not None for g in text_grads)
        assert model.lr_scales() == {"text_encoder.": 0.1}
        ids = {id(p) for p in model.text_encoder.parameters()}
        text_groups = [g for g in param_groups(cfg, model) if ids & {id(p) for p in g["params"]}]
        assert {g["lr_scale"] for g in text_groups} <= {0.1, 0.1 * cfg.SOLVER.BIAS_LR_FACTOR}


def test_without_tgmim_flag_no_masked_forward_and_errors_name_the_fix(synth_root, tmp_path):
    cfg, model, composer, batch = tgmim_model(synth_root, tmp_path)
    out = model(batch)
    assert not any(k.startswith("tgmim") for k in out)
    with pytest.raises(KeyError, match="tgmim_pred.*LOSS.TGMIM.ENABLE"):
        composer(out, batch, PhasePlan(cfg).state(1))
    no_text = {k: v for k, v in batch.items() if k not in ("text_ids", "text_mask")}
    with pytest.raises(ValueError, match="needs text_ids"):
        model(no_text, tgmim=True)
    from model.make_model import build_tgmim
    bad = load_config(opts=["LOSS.TGMIM.ENABLE", "True"])
    with pytest.raises(ValueError, match="CAPTION_SOURCE is 'none'"):
        build_tgmim(bad, model.backbone)   # the model builder owns the TG-MIM prerequisites


def test_train_with_tgmim_logs_the_loss_and_figure_and_tests_without_the_branch(
        synth_root, tmp_path):
    import test as test_script
    import train as train_script
    from conftest import tiny_opts
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from utils.checkpoint import load_checkpoint

    out = str(tmp_path / "run")
    opts = tiny_opts(synth_root, out, **TGMIM_OPTS, **{"SOLVER.MAX_EPOCHS": "1",
                                                       "SOLVER.EVAL_PERIOD": "0"})
    assert train_script.main(opts) == 0
    log = open(os.path.join(out, "train_log.txt")).read()
    assert "tgmim" in log.split("Epoch 1/1")[1].split("\n")[0]
    events = EventAccumulator(os.path.join(out, "tb"), size_guidance={"images": 0})
    events.Reload()
    assert "train/tgmim" in events.Tags()["scalars"]
    assert "tgmim/attention" in events.Tags()["images"]
    ckpt = load_checkpoint(os.path.join(out, "transformer_1.pth"))
    assert not any(k.startswith(("tgmim.", "text_encoder.")) for k in ckpt["model"])
    resume = load_checkpoint(os.path.join(out, "resume.pth"))
    assert any(k.startswith("text_encoder.") for k in resume["model"])
    test_out = str(tmp_path / "test")
    assert test_script.main(["TEST.WEIGHT", os.path.join(out, "transformer_1.pth"),
                             "OUTPUT_DIR", test_out, "TEST.VIS_QUERIES", "0"]) == 0
    summary = json.load(open(os.path.join(test_out, "summary.json")))
    assert summary["metrics"]["mAP"] > 0


def test_phase_plan_schedules_tgmim_and_the_trainer_skips_it_at_weight_zero():
    from solver.phase_plan import PhasePlan
    from processor.processor import forward_options

    cfg = load_config(opts=["DATASETS.CAPTION_SOURCE", "annotation", "LOSS.TGMIM.ENABLE", "True",
                            "LOSS.PHASED.ENABLE", "True", "LOSS.PHASED.BOUNDARIES", "[2, 4]",
                            "LOSS.PHASED.METRIC_SEQ", "['triplet', 'triplet', 'triplet']",
                            "LOSS.PHASED.W_METRIC_SEQ", "[1.0, 1.0, 1.0]",
                            "LOSS.PHASED.W_SUP_SPEC", "['const:0', 'const:0', 'const:0']",
                            "LOSS.TGMIM.W_SEQ", "['const:0.0', 'linear:10->2', 'const:1']",
                            "SOLVER.MAX_EPOCHS", "6"])
    plan = PhasePlan(cfg)
    assert [plan.state(e).weight("tgmim") for e in range(1, 7)] == [0.0, 0.0, 10.0, 2.0, 1.0, 1.0]
    assert "tgmim" in plan.table()
    assert forward_options(plan.state(1)) == {}
    assert forward_options(plan.state(3)) == {"tgmim": True}
