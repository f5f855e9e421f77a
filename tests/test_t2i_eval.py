"""Text-to-image evaluation end to end (MODEL.TASK 'tbps'): the query / gallery sets
(datasets/t2i.py), the evaluation of a dual encoder (processor/t2i.py), the selection split in
training (processor/inference.py do_inference), test.py on a checkpoint and zero-shot
(summary.json, features.npz recomputed by a plain numpy loop, the figure), the launcher's labels,
and the errors (TEST.RE_RANKING, check_evaluable, plain weight files).

A tiny CUHK-PEDES layout in tmp_path (noise PNGs, 8 x 4) and a tiny random-init open_clip dual
encoder (width 64, 2 layers, D 32, 64 x 32 input, 16-token captions).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import test as test_script
from configs import ConfigError, load_config
from datasets.bases import Record, ReIDDataset
from datasets.factory import build_dataset
from datasets.t2i import t2i_set, t2i_sets
from datasets.tokenize import build_tokenizer
from model.make_model import make_model
from model.weights import load_for_test
from processor.inference import check_evaluable, do_inference
from processor.t2i import evaluate_t2i
from utils.checkpoint import save_checkpoint
from utils.results import METRIC_KEYS
from utils.summary import TestSummary

SIZE = (64, 32)
# (pid, number of captions) per image; test: 5 ids, 12 images (>= 10, so R10 is defined), 19
# captions; val: 3 ids, 6 images, 8 captions; train: 4 ids
SPLITS = {
    "train": [(1, 2), (1, 1), (2, 1), (2, 2), (3, 1), (3, 1), (4, 2), (4, 1)],
    "val": [(20, 1), (20, 2), (21, 1), (21, 1), (22, 2), (22, 1)],
    "test": [(30, 2), (30, 1), (30, 2), (31, 1), (31, 2), (32, 2), (32, 1), (33, 2), (33, 1),
             (33, 2), (34, 2), (34, 1)],
}
WORDS = ("red", "blue", "green", "black", "white", "grey", "yellow", "brown")


def caption(split, i, c):
    return f"A {split} person {i} in a {WORDS[(i + c) % len(WORDS)]} coat, caption {c}."


def cuhk_entries():
    entries = []
    for split, images in SPLITS.items():
        for i, (pid, n) in enumerate(images):
            entries.append({"split": split, "id": pid, "file_path": f"{split}/{i:03d}.png",
                            "captions": [caption(split, i, c) for c in range(n)],
                            "processed_tokens": []})
    return entries


@pytest.fixture(scope="module")
def cuhk_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i")
    base = root / "CUHK-PEDES"
    rng = np.random.default_rng(0)
    for e in cuhk_entries():
        path = base / "imgs" / e["file_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)).save(path)
    (base / "reid_raw.json").write_text(json.dumps(cuhk_entries()))
    return str(root)


def tbps_opts(root, out, **overrides):
    opts = {"MODEL.TASK": "tbps", "MODEL.TBPS.FAMILY": "open_clip", "MODEL.TBPS.TINY": "True",
            "MODEL.TBPS.PRETRAINED": "", "MODEL.TBPS.EMBED_DIM": "32",
            "MODEL.TBPS.CONTEXT_LENGTH": "16", "MODEL.DEVICE": "cpu",
            "INPUT.SIZE_TRAIN": str(list(SIZE)), "INPUT.SIZE_TEST": str(list(SIZE)),
            "DATASETS.NAMES": "cuhkpedes", "DATASETS.ROOT_DIR": root,
            "DATASETS.CAPTION_SOURCE": "annotation", "DATALOADER.NUM_WORKERS": "0",
            "TEST.IMS_PER_BATCH": "5", "LOSS.NAMES": "['itc']", "TEST.VIS_QUERIES": "3", "TEST.VIS_TOPK": "4",
            "OUTPUT_DIR": out}
    opts.update({k: str(v) for k, v in overrides.items()})
    return [x for kv in opts.items() for x in kv]


def tbps_cfg(root, out="unused", **overrides):
    return load_config(opts=tbps_opts(root, out, **overrides))


def tiny_model(cfg, seed=0):
    torch.manual_seed(seed)
    return make_model(cfg, 4, 1, 1)


# --------------------------------------------------------------------------- plain numpy oracle
def numpy_t2i(q_feats, g_feats, q_pids, g_pids, max_rank):
    """R1/R5/R10, mAP, mINP (percent) of caption rows against image rows, literally: cosine of
    L2-normalised rows, descending, ties by ascending gallery index; relevant = same pid."""
    q = q_feats / np.linalg.norm(q_feats, axis=1, keepdims=True)
    g = g_feats / np.linalg.norm(g_feats, axis=1, keepdims=True)
    cmc, aps, inps = [], [], []
    for i in range(len(q)):
        order = np.argsort(-(g @ q[i]), kind="stable")
        hits = g_pids[order] == q_pids[i]
        if not hits.any():
            continue
        ranks = np.flatnonzero(hits) + 1                  # 1-based positions of the matches
        first = ranks[0]
        cmc.append([1.0 if first <= k else 0.0 for k in range(1, max_rank + 1)])
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        inps.append(len(ranks) / ranks[-1])
    cmc = np.mean(cmc, axis=0) * 100
    return {"R1": cmc[0], "R5": cmc[4], "R10": cmc[9], "mAP": np.mean(aps) * 100,
            "mINP": np.mean(inps) * 100}


# --------------------------------------------------------------------------- sets
def record(pid, captions, name):
    return Record(path=f"/x/{name}.png", pid=pid, camid=0, captions=list(captions))


def test_sets_hold_every_caption_of_the_captioned_images_in_order():
    test = [record(7, ["a", "b"], "t0"), record(0, [], "distractor"), record(8, ["c"], "t1"),
            record(7, ["d", "e", "f"], "t2")]
    val = [record(3, ["v"], "v0"), record(4, ["w", "x"], "v1")]
    ds = ReIDDataset("synth", [record(0, ["tr"], "tr")], [], [], splits=[], test=test, val=val,
                     val_source="2 training identities held out")
    sets = t2i_sets(ds)
    s = sets["test"]
    # the distractor without a caption is not in the gallery
    assert s.name == "test" and [r.path for r in s.images] == ["/x/t0.png", "/x/t1.png",
                                                              "/x/t2.png"]
    assert s.image_pids.dtype == np.int64 and s.image_pids.tolist() == [7, 8, 7]
    assert s.captions == ["a", "b", "c", "d", "e", "f"]
    assert s.caption_image.tolist() == [0, 0, 1, 2, 2, 2]
    assert s.caption_pids.dtype == np.int64 and s.caption_pids.tolist() == [7, 7, 8, 7, 7, 7]
    assert sets["val"].captions == ["v", "w", "x"] and sets["val"].caption_pids.tolist() == [3, 4, 4]
    # no val: no 'val' set
    assert list(t2i_sets(ReIDDataset("synth", ds.train, [], [], splits=[], test=test))) == ["test"]


def test_a_split_without_captions_is_an_error_naming_dataset_and_split():
    nothing = [record(1, [], "a"), record(2, [], "b")]
    ds = ReIDDataset("rstpreid", [record(0, ["x"], "tr")], [], [], splits=[], test=nothing,
                     val=nothing, val_source="the annotation's validation split (f.json)")
    with pytest.raises(ValueError, match=r"rstpreid: the test split has no image with a caption "
                                         r"\(2 images\)"):
        t2i_set(ds, "test")
    with pytest.raises(ValueError, match=r"rstpreid: the val split \(the annotation's validation "
                                         r"split \(f.json\)\) has no image with a caption.*"
                                         r"DATASETS.VAL_IDS"):
        t2i_set(ds, "val")


# --------------------------------------------------------------------------- config + checks
def test_re_ranking_is_refused_for_tbps_at_load(cuhk_root):
    with pytest.raises(ConfigError, match=r"TEST.RE_RANKING True with MODEL.TASK 'tbps'"):
        tbps_cfg(cuhk_root, **{"TEST.RE_RANKING": "True"})
    assert load_config(opts=["TEST.RE_RANKING", "True"]).TEST.RE_RANKING   # image re-ID: fine


def test_check_evaluable_names_the_split_and_the_keys(cuhk_root):
    tbps = tbps_cfg(cuhk_root)
    tbps_on_test = tbps_cfg(cuhk_root, **{"TEST.SELECT_ON": "test"})
    train = [record(0, ["x"], "tr")]
    captioned = [record(5, ["y"], "te")]
    no_val = ReIDDataset("icfgpedes", train, [], [], splits=[], test=captioned)
    with pytest.raises(ValueError, match=r"TEST.SELECT_ON 'val' but icfgpedes has no validation "
                                         r"split: .*DATASETS.VAL_IDS.*TEST.SELECT_ON 'test'"):
        check_evaluable(no_val, tbps)
    check_evaluable(no_val, tbps_on_test)        # selection on test asked for: fine
    bare_val = ReIDDataset("icfgpedes", train, [], [], splits=[], test=captioned,
                           val=[record(9, [], "v")], val_source="1 training identities held out "
                                                                "(DATASETS.VAL_IDS 1, ...)")
    with pytest.raises(ValueError, match=r"the val split \(1 training identities held out.*"
                                         r"no image with a caption.*TEST.SELECT_ON 'val'"):
        check_evaluable(bare_val, tbps)
    no_test = ReIDDataset("icfgpedes", train, [], [], splits=[], test=[record(5, [], "te")])
    with pytest.raises(ValueError, match="icfgpedes: the test split has no image with a caption"):
        check_evaluable(no_test, tbps_on_test)
    # image re-ID of a caption dataset: no image re-ID split
    with pytest.raises(ValueError, match=r"icfgpedes has no image re-ID evaluation split.*"
                                         r"MODEL.TASK 'tbps'.*SOLVER.EVAL_PERIOD 0"):
        check_evaluable(no_val, load_config())


# --------------------------------------------------------------------------- training-time eval
def test_do_inference_evaluates_the_selection_split(cuhk_root, caplog):
    cfg = tbps_cfg(cuhk_root)
    ds = build_dataset(cfg)
    model = tiny_model(cfg)
    model.train()
    tok = build_tokenizer(cfg)
    with caplog.at_level(logging.INFO, logger="phasereid"):
        metrics = do_inference(cfg, model, SimpleNamespace(dataset=ds), "cpu")
    assert model.training                       # its mode is restored
    val = evaluate_t2i(cfg, model, t2i_set(ds, "val"), "cpu", tok)
    test = evaluate_t2i(cfg, model, t2i_set(ds, "test"), "cpu", tok)
    np.testing.assert_equal(metrics, val.metrics)   # (R10 is NaN: 6 val images)
    assert metrics["mAP"] != test.metrics["mAP"]
    assert metrics["num_valid"] == 8            # the val captions
    assert "on the val split of cuhkpedes" in caplog.text
    caplog.clear()
    on_test = tbps_cfg(cuhk_root, **{"TEST.SELECT_ON": "test"})
    with caplog.at_level(logging.INFO, logger="phasereid"):
        np.testing.assert_equal(do_inference(on_test, model, SimpleNamespace(dataset=ds), "cpu"),
                                test.metrics)
    assert any(r.levelno == logging.WARNING and "TEST split" in r.getMessage()
               for r in caplog.records)


# --------------------------------------------------------------------------- weights
def test_load_for_test_of_a_dual_encoder(cuhk_root, tmp_path):
    cfg = tbps_cfg(cuhk_root)
    model, other = tiny_model(cfg, 0), tiny_model(cfg, 1)
    log = logging.getLogger("test_t2i_eval")
    state = dict(other.state_dict(), **{"id_head.weight": torch.zeros(4, 32)})  # training-only
    assert load_for_test(model, {"model": state}, {"epoch": 1}, "x.pth", log) == "off"
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in model.state_dict().items())
    missing = {k: v for k, v in state.items() if not k.startswith("text_tower.")}
    with pytest.raises(RuntimeError, match="does not match the model.*text_tower"):
        load_for_test(model, {"model": missing}, {"epoch": 1}, "x.pth", log)
    with pytest.raises(RuntimeError, match=r"plain \(non-PhaseReID\) weight file.*"
                                           "MODEL.TBPS.PRETRAINED"):
        load_for_test(model, other.state_dict(), None, "plain.pth", log)


# --------------------------------------------------------------------------- test.py
@pytest.fixture(scope="module")
def tested(cuhk_root, tmp_path_factory):
    """test.py on an epoch-3 checkpoint with TEST.I2T and TEST.EXPORT_FEATURES."""
    tmp = tmp_path_factory.mktemp("tested")
    cfg = tbps_cfg(cuhk_root, str(tmp / "train"))
    model = tiny_model(cfg, 2)
    weight = str(tmp / "transformer_3.pth")
    save_checkpoint(weight, model, cfg, 3, 4, 1, 1)
    out = str(tmp / "out")
    rc = test_script.main(["TEST.WEIGHT", weight, "OUTPUT_DIR", out, "TEST.I2T", "True",
                           "TEST.EXPORT_FEATURES", "True", "TEST.MAX_RANK", "10"])
    return SimpleNamespace(rc=rc, out=out, weight=weight, cfg=cfg, model=model,
                           summary=TestSummary.read(os.path.join(out, "summary.json")))


def test_test_py_writes_a_text_to_image_summary(tested):
    s = tested.summary
    assert tested.rc == 0 and s.protocol == "text-to-image" and s.split == ["test"]
    assert s.epoch == 3 and not s.zero_shot and s.clip_fusion == "off"
    assert s.feature == "img_feat / txt_feat (projected global features)"
    assert (s.feat_norm, s.distance, s.re_ranking, s.max_rank) == (True, "cosine", "none", 10)
    assert s.metrics["num_valid"] == 19 and s.metrics["num_skipped"] == 0
    assert set(s.extra_metrics) == {"val", "i2t"}
    val = s.extra_metrics["val"]
    assert val.split == ["val"] and "validation split" in val.source
    assert val.metrics["num_valid"] == 8
    assert s.extra_metrics["i2t"].split == ["test"]
    assert s.extra_metrics["i2t"].metrics["num_valid"] == 12      # one query per test image
    assert s.select_on == "val" and not s.test_selection_asked
    assert s.selection_metrics() == val.metrics
    # it is the result of this checkpoint under this test config
    assert s.mismatch(3, tested.weight, s.test_config_sha256) is None
    assert os.path.isfile(os.path.join(tested.out, "ranked_list.png"))
    assert any(f.startswith("events.") for f in os.listdir(os.path.join(tested.out, "tb")))


def test_exported_features_recompute_every_number(tested, cuhk_root):
    f = np.load(os.path.join(tested.out, "features.npz"))
    test_entries = [e for e in cuhk_entries() if e["split"] == "test"]
    assert f["q_captions"].tolist() == [c for e in test_entries for c in e["captions"]]
    assert f["g_paths"].tolist() == [os.path.join(cuhk_root, "CUHK-PEDES", "imgs",
                                                  e["file_path"]) for e in test_entries]
    assert f["g_pids"].tolist() == [e["id"] for e in test_entries]
    assert f["q_pids"].tolist() == [e["id"] for e in test_entries for _ in e["captions"]]
    assert f["q_image"].tolist() == [i for i, e in enumerate(test_entries)
                                     for _ in e["captions"]]
    # the features are the model's: caption 0 through the tokenizer and encode_text
    ids, mask = build_tokenizer(tested.cfg)([f["q_captions"][0]])
    tested.model.eval()
    with torch.no_grad():
        row = tested.model.encode_text(ids, mask)[0].numpy()
    np.testing.assert_allclose(f["q_feats"][0], row, rtol=1e-5, atol=1e-6)
    # every number of summary.json from the file by a plain loop, both directions
    s = tested.summary
    t2i = numpy_t2i(f["q_feats"], f["g_feats"], f["q_pids"], f["g_pids"], 10)
    i2t = numpy_t2i(f["g_feats"], f["q_feats"], f["g_pids"], f["q_pids"], 10)
    for key in METRIC_KEYS:
        assert s.metrics[key] == pytest.approx(t2i[key], abs=1e-9), key
        assert s.extra_metrics["i2t"].metrics[key] == pytest.approx(i2t[key], abs=1e-9), key
    assert len({round(v, 6) for v in t2i.values()}) > 1          # not a degenerate ranking


def test_zero_shot_and_selection_on_test(cuhk_root, tmp_path, tested):
    recipe = tmp_path / "tbps.yml"
    recipe.write_text(tbps_cfg(cuhk_root, str(tmp_path / "zs")).dump())
    rc = test_script.main(["--config_file", str(recipe), "TEST.SELECT_ON", "test",
                           "TEST.VIS_QUERIES", "0"])
    s = TestSummary.read(str(tmp_path / "zs" / "summary.json"))   # the recipe's OUTPUT_DIR
    assert rc == 0 and s.zero_shot and s.protocol == "text-to-image"
    assert s.weight is None and s.weight_size is None and s.epoch is None
    assert s.select_on is None and s.test_selection_asked and s.selection_metrics() is s.metrics
    assert set(s.extra_metrics) == {"val"}                       # no i2t without TEST.I2T
    assert "zero-shot" in s.mismatch(3, tested.weight, s.test_config_sha256)
    assert not os.path.exists(tmp_path / "zs" / "ranked_list.png")
    # image re-ID has no zero-shot model: TEST.WEIGHT stays required
    reid = tmp_path / "reid.yml"
    reid.write_text(load_config(opts=["OUTPUT_DIR", str(tmp_path / "r")]).dump())
    with pytest.raises(ValueError, match="give the checkpoint to evaluate"):
        test_script.main(["--config_file", str(reid)])
    assert not os.path.exists(tmp_path / "r")


# --------------------------------------------------------------------------- launcher labels
def test_launcher_labels_name_the_selection_split(tested):
    from launcher.report import best_label, selected_on, selection_text
    val = {"_summaries": {3: tested.summary}}
    asked = {"_summaries": {3: dataclasses.replace(tested.summary, select_on=None,
                                                   test_selection_asked=True)}}
    reid = {"_summaries": {3: dataclasses.replace(tested.summary, select_on=None,
                                                  extra_metrics={})}}
    assert best_label({"selected_on": selected_on([val])}) == "best (val-selected)"
    assert best_label({"selected_on": selected_on([reid])}) == "best (test-selected)"
    assert selected_on([val, reid]) == "mixed" and selected_on([]) == "test"
    info = {"split": ["test"]}
    assert "as asked (TEST.SELECT_ON 'test')" in selection_text([asked], info, 3)
    assert "there is no validation split" in selection_text([reid], info, 3)
    assert "on the selection split (val)" in selection_text([val], info, 3)
    nothing = {"_summaries": {}}
    assert "no checkpoint has a test result yet" in selection_text([nothing], info, 3)


# --------------------------------------------------------------------------- query subsets
def test_query_subsets_near_twin_and_file_are_the_rows_of_the_full_evaluation(synth_root,
                                                                             tmp_path):
    """TEST.QUERY_SUBSETS: SynthPedes' near-twin captions and a subset file, evaluated as the
    rows of the full test evaluation (each query ranked against the whole gallery)."""
    from conftest import tiny_opts
    from datasets.make_dataloader import make_dataloader
    from datasets.t2i import query_subset, subset_name
    from processor.t2i import evaluate_subset
    from utils.metrics import eval_t2i_features
    opts = {"MODEL.TASK": "tbps", "MODEL.TBPS.TINY": "True", "MODEL.TBPS.PRETRAINED": "",
            "MODEL.TBPS.EMBED_DIM": "32", "MODEL.SIE_CAMERA": "False",
            "DATASETS.CAPTION_SOURCE": "annotation", "DATASETS.SYNTH_VAL_IDS": "2",
            "LOSS.NAMES": "['itc']", "TEST.QUERY_SUBSETS": "['near_twin']"}
    cfg = load_config(opts=tiny_opts(synth_root, str(tmp_path / "out"), **opts))
    ds = make_dataloader(cfg).dataset
    test = t2i_sets(ds)["test"]
    twins = query_subset(test, "near_twin", ds.name)
    expected = [q for q, i in enumerate(test.caption_image) if test.images[i].attrs["near_twin"]]
    assert twins.tolist() == expected and 0 < len(twins) < len(test.captions)
    model = tiny_model(cfg)
    full = evaluate_t2i(cfg, model, test, torch.device("cpu"))
    sub = evaluate_subset(cfg, full, twins)
    ref = eval_t2i_features(full.txt_feats[twins], full.img_feats, test.caption_pids[twins],
                            test.image_pids, max_rank=cfg.TEST.MAX_RANK).as_dict()
    assert sub == ref and sub["num_valid"] == len(twins)
    picked = [0, 3]
    path = tmp_path / "hard.json"
    rel = lambda q: "/".join(test.images[test.caption_image[q]].path.split("/")[-2:])  # noqa: E731
    path.write_text(json.dumps({"name": "hard", "queries": [
        {"file_path": rel(q), "caption": test.captions[q]} for q in picked]}))
    assert query_subset(test, str(path), ds.name).tolist() == picked
    assert subset_name(str(path)) == "hard" and subset_name("near_twin") == "near_twin"
    path.write_text(json.dumps({"queries": [{"file_path": rel(0)[1:], "caption": test.captions[0]}]}))
    with pytest.raises(ValueError, match="query 0 .* is not a caption of the test split"):
        query_subset(test, str(path), ds.name)   # a suffix that is not at a folder boundary
    path.write_text(json.dumps({"queries": [{"file_path": "x.jpg", "caption": "nobody"}]}))
    with pytest.raises(ValueError, match="query 0 .* is not a caption of the test split"):
        query_subset(test, str(path), ds.name)
    with pytest.raises(ValueError, match="near-twin subset; cuhkpedes has none"):
        query_subset(test, "near_twin", "cuhkpedes")
    with pytest.raises(ConfigError, match="QUERY_SUBSETS file .*nope.json' does not exist"):
        load_config(opts=tiny_opts(synth_root, str(tmp_path), **dict(
            opts, **{"TEST.QUERY_SUBSETS": f"['{tmp_path}/nope.json']"})))
    with pytest.raises(ConfigError, match="'near_twin' is SynthPedes' subset"):
        tbps_cfg(str(tmp_path), **{"TEST.QUERY_SUBSETS": "['near_twin']"})
    # test.py reports the subset beside the full set
    ckpt_dir = tmp_path / "ck"
    os.makedirs(ckpt_dir)
    from utils.checkpoint import save_checkpoint
    save_checkpoint(str(ckpt_dir / "transformer_1.pth"), model, cfg, 1, 6, 1, 1)
    assert test_script.main(["TEST.WEIGHT", str(ckpt_dir / "transformer_1.pth"), "OUTPUT_DIR",
                             str(tmp_path / "t"), "TEST.VIS_QUERIES", "0"]) == 0
    s = TestSummary.read(str(tmp_path / "t" / "summary.json"))
    assert s.extra_metrics["test-near_twin"].metrics["mAP"] == pytest.approx(sub["mAP"], abs=1e-9)
    assert "near_twin" in s.extra_metrics["test-near_twin"].source


def test_hard_subset_from_a_reference_models_features(tested, tmp_path):
    """datasets/hard_subset.py: the captions whose best wrong image outscores every true one,
    by a plain loop over the exported features; the file evaluates with TEST.QUERY_SUBSETS and
    its R1 is 0 for the reference model itself (every hard query's rank-1 is wrong)."""
    from datasets.hard_subset import build_hard_subset, hard_queries
    f = np.load(os.path.join(tested.out, "features.npz"))
    q = f["q_feats"] / np.linalg.norm(f["q_feats"], axis=1, keepdims=True)
    g = f["g_feats"] / np.linalg.norm(f["g_feats"], axis=1, keepdims=True)
    loop = [i for i in range(len(q))
            if max(float(q[i] @ g[j]) for j in range(len(g)) if f["g_pids"][j] != f["q_pids"][i])
            > max(float(q[i] @ g[j]) for j in range(len(g)) if f["g_pids"][j] == f["q_pids"][i])]
    assert hard_queries(f["q_feats"], f["g_feats"], f["q_pids"], f["g_pids"], block=3).tolist() \
        == loop and 0 < len(loop) < len(q)
    path = str(tmp_path / "hard.json")
    assert build_hard_subset(os.path.join(tested.out, "features.npz"), path) == len(loop)
    out = str(tmp_path / "out")
    assert test_script.main(["TEST.WEIGHT", tested.weight, "OUTPUT_DIR", out,
                             "TEST.QUERY_SUBSETS", f"['{path}']", "TEST.VIS_QUERIES", "0"]) == 0
    hard = TestSummary.read(os.path.join(out, "summary.json")).extra_metrics["test-hard"]
    assert hard.metrics["num_valid"] == len(loop) and hard.metrics["R1"] == 0.0
    with pytest.raises(KeyError, match="lacks .*TEST.EXPORT_FEATURES"):
        np.savez(tmp_path / "reid.npz", feats=np.zeros((2, 2)))
        build_hard_subset(str(tmp_path / "reid.npz"), str(tmp_path / "x.json"))
