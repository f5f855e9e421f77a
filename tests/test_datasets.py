"""Dataset loaders on tiny fake folders in the public layouts (docs/datasets.md).

Every fixture writes real 8x4 JPEG files so the loaders see what a real copy looks like.
"""
from __future__ import annotations

import io
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from datasets.bases import DatasetFormatError
from datasets.dukemtmc import load_dukemtmcreid
from datasets.market1501 import load_market1501
from datasets.msmt17 import load_msmt17
from datasets.vehicleid import load_vehicleid, vehicleid_trials
from datasets.veri import load_veri


def _tiny_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 8), (120, 60, 30)).save(buf, format="JPEG")
    return buf.getvalue()


JPEG = _tiny_jpeg()


def write_images(folder, names):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(JPEG)


def write_text(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(text)


def pids(records):
    return [r.pid for r in records]


def names(records):
    return [os.path.basename(r.path) for r in records]


# --------------------------------------------------------------------------- Market-1501

def make_market(root, folder="market1501", gallery_extra=()):
    base = os.path.join(root, folder)
    write_images(os.path.join(base, "bounding_box_train"), [
        "0007_c3s1_000100_01.jpg", "0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg",
        "0010_c6s2_000200_02.jpg"])
    write_images(os.path.join(base, "query"),
                 ["0020_c1s1_001000_00.jpg", "0031_c4s1_001200_00.jpg"])
    write_images(os.path.join(base, "bounding_box_test"), [
        "0020_c2s1_001100_01.jpg", "0031_c5s1_001300_01.jpg", "0000_c1s1_000001_01.jpg",
        "-1_c3s1_000002_01.jpg", *gallery_extra])
    return base


def test_market1501_protocol(tmp_path):
    make_market(str(tmp_path))
    ds = load_market1501(str(tmp_path))
    # train: sorted by file name, pids relabelled in ascending raw order (2 -> 0, 7 -> 1, 10 -> 2)
    assert names(ds.train) == ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg",
                               "0007_c3s1_000100_01.jpg", "0010_c6s2_000200_02.jpg"]
    assert pids(ds.train) == [0, 0, 1, 2]
    assert [r.camid for r in ds.train] == [0, 1, 2, 5]
    # query / gallery keep raw pids; junk dropped, the distractor stays in the gallery only
    assert pids(ds.query) == [20, 31]
    assert sorted(pids(ds.gallery)) == [0, 20, 31]
    assert all(r.pid != -1 for r in ds.test)
    assert [r.camid for r in ds.query] == [0, 3]
    assert all(r.viewid == 0 for r in ds.train + ds.test)
    split = ds.splits[0]
    assert list(split.query_idx) == [0, 1] and list(split.gallery_idx) == [2, 3, 4]
    assert split.camera_filter
    assert ds.train[0].path == os.path.join(str(tmp_path), "market1501", "bounding_box_train",
                                            "0002_c1s1_000451_03.jpg")
    assert "Dataset market1501 statistics" in ds.statistics()


def test_market1501_bad_name_names_the_file(tmp_path):
    base = make_market(str(tmp_path), gallery_extra=("garbage.jpg",))
    with pytest.raises(DatasetFormatError, match="garbage.jpg") as err:
        load_market1501(str(tmp_path))
    assert os.path.join(base, "bounding_box_test") in str(err.value)


def test_market1501_missing_folder_names_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_market1501(str(tmp_path))
    msg = str(err.value)
    assert os.path.join(str(tmp_path), "market1501", "bounding_box_train") in msg
    assert "Expected layout" in msg and "bounding_box_test/" in msg


def test_market1501_distractor_outside_gallery_is_an_error(tmp_path):
    make_market(str(tmp_path))
    write_images(os.path.join(str(tmp_path), "market1501", "query"), ["0000_c2s1_000001_01.jpg"])
    with pytest.raises(DatasetFormatError, match="distractor"):
        load_market1501(str(tmp_path))


# --------------------------------------------------------------------------- DukeMTMC-reID

def make_duke(root, folder="dukemtmcreid"):
    base = os.path.join(root, folder)
    write_images(os.path.join(base, "bounding_box_train"), [
        "0001_c2_f0046182.jpg", "0001_c8_f0046999.jpg", "0005_c1_f0000100.jpg"])
    write_images(os.path.join(base, "query"), ["0003_c7_f0010000.jpg"])
    write_images(os.path.join(base, "bounding_box_test"), [
        "0003_c6_f0010500.jpg", "0004_c5_f0012000.jpg"])
    return base


@pytest.mark.parametrize("folder", ["dukemtmcreid", "DukeMTMC-reID"])
def test_dukemtmcreid_either_folder(tmp_path, folder):
    base = make_duke(str(tmp_path), folder)
    ds = load_dukemtmcreid(str(tmp_path))
    assert pids(ds.train) == [0, 0, 1]
    assert [r.camid for r in ds.train] == [1, 7, 0]
    assert pids(ds.query) == [3] and [r.camid for r in ds.query] == [6]
    assert pids(ds.gallery) == [3, 4]
    assert ds.info["folder"] == base
    assert f"folder: {base}" in ds.statistics()


def test_dukemtmcreid_prefers_dukemtmcreid_and_says_so(tmp_path):
    base = make_duke(str(tmp_path), "dukemtmcreid")
    make_duke(str(tmp_path), "DukeMTMC-reID")
    ds = load_dukemtmcreid(str(tmp_path))
    assert ds.info["folder"].startswith(base) and "DukeMTMC-reID/ also present" in ds.info["folder"]


def test_dukemtmcreid_camera_out_of_range(tmp_path):
    base = make_duke(str(tmp_path))
    write_images(os.path.join(base, "query"), ["0003_c9_f0010001.jpg"])
    with pytest.raises(DatasetFormatError, match="0003_c9_f0010001.jpg"):
        load_dukemtmcreid(str(tmp_path))


def test_dukemtmcreid_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dukemtmcreid(str(tmp_path))
    assert "dukemtmcreid" in str(err.value) and "DukeMTMC-reID" in str(err.value)


# --------------------------------------------------------------------------- MSMT17

MSMT_TRAIN = [("0000/0000_000_01_0303morning_0015_0.jpg", 0),
              ("0000/0000_001_03_0303morning_0016_0.jpg", 0),
              ("0001/0001_000_15_0303noon_0020_1.jpg", 1),
              ("0002/0002_000_07_0303noon_0021_0.jpg", 2)]
MSMT_VAL = [("0001/0001_001_02_0303noon_0030_0.jpg", 1),
            ("0003/0003_000_04_0303afternoon_0040_0.jpg", 3)]
MSMT_QUERY = [("0000/0000_000_05_0113morning_0001_0.jpg", 0),
              ("0009/0009_000_11_0113morning_0002_0.jpg", 9)]
MSMT_GALLERY = [("0000/0000_001_06_0113noon_0010_0.jpg", 0),
                ("0009/0009_001_12_0113noon_0011_0.jpg", 9),
                ("0012/0012_000_01_0113noon_0012_0.jpg", 12)]


def make_msmt17(root, folder="MSMT17_V1", image_dirs=("train", "test")):
    base = os.path.join(root, folder)
    for list_name, image_dir, entries in (("train", image_dirs[0], MSMT_TRAIN),
                                          ("val", image_dirs[0], MSMT_VAL),
                                          ("query", image_dirs[1], MSMT_QUERY),
                                          ("gallery", image_dirs[1], MSMT_GALLERY)):
        write_images(os.path.join(base, image_dir), [p for p, _ in entries])
        write_text(os.path.join(base, f"list_{list_name}.txt"),
                   "".join(f"{p} {pid}\n" for p, pid in entries))
    return base


def test_msmt17_v1_with_val(tmp_path):
    base = make_msmt17(str(tmp_path))
    ds = load_msmt17(str(tmp_path), train_with_val=True)
    assert len(ds.train) == 6 and ds.num_train_pids == 4
    assert sorted(set(pids(ds.train))) == [0, 1, 2, 3]
    by_name = {os.path.basename(r.path): r for r in ds.train}
    assert by_name["0001_000_15_0303noon_0020_1.jpg"].camid == 14
    assert by_name["0001_001_02_0303noon_0030_0.jpg"].camid == 1      # from list_val
    assert by_name["0001_001_02_0303noon_0030_0.jpg"].path == os.path.join(
        base, "train", "0001/0001_001_02_0303noon_0030_0.jpg")
    assert [r.path for r in ds.train] == sorted(r.path for r in ds.train)
    # pid 0 is an ordinary MSMT17 identity: it stays in the query with its raw id
    assert pids(ds.query) == [0, 9] and [r.camid for r in ds.query] == [4, 10]
    assert pids(ds.gallery) == [0, 9, 12]
    assert ds.query[0].path == os.path.join(base, "test", MSMT_QUERY[0][0])
    assert ds.info["version"] == "V1"
    assert "list_train.txt + list_val.txt" in ds.info["train lists"]
    assert "version: V1" in ds.statistics()


def test_msmt17_without_val(tmp_path):
    make_msmt17(str(tmp_path))
    os.remove(os.path.join(str(tmp_path), "MSMT17_V1", "list_val.txt"))   # not needed then
    ds = load_msmt17(str(tmp_path), train_with_val=False)
    assert len(ds.train) == 4 and ds.num_train_pids == 3
    assert "train_with_val=False" in ds.info["train lists"]
    with pytest.raises(FileNotFoundError, match="list_val.txt"):
        load_msmt17(str(tmp_path), train_with_val=True)


@pytest.mark.parametrize("folder,image_dirs,version", [
    ("MSMT17_V2", ("mask_train_v2", "mask_test_v2"), "V2"),
    ("MSMT17_V2", ("train", "test"), "V2"),
    ("MSMT17", ("mask_train_v2", "mask_test_v2"), "V2"),
    ("MSMT17", ("train", "test"), "unknown"),
])
def test_msmt17_versions(tmp_path, folder, image_dirs, version):
    base = make_msmt17(str(tmp_path), folder, image_dirs)
    ds = load_msmt17(str(tmp_path))
    assert ds.info["version"] == version
    assert ds.info["folder"] == base
    assert ds.train[0].path.startswith(os.path.join(base, image_dirs[0]))
    assert ds.query[0].path.startswith(os.path.join(base, image_dirs[1]))
    if version == "V2":
        assert "faces blurred" in ds.info["version note"]


def test_msmt17_bad_line_names_file_and_line(tmp_path):
    base = make_msmt17(str(tmp_path))
    list_query = os.path.join(base, "list_query.txt")
    write_text(list_query, f"{MSMT_QUERY[0][0]} 0\n{MSMT_QUERY[1][0]}\n")
    with pytest.raises(DatasetFormatError, match="line 2") as err:
        load_msmt17(str(tmp_path))
    assert list_query in str(err.value)
    write_text(list_query, f"{MSMT_QUERY[0][0]} 0\n\n0009/0009_000_99_x_0002_0.jpg 9\n")
    with pytest.raises(DatasetFormatError, match="line 3"):
        load_msmt17(str(tmp_path))


def test_msmt17_missing_image_and_folder(tmp_path):
    base = make_msmt17(str(tmp_path))
    os.remove(os.path.join(base, "test", MSMT_GALLERY[2][0]))
    with pytest.raises(FileNotFoundError, match="list_gallery.txt"):
        load_msmt17(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        load_msmt17(str(tmp_path / "elsewhere"))


# --------------------------------------------------------------------------- VeRi-776

VERI_TRAIN = ["0001_c001_00016450_0.jpg", "0001_c002_00016500_0.jpg", "0003_c005_00020000_1.jpg",
              "0004_c020_00030000_0.jpg"]
VERI_QUERY = ["0010_c001_00050000_0.jpg", "0011_c003_00060000_0.jpg"]
VERI_TEST = ["0010_c001_00050000_0.jpg", "0010_c002_00050100_0.jpg", "0011_c004_00060100_0.jpg",
             "0011_c004_00060200_0.jpg"]


def make_veri(root):
    base = os.path.join(root, "VeRi")
    write_images(os.path.join(base, "image_train"), VERI_TRAIN)
    write_images(os.path.join(base, "image_query"), VERI_QUERY)
    write_images(os.path.join(base, "image_test"), VERI_TEST)
    return base


def keypoint_line(folder, name, view):
    return " ".join([f"VeRi/{folder}/{name}"] + ["-1"] * 40 + [str(view)]) + "\n"


def write_keypoints(folder, train_views, test_views):
    write_text(os.path.join(folder, "keypoint_train.txt"),
               "".join(keypoint_line("image_train", n, v) for n, v in train_views.items()))
    write_text(os.path.join(folder, "keypoint_test.txt"),
               "".join(keypoint_line("image_test", n, v) for n, v in test_views.items()))


def test_veri_without_annotations(tmp_path):
    make_veri(str(tmp_path))
    ds = load_veri(str(tmp_path))
    assert pids(ds.train) == [0, 0, 1, 2]
    assert [r.camid for r in ds.train] == [0, 1, 4, 19]
    assert pids(ds.query) == [10, 11] and pids(ds.gallery) == [10, 10, 11, 11]
    assert all(r.viewid == 0 for r in ds.train + ds.test) and ds.num_views == 1
    assert all(r.attrs == {} for r in ds.train + ds.test)
    assert ds.info["views"].startswith("none") and "view id 0" in ds.info["views"]
    assert ds.info["attributes"].startswith("none")
    text = ds.statistics()
    assert "views: none" in text and "attributes: none" in text


@pytest.mark.parametrize("subfolder", ["", "datasets"])
def test_veri_keypoint_views(tmp_path, subfolder):
    base = make_veri(str(tmp_path))
    train_views = {"0001_c001_00016450_0.jpg": 3, "0001_c002_00016500_0.jpg": 7,
                   "0003_c005_00020000_1.jpg": 0}                        # 0004 has no entry
    test_views = {"0010_c001_00050000_0.jpg": 5, "0010_c002_00050100_0.jpg": 1,
                  "0011_c004_00060100_0.jpg": 2, "0011_c004_00060200_0.jpg": 6}
    # the query image 0011_c003 has no entry; 0010_c001 is found through the test file
    write_keypoints(os.path.join(base, subfolder), train_views, test_views)
    ds = load_veri(str(tmp_path))
    assert names(ds.train) == VERI_TRAIN[:3]
    assert [r.viewid for r in ds.train] == [3, 7, 0]
    # 0004 lost its only image: labels stay contiguous (relabelled after the skip)
    assert pids(ds.train) == [0, 0, 1]
    assert names(ds.query) == ["0010_c001_00050000_0.jpg"] and ds.query[0].viewid == 5
    assert [r.viewid for r in ds.gallery] == [5, 1, 2, 6]
    assert ds.num_views == 8
    assert "train 1, query 1, gallery 0" in ds.info["views"]
    assert os.path.join(base, subfolder, "keypoint_train.txt") in ds.info["views"]


def test_veri_keypoint_errors(tmp_path):
    base = make_veri(str(tmp_path))
    views = {n: 1 for n in VERI_TRAIN}
    write_keypoints(base, views, {n: 1 for n in VERI_TEST})
    path = os.path.join(base, "keypoint_train.txt")
    with open(path, "a") as f:
        f.write(keypoint_line("image_train", "0009_c001_00000001_0.jpg", 9))
    with pytest.raises(DatasetFormatError, match="line 5") as err:
        load_veri(str(tmp_path))
    assert path in str(err.value) and "orientation 9" in str(err.value)
    os.remove(os.path.join(base, "keypoint_test.txt"))
    with pytest.raises(FileNotFoundError, match="keypoint_test.txt"):
        load_veri(str(tmp_path))


GB2312_TRAIN_XML = """<?xml version="1.0" encoding="gb2312"?>
<!-- 车辆标注 -->
<TrainingImages Version="1.0">
<Items number="3">
<Item imageName="0001_c001_00016450_0.jpg" vehicleID="0001" cameraID="c001" colorID="1" typeID="4" />
<Item imageName="0001_c002_00016500_0.jpg" vehicleID="0001" cameraID="c002" colorID="1" typeID="4" />
<Item imageName="0003_c005_00020000_1.jpg" vehicleID="0003" cameraID="c005" colorID="10" typeID="0" />
</Items>
</TrainingImages>
"""

TEST_XML = """<?xml version="1.0" encoding="gb2312"?>
<TestImages Version="1.0">
<Items number="4">
<Item imageName="0010_c001_00050000_0.jpg" vehicleID="0010" cameraID="c001" colorID="7" typeID="1" />
<Item imageName="0010_c002_00050100_0.jpg" vehicleID="0010" cameraID="c002" colorID="7" typeID="1" />
<Item imageName="0011_c004_00060100_0.jpg" vehicleID="0011" cameraID="c004" colorID="5" typeID="2" />
<Item imageName="0011_c004_00060200_0.jpg" vehicleID="0011" cameraID="c004" colorID="5" typeID="2" />
</Items>
</TestImages>
"""


def write_label_files(base, train_xml=GB2312_TRAIN_XML, lists=True):
    write_text(os.path.join(base, "train_label.xml"), train_xml.encode("gb2312"), "wb")
    write_text(os.path.join(base, "test_label.xml"), TEST_XML.encode("gb2312"), "wb")
    if lists:
        write_text(os.path.join(base, "list_color.txt"),
                   "1 yellow\n2 orange\n3 green\n4 gray\n5 red\n6 blue\n7 white\n8 golden\n"
                   "9 brown\n10 black\n")
        write_text(os.path.join(base, "list_type.txt"),
                   "1 sedan\n2 suv\n3 van\n4 hatchback\n5 mpv\n6 pickup\n7 bus\n8 truck\n"
                   "9 estate\n")


def test_veri_gb2312_label_xml(tmp_path):
    base = make_veri(str(tmp_path))
    write_label_files(base)
    # the reason for the decoding step: expat alone refuses the declared multi-byte encoding
    with open(os.path.join(base, "train_label.xml"), "rb") as f:
        with pytest.raises(ValueError, match="multi-byte"):
            ET.fromstring(f.read())
    ds = load_veri(str(tmp_path))
    by_name = {os.path.basename(r.path): r for r in ds.train}
    assert by_name["0001_c001_00016450_0.jpg"].attrs == {
        "color": 1, "type": 4, "color_name": "yellow", "type_name": "hatchback"}
    # typeID 0 (an erratum of the early release) is kept and has no name
    assert by_name["0003_c005_00020000_1.jpg"].attrs == {
        "color": 10, "type": 0, "color_name": "black", "type_name": "unknown"}
    assert by_name["0004_c020_00030000_0.jpg"].attrs == {}            # no XML entry
    assert ds.query[1].attrs == {}                                    # 0011_c003 not in test XML
    assert ds.query[0].attrs["color_name"] == "white"                 # query reads test_label.xml
    assert ds.gallery[2].attrs == {"color": 5, "type": 2, "color_name": "red", "type_name": "suv"}
    assert ("images without an entry (empty attrs): train 1, query 1, gallery 0"
            in ds.info["attributes"])
    assert "attributes: colour / type from" in ds.statistics()


def test_veri_name_lists_formats(tmp_path):
    base = make_veri(str(tmp_path))
    write_label_files(base)
    write_text(os.path.join(base, "list_color.txt"), "yellow 1\nwhite 7\nblack 10\n")
    write_text(os.path.join(base, "list_type.txt"), "2: suv\n4: hatchback\n")
    ds = load_veri(str(tmp_path))
    assert ds.train[0].attrs == {"color": 1, "type": 4, "color_name": "yellow",
                                 "type_name": "hatchback"}
    write_text(os.path.join(base, "list_type.txt"), "2 suv\nhatchback\n")
    with pytest.raises(DatasetFormatError, match="list_type.txt line 2"):
        load_veri(str(tmp_path))


def test_veri_label_xml_without_name_lists_and_mismatch(tmp_path):
    base = make_veri(str(tmp_path))
    write_label_files(base, lists=False)
    ds = load_veri(str(tmp_path))
    assert ds.train[0].attrs == {"color": 1, "type": 4}
    assert "ids only" in ds.info["attributes"]
    wrong_id = GB2312_TRAIN_XML.replace('vehicleID="0003"', 'vehicleID="0033"')
    write_label_files(base, train_xml=wrong_id)
    with pytest.raises(DatasetFormatError, match="0003_c005_00020000_1.jpg"):
        load_veri(str(tmp_path))
    os.remove(os.path.join(base, "test_label.xml"))
    with pytest.raises(FileNotFoundError, match="test_label.xml"):
        load_veri(str(tmp_path))


# --------------------------------------------------------------------------- VehicleID

VID_TRAIN = [("0000101", 5), ("0000102", 5), ("0000201", 9), ("0000202", 9), ("0000301", 12)]
VID_TEST = [("0001001", 20), ("0001002", 20), ("0001003", 20), ("0002001", 21), ("0002002", 21),
            ("0003001", 22), ("0004001", 23), ("0004002", 23), ("0004003", 23), ("0004004", 23)]


def make_vehicleid(root):
    base = os.path.join(root, "VehicleID_V1.0")
    write_images(os.path.join(base, "image"), [f"{n}.jpg" for n, _ in VID_TRAIN + VID_TEST])
    split_dir = os.path.join(base, "train_test_split")
    for file_name, entries in (("train_list.txt", VID_TRAIN), ("test_list_800.txt", VID_TEST)):
        write_text(os.path.join(split_dir, file_name), "".join(f"{n} {p}\n" for n, p in entries))
    return base


def test_vehicleid_records_and_trials(tmp_path):
    base = make_vehicleid(str(tmp_path))
    ds = load_vehicleid(str(tmp_path), test_size=800, num_trials=10, trial_seed=0)
    assert pids(ds.train) == [0, 0, 1, 1, 2]
    assert ds.query == [] and ds.gallery == []
    assert pids(ds.test) == [p for _, p in VID_TEST]
    assert ds.test[0].path == os.path.join(base, "image", "0001001.jpg")
    assert all(r.camid == 0 and r.viewid == 0 for r in ds.train + ds.test)
    assert [s.name for s in ds.splits] == [f"trial{t}" for t in range(10)]
    test_pids = np.array(pids(ds.test))
    for split in ds.splits:
        assert not split.camera_filter
        gallery_pids = test_pids[split.gallery_idx]
        assert sorted(gallery_pids) == [20, 21, 22, 23]          # exactly one image per id
        assert sorted(np.concatenate([split.query_idx, split.gallery_idx])) == list(range(10))
        assert list(split.query_idx) == sorted(split.query_idx)
    assert "  test     |     4 |       10 |         1" in ds.statistics()   # no query/gallery rows
    assert "10 seeded draws" in ds.info["trials"]


def test_vehicleid_trials_seeded():
    pid_list = np.repeat(np.arange(100, 150), 5)
    a = vehicleid_trials(pid_list, num_trials=10, trial_seed=0)
    b = vehicleid_trials(pid_list, num_trials=10, trial_seed=0)
    assert all(np.array_equal(x.gallery_idx, y.gallery_idx) for x, y in zip(a, b))
    galleries = {tuple(s.gallery_idx) for s in a}
    assert len(galleries) == 10                                    # every trial differs
    # trial t draws from default_rng([trial_seed, t]): adjacent seeds share no trial
    shifted = vehicleid_trials(pid_list, num_trials=10, trial_seed=1)
    assert not any(np.array_equal(x.gallery_idx, y.gallery_idx) for x in a for y in shifted)
    other_seed = vehicleid_trials(pid_list, num_trials=1, trial_seed=1000)
    assert not np.array_equal(other_seed[0].gallery_idx, a[0].gallery_idx)


def test_vehicleid_errors(tmp_path):
    make_vehicleid(str(tmp_path))
    with pytest.raises(ValueError, match="800, 1600, 2400"):
        load_vehicleid(str(tmp_path), test_size=1000)
    with pytest.raises(FileNotFoundError, match="test_list_1600.txt"):
        load_vehicleid(str(tmp_path), test_size=1600)
    with pytest.raises(ValueError, match="num_trials"):
        load_vehicleid(str(tmp_path), num_trials=0)
    train_list = os.path.join(str(tmp_path), "VehicleID_V1.0", "train_test_split", "train_list.txt")
    write_text(train_list, "0000101 5\n0000102 five\n")
    with pytest.raises(DatasetFormatError, match="line 2") as err:
        load_vehicleid(str(tmp_path))
    assert train_list in str(err.value)
