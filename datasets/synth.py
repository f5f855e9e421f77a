"""SynthPedes: a deterministic synthetic pedestrian re-ID / text-search dataset (DESIGN.md section 5).

What is generated, under ``<root>/<dataset_dirname(...)>/``:

- ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` in the real Market-1501 layout,
  file names ``%04d_c%ds%d_%06d_%02d.jpg`` (pid, camera 1-6, sequence, frame, box), JPEG q95
  without chroma subsampling. Train and test identities are disjoint. Each test identity has 1-2
  query images (from 1-2 cameras) and its other images in the gallery, which therefore holds
  cross-camera matches and same-camera images (removed by the protocol). The gallery also holds
  distractors (pid 0000, people who are none of the identities) and junk boxes (pid -1: empty
  backgrounds or extreme crops), which the loader drops.
- ``reid_raw.json``: CUHK-PEDES-style list, one record per identity image:
  ``{"split": "train"|"test", "captions": [2 English descriptions], "file_path":
  "bounding_box_train/0001_c1s1_000001_01.jpg", "id": pid (1-based, as in the file name),
  "processed_tokens": [[lower-case word tokens], ...]}``; distractors and junk are not listed.
- ``reid_raw_vi.json``: the same records with Vietnamese captions.
- ``attributes.json``: ``{"identities": {"<pid>": {<ATTRIBUTE_KEYS>..., "twin_of": pid|null,
  "twin_detail": key|null, "near_twin": bool, "split": ...}}, "images": {"<file_path>": {"pid",
  "camid" (0-based), "viewid", "view", "occluded"}}}``.
- ``meta.json`` (written last, its presence marks a complete dataset): generator version, seed,
  arguments, counts, per-camera settings with the mean BT.709 luma measured on the written
  images, the dark cameras, the near-twin pairs.

Identities are tuples of visual attributes (``ATTRIBUTE_KEYS``); any two identities that are
not a near-twin pair differ by a weighted attribute distance >= MIN_IDENTITY_DISTANCE. A share
(``twin_share``) of the identities of each split are near-twins: copies of another identity of
the same split with exactly ONE of ``TWIN_DETAILS`` changed (shoes colour, bag, hat, chest logo,
hair colour), so they are hard negatives in the same gallery. Every caption names all of those
details with a fixed phrase (``detail_phrase``), so the captions of a near-twin pair always
differ on the separating detail.

Six cameras (``synth_render.CAMERAS``): different backgrounds, colour casts and illumination;
cameras 3 and 5 (camids 2 and 4) are the dark ones (mean luma < 0.35). Views front / back / side
are view ids 0 / 1 / 2. About 15 % of the images are partially occluded.

Determinism: identity attributes and the image plan are drawn from generators seeded with
(seed, stream, pid); each image is rendered with its own generator seeded with
(seed, stream, pid, image index). The output is byte-identical for the same arguments whatever
the number of worker processes. Generation writes into a hidden temporary folder next to the
target and renames it at the end, so an interrupted run never leaves a complete-looking dataset.

Usage::

    python -m datasets.synth --root ./data --ids 300 --seed 0 [--train-ids 150] [--size 128 64]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from . import synth_render as R
from .bases import DatasetFormatError, Record, ReIDDataset
from .market1501 import load_market_style

GENERATOR_VERSION = "1.0"
DARK_LUMA_THRESHOLD = 0.35
DEFAULT_TWIN_SHARE = 0.15
OCCLUSION_PROB = 0.15
IMAGES_PER_ID = (15, 20)            # inclusive range of images per identity
CAMERAS_PER_ID = ((3, 4, 5, 6), (0.15, 0.35, 0.30, 0.20))
JPEG_QUALITY = 95

# The attributes that define an identity, and the details a near-twin changes.
ATTRIBUTE_KEYS = ("gender", "height", "build", "skin", "hair_color", "hair_length", "upper_color",
                  "upper_pattern", "pattern_color", "logo", "lower_type", "lower_color",
                  "shoes_color", "bag", "hat")
TWIN_DETAILS = ("shoes_color", "bag", "hat", "logo", "hair_color")
# Visual weight of each attribute in the identity distance. Garment colours, pattern and lower
# garment type cover large areas; gender is only drawn through other attributes (hair length,
# skirt, shoulder width) so it weighs nothing by itself.
ATTRIBUTE_WEIGHTS = {k: 1 for k in ATTRIBUTE_KEYS}
ATTRIBUTE_WEIGHTS.update({"gender": 0, "upper_color": 2, "lower_color": 2, "upper_pattern": 2,
                          "lower_type": 2})
# Identities that are not a near-twin pair differ by at least this weighted distance, so the
# near-twins (distance 1) are the only pairs separated by one small detail.
MIN_IDENTITY_DISTANCE = 3

# Seed streams: the first words of every SeedSequence entropy after the user seed.
_STREAM_IDENTITIES, _STREAM_PLAN, _STREAM_IMAGE = 1, 2, 3
_STREAM_DISTRACTOR, _STREAM_JUNK, _STREAM_CAPTION = 4, 5, 6

SYNTH_LAYOUT = """  <ROOT_DIR>/synthpedes_ids<N>_train<M>_seed<S>_<H>x<W>/   (generated on first use)
      bounding_box_train/  query/  bounding_box_test/   (Market-1501 names)
      reid_raw.json  reid_raw_vi.json  attributes.json  meta.json"""


def _rng(seed: int, *words: int) -> np.random.Generator:
    return np.random.default_rng([seed, *words])


def _choice(rng: np.random.Generator, options: Sequence, p: Optional[Sequence[float]] = None):
    return options[int(rng.choice(len(options), p=p))]


# ---------------------------------------------------------------------------------------------
# Identities
# ---------------------------------------------------------------------------------------------

def _sample_bag(rng, gender: str) -> dict:
    p = (0.35, 0.25, 0.25, 0.15) if gender == "woman" else (0.35, 0.3, 0.1, 0.25)
    kind = _choice(rng, R.BAG_TYPES, p)
    return {"type": kind, "color": None if kind == "none" else _choice(rng, R.BAG_COLORS)}


def _sample_hat(rng) -> dict:
    kind = _choice(rng, R.HAT_TYPES, (0.6, 0.25, 0.15))
    return {"type": kind, "color": None if kind == "none" else _choice(rng, R.HAT_COLORS)}


def _sample_logo(rng, attrs: dict, exclude: Sequence[str] = ()) -> str:
    options = [c for c in R.LOGO_COLORS
               if c not in (attrs["upper_color"], attrs["pattern_color"], *exclude)]
    return _choice(rng, options)


def sample_attributes(rng: np.random.Generator) -> dict:
    """One random person: a dict over ``ATTRIBUTE_KEYS`` (bag / hat are {'type', 'color'})."""
    gender = _choice(rng, ("man", "woman"))
    attrs = {
        "gender": gender,
        "height": _choice(rng, tuple(R.HEIGHTS), (0.25, 0.5, 0.25)),
        "build": _choice(rng, tuple(R.BUILDS), (0.3, 0.45, 0.25)),
        "skin": _choice(rng, tuple(R.SKIN_TONES)),
        "hair_color": _choice(rng, tuple(R.HAIR_COLORS), (0.4, 0.25, 0.15, 0.1, 0.1)),
        "hair_length": _choice(rng, R.HAIR_LENGTHS, (0.3, 0.7) if gender == "woman" else (0.88, 0.12)),
        "upper_color": _choice(rng, R.UPPER_COLORS),
        "upper_pattern": _choice(rng, R.PATTERNS, (0.45, 0.2, 0.15, 0.2)),
        "pattern_color": None,
        "logo": "none",
        "lower_type": _choice(rng, R.LOWER_TYPES,
                              (0.55, 0.15, 0.3) if gender == "woman" else (0.8, 0.2, 0.0)),
        "lower_color": _choice(rng, R.LOWER_COLORS),
        "shoes_color": _choice(rng, R.SHOE_COLORS),
        "bag": _sample_bag(rng, gender),
        "hat": _sample_hat(rng),
    }
    if attrs["upper_pattern"] != "plain":
        attrs["pattern_color"] = _choice(
            rng, [c for c in R.PATTERN_COLORS if c != attrs["upper_color"]])
    if rng.random() < 0.4:
        attrs["logo"] = _sample_logo(rng, attrs)
    return attrs


def attribute_distance(a: dict, b: dict) -> int:
    """Weighted count of the attributes in which two identities differ (ATTRIBUTE_WEIGHTS)."""
    return sum(ATTRIBUTE_WEIGHTS[k] for k in ATTRIBUTE_KEYS if a[k] != b[k])


def make_near_twin(rng: np.random.Generator, attrs: dict, detail: str) -> dict:
    """A copy of ``attrs`` with exactly the attribute ``detail`` (one of TWIN_DETAILS) changed.

    shoes / hair colour: another colour; bag / hat: added when absent, otherwise removed or
    recoloured (50 / 50); logo: added when absent, otherwise removed or recoloured.
    """
    twin = {k: (dict(v) if isinstance(v, dict) else v) for k, v in attrs.items()}
    if detail == "shoes_color":
        twin["shoes_color"] = _choice(rng, [c for c in R.SHOE_COLORS if c != attrs["shoes_color"]])
    elif detail == "hair_color":
        twin["hair_color"] = _choice(rng, [c for c in R.HAIR_COLORS if c != attrs["hair_color"]])
    elif detail in ("bag", "hat"):
        item = attrs[detail]
        kinds = R.BAG_TYPES if detail == "bag" else R.HAT_TYPES
        colors = R.BAG_COLORS if detail == "bag" else R.HAT_COLORS
        if item["type"] == "none":
            twin[detail] = {"type": _choice(rng, kinds[1:]), "color": _choice(rng, colors)}
        elif rng.random() < 0.5:
            twin[detail] = {"type": "none", "color": None}
        else:
            twin[detail] = {"type": item["type"],
                            "color": _choice(rng, [c for c in colors if c != item["color"]])}
    elif detail == "logo":
        if attrs["logo"] == "none":
            twin["logo"] = _sample_logo(rng, attrs)
        elif rng.random() < 0.5:
            twin["logo"] = "none"
        else:
            twin["logo"] = _sample_logo(rng, attrs, exclude=(attrs["logo"],))
    else:
        raise ValueError(f"unknown near-twin detail '{detail}' (expected one of {TWIN_DETAILS})")
    return twin


def plan_identities(num_train: int, num_test: int, seed: int,
                    twin_share: float) -> Dict[int, dict]:
    """All identities: pid -> {'attrs', 'split', 'twin_of', 'twin_detail', 'near_twin'}.

    Train pids are 1..num_train, test pids num_train+1..num_train+num_test. In each split,
    round(twin_share * n) identities (at most n // 2) are near-twins of distinct other
    identities of the same split; pids are shuffled within the split so that twins are spread.
    Any two identities that are not a near-twin pair are at ``attribute_distance`` >=
    MIN_IDENTITY_DISTANCE (rejection sampling).
    """
    rng = _rng(seed, _STREAM_IDENTITIES)
    everyone: List[dict] = []

    def distinct(attrs: dict, base: Optional[dict] = None) -> bool:
        return all(other is base or attribute_distance(attrs, other) >= MIN_IDENTITY_DISTANCE
                   for other in everyone)

    identities: Dict[int, dict] = {}
    offset = 0
    for split, n in (("train", num_train), ("test", num_test)):
        n_twins = min(int(round(twin_share * n)), n // 2)
        people: List[Tuple[dict, Optional[int], Optional[str]]] = []
        while len(people) < n - n_twins:
            attrs = sample_attributes(rng)
            if distinct(attrs):
                everyone.append(attrs)
                people.append((attrs, None, None))
        for base in rng.choice(n - n_twins, size=n_twins, replace=False):
            base = int(base)
            for _ in range(1000):
                detail = _choice(rng, TWIN_DETAILS)
                twin = make_near_twin(rng, people[base][0], detail)
                if distinct(twin, base=people[base][0]):
                    break
            else:
                raise RuntimeError("SynthPedes: cannot place a near-twin; lower the twin share")
            everyone.append(twin)
            people.append((twin, base, detail))
        order = rng.permutation(n)                      # position in `people` -> pid slot
        pid_of = {int(i): offset + slot + 1 for slot, i in enumerate(order)}
        twinned = {base for _, base, _ in people if base is not None}
        for i, (attrs, base, detail) in enumerate(people):
            identities[pid_of[i]] = {
                "attrs": attrs, "split": split,
                "twin_of": pid_of[base] if base is not None else None,
                "twin_detail": detail,
                "near_twin": base is not None or i in twinned,
            }
        offset += n
    return dict(sorted(identities.items()))


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------

_EN_BAG = {"backpack": "backpack", "handbag": "handbag", "shoulder_bag": "shoulder bag"}
_EN_HAT = {"cap": "cap", "beanie": "beanie"}
_VI_COLOR = {"red": "đỏ", "orange": "cam", "yellow": "vàng", "green": "xanh lá",
             "blue": "xanh dương", "navy": "xanh đậm", "purple": "tím", "pink": "hồng",
             "brown": "nâu", "beige": "be", "white": "trắng", "grey": "xám", "black": "đen"}
_VI_HAIR = {"black": "đen", "brown": "nâu", "blond": "vàng", "grey": "bạc", "red": "đỏ"}
_VI_LENGTH = {"short": "ngắn", "long": "dài"}
_VI_BAG = {"backpack": "ba lô", "handbag": "túi xách", "shoulder_bag": "túi đeo vai"}
_VI_HAT = {"cap": "mũ lưỡi trai", "beanie": "mũ len"}


def _a(phrase: str) -> str:
    """English indefinite article + phrase ('an orange shirt', 'a red cap')."""
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def detail_phrase(attrs: dict, key: str, lang: str = "en") -> str:
    """The fixed phrase every caption uses for one of TWIN_DETAILS (e.g. 'white shoes', 'no hat').

    Captions vary their templates around these phrases but always contain them verbatim, so a
    caption always names the detail that separates near-twins.
    """
    if lang not in ("en", "vi"):
        raise ValueError(f"unknown caption language '{lang}' (expected 'en' or 'vi')")
    en = lang == "en"
    if key == "shoes_color":
        c = attrs["shoes_color"]
        return f"{c} shoes" if en else f"giày màu {_VI_COLOR[c]}"
    if key == "hair_color":
        c, n = attrs["hair_color"], attrs["hair_length"]
        return f"{n} {c} hair" if en else f"tóc {_VI_LENGTH[n]} màu {_VI_HAIR[c]}"
    if key in ("bag", "hat"):
        item = attrs[key]
        if item["type"] == "none":
            return f"no {key}" if en else ("không mang túi" if key == "bag" else "không đội mũ")
        if en:
            noun = (_EN_BAG if key == "bag" else _EN_HAT)[item["type"]]
            return _a(f"{item['color']} {noun}")
        noun = (_VI_BAG if key == "bag" else _VI_HAT)[item["type"]]
        return f"{noun} màu {_VI_COLOR[item['color']]}"
    if key == "logo":
        c = attrs["logo"]
        if c == "none":
            return "no logo" if en else "không có logo"
        return _a(f"{c} logo") if en else f"logo màu {_VI_COLOR[c]}"
    raise ValueError(f"'{key}' is not a near-twin detail (expected one of {TWIN_DETAILS})")


def _caption_en(a: dict, rng: np.random.Generator) -> str:
    man = a["gender"] == "man"
    he, his = ("He", "his") if man else ("She", "her")
    noun = _choice(rng, ("man", "man", "guy", "young man") if man else
                   ("woman", "woman", "lady", "young woman"))
    body = " ".join(w for w in ({"tall": "tall", "short": "short", "medium": ""}[a["height"]],
                                {"slim": "slim", "broad": "heavy-set", "average": ""}[a["build"]]) if w)
    if body and rng.random() < 0.5:
        subject = f"A {body} {noun}"
    else:
        subject = _choice(rng, (f"A {noun}", f"The {noun}", "A pedestrian", f"This {noun}"))
    top = _choice(rng, ("shirt", "T-shirt", "top", "jacket", "sweater") if man else
                  ("shirt", "T-shirt", "top", "blouse", "jacket"))
    u, pc = a["upper_color"], a["pattern_color"]
    upper = _a({"plain": f"{_choice(rng, ('', 'plain '))}{u} {top}",
                "horizontal_stripes": f"{u} {top} with horizontal {pc} stripes",
                "vertical_stripes": f"{u} {top} with vertical {pc} stripes",
                "checks": f"{u} and {pc} checked {top}"}[a["upper_pattern"]])
    logo = detail_phrase(a, "logo")
    if a["logo"] != "none":
        logo = _choice(rng, (f"with {logo} on the chest", f"that has {logo} on the front"))
    else:
        logo = f"with {logo}"
    lower = {"trousers": f"{a['lower_color']} {_choice(rng, ('trousers', 'pants', 'long pants'))}",
             "shorts": f"{a['lower_color']} shorts",
             "skirt": _a(f"{a['lower_color']} skirt")}[a["lower_type"]]
    shoes, hair = detail_phrase(a, "shoes_color"), detail_phrase(a, "hair_color")
    bag, hat = detail_phrase(a, "bag"), detail_phrase(a, "hat")
    carries = "holds" if a["bag"]["type"] == "handbag" else "carries"
    carrying = "is holding" if a["bag"]["type"] == "handbag" else "is carrying"
    wears_hat = f"wears {hat}" if a["hat"]["type"] != "none" else _choice(
        rng, (f"wears {hat}", f"has {hat} on"))
    on_head = f" on {his} head" if a["hat"]["type"] != "none" else ""
    template = int(rng.integers(0, 4))
    if template == 0:
        return (f"{subject} is wearing {upper} {logo}, {lower} and {shoes}. "
                f"{he} has {hair}, {carrying} {bag} and {wears_hat}.")
    if template == 1:
        return (f"{subject} with {hair} is walking. {he} wears {upper} {logo} and {lower} with "
                f"{shoes}, {carries} {bag} and {wears_hat}.")
    if template == 2:
        return (f"{subject} has {hair} and {wears_hat}. {he} is dressed in {upper} {logo} and "
                f"{lower}, with {shoes}, and {carrying} {bag}.")
    return (f"{subject} in {upper} {logo} and {lower}. "
            f"{he} has {shoes}, {hair}, {bag} and {hat}{on_head}.")


def _caption_vi(a: dict, rng: np.random.Generator) -> str:
    man = a["gender"] == "man"
    he = "Anh ấy" if man else "Cô ấy"
    subject = _choice(rng, ("Một người đàn ông", "Người đàn ông", "Một anh chàng",
                            "Một người đàn ông trẻ") if man else
                      ("Một người phụ nữ", "Người phụ nữ", "Một cô gái", "Một người phụ nữ trẻ"))
    body = ", ".join(w for w in ({"tall": "dáng cao", "short": "dáng thấp", "medium": ""}[a["height"]],
                                 {"slim": "gầy", "broad": "vạm vỡ", "average": ""}[a["build"]]) if w)
    top = _choice(rng, ("áo sơ mi", "áo phông", "áo thun", "áo khoác"))
    u, pat = _VI_COLOR[a["upper_color"]], a["upper_pattern"]
    pc = _VI_COLOR[a["pattern_color"]] if a["pattern_color"] else ""
    upper = {"plain": f"{top} màu {u}{_choice(rng, ('', ' trơn'))}",
             "horizontal_stripes": f"{top} màu {u} kẻ sọc ngang màu {pc}",
             "vertical_stripes": f"{top} màu {u} kẻ sọc dọc màu {pc}",
             "checks": f"{top} kẻ ô màu {u} và {pc}"}[pat]
    logo = detail_phrase(a, "logo", "vi")
    logo = f"có {logo} trên ngực" if a["logo"] != "none" else logo
    lc = _VI_COLOR[a["lower_color"]]
    lower = {"trousers": f"quần dài màu {lc}", "shorts": f"quần short màu {lc}",
             "skirt": f"{_choice(rng, ('váy', 'chân váy'))} màu {lc}"}[a["lower_type"]]
    shoes, hair = detail_phrase(a, "shoes_color", "vi"), detail_phrase(a, "hair_color", "vi")
    bag, hat = detail_phrase(a, "bag", "vi"), detail_phrase(a, "hat", "vi")
    bag_part = {"none": bag, "backpack": f"đeo {bag}", "handbag": f"xách {bag}",
                "shoulder_bag": f"đeo {bag}"}[a["bag"]["type"]]
    hat_part = hat if a["hat"]["type"] == "none" else f"đội {hat}"
    template = int(rng.integers(0, 3))
    if template == 0:
        who = f"{subject}{', ' + body + ',' if body else ''}"
        return (f"{who} mặc {upper} {logo}, {lower} và đi {shoes}. "
                f"{he} có mái {hair}, {bag_part} và {hat_part}.")
    if template == 1:
        return (f"{subject} có {hair} đang đi bộ. {he} mặc {upper} {logo}, {lower}, "
                f"đi {shoes}, {hat_part} và {bag_part}.")
    return (f"Đây là {subject[0].lower() + subject[1:]}{' ' + body if body else ''}, {hat_part}, "
            f"có {hair}. {he} mặc {upper} {logo} cùng {lower}, đi {shoes} và {bag_part}.")


def make_captions(attrs: dict, rng: np.random.Generator, lang: str, count: int = 2) -> List[str]:
    """``count`` captions of one image in ``lang`` ('en' | 'vi'), from its identity attributes."""
    build = {"en": _caption_en, "vi": _caption_vi}[lang]
    return [re.sub(r"\s+", " ", build(attrs, rng)).replace(" ,", ",") for _ in range(count)]


def tokenize(caption: str) -> List[str]:
    """CUHK-PEDES ``processed_tokens``: lower-case word tokens, punctuation dropped."""
    return re.findall(r"\w+", caption.lower())


# ---------------------------------------------------------------------------------------------
# The image plan
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ImageJob:
    """One image to render. ``entropy`` seeds its generator; ``folder`` is the Market folder."""

    kind: str                       # 'identity' | 'distractor' | 'junk'
    folder: str
    name: str
    pid: int                        # raw pid as in the file name (0 distractor, -1 junk)
    camid: int                      # 0-based
    view: int
    occluded: bool
    attrs: dict
    entropy: Tuple[int, ...]
    size: Tuple[int, int] = (128, 64)
    out_dir: str = ""

    @property
    def rel_path(self) -> str:
        return f"{self.folder}/{self.name}"


def _file_name(pid: int, cam: int, seq: int, frame: int, box: int) -> str:
    pid_s = "-1" if pid == -1 else f"{pid:04d}"
    return f"{pid_s}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"


def _identity_jobs(pid: int, info: dict, seed: int) -> List[ImageJob]:
    rng = _rng(seed, _STREAM_PLAN, pid)
    n = int(rng.integers(IMAGES_PER_ID[0], IMAGES_PER_ID[1] + 1))
    k = int(_choice(rng, *CAMERAS_PER_ID))
    cams = sorted(int(c) for c in rng.choice(len(R.CAMERAS), size=k, replace=False))
    counts = 2 + rng.multinomial(n - 2 * k, [1.0 / k] * k)
    is_test = info["split"] == "test"
    query_cams = set()
    if is_test:
        n_query = 1 if rng.random() < 0.6 else 2
        query_cams = {int(c) for c in rng.choice(cams, size=n_query, replace=False)}
    jobs: List[ImageJob] = []
    for cam, count in zip(cams, counts):
        camera = R.CAMERAS[cam]
        seq = int(rng.integers(1, 7))
        frame = int(rng.integers(1, 5000))
        for j in range(int(count)):
            frame += int(rng.integers(5, 60))
            view = int(rng.choice(3, p=camera.view_probs))
            occluded = bool(rng.random() < OCCLUSION_PROB)
            if not is_test:
                folder = "bounding_box_train"
            else:
                folder = "query" if (cam in query_cams and j == 0) else "bounding_box_test"
            jobs.append(ImageJob("identity", folder, _file_name(pid, cam + 1, seq, frame, 1), pid,
                                 cam, view, occluded, info["attrs"],
                                 (seed, _STREAM_IMAGE, pid, len(jobs))))
    return jobs


def _extra_jobs(num: int, kind: str, seed: int, taken: List[dict]) -> List[ImageJob]:
    """Distractors (pid 0) or junk boxes (pid -1).

    Distractor people are at ``attribute_distance`` >= MIN_IDENTITY_DISTANCE from every
    identity (``taken``), so they are never accidental near-twins of an identity.
    """
    stream = _STREAM_DISTRACTOR if kind == "distractor" else _STREAM_JUNK
    jobs = []
    for i in range(num):
        rng = _rng(seed, stream, i)
        while True:
            attrs = sample_attributes(rng)
            if all(attribute_distance(attrs, t) >= MIN_IDENTITY_DISTANCE for t in taken):
                break
        cam = int(rng.integers(0, len(R.CAMERAS)))
        view = int(rng.choice(3, p=R.CAMERAS[cam].view_probs))
        occluded = kind == "distractor" and bool(rng.random() < OCCLUSION_PROB)
        pid = 0 if kind == "distractor" else -1
        name = _file_name(pid, cam + 1, int(rng.integers(1, 7)), 100 * i + int(rng.integers(1, 100)),
                          int(rng.integers(1, 9)))
        jobs.append(ImageJob(kind, "bounding_box_test", name, pid, cam, view, occluded, attrs,
                             (seed, stream, i, 1)))
    return jobs


def plan_images(identities: Dict[int, dict], seed: int, num_distractors: int,
                num_junk: int) -> List[ImageJob]:
    """Every image of the dataset, in a fixed order (identities by pid, distractors, junk)."""
    jobs: List[ImageJob] = []
    for pid, info in identities.items():
        jobs += _identity_jobs(pid, info, seed)
    taken = [info["attrs"] for info in identities.values()]
    jobs += _extra_jobs(num_distractors, "distractor", seed, taken)
    jobs += _extra_jobs(num_junk, "junk", seed, taken)
    return jobs


def _render_job(job: ImageJob) -> float:
    """Render, write and re-read one image; returns its mean BT.709 luma as written."""
    rng = np.random.default_rng(list(job.entropy))
    camera = R.CAMERAS[job.camid]
    if job.kind == "junk":
        rgb = R.render_junk(camera, rng, job.size, person=job.attrs)
    else:
        rgb = R.render_person(job.attrs, camera, R.VIEWS[job.view], job.occluded, rng, job.size)
    path = os.path.join(job.out_dir, job.folder, job.name)
    Image.fromarray(rgb).save(path, quality=JPEG_QUALITY, subsampling=0)
    with Image.open(path) as written:
        return R.mean_luma(np.asarray(written.convert("RGB")))


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------

def dataset_dirname(num_ids: int, seed: int, train_ids: Optional[int] = None,
                    image_size: Sequence[int] = (128, 64),
                    twin_share: float = DEFAULT_TWIN_SHARE) -> str:
    """The dataset folder name: every generation argument is in it, so folders never collide."""
    train_ids = num_ids // 2 if train_ids is None else train_ids
    name = f"synthpedes_ids{num_ids}_train{train_ids}_seed{seed}_{image_size[0]}x{image_size[1]}"
    if twin_share != DEFAULT_TWIN_SHARE:
        name += f"_twin{twin_share:g}"
    return name


def _check_arguments(num_ids, seed, train_ids, image_size, twin_share, workers):
    if not 1 <= train_ids < num_ids:
        raise ValueError(f"SynthPedes needs 1 <= train ids < total ids (got train {train_ids}, "
                         f"total {num_ids}): both train and test must have identities")
    if seed < 0:
        raise ValueError(f"SynthPedes seed must be >= 0 (got {seed})")
    if len(image_size) != 2 or min(image_size) < 32:
        raise ValueError(f"SynthPedes image size must be (height, width) >= 32 (got {image_size})")
    if not 0.0 <= twin_share <= 0.5:
        raise ValueError(f"SynthPedes twin share must be in [0, 0.5] (got {twin_share})")
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (got {workers})")


def _read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def _existing_dataset(dataset_dir: str, arguments: dict) -> bool:
    """True when a complete dataset with these arguments is there; an error on any mismatch."""
    if not os.path.exists(dataset_dir):
        return False
    meta_path = os.path.join(dataset_dir, "meta.json")
    if not os.path.isfile(meta_path):
        raise DatasetFormatError(
            f"SynthPedes: {dataset_dir} exists but has no meta.json, so it is not a complete "
            "generated dataset. Delete the folder to regenerate it.")
    meta = _read_json(meta_path)
    if meta.get("version") != GENERATOR_VERSION or meta.get("arguments") != arguments:
        raise DatasetFormatError(
            f"SynthPedes: {dataset_dir} was generated by generator version {meta.get('version')} "
            f"with arguments {meta.get('arguments')}; this code is version {GENERATOR_VERSION} "
            f"with arguments {arguments}. Delete the folder to regenerate it.")
    return True


def _annotations(identities, jobs, seed):
    """reid_raw.json (English), reid_raw_vi.json and attributes.json contents."""
    raw_en, raw_vi = [], []
    images = {}
    for job in jobs:
        images[job.rel_path] = {"pid": job.pid, "camid": job.camid, "viewid": job.view,
                                "view": R.VIEWS[job.view], "occluded": job.occluded}
        if job.kind != "identity":
            continue
        split = identities[job.pid]["split"]
        for lang, out in (("en", raw_en), ("vi", raw_vi)):
            rng = _rng(seed, _STREAM_CAPTION, job.pid, job.entropy[-1], 0 if lang == "en" else 1)
            caps = make_captions(job.attrs, rng, lang)
            out.append({"split": split, "captions": caps, "file_path": job.rel_path,
                        "id": job.pid, "processed_tokens": [tokenize(c) for c in caps]})
    attributes = {
        "identities": {str(pid): {**info["attrs"], "twin_of": info["twin_of"],
                                  "twin_detail": info["twin_detail"],
                                  "near_twin": info["near_twin"], "split": info["split"]}
                       for pid, info in identities.items()},
        "images": images,
    }
    return raw_en, raw_vi, attributes


def _meta(arguments, identities, jobs, lumas, seed):
    per_cam = {c: [] for c in range(len(R.CAMERAS))}
    for job, luma in zip(jobs, lumas):
        if job.kind != "junk":
            per_cam[job.camid].append(luma)
    cameras = []
    for c, cam in enumerate(R.CAMERAS):
        luma = round(float(np.mean(per_cam[c])), 4) if per_cam[c] else None
        cameras.append({"camera": c + 1, "camid": c, **dataclasses.asdict(cam),
                        "images": len(per_cam[c]), "mean_luma": luma,
                        "measured_dark": None if luma is None else luma < DARK_LUMA_THRESHOLD})
    count = {k: 0 for k in ("bounding_box_train", "query", "bounding_box_test", "distractor", "junk")}
    for job in jobs:
        count[job.kind if job.kind != "identity" else job.folder] += 1
    return {
        "generator": "SynthPedes",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "arguments": arguments,
        "counts": {
            "train_ids": arguments["train_ids"], "test_ids": arguments["num_ids"] - arguments["train_ids"],
            "train_images": count["bounding_box_train"], "query_images": count["query"],
            "gallery_identity_images": count["bounding_box_test"],
            "distractor_images": count["distractor"], "junk_images": count["junk"],
            "near_twin_pairs": sum(1 for i in identities.values() if i["twin_of"] is not None),
        },
        "views": {name: i for i, name in enumerate(R.VIEWS)},
        "dark_luma_threshold": DARK_LUMA_THRESHOLD,
        "dark_cameras": [c for c, cam in enumerate(R.CAMERAS) if cam.dark],
        "cameras": cameras,
        "near_twin_pairs": [{"pid": pid, "twin_of": i["twin_of"], "detail": i["twin_detail"]}
                            for pid, i in identities.items() if i["twin_of"] is not None],
    }


def _render_all(jobs: List[ImageJob], workers: int, progress: bool) -> List[float]:
    bar = dict(total=len(jobs), desc="SynthPedes", disable=not progress, leave=False,
               dynamic_ncols=True)
    if workers == 1:
        return [_render_job(j) for j in tqdm(jobs, **bar)]
    # fork: workers inherit the imported modules (fast start); spawn where fork does not exist.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        return list(tqdm(pool.imap(_render_job, jobs, chunksize=16), **bar))


def generate_synthpedes(root: str, num_ids: int, seed: int, train_ids: Optional[int] = None,
                        image_size: Sequence[int] = (128, 64), workers: Optional[int] = None,
                        twin_share: float = DEFAULT_TWIN_SHARE, progress: bool = True) -> str:
    """Generate SynthPedes under ``root`` (skipped when it is already complete there).

    Args:
        root: folder that holds dataset folders (DATASETS.ROOT_DIR).
        num_ids: total identities (train + test).
        seed: generator seed (>= 0); the same arguments give byte-identical files.
        train_ids: training identities (default num_ids // 2); the rest are test identities.
        image_size: (height, width) of the written images.
        workers: rendering processes (default min(2, CPU count)); does not change the output.
        twin_share: share of each split's identities that are near-twins of another one.
        progress: show a progress bar.

    Returns:
        the dataset folder ``<root>/<dataset_dirname(...)>``.

    Example::

        >>> d = generate_synthpedes("./data", num_ids=300, seed=0)   # ~5,600 images
    """
    train_ids = num_ids // 2 if train_ids is None else int(train_ids)
    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    image_size = (int(image_size[0]), int(image_size[1]))
    _check_arguments(num_ids, seed, train_ids, image_size, twin_share, workers)
    dataset_dir = os.path.join(root, dataset_dirname(num_ids, seed, train_ids, image_size, twin_share))
    arguments = {"num_ids": num_ids, "train_ids": train_ids, "image_size": list(image_size),
                 "twin_share": twin_share}
    if _existing_dataset(dataset_dir, arguments):
        return dataset_dir

    num_test = num_ids - train_ids
    identities = plan_identities(train_ids, num_test, seed, twin_share)
    jobs = plan_images(identities, seed, num_distractors=num_test,
                       num_junk=max(1, num_test // 3))
    os.makedirs(root, exist_ok=True)
    tmp_dir = os.path.join(root, f".{os.path.basename(dataset_dir)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    try:
        for folder in ("bounding_box_train", "query", "bounding_box_test"):
            os.makedirs(os.path.join(tmp_dir, folder))
        for job in jobs:
            job.size, job.out_dir = image_size, tmp_dir
        lumas = _render_all(jobs, workers, progress)
        raw_en, raw_vi, attributes = _annotations(identities, jobs, seed)
        _write_json(os.path.join(tmp_dir, "reid_raw.json"), raw_en)
        _write_json(os.path.join(tmp_dir, "reid_raw_vi.json"), raw_vi)
        _write_json(os.path.join(tmp_dir, "attributes.json"), attributes)
        _write_json(os.path.join(tmp_dir, "meta.json"), _meta(arguments, identities, jobs, lumas, seed))
        try:
            os.rename(tmp_dir, dataset_dir)
        except OSError:
            # Another process finished the same dataset first: keep theirs.
            if not _existing_dataset(dataset_dir, arguments):
                raise
            shutil.rmtree(tmp_dir, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return dataset_dir


# ---------------------------------------------------------------------------------------------
# Loading and hard-subset helpers
# ---------------------------------------------------------------------------------------------

def read_meta(dataset_dir: str) -> dict:
    """meta.json of a generated dataset (a clear error when it is missing)."""
    path = os.path.join(dataset_dir, "meta.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SynthPedes: {path} not found; {dataset_dir} is not a complete "
                                "generated dataset (generate it with python -m datasets.synth)")
    return _read_json(path)


def dark_cameras(dataset_dir: str) -> Set[int]:
    """0-based camids of the cameras designed dark (``Camera.dark``).

    meta.json also records each camera's mean BT.709 luma measured on the written images
    (identity and distractor images) and whether it is below DARK_LUMA_THRESHOLD
    (``measured_dark``); the tests check that the two agree.
    """
    return set(read_meta(dataset_dir)["dark_cameras"])


def near_twin_pairs(dataset_dir: str) -> List[Tuple[int, int, str]]:
    """(twin pid, pid it copies, the changed detail) for every near-twin pair."""
    return [(p["pid"], p["twin_of"], p["detail"]) for p in read_meta(dataset_dir)["near_twin_pairs"]]


def load_synth(root: str, num_train_ids: int = 150, num_test_ids: int = 100, seed: int = 0,
               image_size: Sequence[int] = (128, 64), workers: Optional[int] = None,
               twin_share: float = DEFAULT_TWIN_SHARE, caption_lang: str = "en") -> ReIDDataset:
    """SynthPedes as a :class:`ReIDDataset` (DATASETS.NAMES 'synth'), generated on first use.

    The folders are parsed by ``load_market_style`` (the Market-1501 code: junk dropped,
    distractors kept in the gallery, train pids relabelled). Each record then gets its view id
    (0 front / 1 back / 2 side), its captions (``reid_raw.json``, English, or
    ``reid_raw_vi.json``, Vietnamese, by ``caption_lang``; empty for distractors) and ``attrs``:
    ``raw_pid``, ``dark`` (dark camera), ``view``, ``occluded``, ``near_twin`` (its identity has
    a near-twin), ``twin_of``, ``twin_detail``, ``distractor`` and ``identity`` (the attribute
    dict; None for distractors).

    Args:
        root: DATASETS.ROOT_DIR.
        num_train_ids, num_test_ids: identities per split (the CLI's --ids = their sum).
        seed, image_size: generator seed and (height, width).
        workers: rendering processes when the dataset has to be generated.
        twin_share: share of near-twin identities (see ``generate_synthpedes``).
        caption_lang: 'en' | 'vi' (DATASETS.CAPTION_LANG).
    """
    if caption_lang not in ("en", "vi"):
        raise ValueError(f"synth: caption language '{caption_lang}' is not 'en' or 'vi'")
    if num_train_ids < 1 or num_test_ids < 1:
        raise ValueError(f"SynthPedes needs >= 1 train and >= 1 test identity "
                         f"(got {num_train_ids} / {num_test_ids})")
    dataset_dir = generate_synthpedes(root, num_train_ids + num_test_ids, seed,
                                      train_ids=num_train_ids, image_size=image_size,
                                      workers=workers, twin_share=twin_share)
    base = load_market_style(dataset_dir, "synth", SYNTH_LAYOUT, max_cam=len(R.CAMERAS))
    meta = read_meta(dataset_dir)
    dark = set(meta["dark_cameras"])
    attributes = _read_json(os.path.join(dataset_dir, "attributes.json"))
    caption_file = "reid_raw.json" if caption_lang == "en" else "reid_raw_vi.json"
    captions = {r["file_path"]: r["captions"]
                for r in _read_json(os.path.join(dataset_dir, caption_file))}

    def annotate(rec: Record) -> Record:
        rel = os.path.relpath(rec.path, dataset_dir).replace(os.sep, "/")
        image = attributes["images"].get(rel)
        if image is None:
            raise DatasetFormatError(f"synth: {rec.path} has no entry in attributes.json")
        ident = attributes["identities"].get(str(image["pid"]))
        if image["pid"] > 0 and ident is None:
            raise DatasetFormatError(f"synth: pid {image['pid']} of {rec.path} has no identity "
                                     "entry in attributes.json")
        attrs = {
            "raw_pid": image["pid"], "dark": image["camid"] in dark, "view": image["view"],
            "occluded": image["occluded"], "distractor": image["pid"] == 0,
            "near_twin": bool(ident and ident["near_twin"]),
            "twin_of": ident["twin_of"] if ident else None,
            "twin_detail": ident["twin_detail"] if ident else None,
            "identity": {k: ident[k] for k in ATTRIBUTE_KEYS} if ident else None,
        }
        return dataclasses.replace(rec, viewid=image["viewid"], captions=list(captions.get(rel, [])),
                                   attrs=attrs)

    lumas = ", ".join(f"c{c['camera']} {c['mean_luma']:.2f}" for c in meta["cameras"])
    info = {"folder": dataset_dir,
            "dark cameras (0-based)": str(sorted(dark)),
            "camera mean luma": lumas,
            "near-twin pairs": str(meta["counts"]["near_twin_pairs"]),
            "caption language": caption_lang}
    return ReIDDataset("synth", [annotate(r) for r in base.train], [annotate(r) for r in base.query],
                       [annotate(r) for r in base.gallery], info=info)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the SynthPedes dataset.")
    parser.add_argument("--root", required=True, help="folder that will hold the dataset folder")
    parser.add_argument("--ids", type=int, default=300, help="total identities (train + test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-ids", type=int, default=None, help="default: half of --ids")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
    parser.add_argument("--twin-share", type=float, default=DEFAULT_TWIN_SHARE)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    train_ids = args.ids // 2 if args.train_ids is None else args.train_ids
    start = time.perf_counter()
    dataset_dir = generate_synthpedes(args.root, args.ids, args.seed, train_ids, args.size,
                                      args.workers, args.twin_share)
    elapsed = time.perf_counter() - start
    meta = read_meta(dataset_dir)
    print(f"SynthPedes written to {dataset_dir} ({elapsed:.1f} s)")
    print(load_synth(args.root, train_ids, args.ids - train_ids, args.seed, args.size,
                     twin_share=args.twin_share).statistics())
    print("counts: " + ", ".join(f"{k} {v}" for k, v in meta["counts"].items()))
    for cam in meta["cameras"]:
        print(f"  camera {cam['camera']} ({cam['name']}): {cam['images']} images, "
              f"mean luma {cam['mean_luma']:.3f}{'  [dark]' if cam['dark'] else ''}")


if __name__ == "__main__":
    main(sys.argv[1:])
