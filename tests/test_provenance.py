"""utils/provenance.py: flattening, runtime-only keys, fingerprints and config comparison."""
from configs import load_config
from utils.provenance import (ABSENT, compare_configs, config_fingerprint, flatten_config,
                              is_runtime_only, training_config)


def cfg(*opts):
    return load_config(opts=list(opts))


def test_flatten_accepts_yaml_cfgnode_and_mappings():
    c = cfg("SOLVER.BASE_LR", "0.05")
    flat = flatten_config(c)
    assert flat["SOLVER.BASE_LR"] == 0.05 and flat["INPUT.SIZE_TRAIN"] == [256, 128]
    assert flatten_config(c.dump()) == flat
    assert flatten_config({"A": {"B": 1}, "C": 2}) == {"A.B": 1, "C": 2}


def test_runtime_only_keys_and_fingerprint():
    assert is_runtime_only("TEST.DISTANCE") and is_runtime_only("OUTPUT_DIR")
    assert not is_runtime_only("DATALOADER.NUM_WORKERS") and not is_runtime_only("MODEL.DEVICE")
    assert not is_runtime_only("TESTING.X")   # a section prefix, not a string prefix
    assert "TEST.DISTANCE" not in training_config(cfg())
    base = config_fingerprint(cfg())
    assert config_fingerprint(cfg("TEST.DISTANCE", "cosine", "OUTPUT_DIR", "/x")) == base
    assert config_fingerprint(cfg("DATALOADER.NUM_WORKERS", "0")) != base
    assert config_fingerprint(cfg().dump()) == base and len(base) == 64


def test_compare_kinds():
    old = cfg("SOLVER.MAX_EPOCHS", "10").dump()
    assert compare_configs(old, cfg("SOLVER.MAX_EPOCHS", "10", "TEST.FEAT_NORM", "False")
                           ).kind == "identical"
    ext = compare_configs(old, cfg("SOLVER.MAX_EPOCHS", "20"))
    assert ext.kind == "extension" and ext.changed == {"SOLVER.MAX_EPOCHS": (10, 20)}
    assert compare_configs(old, cfg("SOLVER.MAX_EPOCHS", "5")).kind == "incompatible"
    both = compare_configs(old, cfg("SOLVER.MAX_EPOCHS", "20", "SOLVER.BASE_LR", "0.05",
                                    "TEST.DISTANCE", "cosine"))
    assert both.kind == "incompatible"
    assert both.describe() == ("  SOLVER.BASE_LR: 0.008 -> 0.05\n"
                               "  SOLVER.MAX_EPOCHS: 10 -> 20")
    assert both.runtime_changed == {"TEST.DISTANCE": ("euclidean", "cosine")}


def test_keys_added_since_count_as_unchanged_only_at_their_default():
    flat = flatten_config(cfg())
    del flat["LOSS.ID.LABEL_SMOOTH"]          # an older config, before the key existed
    same = compare_configs(flat, cfg())
    assert same.kind == "identical" and same.new_at_default == ("LOSS.ID.LABEL_SMOOTH",)
    other = compare_configs(flat, cfg("LOSS.ID.LABEL_SMOOTH", "0.1"))
    assert other.changed == {"LOSS.ID.LABEL_SMOOTH": (ABSENT, 0.1)}
    assert "LOSS.ID.LABEL_SMOOTH: <absent> -> 0.1" in other.describe()
    gone = flatten_config(cfg())
    gone["LOSS.OLD_KEY"] = 1                  # a key the code no longer has
    assert compare_configs(gone, cfg()).kind == "incompatible"
