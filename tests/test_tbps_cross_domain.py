"""Cross-domain (open-set) text-based person search testing (test.py TEST.DATASET / TEST.ROOT_DIR):
a tiny dual encoder, started from a TBPS-CLIP-layout checkpoint (MODEL.TBPS.INIT_CHECKPOINT),
trained one epoch on SynthPedes (seed 0) and tested on another SynthPedes (seed 1) written in the
CUHK-PEDES layout and read by the CUHK-PEDES loader; summary.json names both datasets, selection
stays on the training dataset's val split; the launcher's tables label it; errors."""
import glob
import os

import numpy as np
import pytest
import torch

import test as test_script
import train
from configs import ConfigError, load_config
from datasets.synth import load_synth
from datasets.synth.cuhk_layout import export_cuhkpedes_layout
from utils.summary import MetricSet, TestSummary

from test_tbps_clip_weights import save_tbps_clip, tbps_clip_layout, tiny_clip

QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "Synth",
                          "tbps_quickstart.yml")
TINY = ["DATASETS.SYNTH_TRAIN_IDS", "8", "DATASETS.SYNTH_TEST_IDS", "6",
        "DATASETS.SYNTH_IMAGE_SIZE", "[64, 32]", "DATASETS.SYNTH_VAL_IDS", "2",
        "SOLVER.IMS_PER_BATCH", "16", "SOLVER.WARMUP_EPOCHS", "1", "MODEL.TBPS.EMBED_DIM", "64",
        "TEST.VIS_QUERIES", "2", "TEST.VIS_TOPK", "3", "DATALOADER.CACHE_IMAGES", "False",
        "MODEL.DEVICE", "cpu"]


@pytest.fixture(scope="module")
def other_domain(tmp_path_factory):
    """SynthPedes of another seed (other identities, other images) in the CUHK-PEDES layout."""
    root = str(tmp_path_factory.mktemp("synth_seed1"))
    load_synth(root, num_train_ids=8, num_test_ids=6, seed=1, image_size=(64, 32))
    out = str(tmp_path_factory.mktemp("cuhk_seed1"))
    export_cuhkpedes_layout(glob.glob(f"{root}/synthpedes_*")[0], out, 2, 1)
    return out


def test_train_on_synth_test_on_another_dataset(synth_root, other_domain, tmp_path):
    init = str(tmp_path / "tbps_clip.pth")
    save_tbps_clip(init, tbps_clip_layout(tiny_clip().state_dict()))
    run = tmp_path / "run"
    opts = TINY + ["SOLVER.MAX_EPOCHS", "1", "OUTPUT_DIR", str(run), "DATASETS.ROOT_DIR",
                   synth_root, "MODEL.TBPS.INIT_CHECKPOINT", init]
    assert train.main(["--config_file", QUICKSTART] + opts) == 0
    # training started from the TBPS-CLIP checkpoint, reported in the run folder
    assert "loaded: " in (run / "init_checkpoint.txt").read_text()
    weight = str(run / "transformer_1.pth")
    # the released model evaluated zero-shot (test.py without TEST.WEIGHT): no training dataset
    zero = tmp_path / "zero_shot"
    assert test_script.main(["--config_file", QUICKSTART] + opts[:-6] + [
        "OUTPUT_DIR", str(zero), "DATASETS.ROOT_DIR", synth_root,
        "MODEL.TBPS.INIT_CHECKPOINT", init]) == 0
    s_zero = TestSummary.read(str(zero / "summary.json"))
    assert s_zero.zero_shot and s_zero.train_dataset is None and s_zero.dataset == "synth"
    assert (zero / "init_checkpoint.txt").exists()

    same = tmp_path / "in_domain"
    assert test_script.main(["TEST.WEIGHT", weight, "OUTPUT_DIR", str(same)]) == 0
    cross = tmp_path / "cross"
    assert test_script.main(["TEST.WEIGHT", weight, "OUTPUT_DIR", str(cross), "TEST.DATASET",
                             "cuhkpedes", "TEST.ROOT_DIR", other_domain,
                             "TEST.EXPORT_FEATURES", "True"]) == 0
    s_in = TestSummary.read(str(same / "summary.json"))
    s_x = TestSummary.read(str(cross / "summary.json"))
    assert (s_in.dataset, s_in.train_dataset) == ("synth", "synth")
    assert (s_x.dataset, s_x.train_dataset) == ("cuhkpedes", "synth")
    assert s_x.protocol == "text-to-image" and s_x.split == ["test"] and s_x.epoch == 1
    # selection stays on the TRAINING dataset's val split: the very numbers of the in-domain test
    assert s_x.select_on == "val" and not s_x.test_selection_asked
    val = s_x.extra_metrics["val"]
    assert val.dataset == "synth" and "SYNTH_VAL_IDS" in val.source
    assert val.metrics == s_in.extra_metrics["val"].metrics
    assert s_in.extra_metrics["val"].dataset is None
    # the test numbers are those of the other dataset's test split: its 6 identities, its files
    feats = np.load(cross / "features.npz")
    assert len(set(feats["g_pids"].tolist())) == 6
    assert all(str(p).startswith(os.path.join(other_domain, "CUHK-PEDES", "imgs"))
               for p in feats["g_paths"])
    assert s_x.metrics != s_in.metrics
    assert s_x.test_config_sha256 != s_in.test_config_sha256
    # asked for: selection on the cross-domain test split, said so in the summary
    asked = tmp_path / "asked"
    assert test_script.main(["TEST.WEIGHT", weight, "OUTPUT_DIR", str(asked), "TEST.DATASET",
                             "cuhkpedes", "TEST.ROOT_DIR", other_domain, "TEST.SELECT_ON",
                             "test"]) == 0
    s_t = TestSummary.read(str(asked / "summary.json"))
    assert s_t.select_on is None and s_t.test_selection_asked and "val" not in s_t.extra_metrics
    assert s_t.metrics == s_x.metrics


def test_cross_domain_keys_are_refused_where_they_would_be_wrong(synth_root, tmp_path):
    base = TINY + ["DATASETS.ROOT_DIR", synth_root, "OUTPUT_DIR", str(tmp_path)]
    with pytest.raises(ConfigError, match="TEST.DATASET 'synth' is the training dataset"):
        load_config(QUICKSTART, base + ["TEST.DATASET", "synth"])
    with pytest.raises(ConfigError, match="TEST.ROOT_DIR '/x' is set but TEST.DATASET is empty"):
        load_config(QUICKSTART, base + ["TEST.ROOT_DIR", "/x"])
    with pytest.raises(ConfigError, match="TEST.DATASET 'cuhk' is not one of"):
        load_config(QUICKSTART, base + ["TEST.DATASET", "cuhk"])
    reid = os.path.join(os.path.dirname(QUICKSTART), "synth_baseline.yml")
    with pytest.raises(ConfigError, match="TEST.DATASET 'dukemtmcreid' .* is for MODEL.TASK "
                                          "'tbps'"):
        load_config(reid, ["TEST.DATASET", "dukemtmcreid"])
    with pytest.raises(ConfigError, match="'near_twin' is SynthPedes' subset, cuhkpedes has none"):
        load_config(QUICKSTART, base + ["TEST.DATASET", "cuhkpedes", "TEST.QUERY_SUBSETS",
                                        "['near_twin']"])
    # zero-shot: nothing was trained on DATASETS.NAMES
    with pytest.raises(ValueError, match="TEST.DATASET 'cuhkpedes' without TEST.WEIGHT"):
        test_script.main(["--config_file", QUICKSTART] + base + ["TEST.DATASET", "cuhkpedes"])


def test_launcher_tables_label_a_cross_domain_test(tmp_path):
    """Summaries of a cross-domain test (--test-opts TEST.DATASET ...: a test-t<hash> folder)
    make the launcher say which dataset the numbers are of and where the selection happened."""
    from launcher.experiment import make_experiment
    from launcher.identity import expected_test_config
    from launcher.report import build_summary, summary_markdown
    from utils.checkpoint import save_checkpoint
    from utils.run_files import checkpoint_path
    from utils.summary import weight_fields

    exp = make_experiment(QUICKSTART, str(tmp_path), 2, 1,
                          test_opts=["TEST.DATASET", "cuhkpedes", "TEST.ROOT_DIR", "/data"])
    assert exp.test_tag.startswith("test-t")
    for epoch, test_map, val_map in ((1, 30.0, 45.0), (2, 40.0, 35.0)):
        os.makedirs(exp.train_dir(0), exist_ok=True)
        weight = checkpoint_path(exp.train_dir(0), epoch)
        save_checkpoint(weight, torch.nn.Linear(1, 1), exp.train_config(0), epoch, 4, 2, 1)
        metrics = {"R1": 50.0, "R5": 60.0, "R10": 70.0, "mAP": test_map, "mINP": 10.0}
        TestSummary(protocol="text-to-image", metrics=metrics, **weight_fields(weight),
                    epoch=epoch, dataset="cuhkpedes", train_dataset="synth",
                    test_config_sha256=expected_test_config(exp, 0, epoch, weight),
                    split=["test"], feature="f", feat_norm=True, distance="cosine",
                    re_ranking="none", max_rank=10, clip_fusion="off", seconds=1.0,
                    extra_metrics={"val": MetricSet(split=["val"], dataset="synth",
                                                    metrics=dict(metrics, mAP=val_map))},
                    select_on="val").write(os.path.join(exp.test_dir(0, epoch), "summary.json"))
    summary = build_summary(exp, [0], [], None)
    assert summary["seeds"][0]["best"]["epoch"] == 1      # selected on synth's val
    assert summary["evaluation"]["dataset"] == "cuhkpedes"
    assert summary["evaluation"]["train_dataset"] == "synth"
    assert ("on the selection split (val) of synth (cross-domain: trained on synth, tested on "
            "cuhkpedes" in summary["selection"])
    text = summary_markdown(summary)
    assert ("## Per seed: test numbers of a cross-domain test (trained on synth, tested on "
            "cuhkpedes)") in text
    assert "## Across seeds (mean ± sample std): test numbers of a cross-domain test" in text
