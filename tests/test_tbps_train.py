"""Training side of text-based person search (MODEL.TASK 'tbps'): validation splits, (image,
caption) pair items, the TBPS losses through the composer and the phase plan, the trainer's
logit-scale clamp and N-ITC's stop-gradient forward."""
import math

import numpy as np
import pytest
import torch

from configs import ConfigError, load_config
from conftest import tiny_opts
from datasets.bases import Record, ReIDDataset
from datasets.factory import hold_out_val_ids
from datasets.make_dataloader import ImageDataset, caption_pairs, make_dataloader
from losses import tbps as T
from losses.make_loss import make_loss
from model.make_model import make_model
from processor.processor import forward_options
from solver.phase_plan import PhasePlan

TBPS = {"MODEL.TASK": "tbps", "MODEL.TBPS.TINY": "True", "MODEL.TBPS.PRETRAINED": "",
        "MODEL.TBPS.EMBED_DIM": "32", "DATASETS.CAPTION_SOURCE": "annotation",
        "DATASETS.SYNTH_VAL_IDS": "2", "MODEL.SIE_CAMERA": "False", "LOSS.NAMES": "['itc']"}


def tbps_opts(synth_root, out, **overrides):
    return tiny_opts(synth_root, out, **{**TBPS, **overrides})


def records(pids, captions=2):
    return [Record(path=f"/x/{i}.jpg", pid=p, camid=0,
                   captions=[f"person {p} image {i} caption {k}" for k in range(captions)])
            for i, p in enumerate(pids)]


# -- data -------------------------------------------------------------------------------------
def test_caption_pairs_one_item_per_caption_in_order():
    recs = records([0, 0, 1]) + [Record(path="/x/3.jpg", pid=1, camid=0, captions=["only"])]
    pairs, rows = caption_pairs(recs)
    assert len(pairs) == 7 and rows == [0, 0, 1, 1, 2, 2, 3]
    assert [p.captions for p in pairs[:2]] == [[recs[0].captions[0]], [recs[0].captions[1]]]
    assert [p.pid for p in pairs] == [0, 0, 0, 0, 1, 1, 1]
    assert all(p.path == recs[r].path for p, r in zip(pairs, rows))


def test_pairs_share_their_image_cache_row():
    recs = records([0, 1])
    pairs, rows = caption_pairs(recs)
    cache = torch.stack([torch.full((3, 4, 2), 10 * (i + 1), dtype=torch.uint8) for i in range(2)])
    ds = ImageDataset(pairs, lambda img, gen: img.float(), [0.5] * 3, [0.5] * 3, cache=cache,
                      cache_rows=rows)
    assert [int(ds[i]["img"][0, 0, 0]) for i in range(4)] == [10, 10, 20, 20]
    with pytest.raises(ValueError, match="cache has 2 rows; the records use 3"):
        ImageDataset(pairs[:3], None, [0.5] * 3, [0.5] * 3, cache=cache, cache_rows=[0, 1, 2])


def test_held_out_val_ids_are_seeded_disjoint_and_train_is_relabelled():
    ds = ReIDDataset("x", records([0, 0, 1, 2, 3, 3, 4, 5]), [], [], splits=[], test=[])
    out = hold_out_val_ids(ds, 2, seed=3)
    val_pids = {r.pid for r in out.val}
    assert len(val_pids) == 2 and len(out.val) == sum(1 for p in [0, 0, 1, 2, 3, 3, 4, 5]
                                                      if p in val_pids)
    assert sorted({r.pid for r in out.train}) == [0, 1, 2, 3]
    assert {r.path for r in out.train}.isdisjoint({r.path for r in out.val})
    assert "DATASETS.VAL_IDS 2" in out.val_source and "VAL_SEED 3" in out.val_source
    again = hold_out_val_ids(ReIDDataset("x", records([0, 0, 1, 2, 3, 3, 4, 5]), [], [],
                                         splits=[], test=[]), 2, seed=3)
    assert [r.path for r in again.val] == [r.path for r in out.val]
    other = [sorted({r.attrs.get("k", r.path) for r in hold_out_val_ids(
        ReIDDataset("x", records(list(range(40))), [], [], splits=[], test=[]), 5, seed=s).val})
        for s in (0, 1)]
    assert other[0] != other[1]
    with pytest.raises(ValueError, match="already has a validation split"):
        hold_out_val_ids(out, 1, 0)
    with pytest.raises(ValueError, match="at most all but 2"):
        hold_out_val_ids(ReIDDataset("x", records([0, 1, 2]), [], [], splits=[], test=[]), 2, 0)


def test_tbps_configs_are_checked_at_load(synth_root, tmp_path):
    def load(**kw):
        return load_config(opts=tbps_opts(synth_root, str(tmp_path), **kw))
    load()
    with pytest.raises(ConfigError, match="synth has no validation split.*SYNTH_VAL_IDS"):
        load(**{"DATASETS.SYNTH_VAL_IDS": "0"})
    load(**{"DATASETS.SYNTH_VAL_IDS": "0", "TEST.SELECT_ON": "test"})   # explicit: allowed
    load(**{"DATASETS.SYNTH_VAL_IDS": "0", "DATASETS.VAL_IDS": "2"})
    with pytest.raises(ConfigError, match="both hold out SynthPedes identities"):
        load(**{"DATASETS.VAL_IDS": "2"})
    with pytest.raises(ConfigError, match="CAPTION_SOURCE 'none' but MODEL.TASK is 'tbps'"):
        load(**{"DATASETS.CAPTION_SOURCE": "none"})
    with pytest.raises(ConfigError, match=r"\['triplet'\] are image re-ID losses"):
        load(**{"LOSS.NAMES": "['itc', 'triplet']"})
    with pytest.raises(ConfigError, match="SUPCON.ENABLE True is an image re-ID branch"):
        load(**{"LOSS.SUPCON.ENABLE": "True"})
    load(**{"DATASETS.NAMES": "cuhkpedes"})   # SYNTH_VAL_IDS is a SynthPedes key: ignored
    with pytest.raises(ConfigError, match="has its own validation split"):
        load(**{"DATASETS.NAMES": "cuhkpedes", "DATASETS.VAL_IDS": "5"})
    with pytest.raises(ConfigError, match="STOP_FEATURES 'x'"):
        load(**{"LOSS.NITC.STOP_FEATURES": "x"})
    with pytest.raises(ConfigError, match=r"\['sdm'\] are text-based person search losses"):
        load_config(opts=tiny_opts(synth_root, str(tmp_path), **{"LOSS.NAMES": "['id', 'sdm']"}))


def test_tbps_training_items_are_caption_pairs_of_the_remaining_ids(synth_root, tmp_path):
    cfg = load_config(opts=tbps_opts(synth_root, str(tmp_path)))
    data = make_dataloader(cfg)
    ds = data.dataset
    assert len({r.pid for r in ds.train}) == 6 and len({r.pid for r in ds.val}) == 2
    assert "DATASETS.SYNTH_VAL_IDS 2, DATASETS.SYNTH_SEED 0" in ds.val_source
    assert len(data.train_set) == sum(len(r.captions) for r in ds.train)
    item = data.train_set[1]
    assert item["caption"] == ds.train[0].captions[1] and item["text_ids"].shape == (77,)


# -- losses through the composer -----------------------------------------------------------------
def outputs_of(n=8, d=16, seed=0, classes=4):
    g = torch.Generator().manual_seed(seed)
    return {"img_feat": torch.randn(n, d, generator=g, requires_grad=True),
            "txt_feat": torch.randn(n, d, generator=g, requires_grad=True),
            "logit_scale": torch.tensor(20.0), "logit_bias": torch.tensor(-3.0),
            "id_weight": torch.randn(classes, d, generator=g) * 0.1,
            "id_bias": torch.zeros(classes),
            "img_stop": torch.randn(n, d, generator=g), "txt_stop": torch.randn(n, d, generator=g)}


def composer_of(synth_root, tmp_path, names, **kw):
    cfg = load_config(opts=tbps_opts(synth_root, str(tmp_path), **{"LOSS.NAMES": str(names), **kw}))
    return cfg, make_loss(cfg, 4, 16), PhasePlan(cfg)


def test_composer_tbps_components_equal_the_pure_functions(synth_root, tmp_path):
    names = ["itc", "sdm", "nitc", "ritc", "citc", "cmpm", "sigmoid_id", "id"]
    cfg, composer, plan = composer_of(synth_root, tmp_path, names, **{
        "LOSS.SDM.TEMPERATURE": "0.05", "LOSS.CITC.W": "0.3", "LOSS.ID.LABEL_SMOOTH": "0.1"})
    out = outputs_of()
    batch = {"pid": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    composer.start_epoch(2)    # alpha = 0.5 after the first epoch
    total, parts = composer(out, batch, plan.state(2))
    v, t, y, k = out["img_feat"], out["txt_feat"], batch["pid"], out["logit_scale"]
    expected = {
        "itc": T.itc_loss(v, t, k),
        "sdm": T.sdm_loss(v, t, y, 1 / 0.05, eps=1e-8),
        "nitc": T.nitc_loss(v, t, y, k, alpha=0.5, img_stop=out["img_stop"],
                            txt_stop=out["txt_stop"]),
        "ritc": T.ritc_loss(v, t, y, k, eps=0.01),
        "citc": T.citc_loss(v, t, inmodal_weight=0.25, crossmodal_weight=0.25),
        "cmpm": T.cmpm_loss(v, t, y, eps=1e-8),
        "sigmoid_id": T.sigmoid_identity_loss(v, t, y, k, out["logit_bias"]),
        "id": T.cross_modal_id_loss(v, t, y, out["id_weight"], out["id_bias"],
                                    label_smoothing=0.1),
    }
    for name, value in expected.items():
        assert torch.allclose(parts[name], value.detach(), atol=1e-6), name
    weights = {n: 1.0 for n in names} | {"citc": 0.3}
    assert torch.allclose(total, sum(weights[n] * expected[n] for n in names), atol=1e-5)
    assert float(parts["kappa"]) == 20.0 and float(parts["nitc_alpha"]) == 0.5


def test_nitc_alpha_ramps_with_progress_and_stop_features_choice(synth_root, tmp_path):
    cfg, composer, plan = composer_of(synth_root, tmp_path, ["nitc"])
    out, batch = outputs_of(), {"pid": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    composer.start_epoch(1)
    composer.set_progress(0.25)
    _, parts = composer(out, batch, plan.state(1))
    assert float(parts["nitc_alpha"]) == pytest.approx(0.125)
    ref = T.nitc_loss(out["img_feat"], out["txt_feat"], batch["pid"], 20.0, alpha=0.125,
                      img_stop=out["img_stop"], txt_stop=out["txt_stop"])
    assert torch.allclose(parts["nitc"], ref.detach())
    assert forward_options(plan.state(1), cfg) == {"stop_features": True}
    missing = {k: v for k, v in out.items() if k not in ("img_stop", "txt_stop")}
    with pytest.raises(KeyError, match="stop-gradient forward"):
        composer(missing, batch, plan.state(1))
    cfg, composer, plan = composer_of(synth_root, tmp_path, ["nitc"],
                                      **{"LOSS.NITC.STOP_FEATURES": "detached"})
    assert forward_options(plan.state(1), cfg) == {}
    composer.start_epoch(3)
    _, parts = composer(missing, batch, plan.state(3))
    ref = T.nitc_loss(out["img_feat"], out["txt_feat"], batch["pid"], 20.0, alpha=0.5,
                      img_stop=out["img_feat"].detach(), txt_stop=out["txt_feat"].detach())
    assert torch.allclose(parts["nitc"], ref.detach())
    cfg, _, plan = composer_of(synth_root, tmp_path, ["nitc"], **{"LOSS.NITC.SOFT_RATIO": "0.0"})
    assert forward_options(plan.state(1), cfg) == {}


def test_tbps_weights_follow_the_phase_plan(synth_root, tmp_path):
    cfg, composer, plan = composer_of(synth_root, tmp_path, ["itc", "sdm"], **{
        "LOSS.PHASED.ENABLE": "True", "LOSS.PHASED.BOUNDARIES": "[1]",
        "LOSS.PHASED.METRIC_SEQ": "['none', 'none']", "LOSS.PHASED.W_METRIC_SEQ": "[0, 0]",
        "LOSS.PHASED.W_SUP_SPEC": "['const:0', 'const:0']",
        "LOSS.SDM.W_SEQ": "['const:0', 'linear:1->0.5']", "SOLVER.MAX_EPOCHS": "3"})
    assert plan.state(1).weight("sdm") == 0 and plan.state(1).weight("itc") == 1
    assert plan.state(3).weight("sdm") == pytest.approx(0.5)
    _, parts = composer(outputs_of(), {"pid": torch.arange(8)}, plan.state(1))
    assert "sdm" not in parts and "itc" in parts
    with pytest.raises(ValueError, match="'cmpm' weight"):
        PhasePlan(load_config(opts=tbps_opts(synth_root, str(tmp_path), **{
            "LOSS.CMPM.W_SEQ": "['const:1']"})))


# -- the trainer --------------------------------------------------------------------------------
def test_tbps_training_clamps_kappa_and_saves_without_the_id_head(synth_root, tmp_path):
    import train
    from utils.checkpoint import load_checkpoint
    opts = tbps_opts(synth_root, str(tmp_path / "run"), **{
        "LOSS.NAMES": "['itc', 'id']", "SOLVER.MAX_EPOCHS": "1", "SOLVER.EVAL_PERIOD": "0",
        "MODEL.TBPS.INIT_TEMPERATURE": "0.01", "SOLVER.BASE_LR": "0.5",
        "SOLVER.WARMUP_EPOCHS": "0"})
    assert train.main(["--config_file", ""] + opts) == 0
    ckpt = load_checkpoint(str(tmp_path / "run" / "transformer_1.pth"))
    state = ckpt["model"]
    assert not any(k.startswith("id_head.") for k in state)
    assert any(k.startswith("image_tower.") for k in state)
    assert float(state["logit_scale"]) <= math.log(100.0) + 1e-6
    log = open(tmp_path / "run" / "train_log.txt").read()
    assert "kappa" in log and " id " in log and "training items" in log


def test_make_model_builds_the_id_head_only_with_id(synth_root, tmp_path):
    cfg = load_config(opts=tbps_opts(synth_root, str(tmp_path), **{"LOSS.NAMES": "['sdm', 'id']",
                                                                    "MODEL.TBPS.ID_LR_SCALE": "5.0"}))
    model = make_model(cfg, 7, 1, 1)
    assert tuple(model.id_head.weight.shape) == (7, 32)
    assert float(model.id_head.weight.detach().std()) < 0.01 and model.lr_scales()["id_head."] == 5.0
    out = model({"img": torch.randn(2, 3, 64, 32), "text_ids": torch.zeros(2, 77, dtype=torch.long),
                 "text_mask": torch.ones(2, 77, dtype=torch.bool)})
    assert out["id_weight"] is model.id_head.weight and "img_stop" not in out
    cfg = load_config(opts=tbps_opts(synth_root, str(tmp_path)))
    assert make_model(cfg, 7, 1, 1).id_head is None
    assert np.isfinite(make_model(cfg, 7, 1, 1).kappa.item())


def test_synth_in_the_cuhkpedes_layout_has_the_same_splits(synth_root, tmp_path):
    """datasets/synth/cuhk_layout.py: the real CUHK-PEDES loader reads SynthPedes with the same
    train / val / test identities as DATASETS.NAMES synth with SYNTH_VAL_IDS."""
    import glob
    from datasets.factory import build_dataset
    from datasets.synth.cuhk_layout import export_cuhkpedes_layout
    from datasets.text_datasets import load_cuhkpedes
    synth_dir = glob.glob(f"{synth_root}/synthpedes_*")[0]
    export_cuhkpedes_layout(synth_dir, str(tmp_path / "cuhk"), 2, 0)
    cuhk = load_cuhkpedes(str(tmp_path / "cuhk"))
    synth = build_dataset(load_config(opts=tbps_opts(synth_root, str(tmp_path))))
    assert {r.attrs["raw_id"] for r in cuhk.val} == {r.attrs["raw_pid"] for r in synth.val}
    assert sorted(r.path.split("/")[-1] for r in cuhk.train) == sorted(
        r.path.split("/")[-1] for r in synth.train)
    assert sorted(r.path.split("/")[-1] for r in cuhk.test) == sorted(
        r.path.split("/")[-1] for r in synth.test if r.captions)
    assert cuhk.train[0].captions and "CUHK-PEDES" in cuhk.info["annotation"]
    export_cuhkpedes_layout(synth_dir, str(tmp_path / "cuhk"), 2, 0)   # rerun: same folder, fine
    with pytest.raises(FileExistsError, match="does not point to"):
        _relink(tmp_path, synth_dir, export_cuhkpedes_layout)


def _relink(tmp_path, synth_dir, export):
    import os
    os.remove(tmp_path / "cuhk" / "CUHK-PEDES" / "imgs")
    os.symlink(str(tmp_path), tmp_path / "cuhk" / "CUHK-PEDES" / "imgs")
    export(synth_dir, str(tmp_path / "cuhk"), 2, 0)


def test_a_missing_val_split_stops_training_before_epoch_1_without_evaluation(tmp_path):
    """VN3K's file may lack its 'validate' split: with TEST.SELECT_ON 'val' train.py refuses
    before training even with SOLVER.EVAL_PERIOD 0 (the launcher selects on val later)."""
    import json
    import os
    import train
    from PIL import Image
    root = tmp_path / "data"
    os.makedirs(root / "VN3K" / "imgs")
    entries = []
    for i in range(6):
        Image.new("RGB", (16, 32), (i * 30, 0, 0)).save(root / "VN3K" / "imgs" / f"{i}.jpg")
        entries.append({"split": "train" if i < 4 else "test", "file_path": f"{i}.jpg",
                        "id": i // 2 + 1, "captions": ["một người"], "en_captions": ["a person"]})
    (root / "VN3K" / "data_captions.json").write_text(json.dumps(entries))
    opts = ["MODEL.TASK", "tbps", "MODEL.TBPS.TINY", "True", "MODEL.TBPS.PRETRAINED", "",
            "MODEL.DEVICE", "cpu", "DATASETS.NAMES", "vn3k", "DATASETS.ROOT_DIR", str(root),
            "DATASETS.CAPTION_SOURCE", "annotation", "LOSS.NAMES", "['itc']",
            "SOLVER.EVAL_PERIOD", "0", "OUTPUT_DIR", str(tmp_path / "out"), "DATALOADER.NUM_WORKERS", "0",
            "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]"]
    with pytest.raises(ValueError, match="TEST.SELECT_ON 'val' but vn3k has no validation split"):
        train.main(["--config_file", ""] + opts)
    assert not any(name.endswith(".pth") for name in os.listdir(tmp_path / "out"))


def test_few_shot_keeps_a_seeded_fraction_of_the_training_identities(synth_root, tmp_path):
    from datasets.factory import build_dataset
    full = build_dataset(load_config(opts=tbps_opts(synth_root, str(tmp_path))))
    few = build_dataset(load_config(opts=tbps_opts(synth_root, str(tmp_path), **{
        "DATASETS.TRAIN_ID_FRACTION": "0.5", "DATASETS.TRAIN_ID_SEED": "1"})))
    assert len({r.pid for r in few.train}) == 3 == len({r.pid for r in full.train}) // 2
    assert sorted({r.pid for r in few.train}) == [0, 1, 2]
    kept = {r.path for r in few.train}
    assert kept < {r.path for r in full.train}
    assert [r.path for r in few.val] == [r.path for r in full.val]   # val and test untouched
    assert [r.path for r in few.test] == [r.path for r in full.test]
    assert "3 of 6 training identities" in few.info["few-shot"]
    other = build_dataset(load_config(opts=tbps_opts(synth_root, str(tmp_path), **{
        "DATASETS.TRAIN_ID_FRACTION": "0.5", "DATASETS.TRAIN_ID_SEED": "2"})))
    again = build_dataset(load_config(opts=tbps_opts(synth_root, str(tmp_path), **{
        "DATASETS.TRAIN_ID_FRACTION": "0.5", "DATASETS.TRAIN_ID_SEED": "1"})))
    assert {r.path for r in again.train} == kept
    assert {r.path for r in other.train} != kept
    with pytest.raises(ConfigError, match="TRAIN_ID_FRACTION 0.0"):
        load_config(opts=tbps_opts(synth_root, str(tmp_path), **{
            "DATASETS.TRAIN_ID_FRACTION": "0.0"}))
