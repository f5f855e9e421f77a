"""Captions of a dataset's records: from caption files or built from attribute annotations.

``DATASETS.CAPTION_SOURCE`` (read by :func:`apply_caption_source`, called by
``datasets/factory.py build_dataset``):

- ``'none'``: no text. Records keep whatever captions their loader read (nothing is cleared), but
  the dataset is marked ``caption_source = 'none'`` and batches carry no text.
- ``'annotation'``: the dataset's own caption file, already read by its loader into
  ``Record.captions``: SynthPedes ``reid_raw.json`` (``reid_raw_vi.json`` for CAPTION_LANG 'vi'),
  CUHK-PEDES ``reid_raw.json``, ICFG-PEDES ``ICFG-PEDES.json``, RSTPReid and VN3K
  ``data_captions.json`` (VN3K: ``en_captions`` for 'en', ``captions`` for 'vi';
  ``datasets/text_datasets.py``). Other datasets have no captions: an error names them.
- ``'attributes'``: every record's captions are replaced by ONE deterministic English caption
  built from its attribute annotation (``synth_attribute_caption``, ``veri_attribute_caption``,
  ``market_attribute_caption``): SynthPedes ``attributes.json`` identities, VeRi-776 colour / type
  from ``train_label.xml`` / ``test_label.xml`` (read by ``datasets/veri.py``), Market-1501
  ``market1501/market_attribute.mat`` (Lin et al. 2019). Other datasets: an error.

With a source set, every TRAINING record must have at least one caption; otherwise a
:class:`DatasetFormatError` names the count and the first image. Test records may lack captions
(SynthPedes distractors, Market-1501 distractors).

Attribute codes and their sources (stated because the files only hold numbers):

- VeRi-776 (the release's ReadMe / ``list_color.txt`` / ``list_type.txt``, JDAI-CV/VeRidataset):
  colorID 1-10 = yellow, orange, green, gray, red, blue, white, golden, brown, black; typeID 1-9 =
  sedan, suv, van, hatchback, mpv, pickup, bus, truck, estate. An early release labels vehicles
  3, 7 and 41 with the illegal typeID 0 (the VeRidataset README says they are SUVs); typeID 0 is
  captioned with the neutral noun 'vehicle' rather than patched.
- Market-1501 attributes (vana77/Market-1501_Attribute README; Lin et al., "Improving person
  re-identification by attribute and identity learning", Pattern Recognition 2019): 27
  identity-level attributes coded 1 / 2: gender male(1) / female(2); hair short(1) / long(2); up
  = sleeve long(1) / short(2); down = lower-body clothing long(1) / short(2); clothes = type of
  lower-body clothing dress(1) / pants(2); hat, backpack, bag, handbag no(1) / yes(2); age
  young(1) / teenager(2) / adult(3) / old(4); upblack, upwhite, upred, uppurple, upyellow,
  upgray, upblue, upgreen and downblack, downwhite, downpink, downpurple, downyellow, downgray,
  downblue, downgreen, downbrown no(1) / yes(2) (one colour per identity is 'yes').
  ``market_attribute.mat`` holds the struct ``market_attribute`` with fields ``train`` (751
  identities) and ``test`` (750), each with the 27 attribute vectors and ``image_index`` (the
  4-digit identity ids as strings); the field order differs between train and test, so fields are
  read by name.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Dict, Iterable, List, Optional

import numpy as np

from configs.validate import CAPTION_LANGS, CAPTION_SOURCES

from .bases import DatasetFormatError, Record, ReIDDataset
from .market1501 import MARKET_PATTERN
from .synth import detail_phrase

# Datasets with caption files, and the languages they have.
ANNOTATION_LANGS = {"synth": ("en", "vi"), "cuhkpedes": ("en",), "icfgpedes": ("en",),
                    "rstpreid": ("en",), "vn3k": ("en", "vi")}
ATTRIBUTE_DATASETS = ("synth", "veri", "market1501")

VERI_COLORS = {1: "yellow", 2: "orange", 3: "green", 4: "gray", 5: "red", 6: "blue", 7: "white",
               8: "golden", 9: "brown", 10: "black"}
VERI_TYPES = {1: "sedan", 2: "suv", 3: "van", 4: "hatchback", 5: "mpv", 6: "pickup", 7: "bus",
              8: "truck", 9: "estate"}
# How a type name reads in a caption (typeID 0 of the early release: 'vehicle').
_VERI_TYPE_PHRASE = {"suv": "SUV", "mpv": "MPV", "pickup": "pickup truck", "estate": "estate car"}

MARKET_BINARY = ("backpack", "bag", "handbag", "clothes", "down", "up", "hair", "hat", "gender")
MARKET_UP_COLORS = ("upblack", "upwhite", "upred", "uppurple", "upyellow", "upgray", "upblue",
                    "upgreen")
MARKET_DOWN_COLORS = ("downblack", "downwhite", "downpink", "downpurple", "downyellow",
                      "downgray", "downblue", "downgreen", "downbrown")
MARKET_ATTRIBUTES = ("age",) + MARKET_BINARY + MARKET_UP_COLORS + MARKET_DOWN_COLORS  # 27
MARKET_AGES = {1: "young", 2: "teenage", 3: "adult", 4: "old"}


def _with_article(phrase: str) -> str:
    """'a' / 'an' + phrase by the first letter ('an orange top', 'a white SUV')."""
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def _sentence(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text[:1].upper() + text[1:]


def _join(items: List[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ---------------------------------------------------------------------------------------------
# Caption builders
# ---------------------------------------------------------------------------------------------

def synth_attribute_caption(identity: dict) -> str:
    """One fixed-template English caption of a SynthPedes identity (``attrs['identity']``).

    Template: "<A> [tall|short] [slim|heavy-set] <man|woman> with <skin> skin and <hair>, wearing
    <upper> with <pattern details and logo>, <lower> and <shoes>, with <bag> and <hat>." The hair,
    logo, shoes, bag and hat phrases are ``synth.detail_phrase`` (the phrases the annotation
    captions use), so the captions of a near-twin pair differ on the separating detail. The
    template differs from every annotation template (it names the skin tone, which annotation
    captions never do), so attribute and annotation captions are never identical.

    Example:
        "A tall slim man with light skin and short black hair, wearing a red top with white
        horizontal stripes and a white logo, blue trousers and white shoes, with a black backpack
        and no hat."
    """
    a = identity
    noun = "man" if a["gender"] == "man" else "woman"
    body = [{"tall": "tall", "short": "short"}.get(a["height"], ""),
            {"slim": "slim", "broad": "heavy-set"}.get(a["build"], "")]
    subject = _with_article(" ".join([w for w in body if w] + [noun]))
    u, pc = a["upper_color"], a["pattern_color"]
    pattern = a["upper_pattern"]
    upper = _with_article(f"{u} and {pc} checked top" if pattern == "checks" else f"{u} top")
    details = []
    if pattern in ("horizontal_stripes", "vertical_stripes"):
        details.append(f"{pc} {pattern.split('_')[0]} stripes")
    details.append(detail_phrase(a, "logo"))
    lower = {"trousers": f"{a['lower_color']} trousers", "shorts": f"{a['lower_color']} shorts",
             "skirt": _with_article(f"{a['lower_color']} skirt")}[a["lower_type"]]
    return _sentence(
        f"{subject} with {a['skin']} skin and {detail_phrase(a, 'hair_color')}, wearing {upper} "
        f"with {_join(details)}, {lower} and {detail_phrase(a, 'shoes_color')}, with "
        f"{detail_phrase(a, 'bag')} and {detail_phrase(a, 'hat')}.")


def veri_attribute_caption(color_id: int, type_id: int) -> str:
    """"A <colour> <type>." from VeRi-776 colorID / typeID (table in the module docstring).

    typeID 0 (early-release label error) reads 'vehicle'; any other id outside the tables is a
    :class:`DatasetFormatError`. Example: ``veri_attribute_caption(7, 2)`` -> "A white SUV."
    """
    if color_id not in VERI_COLORS:
        raise DatasetFormatError(f"veri: colorID {color_id} is not a VeRi-776 colour "
                                 f"(1-10: {', '.join(VERI_COLORS.values())})")
    if type_id != 0 and type_id not in VERI_TYPES:
        raise DatasetFormatError(f"veri: typeID {type_id} is not a VeRi-776 type "
                                 f"(1-9: {', '.join(VERI_TYPES.values())})")
    name = VERI_TYPES.get(type_id, "vehicle")
    noun = _VERI_TYPE_PHRASE.get(name, name)
    return _sentence(f"{_with_article(f'{VERI_COLORS[color_id]} {noun}')}.")


def market_attribute_caption(attrs: Dict[str, int]) -> str:
    """One English caption from the 27 Market-1501 attributes of an identity (codes 1 / 2).

    Template: "<A> <age> <man|woman> with <short|long> hair, wearing <a [colour] long-|short-
    sleeved top> and <lower>, carrying <bags|no bag>, with <a hat|no hat>." Lower clothing from
    (clothes, down): pants + long = trousers, pants + short = shorts, dress + long = a long dress,
    dress + short = a short dress. Colours: the 'yes' (2) colours, joined with 'and' if several,
    omitted if none.

    Example: "A young man with short hair, wearing a black short-sleeved top and blue trousers,
    carrying a backpack, with no hat."
    """
    yes = {k: attrs[k] == 2 for k in MARKET_BINARY + MARKET_UP_COLORS + MARKET_DOWN_COLORS}
    noun = "woman" if yes["gender"] else "man"
    subject = _with_article(f"{MARKET_AGES[attrs['age']]} {noun}")
    up_colors = [k[2:] for k in MARKET_UP_COLORS if yes[k]]
    down_colors = [k[4:] for k in MARKET_DOWN_COLORS if yes[k]]
    upper = _with_article(" ".join(
        ([" and ".join(up_colors)] if up_colors else [])
        + ["short-sleeved" if yes["up"] else "long-sleeved", "top"]))
    dc = " and ".join(down_colors) + " " if down_colors else ""
    if yes["clothes"]:  # pants
        lower = f"{dc}{'shorts' if yes['down'] else 'trousers'}"
    else:
        lower = _with_article(f"{dc}{'short' if yes['down'] else 'long'} dress")
    bags = [name for key, name in (("backpack", "a backpack"), ("bag", "a bag"),
                                   ("handbag", "a handbag")) if yes[key]]
    return _sentence(
        f"{subject} with {'long' if yes['hair'] else 'short'} hair, wearing {upper} and {lower}, "
        f"carrying {_join(bags) if bags else 'no bag'}, with {'a hat' if yes['hat'] else 'no hat'}.")


# ---------------------------------------------------------------------------------------------
# Market-1501 attribute file
# ---------------------------------------------------------------------------------------------

def read_market_attributes(path: str) -> Dict[str, Dict[int, Dict[str, int]]]:
    """``market_attribute.mat`` -> {'train' | 'test': {identity id: {attribute: code}}}.

    Read with ``scipy.io.loadmat``; a missing variable / field, a length mismatch or a code
    outside the documented range is a :class:`DatasetFormatError` naming the file and field.
    """
    from scipy.io import loadmat

    where = f"market1501: {path}"
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises several types for unreadable files
        raise DatasetFormatError(f"{where} cannot be read as a MATLAB file: {exc}") from None
    if "market_attribute" not in mat:
        raise DatasetFormatError(f"{where} has no variable 'market_attribute' "
                                 f"(variables: {sorted(k for k in mat if not k.startswith('__'))})")
    root = mat["market_attribute"]
    tables = {}
    for split in ("train", "test"):
        if split not in getattr(root, "_fieldnames", ()):
            raise DatasetFormatError(f"{where}: market_attribute has no field '{split}'")
        part = getattr(root, split)
        fields = getattr(part, "_fieldnames", ())
        for key in ("image_index",) + MARKET_ATTRIBUTES:
            if key not in fields:
                raise DatasetFormatError(f"{where}: market_attribute.{split} has no field '{key}'")
        ids = [int(str(v).strip()) for v in np.atleast_1d(part.image_index)]
        table = {pid: {} for pid in ids}
        for key in MARKET_ATTRIBUTES:
            values = np.atleast_1d(getattr(part, key)).astype(int).ravel()
            if len(values) != len(ids):
                raise DatasetFormatError(
                    f"{where}: market_attribute.{split}.{key} has {len(values)} values for "
                    f"{len(ids)} identities in image_index")
            allowed = (1, 2, 3, 4) if key == "age" else (1, 2)
            for pid, value in zip(ids, values):
                if value not in allowed:
                    raise DatasetFormatError(
                        f"{where}: market_attribute.{split}.{key} of identity {pid:04d} is "
                        f"{value}, expected one of {allowed}")
                table[pid][key] = int(value)
        tables[split] = table
    return tables


# ---------------------------------------------------------------------------------------------
# Applying a caption source to a dataset
# ---------------------------------------------------------------------------------------------

def _replace_captions(dataset: ReIDDataset, captions_of) -> None:
    """Set ``captions_of(record, split)`` as each record's captions, keeping shared records
    shared (``test`` holds the same records as ``query + gallery``)."""
    new = {}
    for split, records in (("train", dataset.train), ("test", dataset.test)):
        for r in records:
            if id(r) not in new:
                new[id(r)] = dataclasses.replace(r, captions=captions_of(r, split))
    dataset.train = [new[id(r)] for r in dataset.train]
    dataset.test = [new[id(r)] for r in dataset.test]
    dataset.query = [new.get(id(r), r) for r in dataset.query]
    dataset.gallery = [new.get(id(r), r) for r in dataset.gallery]


def _synth_captions(dataset: ReIDDataset) -> str:
    def captions_of(r: Record, split: str) -> List[str]:
        identity = r.attrs.get("identity")
        return [synth_attribute_caption(identity)] if identity else []

    _replace_captions(dataset, captions_of)
    return "SynthPedes attributes.json identities (synth_attribute_caption)"


def _veri_captions(dataset: ReIDDataset, root: str) -> str:
    if not any("color" in r.attrs for r in dataset.train):
        raise FileNotFoundError(
            f"veri: CAPTION_SOURCE 'attributes' needs the colour / type labels "
            f"{os.path.join(root, 'VeRi', 'train_label.xml')} and "
            f"{os.path.join(root, 'VeRi', 'test_label.xml')} (part of the VeRi-776 release); "
            f"the loader found none ({dataset.info.get('attributes', '')})")

    def captions_of(r: Record, split: str) -> List[str]:
        if "color" not in r.attrs:
            return []
        return [veri_attribute_caption(int(r.attrs["color"]), int(r.attrs["type"]))]

    _replace_captions(dataset, captions_of)
    return "VeRi-776 colorID / typeID of train_label.xml / test_label.xml (veri_attribute_caption)"


def _market_captions(dataset: ReIDDataset, root: str) -> str:
    path = os.path.join(root, "market1501", "market_attribute.mat")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"market1501: CAPTION_SOURCE 'attributes' needs the Market-1501 attribute file "
            f"{path} (market_attribute.mat of github.com/vana77/Market-1501_Attribute)")
    tables = read_market_attributes(path)

    def captions_of(r: Record, split: str) -> List[str]:
        match = MARKET_PATTERN.search(os.path.basename(r.path))
        attrs = tables[split].get(int(match.group(1))) if match else None
        return [market_attribute_caption(attrs)] if attrs else []

    _replace_captions(dataset, captions_of)
    return f"{path} (market_attribute_caption)"


def check_train_captions(dataset: ReIDDataset, source: str) -> None:
    """Every training record has a caption, else a DatasetFormatError with the count and the
    first image."""
    missing = [r for r in dataset.train if not r.captions]
    if missing:
        raise DatasetFormatError(
            f"{dataset.name}: {len(missing)} of {len(dataset.train)} training images have no "
            f"caption with DATASETS.CAPTION_SOURCE '{source}', e.g. {missing[0].path}")


def _count(records: Iterable[Record]) -> str:
    records = list(records)
    n = sum(len(r.captions) for r in records)
    return f"{n} captions over {len(records)} train images ({n / max(len(records), 1):.2f} per image)"


def apply_caption_source(dataset: ReIDDataset, source: str, lang: str = "en",
                         root: Optional[str] = None) -> ReIDDataset:
    """Fill (or mark off) the dataset's captions according to DATASETS.CAPTION_SOURCE.

    Args:
        dataset: a loaded dataset (its loader has read any caption file, in ``lang``).
        source: 'annotation' | 'attributes' | 'none' (module docstring).
        lang: DATASETS.CAPTION_LANG ('en' | 'vi'); attribute captions are English only.
        root: DATASETS.ROOT_DIR (where Market-1501's market_attribute.mat lives).

    Returns:
        the same dataset object, records replaced where captions changed, with
        ``caption_source`` set and an ``info['captions']`` line for the statistics.

    Example:
        >>> ds = apply_caption_source(load_synth(root), "attributes")   # doctest: +SKIP
        >>> ds.train[0].captions                                          # doctest: +SKIP
        ['A short man with tan skin and short brown hair, wearing ...']
    """
    if source not in CAPTION_SOURCES:
        raise ValueError(f"DATASETS.CAPTION_SOURCE '{source}' is not one of {CAPTION_SOURCES}")
    if lang not in CAPTION_LANGS:
        raise ValueError(f"DATASETS.CAPTION_LANG '{lang}' is not one of {CAPTION_LANGS}")
    name = dataset.name
    if source == "none":
        dataset.caption_source = "none"
        return dataset
    if source == "annotation":
        if name not in ANNOTATION_LANGS:
            raise ValueError(
                f"DATASETS.CAPTION_SOURCE 'annotation': {name} has no caption file; datasets with "
                f"captions: {sorted(ANNOTATION_LANGS)}. For captions built from attribute "
                f"annotations use 'attributes' ({', '.join(ATTRIBUTE_DATASETS)}).")
        if lang not in ANNOTATION_LANGS[name]:
            raise ValueError(
                f"DATASETS.CAPTION_LANG '{lang}': {name} only has captions in "
                f"{ANNOTATION_LANGS[name]}")
        loaded = dataset.info.get("caption language")
        if loaded != lang:
            raise ValueError(
                f"{name} was loaded with caption language {loaded!r} but CAPTION_LANG is "
                f"'{lang}': load it with caption_lang='{lang}' (build_dataset does)")
        described = f"annotation ({lang})"
    else:
        if name not in ATTRIBUTE_DATASETS:
            raise ValueError(
                f"DATASETS.CAPTION_SOURCE 'attributes' is not available for {name}: attribute "
                f"captions are built for {', '.join(ATTRIBUTE_DATASETS)} only"
                + (" ('annotation' reads its caption file)" if name in ANNOTATION_LANGS else ""))
        if lang != "en":
            raise ValueError(f"DATASETS.CAPTION_LANG '{lang}': attribute captions are English "
                             "only (set CAPTION_LANG 'en')")
        if root is None and name in ("veri", "market1501"):
            raise ValueError(f"{name}: attribute captions need DATASETS.ROOT_DIR (root=...)")
        if name == "synth":
            origin = _synth_captions(dataset)
        elif name == "veri":
            origin = _veri_captions(dataset, root)
        else:
            origin = _market_captions(dataset, root)
        described = f"attributes: {origin}"
    check_train_captions(dataset, source)
    dataset.caption_source = source
    dataset.info["captions"] = f"{described}; {_count(dataset.train)}"
    return dataset
