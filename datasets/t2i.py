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
