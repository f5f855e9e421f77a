"""Config loading: defaults <- YAML recipe <- command-line KEY VALUE pairs."""
from __future__ import annotations

import os
from typing import Optional, Sequence

from .defaults import get_cfg_defaults


def load_config(config_file: Optional[str] = None, opts: Sequence[str] = (),
                config_text: Optional[str] = None, freeze: bool = True):
    """Merge a YAML recipe (a file, or a YAML string such as a checkpoint's stored config) and
    KEY VALUE overrides into the defaults; errors name the file or key at fault."""
    cfg = get_cfg_defaults()
    if config_text is not None:
        other = cfg.load_cfg(config_text)
        _merge(cfg, other, "the checkpoint's stored config")
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        with open(config_file) as f:
            other = cfg.load_cfg(f)
        _merge(cfg, other, config_file)
    if len(opts) % 2:
        raise ValueError(f"overrides must be KEY VALUE pairs, got an odd number: {list(opts)}")
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as exc:
        raise ValueError(f"bad command-line override: {exc}") from None
    if freeze:
        cfg.freeze()
    return cfg


def _merge(cfg, other, source: str) -> None:
    try:
        cfg.merge_from_other_cfg(other)
    except (KeyError, ValueError, AssertionError) as exc:
        raise ValueError(f"{source}: {exc} (keys and types are documented in "
                         "configs/defaults.py)") from None
