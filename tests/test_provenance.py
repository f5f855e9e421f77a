"""utils/provenance.py: flattening, runtime-only keys, fingerprints and config comparison."""
from configs import load_config
from utils.provenance import (ABSENT, compare_configs, config_fingerprint, flatten_config,
                              is_runtime_only, is_test_runtime_only, evaluation_fingerprint,
                              training_config)


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
    assert is_runtime_only("DATALOADER.NUM_WORKERS")   # tests/test_worker_invariance.py
    assert not is_runtime_only("MODEL.DEVICE") and not is_runtime_only("DATASETS.ROOT_DIR")
    assert not is_runtime_only("TESTING.X")   # a section prefix, not a string prefix
    assert "TEST.DISTANCE" not in training_config(cfg())
    base = config_fingerprint(cfg())
    assert config_fingerprint(cfg("TEST.DISTANCE", "cosine", "OUTPUT_DIR", "/x")) == base
    assert config_fingerprint(cfg("DATALOADER.NUM_WORKERS", "0")) == base
    assert config_fingerprint(cfg("DATASETS.ROOT_DIR", "/elsewhere")) != base
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


def test_evaluation_fingerprint_follows_what_changes_the_numbers(monkeypatch):
    import utils.provenance as provenance
    base = evaluation_fingerprint(cfg())
    assert len(base) == 64 and is_test_runtime_only("TEST.WEIGHT")
    assert not is_test_runtime_only("TEST.NECK_FEAT") and not is_test_runtime_only("TEST.")
    same = cfg("TEST.WEIGHT", "/w.pth", "OUTPUT_DIR", "/x", "TEST.IMS_PER_BATCH", "7",
               "TEST.EVAL_BLOCK", "3", "DATALOADER.NUM_WORKERS", "0", "SOLVER.EVAL_PERIOD", "9")
    assert evaluation_fingerprint(same) == base
    for key, value in (("TEST.NECK_FEAT", "after"), ("TEST.RE_RANKING", "True"),
                       ("MODEL.DEVICE", "cuda"), ("DATASETS.ROOT_DIR", "/elsewhere"),
                       ("INPUT.SIZE_TEST", "[128, 64]")):
        assert evaluation_fingerprint(cfg(key, value)) != base, key
    # a key added to the code later, at its default, leaves earlier fingerprints valid
    older = flatten_config(cfg("TEST.NECK_FEAT", "after"))
    del older["TEST.RE_RANKING_K1"]
    assert evaluation_fingerprint(older) == evaluation_fingerprint(cfg("TEST.NECK_FEAT",
                                                                          "after"))
    # a changed default does not hide a stored value that equalled the old default
    stored = cfg().dump()
    defaults = dict(provenance._defaults(), **{"TEST.MAX_RANK": 10})
    monkeypatch.setattr(provenance, "_defaults", lambda: defaults)
    assert evaluation_fingerprint(stored) != base
