"""MSMT17 (Wei et al., "Person Transfer GAN", CVPR 2018), read from its list files.

Layout (the first of ``MSMT17``, ``MSMT17_V2``, ``MSMT17_V1`` that exists is read)::

    ROOT_DIR/MSMT17/                 (or MSMT17_V1/ or MSMT17_V2/)
        train/        0000/0000_000_01_0303morning_0015_0.jpg ...
        test/         0000/0000_000_01_0303morning_0017_1.jpg ...
        list_train.txt    <path relative to train/> <pid>   (30,248 images, 1,041 ids)
        list_val.txt      <path relative to train/> <pid>   (2,373 images, same ids)
        list_query.txt    <path relative to test/>  <pid>   (11,659 images, 3,060 ids)
        list_gallery.txt  <path relative to test/>  <pid>   (82,161 images)

The V2 release names its image folders ``mask_train_v2/`` and ``mask_test_v2/`` (faces blurred);
those names are accepted in place of ``train/`` and ``test/``.

Protocol (TransReID / BoT ``datasets/msmt17.py``): the pid is the list's second field (0-based,
already contiguous on train); the camera is the third ``_``-separated field of the file name
(01-15), stored 0-based; ``list_val`` is merged into training (``train_with_val``, TransReID:
32,621 images, 1,041 ids). Pid 0 is an ordinary identity here, not a distractor, so it may appear
in train and query. Deliberate differences: train pids pass through ``relabel_pids`` (identity on
the real lists), records are sorted by path, and malformed lines, duplicate images and listed
images missing on disk are errors naming the file (and line).

Version: ``MSMT17_V1`` / ``MSMT17_V2`` folder names, or the ``mask_*_v2`` image folders, say which
release it is (``info['version']``); a plain ``MSMT17/`` with ``train/`` and ``test/`` is reported
as unknown, because V2 faces are blurred and results are not comparable across versions.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import List, Tuple

from .bases import (DatasetFormatError, Record, ReIDDataset, check_images_exist,
                    find_dataset_folder, parse_list_file, relabel_pids, require_dir, require_file)

MSMT17_FOLDERS = ("MSMT17", "MSMT17_V2", "MSMT17_V1")
IMAGE_FOLDERS = (("train", "test"), ("mask_train_v2", "mask_test_v2"))
NUM_CAMERAS = 15

MSMT17_LAYOUT = """  <ROOT_DIR>/MSMT17/           (or MSMT17_V1/ or MSMT17_V2/)
      train/            (V2 release: mask_train_v2/)
      test/             (V2 release: mask_test_v2/)
      list_train.txt    '<path relative to train/> <pid>' per line
      list_val.txt      '<path relative to train/> <pid>' per line
      list_query.txt    '<path relative to test/> <pid>' per line
      list_gallery.txt  '<path relative to test/> <pid>' per line"""


def read_msmt17_list(list_path: str, image_dir: str) -> List[Record]:
    """Records of one MSMT17 list file: raw pids, 0-based cameras, junk (pid -1) dropped."""
    records = []
    for line_no, rel_path, pid in parse_list_file(list_path, "msmt17"):
        if pid == -1:
            continue
        fields = os.path.basename(rel_path).split("_")
        if len(fields) < 3 or not fields[2].isdigit():
            raise DatasetFormatError(
                f"msmt17: {list_path} line {line_no}: cannot read the camera from {rel_path!r} "
                "(expected '<pid>_<index>_<camera 01-15>_...')")
        cam = int(fields[2])
        if pid < 0 or not 1 <= cam <= NUM_CAMERAS:
            raise DatasetFormatError(
                f"msmt17: {list_path} line {line_no}: pid {pid} / camera {cam} out of range "
                f"(pid >= 0, camera 1-{NUM_CAMERAS})")
        records.append(Record(path=os.path.join(image_dir, rel_path), pid=pid, camid=cam - 1))
    if not records:
        raise DatasetFormatError(f"msmt17: no images listed in {list_path}")
    return records


def _find_dataset_dir(root: str) -> Tuple[str, List[str]]:
    path, others = find_dataset_folder(root, MSMT17_FOLDERS, "msmt17", MSMT17_LAYOUT)
    return os.path.basename(path), others


def _find_image_dirs(dataset_dir: str) -> Tuple[str, str]:
    names = next((pair for pair in IMAGE_FOLDERS
                  if os.path.isdir(os.path.join(dataset_dir, pair[0]))), IMAGE_FOLDERS[0])
    train_dir, test_dir = (os.path.join(dataset_dir, name) for name in names)
    require_dir(train_dir, "msmt17", MSMT17_LAYOUT)
    require_dir(test_dir, "msmt17", MSMT17_LAYOUT)
    return train_dir, test_dir


def _version(folder: str, train_dir: str) -> Tuple[str, str]:
    """(version, how it was decided)."""
    if folder.endswith("_V1"):
        return "V1", "from the folder name MSMT17_V1"
    if folder.endswith("_V2"):
        return "V2", "from the folder name MSMT17_V2; faces blurred"
    if os.path.basename(train_dir) == "mask_train_v2":
        return "V2", "from the image folder mask_train_v2/; faces blurred"
    return "unknown", ("MSMT17/ with train/ and test/ does not say which release it is; rename the "
                       "folder to MSMT17_V1 or MSMT17_V2 (V2 blurs faces, results differ)")


def load_msmt17(root: str, train_with_val: bool = True) -> ReIDDataset:
    """MSMT17 from ``<root>/MSMT17`` (or ``MSMT17_V1`` / ``MSMT17_V2``).

    Args:
        root: DATASETS.ROOT_DIR, the folder that contains the dataset folder.
        train_with_val: merge ``list_val.txt`` into training (TransReID / BoT protocol,
            DATASETS.MSMT17_TRAIN_WITH_VAL).

    Returns:
        a :class:`ReIDDataset` with one Market-1501 evaluation split; ``info`` carries the
        folder, the release version and which lists made the training split.

    Example:
        >>> ds = load_msmt17("./data", train_with_val=True)   # doctest: +SKIP
        >>> ds.info["version"]                                 # doctest: +SKIP
        'V2'
    """
    folder, ignored = _find_dataset_dir(root)
    dataset_dir = os.path.join(root, folder)
    train_dir, test_dir = _find_image_dirs(dataset_dir)
    lists = {name: os.path.join(dataset_dir, f"list_{name}.txt")
             for name in ("train", "val", "query", "gallery")}
    needed = ["train", "val", "query", "gallery"] if train_with_val else [
        "train", "query", "gallery"]
    for name in needed:
        require_file(lists[name], "msmt17", MSMT17_LAYOUT)

    parts = {}
    for name in needed:
        image_dir = train_dir if name in ("train", "val") else test_dir
        parts[name] = read_msmt17_list(lists[name], image_dir)
        check_images_exist(parts[name], lists[name], "msmt17")

    train = parts["train"] + (parts["val"] if train_with_val else [])
    train_lists = "list_train.txt + list_val.txt" if train_with_val else "list_train.txt"
    for recs, source in ((train, train_lists), (parts["query"], "list_query.txt"),
                         (parts["gallery"], "list_gallery.txt")):
        repeated = sorted(p for p, n in Counter(r.path for r in recs).items() if n > 1)
        if repeated:
            raise DatasetFormatError(
                f"msmt17: {len(repeated)} image(s) listed more than once in {source}, "
                f"e.g. {repeated[0]}")

    def by_path(recs: List[Record]) -> List[Record]:
        return sorted(recs, key=lambda r: r.path)

    folder_info = dataset_dir
    if ignored:
        folder_info += f" ({', '.join(f + '/' for f in ignored)} also present, not read)"
    version, version_note = _version(folder, train_dir)
    info = {
        "folder": folder_info,
        "version": version,
        "version note": version_note,
        "train lists": f"{train_lists} (train_with_val={train_with_val})",
    }
    return ReIDDataset("msmt17", relabel_pids(by_path(train)), by_path(parts["query"]),
                       by_path(parts["gallery"]), info=info)
