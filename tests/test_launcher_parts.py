"""The launcher package's parts without running anything: toggles as config overlays (against
the hand-written rewrite they replaced), the checkpoint file names, and the ablation benches'
condition lists."""
import glob
import importlib.util
import itertools
import os

import pytest

from configs import load_config
from launcher import ablation
from launcher.experiment import make_experiment
from launcher.toggles import effective_flags, toggle_overrides, variant_name
from solver.phase_plan import PhasePlan
from utils.run_files import checkpoint_name, checkpoint_path, list_checkpoints

MODES = (None, "phased", "baseline")
SWITCHES = (None, True, False)


def reference_overrides(cfg, mode, supcon, tripletx):
    """The launcher's toggle rewrite before the toggles became overlays, kept verbatim as the
    reference the overlays must reproduce."""
    out = []
    if mode == "phased":
        out += [("LOSS.PHASED.ENABLE", "True"), ("DATALOADER.PHASED.ENABLE", "True")]
    elif mode == "baseline":
        out += [("LOSS.PHASED.ENABLE", "False"), ("DATALOADER.PHASED.ENABLE", "False")]
        supcon = False if supcon is None else supcon
        tripletx = False if tripletx is None else tripletx
    phased = mode == "phased" or (mode is None and bool(cfg.LOSS.PHASED.ENABLE))
    n_phases = len(cfg.LOSS.PHASED.BOUNDARIES) + 1
    if supcon is True:
        out.append(("LOSS.SUPCON.ENABLE", "True"))
    elif supcon is False:
        out.append(("LOSS.SUPCON.ENABLE", "False"))
        if phased:
            out.append(("LOSS.PHASED.W_SUP_SPEC", str(["const:0.0"] * n_phases)))
    if tripletx is True:
        out.append(("LOSS.TRIPLETX.ENABLE", "True"))
    elif tripletx is False:
        out += [("LOSS.TRIPLETX.ENABLE", "False"), ("LOSS.BRIGHTNESS.ENABLE", "False")]
        if phased:
            seq = ["triplet" if m in ("tripletx", "routed") else str(m)
                   for m in cfg.LOSS.PHASED.METRIC_SEQ]
            out.append(("LOSS.PHASED.METRIC_SEQ", str(seq)))
    return out


def flags_of(mode, supcon, tripletx):
    flags = [f"--{mode}"] if mode else []
    if supcon is not None:
        flags.append("--supcon" if supcon else "--no-supcon")
    if tripletx is not None:
        flags.append("--tripletx" if tripletx else "--no-tripletx")
    return flags


def recipes(repo_root):
    """The image re-ID recipes the toggles apply to (the text-based person search ones,
    MODEL.TASK 'tbps', have no SupCon, TripletX or CE + Triplet baseline: a toggle on them is
    refused at config load)."""
    return sorted(p for p in glob.glob(os.path.join(repo_root, "configs", "Synth", "*.yml"))
                  + glob.glob(os.path.join(repo_root, "configs", "Market", "*.yml"))
                  if load_config(p, check_paths=False).MODEL.TASK == "reid")


def test_toggle_overlays_give_the_configs_of_the_hand_written_rewrite(repo_root):
    paths = recipes(repo_root)
    assert len(paths) >= 15
    checked = 0
    for path in paths:
        cfg = load_config(path, check_paths=False)
        for mode, supcon, tripletx in itertools.product(MODES, SWITCHES, SWITCHES):
            flags = flags_of(mode, supcon, tripletx)
            ours = toggle_overrides(cfg, flags)
            expected = reference_overrides(cfg, mode, supcon, tripletx)
            assert ours == expected, (path, flags)
            a = load_config(path, [x for pair in ours for x in pair], check_paths=False)
            b = load_config(path, [x for pair in expected for x in pair], check_paths=False)
            assert a.dump() == b.dump(), (path, flags)
            checked += 1
    assert checked == len(paths) * 27


def test_toggles_name_the_variant_and_imply_in_a_fixed_order():
    assert variant_name([]) == "yaml"
    assert variant_name(["--no-tripletx", "--no-supcon", "--phased"]) == "phased-nosup-notx"
    assert variant_name(["--supcon", "--baseline"]) == "baseline-supcon"
    assert effective_flags(["--baseline"]) == ["--baseline", "--no-supcon", "--no-tripletx"]
    assert effective_flags(["--baseline", "--tripletx"]) == ["--baseline", "--no-supcon",
                                                             "--tripletx"]
    with pytest.raises(ValueError, match="contradict"):
        effective_flags(["--supcon", "--no-supcon"])
    with pytest.raises(ValueError, match="unknown toggles"):
        effective_flags(["--fast"])


def test_an_overlay_that_breaks_the_plan_is_refused_by_the_plan(repo_root):
    # the phased Synth recipe's plan routes by brightness in phase B; --phased --no-tripletx
    # rewrites it, --phased alone on a recipe whose METRIC_SEQ needs TripletX does not validate
    phased = os.path.join(repo_root, "configs", "Synth",
                          "synth_ce_triplet_tripletx_supcon_prebn_brightness.yml")
    cfg = load_config(phased, [x for pair in toggle_overrides(load_config(phased),
                                                              ["--phased", "--no-tripletx"])
                               for x in pair])
    assert list(cfg.LOSS.PHASED.METRIC_SEQ) == ["triplet"] * 3
    PhasePlan(cfg)  # valid
    baseline = os.path.join(repo_root, "configs", "Synth", "synth_baseline.yml")
    with pytest.raises(ValueError, match="--phased gives an invalid phase plan"):
        make_experiment(baseline, "/nowhere", 2, 1, flags=["--phased"])


def test_checkpoint_names_are_defined_once(tmp_path):
    # the file-name pattern is spelled in utils/run_files.py only (no second definition)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spelled = []
    for folder, _, files in os.walk(root):
        if os.path.relpath(folder, root).split(os.sep)[0] in (".venv", ".git", "tests", "data",
                                                               "logs"):
            continue
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name)).read()
                if "transformer_{" in text or "transformer_(\\d" in text:
                    spelled.append(os.path.relpath(os.path.join(folder, name), root))
    assert spelled == [os.path.join("utils", "run_files.py")], spelled
    assert checkpoint_name(7) == "transformer_7.pth"
    for name in ("transformer_3.pth", "transformer_12.pth", "transformer_x.pth", "resume.pth",
                 "transformer_3.pth.tmp", "my_transformer_4.pth"):
        (tmp_path / name).write_text("")
    assert list_checkpoints(str(tmp_path)) == {3: checkpoint_path(str(tmp_path), 3),
                                               12: checkpoint_path(str(tmp_path), 12)}
    assert list(list_checkpoints(str(tmp_path))) == [3, 12]
    assert list_checkpoints(str(tmp_path / "missing")) == {}


def lookup(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def load_bench(repo_root, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(repo_root, "bench",
                                                                     f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["ablation_phased", "ablation_text"])
def test_ablation_conditions_build_valid_launcher_experiments(repo_root, name, tmp_path):
    bench = load_bench(repo_root, name)
    names = [c.name for c in bench.CONDITIONS]
    assert len(set(names)) == len(names)
    run_dirs = set()
    for cond in bench.CONDITIONS:
        exp = ablation.condition_experiment(cond, 0, str(tmp_path))  # validates the phase plan
        cfg = load_config(exp.config, [x for pair in exp.user_opts for x in pair])
        assert exp.epochs == cfg.SOLVER.MAX_EPOCHS and exp.save_every == exp.epochs
        assert exp.checkpoint_epochs() == [exp.epochs]  # only the last epoch is tested
        assert cfg.SOLVER.EVAL_PERIOD == 0 and exp.test_tag == "test"
        for key, value in zip(cond.opts[::2], cond.opts[1::2]):  # overrides reach the config
            assert dict(exp.user_opts)[key] == value
            assert lookup(cfg, key) == lookup(load_config(exp.config, [key, value]), key)
        assert exp.test_command(0, exp.epochs, "w.pth")[-4:] == list(ablation.TEST_OPTS)
        run_dirs.add(exp.run_dir(0))
    assert len(run_dirs) == len(bench.CONDITIONS)  # every condition has its own run folder
    assert not os.listdir(tmp_path)  # building the experiments wrote nothing


def test_ablation_options_merge_like_yacs_and_epochs_override():
    assert ablation.merge_opts(["A.B", "1", "C.D", "2"], ["A.B", "3"]) == ["A.B", "3", "C.D", "2"]
    cond = ablation.Condition("x", "synth_baseline.yml", ("SOLVER.EVAL_PERIOD", "5"))
    exp = ablation.condition_experiment(cond, 4, "/nowhere", extra=["LOSS.TRIPLET.MARGIN", "0.5"],
                                        epochs=1)
    assert exp.epochs == 1 and dict(exp.user_opts)["SOLVER.EVAL_PERIOD"] == "0"
    assert exp.run_dir(4).endswith("_e1_seed4") and "-o" in exp.variant


def test_best_epoch_is_selected_on_the_split_each_summary_names(tmp_path, repo_root):
    import torch

    from launcher.identity import expected_test_config
    from launcher.report import build_summary
    from utils.checkpoint import save_checkpoint
    from utils.summary import MetricSet, TestSummary, weight_fields

    config = os.path.join(repo_root, "configs", "Synth", "synth_baseline.yml")
    exp = make_experiment(config, str(tmp_path), 2, 1)

    def write(epoch, test_map, val_map, select_on):
        os.makedirs(exp.train_dir(0), exist_ok=True)
        weight = checkpoint_path(exp.train_dir(0), epoch)
        save_checkpoint(weight, torch.nn.Linear(1, 1), exp.train_config(0), epoch, 4, 2, 1)
        metrics = {"R1": 50.0, "R5": 60.0, "R10": 70.0, "mAP": test_map, "mINP": 10.0}
        TestSummary(metrics=metrics, **weight_fields(weight), epoch=epoch, dataset="synth",
                    test_config_sha256=expected_test_config(exp, 0, epoch, weight),
                    split=["test"], feature="f", feat_norm=True, distance="euclidean",
                    re_ranking="none", max_rank=50, clip_fusion="off", seconds=1.0,
                    extra_metrics={"val": MetricSet(split=["val"],
                                                    metrics=dict(metrics, mAP=val_map))},
                    select_on=select_on).write(os.path.join(exp.test_dir(0, epoch),
                                                            "summary.json"))

    # epoch 1 is better on val, epoch 2 on test: the selection split decides
    for select_on in (None, "val"):
        write(1, 30.0, 45.0, select_on)
        write(2, 40.0, 35.0, select_on)
        summary = build_summary(exp, [0], [], None)
        best = summary["seeds"][0]["best"]
        if select_on is None:
            assert best == {"epoch": 2, "metrics": dict(best["metrics"], mAP=40.0)}
            assert "selected on the test split (test)" in summary["selection"]
        else:
            assert best["epoch"] == 1 and best["metrics"]["mAP"] == 30.0  # test numbers shown
            assert "on the selection split (val)" in summary["selection"]
        assert summary["seeds"][0]["last"]["metrics"]["mAP"] == 40.0


def test_kept_results_of_another_training_config_are_refused(tmp_path):
    import json

    from launcher.identity import RUN_CONFIG_FILE, StaleRun
    from launcher.report import build_summary

    cond = ablation.Condition("x", "synth_baseline.yml")
    exp = ablation.condition_experiment(cond, 0, str(tmp_path), epochs=1)
    os.makedirs(exp.run_dir(0))
    recorded = os.path.join(exp.run_dir(0), RUN_CONFIG_FILE)
    other = load_config(exp.config, exp.train_opts(0) + ["SOLVER.BASE_LR", "0.5"])
    with open(recorded, "w") as f:
        f.write(other.dump())
    with open(ablation.result_path(exp, cond, 0), "w") as f:
        json.dump({"condition": "x"}, f)
    with pytest.raises(StaleRun, match=r"(?s)SOLVER.BASE_LR: 0.5 -> .*--discard-stale"):
        ablation.kept_result(exp, cond, 0)
    assert ablation.kept_result(exp, cond, 0, discard_stale=True) is None
    # the launcher's summary leaves such a seed out and says why
    record = build_summary(exp, [0], [], None)["seeds"][0]
    assert not record["in_statistics"] and record["best"] is None
    assert "SOLVER.BASE_LR" in record["note"]
    # recorded with this config, the kept result counts
    with open(recorded, "w") as f:
        f.write(exp.train_config(0).dump())
    assert ablation.kept_result(exp, cond, 0) == {"condition": "x"}
