"""TBPS-CLIP Base's components: SS-I (NT-Xent on SimCLR views through the MLP head), MVS-I
(N-ITC averaged with a second MVS view), the image augmentation pools and the caption
augmentation (back-translation, random deletion); datasets/tbps_augment.py, losses/simclr.py."""
import json
import math
import os

import numpy as np
import pytest
import torch

from configs import ConfigError, load_config
from conftest import three_phase_opts, tiny_opts
from datasets.bases import Record, ReIDDataset
from datasets.make_dataloader import (ImageDataset, caption_pairs, check_back_translations,
                                      make_dataloader)
from datasets.tbps_augment import (CaptionAugment, ChooseOps, mvs_pool, random_deletion,
                                   simclr_pool, view_pipelines)
from datasets.text_datasets import parse_caption_entries
from datasets.transforms import cache_transform
from losses import tbps as T
from losses.make_loss import make_loss
from losses.simclr import nt_xent_loss
from model.make_model import make_model
from processor.processor import batch_views, forward_options
from solver.phase_plan import PhasePlan

TBPS = {"MODEL.TASK": "tbps", "MODEL.TBPS.TINY": "True", "MODEL.TBPS.PRETRAINED": "",
        "MODEL.TBPS.EMBED_DIM": "32", "DATASETS.CAPTION_SOURCE": "annotation",
        "DATASETS.SYNTH_VAL_IDS": "2", "MODEL.SIE_CAMERA": "False",
        "LOSS.NAMES": "['nitc', 'ss']", "LOSS.NITC.MVS": "True", "LOSS.SS.HIDDEN_DIM": "8"}


def cfg_of(synth_root, tmp_path, **overrides):
    return load_config(opts=tiny_opts(synth_root, str(tmp_path), **{**TBPS, **overrides}))


# -- NT-Xent ------------------------------------------------------------------------------------
def nt_xent_loop(z1, z2, tau):
    """SimCLR's definition, one anchor at a time: views 2k, 2k+1 of image k."""
    views = []
    for a, b in zip(z1.tolist(), z2.tolist()):
        views += [np.array(a) / np.linalg.norm(a), np.array(b) / np.linalg.norm(b)]
    total = 0.0
    for i, zi in enumerate(views):
        j = i + 1 if i % 2 == 0 else i - 1
        denom = sum(math.exp(zi @ zk / tau) for k, zk in enumerate(views) if k != i)
        total += -math.log(math.exp(zi @ views[j] / tau) / denom)
    return total / len(views)


@pytest.mark.parametrize("n,tau", [(1, 0.1), (5, 0.1), (6, 0.5)])
def test_nt_xent_equals_a_plain_loop_of_its_definition(n, tau):
    g = torch.Generator().manual_seed(n)
    z1 = torch.randn(n, 7, generator=g, dtype=torch.float64)
    z2 = torch.randn(n, 7, generator=g, dtype=torch.float64)
    before = (z1.clone(), z2.clone())
    assert float(nt_xent_loss(z1, z2, tau)) == pytest.approx(nt_xent_loop(z1, z2, tau), rel=1e-9)
    assert torch.equal(z1, before[0]) and torch.equal(z2, before[1])


def test_nt_xent_of_gathered_columns_averages_to_the_whole_batch_loss():
    """Local rows against the views of every process: the mean over the processes of their
    losses is the loss of the concatenated batch (so DDP's averaged gradient is its gradient)."""
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(8, 5, generator=g, dtype=torch.float64)
    z2 = torch.randn(8, 5, generator=g, dtype=torch.float64)
    whole = nt_xent_loss(z1, z2, 0.1)
    per_process = [nt_xent_loss(z1[r * 4:(r + 1) * 4], z2[r * 4:(r + 1) * 4], 0.1,
                                columns=T.Columns(z1, z2, None, r * 4)) for r in range(2)]
    assert float(sum(per_process) / 2) == pytest.approx(float(whole), rel=1e-12)
    with pytest.raises(ValueError, match="do not fit"):
        nt_xent_loss(z1[:4], z2[:4], 0.1, columns=T.Columns(z1, z2, None, 6))


def test_nt_xent_is_low_for_matching_views_and_scale_invariant():
    z = torch.randn(6, 4, dtype=torch.float64)
    assert float(nt_xent_loss(z, 3 * z, 0.1)) < float(nt_xent_loss(z, torch.randn(6, 4,
                                                                   dtype=torch.float64), 0.1))
    assert float(nt_xent_loss(z, z, 0.1)) == pytest.approx(float(nt_xent_loss(2 * z, z, 0.1)))


# -- MVS-I through the composer -------------------------------------------------------------------
def outputs_of(n=8, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda grad=False: torch.randn(n, d, generator=g, requires_grad=grad)  # noqa: E731
    return {"img_feat": r(True), "txt_feat": r(True), "logit_scale": torch.tensor(20.0),
            "img_stop": r(), "txt_stop": r(), "img_mvs_feat": r(True), "img_mvs_stop": r(),
            "ss_z1": r(True), "ss_z2": r(True)}


@pytest.mark.parametrize("stop", ["second_forward", "detached"])
def test_mvs_nitc_is_the_average_of_two_nitc_calls(synth_root, tmp_path, stop):
    cfg = cfg_of(synth_root, tmp_path, **{"LOSS.NITC.STOP_FEATURES": stop, "LOSS.SS.T": "0.2"})
    composer, plan = make_loss(cfg, 4, 16), PhasePlan(cfg)
    out, batch = outputs_of(), {"pid": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    composer.start_epoch(2)   # alpha 0.5
    total, parts = composer(out, batch, plan.state(2))
    v, t, y, vm = out["img_feat"], out["txt_feat"], batch["pid"], out["img_mvs_feat"]
    if stop == "second_forward":
        s_v, s_t, s_vm = out["img_stop"], out["txt_stop"], out["img_mvs_stop"]
    else:
        s_v, s_t, s_vm = v.detach(), t.detach(), vm.detach()
    plain = T.nitc_loss(v, t, y, 20.0, alpha=0.5, img_stop=s_v, txt_stop=s_t)
    mvs = T.nitc_loss(vm, t, y, 20.0, alpha=0.5, img_stop=s_vm, txt_stop=s_t)
    assert torch.allclose(parts["nitc"], 0.5 * (plain + mvs).detach(), atol=1e-6)
    assert torch.allclose(parts["nitc_mvs"], mvs.detach(), atol=1e-6)
    assert not torch.allclose(plain, mvs)
    ss = nt_xent_loss(out["ss_z1"], out["ss_z2"], 0.2)
    assert torch.allclose(parts["ss"], ss.detach(), atol=1e-6)
    assert torch.allclose(total, 0.5 * (plain + mvs) + 0.4 * ss, atol=1e-5)
    total.backward()
    assert vm.grad is not None and vm.grad.abs().sum() > 0 and out["ss_z1"].grad is not None
    missing = {k: x for k, x in out.items() if k != "img_mvs_feat"}
    with pytest.raises(KeyError, match="forward of the MVS view"):
        composer(missing, batch, plan.state(2))


def test_without_mvs_nitc_is_unchanged(synth_root, tmp_path):
    cfg = cfg_of(synth_root, tmp_path, **{"LOSS.NITC.MVS": "False", "LOSS.NAMES": "['nitc']"})
    composer, plan = make_loss(cfg, 4, 16), PhasePlan(cfg)
    out, batch = outputs_of(), {"pid": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    composer.start_epoch(2)
    _, parts = composer(out, batch, plan.state(2))
    ref = T.nitc_loss(out["img_feat"], out["txt_feat"], batch["pid"], 20.0, alpha=0.5,
                      img_stop=out["img_stop"], txt_stop=out["txt_stop"])
    assert torch.allclose(parts["nitc"], ref.detach()) and "nitc_mvs" not in parts
    assert forward_options(plan.state(1), cfg) == {"stop_features": True}
    assert batch_views(plan.state(1), cfg) == ()


# -- the model --------------------------------------------------------------------------------
def test_model_runs_the_views_only_when_asked_and_checkpoints_skip_the_head(synth_root,
                                                                            tmp_path):
    from model.weights import TRAINING_ONLY_PREFIXES
    cfg = cfg_of(synth_root, tmp_path)
    model = make_model(cfg, 6, 1, 1)
    assert [m.out_features for m in model.ss_head if hasattr(m, "out_features")] == [8, 32]
    assert all(k.startswith(TRAINING_ONLY_PREFIXES) for k in model.state_dict() if "ss_head" in k)
    g = torch.Generator().manual_seed(0)
    img = lambda: torch.randn(2, 3, 64, 32, generator=g)  # noqa: E731
    batch = {"img": img(), "text_ids": torch.zeros(2, 77, dtype=torch.long),
             "text_mask": torch.ones(2, 77, dtype=torch.bool), "img_ss1": img(),
             "img_ss2": img(), "img_mvs": img()}
    out = model(batch)
    assert not {"ss_z1", "img_mvs_feat", "img_mvs_stop"} & set(out)
    out = model(batch, stop_features=True, ss=True, mvs=True)
    assert out["ss_z1"].shape == (2, 32) and out["ss_z2"].shape == (2, 32)
    assert torch.allclose(out["img_mvs_feat"], model.encode_image(batch["img_mvs"]), atol=1e-6)
    assert torch.allclose(out["ss_z2"], model.ss_head(model.encode_image(batch["img_ss2"])),
                          atol=1e-5)
    assert not out["img_mvs_stop"].requires_grad and out["img_mvs_feat"].requires_grad
    with pytest.raises(KeyError, match="'img_ss1' view"):
        model({k: v for k, v in batch.items() if k != "img_ss1"}, ss=True)
    plain = make_model(cfg_of(synth_root, tmp_path, **{"LOSS.NAMES": "['nitc']"}), 6, 1, 1)
    assert plain.ss_head is None
    with pytest.raises(RuntimeError, match="no ss_head"):
        plain(batch, ss=True)


# -- image augmentation ---------------------------------------------------------------------------
def uint8_images(n=3, h=64, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


def view_dataset(cfg, cache, **kw):
    recs = [Record(path=f"/x/{i}.png", pid=i, camid=0, captions=[f"a person number {i}"])
            for i in range(len(cache))]
    return ImageDataset(recs, lambda img, gen: img.float(), cfg.INPUT.PIXEL_MEAN,
                        cfg.INPUT.PIXEL_STD, caption_seed=cfg.SOLVER.SEED, cache=cache,
                        views=view_pipelines(cfg), **kw)


def test_views_are_deterministic_per_seed_epoch_index_and_differ(synth_root, tmp_path):
    cfg = cfg_of(synth_root, tmp_path)
    ds = view_dataset(cfg, uint8_images())
    ds.set_views(("img_ss1", "img_ss2", "img_mvs"))
    ds.set_epoch(3)
    a = ds[1]
    for key in ("img_ss1", "img_ss2", "img_mvs"):
        assert a[key].shape == (3, 64, 32) and a[key].dtype == torch.float32
    again = view_dataset(cfg, uint8_images())   # a fresh dataset (a resumed run, a worker)
    again.set_views(("img_mvs", "img_ss2", "img_ss1"))
    again.set_epoch(3)
    b = again[1]
    for key in ("img_ss1", "img_ss2", "img_mvs"):
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["img_ss1"], a["img_ss2"])
    ds.set_epoch(4)
    assert not torch.equal(ds[1]["img_ss1"], a["img_ss1"])
    ds.set_epoch(3)
    assert not torch.equal(ds[2]["img_ss1"], ds[0]["img_ss1"])
    # one view on or off changes nothing else (each has its own stream)
    ds.set_views(("img_ss1",))
    assert torch.equal(ds[1]["img_ss1"], a["img_ss1"]) and "img_mvs" not in ds[1]
    other_seed = view_dataset(cfg_of(synth_root, tmp_path, **{"SOLVER.SEED": "5"}),
                              uint8_images())
    other_seed.set_views(("img_ss1",))
    other_seed.set_epoch(3)
    assert not torch.equal(other_seed[1]["img_ss1"], a["img_ss1"])


def test_views_are_the_same_with_and_without_the_image_cache(synth_root, tmp_path):
    from PIL import Image
    cfg = cfg_of(synth_root, tmp_path)
    raw = uint8_images(2, 100, 40, seed=1)
    paths = []
    for i, t in enumerate(raw):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(t.permute(1, 2, 0).numpy()).save(paths[-1])
    prefix = cache_transform(cfg)
    recs = [Record(path=p, pid=i, camid=0, captions=["x"]) for i, p in enumerate(paths)]
    cache = torch.stack([prefix(Image.open(p).convert("RGB")) for p in paths])
    with_cache = ImageDataset(recs, lambda img, gen: img.float() / 255, [0.5] * 3, [0.5] * 3,
                              cache=cache, views=view_pipelines(cfg))
    from_files = ImageDataset(recs, lambda img, gen: prefix(img).float() / 255, [0.5] * 3,
                              [0.5] * 3, views=view_pipelines(cfg), view_prefix=prefix)
    for ds in (with_cache, from_files):
        ds.set_views(("img_ss1", "img_mvs"))
        ds.set_epoch(2)
    for i in range(2):
        assert torch.equal(with_cache[i]["img_ss1"], from_files[i]["img_ss1"])
        assert torch.equal(with_cache[i]["img_mvs"], from_files[i]["img_mvs"])
    with pytest.raises(ValueError, match="view_prefix"):
        ImageDataset(recs, None, [0.5] * 3, [0.5] * 3, views=view_pipelines(cfg))
    with pytest.raises(KeyError, match="not built"):
        with_cache.set_views(("img_nope",))


def test_mvs_pool_draws_two_ops_with_replacement_and_simclr_pool_changes_the_image(
        synth_root, tmp_path):
    cfg = cfg_of(synth_root, tmp_path)
    pool = mvs_pool(cfg)
    choose = [s for s in pool.transforms if isinstance(s, ChooseOps)][0]
    draws = [choose.chosen(torch.Generator().manual_seed(s)) for s in range(300)]
    assert all(len(d) == 2 and all(0 <= i < 6 for i in d) for d in draws)
    assert any(d[0] == d[1] for d in draws)                 # with replacement
    assert {i for d in draws for i in d} == set(range(6))   # every operation is in the pool
    img = uint8_images(1)[0]
    plain = (img.float() / 255 - 0.5) / 0.5
    ss = simclr_pool(cfg)
    outs = [ss(img, torch.Generator().manual_seed(s)) for s in range(5)]
    assert all(o.shape == plain.shape for o in outs) and not torch.equal(outs[0], outs[1])
    assert not any(torch.allclose(o, plain) for o in outs)
    assert torch.equal(img, uint8_images(1)[0])   # the input is not modified


def test_batches_carry_the_views_only_when_a_loss_needs_them(synth_root, tmp_path):
    phased = {**three_phase_opts(SS=["const:0", "const:0.4", "const:0"],
                                 NITC=["const:1", "const:1", "const:0"]),
              "LOSS.NAMES": "['nitc', 'ss', 'ritc']", "SOLVER.MAX_EPOCHS": "3"}
    cfg = cfg_of(synth_root, tmp_path, **phased)
    plan = PhasePlan(cfg)
    assert batch_views(plan.state(1), cfg) == ("img_mvs",)
    assert batch_views(plan.state(2), cfg) == ("img_ss1", "img_ss2", "img_mvs")
    assert batch_views(plan.state(3), cfg) == ()
    assert forward_options(plan.state(2), cfg) == {"stop_features": True, "ss": True,
                                                   "mvs": True}
    assert forward_options(plan.state(3), cfg) == {}
    data = make_dataloader(cfg)
    assert sorted(data.train_set.views) == ["img_mvs", "img_ss1", "img_ss2"]
    assert not {"img_ss1", "img_mvs"} & set(data.train_set[0])   # nothing until asked
    from processor.processor import Trainer
    trainer = Trainer.__new__(Trainer)
    trainer.cfg, trainer.data = cfg, data
    for epoch, keys in ((1, {"img_mvs"}), (2, {"img_ss1", "img_ss2", "img_mvs"}), (3, set())):
        data.train_set.set_views(batch_views(plan.state(epoch), cfg))
        loader = torch.utils.data.DataLoader(data.train_set, batch_size=4)
        batch = next(iter(loader))
        assert {"img_ss1", "img_ss2", "img_mvs"} & set(batch) == keys, epoch
        assert all(batch[k].shape == batch["img"].shape for k in keys)
    # no views are built for a config without SS-I / MVS-I
    plain = cfg_of(synth_root, tmp_path, **{"LOSS.NAMES": "['nitc']", "LOSS.NITC.MVS": "False"})
    assert view_pipelines(plain) == {}


def test_main_image_from_the_mvs_pool(synth_root, tmp_path):
    cfg = cfg_of(synth_root, tmp_path, **{"INPUT.TBPS_AUG.MAIN": "mvs"})
    data = make_dataloader(cfg)
    data.train_set.set_epoch(1)
    a, b = data.train_set[0]["img"], data.train_set[0]["img"]
    assert torch.equal(a, b) and a.shape == (3, 64, 32)
    assert "ChooseOps" in repr(data.train_set.transform)
    cached = make_dataloader(cfg_of(synth_root, tmp_path, **{"INPUT.TBPS_AUG.MAIN": "mvs",
                                                             "DATALOADER.CACHE_IMAGES": "True"}))
    cached.train_set.set_epoch(1)
    assert torch.equal(cached.train_set[0]["img"], a)


# -- caption augmentation -------------------------------------------------------------------------
def test_random_deletion_properties():
    words = "the man wears a red coat and black shoes".split()
    rng = np.random.default_rng(0)
    assert random_deletion(" ".join(words), 0.0, rng) == " ".join(words)
    assert random_deletion("single", 1.0, rng) == "single"
    assert random_deletion("", 0.5, rng) == ""
    lengths = []
    for seed in range(500):
        rng = np.random.default_rng(seed)
        out = random_deletion(" ".join(words), 0.3, rng).split()
        assert out, seed
        it = iter(words)
        assert all(w in it for w in out)   # an ordered subsequence of the words
        lengths.append(len(out))
    assert 0.6 < np.mean(lengths) / len(words) < 0.8   # p 0.3: about 70 % kept
    for seed in range(50):
        out = random_deletion(" ".join(words), 1.0, np.random.default_rng(seed))
        assert out in words   # all deleted: one word kept


def test_caption_augment_is_deterministic_and_uses_back_translations_at_its_rate():
    aug = CaptionAugment(0.0, 0.1, seed=0)
    used = [aug("original caption", "back translated", epoch=1, index=i) == "back translated"
            for i in range(4000)]
    assert 0.085 < np.mean(used) < 0.115
    assert used == [aug("original caption", "back translated", 1, i) == "back translated"
                    for i in range(4000)]
    assert used != [aug("original caption", "back translated", 2, i) == "back translated"
                    for i in range(4000)]
    assert all(aug("original caption", None, 1, i) == "original caption" for i in range(200))
    assert all(CaptionAugment(0.0, 0.0)("a b c", "x", 1, i) == "a b c" for i in range(50))
    with pytest.raises(ValueError, match="BACKTRANS_P"):
        CaptionAugment(0.0, 1.5)


def test_back_translations_follow_their_captions_into_the_training_items(tmp_path):
    path = tmp_path / "train_reid.json"
    entries = [{"split": "train", "id": 1, "file_path": "a.png",
                "captions": ["first caption", "  ", "third caption"],
                "captions_bt": ["first bt", "ignored", "third bt"]},
               {"split": "train", "id": 2, "file_path": "b.png", "captions": ["no bt here"]}]
    path.write_text(json.dumps(entries))
    train = parse_caption_entries(str(path), "x", "/imgs", "file_path", "captions",
                                  {"train": "train"})["train"]
    assert train[0].attrs["captions_bt"] == ["first bt", "third bt"]
    assert "captions_bt" not in train[1].attrs
    pairs, _ = caption_pairs(train)
    assert [(p.captions, p.attrs.get("captions_bt")) for p in pairs] == [
        (["first caption"], ["first bt"]), (["third caption"], ["third bt"]),
        (["no bt here"], None)]
    ds = ImageDataset(pairs, None, [0.5] * 3, [0.5] * 3,
                      caption_augment=CaptionAugment(0.0, 1.0))
    assert [ds.caption(i) for i in range(3)] == ["first bt", "third bt", "no bt here"]
    entries[0]["captions_bt"] = ["too short"]
    path.write_text(json.dumps(entries))
    with pytest.raises(Exception, match="'captions_bt' must be a list of 3 strings"):
        parse_caption_entries(str(path), "x", "/imgs", "file_path", "captions",
                              {"train": "train"})


def test_back_translation_without_any_captions_bt_is_a_clear_error(synth_root, tmp_path):
    cfg = cfg_of(synth_root, tmp_path, **{"INPUT.TEXT_AUG.BACKTRANS_P": "0.1"})
    ds = ReIDDataset("cuhkpedes", [Record(path="/x.png", pid=0, camid=0, captions=["a b"])], [],
                     [], splits=[], test=[], info={"annotation": "/data/reid_raw.json"})
    with pytest.raises(ValueError, match=r"/data/reid_raw\.json has a 'captions_bt' field"):
        check_back_translations(cfg, ds)
    with pytest.raises(ValueError, match="INPUT.TEXT_AUG.BACKTRANS_P 0.1"):
        make_dataloader(cfg)   # SynthPedes' reid_raw.json has no back-translations


def test_the_new_keys_are_validated(synth_root, tmp_path):
    with pytest.raises(ConfigError, match="LOSS.NITC.MVS True"):
        cfg_of(synth_root, tmp_path, **{"LOSS.NAMES": "['ritc']"})
    with pytest.raises(ConfigError, match="captions_bt"):
        cfg_of(synth_root, tmp_path, **{"INPUT.TEXT_AUG.BACKTRANS_P": "0.1",
                                        "DATASETS.CAPTION_SOURCE": "attributes"})
    with pytest.raises(ConfigError, match="INPUT.TEXT_AUG.DELETE_P"):
        cfg_of(synth_root, tmp_path, **{"INPUT.TEXT_AUG.DELETE_P": "1.5"})
    with pytest.raises(ConfigError, match="INPUT.TBPS_AUG.MAIN"):
        cfg_of(synth_root, tmp_path, **{"INPUT.TBPS_AUG.MAIN": "simclr"})
    with pytest.raises(ConfigError, match="LOSS.SS.T"):
        cfg_of(synth_root, tmp_path, **{"LOSS.SS.T": "0.0"})
    with pytest.raises(ConfigError, match="'ss'\\] are text-based person search losses"):
        load_config(opts=tiny_opts(synth_root, str(tmp_path), **{"LOSS.NAMES": "['id', 'ss']"}))
    with pytest.raises(ConfigError, match="INPUT.TBPS_AUG.MAIN 'mvs'"):
        load_config(opts=tiny_opts(synth_root, str(tmp_path), **{"INPUT.TBPS_AUG.MAIN": "mvs"}))


# -- end to end -----------------------------------------------------------------------------------
def test_tbps_clip_base_trains_a_step_and_test_py_reads_its_checkpoint(synth_root, tmp_path):
    import test as test_py
    import train
    from utils.checkpoint import load_checkpoint
    out = tmp_path / "run"
    opts = tiny_opts(synth_root, str(out), **{
        **TBPS, "LOSS.NAMES": "['nitc', 'ss', 'ritc', 'citc']", "LOSS.SS.W": "0.4",
        "INPUT.TBPS_AUG.MAIN": "mvs", "INPUT.TEXT_AUG.DELETE_P": "0.05",
        "SOLVER.MAX_EPOCHS": "1", "SOLVER.EVAL_PERIOD": "0", "SOLVER.WARMUP_EPOCHS": "0"})
    assert train.main(["--config_file", ""] + opts) == 0
    log = open(out / "train_log.txt").read()
    line = [x for x in log.splitlines() if "Epoch 1/1" in x][0]
    for name in (" nitc ", " nitc_mvs ", " ss ", " ritc ", " citc "):
        assert name in line, name
    ckpt = str(out / "transformer_1.pth")
    assert not any(k.startswith("ss_head.") for k in load_checkpoint(ckpt)["model"])
    assert any(k.startswith("ss_head.") for k in load_checkpoint(str(out / "resume.pth"))["model"])
    assert test_py.main(["TEST.WEIGHT", ckpt, "OUTPUT_DIR", str(tmp_path / "test")]) == 0
    assert os.path.isfile(tmp_path / "test" / "summary.json")


def test_tbps_clip_base_recipe_has_the_reference_settings_and_trains_a_step(repo_root):
    from datasets.tokenize import build_tokenizer
    from solver.make_optimizer import make_optimizer
    tiny = ["MODEL.TBPS.TINY", "True", "MODEL.TBPS.PRETRAINED", "", "MODEL.DEVICE", "cpu",
            "MODEL.TBPS.CONTEXT_LENGTH", "32", "INPUT.SIZE_TRAIN", "[64, 32]",
            "INPUT.SIZE_TEST", "[64, 32]"]
    path = os.path.join(repo_root, "configs", "CUHK-PEDES", "tbps_clip_base.yml")
    ref = load_config(path, check_paths=False)
    assert list(ref.LOSS.NAMES) == ["nitc", "ss", "ritc", "citc"] and ref.LOSS.NITC.MVS
    assert (ref.LOSS.NITC.W, ref.LOSS.SS.W, ref.LOSS.RITC.W, ref.LOSS.CITC.W) == (1.0, 0.4, 1.0,
                                                                                  0.1)
    assert (ref.LOSS.SS.T, ref.LOSS.SS.HIDDEN_DIM, ref.INPUT.TBPS_AUG.MAIN,
            ref.INPUT.TEXT_AUG.DELETE_P) == (0.1, 128, "mvs", 0.05)
    cfg = load_config(path, tiny)
    plan = PhasePlan(cfg)
    model = make_model(cfg, 10, 1, 1)
    composer = make_loss(cfg, 10, model.feat_dim)
    optimizer, _ = make_optimizer(cfg, model, composer.center)
    ids, mask = build_tokenizer(cfg)([f"a person in a red shirt number {i // 2}"
                                      for i in range(8)])
    g = torch.Generator().manual_seed(0)
    batch = {"img": torch.randn(8, 3, 64, 32, generator=g), "text_ids": ids, "text_mask": mask,
             "pid": torch.arange(8) // 2}
    state = plan.state(1)
    for key in batch_views(state, cfg):
        batch[key] = torch.randn(8, 3, 64, 32, generator=g)
    assert sorted(batch_views(state, cfg)) == ["img_mvs", "img_ss1", "img_ss2"]
    total, parts = composer(model(batch, **forward_options(state, cfg)), batch, state)
    assert {"nitc", "nitc_mvs", "ss", "ritc", "citc"} <= set(parts) and torch.isfinite(total)
    total.backward()
    assert model.ss_head[0].weight.grad is not None
    optimizer.step()
