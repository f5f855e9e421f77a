"""Text-to-image evaluation sets: the caption queries and the image gallery of one split.

Protocol (DESIGN.md section 3, REFERENCES.md 1.3; IRRA ``utils/metrics.py`` ``rank``): every
caption of the split queries every gallery image once; relevant = same pid; no camera filter.

A :class:`T2ISet` is built from a split's records (``ReIDDataset.test`` or ``ReIDDataset.val``):

- gallery = the records that have at least one caption, in dataset order. For the caption
  datasets (CUHK-PEDES, ICFG-PEDES, RSTPReid, VN3K) that is every record of the split. SynthPedes'
  test records are its Market-1501 query + gallery, which include distractors (pid 0) without
  captions: they are NOT in the text-to-image gallery (IRRA's protocol has no distractors; a
  distractor image would only be an extra negative of every query);
- queries = every caption of every gallery image, image by image, caption by caption (file
  order), with the pid of its image and the index of its image in the gallery
  (``caption_image``), so an outside tool can tell which image a caption was written for.

Example::

    sets = t2i_sets(dataset)               # {'test': T2ISet, 'val': T2ISet (when there is one)}
    s = sets["test"]
    len(s.captions), len(s.images)         # CUHK-PEDES: 6156, 3074
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from .bases import Record, ReIDDataset

#: the splits a text-to-image set is built for, and the ReIDDataset attribute holding each
T2I_SPLITS = {"test": "test", "val": "val"}


@dataclass
class T2ISet:
    """The queries and the gallery of text-to-image evaluation on one split (module docstring).

    Attributes:
        name: the split, 'val' or 'test'.
        images: the gallery: the split's records with >= 1 caption, in dataset order.
        image_pids: (G,) int64 pids of ``images``.
        captions: the queries: every caption of every gallery image, image by image.
        caption_pids: (Q,) int64 pid of each caption (its image's pid).
        caption_image: (Q,) int64 index in ``images`` of the image each caption describes.
    """

    name: str
    images: List[Record]
    image_pids: np.ndarray
    captions: List[str]
    caption_pids: np.ndarray
    caption_image: np.ndarray


def build_t2i_set(name: str, records: List[Record], dataset_name: str,
                  source: str = "") -> T2ISet:
    """The :class:`T2ISet` of ``records`` (one split of dataset ``dataset_name``).

    Args:
        name: the split ('val' | 'test').
        records: the split's records, in dataset order.
        dataset_name: for messages.
        source: where the split comes from (``ReIDDataset.val_source``), for messages.

    Raises:
        ValueError: no record of the split has a caption (the message names the dataset, the
            split and what to check).
    """
    images = [r for r in records if r.captions]
    if not images:
        where = f" ({source})" if source else ""
        raise ValueError(
            f"{dataset_name}: the {name} split{where} has no image with a caption "
            f"({len(records)} images), so it cannot be evaluated text-to-image; check the "
            "dataset's caption file and DATASETS.CAPTION_SOURCE"
            + (" / DATASETS.VAL_IDS" if name == "val" else ""))
    captions: List[str] = []
    owner: List[int] = []
    for i, record in enumerate(images):
        captions.extend(record.captions)
        owner.extend([i] * len(record.captions))
    image_pids = np.array([r.pid for r in images], dtype=np.int64)
    caption_image = np.array(owner, dtype=np.int64)
    return T2ISet(name=name, images=images, image_pids=image_pids, captions=captions,
                  caption_pids=image_pids[caption_image], caption_image=caption_image)


def t2i_set(dataset: ReIDDataset, split: str) -> T2ISet:
    """The :class:`T2ISet` of ``dataset``'s split ``split`` ('test' | 'val').

    Raises:
        ValueError: an unknown split; 'val' when the dataset has no validation split; a split
            without a captioned image (:func:`build_t2i_set`).
    """
    if split not in T2I_SPLITS:
        raise ValueError(f"text-to-image split '{split}' is not one of {sorted(T2I_SPLITS)}")
    records = getattr(dataset, T2I_SPLITS[split])
    if split == "val" and not records:
        raise ValueError(f"{dataset.name} has no validation split (the annotation has none and "
                         "DATASETS.VAL_IDS is 0)")
    source = dataset.val_source if split == "val" else ""
    return build_t2i_set(split, records, dataset.name, source)


def t2i_sets(dataset: ReIDDataset) -> Dict[str, T2ISet]:
    """{'test': ..., and 'val': ... when ``dataset.val`` is non-empty} (:func:`t2i_set`)."""
    sets = {"test": t2i_set(dataset, "test")}
    if dataset.val:
        sets["val"] = t2i_set(dataset, "val")
    return sets


#: the built-in query subset of SynthPedes: captions of identities that have a near-twin
NEAR_TWIN = "near_twin"


def query_subset(t2i: T2ISet, spec: str, dataset_name: str) -> np.ndarray:
    """Indices into ``t2i.captions`` of a named query subset (TEST.QUERY_SUBSETS), sorted.

    ``spec`` is
    - ``'near_twin'``: SynthPedes only -- the captions of the images whose identity has a
      near-twin in the dataset (``Record.attrs['near_twin']``), the hard negatives that differ in
      one detail;
    - a JSON file ``{"name": str, "queries": [{"file_path": str, "caption": str}, ...]}``: the
      captions equal to ``caption`` of the gallery images whose path ends with ``file_path``
      at a folder boundary (as the annotation writes it). Every listed query must exist in the split.

    Raises:
        ValueError: 'near_twin' on another dataset; a file query that matches no caption; an
            empty subset.
        FileNotFoundError: a missing subset file.
    """
    if spec == NEAR_TWIN:
        if dataset_name != "synth":
            raise ValueError(f"TEST.QUERY_SUBSETS '{NEAR_TWIN}' is SynthPedes' near-twin subset; "
                             f"{dataset_name} has none: give a subset file instead")
        index = [q for q, i in enumerate(t2i.caption_image)
                 if t2i.images[int(i)].attrs.get("near_twin")]
    else:
        index = sorted(_file_subset(t2i, spec))
    if not index:
        raise ValueError(f"TEST.QUERY_SUBSETS {spec!r}: no caption of the {t2i.name} split is in "
                         "the subset")
    return np.asarray(index, dtype=np.int64)


def _file_subset(t2i: T2ISet, path: str) -> List[int]:
    import json
    import os
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TEST.QUERY_SUBSETS: subset file not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    queries = data.get("queries") if isinstance(data, dict) else None
    if not isinstance(queries, list):
        raise ValueError(f"{path}: a query subset is {{'name': ..., 'queries': [{{'file_path': "
                         "..., 'caption': ...}, ...]}}")
    by_caption: Dict[str, List[tuple]] = {}
    for q, (caption, i) in enumerate(zip(t2i.captions, t2i.caption_image)):
        by_caption.setdefault(caption, []).append((q, t2i.images[int(i)].path.replace(os.sep, "/")))
    found = []
    for k, entry in enumerate(queries):
        if not isinstance(entry, dict) or not {"file_path", "caption"} <= set(entry):
            raise ValueError(f"{path}: query {k} must have 'file_path' and 'caption'")
        rel = str(entry["file_path"]).replace("\\", "/")
        # the path ends with file_path at a folder boundary ('1.jpg' must not match '11.jpg')
        hits = [q for q, image in by_caption.get(entry["caption"], [])
                if image == rel or image.endswith("/" + rel.lstrip("/"))]
        if not hits:
            raise ValueError(f"{path}: query {k} ({rel!r}, {entry['caption'][:60]!r}) is not a "
                             f"caption of the {t2i.name} split")
        found += hits
    return list(dict.fromkeys(found))


def subset_name(spec: str) -> str:
    """The name a subset's numbers go under in summary.json: 'near_twin', or the file's 'name'
    (its stem when it has none)."""
    if spec == NEAR_TWIN:
        return spec
    import json
    import os
    with open(spec, encoding="utf-8") as f:
        data = json.load(f)
    name = data.get("name") if isinstance(data, dict) else None
    return str(name) if name else os.path.splitext(os.path.basename(spec))[0]
