"""Recipe inheritance (``_BASE_``): resolution rules, errors, and the rewrite of configs/ on it.

``fixtures/recipes_before_base.json`` holds every recipe's own YAML content (``yaml.safe_load``)
as it was before the recipes were rewritten on ``_BASE_``. Each recipe must still resolve to the
defaults merged with that content, so defaults added later move both sides alike.
"""
import json
import os

import pytest
import yaml
from yacs.config import CfgNode as CN

from configs import load_config, merge_trees
from configs.defaults import get_cfg_defaults

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "recipes_before_base.json")


def before_rewrite():
    with open(FIXTURE) as f:
        return json.load(f)


def as_dict(cfg):
    return {k: as_dict(v) if isinstance(v, CN) else v for k, v in cfg.items()}


def leaf_count(tree):
    return sum(leaf_count(v) if isinstance(v, dict) else 1 for v in tree.values())


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


# Deliberate recipe changes made after the rewrite (recipe path prefix -> keys): the quickstart
# trains at 64x32 from decoded images, then a conv-stem ViT for 16 epochs (issue 13, item 11);
# the SynthPedes recipes built on it keep 128x64 and the patch-stem model (synth_baseline.yml
# pins both) and inherit the cache, which does not change the weights.
CHANGED_SINCE = (
    ("configs/Synth/quickstart.yml", {
        "INPUT": {"SIZE_TRAIN": [64, 32], "SIZE_TEST": [64, 32]},
        "MODEL": {"VIT_STEM": "conv", "DROP_PATH": 0.0},
        "SOLVER": {"FUSED_OPTIMIZER": True, "WARMUP_EPOCHS": 2, "MAX_EPOCHS": 16,
                   "CHECKPOINT_PERIOD": 16, "EVAL_PERIOD": 16}}),
    ("configs/Synth/", {"DATALOADER": {"CACHE_IMAGES": True}}),
)


def test_every_recipe_resolves_as_before_the_rewrite(repo_root):
    recipes = before_rewrite()
    assert len(recipes) == 36
    for rel, own in recipes.items():
        path = os.path.join(repo_root, rel)
        assert os.path.isfile(path), f"{rel} was renamed or removed (README and tests name it)"
        expected = get_cfg_defaults()
        expected.merge_from_other_cfg(CN(own))
        for prefix, change in CHANGED_SINCE:
            if rel.startswith(prefix):
                expected.merge_from_other_cfg(CN(change))
        assert as_dict(load_config(path, check_paths=False)) == as_dict(expected), rel


def test_the_rewrite_left_each_variant_only_what_differs(repo_root):
    recipes = before_rewrite()
    inheriting = 0
    for rel, own in recipes.items():
        with open(os.path.join(repo_root, rel)) as f:
            now = yaml.safe_load(f)
        if "_BASE_" not in now:
            continue
        inheriting += 1
        now.pop("_BASE_")
        assert leaf_count(now) < leaf_count(own), rel
    # every recipe but the self-contained quickstart starts from a base
    assert inheriting == len(recipes) - 1


def test_bases_chain_with_paths_relative_to_the_file_that_names_them(tmp_path, monkeypatch):
    write(tmp_path / "bases" / "root.yml",
          "MODEL:\n  SHIFT_NUM: 7\n  SIE_COE: 2.5\nSOLVER:\n  MAX_EPOCHS: 11\n")
    write(tmp_path / "bases" / "mid.yml",
          "_BASE_: root.yml\nMODEL:\n  SIE_COE: 1.5\nSOLVER:\n  BASE_LR: 0.02\n")
    child = write(tmp_path / "recipes" / "child.yml",
                  "_BASE_: ../bases/mid.yml\nSOLVER:\n  MAX_EPOCHS: 12\nOUTPUT_DIR: ./logs/c\n")
    # a base path is relative to the file that names it, not to the working directory
    monkeypatch.chdir(tmp_path)
    child = os.path.join("recipes", "child.yml")
    cfg = load_config(child)
    assert (cfg.MODEL.SHIFT_NUM, cfg.MODEL.SIE_COE) == (7, 1.5)
    assert (cfg.SOLVER.MAX_EPOCHS, cfg.SOLVER.BASE_LR, cfg.OUTPUT_DIR) == (12, 0.02, "./logs/c")
    # command-line overrides still come last
    assert load_config(child, ["MODEL.SHIFT_NUM", "3"]).MODEL.SHIFT_NUM == 3


def test_a_nested_override_keeps_its_siblings_and_a_list_is_replaced(tmp_path):
    write(tmp_path / "base.yml",
          "MODEL:\n  JPM: True\n  SHIFT_NUM: 8\nLOSS:\n  NAMES: [id, triplet, center]\n"
          "  TRIPLET:\n    MARGIN: 0.7\n    SOFT_MARGIN: True\n")
    child = write(tmp_path / "child.yml", "_BASE_: base.yml\nMODEL:\n  JPM: False\n"
                  "LOSS:\n  NAMES: [id]\n  TRIPLET:\n    MARGIN: 0.2\n")
    cfg = load_config(child)
    assert (cfg.MODEL.JPM, cfg.MODEL.SHIFT_NUM) == (False, 8)
    assert list(cfg.LOSS.NAMES) == ["id"]
    assert (cfg.LOSS.TRIPLET.MARGIN, cfg.LOSS.TRIPLET.SOFT_MARGIN) == (0.2, True)


def test_merge_trees_leaves_its_inputs_alone():
    base = {"A": {"B": 1, "C": [1, 2]}, "D": 1}
    child = {"A": {"C": [3]}, "E": {"F": 2}}
    assert merge_trees(base, child) == {"A": {"B": 1, "C": [3]}, "D": 1, "E": {"F": 2}}
    assert base == {"A": {"B": 1, "C": [1, 2]}, "D": 1}
    assert child == {"A": {"C": [3]}, "E": {"F": 2}}


def test_a_cycle_is_an_error_naming_the_files(tmp_path):
    a = write(tmp_path / "a.yml", "_BASE_: b.yml\n")
    write(tmp_path / "b.yml", "_BASE_: a.yml\n")
    with pytest.raises(ValueError, match=r"cycle.*a\.yml.*b\.yml.*a\.yml"):
        load_config(a)
    itself = write(tmp_path / "self.yml", "_BASE_: ./self.yml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config(itself)


def test_a_missing_base_is_an_error_naming_both_files(tmp_path):
    child = write(tmp_path / "child.yml", "_BASE_: gone/base.yml\n")
    with pytest.raises(FileNotFoundError, match=r"child\.yml.*gone/base\.yml"):
        load_config(child)
    bad = write(tmp_path / "bad.yml", "_BASE_: [a.yml]\n")
    with pytest.raises(ValueError, match=r"bad\.yml.*_BASE_"):
        load_config(bad)


def test_a_bad_key_in_a_base_names_the_recipe_and_its_chain(tmp_path):
    write(tmp_path / "base.yml", "MODEL:\n  NOT_A_KEY: 1\n")
    child = write(tmp_path / "child.yml", "_BASE_: base.yml\n")
    with pytest.raises(ValueError, match=r"child\.yml.*base\.yml.*NOT_A_KEY"):
        load_config(child)


def test_a_stored_config_cannot_name_a_base(tmp_path):
    write(tmp_path / "base.yml", "MODEL:\n  SHIFT_NUM: 7\n")
    with pytest.raises(ValueError, match="stored config.*_BASE_"):
        load_config(config_text=f"_BASE_: {tmp_path / 'base.yml'}\n")


def test_the_fast_loader_reads_every_recipe_as_safe_load_does(repo_root):
    """configs.SAFE_LOADER (libyaml's C loader when present) gives the documents yaml.safe_load
    gives, for every recipe file of the repository."""
    import glob
    from configs import SAFE_LOADER
    paths = glob.glob(os.path.join(repo_root, "configs", "**", "*.yml"), recursive=True)
    assert len(paths) > 80
    for path in paths:
        with open(path) as f:
            text = f.read()
        assert yaml.load(text, Loader=SAFE_LOADER) == yaml.safe_load(text), path
