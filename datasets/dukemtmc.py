"""DukeMTMC-reID (Ristani et al., ECCVW 2016; Zheng et al., ICCV 2017), Market-style folders.

Layout (either folder name is accepted; ``dukemtmcreid`` wins when both exist)::

    ROOT_DIR/dukemtmcreid/          (or ROOT_DIR/DukeMTMC-reID/, the name of the release zip)
        bounding_box_train/   0001_c2_f0046182.jpg ...   (702 ids, 16,522 images)
        query/                                            (702 ids, 2,228 images)
        bounding_box_test/                                (17,661 images incl. 408 distractor ids)

File name ``<pid>_c<cam>_f<frame>.jpg``, camera 1-8 (stored 0-based). The release has no junk
(pid -1) and no pid 0000: its 408 distractor identities carry ordinary pids and appear only in the
gallery. Parsing follows TransReID ``datasets/dukemtmcreid.py`` (regex ``([-\\d]+)_c(\\d)``);
deliberate differences: view id 0 (TransReID stores 1; Duke has no views), train pids relabelled
in ascending order of the raw pid, and a file name that does not parse is an error naming it.
The dataset was withdrawn by its authors in 2019; PhaseReID only reads a copy you already have.
"""
from __future__ import annotations

from .bases import ReIDDataset, find_dataset_folder
from .market1501 import load_market_style

DUKE_FOLDERS = ("dukemtmcreid", "DukeMTMC-reID")

DUKE_LAYOUT = """  <ROOT_DIR>/dukemtmcreid/         (or <ROOT_DIR>/DukeMTMC-reID/)
      bounding_box_train/  <pid>_c<cam>_f<frame>.jpg   (cameras 1-8)
      query/
      bounding_box_test/"""


def load_dukemtmcreid(root: str) -> ReIDDataset:
    """DukeMTMC-reID from ``<root>/dukemtmcreid`` or ``<root>/DukeMTMC-reID``.

    Args:
        root: DATASETS.ROOT_DIR, the folder that contains the dataset folder.

    Returns:
        a :class:`ReIDDataset` with one Market-1501 evaluation split; ``info['folder']`` says which
        folder was read.

    Example:
        >>> ds = load_dukemtmcreid("./data")   # doctest: +SKIP
        >>> print(ds.statistics())             # doctest: +SKIP
    """
    dataset_dir, others = find_dataset_folder(root, DUKE_FOLDERS, "dukemtmcreid", DUKE_LAYOUT)
    dataset = load_market_style(dataset_dir, "dukemtmcreid", DUKE_LAYOUT, max_cam=8)
    folder = dataset_dir
    if others:
        folder += f" ({others[0]}/ also present, not read)"
    dataset.info["folder"] = folder
    return dataset
