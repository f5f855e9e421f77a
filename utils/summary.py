"""The test summary, ``summary.json``: what test.py evaluated and the numbers it got.

test.py writes it as its LAST step and only on success. It counts as the result of a checkpoint
only when it names that exact file as it is now and the test config a new test would use
(:meth:`TestSummary.mismatch`: the launcher's "already tested"); the launcher and the bench
scripts read the numbers from it. This module is the one definition of its fields, and it is
torch-free, so readers do not import torch.

Schema (version ``SUMMARY_VERSION`` = 5; every number in percent):

- ``version``: the schema version.
- ``protocol``: ``'image-reid'`` (image queries against an image gallery, the Market-1501
  protocol of ``utils/metrics.py``) or ``'text-to-image'`` (caption queries against the test
  images, DESIGN.md section 3).
- ``metrics``: the headline numbers: ``METRIC_KEYS`` plus ``num_valid`` / ``num_skipped``; over
  several splits (VehicleID trials) the mean, with ``<key>_std`` and ``num_trials``.
- ``split``: the name(s) of the split(s) ``metrics`` comes from.
- ``extra_metrics``: further numbers of the same checkpoint, by name -- another direction
  (``'i2t'``), a query subset (``'t2i-hard'``), a validation split (``'val'``) -- each a
  ``MetricSet`` naming its own split(s) and, where the name does not say it all, the ``source``
  of the split's records (e.g. the annotation's validation split, or the training identities
  held out by DATASETS.VAL_IDS). Empty for image re-ID today.
  A ``MetricSet`` of another dataset than ``dataset`` names it in its own ``dataset`` field
  (cross-domain testing: ``'val'`` is the TRAINING dataset's validation split); None = ``dataset``.
- ``select_on``: the ``extra_metrics`` entry on which a launcher picks the best epoch (a
  validation split); ``None`` = ``metrics`` (the test split: image re-ID datasets have no
  validation split, and the launcher's summary says so).
- ``test_selection_asked``: True when ``select_on`` is None because selection on the test split
  was explicitly asked for (text-to-image with TEST.SELECT_ON 'test', even where a validation
  split exists); False for image re-ID (no validation split) and whenever ``select_on`` is set.
- ``zero_shot``: True for a model evaluated as built from its config, without a checkpoint
  (test.py without TEST.WEIGHT, MODEL.TASK 'tbps': the dual encoder's pretrained towers); then
  ``weight``, ``weight_size``, ``weight_mtime_ns`` and ``epoch`` are None, and the summary is
  never the result of a checkpoint (:meth:`TestSummary.mismatch`).
- the weight file evaluated: ``weight`` (absolute path), ``weight_size`` (bytes) and
  ``weight_mtime_ns`` (``os.stat``'s ``st_mtime_ns``) of the file when test.py read it. Size and
  mtime are the file's fingerprint: every checkpoint write is a new file renamed into place
  (``utils/atomic.py``), so a retrained or replaced checkpoint has a new mtime; hashing the
  content instead would cost about a second per 400 MB checkpoint on every launcher rerun. A
  copy that keeps the mtime (``cp -p``, ``rsync -a``) of the same run still counts; one that does
  not is tested again.
- ``test_config_sha256``: ``utils.provenance.evaluation_fingerprint`` of the config test.py
  evaluated with (``utils.eval_config``): every key that can change the numbers, TEST.* included.
- ``dataset``: the dataset whose test split gave ``metrics``; ``train_dataset``: the dataset the
  checkpoint was trained on (DATASETS.NAMES of its config; None for zero-shot evaluations and in
  files of version < 5, where it is ``dataset``). They differ for cross-domain testing (test.py
  with TEST.DATASET), so a number is never attributed to the training dataset.
- what else was evaluated: ``epoch`` (None for plain weights),
  ``feature``, ``feat_norm``, ``distance``, ``re_ranking``, ``max_rank``,
  ``clip_fusion`` ('on' / 'off' / 'disabled at test'), and ``seconds`` (wall time of the test).
- ``unseen_test_cameras`` / ``unseen_test_views``: test camera / view ids that no training image
  has (their SIE rows were never trained when SIE is on); empty lists when training covers all,
  and in files written before these fields existed (where it is unknown).

- ``cost``: what the result cost (None in files of version < 4, and for plain weights / zero-shot
  where there was no training): ``trainable_params`` / ``total_params`` of the trained model,
  ``s_per_iteration`` / ``s_per_epoch`` (mean over the epochs the training process that wrote the
  checkpoint ran; ``epochs_measured`` says which), ``train_peak_memory_mb`` with
  ``train_peak_memory_kind`` ('cuda max allocated' or 'cpu max rss'), ``device``; and from this
  test, ``s_per_query`` / ``s_per_gallery_image`` (feature extraction time per caption query /
  gallery image for text-to-image, per test image for image re-ID).

Version 4: the same without ``train_dataset`` and ``MetricSet.dataset`` (read as None: every
number of those files is of ``dataset``, cross-domain testing did not exist).
Version 3: the same without ``cost`` (reads as None).
Version 2: the same without ``test_selection_asked``, ``zero_shot`` and ``MetricSet.source``;
they read as False, False and None (no version-2 file was written by a zero-shot or an explicitly
test-selected evaluation: test.py wrote only image re-ID summaries then).
Version 1: the same as version 2 without ``weight_size``, ``weight_mtime_ns`` and ``test_config_sha256``; they
read as None, so such a summary never counts as the result of a checkpoint (it is unknown which
file and config it tested). Version 0 is every summary.json written before this schema existed:
the fields of version 1, flat, without ``version``, ``protocol``, ``extra_metrics`` and
``select_on``. It reads as protocol 'image-reid' with no extra metrics; files from before CLIP
fusion existed have no ``clip_fusion`` and read as 'off' (nothing could be fused then). A version
newer than this code is an error.
"""
from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Dict, List, Optional

from utils.atomic import atomic_write_text
from utils.results import METRIC_KEYS

SUMMARY_FILE = "summary.json"
SUMMARY_VERSION = 5
PROTOCOLS = ("image-reid", "text-to-image")


@dataclass(kw_only=True)
class MetricSet:
    """Numbers of one direction / query subset / split (percent), the split(s) they come from
    and, where the name does not say it all, where the split's records come from (``source``,
    e.g. ``ReIDDataset.val_source``) and which dataset (``dataset``, when not the summary's)."""

    split: List[str]
    metrics: Dict[str, float]
    source: Optional[str] = None
    dataset: Optional[str] = None   # None = the summary's ``dataset``


@dataclass(kw_only=True)
class TestSummary:
    """One test result; see the module docstring for every field.

    Example::

        s = TestSummary.read("run/test/epoch_12/summary.json")
        s.metrics["mAP"], s.epoch, s.split
    """

    __test__ = False  # not a pytest test class despite the name

    version: int = SUMMARY_VERSION
    protocol: str = "image-reid"
    metrics: Dict[str, float]
    weight: Optional[str]
    weight_size: Optional[int]          # None only in files of version < 2
    weight_mtime_ns: Optional[int]      # None only in files of version < 2
    test_config_sha256: Optional[str]   # None only in files of version < 2
    epoch: Optional[int]
    dataset: Optional[str]
    split: List[str]
    feature: Optional[str]
    feat_norm: Optional[bool]
    distance: Optional[str]
    re_ranking: Optional[str]
    max_rank: Optional[int]
    clip_fusion: Optional[str]
    seconds: Optional[float]
    extra_metrics: Dict[str, MetricSet] = field(default_factory=dict)
    select_on: Optional[str] = None
    test_selection_asked: bool = False
    zero_shot: bool = False
    cost: Optional[Dict[str, object]] = None
    unseen_test_cameras: List[int] = field(default_factory=list)
    unseen_test_views: List[int] = field(default_factory=list)
    train_dataset: Optional[str] = None

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"summary protocol {self.protocol!r} is not one of {PROTOCOLS}")
        self.extra_metrics = {k: v if isinstance(v, MetricSet) else MetricSet(**v)
                              for k, v in self.extra_metrics.items()}
        if self.select_on is not None and self.select_on not in self.extra_metrics:
            raise ValueError(f"summary select_on {self.select_on!r} names no extra_metrics entry "
                             f"(has {sorted(self.extra_metrics)})")
        if self.test_selection_asked and self.select_on is not None:
            raise ValueError(f"summary test_selection_asked True but select_on is "
                             f"{self.select_on!r}: selection on test means select_on None")
        if self.zero_shot and (self.weight is not None or self.epoch is not None):
            raise ValueError("a zero-shot summary names no weight file and no epoch (got weight "
                             f"{self.weight!r}, epoch {self.epoch!r})")

    # -- reading the numbers --------------------------------------------------------------------
    def missing_metrics(self) -> List[str]:
        """``METRIC_KEYS`` absent from ``metrics`` (an incomplete result)."""
        return [k for k in METRIC_KEYS if k not in self.metrics]

    def selection_metrics(self) -> Dict[str, float]:
        """The numbers a launcher selects the best epoch on (``select_on``, else ``metrics``)."""
        return self.metrics if self.select_on is None else self.extra_metrics[self.select_on].metrics

    def selection_split(self) -> List[str]:
        """The split(s) of ``selection_metrics``."""
        return self.split if self.select_on is None else self.extra_metrics[self.select_on].split

    def mismatch(self, epoch: int, weight: str, test_config_sha256: str) -> Optional[str]:
        """Why this summary is NOT the result of testing ``weight`` -- the file as it is on disk
        now -- as epoch ``epoch`` with a config of fingerprint ``test_config_sha256``
        (``utils.provenance.evaluation_fingerprint``); None when it is.

        It is when: it is not a zero-shot evaluation, every metric is there, the epoch is
        ``epoch``, ``self.weight`` is the same file path (``os.path.realpath`` of both), its size
        and mtime are the ones recorded, and so is the test config's fingerprint. Summaries of
        version < 2 never are (see the module docstring).
        """
        if self.zero_shot:
            return ("it is a zero-shot evaluation (the model as built from its config, no "
                    "checkpoint)")
        missing = self.missing_metrics()
        if missing:
            return f"it lacks metrics {missing}"
        if self.epoch != epoch:
            return f"it is a result of epoch {self.epoch}, not {epoch}"
        if None in (self.weight, self.weight_size, self.weight_mtime_ns,
                    self.test_config_sha256):
            return ("it does not record the weight file's size and mtime and the test config "
                    "(written before summaries named them)")
        if os.path.realpath(self.weight) != os.path.realpath(weight):
            return f"it is a result of {self.weight}, not {weight}"
        try:
            st = os.stat(weight)
        except FileNotFoundError:
            return f"{weight} does not exist"
        changed = [f"{name} {then} -> {now}" for name, then, now in
                   (("size", self.weight_size, st.st_size),
                    ("mtime_ns", self.weight_mtime_ns, st.st_mtime_ns)) if then != now]
        if changed:
            return f"{weight} changed since it was tested ({', '.join(changed)})"
        if self.test_config_sha256 != test_config_sha256:
            return (f"it was tested with another test config (fingerprint "
                    f"{self.test_config_sha256[:12]}, now {test_config_sha256[:12]})")
        return None

    # -- JSON ------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TestSummary":
        """Parse any version up to ``SUMMARY_VERSION``; errors say what is wrong with the text."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a summary is a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> "TestSummary":
        version = data.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError(f"summary version {version!r} is not a version number")
        if version > SUMMARY_VERSION:
            raise ValueError(f"summary version {version} is newer than this code reads (up to "
                             f"{SUMMARY_VERSION}): update PhaseReID to read it")
        if version == 0:
            data = _from_version_0(data)
        if data.get("version", 0) == 1:
            data = dict(data, **{k: None for k in _NEW_IN_VERSION_2}, version=SUMMARY_VERSION)
        if data.get("version") in (2, 3, 4):   # the fields new in versions 3-5: defaults
            data = dict(data, version=SUMMARY_VERSION)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"summary (version {version}) has unknown fields {unknown}")
        required = [f.name for f in fields(cls)
                    if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"summary (version {version}) lacks fields {missing}")
        return cls(**data)

    @classmethod
    def read(cls, path: str) -> "TestSummary":
        with open(path) as f:
            text = f.read()
        try:
            return cls.from_json(text)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def write(self, path: str) -> None:
        """Atomic write (a crash never leaves a half-written summary.json)."""
        atomic_write_text(path, self.to_json())


def weight_fields(path: str) -> Dict[str, object]:
    """``weight``, ``weight_size`` and ``weight_mtime_ns`` of the weight file at ``path`` (test.py
    reads them before it loads the file, so they describe the file it evaluated)."""
    st = os.stat(path)
    return {"weight": os.path.abspath(path), "weight_size": st.st_size,
            "weight_mtime_ns": st.st_mtime_ns}


_NEW_IN_VERSION_2 = ("weight_size", "weight_mtime_ns", "test_config_sha256")
# the fields of the flat summary.json written before the schema (test.py's dict literal)
_VERSION_0_FIELDS = ("metrics", "weight", "epoch", "dataset", "split", "feature", "feat_norm",
                     "distance", "re_ranking", "max_rank", "clip_fusion", "seconds")


def _from_version_0(data: dict) -> dict:
    """Version 0 -> version 1 fields (see the module docstring)."""
    unknown = sorted(set(data) - set(_VERSION_0_FIELDS))
    if unknown:
        raise ValueError(f"summary without a version has unknown fields {unknown}")
    missing = [k for k in ("metrics", "epoch", "split") if k not in data]
    if missing:
        raise ValueError(f"summary without a version lacks fields {missing}")
    out = {k: data.get(k) for k in _VERSION_0_FIELDS}
    if "clip_fusion" not in data:
        out["clip_fusion"] = "off"
    out.update(version=1, protocol="image-reid")
    return out
