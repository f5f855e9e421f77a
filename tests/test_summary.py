"""The typed test summary (utils/summary.py): round trip, summaries written before the schema,
newer versions, room for a second protocol, and a torch-free import."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from utils.results import METRIC_KEYS
from utils.summary import SUMMARY_VERSION, MetricSet, TestSummary

# summary.json exactly as test.py wrote it before the schema (its dict literal, json.dumps
# indent=2): no version, flat fields
OLD_SUMMARY = """{
  "metrics": {
    "R1": 43.75,
    "R5": 81.25,
    "R10": 93.75,
    "mAP": 38.41263927045119,
    "mINP": 17.220643939393938,
    "num_valid": 16,
    "num_skipped": 0
  },
  "weight": "/tmp/launcher/logs/tiny_yaml-o1b2c3d4_e2_seed0/train/transformer_2.pth",
  "epoch": 2,
  "dataset": "synth",
  "split": [
    "test"
  ],
  "feature": "after BNNeck",
  "feat_norm": false,
  "distance": "euclidean",
  "re_ranking": "none",
  "max_rank": 50,
  "clip_fusion": "off",
  "seconds": 1.83
}"""


def new_summary(**changes):
    fields = dict(metrics={"R1": 50.0, "R5": 75.0, "R10": float("nan"), "mAP": 41.5,
                           "mINP": 20.25, "num_valid": 12, "num_skipped": 1},
                  weight="/runs/a/transformer_3.pth", epoch=3, dataset="synth", split=["test"],
                  feature="before BNNeck + JPM parts", feat_norm=True, distance="euclidean",
                  re_ranking="k-reciprocal(k1=20,k2=6,lambda=0.3)", max_rank=50,
                  clip_fusion="on", seconds=2.5)
    fields.update(changes)
    return TestSummary(**fields)


def test_round_trip_keeps_every_field(tmp_path):
    s = new_summary()
    again = TestSummary.from_json(s.to_json())
    assert again.version == SUMMARY_VERSION == 1 and again.protocol == "image-reid"
    assert again.re_ranking == s.re_ranking and again.split == ["test"] and again.epoch == 3
    assert again.metrics["mAP"] == 41.5 and again.metrics["R10"] != again.metrics["R10"]  # NaN
    path = str(tmp_path / "summary.json")
    s.write(path)
    assert os.listdir(tmp_path) == ["summary.json"]  # atomic: no temp file left
    assert TestSummary.read(path).to_json() == s.to_json()
    # the fields test.py wrote before stay top-level keys of the file, with the same values
    data = json.loads(open(path).read())
    for key in json.loads(OLD_SUMMARY):
        assert key in data
    assert data["feature"] == s.feature and data["metrics"]["R1"] == 50.0


def test_a_summary_written_before_the_schema_reads_as_version_0():
    s = TestSummary.from_json(OLD_SUMMARY)
    assert s.version == 1 and s.protocol == "image-reid" and s.extra_metrics == {}
    assert s.select_on is None and s.selection_metrics() is s.metrics
    assert s.epoch == 2 and s.split == ["test"] and s.feat_norm is False
    assert s.feature == "after BNNeck" and s.clip_fusion == "off" and s.seconds == 1.83
    assert s.metrics["mAP"] == pytest.approx(38.41263927045119) and not s.missing_metrics()
    # written back, it is a version-1 file holding the same information
    back = json.loads(s.to_json())
    old = json.loads(OLD_SUMMARY)
    assert back["version"] == 1 and {k: back[k] for k in old} == old
    # before CLIP fusion existed test.py wrote no 'clip_fusion': nothing was fused
    older = json.loads(OLD_SUMMARY)
    del older["clip_fusion"]
    assert TestSummary.from_json(json.dumps(older)).clip_fusion == "off"


def test_unknown_versions_and_broken_files_are_clear_errors(tmp_path):
    data = json.loads(new_summary().to_json())
    data["version"] = SUMMARY_VERSION + 1
    with pytest.raises(ValueError, match="version 2 is newer than this code reads"):
        TestSummary.from_json(json.dumps(data))
    data["version"] = "1"
    with pytest.raises(ValueError, match="not a version number"):
        TestSummary.from_json(json.dumps(data))
    data = json.loads(new_summary().to_json())
    del data["epoch"]
    with pytest.raises(ValueError, match=r"lacks fields \['epoch'\]"):
        TestSummary.from_json(json.dumps(data))
    data = json.loads(OLD_SUMMARY)
    data["surprise"] = 1
    with pytest.raises(ValueError, match="unknown fields"):
        TestSummary.from_json(json.dumps(data))
    path = tmp_path / "summary.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"{path}: a summary is a JSON object"):
        TestSummary.read(str(path))
    incomplete = new_summary(metrics={"R1": 1.0})
    assert incomplete.missing_metrics() == [k for k in METRIC_KEYS if k != "R1"]


def test_a_second_protocol_fits_with_directions_subsets_and_a_selection_split():
    val = {"R1": 60.0, "R5": 80.0, "R10": 90.0, "mAP": 55.0, "mINP": 30.0}
    s = new_summary(protocol="text-to-image", split=["test"],
                    extra_metrics={"i2t": MetricSet(split=["test"], metrics=dict(val, R1=61.0)),
                                   "val": {"split": ["val"], "metrics": val}},
                    select_on="val")
    again = TestSummary.from_json(s.to_json())
    assert again.protocol == "text-to-image"
    assert again.extra_metrics["val"] == MetricSet(split=["val"], metrics=val)
    assert again.extra_metrics["i2t"].metrics["R1"] == 61.0
    assert again.selection_metrics() == val and again.selection_split() == ["val"]
    assert again.metrics["mAP"] == 41.5  # the reported (test) numbers stay the headline
    with pytest.raises(ValueError, match="select_on 'hold-out' names no extra_metrics entry"):
        new_summary(select_on="hold-out")
    with pytest.raises(ValueError, match="protocol 'video' is not one of"):
        new_summary(protocol="video")


def test_summary_and_launcher_import_without_torch():
    code = ("import sys, utils.summary, utils.results, utils.run_files, utils.atomic, "
            "launcher.cli, launcher.ablation, run_phased_loss; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
