"""Weight I/O: one reader, one unwrap, one load report, one position-embedding resize.

Where weight loading lives (two modules, split by what they import):

- ``utils/weights_io.py`` (this module; imports only torch, and timm / safetensors / open_clip
  lazily when a source needs them): turning a weight source into tensors -- :func:`read_weights`
  and :func:`unwrap` -- plus the :class:`LoadReport` every loader returns and
  :func:`resize_pos_embed`. ``utils/checkpoint.load_checkpoint`` reads checkpoints through it.
- ``model/weights.py``: putting tensors into PhaseReID models (test.py's checkpoint load,
  MODEL.PRETRAIN_CHOICE 'self', plain TransReID files) and the training-only prefixes. The
  key mapping of each architecture stays with it (``model/backbones/vit_weights.py``,
  ``ResNet50Backbone.load_pretrained``, ``model/text_encoder.py``, ``model/clip_fusion.py``).

Sources of :func:`read_weights`:

- a mapping (already in memory): returned as it is;
- ``'timm:<model_name>'``: ``timm.create_model(name, pretrained=True).state_dict()`` (a download);
- :class:`OpenClipPretrained` ``(model_name, tag)``: the state dict of
  ``open_clip.create_model(model_name, pretrained=tag)`` (a download);
- a ``.safetensors`` file (needs the safetensors package);
- an OpenAI TorchScript archive (OpenAI's released CLIP ``.pt`` files), only where the caller
  allows it (``allow_torchscript``, opt-in by a config key such as
  MODEL.TEXT.ALLOW_TORCHSCRIPT, and logged: torch.jit.load runs code from the archive):
  ``torch.jit.load(...).state_dict()``;
- a text file (a YAML config passed as a weight, ...): an error that says what it is;
- any other file: ``torch.load(..., map_location='cpu', weights_only=True)``. Only tensors and
  plain Python values unpickle, so opening a downloaded file never runs code; a file that needs
  more is an error in our words (never torch's advice to retry without ``weights_only``, which
  would run the file's code). A JAX ``.npz`` is an error that says how to convert it.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from utils.packages import import_open_clip

StateDict = Dict[str, torch.Tensor]
logger = logging.getLogger("phasereid")


class OpenClipPretrained(NamedTuple):
    """An open_clip pretrained weight set: architecture name and pretrained tag (e.g.
    ``OpenClipPretrained('ViT-B-16', 'openai')``)."""
    model_name: str
    tag: str


Source = Union[str, os.PathLike, Mapping[str, object], OpenClipPretrained]

#: reason given for source keys the model has no place for
UNKNOWN_KEY = "not a parameter of this model"
#: reason given for tensors skipped because their shape differs from the model's
SHAPE_MISMATCH = "shape mismatch"
_WRAPPERS = ("model", "state_dict")
_DDP_PREFIX = "module."


class WeightFileError(RuntimeError):
    """A weight file exists but cannot be read as weights.

    Attributes:
        path: the file. reason: what is wrong with it. key: the config key naming it ('' if none).
    """

    def __init__(self, path: str, reason: str, key: str = ""):
        self.path, self.reason, self.key = path, reason, key
        super().__init__(f"{key + ': ' if key else ''}cannot read weight file {path}: {reason}")


# ---------------------------------------------------------------------------- reading
def read_weights(source: Source, key: str = "", allow_torchscript: bool = False,
                 mmap: bool = False, torchscript_key: str = "") -> Tuple[object, str]:
    """Read a weight source (see the module docstring) into a (possibly wrapped) object.

    Args:
        source: a file path, ``'timm:<model_name>'``, an :class:`OpenClipPretrained` or a mapping.
        key: the config key that names the source (e.g. 'MODEL.PRETRAIN_PATH'), for messages.
        allow_torchscript: read OpenAI TorchScript archives (torch.jit.load, which runs code
            from the archive; logged) instead of refusing them.
        torchscript_key: the config key that sets ``allow_torchscript`` (named in the refusal).
        mmap: memory-map a torch file instead of reading it whole (e.g. to read one field of a
            large resume.pth).

    Returns:
        (the object read -- usually a dict, for :func:`unwrap` --, a description of the source).

    Raises:
        FileNotFoundError: the path does not exist.
        WeightFileError: the file cannot be read (corrupt, not weights-only, a refused TorchScript
            archive, a JAX .npz).
        ImportError: a .safetensors file without the safetensors package.
        RuntimeError: a timm / open_clip pretrained model could not be created (e.g. offline).

    Example:
        >>> obj, description = read_weights("pretrained/vit_base.pth", key="MODEL.PRETRAIN_PATH")
        >>> state = unwrap(obj)
    """
    if isinstance(source, OpenClipPretrained):
        return _open_clip_state_dict(source, key), \
            f"open_clip '{source.model_name}' / '{source.tag}'"
    if isinstance(source, Mapping):
        return source, "<state dict>"
    path = os.fspath(source)
    if path.startswith("timm:"):
        return _timm_state_dict(path[len("timm:"):], key), path
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weight file '{path}' does not exist; set {key or 'the weight path'} to a downloaded "
            f"weight file (or 'timm:<model name>' to fetch it from the timm hub)")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ImportError(f"reading {path} needs the safetensors package: pip install "
                              "safetensors") from exc
        return load_file(path, device="cpu"), path
    if path.endswith(".npz"):
        raise WeightFileError(path, "it is a JAX .npz checkpoint; load it with timm "
                              "(timm.create_model(..., pretrained_cfg_overlay=dict(file=...))), "
                              "save model.state_dict() with torch.save and use that file", key)
    if is_torchscript_archive(path):
        if not allow_torchscript:
            opt_in = (f", or set {torchscript_key} True to read it with torch.jit.load (which "
                      "runs code from the archive)") if torchscript_key else ""
            raise WeightFileError(path, "it is a TorchScript archive (torch.jit.save); save its "
                                  "state dict with torch.save(torch.jit.load(path)"
                                  f".state_dict(), 'weights.pth') and use that file{opt_in}", key)
        logger.warning("%s: reading TorchScript archive %s with torch.jit.load (opted in%s)",
                       key or "weights", path, f" by {torchscript_key}" if torchscript_key else "")
        try:
            return torch.jit.load(path, map_location="cpu").state_dict(), path
        except Exception as exc:  # a damaged archive
            raise WeightFileError(path, str(exc), key) from exc
    text_kind = text_file_kind(path)
    if text_kind:
        raise WeightFileError(path, f"{path} is a text file ({text_kind}), not a weight file; "
                              "give a .pth / .safetensors weight file (a PhaseReID checkpoint "
                              "is transformer_<epoch>.pth)", key)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap), path
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc) and "Weights only" not in str(exc):
            raise WeightFileError(path, _own_words(exc), key) from exc
        raise WeightFileError(
            path, "it holds Python objects other than tensors and plain values, and weight files "
            "are read with torch.load(..., weights_only=True) so that opening one never runs "
            f"code{_unsupported_global(exc)}. Only a file holding just tensors and plain values "
            "(a state dict) can be used; ask its author for one", key) from None
    except Exception as exc:  # truncated / corrupt file, not a torch file at all
        raise WeightFileError(path, _own_words(exc), key) from exc


def _unsupported_global(exc: BaseException) -> str:
    """' (it needs <the global torch refused>)' from torch's weights_only error, else ''."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return f" (it needs {match.group(1)})" if match else ""


def _own_words(exc: BaseException) -> str:
    """torch's message without its advice to load with weights_only=False (which would run the
    file's code): the first line only, or our own words when that line is the advice."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "weights_only" in first or "Weights only" in first:
        return "it is not a weights-only torch file (truncated, corrupt or another format)"
    return first


def text_file_kind(path: str, probe: int = 4096) -> str:
    """'YAML' / 'JSON' / 'plain text' when the file's first ``probe`` bytes are text (UTF-8, no
    NUL byte: torch, zip and safetensors files always have one early), '' for a binary file."""
    with open(path, "rb") as f:
        head = f.read(probe)
    if not head or b"\0" in head:
        return ""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:   # a multi-byte character cut at the probe's end is still text
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return ""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return "JSON"
    if re.match(r"^(---|%YAML|[A-Za-z_][\w.-]*\s*:)", stripped):
        return "YAML"
    return "plain text"


def is_torchscript_archive(path: str) -> bool:
    """True for a torch.jit.save archive (a zip holding ``<root>/constants.pkl``; torch.save
    archives have none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/", 1)[-1] == "constants.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):  # not a zip (or a damaged one): torch.load says why
        return False


def _timm_state_dict(model_name: str, key: str) -> StateDict:
    import timm
    try:
        model = timm.create_model(model_name, pretrained=True)
    except Exception as err:  # network, hub or unknown-name errors all end here
        raise RuntimeError(
            f"could not create timm model '{model_name}' with pretrained weights ({err}). "
            f"Download the weights on a machine with internet access (e.g. "
            f"torch.save(timm.create_model('{model_name}', pretrained=True).state_dict(), "
            f"'{model_name}.pth')) and set {key or 'the weight path'} to that file") from err
    return model.state_dict()


def _open_clip_state_dict(source: OpenClipPretrained, key: str) -> StateDict:
    open_clip = import_open_clip(f"{key or 'an open_clip pretrained tag'}")
    try:
        model = open_clip.create_model(source.model_name, pretrained=source.tag)
    except Exception as exc:  # network, hub or unknown-tag errors all end here
        name, tag = source.model_name, source.tag
        raise RuntimeError(
            f"{key or 'open_clip pretrained tag'} '{tag}' of '{name}' could not be loaded "
            f"({exc}); without internet, give a local weight file path instead: on a machine "
            "with internet run python -c \"import open_clip, torch; torch.save(open_clip."
            f"create_model('{name}', pretrained='{tag}').state_dict(), '{name}_{tag}.pth')\" "
            f"and set {key or 'the weight key'} to that file") from exc
    return model.state_dict()


def load_fitting(module: torch.nn.Module, state: StateDict, report: "LoadReport", what: str,
                 strict: bool = True, skip: Optional[Callable[[str], Optional[str]]] = None,
                 refit: Optional[Callable[[str, torch.Tensor, torch.Tensor],
                                          Optional[torch.Tensor]]] = None) -> "LoadReport":
    """Load the tensors of ``state`` that fit ``module``, key by key, and fill ``report``.

    A source key ``skip(key)`` names a reason for (e.g. an ImageNet classifier the module has no
    place for) is reported as skipped; a key the module lacks is unexpected; a tensor of another
    shape is given to ``refit(key, value, target)``, which returns a tensor that fits (and notes
    what it did in ``report``) or None, else it is skipped as a shape mismatch. Module keys that
    got nothing are missing. With ``strict``, any unexpected, mismatched or missing key is a
    ``ValueError`` naming ``what`` and the first 20 problems; the load happens only after that
    check. Returns ``report``.
    """
    target = module.state_dict()
    out: StateDict = {}
    problems = []
    for key, value in state.items():
        reason = skip(key) if skip is not None and key not in target else None
        if reason:
            report.skipped.append((key, reason))
        elif key not in target:
            report.unexpected.append((key, UNKNOWN_KEY))
            problems.append(f"unknown key {key}")
        elif value.shape != target[key].shape:
            fitted = refit(key, value, target[key]) if refit is not None else None
            if fitted is not None:
                out[key] = fitted
                continue
            report.skipped.append((key, SHAPE_MISMATCH))
            problems.append(f"{key}: weights {tuple(value.shape)} vs model "
                            f"{tuple(target[key].shape)}")
        else:
            out[key] = value
    report.loaded = [k for k in target if k in out]
    report.missing = [k for k in target if k not in out]
    problems += [f"missing {k}" for k in report.missing]
    if strict and problems:
        raise ValueError(f"weights do not fit {what} (strict load):\n{report}\n  "
                         + "\n  ".join(problems[:20]))
    module.load_state_dict(out, strict=False)
    return report


def unwrap(obj: object, report: Optional["LoadReport"] = None, key: str = "") -> StateDict:
    """The state dict inside a loaded weight object.

    'model' / 'state_dict' containers are unwrapped (nested in either order: PhaseReID and
    TransReID checkpoints use 'model', open_clip and many training scripts 'state_dict'),
    non-tensor entries are dropped and a DDP 'module.' prefix is stripped. With a ``report``,
    each step is noted there (non-tensors as skipped).

    Raises:
        WeightFileError: ``obj`` is not a mapping.
    """
    source = report.source if report is not None else "<weights>"
    if not isinstance(obj, Mapping):
        raise WeightFileError(source, f"it does not hold a state dict (a mapping of names to "
                              f"tensors) but a {type(obj).__name__}", key)
    state = obj
    while True:
        wrapper = next((w for w in _WRAPPERS if isinstance(state.get(w), Mapping)), None)
        if wrapper is None:
            break
        if report is not None:
            report.notes.append(f"unwrapped '{wrapper}'")
        state = state[wrapper]
    out: StateDict = {}
    stripped = 0
    for name, value in state.items():
        if not torch.is_tensor(value):
            if report is not None:
                report.skipped.append((name, "not a tensor"))
            continue
        if name.startswith(_DDP_PREFIX):
            name, stripped = name[len(_DDP_PREFIX):], stripped + 1
        out[name] = value
    if stripped and report is not None:
        report.notes.append(f"stripped the 'module.' prefix from {stripped} keys")
    return out


# ---------------------------------------------------------------------------- position embeddings
def resize_pos_embed(pos: torch.Tensor, src_grid: Sequence[int], dst_grid: Sequence[int],
                     num_prefix: int = 1, keep_prefix: Optional[int] = None, *,
                     mode: str) -> torch.Tensor:
    """Resize the patch-grid part of a ViT position embedding.

    The rows are ``num_prefix`` prefix positions (CLS, a distillation token) followed by the grid
    in row-major (h, w) order. The first ``keep_prefix`` prefix rows are kept as they are, the
    others dropped; the grid is resized with ``F.interpolate(mode=mode, align_corners=False)``
    in float32 (no antialiasing) and cast back to the input's dtype.

    The two conventions in use: the TransReID ViT (timm / DeiT / TransReID weights) keeps the CLS
    position only and resizes bilinearly, as TransReID's ``resize_pos_embed``; CLIP towers keep
    every prefix row and resize bicubically, as HF's ``interpolate_pos_encoding``.

    Args:
        pos: (num_prefix + gh * gw, C), or (1, num_prefix + gh * gw, C) as a timm ``pos_embed``.
        src_grid, dst_grid: (gh, gw) before and after.
        num_prefix: prefix rows in ``pos``.
        keep_prefix: prefix rows kept (default: all).
        mode: the interpolation mode ('bilinear', 'bicubic').

    Returns:
        (keep_prefix + gh' * gw', C) with the input's leading batch dimension, if any; ``pos``
        itself when the grids are equal and every prefix row is kept.

    Raises:
        ValueError: ``pos`` does not hold ``num_prefix`` rows + a ``src_grid`` grid.

    Example:
        >>> new = resize_pos_embed(visual.positional_embedding, (14, 14), (16, 8), mode="bicubic")
    """
    src_grid, dst_grid = tuple(src_grid), tuple(dst_grid)
    keep = num_prefix if keep_prefix is None else keep_prefix
    batched = pos.ndim == 3
    rows = pos[0] if batched else pos
    if (pos.ndim not in (2, 3) or (batched and pos.shape[0] != 1)
            or rows.shape[0] != num_prefix + src_grid[0] * src_grid[1]
            or not 0 <= keep <= num_prefix):
        raise ValueError(f"position embedding of shape {tuple(pos.shape)} does not hold "
                         f"{num_prefix} prefix rows + a {src_grid} grid")
    if src_grid == dst_grid and keep == num_prefix:
        return pos
    prefix, grid = rows[:keep], rows[num_prefix:]
    if src_grid != dst_grid:
        dim = grid.shape[-1]
        grid = grid.float().reshape(1, src_grid[0], src_grid[1], dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=dst_grid, mode=mode, align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(dst_grid[0] * dst_grid[1], dim).to(pos.dtype)
    out = torch.cat([prefix, grid], dim=0)
    return out.unsqueeze(0) if batched else out


# ---------------------------------------------------------------------------- the report
@dataclass
class ResizedKey:
    """A tensor whose shape was changed to fit the model."""
    key: str
    from_shape: Tuple[int, ...]
    to_shape: Tuple[int, ...]
    note: str


@dataclass
class LoadReport:
    """What a weight load did. ``str(report)`` is a readable multi-line summary for the log.

    Attributes:
        source: file path, 'timm:<name>' or '<state dict>'.
        source_format: 'timm ViT/DeiT', 'TransReID', 'PhaseReID', 'timm/torchvision ResNet-50',
            'PhaseReID checkpoint'.
        loaded: model keys that received a tensor.
        remapped: (source key, model key, why) for renamed / reshaped tensors.
        resized: ``ResizedKey`` entries (pos_embed grid resize, distillation position dropped).
        copied: (model key, copied from, why), e.g. JPM b2 from the last block.
        skipped: (source key, why) for tensors deliberately not loaded (classifier, dist token,
            ``SHAPE_MISMATCH`` in a non-strict load...).
        missing: model keys that got no tensor and are not expected to be new.
        initialised: model keys absent from the source by design (e.g. the SIE table), kept at init.
        unexpected: (source key, why) for tensors the model has no place for.
        left_for_caller: source keys outside the backbone (re-ID heads) for the caller to load.
        notes: unwrapping / detection remarks.
    """
    source: str = "<state dict>"
    source_format: str = ""
    loaded: List[str] = field(default_factory=list)
    remapped: List[Tuple[str, str, str]] = field(default_factory=list)
    resized: List[ResizedKey] = field(default_factory=list)
    copied: List[Tuple[str, str, str]] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    initialised: List[Tuple[str, str]] = field(default_factory=list)
    unexpected: List[Tuple[str, str]] = field(default_factory=list)
    left_for_caller: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def skipped_keys(self) -> List[str]:
        return [k for k, _ in self.skipped]

    def unexpected_keys(self) -> List[str]:
        return [k for k, _ in self.unexpected]

    @property
    def mismatched(self) -> List[str]:
        """Source keys skipped because their shape differs from the model's."""
        return [k for k, why in self.skipped if why == SHAPE_MISMATCH]

    def __str__(self) -> str:
        lines = [f"Weight load report: {self.source} ({self.source_format or 'unknown format'})",
                 f"  loaded: {len(self.loaded)} tensors"]
        lines += [f"  note: {n}" for n in self.notes]
        if self.remapped:
            lines.append(f"  remapped ({len(self.remapped)}):")
            lines += _grouped_pairs(self.remapped, "->")
        if self.resized:
            lines.append(f"  resized ({len(self.resized)}):")
            lines += [f"    {r.key}: {r.from_shape} -> {r.to_shape} ({r.note})"
                      for r in self.resized]
        if self.copied:
            lines.append(f"  copied ({len(self.copied)}):")
            lines += _grouped_pairs(self.copied, "<-")
        for title, items in (("skipped", self.skipped), ("kept at init", self.initialised),
                             ("unexpected", self.unexpected)):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines += _grouped(items)
        lines.append(f"  missing ({len(self.missing)}): {_short(_collapse(self.missing)) or '-'}")
        if self.left_for_caller:
            lines.append(f"  left for the caller ({len(self.left_for_caller)}, not backbone "
                         f"keys): {_short(_collapse(self.left_for_caller))}")
        return "\n".join(lines)


_GROUP_RE = re.compile(r"^((?:base\.)?blocks\.\d+|b[12]\.\d+)\.")


def _collapse(keys: Sequence[str]) -> List[str]:
    """Collapse per-block keys into 'blocks.{i}.* (n)' entries, keeping order."""
    counts: Dict[str, int] = {}
    for key in keys:
        match = _GROUP_RE.match(key)
        label = f"{match.group(1)}.*" if match else key
        counts[label] = counts.get(label, 0) + 1
    return [f"{label} ({n})" if n > 1 else label for label, n in counts.items()]


def _collapse_pairs(pairs: Sequence[Tuple[str, str]], arrow: str) -> List[str]:
    """'dst.* <- src.* (n)' for key pairs that differ only in their leading components."""
    counts: Dict[str, int] = {}
    for first, second in pairs:
        a, b = first.split("."), second.split(".")
        common = 0
        while common < min(len(a), len(b)) - 1 and a[-1 - common] == b[-1 - common]:
            common += 1
        if common == 0 or first == second:
            label = first if first == second else f"{first} {arrow} {second}"
        else:
            label = f"{'.'.join(a[:-common])}.* {arrow} {'.'.join(b[:-common])}.*"
        counts[label] = counts.get(label, 0) + 1
    return [f"{label} ({n})" if n > 1 else label for label, n in counts.items()]


def _short(entries: Sequence[str], limit: int = 8) -> str:
    entries = list(entries)
    more = f", ... (+{len(entries) - limit} more)" if len(entries) > limit else ""
    return ", ".join(entries[:limit]) + more


def _grouped(items: Sequence[Tuple[str, str]]) -> List[str]:
    """One line per reason, listing its (collapsed) keys."""
    by_reason: Dict[str, List[str]] = {}
    for key, reason in items:
        by_reason.setdefault(reason, []).append(key)
    return [f"    {reason}: {_short(_collapse(keys))}" for reason, keys in by_reason.items()]


def _grouped_pairs(items: Sequence[Tuple[str, str, str]], arrow: str) -> List[str]:
    by_reason: Dict[str, List[Tuple[str, str]]] = {}
    for first, second, reason in items:
        by_reason.setdefault(reason, []).append((first, second))
    return [f"    {reason}: {_short(_collapse_pairs(pairs, arrow))}"
            for reason, pairs in by_reason.items()]
