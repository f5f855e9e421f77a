"""VeRi-776 (Liu et al., ICME 2016 / ECCV 2016), Market-style folders plus optional annotations.

Layout::

    ROOT_DIR/VeRi/
        image_train/   0001_c001_00016450_0.jpg ...   (576 ids, 37,778 images)
        image_query/                                   (200 ids, 1,678 images)
        image_test/                                    (200 ids, 11,579 images)
        keypoint_train.txt, keypoint_test.txt          optional (or under VeRi/datasets/)
        train_label.xml, test_label.xml                optional (colour / type)
        list_color.txt, list_type.txt                  optional (colour / type names)

File name ``<pid>_c<cam>_<frame>_<n>.jpg``: parsed with ``([-\\d]+)_c(\\d+)``, cameras c001-c020
(stored 0-based), junk pid -1 dropped (the release has none), pid 0 only allowed in the gallery.

View ids (TransReID ``datasets/veri.py``): the keypoint files of
``Zhongdao/VehicleReIDKeyPointData`` that TransReID ships as ``datasets/keypoint_{train,test}.txt``;
each line is an image path, 40
keypoint numbers (20 (x, y) pairs, -1 = invisible) and the orientation 0-7 as the last field. The
files are keyed by the image's base name; like TransReID, an image is looked up in the train file
first, then in the test file, whatever its split, and images with no entry are skipped (the public
files miss 63 train, 1 query and 1 gallery image). Without keypoint files every view id is 0 and
``info['views']`` says so. Deliberate difference: train pids are relabelled after the skip, so the
labels stay contiguous even if an identity lost every image (TransReID relabels before).

Attributes: ``train_label.xml`` / ``test_label.xml`` from the release, ``Item`` elements with
``imageName, vehicleID, cameraID, colorID, typeID``; the files declare ``encoding="gb2312"``,
which Python's expat cannot parse, so they are decoded by the declared codec first. The query
images are copies of test images, so query and gallery read ``test_label.xml``. ``Record.attrs``
= ``{'color': colorID, 'type': typeID}`` with the release's own numbering (1-based, as in
``list_color.txt`` / ``list_type.txt``; an early release labels vehicles 3, 7 and 41 with the
illegal typeID 0, kept as is) plus ``'color_name'`` / ``'type_name'`` when the list files exist
(``'unknown'`` for an id the list lacks). An image without an XML entry keeps empty attrs; the
count is reported in ``info['attributes']``.
"""
from __future__ import annotations

import codecs
import dataclasses
import os
import re
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Tuple

from .bases import (DatasetFormatError, Record, ReIDDataset, find_dataset_folder, relabel_pids,
                    require_dir, require_file)
from .market1501 import parse_market_folder

NUM_CAMERAS = 20
NUM_ORIENTATIONS = 8
NUM_KEYPOINT_VALUES = 40
SPLIT_FOLDERS = (("train", "image_train"), ("query", "image_query"), ("gallery", "image_test"))

VERI_LAYOUT = """  <ROOT_DIR>/VeRi/
      image_train/   <pid>_c<cam>_<frame>_<n>.jpg   (cameras c001-c020)
      image_query/
      image_test/
      keypoint_train.txt, keypoint_test.txt   optional, here or in VeRi/datasets/ (view ids)
      train_label.xml, test_label.xml         optional (colour / type attributes)
      list_color.txt, list_type.txt           optional (attribute names)"""


def read_keypoint_views(path: str) -> Dict[str, int]:
    """Orientation per image base name from a TransReID / VehicleReIDKeyPointData keypoint file.

    A line is ``<image path> <40 keypoint numbers> <orientation 0-7>``. A line with another field
    count, a non-integer or out-of-range orientation, or a conflicting repeat of an image is a
    :class:`DatasetFormatError` naming the file and line.
    """
    views: Dict[str, Tuple[int, int]] = {}
    with open(path, "r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"veri: {path} line {line_no}"
            if len(fields) != NUM_KEYPOINT_VALUES + 2:
                raise DatasetFormatError(
                    f"{where}: expected '<image path> <{NUM_KEYPOINT_VALUES} keypoint numbers> "
                    f"<orientation>' ({NUM_KEYPOINT_VALUES + 2} fields), got {len(fields)} fields")
            try:
                view = int(fields[-1])
            except ValueError:
                raise DatasetFormatError(
                    f"{where}: orientation {fields[-1]!r} is not an integer") from None
            if not 0 <= view < NUM_ORIENTATIONS:
                raise DatasetFormatError(
                    f"{where}: orientation {view} out of range 0-{NUM_ORIENTATIONS - 1}")
            name = os.path.basename(fields[0])
            if name in views and views[name][0] != view:
                raise DatasetFormatError(
                    f"{where}: {name} has orientation {view} here but {views[name][0]} "
                    f"on line {views[name][1]}")
            views.setdefault(name, (view, line_no))
    return {name: view for name, (view, _) in views.items()}


def _find_keypoint_files(dataset_dir: str) -> Optional[Tuple[str, str]]:
    """The (train, test) keypoint files, or None when neither location has any."""
    for folder in (dataset_dir, os.path.join(dataset_dir, "datasets")):
        paths = tuple(os.path.join(folder, f"keypoint_{split}.txt") for split in ("train", "test"))
        if any(os.path.isfile(p) for p in paths):
            for p in paths:
                require_file(p, "veri", VERI_LAYOUT)
            return paths
    return None


def read_xml_declared_encoding(path: str) -> ET.Element:
    """Parse an XML file whose declared encoding may be multi-byte (VeRi: gb2312).

    Python's expat only handles single-byte encodings itself, so the bytes are decoded with the
    declared codec (gb2312 through its superset gb18030) and the declaration is dropped before
    parsing the text.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    match = re.match(rb"\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"'][^>]*\?>", raw)
    encoding = match.group(1).decode("ascii").lower() if match else "utf-8"
    if encoding in ("gb2312", "gbk", "gb_2312-80"):
        encoding = "gb18030"
    try:
        text = raw.decode(encoding)
    except (LookupError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"veri: cannot decode {path} as {encoding}: {exc}") from None
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text, count=1)
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise DatasetFormatError(f"veri: {path} is not valid XML: {exc}") from None


def read_label_xml(path: str) -> Dict[str, Tuple[int, int, int, int]]:
    """(vehicleID, camera number, colorID, typeID) per imageName from a VeRi label XML."""
    labels = {}
    for item in read_xml_declared_encoding(path).iter("Item"):
        name = item.get("imageName")
        try:
            values = tuple(int(item.get(key, "").lstrip("c"))
                           for key in ("vehicleID", "cameraID", "colorID", "typeID"))
        except ValueError:
            raise DatasetFormatError(
                f"veri: {path}: Item {name!r} needs integer vehicleID, cameraID (c<n>), colorID "
                f"and typeID attributes, got {dict(item.attrib)}") from None
        if not name:
            raise DatasetFormatError(f"veri: {path}: an Item has no imageName: {dict(item.attrib)}")
        labels[name] = values
    if not labels:
        raise DatasetFormatError(f"veri: {path} has no Item elements")
    return labels


def read_name_list(path: str) -> Dict[int, str]:
    """Attribute names per id from list_color.txt / list_type.txt.

    A line is ``<id> <name>``; ``<name> <id>`` and ``<id>: <name>`` are accepted too, since copies
    of the release differ. The text is read as UTF-8, or as GB18030 (the release's XML encoding)
    when it is not valid UTF-8. A line with no integer id at either end is a
    :class:`DatasetFormatError` naming the file and line.
    """
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("gb18030", errors="replace")
    names = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.replace(":", " ").split()
        if not fields:
            continue
        if len(fields) >= 2 and fields[0].isdigit():
            names[int(fields[0])] = " ".join(fields[1:])
        elif len(fields) >= 2 and fields[-1].isdigit():
            names[int(fields[-1])] = " ".join(fields[:-1])
        else:
            raise DatasetFormatError(
                f"veri: {path} line {line_no}: expected '<id> <name>', got {line.rstrip()!r}")
    return names


def _apply_views(splits: Dict[str, List[Record]], dataset_dir: str) -> str:
    """Set view ids in place of ``splits`` (skipping images without an entry); return the info."""
    files = _find_keypoint_files(dataset_dir)
    if files is None:
        return ("none: no keypoint_train.txt / keypoint_test.txt in VeRi/ or VeRi/datasets/; "
                "view id 0 for every image")
    train_views, test_views = (read_keypoint_views(p) for p in files)
    skipped = {}
    for split, records in splits.items():
        kept = []
        for r in records:
            name = os.path.basename(r.path)
            view = train_views.get(name, test_views.get(name))
            if view is not None:
                kept.append(dataclasses.replace(r, viewid=view))
        skipped[split] = len(records) - len(kept)
        if not kept:
            raise DatasetFormatError(
                f"veri: no {split} image has an entry in {files[0]} or {files[1]}; "
                "are these the keypoint files of this VeRi copy?")
        splits[split] = kept
    counts = ", ".join(f"{split} {n}" for split, n in skipped.items())
    return (f"keypoint orientation from {files[0]} and {files[1]}; "
            f"images without an entry skipped: {counts}")


def _apply_attributes(splits: Dict[str, List[Record]], dataset_dir: str) -> str:
    """Set colour / type attrs in place of ``splits``; return the info line."""
    xml_paths = {"train": os.path.join(dataset_dir, "train_label.xml"),
                 "test": os.path.join(dataset_dir, "test_label.xml")}
    if not any(os.path.isfile(p) for p in xml_paths.values()):
        return "none: no train_label.xml / test_label.xml in VeRi/"
    for p in xml_paths.values():
        require_file(p, "veri", VERI_LAYOUT)
    labels = {key: read_label_xml(p) for key, p in xml_paths.items()}
    name_lists = {}
    for attr, file_name in (("color", "list_color.txt"), ("type", "list_type.txt")):
        path = os.path.join(dataset_dir, file_name)
        if os.path.isfile(path):
            name_lists[attr] = read_name_list(path)

    missing = {}
    for split, records in splits.items():
        source = "train" if split == "train" else "test"
        table, count = labels[source], 0
        for i, r in enumerate(records):
            name = os.path.basename(r.path)
            if name not in table:
                count += 1
                continue
            vehicle, cam, color, vtype = table[name]
            if vehicle != r.pid or cam != r.camid + 1:
                raise DatasetFormatError(
                    f"veri: {xml_paths[source]} gives {name} vehicleID {vehicle} / camera {cam}, "
                    f"the file name says {r.pid} / {r.camid + 1}")
            attrs = {"color": color, "type": vtype}
            for attr, names in name_lists.items():
                attrs[f"{attr}_name"] = names.get(attrs[attr], "unknown")
            records[i] = dataclasses.replace(r, attrs=attrs)
        missing[split] = count
    named = (f"; names from {', '.join(f'list_{a}.txt' for a in name_lists)}" if name_lists
             else "; no list_color.txt / list_type.txt, ids only")
    counts = ", ".join(f"{split} {n}" for split, n in missing.items())
    return (f"colour / type from {xml_paths['train']} and {xml_paths['test']}{named}; "
            f"images without an entry (empty attrs): {counts}")


def load_veri(root: str) -> ReIDDataset:
    """VeRi-776 from ``<root>/VeRi`` (see the module docstring for layout and annotations).

    Args:
        root: DATASETS.ROOT_DIR, the folder that contains the dataset folder.

    Returns:
        a :class:`ReIDDataset` with one Market-1501 evaluation split; ``info['views']`` and
        ``info['attributes']`` say whether keypoint views and label XMLs were found and what was
        skipped.

    Example:
        >>> ds = load_veri("./data")   # doctest: +SKIP
        >>> ds.num_views               # doctest: +SKIP
        8
    """
    dataset_dir, _ = find_dataset_folder(root, ("VeRi",), "veri", VERI_LAYOUT)
    require_dir(dataset_dir, "veri", VERI_LAYOUT)
    splits = {}
    for split, folder in SPLIT_FOLDERS:
        path = os.path.join(dataset_dir, folder)
        require_dir(path, "veri", VERI_LAYOUT)
        splits[split] = parse_market_folder(path, "veri", max_cam=NUM_CAMERAS)
    for split in ("train", "query"):
        if any(r.pid == 0 for r in splits[split]):
            raise DatasetFormatError(
                f"veri: distractor pid 0 found in {dict(SPLIT_FOLDERS)[split]}/; "
                "distractors belong only in image_test/")

    info = {"views": _apply_views(splits, dataset_dir),
            "attributes": _apply_attributes(splits, dataset_dir)}
    return ReIDDataset("veri", relabel_pids(splits["train"]), splits["query"], splits["gallery"],
                       info=info)
