"""LGUR (model/lgur.py, losses/lgur.py): the ranking loss against plain-Python reference loops for
both negative rules (the semi-hard draw replayed, and its expectation over many draws), the
per-prototype ID loss against a loop of nn.Linear classifiers, the three composer components'
terms, the model's contracts (shapes, padding masked, frozen BERT, evaluation build without the
training-only modules, checkpoints without them), the tiny tokenizer, config validation, and
train -> test.py end to end on the tiny SynthPedes."""
import math
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from configs import load_config
from configs.validate import ConfigError
from losses.lgur import lgur_components, lgur_id_loss, lgur_ranking_loss

RECIPE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "Synth",
                      "lgur_quickstart.yml")
# the quickstart recipe at test size (the conftest tiny SynthPedes)
TINY = ["DATASETS.SYNTH_TRAIN_IDS", "8", "DATASETS.SYNTH_TEST_IDS", "6",
        "DATASETS.SYNTH_IMAGE_SIZE", "[64, 32]", "DATASETS.SYNTH_VAL_IDS", "2",
        "SOLVER.IMS_PER_BATCH", "16", "MODEL.DEVICE", "cpu", "MODEL.LGUR.DICT_SIZE", "20",
        "MODEL.LGUR.DICT_DIM", "32", "MODEL.LGUR.OUT_DIM", "16", "MODEL.LGUR.NUM_PROTOTYPES", "3",
        "MODEL.TBPS.EMBED_DIM", "32", "TEST.VIS_QUERIES", "2", "TEST.VIS_TOPK", "3",
        "DATALOADER.CACHE_IMAGES", "False"]


# ---------------- plain-Python reference loops (float64) ----------------
def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) *
                                                       sum(y * y for y in b))


def _sim(f1, f2):
    A = [[float(v) for v in row.flatten()] for row in f1]
    B = [[float(v) for v in row.flatten()] for row in f2]
    return [[_cos(a, b) for b in B] for a in A]


def _transpose(s):
    return [list(col) for col in zip(*s)]


def loop_rank_side(s, y, margin, negative, draws=None):
    """(sum of the anchor terms, number of anchors with a negative) of the rows of s."""
    total, count = 0.0, 0
    for i, row in enumerate(s):
        if negative == "hardest":
            cands = [j for j in range(len(row)) if y[j] != y[i]]
            if not cands:
                continue
            n = max(cands, key=lambda j: row[j])
        else:
            cands = [j for j in range(len(row))
                     if y[j] != y[i] and row[i] - margin < row[j] < row[i]]
            if not cands:
                continue
            n = max(cands, key=lambda j: draws[i][j])   # the uniform draw of the same RNG
        total += max(margin - row[i] + row[n], 0.0)
        count += 1
    return total, count


def loop_rank(f1, f2, y, margin, negative, reduction, draws=(None, None)):
    s = _sim(f1, f2)
    out = 0.0
    for mat, d in ((s, draws[0]), (_transpose(s), draws[1])):
        total, count = loop_rank_side(mat, y, margin, negative, d)
        out += total / max(count, 1) if reduction == "mean" else total
    return out


def _features(n=8, k=3, o=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    f1 = torch.randn(n, k, o, generator=g, dtype=torch.float64)
    f2 = f1 + 0.8 * torch.randn(n, k, o, generator=g, dtype=torch.float64)
    return f1, f2


PIDS = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_ranking_loss_hardest_matches_the_reference_loop(reduction):
    for seed in range(3):
        f1, f2 = _features(seed=seed)
        got = lgur_ranking_loss(f1, f2, PIDS, margin=0.3, negative="hardest", reduction=reduction)
        want = loop_rank(f1, f2, PIDS.tolist(), 0.3, "hardest", reduction)
        assert got.dtype == torch.float64
        assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_ranking_loss_random_semi_hard_matches_the_loop_on_the_same_draws(reduction):
    n = len(PIDS)
    for seed in range(4):
        f1, f2 = _features(seed=seed)
        gen = torch.Generator().manual_seed(100 + seed)
        got = lgur_ranking_loss(f1, f2, PIDS, margin=0.5, negative="random_semi_hard",
                                reduction=reduction, generator=gen)
        replay = torch.Generator().manual_seed(100 + seed)
        draws = (torch.rand(n, n, generator=replay).tolist(),
                 torch.rand(n, n, generator=replay).tolist())
        want = loop_rank(f1, f2, PIDS.tolist(), 0.5, "random_semi_hard", reduction, draws)
        assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_random_semi_hard_draws_uniformly_among_the_semi_hard_negatives():
    """Independent of the draw mechanics: the mean over many draws is the expectation of the
    released rule, each anchor's mean of relu(m - s_ii + s_ij) over its semi-hard j."""
    f1, f2 = _features(seed=5)
    margin = 0.5
    s = _sim(f1, f2)
    y = PIDS.tolist()
    expected = 0.0
    for mat in (s, _transpose(s)):
        for i, row in enumerate(mat):
            cands = [j for j in range(len(row))
                     if y[j] != y[i] and row[i] - margin < row[j] < row[i]]
            if cands:
                expected += sum(margin - row[i] + row[j] for j in cands) / len(cands)
    gen = torch.Generator().manual_seed(0)
    draws = [lgur_ranking_loss(f1, f2, PIDS, margin=margin, negative="random_semi_hard",
                               generator=gen).item() for _ in range(3000)]
    assert expected > 0.5   # the case has semi-hard negatives to draw from
    assert sum(draws) / len(draws) == pytest.approx(expected, rel=0.02)
    assert len({round(d, 9) for d in draws}) > 3   # it is random


def test_ranking_loss_closed_forms_and_edge_cases():
    e = torch.eye(3, dtype=torch.float64)
    # orthogonal pairs: s_ii = 1, s_ij = 0 -> every hinge relu(0.3 - 1 + 0) = 0
    assert lgur_ranking_loss(e, e, torch.tensor([0, 1, 2])).item() == 0.0
    # one identity: no negatives, nothing to add (not NaN)
    one = lgur_ranking_loss(*_features(n=4), torch.zeros(4, dtype=torch.long))
    assert one.item() == 0.0 and not torch.isnan(one)
    # hardest negative of ANOTHER identity: rows 0 and 1 share pid 0 and are identical, so the
    # hardest column of row 0 would be column 1 (s = 1) were same-identity columns not excluded
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    got = lgur_ranking_loss(a, b, torch.tensor([0, 0, 1]), margin=0.3)
    # rows: i = 0, 1: neg col 2 (s 0.6) -> 0.3 - 1 + 0.6 = -0.1 -> 0; i = 2: s_22 = 0.8, negs 0
    # -> relu(0.3 - 0.8 + 0) = 0. cols: j = 0, 1: neg row 2 (s 0) -> 0; j = 2: s_22 = 0.8,
    # neg rows 0 / 1 (s 0.6) -> 0.3 - 0.8 + 0.6 = 0.1
    assert got.item() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="negative"):
        lgur_ranking_loss(a, b, torch.tensor([0, 0, 1]), negative="semi_hard")


def test_ranking_loss_gradient_reaches_both_sides_and_passes_gradcheck():
    f1, f2 = _features(seed=1)
    f1.requires_grad_(True)
    f2.requires_grad_(True)
    lgur_ranking_loss(f1, f2, PIDS, margin=2.0).backward()   # margin 2: every term active
    assert f1.grad.abs().sum() > 0 and f2.grad.abs().sum() > 0
    inputs = tuple(f.requires_grad_(True) for f in _features(seed=2))
    assert torch.autograd.gradcheck(lambda a, b: lgur_ranking_loss(a, b, PIDS, margin=2.0),
                                    inputs)


def test_id_loss_is_the_mean_over_prototypes_of_each_prototype_classifier():
    torch.manual_seed(0)
    n, k, o, c = 6, 4, 5, 7
    parts = torch.randn(n, k, o, dtype=torch.float64)
    pids = torch.tensor([0, 3, 6, 1, 1, 2])
    heads = [nn.Linear(o, c).double() for _ in range(k)]
    want = sum(F.cross_entropy(heads[j](parts[:, j]), pids) for j in range(k)) / k
    weight = torch.stack([h.weight for h in heads])
    bias = torch.stack([h.bias for h in heads])
    got = lgur_id_loss(parts, pids, weight, bias)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    # a loop by hand for one term, not through nn.Linear / F.cross_entropy
    logits = [[sum(weight[0, cc, d].item() * parts[i, 0, d].item() for d in range(o))
               + bias[0, cc].item() for cc in range(c)] for i in range(n)]
    ce0 = sum(math.log(sum(math.exp(z) for z in row)) - row[pids[i]]
              for i, row in enumerate(logits)) / n
    assert F.cross_entropy(heads[0](parts[:, 0]), pids).item() == pytest.approx(ce0, rel=1e-10)


def test_components_sum_the_papers_terms():
    torch.manual_seed(1)
    n, k, o, c = 8, 3, 4, 5
    out = {key: torch.randn(n, k, o, dtype=torch.float64)
           for key in ("lgur_v_re", "lgur_t_re", "lgur_t", "lgur_v_g")}
    out["lgur_id_weight"] = torch.randn(k, c, o, dtype=torch.float64)
    out["lgur_id_bias"] = torch.randn(k, c, dtype=torch.float64)
    pids = PIDS % c
    v_re, t_re, t, v_g = (out[key] for key in ("lgur_v_re", "lgur_t_re", "lgur_t", "lgur_v_g"))
    w, b = out["lgur_id_weight"], out["lgur_id_bias"]
    ids = sum(lgur_id_loss(f, pids, w, b) for f in (t_re, v_re, t, v_g))
    rk = lambda x, z: loop_rank(x, z, pids.tolist(), 0.3, "hardest", "sum")  # noqa: E731
    assert lgur_components(out, pids, "lgur_id").item() == pytest.approx(ids.item())
    assert lgur_components(out, pids, "lgur_rank_m").item() == pytest.approx(
        rk(t_re, v_re) + rk(t, v_g))
    assert lgur_components(out, pids, "lgur_rank_g").item() == pytest.approx(
        rk(t_re, t) + rk(v_re, v_g))


# ---------------- the model ----------------
def _cfg(*opts):
    return load_config(RECIPE, list(TINY) + list(opts))


def _model(cfg, training=True, num_classes=5):
    from model.make_model import make_model
    torch.manual_seed(0)
    return make_model(cfg, num_classes, 1, 1, training=training)


def _batch(cfg, n=4):
    from datasets.tokenize import build_tokenizer
    tok = build_tokenizer(cfg)
    ids, mask = tok(["a man wearing a red shirt and black pants.", "a woman with a bag"] * (n // 2))
    return {"img": torch.randn(n, 3, 64, 32), "text_ids": ids, "text_mask": mask,
            "pid": torch.arange(n) % 3}


def test_tiny_tokenizer_knows_synthpedes_words_and_masks_padding():
    cfg = _cfg()
    from datasets.tokenize import build_tokenizer
    tok = build_tokenizer(cfg)
    ids, mask = tok(["A slim lady in a navy t-shirt carries a beige shoulder bag!"])
    assert ids.shape == (1, cfg.MODEL.LGUR.CONTEXT_LENGTH)
    words = tok.tokens(ids[0])
    assert words[0] == "[CLS]" and words[-1] == "[SEP]" and "[UNK]" not in words
    assert "navy" in words and int(mask.sum()) == len(words)
    assert tok.tokens(tok(["Zebra-like QUIRKS"])[0][0]).count("[UNK]") == 0   # pieces


def test_model_shapes_and_inference_features_are_the_reconstructed_parts():
    cfg = _cfg()
    model = _model(cfg).eval()
    batch = _batch(cfg)
    g = cfg.MODEL.LGUR
    with torch.no_grad():
        out = model(batch)
        for key in ("lgur_v_re", "lgur_t_re", "lgur_t", "lgur_v_g"):
            assert out[key].shape == (4, g.NUM_PROTOTYPES, g.OUT_DIM)
        assert out["lgur_id_weight"].shape == (g.NUM_PROTOTYPES, 5, g.OUT_DIM)
        assert model.feat_dim == g.NUM_PROTOTYPES * g.OUT_DIM
        assert torch.allclose(model.encode_image(batch["img"]), out["img_feat"], atol=1e-6)
        assert torch.allclose(model.encode_text(batch["text_ids"], batch["text_mask"]),
                              out["txt_feat"], atol=1e-6)
        assert torch.equal(out["img_feat"], out["lgur_v_re"].flatten(1))
        # the text-guided branch changes V_g, not V_re: other captions, same image features
        other = dict(batch, text_ids=batch["text_ids"].flip(0),
                     text_mask=batch["text_mask"].flip(0))
        out2 = model(other)
        assert torch.allclose(out2["img_feat"], out["img_feat"], atol=1e-6)
        assert not torch.allclose(out2["lgur_v_g"], out["lgur_v_g"], atol=1e-4)


def test_padding_never_reaches_the_text_features():
    cfg = _cfg()
    model = _model(cfg).eval()
    batch = _batch(cfg)
    ids, mask = batch["text_ids"], batch["text_mask"]
    noisy = torch.where(mask, ids, torch.randint(5, 60, ids.shape))
    with torch.no_grad():
        assert torch.allclose(model.encode_text(ids, mask), model.encode_text(noisy, mask),
                              atol=1e-5)


def test_bert_is_frozen_and_in_eval_mode_the_rest_trains():
    cfg = _cfg()
    model = _model(cfg).train()
    assert not model.text_tower.bert.training and model.text_tower.lstm.training
    out = model(_batch(cfg))
    (out["lgur_v_g"].sum() + out["lgur_v_re"].sum() + out["lgur_t_re"].sum()).backward()
    assert all(p.grad is None for p in model.text_tower.bert.parameters())
    for name in ("text_tower.lstm.weight_ih_l0", "dga.dictionary", "pgu.prototypes",
                 "text_guided.blocks.0.attn.in_proj_weight", "dga.mask.weight"):
        assert dict(model.named_parameters())[name].grad is not None, name


def test_evaluation_build_has_no_training_only_modules_and_loads_the_checkpoint(tmp_path, caplog):
    from model.weights import TRAINING_ONLY_PREFIXES, load_for_test
    from utils.checkpoint import load_checkpoint, save_checkpoint
    cfg = _cfg()
    model = _model(cfg)
    keys = model.state_dict().keys()
    assert any(k.startswith("text_guided.") for k in keys) and any(
        k.startswith("id_head.") for k in keys)
    path = str(tmp_path / "transformer_1.pth")
    save_checkpoint(path, model, cfg, 1, 5, 1, 1, exclude_prefixes=TRAINING_ONLY_PREFIXES)
    ckpt = load_checkpoint(path)
    assert not [k for k in ckpt["model"] if k.startswith(("text_guided.", "id_head."))]
    evaluation = _model(cfg, training=False)
    assert evaluation.text_guided is None and evaluation.id_head is None
    assert not evaluation.has_guidance
    import logging
    load_for_test(evaluation, ckpt, ckpt["meta"], path, logging.getLogger("phasereid"))
    batch = _batch(cfg)
    model.eval()
    evaluation.eval()
    with torch.no_grad():
        assert torch.allclose(model.encode_image(batch["img"]),
                              evaluation.encode_image(batch["img"]))
        assert "lgur_v_g" not in evaluation(batch)


def test_released_code_options_share_one_dga_block():
    cfg = _cfg("MODEL.LGUR.SHARE_DGA_BLOCK", "True", "MODEL.LGUR.RANK_NEGATIVE",
               "random_semi_hard")
    model = _model(cfg)
    assert model.dga.text is None and model.text_guided is None and model.has_guidance
    out = model(_batch(cfg))
    assert "lgur_v_g" in out


@pytest.mark.parametrize("backbone,opts", [
    ("transreid", ["MODEL.TRANSFORMER_TYPE", "vit_tiny", "MODEL.VIT_DEPTH", "1"]),
    ("resnet50", []),
])
def test_other_image_backbones_give_tokens_mapped_to_the_dictionary_width(backbone, opts):
    cfg = _cfg("MODEL.LGUR.IMAGE_BACKBONE", backbone, "MODEL.LGUR.IMAGE_PRETRAINED", "", *opts)
    model = _model(cfg).eval()
    assert isinstance(model.image_proj, nn.Linear)
    with torch.no_grad():
        assert model.encode_image(torch.randn(2, 3, 64, 32)).shape == (2, model.feat_dim)


def test_config_rules():
    with pytest.raises(ConfigError, match="LGUR's losses"):
        load_config(RECIPE, list(TINY) + ["MODEL.TBPS.ARCH", "dual_encoder"])
    with pytest.raises(ConfigError, match="ARCH 'lgur'"):
        load_config(RECIPE, list(TINY) + ["LOSS.NAMES", "['lgur_id', 'itc']"])
    with pytest.raises(ConfigError, match="RANK_NEGATIVE"):
        load_config(RECIPE, list(TINY) + ["MODEL.LGUR.RANK_NEGATIVE", "semi_hard"])
    with pytest.raises(ConfigError, match="not divisible"):
        load_config(RECIPE, list(TINY) + ["MODEL.LGUR.DGA_HEADS", "5"])
    with pytest.raises(ConfigError, match="MODEL.LGUR.IMAGE_PRETRAINED"):
        load_config(RECIPE, list(TINY) + ["MODEL.LGUR.IMAGE_BACKBONE", "deit_small",
                                          "MODEL.LGUR.IMAGE_PRETRAINED", "/no/such/deit.pth"])


def test_missing_text_model_is_an_error_naming_the_key():
    cfg = _cfg("MODEL.LGUR.TEXT_MODEL", "./no/such/bert")
    with pytest.raises(FileNotFoundError, match="MODEL.LGUR.TEXT_MODEL"):
        _model(cfg)


def test_cuhkpedes_lgur_drop_ids_leaves_the_three_ids_out(tmp_path):
    import json
    from datasets.text_datasets import load_cuhkpedes
    folder = tmp_path / "CUHK-PEDES"
    (folder / "imgs").mkdir(parents=True)
    from PIL import Image
    entries = []
    for k, raw in enumerate([1, 1369, 2, 4116, 6116, 3]):
        name = f"{k}.jpg"
        Image.new("RGB", (8, 16)).save(folder / "imgs" / name)
        entries.append({"split": "train", "captions": ["a man"], "file_path": name, "id": raw})
    entries.append({"split": "test", "captions": ["a man"], "file_path": "0.jpg", "id": 9})
    (folder / "reid_raw.json").write_text(json.dumps(entries))
    assert load_cuhkpedes(str(tmp_path)).num_train_pids == 6
    dropped = load_cuhkpedes(str(tmp_path), lgur_drop_ids=True)
    assert dropped.num_train_pids == 3
    assert sorted(r.attrs["raw_id"] for r in dropped.train) == [1, 2, 3]


def test_lgur_trains_and_test_py_evaluates_its_checkpoint(synth_root, tmp_path):
    import test as test_script
    import train
    from utils.checkpoint import load_checkpoint
    from utils.summary import TestSummary
    out = tmp_path / "run"
    opts = TINY + ["SOLVER.MAX_EPOCHS", "1", "OUTPUT_DIR", str(out), "DATASETS.ROOT_DIR",
                   synth_root, "SOLVER.CHECKPOINT_PERIOD", "1"]
    assert train.main(["--config_file", RECIPE] + opts) == 0
    weight = out / "transformer_1.pth"
    ckpt = load_checkpoint(str(weight))
    assert not [k for k in ckpt["model"] if k.startswith(("text_guided.", "id_head."))]
    test_out = tmp_path / "test"
    assert test_script.main(["TEST.WEIGHT", str(weight), "OUTPUT_DIR", str(test_out)]) == 0
    s = TestSummary.read(str(test_out / "summary.json"))
    assert s.protocol == "text-to-image" and s.epoch == 1
    assert "LGUR" in s.feature
    assert 0.0 <= s.metrics["R1"] <= 100.0


@pytest.mark.parametrize("rel, classes", [("CUHK-PEDES/lgur_deit_small.yml", 11003),
                                          ("ICFG-PEDES/lgur_deit_small.yml", 2792)])
def test_benchmark_recipes_have_the_papers_settings_and_train_a_step(repo_root, rel, classes):
    from losses.make_loss import make_loss
    from solver.make_optimizer import make_optimizer
    from solver.phase_plan import PhasePlan
    from solver.scheduler import make_scheduler
    path = os.path.join(repo_root, "configs", rel)
    cfg = load_config(path, check_paths=False)
    g, s = cfg.MODEL.LGUR, cfg.SOLVER
    assert (cfg.MODEL.TBPS.ARCH, g.IMAGE_BACKBONE, g.TEXT_MODEL) == ("lgur", "deit_small",
                                                                      "bert-base-uncased")
    assert (g.DICT_SIZE, g.DICT_DIM, g.NUM_PROTOTYPES, g.OUT_DIM, g.RANK_MARGIN) == (
        400, 384, 6, 512, 0.3)
    assert g.RANK_NEGATIVE == "hardest" and list(cfg.INPUT.SIZE_TRAIN) == [384, 128]
    assert (cfg.INPUT.PROB, cfg.INPUT.RE_PROB, cfg.INPUT.PADDING) == (0.5, 0.0, 0)
    assert (s.OPTIMIZER_NAME, s.IMS_PER_BATCH, s.MAX_EPOCHS, s.BASE_LR) == ("Adam", 64, 60, 1e-3)
    assert cfg.MODEL.TBPS.IMAGE_LR_SCALE == 0.1 and list(s.STEPS) == [20, 40, 50]
    assert set(cfg.LOSS.NAMES) == {"lgur_id", "lgur_rank_m", "lgur_rank_g"}
    # tiny substitutes for the weights that are not here; the recipe's heads, dims and losses
    cfg = load_config(path, ["MODEL.LGUR.TEXT_MODEL", "tiny", "MODEL.LGUR.IMAGE_PRETRAINED", "",
                             "MODEL.LGUR.CONTEXT_LENGTH", "32", "INPUT.SIZE_TRAIN", "[64, 32]",
                             "INPUT.SIZE_TEST", "[64, 32]", "MODEL.DEVICE", "cpu"])
    plan = PhasePlan(cfg)
    model = _model(cfg, num_classes=classes)
    composer = make_loss(cfg, classes, model.feat_dim)
    optimizer, _ = make_optimizer(cfg, model, composer.center)
    make_scheduler(cfg, optimizer).step(1)
    lrs = {g["lr"] for g in optimizer.param_groups}
    assert lrs == {1e-3, 1e-4}
    batch = _batch(cfg, 8)
    total, parts = composer(model(batch), batch, plan.state(1))
    assert set(parts) >= set(cfg.LOSS.NAMES) and torch.isfinite(total)
    total.backward()
    optimizer.step()
