"""SynthPedes: determinism, Market-1501 layout through the real parser, cameras, captions,
near-twins, atomic writes. A tiny dataset (12 identities, 6 train / 6 test) keeps it fast."""
import itertools
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from conftest import dark_cameras, near_twin_pairs, tree_digest
from datasets import synth
from datasets.market1501 import MARKET_PATTERN, load_market_style
from datasets.synth import (ATTRIBUTE_KEYS, MIN_IDENTITY_DISTANCE, TWIN_DETAILS, attribute_distance,
                            detail_phrase, generate_synthpedes, load_synth, make_captions,
                            plan_identities)
from datasets.synth import generator as synth_generator
from datasets.synth import render as synth_render

IDS, TRAIN, SEED = 12, 6, 3
FOLDERS = ("bounding_box_train", "query", "bounding_box_test")
VI_DIACRITICS = set("ăâđêôơưàáạảãằắặẳẵầấậẩẫèéẹẻẽềếệểễìíịỉĩòóọỏõồốộổỗờớợởỡùúụủũừứựửữỳýỵỷỹ")


def _luma(path):
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    return float((0.2126 * rgb[..., 0] + 0.7152 * rgb[..., 1] + 0.0722 * rgb[..., 2]).mean())


def _read(dataset_dir, name):
    with open(os.path.join(dataset_dir, name), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth"))
    return root, generate_synthpedes(root, IDS, SEED, train_ids=TRAIN, workers=1, progress=False)


def test_same_arguments_same_bytes_any_workers_other_seed_differs(tmp_path, tiny):
    _, reference = tiny
    again = generate_synthpedes(str(tmp_path / "a"), IDS, SEED, train_ids=TRAIN, workers=2,
                                progress=False)
    assert os.path.basename(again) == os.path.basename(reference)
    ref, rep = tree_digest(reference), tree_digest(again)
    assert sorted(ref) == sorted(rep)
    assert ref == rep
    other = tree_digest(generate_synthpedes(str(tmp_path / "b"), IDS, SEED + 1, train_ids=TRAIN,
                                             workers=1, progress=False))
    assert ref["reid_raw.json"] != other["reid_raw.json"]
    images = lambda tree: {v for k, v in tree.items() if k.endswith(".jpg")}  # noqa: E731
    assert not images(ref) & images(other)


def test_folder_name_holds_every_argument():
    names = {synth.dataset_dirname(12, 3, 6, (128, 64)), synth.dataset_dirname(12, 4, 6, (128, 64)),
             synth.dataset_dirname(12, 3, 5, (128, 64)), synth.dataset_dirname(14, 3, 6, (128, 64)),
             synth.dataset_dirname(12, 3, 6, (256, 128)),
             synth.dataset_dirname(12, 3, 6, (128, 64), twin_share=0.3)}
    assert len(names) == 6
    assert synth.dataset_dirname(300, 0) == "synthpedes_ids300_train150_seed0_128x64"


def test_second_call_reuses_complete_dataset(tiny, monkeypatch):
    root, dataset_dir = tiny

    def must_not_render(*args, **kwargs):
        raise AssertionError("a complete dataset was generated again")

    monkeypatch.setattr(synth_generator, "_render_all", must_not_render)
    assert generate_synthpedes(root, IDS, SEED, train_ids=TRAIN, progress=False) == dataset_dir


def test_market_layout_through_the_real_parser(tiny):
    root, dataset_dir = tiny
    meta = _read(dataset_dir, "meta.json")
    names = {f: os.listdir(os.path.join(dataset_dir, f)) for f in FOLDERS}
    for folder, files in names.items():
        for name in files:
            assert re.fullmatch(r"(-1|\d{4})_c[1-6]s\d_\d{6}_\d{2}\.jpg", name), name
    junk = [n for n in names["bounding_box_test"] if n.startswith("-1_")]
    distractors = [n for n in names["bounding_box_test"] if n.startswith("0000_")]
    assert len(junk) == meta["counts"]["junk_images"] > 0
    assert len(distractors) == meta["counts"]["distractor_images"] > 0
    assert not any(n.startswith(("-1_", "0000_")) for n in names["bounding_box_train"] + names["query"])

    plain = load_market_style(dataset_dir, "synth", synth.SYNTH_LAYOUT, max_cam=6)
    ds = load_synth(root, TRAIN, IDS - TRAIN, SEED)
    for mine, ref in ((ds.train, plain.train), (ds.query, plain.query), (ds.gallery, plain.gallery)):
        assert [(r.path, r.pid, r.camid) for r in mine] == [(r.path, r.pid, r.camid) for r in ref]
    assert len(ds.train) == len(names["bounding_box_train"]) == meta["counts"]["train_images"]
    assert len(ds.query) == len(names["query"])
    assert len(ds.gallery) == len(names["bounding_box_test"]) - len(junk)      # junk dropped
    assert ds.num_train_pids == TRAIN and {r.pid for r in ds.train} == set(range(TRAIN))
    test_pids = set(range(TRAIN + 1, IDS + 1))
    assert {r.pid for r in ds.query} == test_pids
    assert {r.pid for r in ds.gallery} == test_pids | {0}
    assert sum(r.pid == 0 for r in ds.gallery) == len(distractors)
    assert ds.num_cams == 6 and ds.num_views == 3

    same_camera_gallery = 0
    for q in ds.query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery), q.path
        same_camera_gallery += sum(g.pid == q.pid and g.camid == q.camid for g in ds.gallery)
    assert same_camera_gallery > 0          # the protocol's same-camera removal has work to do


def test_records_carry_attrs_and_captions(tiny):
    root, dataset_dir = tiny
    ds = load_synth(root, TRAIN, IDS - TRAIN, SEED)
    dark = dark_cameras(dataset_dir)
    images = _read(dataset_dir, "attributes.json")["images"]
    for rec in ds.train + ds.query + ds.gallery:
        rel = os.path.relpath(rec.path, dataset_dir).replace(os.sep, "/")
        assert rec.attrs["dark"] == (rec.camid in dark)
        assert rec.viewid == images[rel]["viewid"] and rec.attrs["view"] == synth_render.VIEWS[rec.viewid]
        assert rec.attrs["occluded"] == images[rel]["occluded"]
        assert rec.attrs["raw_pid"] == int(MARKET_PATTERN.search(os.path.basename(rec.path)).group(1))
        if rec.attrs["distractor"]:
            assert rec.captions == [] and rec.attrs["identity"] is None
        else:
            assert len(rec.captions) == 2 and set(rec.attrs["identity"]) == set(ATTRIBUTE_KEYS)
    every = ds.train + ds.query + ds.gallery
    assert {r.viewid for r in every} == {0, 1, 2}
    assert any(r.attrs["occluded"] for r in every) and not all(r.attrs["occluded"] for r in every)
    assert any(r.attrs["near_twin"] for r in ds.query)


def test_dark_and_bright_cameras_measured_on_written_images(tiny):
    _, dataset_dir = tiny
    per_cam = {}
    for folder in FOLDERS:
        for name in os.listdir(os.path.join(dataset_dir, folder)):
            if name.startswith("-1_"):
                continue
            cam = int(MARKET_PATTERN.search(name).group(2)) - 1
            per_cam.setdefault(cam, []).append(_luma(os.path.join(dataset_dir, folder, name)))
    luma = {cam: float(np.mean(v)) for cam, v in per_cam.items()}
    measured_dark = {cam for cam, v in luma.items() if v < 0.35}
    assert len(measured_dark) >= 2
    assert sum(v > 0.45 for v in luma.values()) >= 2
    assert dark_cameras(dataset_dir) == measured_dark
    for cam in _read(dataset_dir, "meta.json")["cameras"]:
        assert cam["mean_luma"] == pytest.approx(luma[cam["camid"]], abs=1e-3)
        assert cam["measured_dark"] == cam["dark"] == (cam["camid"] in measured_dark)


def test_reid_raw_json_is_cuhk_pedes_style(tiny):
    _, dataset_dir = tiny
    raw = _read(dataset_dir, "reid_raw.json")
    identity_files = {f"{folder}/{n}" for folder in FOLDERS
                      for n in os.listdir(os.path.join(dataset_dir, folder))
                      if not n.startswith(("-1_", "0000_"))}
    assert isinstance(raw, list) and {r["file_path"] for r in raw} == identity_files
    for r in raw:
        assert set(r) == {"split", "captions", "file_path", "id", "processed_tokens"}
        folder, name = r["file_path"].split("/")
        assert r["split"] == ("train" if folder == "bounding_box_train" else "test")
        assert r["id"] == int(name[:4]) >= 1
        assert len(r["captions"]) == 2 and all(isinstance(c, str) and len(c) > 40 for c in r["captions"])
        assert r["processed_tokens"] == [re.findall(r"\w+", c.lower()) for c in r["captions"]]
    assert len({c for r in raw for c in r["captions"]}) > len(raw)      # templates vary


def test_vietnamese_captions(tiny):
    _, dataset_dir = tiny
    en, vi = _read(dataset_dir, "reid_raw.json"), _read(dataset_dir, "reid_raw_vi.json")
    assert [(r["file_path"], r["id"], r["split"]) for r in vi] == \
           [(r["file_path"], r["id"], r["split"]) for r in en]
    text = " ".join(c for r in vi for c in r["captions"])
    assert len(set(text.lower()) & VI_DIACRITICS) >= 8
    assert "màu" in text and ("người" in text or "cô gái" in text or "anh chàng" in text)
    with open(os.path.join(dataset_dir, "reid_raw_vi.json"), "rb") as f:
        assert "màu".encode("utf-8") in f.read()          # stored as UTF-8, not \\u escapes


def _check_twin_pair(a, b, detail, captions_a, captions_b):
    differing = [k for k in ATTRIBUTE_KEYS if a[k] != b[k]]
    assert differing == [detail] and detail in TWIN_DETAILS
    for lang in ("en", "vi"):
        pa, pb = detail_phrase(a, detail, lang), detail_phrase(b, detail, lang)
        assert pa != pb
        assert all(pa in c and pb not in c for c in captions_a[lang])
        assert all(pb in c and pa not in c for c in captions_b[lang])


def test_near_twins_written(tiny):
    _, dataset_dir = tiny
    identities = _read(dataset_dir, "attributes.json")["identities"]
    caps = {lang: {} for lang in ("en", "vi")}
    for lang, name in (("en", "reid_raw.json"), ("vi", "reid_raw_vi.json")):
        for r in _read(dataset_dir, name):
            caps[lang].setdefault(r["id"], []).extend(r["captions"])
    pairs = [(int(p), v["twin_of"], v["twin_detail"]) for p, v in identities.items() if v["twin_of"]]
    assert {p for p, _, _ in pairs} and pairs == near_twin_pairs(dataset_dir)
    for twin, base, detail in pairs:
        a, b = identities[str(twin)], identities[str(base)]
        assert a["split"] == b["split"] and a["near_twin"] and b["near_twin"]
        _check_twin_pair(a, b, detail, {k: caps[k][twin] for k in caps}, {k: caps[k][base] for k in caps})


def test_near_twin_plan_at_scale():
    """Many identities (no images): one detail per twin pair, every other pair far apart."""
    plan = plan_identities(60, 60, seed=11, twin_share=0.2)
    twins = {(p, v["twin_of"]) for p, v in plan.items() if v["twin_of"] is not None}
    assert len(twins) == 24 and {plan[p]["split"] for p, _ in twins} == {"train", "test"}
    assert {plan[p]["twin_detail"] for p, _ in twins} == set(TWIN_DETAILS)
    rng = np.random.default_rng(0)
    for twin, base in twins:
        a, b = plan[twin]["attrs"], plan[base]["attrs"]
        caps_a = {lang: make_captions(a, rng, lang, count=6) for lang in ("en", "vi")}
        caps_b = {lang: make_captions(b, rng, lang, count=6) for lang in ("en", "vi")}
        _check_twin_pair(a, b, plan[twin]["twin_detail"], caps_a, caps_b)
    for p, q in itertools.combinations(plan, 2):
        if (p, q) not in twins and (q, p) not in twins:
            assert attribute_distance(plan[p]["attrs"], plan[q]["attrs"]) >= MIN_IDENTITY_DISTANCE


def test_back_view_hides_the_logo_front_view_shows_it():
    rng = np.random.default_rng(0)
    attrs = synth.sample_attributes(rng)
    attrs.update(upper_pattern="plain", pattern_color=None, upper_color="navy", logo="yellow")
    no_logo = dict(attrs, logo="none")
    camera = synth_render.CAMERAS[0]

    def render(a, view):
        return synth_render.render_person(a, camera, view, False, np.random.default_rng(7), (128, 64))

    assert np.array_equal(render(attrs, "back"), render(no_logo, "back"))
    assert not np.array_equal(render(attrs, "front"), render(no_logo, "front"))


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch, workers):
    calls = {"n": 0}
    real = synth_render.render_person

    def crash_after_a_few(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 20:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(synth_render, "render_person", crash_after_a_few)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_synthpedes(str(tmp_path), IDS, SEED, train_ids=TRAIN, workers=workers,
                            progress=False)
    assert os.listdir(tmp_path) == []            # neither the dataset nor the temporary folder
    monkeypatch.undo()
    dataset_dir = generate_synthpedes(str(tmp_path), IDS, SEED, train_ids=TRAIN, workers=workers,
                                      progress=False)
    assert os.path.isfile(os.path.join(dataset_dir, "meta.json"))


def test_incomplete_or_stale_folder_is_a_clear_error(tmp_path):
    dataset_dir = tmp_path / synth.dataset_dirname(IDS, SEED, TRAIN)
    dataset_dir.mkdir()
    with pytest.raises(synth.DatasetFormatError, match="Delete the folder"):
        generate_synthpedes(str(tmp_path), IDS, SEED, train_ids=TRAIN, progress=False)
    (dataset_dir / "meta.json").write_text(json.dumps({"version": "0.0", "arguments": {}}))
    with pytest.raises(synth.DatasetFormatError, match="generator version 0.0"):
        load_synth(str(tmp_path), TRAIN, IDS - TRAIN, SEED)


def test_bad_arguments():
    with pytest.raises(ValueError, match="train"):
        generate_synthpedes("unused", 4, 0, train_ids=4)
    with pytest.raises(ValueError, match="test identity"):
        load_synth("unused", 4, 0, 0)


def test_cli_prints_folder_and_statistics(tiny, capsys):
    root, dataset_dir = tiny
    synth.main(["--root", root, "--ids", str(IDS), "--train-ids", str(TRAIN), "--seed", str(SEED)])
    out = capsys.readouterr().out
    assert f"SynthPedes written to {dataset_dir}" in out
    assert "Dataset synth statistics" in out and "mean luma" in out and "[dark]" in out
