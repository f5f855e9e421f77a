"""The qualitative figures (tools/qualitative.py) on two tiny real TBPS runs (train.py, 1 epoch on
the tiny SynthPedes): valid PNGs, the same queries in every run, failure cases that are failures,
rankings and maps against straightforward references, and the TG-MIM attention path against the
``model(batch, tgmim=True) -> tgmim_attn`` contract through a stub that returns known attention."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import train
from tools import qualitative as Q

QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "Synth",
                          "tbps_quickstart.yml")
TINY = ["DATASETS.SYNTH_TRAIN_IDS", "8", "DATASETS.SYNTH_TEST_IDS", "6",
        "DATASETS.SYNTH_IMAGE_SIZE", "[64, 32]", "DATASETS.SYNTH_VAL_IDS", "2",
        "SOLVER.IMS_PER_BATCH", "16", "SOLVER.WARMUP_EPOCHS", "1", "MODEL.TBPS.EMBED_DIM", "32",
        "TEST.VIS_QUERIES", "0", "DATALOADER.CACHE_IMAGES", "False", "SOLVER.MAX_EPOCHS", "1",
        "MODEL.DEVICE", "cpu"]


@pytest.fixture(scope="module")
def two_runs(synth_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("qual_runs")
    runs = []
    for name, extra in (("base", []), ("other", ["SOLVER.SEED", "1", "LOSS.NAMES", "['sdm']"])):
        out = str(root / name / "train")     # the launcher's layout: <run>/train/
        assert train.main(["--config_file", QUICKSTART, *TINY, "DATASETS.ROOT_DIR", synth_root,
                           "OUTPUT_DIR", out, *extra]) == 0
        runs.append(str(root / name))
    return runs


def is_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        img.verify()
    return True


def test_figures_of_two_runs_on_the_same_queries(two_runs, tmp_path):
    out = tmp_path / "fig"
    args = ["--runs", *two_runs, "--out", str(out), "--failures", "3", "--topk", "3",
            "--neighbours", "2", "--attention", "2", "--seed", "5"]
    assert Q.main(args) == 0
    index = json.load(open(out / "index.json"))
    assert [r["name"] for r in index["runs"]] == ["base", "other"]     # from the run folders
    assert all(r["attention"] == "cosine" and r["epoch"] == 1 for r in index["runs"])
    expected = {"attention.png", "failures_base.png", "failures_other.png",
                "neighbours_base.png", "neighbours_other.png"}
    assert set(index["files"]) == expected
    assert all(is_png(out / f) for f in expected)
    assert len(index["failure_queries"]) == 3 and len(index["attention_queries"]) == 2
    # the choice is deterministic and does not depend on the runs' order (--fail-in any)
    out2 = tmp_path / "fig2"
    assert Q.main(["--runs", *reversed(two_runs), "--out", str(out2), "--failures", "3",
                   "--topk", "3", "--neighbours", "2", "--attention", "2", "--seed", "5"]) == 0
    again = json.load(open(out2 / "index.json"))
    for key in ("failure_queries", "neighbour_images", "attention_queries"):
        assert again[key] == index[key]
    # every chosen failure really has a wrong top-1 in some run (recomputed by brute force)
    runs = [Q.load_run(r, n) for r, n in zip(two_runs, ("a", "b"))]
    for entry in index["failure_queries"]:
        q = entry["index"]
        wrong = []
        for run in runs:
            t = F.normalize(run.evaluation.txt_feats[q], dim=0)
            g = F.normalize(run.evaluation.img_feats, dim=1)
            sims = (g @ t).tolist()
            best = max(range(len(sims)), key=lambda j: (sims[j], -j))
            wrong.append(int(run.t2i.image_pids[best]) != entry["pid"])
        assert any(wrong)


def test_fail_in_first_and_all_and_seed(two_runs):
    runs = [Q.load_run(r, n) for r, n in zip(two_runs, ("a", "b"))]
    sims = [Q.similarity(r) for r in runs]
    t2i = runs[0].t2i
    wrong = [set(np.flatnonzero(t2i.image_pids[np.argmax(s, 1)] != t2i.caption_pids))
             for s in sims]
    first = Q.choose_failures(runs, sims, 1000, 3, "first")
    both = Q.choose_failures(runs, sims, 1000, 3, "all")
    assert set(first) == wrong[0] and set(both) == wrong[0] & wrong[1]
    assert Q.choose_failures(runs, sims, 4, 3, "any") != Q.choose_failures(runs, sims, 4, 4,
                                                                            "any")


def test_rank_of_matches_the_stable_ranking():
    row = np.array([0.3, 0.9, 0.3, 0.1, 0.9, 0.3])
    order = list(np.argsort(-row, kind="stable"))
    for j in range(len(row)):
        assert Q.rank_of(row, j) == order.index(j) + 1
    assert list(Q.ranking(row, 3)) == [1, 4, 0]


def test_caption_averaged_attention_against_a_loop():
    rng = np.random.default_rng(0)
    attn = rng.random((8, 6))
    attn /= attn.sum(axis=1, keepdims=True)       # each patch query's softmax over tokens
    words = [1, 2, 4]
    ours = Q.caption_averaged_attention(attn, words)
    ref = np.zeros(8)
    for n in range(8):
        for w in words:
            ref[n] += attn[n, w] / sum(attn[m, w] for m in range(8)) / len(words)
    assert np.allclose(ours, ref)
    # over all tokens the plain mean is flat (each query sums to 1): the normalised one is not
    assert np.allclose(attn.mean(axis=1), 1 / 6)
    assert not np.allclose(Q.caption_averaged_attention(attn, range(6)), 1 / 8)
    assert abs(ours.sum() - 1.0) < 1e-12


class ContractStub(torch.nn.Module):
    """A dual encoder with a TG-MIM branch as the contract says: model(batch, tgmim=True) adds
    tgmim_attn (B, N, L) (each patch's row sums to 1) and tgmim_mask; the words' attention
    favours patch 0 two to one."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.image_grid = net.image_grid

    def forward(self, batch, tgmim=False):
        out = self.net(batch)
        if tgmim:
            b, n = out["img_tokens"].shape[:2]
            length = batch["text_ids"].shape[1]
            # patch 0 attends to the caption after the start token evenly; every other patch
            # puts half its attention on the start token (position 0, not a word)
            attn = torch.full((b, n, length), 1.0 / (length - 1))
            attn[:, 0, 0] = 0.0
            attn[:, 1:] *= 0.5
            attn[:, 1:, 0] = 0.5
            out["tgmim_attn"] = attn
            out["tgmim_mask"] = torch.zeros(b, *self.image_grid, dtype=torch.bool)
        return out


def test_attention_maps_cosine_and_tgmim_contract(two_runs, tmp_path):
    run = Q.load_run(two_runs[0], "base")
    query = 0
    files = []
    cos, kind = Q.attention_map(run, query, 0, str(tmp_path), files)
    assert kind == "cosine" and files == []
    batch = Q.query_batch(run, query)
    with torch.no_grad():
        out = run.model(batch)
    tokens, txt = out["img_tokens"][0], out["txt_feat"][0]
    ref = [float(torch.dot(t, txt) / (t.norm() * txt.norm())) for t in tokens]
    assert np.allclose(cos.ravel(), ref, atol=1e-5)
    assert cos.shape == tuple(run.model.image_grid)
    # the TG-MIM path (the dual encoder's branch is being added elsewhere): a stub on the contract
    run.model = ContractStub(run.model)
    run.cfg = run.cfg.clone()
    run.cfg.defrost()
    run.cfg.LOSS.TGMIM.ENABLE = True
    amap, kind = Q.attention_map(run, query, 0, str(tmp_path), files)
    assert kind == "tgmim"
    grid = run.model.image_grid
    ref = np.full(grid[0] * grid[1], 1.0)
    ref[0] = 2.0
    assert np.allclose(amap.ravel(), ref / ref.sum())
    assert len(files) == 1 and is_png(files[0])


def test_a_real_tgmim_run_shows_its_tgmim_attention(synth_root, two_runs, tmp_path):
    """A dual encoder trained with TG-MIM: test.py's checkpoints leave the head out, the figure
    takes it from resume.pth (same epoch) and shows the head's attention, not the cosine map."""
    out = str(tmp_path / "tg" / "train")
    assert train.main(["--config_file", QUICKSTART, *TINY, "DATASETS.ROOT_DIR", synth_root,
                       "OUTPUT_DIR", out, "LOSS.TGMIM.ENABLE", "True", "LOSS.TGMIM.W", "0.1",
                       "LOSS.TGMIM.DECODER_DIM", "8", "LOSS.TGMIM.HEADS", "2"]) == 0
    run = Q.load_run(str(tmp_path / "tg"), "tg")
    assert run.has_tgmim and run.model.tgmim is not None
    resume = torch.load(os.path.join(out, "resume.pth"), map_location="cpu", weights_only=False)
    for key, value in run.model.tgmim.state_dict().items():
        assert torch.equal(value, resume["model"]["tgmim." + key]), key
    fig = tmp_path / "fig"
    assert Q.main(["--runs", two_runs[0], str(tmp_path / "tg"), "--names", "base", "tg",
                   "--out", str(fig), "--failures", "1", "--topk", "2", "--neighbours", "1",
                   "--attention", "1"]) == 0
    index = json.load(open(fig / "index.json"))
    assert [r["attention"] for r in index["runs"]] == ["cosine", "tgmim"]
    assert any(f.startswith("tgmim_tokens_tg_q") for f in index["files"])
    # a head of another epoch is never drawn beside these weights
    with pytest.raises(ValueError, match="holds the TG-MIM head of epoch 1"):
        Q.load_tgmim_head(run.model, os.path.join(out, "transformer_1.pth"), 2)
