"""The multi-seed launcher (run_phased_loss.py) on the tiny SynthPedes, CPU, and utils/stats.py.

One module-scoped launch (2 seeds x 2 epochs, a checkpoint every epoch) is shared by the tests
that read or re-run it; train.py / test.py run as real subprocesses. Crashes and kills are real
too: small wrapper scripts run the real train.py / test.py and crash in epoch 2 / SIGKILL the
test process at the moment it would write summary.json.
"""
import contextlib
import io
import json
import os
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from scipy import stats as sps

import run_phased_loss as launcher
from configs import load_config
from conftest import ROOT, tiny_opts
from utils.results import METRIC_KEYS
from utils.run_files import list_checkpoints
from utils.stats import mean_std, paired_ttest

# the tiny recipe trains SupCon (small head) so "an absent toggle leaves the YAML alone" shows
YAML_OVERRIDES = {"SOLVER.EVAL_PERIOD": 0, "TEST.VIS_QUERIES": 0, "LOSS.SUPCON.ENABLE": True,
                  "LOSS.SUPCON.PROJ_HIDDEN": 32, "LOSS.SUPCON.PROJ_DIM": 16}
# runtime / TEST keys: forwarded to train.py and test.py
TEST_OPTS = ["TEST.NECK_FEAT", "after", "TEST.FEAT_NORM", "False"]


def write_tiny_yaml(path, synth_root):
    """The tiny_opts values (minus where the data and outputs live) as a YAML recipe."""
    pairs = tiny_opts(synth_root, "unused", **YAML_OVERRIDES)
    tree = {}
    for key, value in zip(pairs[::2], pairs[1::2]):
        if key in ("OUTPUT_DIR", "DATASETS.ROOT_DIR"):
            continue
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def launch_args(config, root, synth_root, seeds=("0", "1"), extra=()):
    return ["--config", config, "--seeds", *seeds, "--epochs", "2", "--save-every", "1",
            "--output-root", str(root), *extra,
            "--opts", "DATASETS.ROOT_DIR", synth_root, *TEST_OPTS]


def run_main(argv):
    """launcher.main(argv) with its (and its subprocesses') output captured."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = launcher.main(argv)
    return rc, buf.getvalue()


def experiment(argv):
    return launcher.build_experiment(launcher.parse_args(argv), argv)


def snapshot(root):
    """(mtime, size) of every file under the run folders (root-level summaries excluded)."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if folder == str(root) and name.startswith("summary_"):
                continue
            st = os.stat(path)
            out[path] = (st.st_mtime_ns, st.st_size)
    return out


def load_json(path):
    with open(path) as f:
        return json.load(f)


WRAPPER = """import os, signal, sys
sys.path.insert(0, {root!r})
{body}
"""
KILL_TEST_BEFORE_SUMMARY = """from utils.summary import TestSummary
def killed(self, path):  # SIGKILL exactly where test.py would write summary.json
    os.kill(os.getpid(), signal.SIGKILL)
TestSummary.write = killed
import test as test_script
sys.exit(test_script.main(sys.argv[1:]))"""
CRASH_TRAIN_IN_EPOCH_2 = """import processor.processor as proc
real = proc.Trainer.train_epoch
def crash(self, epoch, *args, **kwargs):
    if epoch == 2:
        raise RuntimeError("simulated crash in epoch 2")
    return real(self, epoch, *args, **kwargs)
proc.Trainer.train_epoch = crash
import train
sys.exit(train.main(sys.argv[1:]))"""


def wrapper(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(WRAPPER.format(root=ROOT, body=body))
    return str(path)


@pytest.fixture(scope="module")
def launched(synth_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("launcher")
    config = write_tiny_yaml(base / "tiny.yml", synth_root)
    argv = launch_args(config, base / "logs", synth_root)
    rc, out = run_main(argv)
    return SimpleNamespace(argv=argv, root=base / "logs", rc=rc, out=out, exp=experiment(argv),
                           config=config)


def metrics_of(exp, seed, epoch):
    return load_json(os.path.join(exp.test_dir(seed, epoch), "summary.json"))["metrics"]


# ---------------------------------------------------------------------------------------------
def test_every_checkpoint_is_tested_and_summarised(launched):
    exp = launched.exp
    assert launched.rc == 0, launched.out[-3000:]
    assert launched.out.count("Test epoch") == 4
    summary = load_json(exp.summary_base + ".json")
    assert summary["std"].startswith("sample standard deviation (ddof=1)")
    assert "selected on the test split (test)" in summary["selection"]
    per_seed = {r["seed"]: r for r in summary["seeds"]}
    for seed in (0, 1):
        assert sorted(list_checkpoints(exp.train_dir(seed))) == [1, 2]
        tested = {e: metrics_of(exp, seed, e) for e in (1, 2)}
        best = max((1, 2), key=lambda e: (tested[e]["mAP"], tested[e]["R1"], -e))
        rec = per_seed[seed]
        assert rec["in_statistics"] and rec["tested"] == [1, 2]
        assert rec["best"]["epoch"] == best
        assert rec["best"]["metrics"]["mAP"] == pytest.approx(tested[best]["mAP"])
        assert rec["last"]["epoch"] == 2
        assert rec["last"]["metrics"]["R1"] == pytest.approx(tested[2]["R1"])
    for kind in ("best", "last"):
        agg = summary["aggregate"][kind]
        assert agg["n"] == 2
        for key in METRIC_KEYS:
            values = [per_seed[s][kind]["metrics"][key] for s in (0, 1)]
            assert agg["metrics"][key]["mean"] == pytest.approx(np.mean(values))
            assert agg["metrics"][key]["std"] == pytest.approx(np.std(values, ddof=1))
    md = open(exp.summary_base + ".md").read()
    assert "best (test-selected)" in md and "mean ± sample std" in md
    rows = [line.split(",")[1:3] for line in open(exp.summary_base + ".csv").read().splitlines()]
    assert ["seed0", "best"] in rows and ["mean", "last"] in rows and ["std", "best"] in rows
    assert load_json(os.path.join(exp.run_dir(0), "launcher.json"))["seed"] == 0


def test_test_results_go_to_the_runs_tensorboard(launched):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    exp = launched.exp
    events = EventAccumulator(os.path.join(exp.train_dir(1), "tb"))
    events.Reload()
    assert "train/loss" in events.Tags()["scalars"]  # the folder train.py writes
    scalars = events.Scalars(f"{exp.test_tag}/mAP")
    assert [s.step for s in scalars] == [1, 2]
    assert [s.value for s in scalars] == pytest.approx([metrics_of(exp, 1, e)["mAP"]
                                                        for e in (1, 2)], abs=1e-4)


def test_test_opts_reach_test_py_and_absent_toggles_keep_the_yaml(launched):
    exp = launched.exp
    assert exp.test_tag.startswith("test-t")  # TEST.* keys that change numbers: own folder
    summary = load_json(os.path.join(exp.test_dir(0, 2), "summary.json"))
    assert summary["feature"] == "after BNNeck" and summary["feat_norm"] is False
    assert "after BNNeck" in open(os.path.join(exp.test_dir(0, 2), "test_log.txt")).read()
    weight = os.path.join(exp.train_dir(0), "transformer_2.pth")   # the exact file it tested
    assert summary["weight"] == weight and summary["weight_size"] == os.path.getsize(weight)
    assert summary["weight_mtime_ns"] == os.stat(weight).st_mtime_ns
    assert len(summary["test_config_sha256"]) == 64
    cfg = load_config(config_text=open(os.path.join(exp.train_dir(1), "config.yaml")).read())
    assert cfg.LOSS.SUPCON.ENABLE is True          # from the YAML: no toggle given
    assert (cfg.SOLVER.SEED, cfg.SOLVER.MAX_EPOCHS, cfg.SOLVER.EVAL_PERIOD) == (1, 2, 0)
    assert cfg.TEST.NECK_FEAT == "after"          # --opts reached train.py too


def test_rerun_retrains_and_retests_nothing(launched):
    before = snapshot(launched.root)
    rc, out = run_main(launched.argv)
    assert rc == 0
    assert snapshot(launched.root) == before
    for seed in (0, 1):
        assert f"[seed {seed}] Skip training" in out
        for epoch in (1, 2):
            assert f"[seed {seed}] Skip epoch {epoch} (already tested)" in out
    assert "Test epoch" not in out and "Train epochs" not in out


def test_killed_test_leaves_no_summary_and_only_that_epoch_is_redone(launched, tmp_path,
                                                                      monkeypatch):
    # a deleted summary.json and a test killed midway look the same to the next run: the
    # epoch is untested, and it is the only thing that runs again
    exp = launched.exp
    folder = exp.test_dir(0, 2)
    os.remove(os.path.join(folder, "summary.json"))
    monkeypatch.setattr(launcher, "TEST_SCRIPT",
                        wrapper(tmp_path, "kill_test.py", KILL_TEST_BEFORE_SUMMARY))
    rc, out = run_main(launched.argv)
    assert rc == 1
    assert out.count("Test epoch") == 1 and "[seed 0] Test epoch 2" in out
    assert not os.path.exists(os.path.join(folder, "summary.json"))
    log = os.path.join(folder, "test_output.log")
    assert f"test failed for seed 0 epoch 2: test.py exited with code {-signal.SIGKILL}" in out
    assert log in out
    assert "Results of" in open(os.path.join(folder, "test_log.txt")).read()  # killed late
    summary = load_json(exp.summary_base + ".json")
    assert summary["aggregate"]["last"]["n"] == 1 and summary["failures"]
    assert not {r["seed"]: r for r in summary["seeds"]}[0]["in_statistics"]

    monkeypatch.setattr(launcher, "TEST_SCRIPT", os.path.join(ROOT, "test.py"))
    before = snapshot(launched.root)
    rc, out = run_main(launched.argv)
    assert rc == 0
    assert out.count("Test epoch") == 1 and "[seed 0] Test epoch 2" in out
    assert out.count("(already tested)") == 3
    assert load_json(os.path.join(folder, "summary.json"))["epoch"] == 2
    after = snapshot(launched.root)
    changed = {p for p in after if before.get(p) != after[p]}
    assert os.path.join(folder, "summary.json") in changed
    assert all(p.startswith(folder) or p.startswith(os.path.join(exp.train_dir(0), "tb"))
               for p in changed), changed
    assert load_json(exp.summary_base + ".json")["aggregate"]["last"]["n"] == 2


def test_compare_to_gives_paired_t_test_p_values(launched, tmp_path):
    exp = launched.exp
    ours = load_json(exp.summary_base + ".json")
    other = json.loads(json.dumps(ours))
    offsets = {0: 1.0, 1: 3.5}
    for rec in other["seeds"]:
        for kind in ("best", "last"):
            for key in METRIC_KEYS:
                rec[kind]["metrics"][key] -= offsets[rec["seed"]]
        rec["last"]["cost"]["s_per_epoch"] /= 2   # the other run trained twice as fast
    other["experiment"] = "other_recipe"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "summary_other_recipe.json").write_text(json.dumps(other))
    rc, out = run_main(launched.argv + ["--compare-to", str(tmp_path / "other")])
    assert rc == 0, out[-2000:]
    comp = load_json(exp.summary_base + ".json")["compare"]
    for kind in ("best", "last"):
        assert comp[kind]["seeds"] == [0, 1]
        for key in METRIC_KEYS:
            a = [r[kind]["metrics"][key] for r in ours["seeds"]]
            b = [r[kind]["metrics"][key] for r in other["seeds"]]
            assert comp[kind]["metrics"][key]["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
            assert comp[kind]["metrics"][key]["mean_diff"] == pytest.approx(2.25)
    assert "Paired t-test vs `other_recipe`" in out
    # training time from the summaries' cost: ours took +100 % for +2.25 R1
    eff = comp["efficiency"]
    assert eff["seeds"] == [0, 1] and eff["extra_time_percent"] == pytest.approx(100.0)
    assert eff["R1_gain_per_10_percent_time"] == pytest.approx(0.225)
    assert "R1 gain per 10 % more training time +0.23" in out

    other["seeds"] = [r for r in other["seeds"] if r["seed"] == 0]  # one common seed
    (tmp_path / "other" / "summary_other_recipe.json").write_text(json.dumps(other))
    rc, _ = run_main(launched.argv + ["--compare-to", str(tmp_path / "other")])
    mAP = load_json(exp.summary_base + ".json")["compare"]["last"]["metrics"]["mAP"]
    assert rc == 0 and mAP["p"] is None and "at least 2" in mAP["reason"]


def test_dry_run_prints_the_plan_and_writes_nothing(launched, tmp_path, capsys):
    assert launcher.main(launched.argv + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "train: nothing (transformer_2.pth exists)" in out
    assert "test: epochs none" in out and "already tested: [1, 2]" in out
    fresh = launch_args(launched.config, tmp_path / "fresh", "/nowhere", seeds=("5",),
                        extra=("--dry-run",))
    assert launcher.main(fresh) == 0
    out = capsys.readouterr().out
    assert "[seed 5]   train: epochs 1..2 (new run)" in out and "SOLVER.SEED 5" in out
    assert "test: epochs [1, 2]" in out and "Dry run: nothing was started or written." in out
    assert not (tmp_path / "fresh").exists()


def test_training_crash_is_reported_its_checkpoints_tested_then_resumed(launched, tmp_path,
                                                                       monkeypatch, synth_root):
    argv = launch_args(launched.config, tmp_path / "logs", synth_root, seeds=("0",))
    exp = experiment(argv)
    monkeypatch.setattr(launcher, "TRAIN_SCRIPT",
                        wrapper(tmp_path, "crash_train.py", CRASH_TRAIN_IN_EPOCH_2))
    rc, out = run_main(argv)
    assert rc == 1
    log = os.path.join(exp.train_dir(0), "launcher_train_output.log")
    assert f"train failed for seed 0: train.py exited with code 1 (log: {log})" in out
    assert "simulated crash in epoch 2" in open(log).read()
    assert os.path.isfile(os.path.join(exp.test_dir(0, 1), "summary.json"))  # still tested
    record = load_json(exp.summary_base + ".json")["seeds"][0]
    assert record["tested"] == [1] and record["last"] is None
    assert not record["in_statistics"] and "training incomplete" in record["note"]

    monkeypatch.setattr(launcher, "TRAIN_SCRIPT", os.path.join(ROOT, "train.py"))
    rc, out = run_main(argv + ["--train-only"])
    assert rc == 0
    assert "Train epochs 2..2 (resume after epoch 1)" in out
    assert "Tests skipped (--train-only)" in out and "Test epoch" not in out
    assert sorted(list_checkpoints(exp.train_dir(0))) == [1, 2]
    assert "Resuming after epoch 1" in open(os.path.join(exp.train_dir(0),
                                                         "train_log.txt")).read()


# ---------------------------------------------------------------------------------------------
def dry_run(capsys, config, *flags, opts=()):
    argv = ["--config", config, "--seeds", "0", "--epochs", "2", "--output-root", "/nowhere",
            "--dry-run", *flags, "--opts", *opts]
    assert launcher.main(argv) == 0
    return capsys.readouterr().out


def test_test_opts_go_to_test_py_only_and_to_their_own_folder(launched, capsys):
    out = dry_run(capsys, launched.config, "--test-opts", "TEST.NECK_FEAT", "after")
    train_line = next(line for line in out.splitlines() if "train: epochs" in line)
    test_line = next(line for line in out.splitlines() if "test command" in line)
    assert "NECK_FEAT" not in train_line
    assert test_line.endswith("TEST.NECK_FEAT after")
    assert "/test-t" in test_line
    plain = dry_run(capsys, launched.config)
    assert "NECK_FEAT" not in plain and "/test-t" not in plain


def test_toggles_override_the_yaml_only_when_given(launched, capsys):
    config = launched.config  # SupCon on, no phase plan
    out = dry_run(capsys, config)
    assert "toggles: none (the YAML decides)" in out and "SupCon on" in out
    assert "_yaml_e2_seed0" in out and "LOSS.SUPCON.ENABLE" not in out
    out = dry_run(capsys, config, "--no-supcon")
    assert "SupCon off" in out and "LOSS.SUPCON.ENABLE False" in out and "_nosup_e2_" in out
    out = dry_run(capsys, config, "--baseline")
    assert "phase plan off" in out and "SupCon off" in out and "TripletX off" in out
    out = dry_run(capsys, config, "--baseline", "--supcon")
    assert "SupCon on" in out and "_baseline-supcon_e2_" in out
    out = dry_run(capsys, config, "--phased", "--tripletx", "--no-supcon")
    assert "phase plan on" in out and "TripletX on" in out and "SupCon off" in out
    assert "LOSS.PHASED.W_SUP_SPEC \"['const:0.0', 'const:0.0', 'const:0.0']\"" in out
    # the defaults' METRIC_SEQ starts with tripletx: --phased alone is an invalid plan
    with pytest.raises(ValueError, match="with --phased gives an invalid phase plan.*TRIPLETX"):
        launcher.main(["--config", config, "--phased", "--dry-run"])
    with pytest.raises(SystemExit):  # contradictory toggles are refused
        launcher.parse_args(["--config", config, "--tripletx", "--no-tripletx"])


def test_no_tripletx_maps_the_metric_sequence(capsys, repo_root):
    config = os.path.join(repo_root, "configs", "Synth",
                          "synth_ce_triplet_tripletx_supcon_prebn_brightness.yml")
    out = dry_run(capsys, config, "--phased", "--no-tripletx")
    assert "LOSS.PHASED.METRIC_SEQ \"['triplet', 'triplet', 'triplet']\"" in out
    assert "brightness routing off" in out and "tripletx=" not in out


def test_run_names_depend_on_what_is_trained_only(launched):
    def names(*opts):
        exp = experiment(["--config", launched.config, "--opts", *opts])
        return os.path.basename(exp.run_dir(0)), exp.test_tag

    plain = names()
    assert plain == ("tiny_yaml_e120_seed0", "test")
    assert names("DATASETS.ROOT_DIR", "/x", "MODEL.DEVICE", "cuda", "SOLVER.EVAL_PERIOD", "5",
                 "TEST.VIS_QUERIES", "2") == plain
    # every key utils.provenance calls runtime-only stays out of the name
    assert names("DATALOADER.NUM_WORKERS", "3", "MODEL.DIST_TIMEOUT_S", "9",
                 "TEST.EVAL_BLOCK", "5") == plain
    margin = names("LOSS.TRIPLET.MARGIN", "0.5")
    assert margin[0].startswith("tiny_yaml-o") and margin == names("LOSS.TRIPLET.MARGIN", "0.5")
    assert margin != names("LOSS.TRIPLET.MARGIN", "0.6")
    rerank = names("TEST.RE_RANKING", "True")
    assert rerank[0] == plain[0] and rerank[1].startswith("test-t")
    with pytest.raises(ValueError, match="SOLVER.SEED.*launcher sets itself"):
        names("SOLVER.SEED", "3")
    with pytest.raises(ValueError, match="LOSS.SUPCON.ENABLE.*--no-supcon"):
        experiment(["--config", launched.config, "--no-supcon", "--opts",
                    "LOSS.SUPCON.ENABLE", "True"])
    with pytest.raises(FileNotFoundError, match="missing.yml"):
        experiment(["--config", "missing.yml"])


# ---------------------------------------------------------------------------------------------
def test_mean_std_is_the_sample_std():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and std == pytest.approx(np.sqrt(5.0 / 3.0))  # sum sq dev 5, n - 1 = 3
    assert mean_std([7.0]) == (7.0, None)
    assert mean_std([]) == (None, None)


def test_paired_ttest_matches_the_formula():
    a, b = [80.0, 82.5, 79.0, 81.0], [79.0, 80.0, 79.5, 78.0]
    d = np.subtract(a, b)
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    p = 2 * sps.t.sf(abs(t), len(d) - 1)
    res = paired_ttest(a, b)
    assert res["t"] == pytest.approx(t) and res["p"] == pytest.approx(p)
    assert res["n"] == 4 and res["mean_diff"] == pytest.approx(d.mean()) and res["reason"] is None
    one = paired_ttest([1.0], [2.0])
    assert one["p"] is None and "at least 2" in one["reason"]
    same = paired_ttest([1.0, 2.0], [0.5, 1.5])
    assert same["p"] is None and "zero variance" in same["reason"]
    with pytest.raises(ValueError, match="equally long"):
        paired_ttest([1.0, 2.0], [1.0])


# ---------------------------------------------------------------------------------------------
# nothing trained or tested under another config is reused
def edit_yaml(path, key, value):
    tree = yaml.safe_load(open(path))
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    with open(path, "w") as f:
        yaml.safe_dump(tree, f)


def test_an_edited_recipe_is_refused_until_its_run_is_discarded(launched, tmp_path, synth_root):
    # a copy of seed 0's run folder and of the recipe, under the same names
    import shutil
    config = str(tmp_path / "tiny.yml")
    shutil.copy(launched.config, config)
    run = os.path.basename(launched.exp.run_dir(0))
    shutil.copytree(os.path.join(launched.root, run), tmp_path / "logs" / run)
    argv = launch_args(config, tmp_path / "logs", synth_root, seeds=("0",))
    exp = experiment(argv)
    old_lr = load_config(config).SOLVER.BASE_LR
    edit_yaml(config, "SOLVER.BASE_LR", 2 * old_lr)
    before = snapshot(tmp_path / "logs")
    # what the run folder says it holds, from the launcher's record down to the final checkpoint
    evidence = [os.path.join(exp.run_dir(0), "run_config.yaml"),
                os.path.join(exp.train_dir(0), "config.yaml")]
    for drop in [None] + evidence:
        if drop is not None:
            os.remove(drop)
            before = snapshot(tmp_path / "logs")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), \
                pytest.raises(ValueError, match="(?s)SOLVER.BASE_LR: 0.001 -> 0.002.*"
                                                "--output-root.*--discard-stale"):
            launcher.main(argv)
        assert "Skip training" not in buf.getvalue() and "Train epochs" not in buf.getvalue()
        assert snapshot(tmp_path / "logs") == before          # refused before any work
    rc, out = run_main(argv + ["--dry-run"])
    assert rc == 0 and "refused" in out and "SOLVER.BASE_LR: 0.001 -> 0.002" in out
    # where the data lives is compared too (provenance does not call it runtime-only) ...
    edit_yaml(config, "SOLVER.BASE_LR", old_lr)
    with pytest.raises(ValueError, match="DATASETS.ROOT_DIR"):
        run_main(launch_args(config, tmp_path / "logs", str(tmp_path), seeds=("0",)))
    # ... the worker count is not (it provably does not change the weights)
    rc, out = run_main(argv + ["DATALOADER.NUM_WORKERS", "1", "--train-only"])
    assert rc == 0 and "[seed 0] Skip training" in out

    edit_yaml(config, "SOLVER.BASE_LR", 2 * old_lr)
    rc, out = run_main(argv + ["--discard-stale", "--train-only"])
    assert rc == 0, out[-3000:]
    assert "SOLVER.BASE_LR" in out and "Train epochs 1..2 (new run)" in out
    assert not os.path.exists(os.path.join(exp.run_dir(0), launched.exp.test_tag))
    for path in (os.path.join(exp.run_dir(0), "run_config.yaml"),
                 os.path.join(exp.train_dir(0), "config.yaml")):
        assert load_config(config_text=open(path).read()).SOLVER.BASE_LR == 2 * old_lr


def test_a_retrained_checkpoint_is_tested_again(tmp_path, launched, synth_root):
    argv = ["--config", launched.config, "--seeds", "0", "--epochs", "1",
            "--output-root", str(tmp_path / "logs"), "--opts", "DATASETS.ROOT_DIR", synth_root]
    exp = experiment(argv)
    rc, out = run_main(argv)
    assert rc == 0 and out.count("Test epoch") == 1, out[-3000:]
    result = os.path.join(exp.test_dir(0, 1), "summary.json")
    # mark the old result, so the numbers reported below show which test they come from
    data = load_json(result)
    data["metrics"]["mAP"] = 99.0
    with open(result, "w") as f:
        json.dump(data, f)
    import shutil
    shutil.rmtree(exp.train_dir(0))
    rc, out = run_main(argv)
    assert rc == 0, out[-3000:]
    assert "Train epochs 1..1 (new run)" in out and "[seed 0] Test epoch 1" in out
    assert "(already tested)" not in out and "changed since it was tested" in out
    new_map = load_json(result)["metrics"]["mAP"]
    assert new_map != 99.0
    last = load_json(exp.summary_base + ".json")["seeds"][0]["last"]
    assert last["metrics"]["mAP"] == pytest.approx(new_map)
