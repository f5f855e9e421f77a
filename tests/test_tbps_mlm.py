"""IRRA's implicit relation reasoning (IRR / MLM) on the dual encoder: the masking rule
(datasets/mlm.py), the tokenizers' special ids, the loss against a plain loop (losses/mlm.py),
the head (model/mlm.py), the composer / phase plan / forward options, a tiny training run and
test.py-style loading of its checkpoint without the head."""
import math

import pytest
import torch

from configs import ConfigError, load_config
from conftest import tiny_opts
from datasets.mlm import TokenMasker, mask_tokens, mlm_seed
from datasets.tokenize import build_tokenizer_for
from losses.make_loss import make_loss
from losses.mlm import mlm_accuracy, mlm_loss
from model.make_model import make_model
from model.mlm import IRRHead
from processor.processor import forward_options
from solver.phase_plan import PhasePlan

MASK, SOT, EOT, VOCAB = 49405, 49406, 49407, 49408
CLIP_SPECIAL = {SOT, EOT, 0, MASK}
TBPS = {"MODEL.TASK": "tbps", "MODEL.TBPS.TINY": "True", "MODEL.TBPS.PRETRAINED": "",
        "MODEL.TBPS.EMBED_DIM": "32", "DATASETS.CAPTION_SOURCE": "annotation",
        "DATASETS.SYNTH_VAL_IDS": "2", "MODEL.SIE_CAMERA": "False",
        "LOSS.NAMES": "['sdm', 'mlm']", "LOSS.MLM.LAYERS": "1"}


def tbps_opts(synth_root, out, **overrides):
    return tiny_opts(synth_root, out, **{**TBPS, **overrides})


def clip_rows(n=1, words=20, length=32, seed=0):
    """n CLIP-BPE-like rows: SOT, `words` ordinary ids (some 0 = '!'), EOT, padding 0."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, length, dtype=torch.long)
    ids[:, 0] = SOT
    ids[:, 1:words + 1] = torch.randint(0, MASK, (n, words), generator=g)
    ids[:, words + 1] = EOT
    mask = torch.arange(length) <= words + 1
    return ids, mask.expand(n, length).clone()


def masked(ids, mask, seed=0, p=0.15):
    return mask_tokens(ids, mask, mask_id=MASK, vocab_size=VOCAB, special_ids={SOT, EOT, 0},
                       p=p, generator=torch.Generator().manual_seed(seed))


# -- the masking rule ----------------------------------------------------------------------------
def test_specials_padding_and_zero_are_never_chosen_and_labels_are_zero_elsewhere():
    ids, mask = clip_rows(n=400, words=20, seed=1)
    before = ids.clone()
    out, labels = masked(ids, mask, p=0.5)
    assert torch.equal(ids, before)                               # inputs not modified
    special = (ids == SOT) | (ids == EOT) | (ids == 0) | ~mask
    assert not special[labels != 0].any() and torch.equal(out[special], ids[special])
    chosen = labels != 0
    assert torch.equal(labels[chosen], ids[chosen])               # label = the original id
    assert torch.equal(out[~chosen], ids[~chosen])                # unchosen positions untouched
    assert (out[chosen & (out != ids)] != 0).all()


def test_choice_rate_and_the_80_10_10_split_over_many_draws():
    ids, mask = clip_rows(n=3000, words=30, seed=2)
    ordinary = mask & (ids != SOT) & (ids != EOT) & (ids != 0)
    out, labels = masked(ids, mask, seed=3)
    chosen = labels != 0
    n = int(chosen.sum())
    rate = n / int(ordinary.sum())
    # binomial sd at p 0.15 over ~88k tokens is ~0.0012; the none-chosen rule adds ~0.0003
    assert abs(rate - 0.15) < 0.006, rate
    to_mask = (out == MASK) & chosen
    replaced = chosen & (out != MASK) & (out != ids)
    kept = chosen & (out == ids)
    assert abs(int(to_mask.sum()) / n - 0.8) < 0.012
    # a random replacement equals the original with probability ~1/49404: 'kept' absorbs it
    assert abs(int(replaced.sum()) / n - 0.1) < 0.01
    assert abs(int(kept.sum()) / n - 0.1) < 0.01
    rand = out[replaced]
    assert ((rand >= 1) & (rand < MASK)).all()                    # IRRA: random ids 1..49404
    assert len(set(rand.tolist())) > 0.9 * rand.numel()          # spread over the vocabulary


def test_reference_loop_with_the_same_draws():
    """IRRA's per-token loop, fed the uniforms / random ids the function draws, gives the same
    masked ids and labels (the vectorised code is the loop)."""
    ids, mask = clip_rows(n=50, words=12, length=20, seed=4)
    ids[7, 1:13] = 0   # a row whose words are all '!': no ordinary token at all
    seed = 5
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(ids.shape, generator=g, dtype=torch.float64)
    pool = [i for i in range(VOCAB) if i not in CLIP_SPECIAL]
    rand = torch.randint(len(pool), ids.shape, generator=g)
    out, labels = masked(ids, mask, seed=seed)
    for b in range(ids.shape[0]):
        tokens, lab = ids[b].tolist(), []
        for i, token in enumerate(list(tokens)):
            if mask[b, i] and 0 < token < MASK and u[b, i] < 0.15:
                prob = float(u[b, i]) / 0.15
                if prob < 0.8:
                    tokens[i] = MASK
                elif prob < 0.9:
                    tokens[i] = pool[int(rand[b, i])]
                lab.append(token)
            else:
                lab.append(0)
        if all(v == 0 for v in lab):
            first = next((i for i, t in enumerate(tokens) if mask[b, i] and 0 < t < MASK), None)
            if first is not None:
                lab[first], tokens[first] = tokens[first], MASK
        assert out[b].tolist() == tokens and labels[b].tolist() == lab, b
    assert not labels[7].any() and torch.equal(out[7], ids[7])


def test_none_chosen_masks_position_one():
    ids, mask = clip_rows(n=200, words=2, length=8, seed=6)
    ids[:, 1:3] = torch.tensor([320, 786])   # 'a', 'man'
    out, labels = masked(ids, mask, seed=7, p=1e-6)
    assert torch.equal(out[:, 1], torch.full((200,), MASK))
    assert torch.equal(labels[:, 1], ids[:, 1])
    assert not labels[:, 2:].any() and not labels[:, 0].any()
    assert torch.equal(out[:, 2:], ids[:, 2:])


def test_p_one_chooses_every_ordinary_token_and_bad_arguments_are_errors():
    ids, mask = clip_rows(n=4, words=10, seed=8)
    ids[:, 1:11] = 500
    _, labels = masked(ids, mask, p=1.0)
    assert torch.equal(labels[:, 1:11], ids[:, 1:11]) and not labels[:, 11:].any()
    with pytest.raises(ValueError, match=r"not in \(0, 1\]"):
        masked(ids, mask, p=0.0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        mask_tokens(ids, mask, mask_id=VOCAB, vocab_size=VOCAB, special_ids=set())


def test_clip_bpe_tokenizer_specials_and_the_seeded_masker():
    tok = build_tokenizer_for("ViT-B-16", 32, section="MODEL.TBPS")
    assert tok.mask_token_id == MASK and tok.vocab_size == VOCAB
    assert tok.special_token_ids == frozenset(CLIP_SPECIAL)
    masker = TokenMasker.from_tokenizer(tok, p=0.15, seed=1)
    ids, mask = tok(["a man in a red shirt and blue jeans carrying a black bag"])
    a = masker(ids[0], mask[0], epoch=2, index=5)
    b = masker(ids[0], mask[0], epoch=2, index=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])   # per (seed, epoch, index)
    draws = {tuple(masker(ids[0], mask[0], epoch=e, index=i)[1].tolist())
             for e in (1, 2) for i in range(10)}
    assert len(draws) > 10
    assert mlm_seed(1, 2, 5) != mlm_seed(1, 2, 6) != mlm_seed(1, 3, 5)

    class NoMask:
        mask_token_id = None

        def __repr__(self):
            return "HFCaptionTokenizer('siglip')"
    with pytest.raises(ValueError, match="has none.*open_clip"):
        TokenMasker.from_tokenizer(NoMask())


# -- the loss ------------------------------------------------------------------------------------
def test_loss_equals_a_plain_loop_of_cross_entropy_over_the_targets():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.zeros(3, 7, dtype=torch.long)
    labels[0, 1], labels[0, 4], labels[1, 2], labels[2, 6] = 3, 10, 1, 3
    total, count = 0.0, 0
    for b in range(3):
        for i in range(7):
            y = int(labels[b, i])
            if y != 0:
                row = logits[b, i].tolist()
                top = max(row)
                lse = top + math.log(sum(math.exp(v - top) for v in row))
                total += lse - row[y]
                count += 1
    value = mlm_loss(logits, labels)
    assert value.item() == pytest.approx(total / count, rel=1e-12)
    value.backward()
    assert not logits.grad[labels == 0].any()      # non-targets get no gradient
    hits = sum(int(logits[b, i].argmax() == labels[b, i])
               for b in range(3) for i in range(7) if labels[b, i])
    assert mlm_accuracy(logits, labels).item() == pytest.approx(hits / count)
    empty = mlm_loss(logits, torch.zeros_like(labels))
    assert empty.item() == 0.0 and torch.isfinite(empty)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        mlm_loss(logits, labels + 20)


# -- the head ------------------------------------------------------------------------------------
def test_head_shapes_and_the_image_reaches_the_logits():
    torch.manual_seed(0)
    head = IRRHead(32, 100, heads=2, layers=2)
    txt, img = torch.randn(3, 9, 32), torch.randn(3, 5, 32, requires_grad=True)
    out = head(txt, img)
    assert out.shape == (3, 9, 100)
    out[0].sum().backward()
    assert img.grad[0].abs().sum() > 0 and not img.grad[1:].any()   # image i feeds caption i only
    assert len(head.blocks) == 2
    with pytest.raises(ValueError, match="must divide"):
        IRRHead(32, 100, heads=3)


# -- config, composer, plan, model ---------------------------------------------------------------
def test_mlm_config_is_checked_at_load(synth_root, tmp_path):
    load_config(opts=tbps_opts(synth_root, str(tmp_path)))
    with pytest.raises(ConfigError, match="LOSS.MLM.P"):
        load_config(opts=tbps_opts(synth_root, str(tmp_path), **{"LOSS.MLM.P": "0.0"}))
    with pytest.raises(ConfigError, match="LOSS.MLM.LR_SCALE"):
        load_config(opts=tbps_opts(synth_root, str(tmp_path), **{"LOSS.MLM.LR_SCALE": "0.0"}))
    with pytest.raises(ConfigError, match=r"\['mlm'\] are text-based person search losses"):
        load_config(opts=tiny_opts(synth_root, str(tmp_path), **{"LOSS.NAMES": "['id', 'mlm']"}))
    with pytest.raises(ValueError, match="'mlm' weight.*LOSS.NAMES contains 'mlm'"):
        PhasePlan(load_config(opts=tbps_opts(synth_root, str(tmp_path), **{
            "LOSS.NAMES": "['sdm']", "LOSS.MLM.W_SEQ": "['const:1']"})))


def test_masked_forward_only_in_epochs_where_mlm_weighs(synth_root, tmp_path):
    cfg = load_config(opts=tbps_opts(synth_root, str(tmp_path), **{
        "LOSS.PHASED.ENABLE": "True", "LOSS.PHASED.BOUNDARIES": "[1]",
        "LOSS.PHASED.METRIC_SEQ": "['none', 'none']", "LOSS.PHASED.W_METRIC_SEQ": "[0, 0]",
        "LOSS.PHASED.W_SUP_SPEC": "['const:0', 'const:0']",
        "LOSS.MLM.W_SEQ": "['const:0', 'const:1']", "SOLVER.MAX_EPOCHS": "2"}))
    plan = PhasePlan(cfg)
    assert forward_options(plan.state(1), cfg) == {}
    assert forward_options(plan.state(2), cfg) == {"mlm": True}
    model = make_model(cfg, 6, 1, 1)
    calls = []
    model.mlm_head.register_forward_hook(lambda *a: calls.append(1))
    ids = torch.full((2, 77), 0, dtype=torch.long)
    ids[:, 0], ids[:, 1:4], ids[:, 4] = SOT, 320, EOT
    mask = torch.arange(77).expand(2, 77) <= 4
    labels = torch.zeros_like(ids)
    labels[:, 2] = 320
    batch = {"img": torch.randn(2, 3, 64, 32), "text_ids": ids, "text_mask": mask,
             "mlm_ids": torch.where(labels > 0, MASK, ids), "mlm_labels": labels,
             "pid": torch.tensor([0, 1])}
    composer = make_loss(cfg, 6, model.feat_dim)
    out = model(batch, **forward_options(plan.state(1), cfg))
    _, parts = composer(out, batch, plan.state(1))
    assert not calls and "mlm_logits" not in out and "mlm" not in parts
    out = model(batch, **forward_options(plan.state(2), cfg))
    assert calls and out["mlm_logits"].shape == (2, 77, VOCAB)
    total, parts = composer(out, batch, plan.state(2))
    assert torch.allclose(parts["mlm"], mlm_loss(out["mlm_logits"], labels).detach())
    assert "mlm_acc" in parts and torch.allclose(total, parts["sdm"] + parts["mlm"])
    with pytest.raises(KeyError, match="mlm_ids"):
        model({k: v for k, v in batch.items() if k != "mlm_ids"}, mlm=True)
    with pytest.raises(KeyError, match="IRR / MLM forward"):
        composer(model(batch), batch, plan.state(2))


def test_model_builds_the_head_only_with_mlm_and_scales_its_lr(synth_root, tmp_path):
    cfg = load_config(opts=tbps_opts(synth_root, str(tmp_path), **{
        "LOSS.MLM.LR_SCALE": "5.0", "LOSS.MLM.LAYERS": "2"}))
    model = make_model(cfg, 6, 1, 1)
    head = model.mlm_head
    assert head.heads == 1 and head.width == 32 and len(head.blocks) == 2   # 32 // 64 -> 1
    assert head.vocab_size == VOCAB and model.lr_scales()["mlm_head."] == 5.0
    from solver.make_optimizer import make_optimizer
    optimizer, _ = make_optimizer(cfg, model)
    head_params = {id(p) for p in head.parameters()}
    lrs = {g["lr"] for g in optimizer.param_groups
           if any(id(p) in head_params for p in g["params"])}
    base = {g["lr"] for g in optimizer.param_groups
            if any(id(p) in {id(q) for q in model.text_tower.parameters()} for p in g["params"])}
    assert lrs and base and min(lrs) == pytest.approx(5.0 * min(base))
    cfg = load_config(opts=tbps_opts(synth_root, str(tmp_path), **{"LOSS.NAMES": "['sdm']"}))
    assert make_model(cfg, 6, 1, 1).mlm_head is None
    with pytest.raises(RuntimeError, match="no IRR head"):
        make_model(cfg, 6, 1, 1)({"img": torch.randn(1, 3, 64, 32),
                                  "text_ids": torch.zeros(1, 77, dtype=torch.long),
                                  "text_mask": torch.ones(1, 77, dtype=torch.bool)}, mlm=True)


# -- data and training ---------------------------------------------------------------------------
def test_training_items_carry_masked_captions_seeded_per_item(synth_root, tmp_path):
    from datasets.make_dataloader import make_dataloader
    cfg = load_config(opts=tbps_opts(synth_root, str(tmp_path)))
    data = make_dataloader(cfg)
    ds = data.train_set
    ds.set_epoch(1)
    item = ds[3]
    assert item["mlm_ids"].shape == item["text_ids"].shape == item["mlm_labels"].shape
    chosen = item["mlm_labels"] != 0
    assert chosen.any() and torch.equal(item["mlm_labels"][chosen], item["text_ids"][chosen])
    assert torch.equal(item["mlm_ids"][~chosen], item["text_ids"][~chosen])
    again = ds[3]
    assert torch.equal(again["mlm_ids"], item["mlm_ids"])
    ds.set_epoch(2)
    assert not torch.equal(ds[3]["mlm_ids"], item["mlm_ids"])   # a new draw per epoch
    plain = make_dataloader(load_config(opts=tbps_opts(synth_root, str(tmp_path), **{
        "LOSS.NAMES": "['sdm']"}))).train_set[3]
    assert "mlm_ids" not in plain


def test_training_with_mlm_and_testing_the_checkpoint_without_the_head(synth_root, tmp_path):
    import logging

    import train
    from model.weights import load_for_test
    from utils.checkpoint import load_checkpoint
    out = tmp_path / "run"
    opts = tbps_opts(synth_root, str(out), **{
        "SOLVER.MAX_EPOCHS": "1", "SOLVER.EVAL_PERIOD": "0", "SOLVER.WARMUP_EPOCHS": "0"})
    assert train.main(["--config_file", ""] + opts) == 0
    log = open(out / "train_log.txt").read()
    assert " mlm " in log and "mlm_acc" in log
    ckpt = load_checkpoint(str(out / "transformer_1.pth"))
    assert not any(k.startswith("mlm_head.") for k in ckpt["model"])
    resume = torch.load(str(out / "resume.pth"), weights_only=True)
    assert any(k.startswith("mlm_head.") for k in resume["model"])   # resume keeps the head
    cfg = load_config(opts=opts)
    logger = logging.getLogger("phasereid.test_tbps_mlm")
    for names in ("['sdm', 'mlm']", "['sdm']"):                 # with or without the head
        test_cfg = load_config(opts=tbps_opts(synth_root, str(out), **{
            "SOLVER.MAX_EPOCHS": "1", "LOSS.NAMES": names}))
        model = make_model(test_cfg, *(ckpt["meta"][k] for k in (
            "num_classes", "num_cams", "num_views")), load_weights=False, lora=False)
        load_for_test(model, ckpt, ckpt["meta"], "transformer_1.pth", logger)
        trained = ckpt["model"]["text_tower.text.token_embedding.weight"]
        assert torch.equal(model.text_tower.text.token_embedding.weight, trained)
    assert cfg.LOSS.NAMES == ["sdm", "mlm"]
