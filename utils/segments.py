"""Training segments of one OUTPUT_DIR: may resume.pth be continued under this config?

resume.pth stores the resolved config it was trained with. Rerunning train.py:

- no resume.pth: a new run (segment 1).
- the training keys (utils/provenance.py) equal the stored ones: resume, same segment.
- only extension keys changed (SOLVER.MAX_EPOCHS raised): resume only with ``--allow-extend``;
  a new segment starts and is recorded.
- anything else, or a resume.pth without a stored config (written before configs were stored):
  :class:`ResumeRefused`, naming the differing keys and how to proceed. :func:`plan_segment`
  raises it before anything is written.

The record: ``config.yaml`` is the first segment's config and is never rewritten while the run
lives; ``history.json`` lists the segments, ``{"segment", "first_epoch", "last_epoch",
"config_sha256", "config_file", "changed_keys", "command", "code"}`` (``last_epoch`` is the segment's
MAX_EPOCHS until a later segment starts, then the last epoch it completed; ``config_sha256`` is
:func:`utils.provenance.config_fingerprint`; ``changed_keys`` {key: [old, new]} against the
previous segment; ``code`` is :func:`utils.provenance.code_version`, the commit and whether the
tracked files differed from it). A plain resume of a segment appends ``{"from_epoch", "code"}``
to that segment's ``resumes``, so a run continued under other code says so. Later segments'
configs are ``config_history/segment_<k>.yaml``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import List, Optional

from utils.provenance import (EXTENSION_KEYS, ConfigComparison, code_version, compare_configs,
                              config_fingerprint)

HISTORY_FILE = "history.json"
CONFIG_FILE = "config.yaml"
HISTORY_DIR = "config_history"
ALLOW_FLAG = "--allow-extend"


class ResumeRefused(ValueError):
    """resume.pth in OUTPUT_DIR cannot be continued under the given config."""


@dataclass
class Segment:
    """What train.py does with OUTPUT_DIR: ``kind`` 'new', 'resume' or 'extend'."""

    kind: str
    comparison: Optional[ConfigComparison] = None
    resume_epoch: int = 0
    stored_config: Optional[str] = None   # None for a new run or a resume.pth without one
    notes: List[str] = field(default_factory=list)


def _how_to_proceed(output_dir: str) -> str:
    return (f"To train with this config, use another OUTPUT_DIR, or delete "
            f"{os.path.join(output_dir, 'resume.pth')} to start this folder over (its "
            "checkpoints and history are then replaced).")


def plan_segment(cfg, resume: Optional[dict], allow_extend: bool) -> Segment:
    """Decide how to continue OUTPUT_DIR (see the module docstring); raises ResumeRefused.

    Args:
        cfg: the new resolved config.
        resume: the loaded resume.pth (None when there is none).
        allow_extend: train.py's ``--allow-extend``.
    """
    if resume is None:
        return Segment("new")
    out, epoch = cfg.OUTPUT_DIR, int(resume["epoch"])
    stored = resume.get("config")
    if stored is None:
        if not allow_extend:
            raise ResumeRefused(
                f"{os.path.join(out, 'resume.pth')} (after epoch {epoch}) does not record the "
                "config it was trained with (it was written before resume files stored their "
                "config), so it is unknown whether continuing it with this config is the same "
                f"run. If it is, rerun with {ALLOW_FLAG}: history.json then records epochs "
                f"1..{epoch} as trained with an unknown config. " + _how_to_proceed(out))
        return Segment("extend", None, epoch, None,
                       [f"epochs 1..{epoch} were trained with a config resume.pth does not "
                        "record; history.json marks them unknown"])
    cmp = compare_configs(stored, cfg)
    if cmp.kind == "identical":
        return Segment("resume", cmp, epoch, stored)
    if cmp.kind == "extension":
        why = "; ".join(EXTENSION_KEYS[k] for k in cmp.changed)
        if not allow_extend:
            raise ResumeRefused(
                f"{os.path.join(out, 'resume.pth')} (after epoch {epoch}) was trained with a "
                f"config that differs in extension keys only:\n{cmp.describe()}\n"
                f"Continuing it is not the run this config describes: {why}. Rerun with "
                f"{ALLOW_FLAG} to continue it anyway (history.json records both segments). "
                + _how_to_proceed(out))
        return Segment("extend", cmp, epoch, stored,
                       [f"The result differs from a run started with this config: {why}."])
    raise ResumeRefused(
        f"{os.path.join(out, 'resume.pth')} (after epoch {epoch}) was trained with another "
        f"config; the keys that differ (resume.pth -> now):\n{cmp.describe()}\n"
        + _how_to_proceed(out))


def read_history(output_dir: str) -> Optional[dict]:
    """history.json of ``output_dir``, or None."""
    path = os.path.join(output_dir, HISTORY_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _entry(k: int, first: int, last: int, config: Optional[str], config_file: Optional[str],
           changed: dict, command: str, known_code: bool = True) -> dict:
    return {"segment": k, "first_epoch": first, "last_epoch": last,
            "config_sha256": config_fingerprint(config) if config is not None else None,
            "config_file": config_file, "changed_keys": changed, "command": command,
            "code": code_version() if known_code else None}


def record_segment(cfg, segment: Segment, command: str, write_text) -> List[str]:
    """Write config.yaml / history.json / config_history/ for ``segment`` (rank 0, after
    :func:`plan_segment` accepted it); returns the paths written.

    ``write_text(path, text)`` writes a file atomically (utils.atomic.atomic_write_text).
    """
    out = cfg.OUTPUT_DIR
    config_path = os.path.join(out, CONFIG_FILE)
    history_path = os.path.join(out, HISTORY_FILE)
    max_epochs = int(cfg.SOLVER.MAX_EPOCHS)
    text = cfg.dump()
    written = []
    if segment.kind == "new":
        write_text(config_path, text)
        history = {"segments": [_entry(1, 1, max_epochs, text, CONFIG_FILE, {}, command)]}
        write_text(history_path, json.dumps(history, indent=2))
        return [config_path, history_path]
    history = read_history(out)
    if history is None:   # a run started before history.json existed: its first segment
        known = segment.stored_config is not None and os.path.isfile(config_path)
        history = {"segments": [_entry(1, 1, segment.resume_epoch, segment.stored_config,
                                       CONFIG_FILE if known else None, {}, "",
                                       known_code=False)]}
        written.append(history_path)
    if segment.kind == "resume":
        if not os.path.isfile(config_path):
            write_text(config_path, text)
            written.append(config_path)
        history["segments"][-1].setdefault("resumes", []).append(
            {"from_epoch": segment.resume_epoch + 1, "code": code_version()})
        write_text(history_path, json.dumps(history, indent=2))
        return written + [history_path]
    segments = history["segments"]
    segments[-1]["last_epoch"] = segment.resume_epoch
    k = segments[-1]["segment"] + 1
    rel = os.path.join(HISTORY_DIR, f"segment_{k}.yaml")
    write_text(os.path.join(out, rel), text)
    changed = ({key: [old, new] for key, (old, new) in segment.comparison.changed.items()}
               if segment.comparison is not None else "unknown")
    segments.append(_entry(k, segment.resume_epoch + 1, max_epochs, text, rel, changed, command))
    write_text(history_path, json.dumps(history, indent=2))
    return [os.path.join(out, rel), history_path]
