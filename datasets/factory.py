"""Dataset names -> loaders. Adding a dataset = one loader module + one line in LOADERS.

``build_dataset`` loads the dataset, then applies DATASETS.CAPTION_SOURCE / CAPTION_LANG
(``datasets/captions.py``): captions from caption files, from attributes, or no text.
"""
from __future__ import annotations

from .bases import ReIDDataset
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
    return {}


def build_dataset(cfg) -> ReIDDataset:
    """Load the dataset named by DATASETS.NAMES from DATASETS.ROOT_DIR, with its captions
    (DATASETS.CAPTION_SOURCE, CAPTION_LANG)."""
    d = cfg.DATASETS
    name = d.NAMES
    if name not in LOADERS:
        raise KeyError(f"DATASETS.NAMES '{name}' is not a known dataset; choose one of "
                       f"{sorted(LOADERS)} (see docs/datasets.md to add one)")
    dataset = LOADERS[name](d.ROOT_DIR, **loader_options(cfg, name))
    return apply_caption_source(dataset, d.CAPTION_SOURCE, d.CAPTION_LANG, d.ROOT_DIR)
