"""Market-1501 (Zheng et al., ICCV 2015) and the folder parser shared by Market-style datasets.

Layout (``Market-1501-v15.09.15``, the name the release zip unpacks to, is accepted too, also
nested under ``market1501/`` as torchreid keeps it; ``market1501`` wins when both exist)::

    ROOT_DIR/market1501/
        bounding_box_train/   0002_c1s1_000451_03.jpg ...   (751 ids, 12,936 images)
        query/                                               (750 ids, 3,368 images)
        bounding_box_test/                                   (19,732 images incl. junk)

File name ``<pid>_c<cam>...``: pid -1 = junk (dropped at load time), 0000 = distractor (kept in
the gallery), camera 1-6 (stored 0-based). Parsing follows reid-strong-baseline / TransReID
(regex ``([-\\d]+)_c(\\d+)``); a file name that does not match, or whose pid is not an integer
(``0001-2_c2s2_000001_01.jpg``), is an error naming it. Deliberate difference: the regex is
anchored at the start of the name (the references search anywhere in it, so ``00a1_c2s2_...``
would silently read as pid 1).
"""
from __future__ import annotations

import os
import re
from typing import List

from .bases import (DatasetFormatError, Record, ReIDDataset, find_dataset_folder, parse_int,
                    relabel_pids, require_dir)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
MARKET_PATTERN = re.compile(r"([-\d]+)_c(\d+)")

# TransReID's folder name, then the release zip's (torchreid accepts both)
MARKET_FOLDERS = ("market1501", "Market-1501-v15.09.15")

MARKET_LAYOUT = """  <ROOT_DIR>/market1501/   (or <ROOT_DIR>/Market-1501-v15.09.15/, the zip's own name)
      bounding_box_train/  <pid>_c<cam>s<seq>_<frame>_<box>.jpg
      query/
      bounding_box_test/"""


def list_images(folder: str) -> List[str]:
    """Sorted image file names in ``folder`` (sorted so record order is deterministic)."""
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))


def parse_market_folder(folder: str, dataset: str, pattern=MARKET_PATTERN,
                        max_cam: int = 0) -> List[Record]:
    """Read ``<pid>_c<cam>...`` images of one folder; junk (pid -1) dropped.

    Args:
        folder: the image folder.
        dataset: dataset name for error messages.
        pattern: regex with groups (pid, camera), camera 1-based in the file name.
        max_cam: if > 0, a camera number above it is an error.

    Returns:
        records with raw pids and 0-based cameras, in file-name order.
    """
    records = []
    for name in list_images(folder):
        match = pattern.match(name)   # anchored: '00a1_c2...' is an error, not pid 1
        if match is None:
            raise DatasetFormatError(
                f"{dataset}: cannot parse pid and camera from file name {os.path.join(folder, name)} "
                f"(expected '<pid>_c<camera>...', regex {pattern.pattern})")
        path = os.path.join(folder, name)
        expected = "'<pid>_c<camera>...' with integer pid and camera"
        pid = parse_int(match.group(1), "pid", path, dataset, expected)
        cam = parse_int(match.group(2), "camera", path, dataset, expected)
        if pid == -1:
            continue
        if pid < 0 or cam < 1 or (max_cam and cam > max_cam):
            raise DatasetFormatError(
                f"{dataset}: pid {pid} / camera {cam} out of range in {os.path.join(folder, name)}")
        records.append(Record(path=os.path.join(folder, name), pid=pid, camid=cam - 1))
    if not records:
        raise DatasetFormatError(f"{dataset}: no images found in {folder}")
    return records


def load_market_style(dataset_dir: str, name: str, layout: str, max_cam: int = 0,
                      train_dir: str = "bounding_box_train", query_dir: str = "query",
                      gallery_dir: str = "bounding_box_test") -> ReIDDataset:
    """Build a dataset from Market-style train / query / gallery folders."""
    folders = [os.path.join(dataset_dir, d) for d in (train_dir, query_dir, gallery_dir)]
    for folder in folders:
        require_dir(folder, name, layout)
    train, query, gallery = (parse_market_folder(f, name, max_cam=max_cam) for f in folders)
    if any(r.pid == 0 for r in train + query):
        raise DatasetFormatError(
            f"{name}: distractor pid 0 found in {folders[0]} or {folders[1]}; "
            "distractors belong only in the gallery folder")
    return ReIDDataset(name, relabel_pids(train), query, gallery)


def load_market1501(root: str) -> ReIDDataset:
    """Market-1501 from ``<root>/market1501`` or ``<root>/Market-1501-v15.09.15`` (the name the
    release zip unpacks to), also nested as ``market1501/Market-1501-v15.09.15`` (torchreid's
    layout); see the module docstring for the layout. ``info['folder']`` says which was read."""
    dataset_dir, others = find_dataset_folder(root, MARKET_FOLDERS, "market1501", MARKET_LAYOUT)
    nested = os.path.join(dataset_dir, MARKET_FOLDERS[1])
    if not os.path.isdir(os.path.join(dataset_dir, "bounding_box_train")) and os.path.isdir(nested):
        dataset_dir = nested
    dataset = load_market_style(dataset_dir, "market1501", MARKET_LAYOUT, max_cam=6)
    dataset.info["folder"] = dataset_dir + (
        f" ({', '.join(others)}/ also present, not read)" if others else "")
    return dataset
