"""SynthPedes captions: English and Vietnamese descriptions generated from identity attributes.

Every caption names all of ``TWIN_DETAILS`` with a fixed phrase (``detail_phrase``), so the
captions of a near-twin pair always differ on the separating detail. ``tokenize`` gives the
CUHK-PEDES ``processed_tokens`` of a caption.
"""
from __future__ import annotations

import re
from typing import List

import numpy as np

from configs.validate import CAPTION_LANGS

from .identities import TWIN_DETAILS
from .seeds import choice

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
    if lang not in CAPTION_LANGS:
        raise ValueError(f"unknown caption language '{lang}' (expected one of {CAPTION_LANGS})")
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
    noun = choice(rng, ("man", "man", "guy", "young man") if man else
                   ("woman", "woman", "lady", "young woman"))
    body = " ".join(w for w in ({"tall": "tall", "short": "short", "medium": ""}[a["height"]],
                                {"slim": "slim", "broad": "heavy-set", "average": ""}[a["build"]]) if w)
    if body and rng.random() < 0.5:
        subject = f"A {body} {noun}"
    else:
        subject = choice(rng, (f"A {noun}", f"The {noun}", "A pedestrian", f"This {noun}"))
    top = choice(rng, ("shirt", "T-shirt", "top", "jacket", "sweater") if man else
                  ("shirt", "T-shirt", "top", "blouse", "jacket"))
    u, pc = a["upper_color"], a["pattern_color"]
    upper = _a({"plain": f"{choice(rng, ('', 'plain '))}{u} {top}",
                "horizontal_stripes": f"{u} {top} with horizontal {pc} stripes",
                "vertical_stripes": f"{u} {top} with vertical {pc} stripes",
                "checks": f"{u} and {pc} checked {top}"}[a["upper_pattern"]])
    logo = detail_phrase(a, "logo")
    if a["logo"] != "none":
        logo = choice(rng, (f"with {logo} on the chest", f"that has {logo} on the front"))
    else:
        logo = f"with {logo}"
    lower = {"trousers": f"{a['lower_color']} {choice(rng, ('trousers', 'pants', 'long pants'))}",
             "shorts": f"{a['lower_color']} shorts",
             "skirt": _a(f"{a['lower_color']} skirt")}[a["lower_type"]]
    shoes, hair = detail_phrase(a, "shoes_color"), detail_phrase(a, "hair_color")
    bag, hat = detail_phrase(a, "bag"), detail_phrase(a, "hat")
    carries = "holds" if a["bag"]["type"] == "handbag" else "carries"
    carrying = "is holding" if a["bag"]["type"] == "handbag" else "is carrying"
    wears_hat = f"wears {hat}" if a["hat"]["type"] != "none" else choice(
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
    subject = choice(rng, ("Một người đàn ông", "Người đàn ông", "Một anh chàng",
                            "Một người đàn ông trẻ") if man else
                      ("Một người phụ nữ", "Người phụ nữ", "Một cô gái", "Một người phụ nữ trẻ"))
    body = ", ".join(w for w in ({"tall": "dáng cao", "short": "dáng thấp", "medium": ""}[a["height"]],
                                 {"slim": "gầy", "broad": "vạm vỡ", "average": ""}[a["build"]]) if w)
    top = choice(rng, ("áo sơ mi", "áo phông", "áo thun", "áo khoác"))
    u, pat = _VI_COLOR[a["upper_color"]], a["upper_pattern"]
    pc = _VI_COLOR[a["pattern_color"]] if a["pattern_color"] else ""
    upper = {"plain": f"{top} màu {u}{choice(rng, ('', ' trơn'))}",
             "horizontal_stripes": f"{top} màu {u} kẻ sọc ngang màu {pc}",
             "vertical_stripes": f"{top} màu {u} kẻ sọc dọc màu {pc}",
             "checks": f"{top} kẻ ô màu {u} và {pc}"}[pat]
    logo = detail_phrase(a, "logo", "vi")
    logo = f"có {logo} trên ngực" if a["logo"] != "none" else logo
    lc = _VI_COLOR[a["lower_color"]]
    lower = {"trousers": f"quần dài màu {lc}", "shorts": f"quần short màu {lc}",
             "skirt": f"{choice(rng, ('váy', 'chân váy'))} màu {lc}"}[a["lower_type"]]
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

