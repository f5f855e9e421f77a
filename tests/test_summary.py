"""The typed test summary (utils/summary.py): round trip, summaries written before the schema,
newer versions, room for a second protocol, which summary counts as the result of a checkpoint,
and a torch-free import."""
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
                  clip_fusion="on", seconds=2.5, weight_size=4096,
                  weight_mtime_ns=1_700_000_000_123_456_789, test_config_sha256="c" * 64)
    fields.update(changes)
    return TestSummary(**fields)


def test_round_trip_keeps_every_field(tmp_path):
    s = new_summary()
    again = TestSummary.from_json(s.to_json())
    assert again.version == SUMMARY_VERSION == 5 and again.protocol == "image-reid"
    assert not again.zero_shot and not again.test_selection_asked
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
    assert s.version == SUMMARY_VERSION and s.protocol == "image-reid" and s.extra_metrics == {}
    assert s.select_on is None and s.selection_metrics() is s.metrics
    assert s.epoch == 2 and s.split == ["test"] and s.feat_norm is False
    assert s.feature == "after BNNeck" and s.clip_fusion == "off" and s.seconds == 1.83
    assert s.metrics["mAP"] == pytest.approx(38.41263927045119) and not s.missing_metrics()
    # written back, it is a current file holding the same information (and None for the
    # weight file's size and mtime and the test config, which it never recorded)
    back = json.loads(s.to_json())
    old = json.loads(OLD_SUMMARY)
    assert back["version"] == SUMMARY_VERSION and {k: back[k] for k in old} == old
    assert back["weight_size"] is None and back["test_config_sha256"] is None
    # before CLIP fusion existed test.py wrote no 'clip_fusion': nothing was fused
    older = json.loads(OLD_SUMMARY)
    del older["clip_fusion"]
    assert TestSummary.from_json(json.dumps(older)).clip_fusion == "off"


def test_unknown_versions_and_broken_files_are_clear_errors(tmp_path):
    data = json.loads(new_summary().to_json())
    data["version"] = SUMMARY_VERSION + 1
    with pytest.raises(ValueError, match=f"version {SUMMARY_VERSION + 1} is newer than this "
                                         "code reads"):
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
    with pytest.raises(ValueError, match="test_selection_asked True but select_on is 'val'"):
        new_summary(extra_metrics={"val": {"split": ["val"], "metrics": val}}, select_on="val",
                    test_selection_asked=True)
    with pytest.raises(ValueError, match="protocol 'video' is not one of"):
        new_summary(protocol="video")


def test_summary_and_launcher_import_without_torch():
    code = ("import sys, utils.summary, utils.results, utils.run_files, utils.atomic, "
            "launcher.cli, launcher.ablation, run_phased_loss; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------
# which summary counts as the result of a checkpoint (the launcher's "already tested")
TEST_SHA = "a" * 64


def checkpoint_file(tmp_path, name="transformer_3.pth", content=b"weights of epoch 3"):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def summary_of(weight, **changes):
    """The summary test.py writes after evaluating ``weight`` with test config TEST_SHA."""
    from utils.summary import weight_fields
    return new_summary(**dict(weight_fields(weight), test_config_sha256=TEST_SHA, **changes))


def test_a_summary_counts_for_the_file_it_names_as_it_is_now(tmp_path):
    weight = checkpoint_file(tmp_path)
    s = summary_of(weight)
    assert s.weight == weight and s.weight_size == os.path.getsize(weight)
    assert s.weight_mtime_ns == os.stat(weight).st_mtime_ns and s.version == SUMMARY_VERSION
    assert s.mismatch(3, weight, TEST_SHA) is None
    again = TestSummary.from_json(s.to_json())                   # the fields survive the file
    assert again.mismatch(3, weight, TEST_SHA) is None
    os.utime(weight, ns=(s.weight_mtime_ns, s.weight_mtime_ns))  # same mtime: still the same
    assert s.mismatch(3, os.path.join(str(tmp_path), ".", "transformer_3.pth"), TEST_SHA) is None


def test_a_summary_of_another_path_does_not_count(tmp_path):
    weight = checkpoint_file(tmp_path)
    other = checkpoint_file(tmp_path, "transformer_4.pth")
    why = summary_of(weight).mismatch(3, other, TEST_SHA)
    assert why is not None and weight in why and other in why


def test_a_summary_of_a_rewritten_checkpoint_does_not_count(tmp_path):
    weight = checkpoint_file(tmp_path)
    s = summary_of(weight)
    st = os.stat(weight)
    os.utime(weight, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # retrained, same size
    why = s.mismatch(3, weight, TEST_SHA)
    assert why is not None and "changed since it was tested" in why
    checkpoint_file(tmp_path, content=b"other weights, other size")       # replaced
    os.utime(weight, ns=(st.st_atime_ns, st.st_mtime_ns))                 # even at the old mtime
    assert "changed since it was tested" in s.mismatch(3, weight, TEST_SHA)
    os.remove(weight)
    assert "does not exist" in s.mismatch(3, weight, TEST_SHA)


def test_a_summary_of_another_test_config_or_epoch_does_not_count(tmp_path):
    weight = checkpoint_file(tmp_path)
    s = summary_of(weight)
    why = s.mismatch(3, weight, "b" * 64)
    assert why is not None and "another test config" in why
    assert "epoch 3, not 4" in s.mismatch(4, weight, TEST_SHA)
    incomplete = summary_of(weight, metrics={"R1": 1.0})
    assert "lacks metrics" in incomplete.mismatch(3, weight, TEST_SHA)


def test_summaries_written_before_they_named_the_file_never_count(tmp_path):
    weight = checkpoint_file(tmp_path)
    v0 = json.loads(OLD_SUMMARY)
    v0["weight"], v0["epoch"] = weight, 3
    v1 = dict(json.loads(OLD_SUMMARY), weight=weight, epoch=3, version=1,
              protocol="image-reid", extra_metrics={}, select_on=None)
    for data in (v0, v1):
        s = TestSummary.from_json(json.dumps(data))
        assert s.weight_size is None and s.test_config_sha256 is None
        why = s.mismatch(3, weight, TEST_SHA)
        assert why is not None and "does not record" in why


def test_a_version_2_summary_reads_with_the_fields_of_version_3_at_their_defaults():
    data = json.loads(new_summary(
        protocol="text-to-image",
        extra_metrics={"val": MetricSet(split=["val"], metrics={"mAP": 1.0})},
        select_on="val").to_json())
    for key in ("test_selection_asked", "zero_shot", "cost"):
        del data[key]
    del data["extra_metrics"]["val"]["source"]
    data["version"] = 2
    s = TestSummary.from_json(json.dumps(data))
    assert s.version == SUMMARY_VERSION and not s.zero_shot and not s.test_selection_asked
    assert s.extra_metrics["val"] == MetricSet(split=["val"], metrics={"mAP": 1.0}, source=None)
    assert s.cost is None


def test_a_version_3_summary_reads_without_cost_and_cost_round_trips():
    data = json.loads(new_summary(cost={"s_per_iteration": 0.07, "trainable_params": 5}).to_json())
    assert TestSummary.from_json(json.dumps(data)).cost == {"s_per_iteration": 0.07,
                                                            "trainable_params": 5}
    del data["cost"]
    data["version"] = 3
    s = TestSummary.from_json(json.dumps(data))
    assert s.version == SUMMARY_VERSION and s.cost is None


def test_a_version_4_summary_reads_without_the_training_dataset():
    """Version 5 adds ``train_dataset`` and ``MetricSet.dataset`` (cross-domain testing); a
    version-4 file reads them as None (every number of it is of ``dataset``)."""
    cross = new_summary(protocol="text-to-image", dataset="icfgpedes", train_dataset="cuhkpedes",
                        extra_metrics={"val": MetricSet(split=["val"], metrics={"mAP": 1.0},
                                                        dataset="cuhkpedes")}, select_on="val")
    again = TestSummary.from_json(cross.to_json())
    assert again.train_dataset == "cuhkpedes" and again.dataset == "icfgpedes"
    assert again.extra_metrics["val"].dataset == "cuhkpedes"
    data = json.loads(cross.to_json())
    del data["train_dataset"], data["extra_metrics"]["val"]["dataset"]
    data["version"] = 4
    s = TestSummary.from_json(json.dumps(data))
    assert s.version == SUMMARY_VERSION and s.train_dataset is None
    assert s.extra_metrics["val"].dataset is None


def test_text_to_image_fields_round_trip():
    val = MetricSet(split=["val"], metrics={"mAP": 2.0},
                    source="10 training identities held out (DATASETS.VAL_IDS 10, ...)")
    s = new_summary(protocol="text-to-image", extra_metrics={"val": val},
                    test_selection_asked=True)
    again = TestSummary.from_json(s.to_json())
    assert again.extra_metrics["val"].source == val.source and again.test_selection_asked
    assert again.select_on is None and again.selection_metrics() is again.metrics


def test_a_zero_shot_summary_never_counts_as_a_checkpoints_result(tmp_path):
    weight = checkpoint_file(tmp_path)
    s = new_summary(protocol="text-to-image", zero_shot=True, weight=None, weight_size=None,
                    weight_mtime_ns=None, epoch=None, test_config_sha256=TEST_SHA)
    again = TestSummary.from_json(s.to_json())
    assert again.zero_shot and again.weight is None and again.epoch is None
    for epoch in (None, 3):
        why = again.mismatch(epoch, weight, TEST_SHA)
        assert why is not None and "zero-shot" in why
    with pytest.raises(ValueError, match="a zero-shot summary names no weight file and no epoch"):
        new_summary(zero_shot=True)
