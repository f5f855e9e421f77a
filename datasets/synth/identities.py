"""SynthPedes identities: attribute tuples, near-twins and the identity plan.

An identity is a dict over ``ATTRIBUTE_KEYS`` (bag / hat are ``{'type', 'color'}``; the vocabularies
are those of ``render``). Any two identities that are not a near-twin pair differ by a weighted
attribute distance >= MIN_IDENTITY_DISTANCE. A near-twin is a copy of another identity of the
same split with exactly ONE of ``TWIN_DETAILS`` changed, so the pair are hard negatives in the
same gallery.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import render
from .seeds import STREAM_IDENTITIES, choice, seeded_rng

DEFAULT_TWIN_SHARE = 0.15

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


def _sample_bag(rng, gender: str) -> dict:
    p = (0.35, 0.25, 0.25, 0.15) if gender == "woman" else (0.35, 0.3, 0.1, 0.25)
    kind = choice(rng, render.BAG_TYPES, p)
    return {"type": kind, "color": None if kind == "none" else choice(rng, render.BAG_COLORS)}


def _sample_hat(rng) -> dict:
    kind = choice(rng, render.HAT_TYPES, (0.6, 0.25, 0.15))
    return {"type": kind, "color": None if kind == "none" else choice(rng, render.HAT_COLORS)}


def _sample_logo(rng, attrs: dict, exclude: Sequence[str] = ()) -> str:
    options = [c for c in render.LOGO_COLORS
               if c not in (attrs["upper_color"], attrs["pattern_color"], *exclude)]
    return choice(rng, options)


def sample_attributes(rng: np.random.Generator) -> dict:
    """One random person: a dict over ``ATTRIBUTE_KEYS`` (bag / hat are {'type', 'color'})."""
    gender = choice(rng, ("man", "woman"))
    attrs = {
        "gender": gender,
        "height": choice(rng, tuple(render.HEIGHTS), (0.25, 0.5, 0.25)),
        "build": choice(rng, tuple(render.BUILDS), (0.3, 0.45, 0.25)),
        "skin": choice(rng, tuple(render.SKIN_TONES)),
        "hair_color": choice(rng, tuple(render.HAIR_COLORS), (0.4, 0.25, 0.15, 0.1, 0.1)),
        "hair_length": choice(rng, render.HAIR_LENGTHS, (0.3, 0.7) if gender == "woman" else (0.88, 0.12)),
        "upper_color": choice(rng, render.UPPER_COLORS),
        "upper_pattern": choice(rng, render.PATTERNS, (0.45, 0.2, 0.15, 0.2)),
        "pattern_color": None,
        "logo": "none",
        "lower_type": choice(rng, render.LOWER_TYPES,
                              (0.55, 0.15, 0.3) if gender == "woman" else (0.8, 0.2, 0.0)),
        "lower_color": choice(rng, render.LOWER_COLORS),
        "shoes_color": choice(rng, render.SHOE_COLORS),
        "bag": _sample_bag(rng, gender),
        "hat": _sample_hat(rng),
    }
    if attrs["upper_pattern"] != "plain":
        attrs["pattern_color"] = choice(
            rng, [c for c in render.PATTERN_COLORS if c != attrs["upper_color"]])
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
        twin["shoes_color"] = choice(rng, [c for c in render.SHOE_COLORS if c != attrs["shoes_color"]])
    elif detail == "hair_color":
        twin["hair_color"] = choice(rng, [c for c in render.HAIR_COLORS if c != attrs["hair_color"]])
    elif detail in ("bag", "hat"):
        item = attrs[detail]
        kinds = render.BAG_TYPES if detail == "bag" else render.HAT_TYPES
        colors = render.BAG_COLORS if detail == "bag" else render.HAT_COLORS
        if item["type"] == "none":
            twin[detail] = {"type": choice(rng, kinds[1:]), "color": choice(rng, colors)}
        elif rng.random() < 0.5:
            twin[detail] = {"type": "none", "color": None}
        else:
            twin[detail] = {"type": item["type"],
                            "color": choice(rng, [c for c in colors if c != item["color"]])}
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
    rng = seeded_rng(seed, STREAM_IDENTITIES)
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
                detail = choice(rng, TWIN_DETAILS)
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

