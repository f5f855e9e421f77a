"""Config tree: every key documented and read somewhere; every recipe loads; clear errors."""
import glob
import os
import re

import pytest

from configs import load_config
from configs.defaults import get_cfg_defaults

SOURCE_DIRS = ("datasets", "model", "losses", "processor", "solver", "utils", "launcher")
SOURCE_FILES = ("train.py", "test.py", "run_phased_loss.py")


def all_keys(node, prefix=""):
    for key, value in node.items():
        full = f"{prefix}{key}"
        if hasattr(value, "items"):
            yield from all_keys(value, full + ".")
        else:
            yield full


def source_text(root):
    paths = [os.path.join(root, f) for f in SOURCE_FILES if os.path.exists(os.path.join(root, f))]
    for d in SOURCE_DIRS:
        paths += glob.glob(os.path.join(root, d, "**", "*.py"), recursive=True)
    return "\n".join(open(p).read() for p in paths)


def test_every_key_is_read_somewhere(repo_root):
    text = source_text(repo_root)
    unread = []
    for key in all_keys(get_cfg_defaults()):
        parts = key.split(".")
        leaf = parts[-1]
        # cfg.A.B.LEAF, section.LEAF or a ["LEAF"] look-up
        if not re.search(rf"\.{leaf}\b|\[\"{leaf}\"\]", text):
            unread.append(key)
    assert not unread, f"config keys never read by the code: {unread}"


def test_every_key_is_documented(repo_root):
    lines = open(os.path.join(repo_root, "configs", "defaults.py")).read().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"_C\.([A-Z0-9_.]+) = (?!CN\(\))", line)
        if match and not lines[i - 1].lstrip().startswith("#") and "# " not in line:
            # a key shares the comment block of the key just above it
            j = i - 1
            while j >= 0 and re.match(r"_C\.[A-Z0-9_.]+ = (?!CN\(\))", lines[j]):
                j -= 1
            if not lines[j].lstrip().startswith("#"):
                undocumented.append(match.group(1))
    assert not undocumented, f"keys without a comment: {undocumented}"


def test_booleans_are_booleans():
    for key in all_keys(get_cfg_defaults()):
        node = get_cfg_defaults()
        for part in key.split("."):
            node = node[part]
        assert node not in ("yes", "no", "on", "off"), key


def test_every_recipe_loads(repo_root):
    recipes = glob.glob(os.path.join(repo_root, "configs", "**", "*.yml"), recursive=True)
    assert recipes
    for path in recipes:
        load_config(path, check_paths=False)   # the pretrained weight files are not here


def test_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("MODEL:\n  NOT_A_KEY: 1\n")
    with pytest.raises(ValueError, match="bad.yml.*NOT_A_KEY"):
        load_config(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.yml"):
        load_config(str(tmp_path / "missing.yml"))
    with pytest.raises(ValueError, match="SOLVER.NOPE"):
        load_config(opts=["SOLVER.NOPE", "1"])
