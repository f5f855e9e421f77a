"""Text-based person search end to end on the tiny SynthPedes: the TBPS quickstart recipe through
the launcher (train, test.py on every checkpoint, val-selected best + last), and the same recipe
unchanged on the CUHK-PEDES layout (only DATASETS.NAMES and DATASETS.ROOT_DIR differ)."""
import contextlib
import glob
import io
import json
import os

import numpy as np

import run_phased_loss as launcher
import test as test_script
import train
from datasets.synth.cuhk_layout import export_cuhkpedes_layout
from utils.summary import TestSummary

QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "Synth",
                          "tbps_quickstart.yml")
# the quickstart's dataset and batch are too big for a test: the tiny SynthPedes of conftest
TINY = ["DATASETS.SYNTH_TRAIN_IDS", "8", "DATASETS.SYNTH_TEST_IDS", "6",
        "DATASETS.SYNTH_IMAGE_SIZE", "[64, 32]", "DATASETS.SYNTH_VAL_IDS", "2",
        "SOLVER.IMS_PER_BATCH", "16", "SOLVER.WARMUP_EPOCHS", "1", "MODEL.TBPS.EMBED_DIM", "32",
        "TEST.VIS_QUERIES", "2", "TEST.VIS_TOPK", "3", "DATALOADER.CACHE_IMAGES", "False"]


def test_tbps_quickstart_through_the_launcher_selects_on_val(synth_root, tmp_path):
    root = tmp_path / "logs"
    argv = ["--config", QUICKSTART, "--seeds", "0", "--epochs", "2", "--save-every", "1",
            "--output-root", str(root), "--opts", "DATASETS.ROOT_DIR", synth_root, *TINY,
            "TEST.QUERY_SUBSETS", "['near_twin']"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert launcher.main(argv) == 0
    out = buf.getvalue()
    summaries = sorted(glob.glob(str(root / "*seed0" / "test*" / "epoch_*" / "summary.json")))
    assert len(summaries) == 2
    tested = {}
    for path in summaries:
        s = TestSummary.read(path)
        assert s.protocol == "text-to-image" and s.select_on == "val" and not s.zero_shot
        assert s.split == ["test"] and s.extra_metrics["val"].split[0].startswith("val")
        tested[s.epoch] = s
    best = max(tested, key=lambda e: (tested[e].extra_metrics["val"].metrics["mAP"],
                                      tested[e].extra_metrics["val"].metrics["R1"], -e))
    report = json.load(open(glob.glob(str(root / "summary_*.json"))[0]))
    assert report["seeds"][0]["best"]["epoch"] == best
    # the near-twin query subset of the same epoch, beside the full set
    twins = tested[best].extra_metrics["test-near_twin"].metrics
    assert report["seeds"][0]["best"]["subsets"]["near_twin"]["mAP"] == twins["mAP"]
    assert report["aggregate_subsets"]["best"]["near_twin"]["n"] == 1
    assert "| best (val-selected) | near_twin | 1 |" in out
    # what it cost: the checkpoint's training cost and the test's latency, in summary.json and
    # in the launcher's table
    cost = tested[2].cost
    assert cost["trainable_params"] == cost["total_params"] > 0
    assert cost["s_per_iteration"] > 0 and cost["epochs_measured"] == [1, 2]
    assert cost["train_peak_memory_kind"] == "cpu max rss" and cost["train_peak_memory_mb"] > 0
    assert cost["s_per_query"] > 0 and cost["s_per_gallery_image"] > 0
    # every timing carries the machine's speed (CPU machines differ ~4x)
    assert cost["fp32_matmul_gflops"] > 1
    assert report["cost"]["n"] == 1 and "## Cost" in out and "fp32 matmul GFLOP/s" in out
    assert report["cost"]["fp32_matmul_gflops"]["mean"] == cost["fp32_matmul_gflops"]
    assert report["cost"]["s_per_iteration"]["mean"] == cost["s_per_iteration"]
    assert "val" in report["selection"]
    assert "best (val-selected)" in out
    # the reported best-epoch numbers are the TEST numbers of the val-selected epoch
    row = [line for line in out.splitlines() if line.startswith("| 0 | best (val-selected)")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert int(cells[2]) == best
    assert float(cells[6]) == round(tested[best].metrics["mAP"], 2)

def test_tbps_quickstart_runs_unchanged_on_the_cuhkpedes_layout(synth_root, tmp_path):
    synth_dir = glob.glob(f"{synth_root}/synthpedes_*")[0]
    export_cuhkpedes_layout(synth_dir, str(tmp_path / "cuhk"), 2, 0)
    out = tmp_path / "run"
    opts = TINY + ["SOLVER.MAX_EPOCHS", "1", "OUTPUT_DIR", str(out),
                   "DATASETS.NAMES", "cuhkpedes", "DATASETS.ROOT_DIR", str(tmp_path / "cuhk")]
    assert train.main(["--config_file", QUICKSTART] + opts) == 0
    test_out = tmp_path / "test"
    assert test_script.main(["TEST.WEIGHT", str(out / "transformer_1.pth"), "OUTPUT_DIR",
                             str(test_out), "TEST.EXPORT_FEATURES", "True"]) == 0
    s = TestSummary.read(str(test_out / "summary.json"))
    assert s.dataset == "cuhkpedes" and s.select_on == "val" and s.protocol == "text-to-image"
    assert "validation split" in s.extra_metrics["val"].source
    feats = np.load(test_out / "features.npz")
    # every test caption of the 6 test identities queries every captioned test image once
    assert len(set(feats["g_pids"].tolist())) == 6
    assert feats["q_feats"].shape[0] == 2 * feats["g_feats"].shape[0]


def test_vietnamese_tbps_quickstart_trains_on_the_vietnamese_captions(synth_root, tmp_path):
    from datasets.make_dataloader import make_dataloader
    from configs import load_config
    vi = QUICKSTART.replace("tbps_quickstart.yml", "tbps_quickstart_vi.yml")
    opts = TINY + ["SOLVER.MAX_EPOCHS", "1", "OUTPUT_DIR", str(tmp_path / "vi"),
                   "DATASETS.ROOT_DIR", synth_root]
    cfg = load_config(vi, opts)
    assert cfg.DATASETS.CAPTION_LANG == "vi"
    data = make_dataloader(cfg)
    caption = data.train_set[0]["caption"]
    assert any(ch in caption for ch in "ăâđêôơư")   # a Vietnamese caption, not the English one
    assert train.main(["--config_file", vi] + opts) == 0
    assert (tmp_path / "vi" / "transformer_1.pth").exists()


def test_captions_longer_than_the_context_are_a_warning(synth_root, tmp_path, caplog):
    """Vietnamese captions take ~150 CLIP BPE tokens: at 77 tokens they are truncated, which the
    data side says (naming the key); the Vietnamese quickstart's 192 tokens hold them."""
    import logging
    from configs import load_config
    from datasets.make_dataloader import make_dataloader
    from datasets.tokenize import build_tokenizer, truncation_warning
    vi = QUICKSTART.replace("tbps_quickstart.yml", "tbps_quickstart_vi.yml")
    opts = TINY + ["OUTPUT_DIR", str(tmp_path), "DATASETS.ROOT_DIR", synth_root]
    cfg = load_config(vi, opts + ["MODEL.TBPS.CONTEXT_LENGTH", "77"])
    with caplog.at_level(logging.WARNING, logger="phasereid"):
        make_dataloader(cfg)
    assert "are truncated" in caplog.text and "MODEL.TBPS.CONTEXT_LENGTH 77" in caplog.text
    long_enough = load_config(vi, opts)
    tok = build_tokenizer(long_enough)
    captions = [c for r in make_dataloader(long_enough).dataset.train for c in r.captions]
    assert truncation_warning(tok, captions, "k") is None
    assert 77 < max(tok.lengths(captions)) <= 192
    english = load_config(QUICKSTART, opts)
    assert truncation_warning(build_tokenizer(english), captions[:0] + [
        c for r in make_dataloader(english).dataset.train for c in r.captions], "k") is None
