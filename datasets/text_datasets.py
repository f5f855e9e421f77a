"""Text-based person search datasets: CUHK-PEDES, ICFG-PEDES, RSTPReid and VN3K.

Each benchmark is one JSON list (one entry per image) next to an ``imgs/`` folder. The folder and
file names follow IRRA (Jiang & Ye, CVPR 2023, ``datasets/{cuhkpedes,icfgpedes,rstpreid}.py``),
the de-facto layout of the field; VN3K follows the IRRA-style loaders of its release::

    <ROOT_DIR>/CUHK-PEDES/   imgs/ (cam_a/, cam_b/, CUHK01/, CUHK03/, Market/, test_query/, ...)
                             reid_raw.json          split / captions / file_path / id (1-based)
    <ROOT_DIR>/ICFG-PEDES/   imgs/ (train/, test/)
                             ICFG-PEDES.json        (IRRA's code; its README says ICFG_PEDES.json,
                                                     also accepted)  split / captions / file_path / id
    <ROOT_DIR>/RSTPReid/     imgs/
                             data_captions.json     split / captions / img_path / id
    <ROOT_DIR>/VN3K/         imgs/
                             data_captions.json     split (train / validate / test) / captions
                                                    (Vietnamese) / en_captions / file_path / id

Semantics (REFERENCES.md section 6; IRRA):
- splits: ``train`` -> training records, ``test`` -> the test records, ``val`` (VN3K:
  ``validate``) -> ``ReIDDataset.val``, the split the best epoch is selected on (TEST.SELECT_ON
  'val'; a file without one, such as ICFG-PEDES, gets held-out training identities from
  DATASETS.VAL_IDS, ``datasets/factory.py``). Any other split value is a
  :class:`DatasetFormatError` naming it (IRRA's handling: docs/reference_differences.md).
- pids: the ``id`` field. Training pids are relabelled to 0..C-1 in ascending order of the raw id
  (for CUHK-PEDES this equals IRRA's ``id - 1``; ICFG-PEDES / RSTPReid ids are already 0-based
  and contiguous); test records keep the raw id. ``Record.attrs`` holds ``raw_id`` and ``split``.
- camid 0 and viewid 0 everywhere: the files carry no camera or view.
- ``Record.captions`` = the entry's caption list (VN3K: ``captions`` for caption_lang 'vi',
  ``en_captions`` for 'en'). The training items are built from these records by
  ``datasets/make_dataloader.py``: with MODEL.TASK 'tbps' one item per (image, caption) pair, as
  IRRA; with text-guided image re-ID (TG-MIM) one item per image with one caption drawn per epoch.
- ``captions_bt`` (optional, TBPS-CLIP's back-translated captions, one per caption of
  ``captions``): kept in ``Record.attrs['captions_bt']`` for INPUT.TEXT_AUG.BACKTRANS_P
  (``datasets/tbps_augment.py``); a malformed one is a :class:`DatasetFormatError`.
- Records keep the order of the JSON file (deterministic).

Evaluation: image re-ID evaluation (query / gallery with cameras) is not defined for these
datasets, so the returned :class:`ReIDDataset` has ``query = gallery = []``, ``splits = []`` and
the test records in ``test`` (and the validation records in ``val``); they are evaluated
text-to-image (MODEL.TASK 'tbps', REFERENCES.md section 1.3).

Errors: a missing file or folder names the path and prints the layout; an entry that is not an
object, lacks a field or has a field of the wrong type is a :class:`DatasetFormatError` naming the
file, the entry's 0-based index and the field; missing images are a FileNotFoundError naming the
JSON file and the first missing paths.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from configs.validate import CAPTION_LANGS

from .bases import (DatasetFormatError, Record, ReIDDataset, check_images_exist,
                    relabel_pids, require_dir)

CUHKPEDES_LAYOUT = """  <ROOT_DIR>/CUHK-PEDES/
      imgs/            (cam_a/, cam_b/, CUHK01/, CUHK03/, Market/, test_query/, train_query/)
      reid_raw.json    [{"split", "captions", "file_path", "processed_tokens", "id"}, ...]"""
ICFGPEDES_LAYOUT = """  <ROOT_DIR>/ICFG-PEDES/
      imgs/              (train/, test/)
      ICFG-PEDES.json    (or ICFG_PEDES.json) [{"split", "captions", "file_path", "id"}, ...]"""
RSTPREID_LAYOUT = """  <ROOT_DIR>/RSTPReid/
      imgs/
      data_captions.json   [{"id", "img_path", "captions", "split"}, ...]"""
#: the optional per-entry field of back-translated captions (TBPS-CLIP), kept in
#: ``Record.attrs`` under the same name (INPUT.TEXT_AUG.BACKTRANS_P; datasets/tbps_augment.py)
BACK_TRANSLATION_KEY = "captions_bt"
VN3K_LAYOUT = """  <ROOT_DIR>/VN3K/
      imgs/
      data_captions.json   [{"split" (train/validate/test), "captions" (Vietnamese),
                             "en_captions", "file_path", "id"}, ...]"""


def read_json_list(path: str, dataset: str) -> list:
    """The JSON list in ``path``; invalid JSON or a non-list is a DatasetFormatError naming it."""
    with open(path, "r", encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{dataset}: {path} is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise DatasetFormatError(f"{dataset}: {path} must hold a JSON list of image entries, "
                                 f"got {type(data).__name__}")
    return data


def _field(entry, index: int, key: str, path: str, dataset: str):
    if not isinstance(entry, dict):
        raise DatasetFormatError(f"{dataset}: {path} entry {index} is a {type(entry).__name__}, "
                                 "expected an object")
    if key not in entry:
        raise DatasetFormatError(f"{dataset}: {path} entry {index} has no field '{key}' "
                                 f"(its fields: {sorted(entry)})")
    return entry[key]


def _as_id(value, index: int, key: str, path: str, dataset: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DatasetFormatError(f"{dataset}: {path} entry {index} field '{key}' must be an "
                                 f"integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise DatasetFormatError(f"{dataset}: {path} entry {index} field '{key}' must be an "
                                 f"integer, got {value!r}") from None


def _as_captions(value, index: int, key: str, path: str, dataset: str) -> List[str]:
    if isinstance(value, str):  # a single caption stored as a string
        value = [value]
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise DatasetFormatError(f"{dataset}: {path} entry {index} field '{key}' must be a list "
                                 f"of strings, got {value!r}"[:400])
    return [c.strip() for c in value if c.strip()]


def parse_caption_entries(path: str, dataset: str, img_dir: str, path_key: str,
                          caption_key: str, split_map: Dict[str, str]
                          ) -> Dict[str, List[Record]]:
    """Records per split ('train' / 'val' / 'test') from an IRRA-style caption JSON list.

    Args:
        path: the JSON file.
        dataset: dataset name for error messages.
        img_dir: the folder the entries' image paths are relative to.
        path_key: the image path field ('file_path' or 'img_path').
        caption_key: the caption list field ('captions' or 'en_captions').
        split_map: the file's split values -> 'train' | 'val' | 'test'.

    Returns:
        {'train': [...], 'val': [...], 'test': [...]} records with RAW pids, camid 0,
        ``attrs = {'raw_id', 'split'}``, in file order.
    """
    out: Dict[str, List[Record]] = {"train": [], "val": [], "test": []}
    for index, entry in enumerate(read_json_list(path, dataset)):
        split = _field(entry, index, "split", path, dataset)
        if split not in split_map:
            raise DatasetFormatError(
                f"{dataset}: {path} entry {index}: unknown split {split!r} "
                f"(expected one of {sorted(split_map)})")
        rel = _field(entry, index, path_key, path, dataset)
        if not isinstance(rel, str) or not rel:
            raise DatasetFormatError(f"{dataset}: {path} entry {index} field '{path_key}' must be "
                                     f"a non-empty string, got {rel!r}")
        raw_id = _as_id(_field(entry, index, "id", path, dataset), index, "id", path, dataset)
        captions, back = _captions_and_back_translations(entry, index, caption_key, path,
                                                         dataset)
        attrs = {"raw_id": raw_id, "split": split}
        if back is not None:
            attrs[BACK_TRANSLATION_KEY] = back
        out[split_map[split]].append(Record(
            path=os.path.join(img_dir, rel), pid=raw_id, camid=0, viewid=0, captions=captions,
            attrs=attrs))
    return out


def _captions_and_back_translations(entry: dict, index: int, caption_key: str, path: str,
                                    dataset: str) -> Tuple[List[str], Optional[List[str]]]:
    """(captions, their back-translations or None) of one entry. The optional field
    ``captions_bt`` (TBPS-CLIP's ``{split}_reid.json``) holds one back-translated caption per
    caption of the ``captions`` field, in the same order (not read with VN3K's
    ``en_captions``); a caption dropped as empty takes its back-translation with it, and an
    empty back-translation is kept as '' (the caption is then used as it is)."""
    raw = _field(entry, index, caption_key, path, dataset)
    captions = _as_captions(raw, index, caption_key, path, dataset)
    if caption_key != "captions" or BACK_TRANSLATION_KEY not in entry:
        return captions, None
    back = entry[BACK_TRANSLATION_KEY]
    if isinstance(back, str):
        back = [back]
    raw = [raw] if isinstance(raw, str) else raw
    if (not isinstance(back, list) or not all(isinstance(b, str) for b in back)
            or len(back) != len(raw)):
        raise DatasetFormatError(f"{dataset}: {path} entry {index} field "
                                 f"'{BACK_TRANSLATION_KEY}' must be a list of {len(raw)} strings "
                                 f"(one per caption), got {back!r}"[:400])
    return captions, [b.strip() for c, b in zip(raw, back) if c.strip()]


def _build(name: str, annotation: str, img_dir: str, splits: Dict[str, List[Record]],
           caption_lang: str, caption_key: str) -> ReIDDataset:
    if not splits["train"]:
        raise DatasetFormatError(f"{name}: {annotation} has no entry with the training split")
    check_images_exist(splits["train"] + splits["val"] + splits["test"], annotation, name)
    counts = ", ".join(f"{split} {len({r.pid for r in recs})} ids / {len(recs)} images / "
                       f"{sum(len(r.captions) for r in recs)} captions"
                       for split, recs in splits.items())
    info = {"annotation": annotation, "images": img_dir, "splits": counts,
            "evaluation": "text-to-image (every test caption against every test image)",
            "caption language": caption_lang, "caption field": caption_key}
    val_source = f"the annotation's validation split ({annotation})" if splits["val"] else ""
    return ReIDDataset(name, relabel_pids(splits["train"]), [], [], splits=[],
                       test=splits["test"], info=info, val=splits["val"], val_source=val_source)


def _dataset_paths(root: str, folder: str, name: str, layout: str,
                   json_names: Sequence[str]) -> Tuple[str, str, str]:
    """(dataset folder, image folder, annotation file): the first of ``json_names`` found."""
    dataset_dir = os.path.join(root, folder)
    require_dir(dataset_dir, name, layout)
    img_dir = os.path.join(dataset_dir, "imgs")
    require_dir(img_dir, name, layout)
    candidates = [os.path.join(dataset_dir, json_name) for json_name in json_names]
    for annotation in candidates:
        if os.path.isfile(annotation):
            return dataset_dir, img_dir, annotation
    raise FileNotFoundError(
        f"{name}: annotation file not found: {' or '.join(candidates)}\n"
        f"Expected layout:\n{layout}\n"
        "Set DATASETS.ROOT_DIR to the folder that contains the dataset folder.")


#: the CUHK-PEDES annotation ids LGUR's released code drops (one image each; 11,000 classes)
LGUR_DROPPED_CUHKPEDES_IDS = (1369, 4116, 6116)


def load_cuhkpedes(root: str, lgur_drop_ids: bool = False) -> ReIDDataset:
    """CUHK-PEDES (Li et al., CVPR 2017) from ``<root>/CUHK-PEDES`` (module docstring).

    Public split: train 11,003 ids / 34,054 images / 68,108 captions; val 1,000 / 3,078 / 6,158;
    test 1,000 / 3,074 / 6,156. ``id`` is 1-based. ``lgur_drop_ids`` (DATASETS.
    CUHKPEDES_LGUR_DROP_IDS): leave the training records of :data:`LGUR_DROPPED_CUHKPEDES_IDS`
    out before relabelling, as LGUR's released ``processed_data_singledata_CUHK.py``.

    Example:
        >>> ds = load_cuhkpedes("./data")   # doctest: +SKIP
        >>> ds.train[0].captions            # doctest: +SKIP
    """
    _, img_dir, annotation = _dataset_paths(root, "CUHK-PEDES", "cuhkpedes", CUHKPEDES_LAYOUT,
                                            ("reid_raw.json",))
    splits = parse_caption_entries(annotation, "cuhkpedes", img_dir, "file_path", "captions",
                                   {"train": "train", "val": "val", "test": "test"})
    if lgur_drop_ids:
        splits["train"] = [r for r in splits["train"]
                           if r.attrs["raw_id"] not in LGUR_DROPPED_CUHKPEDES_IDS]
    return _build("cuhkpedes", annotation, img_dir, splits, "en", "captions")


def load_icfgpedes(root: str) -> ReIDDataset:
    """ICFG-PEDES (Ding et al., 2021) from ``<root>/ICFG-PEDES`` (module docstring).

    The annotation is ``ICFG-PEDES.json`` (the name IRRA's code reads) or ``ICFG_PEDES.json`` (the
    name in IRRA's README); ``info['annotation']`` says which was read. Public split: train 3,102
    ids / 34,674 images; test 1,000 ids / 19,848 images; one caption per image; ``id`` 0-based.
    """
    _, img_dir, annotation = _dataset_paths(root, "ICFG-PEDES", "icfgpedes", ICFGPEDES_LAYOUT,
                                            ("ICFG-PEDES.json", "ICFG_PEDES.json"))
    splits = parse_caption_entries(annotation, "icfgpedes", img_dir, "file_path", "captions",
                                   {"train": "train", "val": "val", "test": "test"})
    return _build("icfgpedes", annotation, img_dir, splits, "en", "captions")


def load_rstpreid(root: str) -> ReIDDataset:
    """RSTPReid (Zhu et al., ACM MM 2021) from ``<root>/RSTPReid`` (module docstring).

    The image path field is ``img_path``. Public split: 4,101 ids / 20,505 images from MSMT17
    (train 3,701 ids, val 200, test 200), two captions per image; ``id`` 0-based.
    """
    _, img_dir, annotation = _dataset_paths(root, "RSTPReid", "rstpreid", RSTPREID_LAYOUT,
                                            ("data_captions.json",))
    splits = parse_caption_entries(annotation, "rstpreid", img_dir, "img_path", "captions",
                                   {"train": "train", "val": "val", "test": "test"})
    return _build("rstpreid", annotation, img_dir, splits, "en", "captions")


def load_vn3k(root: str, caption_lang: str = "en") -> ReIDDataset:
    """VN3K from ``<root>/VN3K`` (module docstring).

    Args:
        root: DATASETS.ROOT_DIR.
        caption_lang: DATASETS.CAPTION_LANG: 'vi' reads ``captions`` (Vietnamese), 'en' reads
            ``en_captions``; the field of the chosen language is required in every entry.

    The split ``validate`` is the validation split (not used); ``id`` is 1-based.
    """
    if caption_lang not in CAPTION_LANGS:
        raise ValueError(f"vn3k: DATASETS.CAPTION_LANG '{caption_lang}' is not one of "
                         f"{CAPTION_LANGS}")
    _, img_dir, annotation = _dataset_paths(root, "VN3K", "vn3k", VN3K_LAYOUT,
                                            ("data_captions.json",))
    caption_key = "captions" if caption_lang == "vi" else "en_captions"
    splits = parse_caption_entries(annotation, "vn3k", img_dir, "file_path", caption_key,
                                   {"train": "train", "validate": "val", "test": "test"})
    return _build("vn3k", annotation, img_dir, splits, caption_lang, caption_key)
