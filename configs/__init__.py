"""Config loading: defaults <- YAML recipe (with its ``_BASE_`` chain) <- command-line KEY VALUE pairs.

A recipe may start from another one: ``_BASE_: relative/path.yml`` (the fast-reid / detectron2
convention; the path is relative to the file that names it). Bases may chain. The chain is
resolved on plain dicts before yacs sees anything: each file's dict is deep-merged over its
base's (a mapping merges key by key into the base's mapping; lists and scalars replace the base's
value), and ``_BASE_`` is dropped. Only files may name a base: a checkpoint's stored config is
already resolved.

Recipes are data: only YAML files (``.yml`` / ``.yaml``) are read, with PyYAML's safe loader
(libyaml's C implementation, ``yaml.CSafeLoader``, when PyYAML was built with it: the same
documents, about 10x faster, which the test suite and the launcher feel); a
``.py`` config (which yacs would execute as a module) is refused, for the recipe and for every
file of its ``_BASE_`` chain. After merging, every value is validated (``configs/validate.py``).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import yaml
from yacs.config import CfgNode

from .defaults import get_cfg_defaults
from .validate import ConfigError, check_config

__all__ = ["BASE_KEY", "ConfigError", "SAFE_LOADER", "load_config", "merge_trees", "read_recipe",
           "require_yaml"]

BASE_KEY = "_BASE_"
YAML_EXTENSIONS = (".yml", ".yaml")
#: the safe loader recipes are read with (C when available, the pure-Python one otherwise)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_config(config_file: Optional[str] = None, opts: Sequence[str] = (),
                config_text: Optional[str] = None, freeze: bool = True,
                check_paths: Optional[bool] = None):
    """Merge a YAML recipe (a file, or a YAML string such as a checkpoint's stored config) and
    KEY VALUE overrides into the defaults, then validate every value (``configs/validate.py``);
    errors name the file or key at fault.

    ``check_paths``: also require the paths the config reads to exist (default: True unless the
    config comes from ``config_text``, a finished run's stored config).

    Raises:
        FileNotFoundError: the recipe or a base is missing.
        ValueError: not a YAML file, a bad key or value (:class:`ConfigError` for values).
    """
    if check_paths is None:
        check_paths = config_text is None
    cfg = get_cfg_defaults()
    if config_text is not None:
        other = cfg.load_cfg(config_text)
        if BASE_KEY in other:
            raise ValueError(f"the checkpoint's stored config names a {BASE_KEY}; a stored config "
                             "is already resolved, only recipe files may name a base")
        _merge(cfg, other, "the checkpoint's stored config")
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        tree, chain = read_recipe(config_file)
        source = config_file
        if len(chain) > 1:
            source += f" (with its {BASE_KEY} chain: {' -> '.join(chain[1:])})"
        _merge(cfg, CfgNode(tree), source)
    if len(opts) % 2:
        raise ValueError(f"overrides must be KEY VALUE pairs, got an odd number: {list(opts)}")
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as exc:
        raise ValueError(f"bad command-line override: {exc}") from None
    check_config(cfg, check_paths=check_paths)
    if freeze:
        cfg.freeze()
    return cfg


def read_recipe(path: str, _chain: Sequence[str] = ()):
    """The recipe at ``path`` as a plain dict with its ``_BASE_`` chain merged in.

    Returns:
        (tree, chain): ``tree`` the resolved dict (no ``_BASE_`` left); ``chain`` the files read,
        ``path`` first, then its base, the base's base, ...
    Raises FileNotFoundError for a missing base and ValueError for a cycle, a bad ``_BASE_`` value
    or a file that is not a YAML mapping; each names the file that names the base.
    """
    require_yaml(path, _chain[-1] if _chain else None)
    with open(path) as f:
        tree = yaml.load(f, Loader=SAFE_LOADER)
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: a recipe must be a YAML mapping of config keys, "
                         f"got {type(tree).__name__}")
    chain = list(_chain) + [path]
    base = tree.pop(BASE_KEY, None)
    if base is None:
        return tree, [path]
    if not isinstance(base, str) or not base:
        raise ValueError(f"{path}: {BASE_KEY} must be a path relative to this file, got {base!r}")
    base_path = os.path.join(os.path.dirname(path), base)
    if not os.path.isfile(base_path):
        raise FileNotFoundError(f"{path}: its {BASE_KEY} {base!r} not found (looked for "
                                f"{base_path}; the path is relative to the file that names it)")
    real = os.path.realpath(base_path)
    if any(os.path.realpath(p) == real for p in chain):
        raise ValueError(f"{path}: its {BASE_KEY} {base_path} is already in the chain, a cycle: "
                         f"{' -> '.join(chain + [base_path])}")
    base_tree, base_chain = read_recipe(base_path, chain)
    return merge_trees(base_tree, tree), [path] + base_chain


def require_yaml(path: str, named_by: Optional[str] = None) -> None:
    """Refuse a config file that is not ``.yml`` / ``.yaml``: yacs would execute a ``.py`` config
    as a module, and a config file must never run code."""
    if not path.lower().endswith(YAML_EXTENSIONS):
        where = f"{named_by}: its {BASE_KEY} " if named_by else "config file "
        raise ValueError(f"{where}{path} is not a YAML file: only YAML configs "
                         f"({' / '.join(YAML_EXTENSIONS)}) are accepted; a config is data and "
                         "is never executed")


def merge_trees(base: dict, child: dict) -> dict:
    """``child`` deep-merged over ``base`` (new dict, inputs untouched): where both values are
    mappings they merge key by key; otherwise (lists, scalars, a mapping against a non-mapping)
    the child's value replaces the base's."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_trees(out[key], value)
        else:
            out[key] = value
    return out


def _merge(cfg, other, source: str) -> None:
    try:
        cfg.merge_from_other_cfg(other)
    except (KeyError, ValueError, AssertionError) as exc:
        raise ValueError(f"{source}: {exc} (keys and types are documented in "
                         "configs/defaults.py)") from None
