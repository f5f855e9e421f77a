"""Dataset names -> loaders. Adding a dataset = one loader module + one line in LOADERS.

``build_dataset`` loads the dataset, then applies DATASETS.CAPTION_SOURCE / CAPTION_LANG
(``datasets/captions.py``): captions from caption files, from attributes, or no text.
"""
from __future__ import annotations

import numpy as np

from .bases import ReIDDataset, relabel_pids
from .captions import apply_caption_source
from .dukemtmc import load_dukemtmcreid
from .market1501 import load_market1501
from .msmt17 import load_msmt17
from .synth import load_synth
from .text_datasets import load_cuhkpedes, load_icfgpedes, load_rstpreid, load_vn3k
from .vehicleid import load_vehicleid
from .veri import load_veri

LOADERS = {
    "market1501": load_market1501,
    "dukemtmcreid": load_dukemtmcreid,
    "msmt17": load_msmt17,
    "veri": load_veri,
    "vehicleid": load_vehicleid,
    "synth": load_synth,
    "cuhkpedes": load_cuhkpedes,
    "icfgpedes": load_icfgpedes,
    "rstpreid": load_rstpreid,
    "vn3k": load_vn3k,
}


def loader_options(cfg, name: str) -> dict:
    """The DATASETS.* keys a loader takes besides ROOT_DIR."""
    d = cfg.DATASETS
    if name == "msmt17":
        return {"train_with_val": d.MSMT17_TRAIN_WITH_VAL}
    if name == "vehicleid":
        return {"test_size": d.VEHICLEID_TEST_SIZE, "num_trials": d.VEHICLEID_TRIALS,
                "trial_seed": d.VEHICLEID_TRIAL_SEED}
    if name == "synth":
        return {"num_train_ids": d.SYNTH_TRAIN_IDS, "num_test_ids": d.SYNTH_TEST_IDS,
                "seed": d.SYNTH_SEED, "image_size": tuple(d.SYNTH_IMAGE_SIZE),
                "caption_lang": d.CAPTION_LANG}
    if name == "vn3k":
        return {"caption_lang": d.CAPTION_LANG}
    if name == "cuhkpedes":
        return {"lgur_drop_ids": d.CUHKPEDES_LGUR_DROP_IDS}
    return {}


def hold_out_val_ids(dataset: ReIDDataset, num_ids: int, seed: int,
                     keys=("DATASETS.VAL_IDS", "DATASETS.VAL_SEED")) -> ReIDDataset:
    """DATASETS.VAL_IDS: move ``num_ids`` training identities (drawn with
    ``numpy.random.default_rng(seed).choice`` from the sorted training pids, without replacement)
    and all their images into ``dataset.val``; the remaining training pids are relabelled to
    0..C-1. For datasets whose annotation has no validation split (ICFG-PEDES, SynthPedes), so
    that the best epoch is selected on identities never trained on and never tested on.
    ``keys``: the config keys of ``num_ids`` and ``seed``, named in messages and ``val_source``.

    Raises:
        ValueError: the dataset already has a validation split (its annotation's), or
            ``num_ids`` leaves fewer than 2 training identities.
    """
    if dataset.val:
        raise ValueError(
            f"{keys[0]} {num_ids}: {dataset.name} already has a validation split "
            f"({dataset.val_source}, {len(dataset.val)} images); set {keys[0]} 0 to use it")
    ids = sorted({r.pid for r in dataset.train})
    if num_ids > len(ids) - 2:
        raise ValueError(f"{keys[0]} {num_ids}: {dataset.name} has {len(ids)} training "
                         "identities; hold out at most all but 2")
    chosen = {int(p) for p in np.random.default_rng(seed).choice(ids, num_ids, replace=False)}
    dataset.val = [r for r in dataset.train if r.pid in chosen]
    dataset.val_source = (f"{num_ids} training identities held out ({keys[0]} {num_ids}, "
                          f"{keys[1]} {seed})")
    dataset.train = relabel_pids([r for r in dataset.train if r.pid not in chosen])
    if "captions" in dataset.info:   # counted by apply_caption_source before the hold-out
        dataset.info["captions"] += " (before the validation identities were held out)"
    return dataset


def keep_train_id_fraction(dataset: ReIDDataset, fraction: float, seed: int) -> ReIDDataset:
    """DATASETS.TRAIN_ID_FRACTION: keep ``round(fraction * C)`` (at least 1) of the C training
    identities, drawn with ``numpy.random.default_rng(seed).choice`` from the sorted training
    pids, with all their images; relabelled to 0..C'-1. The test and val splits are unchanged.
    """
    ids = sorted({r.pid for r in dataset.train})
    keep_n = max(1, int(round(fraction * len(ids))))
    kept = {int(p) for p in np.random.default_rng(seed).choice(ids, keep_n, replace=False)}
    before = len(dataset.train)
    dataset.train = relabel_pids([r for r in dataset.train if r.pid in kept])
    dataset.info["few-shot"] = (f"{keep_n} of {len(ids)} training identities, {len(dataset.train)} "
                                f"of {before} images (DATASETS.TRAIN_ID_FRACTION {fraction:g}, "
                                f"TRAIN_ID_SEED {seed})")
    return dataset


def build_dataset(cfg) -> ReIDDataset:
    """Load the dataset named by DATASETS.NAMES from DATASETS.ROOT_DIR, with its captions
    (DATASETS.CAPTION_SOURCE, CAPTION_LANG) and the held-out validation identities
    (DATASETS.VAL_IDS, :func:`hold_out_val_ids`)."""
    d = cfg.DATASETS
    name = d.NAMES
    if name not in LOADERS:
        raise KeyError(f"DATASETS.NAMES '{name}' is not a known dataset; choose one of "
                       f"{sorted(LOADERS)} (see docs/datasets.md to add one)")
    dataset = LOADERS[name](d.ROOT_DIR, **loader_options(cfg, name))
    dataset = apply_caption_source(dataset, d.CAPTION_SOURCE, d.CAPTION_LANG, d.ROOT_DIR)
    # after the captions, so the held-out records carry the same kind of text
    if d.VAL_IDS:
        dataset = hold_out_val_ids(dataset, d.VAL_IDS, d.VAL_SEED)
    elif name == "synth" and d.SYNTH_VAL_IDS:
        dataset = hold_out_val_ids(dataset, d.SYNTH_VAL_IDS, d.SYNTH_SEED,
                                   ("DATASETS.SYNTH_VAL_IDS", "DATASETS.SYNTH_SEED"))
    if d.TRAIN_ID_FRACTION < 1.0:   # after the hold-out: val identities are never trained on
        dataset = keep_train_id_fraction(dataset, d.TRAIN_ID_FRACTION, d.TRAIN_ID_SEED)
    return dataset
