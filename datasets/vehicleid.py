"""VehicleID (Liu et al., "Deep Relative Distance Learning", CVPR 2016) and its trial protocol.

Layout::

    ROOT_DIR/VehicleID_V1.0/
        image/                  <name>.jpg
        train_test_split/
            train_list.txt      '<name> <vehicle id>' per line   (13,164 ids)
            test_list_800.txt   small test set     (800 ids)
            test_list_1600.txt  medium test set    (1,600 ids)
            test_list_2400.txt  large test set     (2,400 ids)

No cameras and no views: camid 0 and view id 0 for every record, and every evaluation split has
``EvalSplit.camera_filter=False``, so no gallery item is removed (how the reference encodes this:
docs/reference_differences.md). Vehicle id 0 is an ordinary identity; -1 lines are dropped like
junk elsewhere.

Evaluation (REFERENCES 1.2): per trial, one random image of every test id goes to the gallery and
the others are queries; R1 / R5 are averaged over the trials. The test images are
``ReIDDataset.test`` (query / gallery lists stay empty) and every trial is an :class:`EvalSplit`
named ``trial<t>`` over them. Deliberate difference: the trials are seeded. Trial ``t`` draws from
``numpy.random.default_rng([trial_seed, t])``, so the same seed gives the same galleries and every
trial differs from the others (the reference's unseeded draws: docs/reference_differences.md).
"""
from __future__ import annotations

import os
from collections import Counter
from typing import List, Sequence

import numpy as np

from configs.validate import VEHICLEID_TEST_SIZES as TEST_SIZES

from .bases import (DatasetFormatError, EvalSplit, Record, ReIDDataset, check_images_exist,
                    find_dataset_folder, parse_list_file, relabel_pids, require_dir, require_file)

VEHICLEID_LAYOUT = """  <ROOT_DIR>/VehicleID_V1.0/
      image/                 <name>.jpg
      train_test_split/
          train_list.txt     '<name> <vehicle id>' per line
          test_list_800.txt, test_list_1600.txt, test_list_2400.txt"""


def read_vehicleid_list(list_path: str, image_dir: str) -> List[Record]:
    """Records of a VehicleID list (raw ids, camid 0, view id 0), sorted by path."""
    records = [Record(path=os.path.join(image_dir, name + ".jpg"), pid=pid, camid=0)
               for _, name, pid in parse_list_file(list_path, "vehicleid") if pid != -1]
    if not records:
        raise DatasetFormatError(f"vehicleid: no images listed in {list_path}")
    if any(r.pid < 0 for r in records):
        raise DatasetFormatError(f"vehicleid: negative vehicle id other than -1 in {list_path}")
    repeated = sorted(p for p, n in Counter(r.path for r in records).items() if n > 1)
    if repeated:
        raise DatasetFormatError(
            f"vehicleid: {len(repeated)} image(s) listed more than once in {list_path}, "
            f"e.g. {repeated[0]}")
    check_images_exist(records, list_path, "vehicleid")
    return sorted(records, key=lambda r: r.path)


def vehicleid_trials(pids: Sequence[int], num_trials: int, trial_seed: int) -> List[EvalSplit]:
    """The seeded VehicleID gallery draws over test images with identities ``pids``.

    Trial ``t`` uses ``numpy.random.default_rng([trial_seed, t])`` (so runs with adjacent seeds
    share no trial): for every identity (ascending
    id) it picks one of that identity's images (ascending test index) for the gallery; all other
    images are queries. No camera filter.

    Returns:
        ``num_trials`` splits named ``trial0`` ... with sorted ``query_idx`` / ``gallery_idx``.
    """
    if num_trials < 1:
        raise ValueError(
            f"vehicleid: num_trials must be >= 1 (DATASETS.VEHICLEID_TRIALS), got {num_trials}")
    pids = np.asarray(pids)
    _, group_of = np.unique(pids, return_inverse=True)
    by_group = np.argsort(group_of, kind="stable")
    groups = np.split(by_group, np.cumsum(np.bincount(group_of))[:-1])
    splits = []
    for t in range(num_trials):
        rng = np.random.default_rng([trial_seed, t])
        in_gallery = np.zeros(len(pids), dtype=bool)
        for members in groups:
            in_gallery[members[rng.integers(len(members))]] = True
        splits.append(EvalSplit(f"trial{t}", np.flatnonzero(~in_gallery),
                                np.flatnonzero(in_gallery), camera_filter=False))
    return splits


def load_vehicleid(root: str, test_size: int = 800, num_trials: int = 10,
                   trial_seed: int = 0) -> ReIDDataset:
    """VehicleID from ``<root>/VehicleID_V1.0`` with ``num_trials`` seeded gallery draws.

    Args:
        root: DATASETS.ROOT_DIR, the folder that contains the dataset folder.
        test_size: 800, 1600 or 2400 (which ``test_list_<size>.txt``; DATASETS.VEHICLEID_TEST_SIZE).
        num_trials: number of gallery draws (DATASETS.VEHICLEID_TRIALS; the protocol uses 10).
        trial_seed: trial t draws from ``default_rng([trial_seed, t])``
            (DATASETS.VEHICLEID_TRIAL_SEED).

    Returns:
        a :class:`ReIDDataset` with relabelled train records, empty query / gallery,
        ``test`` = every image of the test list (raw ids) and ``splits`` = the trials.

    Example:
        >>> ds = load_vehicleid("./data", test_size=800, num_trials=10)   # doctest: +SKIP
        >>> [s.name for s in ds.splits][:2]                                # doctest: +SKIP
        ['trial0', 'trial1']
    """
    if test_size not in TEST_SIZES:
        raise ValueError(f"vehicleid: test_size must be one of {TEST_SIZES} "
                         f"(DATASETS.VEHICLEID_TEST_SIZE), got {test_size!r}")
    dataset_dir, _ = find_dataset_folder(root, ("VehicleID_V1.0",), "vehicleid", VEHICLEID_LAYOUT)
    image_dir = os.path.join(dataset_dir, "image")
    split_dir = os.path.join(dataset_dir, "train_test_split")
    train_list = os.path.join(split_dir, "train_list.txt")
    test_list = os.path.join(split_dir, f"test_list_{test_size}.txt")
    for folder in (dataset_dir, image_dir, split_dir):
        require_dir(folder, "vehicleid", VEHICLEID_LAYOUT)
    for path in (train_list, test_list):
        require_file(path, "vehicleid", VEHICLEID_LAYOUT)

    train = read_vehicleid_list(train_list, image_dir)
    test = read_vehicleid_list(test_list, image_dir)
    shared = sorted({r.pid for r in train} & {r.pid for r in test})
    if shared:
        raise DatasetFormatError(
            f"vehicleid: {len(shared)} vehicle id(s) appear in both {train_list} and {test_list} "
            f"(e.g. {shared[0]}); the test ids must be unseen")
    splits = vehicleid_trials([r.pid for r in test], num_trials, trial_seed)
    num_ids = len({r.pid for r in test})
    info = {
        "test list": f"{test_list} ({num_ids} ids, {len(test)} images)",
        "trials": (f"{num_trials} seeded draws (numpy default_rng([{trial_seed}, t]), t = 0.."
                   f"{num_trials - 1}): one random image per id -> "
                   f"gallery ({len(splits[0].gallery_idx)} images), the rest -> query "
                   f"({len(splits[0].query_idx)} images); no camera filter"),
    }
    return ReIDDataset("vehicleid", relabel_pids(train), [], [], splits=splits, test=test,
                       info=info)
