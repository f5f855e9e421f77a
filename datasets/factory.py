"""Dataset names -> loaders. Adding a dataset = one loader module + one line in LOADERS."""
from __future__ import annotations

from .bases import ReIDDataset
from .dukemtmc import load_dukemtmcreid
from .market1501 import load_market1501
from .msmt17 import load_msmt17
from .synth import load_synth
from .vehicleid import load_vehicleid
from .veri import load_veri

LOADERS = {
    "market1501": load_market1501,
    "dukemtmcreid": load_dukemtmcreid,
    "msmt17": load_msmt17,
    "veri": load_veri,
    "vehicleid": load_vehicleid,
    "synth": load_synth,
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
                "seed": d.SYNTH_SEED, "image_size": tuple(d.SYNTH_IMAGE_SIZE)}
    return {}


def build_dataset(cfg) -> ReIDDataset:
    """Load the dataset named by DATASETS.NAMES from DATASETS.ROOT_DIR."""
    name = cfg.DATASETS.NAMES
    if name not in LOADERS:
        raise KeyError(f"DATASETS.NAMES '{name}' is not a known dataset; choose one of "
                       f"{sorted(LOADERS)} (see docs/datasets.md to add one)")
    return LOADERS[name](cfg.DATASETS.ROOT_DIR, **loader_options(cfg, name))
