"""The record and dataset contracts shared by every loader (DESIGN.md section 2).

A loader turns a benchmark folder into a :class:`ReIDDataset`: three lists of
:class:`Record` (train / query / gallery) plus the evaluation splits over the test images.

Conventions (the de-facto Market-1501 protocol of reid-strong-baseline / TransReID):
- junk images (pid -1) are dropped at load time; distractors (pid 0) stay in the gallery;
- train pids are relabelled to 0..C-1 (``relabel_pids``); query / gallery keep raw pids;
- camera and view ids are 0-based.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# The languages a record's captions can be in (DATASETS.CAPTION_LANG); a loader or caption source
# that reads only some of them says which (``datasets/captions.py`` ANNOTATION_LANGS).


class DatasetFormatError(ValueError):
    """A dataset file or folder does not have the expected layout or content."""


@dataclass
class Record:
    """One image.

    Args:
        path: absolute path of the image file.
        pid: identity (train: relabelled 0..C-1; query / gallery: raw, 0 = distractor).
        camid: 0-based camera id.
        viewid: 0-based view id (VeRi orientation; 0 where the dataset has none).
        captions: natural-language descriptions (text datasets, SynthPedes).
        attrs: attribute annotations (colour, type, ...).
    """

    path: str
    pid: int
    camid: int
    viewid: int = 0
    captions: List[str] = field(default_factory=list)
    attrs: Dict[str, object] = field(default_factory=dict)


@dataclass
class EvalSplit:
    """One evaluation over the dataset's test images.

    ``query_idx`` / ``gallery_idx`` index ``ReIDDataset.test``. ``camera_filter`` True applies the
    Market-1501 rule (gallery items with the query's pid AND camera are removed); False evaluates
    against the whole gallery (VehicleID, which has no cameras).
    """

    name: str
    query_idx: np.ndarray
    gallery_idx: np.ndarray
    camera_filter: bool = True


def relabel_pids(records: Sequence[Record]) -> List[Record]:
    """Map the pids of ``records`` to 0..C-1 in ascending order of the raw pid."""
    raw = sorted({r.pid for r in records})
    mapping = {pid: label for label, pid in enumerate(raw)}
    return [dataclasses.replace(r, pid=mapping[r.pid]) for r in records]


def require_dir(path: str, dataset: str, layout: str) -> None:
    """Raise a clear error naming the expected layout when ``path`` is not a folder."""
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"{dataset}: folder not found: {path}\nExpected layout:\n{layout}\n"
            "Set DATASETS.ROOT_DIR to the folder that contains the dataset folder."
        )


def require_file(path: str, dataset: str, layout: str) -> None:
    """Raise a clear error naming the expected layout when ``path`` is not a file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{dataset}: file not found: {path}\nExpected layout:\n{layout}\n"
            "Set DATASETS.ROOT_DIR to the folder that contains the dataset folder."
        )


def parse_list_file(path: str, dataset: str) -> List[Tuple[int, str, int]]:
    """Read a ``<name> <pid>`` list file (MSMT17, VehicleID).

    Blank lines are ignored. Returns (1-based line number, name, pid) per line; a line that is
    not exactly two fields with an integer second field is a :class:`DatasetFormatError` naming
    the file and the line number.
    """
    entries = []
    with open(path, "r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise DatasetFormatError(
                    f"{dataset}: {path} line {line_no}: expected '<name> <id>', "
                    f"got {line.rstrip()!r}")
            try:
                pid = int(fields[1])
            except ValueError:
                raise DatasetFormatError(
                    f"{dataset}: {path} line {line_no}: the id {fields[1]!r} is not an integer"
                ) from None
            entries.append((line_no, fields[0], pid))
    return entries


def unseen_test_ids(dataset: "ReIDDataset") -> Dict[str, List[int]]:
    """Camera and view ids that occur in the test images but in no training image.

    Returns ``{'camera': [...], 'view': [...]}`` (0-based ids, ascending; empty lists when
    training covers every test id). With SIE (MODEL.SIE_CAMERA / MODEL.SIE_VIEW) the embedding
    rows of these ids are never trained.
    """
    result = {}
    for side, attr in (("camera", "camid"), ("view", "viewid")):
        seen = {getattr(r, attr) for r in dataset.train}
        result[side] = sorted({getattr(r, attr) for r in dataset.test} - seen)
    return result


def check_images_exist(records: List[Record], list_path: str, dataset: str) -> None:
    """Raise FileNotFoundError naming the list file and the first missing images, if any."""
    missing = [r.path for r in records if not os.path.isfile(r.path)]
    if missing:
        shown = "\n  ".join(missing[:5])
        raise FileNotFoundError(
            f"{dataset}: {len(missing)} image(s) listed in {list_path} are missing, "
            f"e.g.\n  {shown}")


def parse_int(text: str, what: str, path: str, dataset: str, expected: str) -> int:
    """``int(text)``, or a :class:`DatasetFormatError` naming the file whose name (or line) holds
    ``text`` where an integer ``what`` (e.g. 'pid') was expected in the ``expected`` format."""
    try:
        return int(text)
    except ValueError:
        raise DatasetFormatError(
            f"{dataset}: the {what} {text!r} in {path} is not an integer (expected "
            f"{expected}); rename or remove the file") from None


def _folder_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _near(key: str, wanted: str) -> bool:
    """A folder key that extends the wanted one (``veri776``) or is its start (``vehicleid``)."""
    return key.startswith(wanted) or (len(key) >= 4 and wanted.startswith(key))


def find_dataset_folder(root: str, names: Sequence[str], dataset: str,
                        layout: str) -> Tuple[str, List[str]]:
    """The dataset folder under ``root``: the first of ``names`` that exists (TransReID's name
    first, then the official archive's, as torchreid accepts both).

    Returns:
        (path of the folder read, the other accepted names also present, not read). When none
        exists and no folder has a near name, the path of ``names[0]``: the loader's
        ``require_dir`` then names the missing folder and the layout.
    Raises:
        FileNotFoundError: none exists but a folder of a near name does (same letters and digits
            in another case or punctuation, or with a suffix, e.g. ``Market-1501``, ``veri776``):
            the message names the exact rename.
    """
    found = [name for name in names if os.path.isdir(os.path.join(root, name))]
    if found:
        return os.path.join(root, found[0]), found[1:]
    wanted = [_folder_key(n) for n in names]
    entries = sorted(os.listdir(root)) if os.path.isdir(root) else []
    near = [e for e in entries if os.path.isdir(os.path.join(root, e))
            and any(_near(_folder_key(e), w) for w in wanted)]
    if not near:
        return os.path.join(root, names[0]), []
    key = _folder_key(near[0])
    target = next((n for n in names if _folder_key(n) == key),           # same name, other case
                  next(n for n in names if _near(key, _folder_key(n))))  # or the first it extends
    accepted = " or ".join(f"{os.path.join(root, n)}/" for n in names)
    raise FileNotFoundError(
        f"{dataset}: folder not found: {accepted}\nFound {os.path.join(root, near[0])}/ instead: "
        f"rename it: mv '{os.path.join(root, near[0])}' '{os.path.join(root, target)}'\n"
        f"Expected layout:\n{layout}")


class ReIDDataset:
    """An image re-ID dataset: train / query / gallery records and how to evaluate them.

    Args:
        name: dataset name (as in DATASETS.NAMES).
        train: training records, pids already relabelled to 0..C-1.
        query, gallery: test records with raw pids.
        splits: evaluation splits over ``test``; default = one Market-1501 split
            (all queries against the whole gallery, camera filter on).
        test: the test images when they are not simply ``query + gallery`` (VehicleID, the
            text-based person search datasets).
        info: extra facts printed with the statistics (e.g. {'version': 'V2'}).
        val: the validation records (text-based person search: the annotation's ``val`` split,
            or training identities held out by DATASETS.VAL_IDS, ``datasets.factory``); raw or
            relabelled pids, only compared with each other. Empty = no validation split.
        val_source: where ``val`` comes from, for logs and summaries ('' when empty).

    ``splits`` may be empty: the text-based person search datasets have no image re-ID
    evaluation (``query = gallery = []``, the test images in ``test``). ``caption_source`` says
    whether batches carry text ('none' until ``datasets.captions.apply_caption_source`` sets
    'annotation' or 'attributes').
    """

    def __init__(
        self,
        name: str,
        train: List[Record],
        query: List[Record],
        gallery: List[Record],
        splits: Optional[List[EvalSplit]] = None,
        test: Optional[List[Record]] = None,
        info: Optional[Dict[str, str]] = None,
        val: Optional[List[Record]] = None,
        val_source: str = "",
    ):
        if not train:
            raise DatasetFormatError(f"{name}: the training split is empty")
        labels = sorted({r.pid for r in train})
        if labels != list(range(len(labels))):
            raise ValueError(f"{name}: train pids must be relabelled to 0..C-1 (use relabel_pids)")
        self.name = name
        self.train = train
        self.query = query
        self.gallery = gallery
        self.test = test if test is not None else query + gallery
        if splits is None:
            splits = [EvalSplit("test", np.arange(len(query)),
                                np.arange(len(query), len(query) + len(gallery)))]
        self.splits = splits
        self.info = info or {}
        self.val = list(val or [])
        self.val_source = val_source if self.val else ""
        self.caption_source = "none"

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    @property
    def num_cams(self) -> int:
        """Camera count over every split (the size of the SIE camera table)."""
        return max(r.camid for r in self.train + self.test) + 1

    @property
    def num_views(self) -> int:
        """View count over every split (the size of the SIE view table)."""
        return max(r.viewid for r in self.train + self.test) + 1

    def statistics(self) -> str:
        """The usual statistics table: ids / images / cameras per split."""
        rows = [("train", self.train)]
        if self.query or self.gallery:
            rows += [("query", self.query), ("gallery", self.gallery)]
        else:
            rows.append(("test", self.test))
        if self.val:
            rows.append(("val", self.val))
        lines = [
            f"Dataset {self.name} statistics:",
            "  ----------------------------------------",
            "  subset   | # ids | # images | # cameras",
            "  ----------------------------------------",
        ]
        for label, recs in rows:
            ids = len({r.pid for r in recs})
            cams = len({r.camid for r in recs})
            lines.append(f"  {label:<8} | {ids:5d} | {len(recs):8d} | {cams:9d}")
        lines.append("  ----------------------------------------")
        for key, value in self.info.items():
            lines.append(f"  {key}: {value}")
        return "\n".join(lines)
