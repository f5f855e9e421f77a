"""SynthPedes as a :class:`ReIDDataset` (DATASETS.NAMES 'synth'), generated on first use."""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

from configs.validate import CAPTION_LANGS

from ..bases import DatasetFormatError, Record, ReIDDataset
from ..market1501 import load_market_style
from . import render
from .generator import generate_synthpedes, read_json, read_meta
from .identities import ATTRIBUTE_KEYS, DEFAULT_TWIN_SHARE

SYNTH_LAYOUT = """  <ROOT_DIR>/synthpedes_ids<N>_train<M>_seed<S>_<H>x<W>/   (generated on first use)
      bounding_box_train/  query/  bounding_box_test/   (Market-1501 names)
      reid_raw.json  reid_raw_vi.json  attributes.json  meta.json"""


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
    if caption_lang not in CAPTION_LANGS:
        raise ValueError(f"synth: caption language '{caption_lang}' is not one of {CAPTION_LANGS}")
    if num_train_ids < 1 or num_test_ids < 1:
        raise ValueError(f"SynthPedes needs >= 1 train and >= 1 test identity "
                         f"(got {num_train_ids} / {num_test_ids})")
    dataset_dir = generate_synthpedes(root, num_train_ids + num_test_ids, seed,
                                      train_ids=num_train_ids, image_size=image_size,
                                      workers=workers, twin_share=twin_share)
    base = load_market_style(dataset_dir, "synth", SYNTH_LAYOUT, max_cam=len(render.CAMERAS))
    meta = read_meta(dataset_dir)
    dark = set(meta["dark_cameras"])
    attributes = read_json(os.path.join(dataset_dir, "attributes.json"))
    caption_file = "reid_raw.json" if caption_lang == "en" else "reid_raw_vi.json"
    captions = {r["file_path"]: r["captions"]
                for r in read_json(os.path.join(dataset_dir, caption_file))}

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

