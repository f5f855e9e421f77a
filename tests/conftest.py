"""Shared test fixtures: repo root on sys.path, tiny configs, SynthPedes meta.json readers."""
import hashlib
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A tiny SynthPedes dataset, generated once per test session."""
    from datasets.synth import load_synth

    root = str(tmp_path_factory.mktemp("synth"))
    load_synth(root, num_train_ids=8, num_test_ids=6, seed=0, image_size=(64, 32))
    return root


def _synth_meta(dataset_dir):
    with open(os.path.join(dataset_dir, "meta.json"), encoding="utf-8") as f:
        return json.load(f)


def dark_cameras(dataset_dir):
    """0-based camids of the cameras a generated SynthPedes meta.json declares dark."""
    return set(_synth_meta(dataset_dir)["dark_cameras"])


def near_twin_pairs(dataset_dir):
    """(twin pid, pid it copies, changed detail) for every near-twin pair in meta.json."""
    return [(p["pid"], p["twin_of"], p["detail"]) for p in _synth_meta(dataset_dir)["near_twin_pairs"]]


def three_phase_opts(boundaries="[1, 2]", **w_seqs):
    """KEY VALUE overrides for a three-phase plan with no metric loss and no SupCon (the TBPS
    tests schedule only their own losses): ``w_seqs`` maps a loss's key (``"SS"``, ``"NITC"``,
    ...) to its three-phase ``W_SEQ`` list, e.g. ``three_phase_opts(SS=['const:0', ...])``."""
    opts = {"LOSS.PHASED.ENABLE": "True", "LOSS.PHASED.BOUNDARIES": boundaries,
            "LOSS.PHASED.METRIC_SEQ": "['none', 'none', 'none']",
            "LOSS.PHASED.W_METRIC_SEQ": "[0, 0, 0]",
            "LOSS.PHASED.W_SUP_SPEC": "['const:0', 'const:0', 'const:0']"}
    opts.update({f"LOSS.{name}.W_SEQ": str(list(seq)) for name, seq in w_seqs.items()})
    return opts


def tiny_opts(synth_root, output_dir, **overrides):
    """KEY VALUE overrides for a tiny CPU training run on the tiny SynthPedes."""
    opts = {
        "DATASETS.NAMES": "synth", "DATASETS.ROOT_DIR": synth_root,
        "DATASETS.SYNTH_TRAIN_IDS": "8", "DATASETS.SYNTH_TEST_IDS": "6",
        "DATASETS.SYNTH_IMAGE_SIZE": "[64, 32]",
        "INPUT.SIZE_TRAIN": "[64, 32]", "INPUT.SIZE_TEST": "[64, 32]", "INPUT.PADDING": "4",
        "MODEL.DEVICE": "cpu", "MODEL.TRANSFORMER_TYPE": "vit_tiny", "MODEL.VIT_DEPTH": "1",
        "MODEL.SIE_CAMERA": "True", "MODEL.DROP_PATH": "0.1",
        "SOLVER.OPTIMIZER_NAME": "AdamW", "SOLVER.BASE_LR": "0.001", "SOLVER.MAX_EPOCHS": "2",
        "SOLVER.WARMUP_EPOCHS": "1", "SOLVER.IMS_PER_BATCH": "16", "SOLVER.EVAL_PERIOD": "1",
        "SOLVER.CHECKPOINT_PERIOD": "1", "DATALOADER.NUM_INSTANCE": "4",
        "DATALOADER.NUM_WORKERS": "0", "TEST.IMS_PER_BATCH": "64", "TEST.VIS_QUERIES": "3",
        "TEST.VIS_TOPK": "4", "OUTPUT_DIR": output_dir,
    }
    opts.update({k: str(v) for k, v in overrides.items()})
    return [item for pair in opts.items() for item in pair]


def tree_digest(folder):
    """{relative path: sha256} of every file under ``folder``."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found
