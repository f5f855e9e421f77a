"""Captions: text dataset loaders, attribute captions, the tokenizer and text in batches.

Fake datasets are written into tmp_path in the public layouts (docs/datasets.md): tiny PNG / JPEG
images plus the annotation files (JSON, gb2312 XML, a MATLAB struct written by scipy).
"""
from __future__ import annotations

import io
import json
import os
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from conftest import near_twin_pairs, tiny_opts
from configs import load_config
from datasets.bases import DatasetFormatError
from datasets.captions import (apply_caption_source, market_attribute_caption,
                               synth_attribute_caption, veri_attribute_caption)
from datasets.factory import build_dataset
from datasets.make_dataloader import build_train_loader, make_dataloader
from datasets.market1501 import load_market1501
from datasets.synth import load_synth
from datasets.text_datasets import load_cuhkpedes, load_icfgpedes, load_rstpreid, load_vn3k
from datasets.tokenize import build_tokenizer, build_tokenizer_for
from datasets.veri import load_veri
from processor.inference import do_inference

SOT, EOT = 49406, 49407


def _image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 8), (40, 90, 160)).save(buf, format=fmt)
    return buf.getvalue()


PNG, JPEG = _image_bytes("PNG"), _image_bytes("JPEG")


def write_image(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(PNG if path.endswith(".png") else JPEG)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)


def make_text_dataset(root, folder, json_name, entries, path_key="file_path", images=True):
    base = os.path.join(str(root), folder)
    if images:
        for e in entries:
            write_image(os.path.join(base, "imgs", e[path_key]))
    os.makedirs(os.path.join(base, "imgs"), exist_ok=True)
    write_json(os.path.join(base, json_name), entries)
    return base


CUHK = [
    {"split": "train", "captions": ["A man in red.", "Red shirt man."], "file_path": "CUHK01/0001.png",
     "processed_tokens": [], "id": 5},
    {"split": "train", "captions": ["A woman in blue."], "file_path": "cam_a/0002.png",
     "processed_tokens": [], "id": 2},
    {"split": "val", "captions": ["val caption"], "file_path": "cam_b/0003.png", "id": 9},
    {"split": "test", "captions": ["t1", "t2"], "file_path": "test_query/0004.png", "id": 11},
    {"split": "test", "captions": ["t3"], "file_path": "test_query/0005.png", "id": 12},
]


# --------------------------------------------------------------------------- text datasets

def test_cuhkpedes_loader(tmp_path):
    base = make_text_dataset(tmp_path, "CUHK-PEDES", "reid_raw.json", CUHK)
    ds = load_cuhkpedes(str(tmp_path))
    # train: file order, raw ids 5 / 2 relabelled in ascending order (2 -> 0, 5 -> 1)
    assert [r.pid for r in ds.train] == [1, 0]
    assert [r.attrs for r in ds.train] == [{"raw_id": 5, "split": "train"},
                                           {"raw_id": 2, "split": "train"}]
    assert ds.train[0].captions == ["A man in red.", "Red shirt man."]
    assert ds.train[0].path == os.path.join(base, "imgs", "CUHK01", "0001.png")
    assert all(r.camid == 0 and r.viewid == 0 for r in ds.train + ds.test)
    # test records keep raw ids; val records are ReIDDataset.val; no image re-ID evaluation
    assert [r.pid for r in ds.test] == [11, 12]
    assert ds.query == [] and ds.gallery == [] and ds.splits == []
    assert ds.num_cams == 1 and ds.num_views == 1 and ds.num_train_pids == 2
    stats = ds.statistics()
    assert "train    |     2 |        2" in stats and "test     |     2 |        2" in stats
    assert ds.info["annotation"] == os.path.join(base, "reid_raw.json")
    assert ds.caption_source == "none"


def test_text_dataset_missing_field_names_file_entry_and_field(tmp_path):
    entries = [dict(e) for e in CUHK]
    del entries[1]["captions"]
    base = make_text_dataset(tmp_path, "CUHK-PEDES", "reid_raw.json", entries)
    with pytest.raises(DatasetFormatError) as err:
        load_cuhkpedes(str(tmp_path))
    msg = str(err.value)
    assert os.path.join(base, "reid_raw.json") in msg and "entry 1" in msg and "'captions'" in msg


def test_text_dataset_unknown_split_and_missing_images(tmp_path):
    entries = [dict(e) for e in CUHK]
    entries[3]["split"] = "gallery"
    make_text_dataset(tmp_path, "CUHK-PEDES", "reid_raw.json", entries)
    with pytest.raises(DatasetFormatError, match="unknown split 'gallery'"):
        load_cuhkpedes(str(tmp_path))
    make_text_dataset(tmp_path / "b", "CUHK-PEDES", "reid_raw.json", CUHK, images=False)
    with pytest.raises(FileNotFoundError, match=r"5 image\(s\) listed in .*reid_raw.json"):
        load_cuhkpedes(str(tmp_path / "b"))
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        load_cuhkpedes(str(tmp_path / "nothing"))


def test_icfgpedes_accepts_both_annotation_names(tmp_path):
    entries = [{"split": "train", "captions": ["one caption"], "file_path": "train/0000/a.jpg",
                "id": 0},
               {"split": "test", "captions": ["test caption"], "file_path": "test/0100/b.jpg",
                "id": 100}]
    base = make_text_dataset(tmp_path, "ICFG-PEDES", "ICFG_PEDES.json", entries)
    ds = load_icfgpedes(str(tmp_path))
    assert ds.info["annotation"] == os.path.join(base, "ICFG_PEDES.json")
    assert [r.pid for r in ds.train] == [0] and [r.pid for r in ds.test] == [100]
    os.remove(os.path.join(base, "ICFG_PEDES.json"))
    with pytest.raises(FileNotFoundError, match="ICFG-PEDES.json or .*ICFG_PEDES.json"):
        load_icfgpedes(str(tmp_path))


def test_rstpreid_reads_img_path(tmp_path):
    entries = [{"id": 0, "img_path": "0000_c14_0031.jpg", "captions": ["c1", "c2"],
                "split": "train"},
               {"id": 1, "img_path": "0001_c2_0001.jpg", "captions": ["c3", "c4"],
                "split": "val"},
               {"id": 7, "img_path": "0007_c5_0002.jpg", "captions": ["c5", "c6"],
                "split": "test"}]
    base = make_text_dataset(tmp_path, "RSTPReid", "data_captions.json", entries,
                             path_key="img_path")
    ds = load_rstpreid(str(tmp_path))
    assert [os.path.basename(r.path) for r in ds.train] == ["0000_c14_0031.jpg"]
    assert [r.pid for r in ds.test] == [7] and ds.test[0].captions == ["c5", "c6"]
    # a CUHK-style entry (file_path instead of img_path) names the missing field
    entries[0] = {"id": 0, "file_path": "0000_c14_0031.jpg", "captions": ["c1"], "split": "train"}
    write_json(os.path.join(base, "data_captions.json"), entries)
    with pytest.raises(DatasetFormatError, match="entry 0 has no field 'img_path'"):
        load_rstpreid(str(tmp_path))


VN3K = [
    {"split": "train", "id": 1, "file_path": "a/1.jpg", "captions": ["Một người đàn ông."],
     "en_captions": ["A man."]},
    {"split": "validate", "id": 2, "file_path": "a/2.jpg", "captions": ["Cô gái."],
     "en_captions": ["A girl."]},
    {"split": "test", "id": 3, "file_path": "a/3.jpg", "captions": ["Người phụ nữ."],
     "en_captions": ["A woman."]},
]


def test_vn3k_validate_split_and_caption_language(tmp_path):
    make_text_dataset(tmp_path, "VN3K", "data_captions.json", VN3K)
    en, vi = load_vn3k(str(tmp_path), "en"), load_vn3k(str(tmp_path), "vi")
    assert [r.captions for r in en.train] == [["A man."]]
    assert [r.captions for r in vi.train] == [["Một người đàn ông."]]
    assert [r.captions for r in vi.test] == [["Người phụ nữ."]]
    assert [r.attrs["raw_id"] for r in en.train + en.test] == [1, 3]  # 'validate' not used
    # through the factory: CAPTION_LANG reaches the loader
    cfg = load_config(opts=["DATASETS.NAMES", "vn3k", "DATASETS.ROOT_DIR", str(tmp_path),
                            "DATASETS.CAPTION_SOURCE", "annotation",
                            "DATASETS.CAPTION_LANG", "vi"])
    ds = build_dataset(cfg)
    assert ds.caption_source == "annotation" and ds.train[0].captions == ["Một người đàn ông."]
    assert "annotation (vi)" in ds.info["captions"]


def test_caption_source_errors(tmp_path):
    make_text_dataset(tmp_path, "CUHK-PEDES", "reid_raw.json", CUHK)
    opts = ["DATASETS.NAMES", "cuhkpedes", "DATASETS.ROOT_DIR", str(tmp_path)]
    assert build_dataset(load_config(opts=opts + ["DATASETS.CAPTION_SOURCE", "annotation"])
                         ).caption_source == "annotation"
    with pytest.raises(ValueError, match="'attributes' is not available for cuhkpedes.*synth, "
                                         "veri, market1501"):
        build_dataset(load_config(opts=opts + ["DATASETS.CAPTION_SOURCE", "attributes"]))
    with pytest.raises(ValueError, match="cuhkpedes only has captions in"):
        build_dataset(load_config(opts=opts + ["DATASETS.CAPTION_SOURCE", "annotation",
                                               "DATASETS.CAPTION_LANG", "vi"]))
    # an image dataset has no caption file
    ds = load_cuhkpedes(str(tmp_path))
    ds.name = "market1501"
    with pytest.raises(ValueError, match="market1501 has no caption file"):
        apply_caption_source(ds, "annotation")
    # a training image without a caption
    ds = load_cuhkpedes(str(tmp_path))
    ds.train[1].captions = []
    with pytest.raises(DatasetFormatError, match=r"1 of 2 training images have no caption.*"
                                                 r"cam_a.0002\.png"):
        apply_caption_source(ds, "annotation")


def test_empty_splits_evaluation_error(tmp_path):
    make_text_dataset(tmp_path, "CUHK-PEDES", "reid_raw.json", CUHK)
    data = SimpleNamespace(dataset=load_cuhkpedes(str(tmp_path)), test_loader=None)
    with pytest.raises(ValueError, match="cuhkpedes has no image re-ID evaluation split .*"
                                         "SOLVER.EVAL_PERIOD 0"):
        do_inference(load_config(), None, data, "cpu")


# --------------------------------------------------------------------------- attribute captions

def test_synth_attribute_caption_text():
    identity = {"gender": "woman", "height": "tall", "build": "slim", "skin": "light",
                "hair_color": "blond", "hair_length": "long", "upper_color": "orange",
                "upper_pattern": "vertical_stripes", "pattern_color": "white", "logo": "none",
                "lower_type": "skirt", "lower_color": "black", "shoes_color": "red",
                "bag": {"type": "handbag", "color": "brown"}, "hat": {"type": "cap", "color": "blue"}}
    assert synth_attribute_caption(identity) == (
        "A tall slim woman with light skin and long blond hair, wearing an orange top with white "
        "vertical stripes and no logo, a black skirt and red shoes, with a brown handbag and a "
        "blue cap.")
    identity.update(height="medium", build="broad", upper_pattern="checks", logo="yellow",
                    lower_type="trousers", bag={"type": "none", "color": None},
                    hat={"type": "none", "color": None})
    assert synth_attribute_caption(identity) == (
        "A heavy-set woman with light skin and long blond hair, wearing an orange and white "
        "checked top with a yellow logo, black trousers and red shoes, with no bag and no hat.")


def test_synth_attribute_captions_separate_near_twins(synth_root):
    kwargs = dict(num_train_ids=8, num_test_ids=6, seed=0, image_size=(64, 32))
    annotated = load_synth(synth_root, **kwargs)
    ds = apply_caption_source(load_synth(synth_root, **kwargs), "attributes")
    assert ds.caption_source == "attributes"
    by_pid = {}
    for ann, rec in zip(annotated.train + annotated.test, ds.train + ds.test):
        assert ann.path == rec.path
        if rec.attrs["distractor"]:
            assert rec.captions == []
            continue
        assert len(rec.captions) == 1 and rec.captions[0] not in ann.captions
        by_pid.setdefault(rec.attrs["raw_pid"], set()).add(rec.captions[0])
    assert all(len(c) == 1 for c in by_pid.values())  # one caption per identity
    pairs = near_twin_pairs(ds.info["folder"])
    assert pairs
    for twin, base, _ in pairs:
        assert by_pid[twin] != by_pid[base]
    with pytest.raises(ValueError, match="English only"):
        apply_caption_source(load_synth(synth_root, **kwargs), "attributes", "vi")


def test_synth_vietnamese_annotation_captions(synth_root):
    kwargs = dict(num_train_ids=8, num_test_ids=6, seed=0, image_size=(64, 32))
    vi = apply_caption_source(load_synth(synth_root, caption_lang="vi", **kwargs), "annotation", "vi")
    en = load_synth(synth_root, **kwargs)
    assert vi.train[0].captions != en.train[0].captions
    assert any("màu" in c for c in vi.train[0].captions)
    with pytest.raises(ValueError, match="loaded with caption language 'en'"):
        apply_caption_source(en, "annotation", "vi")


def make_veri(root):
    base = os.path.join(str(root), "VeRi")
    split_names = {"image_train": ["0001_c001_00016450_0.jpg", "0002_c002_00030600_0.jpg",
                                   "0003_c003_00000010_0.jpg"],
                   "image_query": ["0005_c004_00077000_0.jpg"],
                   "image_test": ["0005_c005_00077100_0.jpg"]}
    for folder, names in split_names.items():
        for name in names:
            write_image(os.path.join(base, folder, name))

    def xml(items):
        body = "".join(f'<Item imageName="{n}" vehicleID="{n[:4]}" cameraID="{n[5:9]}" '
                       f'colorID="{c}" typeID="{t}" />' for n, c, t in items)
        text = ('<?xml version="1.0" encoding="gb2312"?>\n<!-- 车辆属性 -->\n'
                f'<TrainingImages Version="1.0"><Items number="{len(items)}">{body}</Items>'
                '</TrainingImages>\n')
        return text.encode("gb2312")

    with open(os.path.join(base, "train_label.xml"), "wb") as f:
        f.write(xml([("0001_c001_00016450_0.jpg", 7, 2), ("0002_c002_00030600_0.jpg", 2, 9),
                     ("0003_c003_00000010_0.jpg", 4, 0)]))
    with open(os.path.join(base, "test_label.xml"), "wb") as f:
        f.write(xml([("0005_c004_00077000_0.jpg", 10, 6), ("0005_c005_00077100_0.jpg", 10, 6)]))
    return base


def test_veri_attribute_captions(tmp_path):
    make_veri(tmp_path)
    ds = apply_caption_source(load_veri(str(tmp_path)), "attributes", root=str(tmp_path))
    assert [r.captions for r in ds.train] == [["A white SUV."], ["An orange estate car."],
                                              ["A gray vehicle."]]
    assert ds.query[0].captions == ["A black pickup truck."] and ds.test[0] is ds.query[0]
    assert veri_attribute_caption(8, 7) == "A golden bus."
    with pytest.raises(DatasetFormatError, match="colorID 11"):
        veri_attribute_caption(11, 1)
    os.remove(os.path.join(str(tmp_path), "VeRi", "train_label.xml"))
    os.remove(os.path.join(str(tmp_path), "VeRi", "test_label.xml"))
    with pytest.raises(FileNotFoundError, match="train_label.xml"):
        apply_caption_source(load_veri(str(tmp_path)), "attributes", root=str(tmp_path))


TRAIN_FIELD_ORDER = ("age", "backpack", "bag", "handbag", "downblack", "downblue", "downbrown",
                     "downgray", "downgreen", "downpink", "downpurple", "downwhite", "downyellow",
                     "upblack", "upblue", "upgreen", "upgray", "uppurple", "upred", "upwhite",
                     "upyellow", "clothes", "down", "up", "hair", "hat", "gender")


def market_part(people, order):
    """One part of market_attribute (train or test) as the real file stores it: 1 x N doubles per
    attribute and a 1 x N cell array of identity strings."""
    part = {}
    for key in order:
        part[key] = np.array([[float(p.get(key, 1)) for _, p in people]])
    part["image_index"] = np.array([[pid for pid, _ in people]], dtype=object)
    return part


def make_market(root, with_mat=True, train_ids=("0002", "0007")):
    base = os.path.join(str(root), "market1501")
    for folder, names in (("bounding_box_train", ["0002_c1s1_000451_03.jpg",
                                                  "0007_c3s1_000100_01.jpg",
                                                  "0007_c2s1_000301_01.jpg"]),
                          ("query", ["0020_c1s1_001000_00.jpg"]),
                          ("bounding_box_test", ["0020_c2s1_001100_01.jpg",
                                                 "0000_c1s1_000001_01.jpg"])):
        for name in names:
            write_image(os.path.join(base, folder, name))
    if with_mat:
        people = {"0002": {"age": 1, "up": 2, "upblack": 2, "downblue": 2, "clothes": 2,
                           "backpack": 2},
                  "0007": {"age": 3, "gender": 2, "hair": 2, "downpink": 2, "down": 2,
                           "bag": 2, "handbag": 2, "hat": 2}}
        train = [(pid, people[pid]) for pid in train_ids]
        test = [("0020", {"age": 4, "upred": 2, "upwhite": 2, "clothes": 2, "down": 2})]
        scipy.io.savemat(os.path.join(base, "market_attribute.mat"), {"market_attribute": {
            "test": market_part(test, tuple(reversed(TRAIN_FIELD_ORDER))),
            "train": market_part(train, TRAIN_FIELD_ORDER)}})
    return base


def test_market_attribute_captions(tmp_path):
    make_market(tmp_path)
    ds = apply_caption_source(load_market1501(str(tmp_path)), "attributes", root=str(tmp_path))
    young = ("A young man with short hair, wearing a black short-sleeved top and blue trousers, "
             "carrying a backpack, with no hat.")
    adult = ("An adult woman with long hair, wearing a long-sleeved top and a pink short dress, "
             "carrying a bag and a handbag, with a hat.")
    assert [r.captions for r in ds.train] == [[young], [adult], [adult]]
    old = ("An old man with short hair, wearing a white and red long-sleeved top and shorts, "
           "carrying no bag, with no hat.")
    assert ds.query[0].captions == [old]
    assert sorted(tuple(r.captions) for r in ds.gallery) == [(), (old,)]  # distractor: none
    assert market_attribute_caption(dict.fromkeys(
        ("age", "backpack", "bag", "handbag", "clothes", "down", "up", "hair", "hat", "gender",
         "upblack", "upwhite", "upred", "uppurple", "upyellow", "upgray", "upblue", "upgreen",
         "downblack", "downwhite", "downpink", "downpurple", "downyellow", "downgray",
         "downblue", "downgreen", "downbrown"), 1)) == (
        "A young man with short hair, wearing a long-sleeved top and a long dress, carrying no "
        "bag, with no hat.")


def test_market_attribute_errors(tmp_path):
    make_market(tmp_path / "a", with_mat=False)
    with pytest.raises(FileNotFoundError, match=r"market1501.market_attribute\.mat"):
        apply_caption_source(load_market1501(str(tmp_path / "a")), "attributes",
                             root=str(tmp_path / "a"))
    make_market(tmp_path / "b", train_ids=("0002",))
    with pytest.raises(DatasetFormatError, match=r"2 of 3 training images have no caption.*"
                                                 r"0007_c2s1"):
        apply_caption_source(load_market1501(str(tmp_path / "b")), "attributes",
                             root=str(tmp_path / "b"))


# --------------------------------------------------------------------------- tokenizer

def test_tokenizer_ids_mask_truncation_pickle():
    tok = build_tokenizer_for("ViT-B-16", 8)
    ids, mask = tok(["A man in red.", "a b c d e f g h i j k"])
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == (2, 8)
    # CLIP BPE: 'a' 320, 'man' 786, 'in' 530, 'red' 736, '.' 269
    assert ids[0].tolist() == [SOT, 320, 786, 530, 736, 269, EOT, 0]
    assert mask[0].tolist() == [True] * 7 + [False]
    # over-long: first 8 tokens kept, the last replaced by EOT (open_clip's rule), all real
    assert ids[1, 0] == SOT and ids[1, -1] == EOT and mask[1].all()
    assert tok.tokens(ids[0]) == ["<start_of_text>", "a", "man", "in", "red", ".", "<end_of_text>"]
    # id 0 is a real token ('!'): the mask follows EOT, not ids != 0
    ids, mask = tok(["!%"])
    assert ids[0, :4].tolist() == [SOT, 0, 260, EOT]
    assert mask[0, :4].all() and not mask[0, 4:].any()
    clone = pickle.loads(pickle.dumps(tok))
    assert torch.equal(clone(["A man in red."])[0], tok(["A man in red."])[0])


def test_tokenizer_from_config_and_errors(monkeypatch):
    cfg = load_config(opts=["MODEL.TEXT.TINY", "True", "MODEL.TEXT.OPEN_CLIP_MODEL",
                            "ViT-B-16-SigLIP-i18n-256", "MODEL.TEXT.CONTEXT_LENGTH", "16"])
    tok = build_tokenizer(cfg)  # TINY: CLIP BPE whatever the model name
    assert tok.model_name == "ViT-B-16" and tok(["x"])[0].shape == (1, 16)
    with pytest.raises(ValueError, match="not an open_clip model"):
        build_tokenizer_for("No-Such-Model", 77)
    import open_clip

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(open_clip, "get_tokenizer", offline)
    with pytest.raises(RuntimeError, match="Hugging Face cache.*ViT-B-16"):
        build_tokenizer_for("ViT-B-16-SigLIP-i18n-256", 64)


# --------------------------------------------------------------------------- batches

def test_batches_carry_text_and_captions_drawn_per_epoch(synth_root, tmp_path):
    cfg = load_config(opts=tiny_opts(synth_root, str(tmp_path), **{
        "DATASETS.CAPTION_SOURCE": "annotation", "MODEL.TEXT.TINY": True,
        "MODEL.TEXT.CONTEXT_LENGTH": 40}))
    data = make_dataloader(cfg)
    train_set = data.train_set
    batch = next(iter(build_train_loader(cfg, train_set, 4)))
    assert batch["text_ids"].shape == (16, 40) and batch["text_ids"].dtype == torch.long
    assert batch["text_mask"].shape == (16, 40) and batch["text_mask"].dtype == torch.bool
    assert len(batch["caption"]) == 16 and all(isinstance(c, str) for c in batch["caption"])
    assert (batch["text_ids"][:, 0] == SOT).all()
    for i, index in enumerate(batch["index"].tolist()):
        assert batch["caption"][i] in train_set.records[index].captions
        ids, mask = train_set.tokenizer([batch["caption"][i]])
        assert torch.equal(batch["text_ids"][i], ids[0]) and torch.equal(batch["text_mask"][i], mask[0])
    for key in ("img", "pid", "camid", "viewid", "path", "brightness", "index"):
        assert key in batch
    assert "text_ids" not in data.test_loader.dataset[0]  # test items carry no text

    n = len(train_set)
    train_set.set_epoch(1)
    first = [train_set.caption(i) for i in range(n)]
    assert first == [train_set.caption(i) for i in range(n)]
    train_set.set_epoch(2)
    second = [train_set.caption(i) for i in range(n)]
    assert first != second
    assert train_set[5]["caption"] == second[5]
