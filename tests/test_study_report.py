"""The study table (launcher/study.py) from launcher summaries written by the launcher's own
``build_summary`` / ``write_summaries`` (seed records made of real ``TestSummary`` objects through
``launcher.report.epoch_entry``, so the input format cannot drift from the launcher's): means,
stds, Δ and paired-t p-values against a scipy-free computation, the query-subset columns, the
header, the CSV, and every refusal."""
import csv
import io
import json
import math
import os
import statistics

import pytest
import yaml

from launcher import report, study
from launcher.experiment import Experiment
from utils.summary import MetricSet, TestSummary

METRICS = ("R1", "R5", "R10", "mAP", "mINP")
EVAL = dict(feature="img_feat / txt_feat (projected global features)", feat_norm=True,
            distance="cosine", re_ranking="none", max_rank=50, clip_fusion="off")


def numbers(base: float) -> dict:
    """Distinct, deterministic numbers per metric around ``base``."""
    return {k: base + i * 1.5 for i, k in enumerate(METRICS)} | {"num_valid": 10,
                                                                   "num_skipped": 0}


def make_summary(epoch, test, val, twin, dataset="synth", cost=None, feature=None):
    return TestSummary(protocol="text-to-image", metrics=numbers(test), weight=f"/w/{epoch}.pth",
                       weight_size=1, weight_mtime_ns=1, test_config_sha256="x" * 64,
                       epoch=epoch, dataset=dataset, split=["test"], seconds=1.0,
                       extra_metrics={"val": MetricSet(split=["val"], metrics=numbers(val)),
                                      "test-near_twin": MetricSet(split=["test"],
                                                                  metrics=numbers(twin))},
                       select_on="val", cost=cost,
                       **{**EVAL, **({"feature": feature} if feature else {})})


def cost(s_iter):
    return {"trainable_params": 1000, "total_params": 1200, "s_per_iteration": s_iter,
            "s_per_epoch": 10 * s_iter, "epochs_measured": [1, 2], "train_peak_memory_mb": 500.0,
            "train_peak_memory_kind": "cpu max rss", "device": "cpu", "s_per_query": 0.001,
            "s_per_gallery_image": 0.002}


def write_launcher_summary(tmp_path, monkeypatch, name, per_seed, dataset="synth",
                           run_config=None, s_iter=0.1, feature=None):
    """A launcher summary of experiment ``name`` through report.build_summary / write_summaries.

    per_seed: {seed: {epoch: (test, val, twin)}} (base numbers of each tested epoch; the best
    epoch is the launcher's val selection). Each seed's run folder gets run_config.yaml
    (``run_config`` overrides its DATASETS keys) and launcher.json."""
    root = tmp_path / name
    records = {}
    for seed, epochs in per_seed.items():
        run_dir = root / f"{name}_seed{seed}"
        run_dir.mkdir(parents=True)
        cfg = {"DATASETS": {"NAMES": "synth", "ROOT_DIR": str(tmp_path / "data"),
                            "SYNTH_TEST_IDS": 100}, "TEST": {"MAX_RANK": 50},
               "SOLVER": {"SEED": seed}}
        cfg["DATASETS"].update(run_config or {})
        (run_dir / "run_config.yaml").write_text(yaml.safe_dump(cfg))
        (run_dir / "launcher.json").write_text(json.dumps({"config_sha256": f"{name}{seed}" * 8}))
        summaries = {e: make_summary(e, *v, dataset=dataset, cost=cost(s_iter), feature=feature)
                     for e, v in epochs.items()}
        best = max(sorted(summaries), key=lambda e: (summaries[e].selection_metrics()["mAP"],
                                                     summaries[e].selection_metrics()["R1"], -e))
        last = max(summaries)
        records[seed] = {"seed": seed, "run_dir": str(run_dir), "checkpoints": sorted(summaries),
                         "tested": sorted(summaries), "untested": [],
                         "best": report.epoch_entry(best, summaries[best]),
                         "last": report.epoch_entry(last, summaries[last]),
                         "in_statistics": True, "note": None, "_summaries": summaries}
    exp = Experiment(config=str(tmp_path / f"{name}.yml"), root=str(root), epochs=2, save_every=1,
                     variant="yaml", flags=[], toggle_opts=[], user_opts=[], test_opts=[],
                     test_tag="test", plan_table="", recipe="")
    monkeypatch.setattr(report, "seed_record", lambda e, seed: records[seed])
    summary = report.build_summary(exp, sorted(per_seed), [], None)
    report.write_summaries(exp, summary)
    return exp.summary_base + ".json"


def paired_p_df2(a, b):
    """Two-sided paired-t p for 3 pairs without scipy: df = 2, where Student's t CDF is
    F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so p = 1 - |t| / sqrt(2 + t^2)."""
    d = [x - y for x, y in zip(a, b)]
    t = statistics.mean(d) / (statistics.stdev(d) / math.sqrt(len(d)))
    return statistics.mean(d), 1 - abs(t) / math.sqrt(2 + t * t)


# three rows, three seeds; epoch 1 or 2 is the val-best depending on the seed
BASE = {0: {1: (40, 30, 20), 2: (42, 29, 21)}, 1: {1: (41, 33, 19), 2: (43, 32, 22)},
        2: {1: (39, 31, 18), 2: (44, 35, 23)}}
PLUS = {0: {1: (45, 36, 26), 2: (44, 35, 27)}, 1: {1: (47, 34, 24), 2: (48, 37, 29)},
        2: {1: (46, 38, 25), 2: (46.5, 37, 30)}}
BOTH = {0: {1: (50, 30, 30), 2: (52, 41, 31)}, 1: {1: (50.5, 40, 29), 2: (49, 39, 32.5)},
        2: {1: (49, 38, 28), 2: (51, 40, 33)}}


@pytest.fixture
def three_rows(tmp_path, monkeypatch):
    return {name: write_launcher_summary(tmp_path, monkeypatch, name, spec, s_iter=s)
            for name, spec, s in (("base", BASE, 0.1), ("plus", PLUS, 0.12),
                                  ("both", BOTH, 0.15))}


def rows_of(paths, names=("Base", "+X", "+both")):
    return [study.load_row(n, p) for n, p in zip(names, paths.values())]


def seed_values(spec, kind, scope, metric):
    """The per-seed number of ``metric`` from the spec: the val-best (or last) epoch."""
    out = []
    for seed in sorted(spec):
        epochs = spec[seed]
        if kind == "best":   # the val mAP decides (ties cannot occur in these specs)
            epoch = max(sorted(epochs), key=lambda e: (numbers(epochs[e][1])["mAP"], -e))
        else:
            epoch = max(epochs)
        base = epochs[epoch][0 if scope == "overall" else 2]
        out.append(numbers(base)[metric])
    return out


def test_means_deltas_and_p_values_match_a_manual_paired_t(three_rows):
    table = study.build_table(rows_of(three_rows), "Base", subset="near_twin",
                              command="python -m launcher.study ...")
    specs = {"Base": BASE, "+X": PLUS, "+both": BOTH}
    checked = 0
    for kind in ("best", "last"):
        assert table["kinds"][kind]["seeds"] == [0, 1, 2]
        for r in table["kinds"][kind]["rows"]:
            for scope in ("overall", "near_twin"):
                for m in ("R1", "R5", "mAP", "mINP"):
                    cell = r["scopes"][scope][m]
                    ours = seed_values(specs[r["row"]], kind, scope, m)
                    assert cell["values"] == ours
                    assert cell["mean"] == pytest.approx(statistics.mean(ours))
                    assert cell["std"] == pytest.approx(statistics.stdev(ours))
                    if r["row"] == "Base":
                        assert cell["delta"] is None
                        continue
                    base = seed_values(BASE, kind, scope, m)
                    diff, p = paired_p_df2(ours, base)
                    assert cell["delta"]["mean_diff"] == pytest.approx(diff)
                    assert cell["delta"]["p"] == pytest.approx(p, rel=1e-9)
                    checked += 1
    assert checked == 2 * 2 * 2 * 4
    # the val-selected epochs differ by seed: seed 0 of Base picks epoch 1, seed 2 epoch 2
    assert table["kinds"]["best"]["rows"][0]["epochs"] == [1, 1, 2]
    # the launcher's own means agree with the table's (same seeds)
    base_summary = json.load(open(three_rows["base"]))
    assert (table["kinds"]["last"]["rows"][0]["scopes"]["overall"]["mAP"]["mean"]
            == pytest.approx(base_summary["aggregate"]["last"]["metrics"]["mAP"]["mean"]))
    assert (table["kinds"]["best"]["rows"][0]["scopes"]["near_twin"]["R1"]["mean"]
            == pytest.approx(base_summary["aggregate_subsets"]["best"]["near_twin"]["metrics"]
                             ["R1"]["mean"]))
    # cost: the ratio of s / iteration to the baseline's; GFLOP/s not recorded
    cost = {c["row"]: c for c in table["cost"]}
    assert cost["+both"]["s_per_iteration_vs_baseline"] == pytest.approx(1.5)
    assert cost["Base"]["trainable_params"]["mean"] == 1000
    assert cost["Base"]["fp32_matmul_gflops"] is None


def test_files_header_and_csv(three_rows, tmp_path):
    out = str(tmp_path / "tables" / "thesis")
    argv = ["--row", "Base", three_rows["base"], "--row", "+X", three_rows["plus"],
            "--row", "+both", os.path.dirname(three_rows["both"]),   # a root holding one
            "--subset", "near_twin", "--out", out, "--title", "Thesis table"]
    assert study.main(argv) == 0
    md = open(out + ".md").read()
    assert md.startswith("# Thesis table")
    assert "python -m launcher.study --row Base" in md
    for path in three_rows.values():
        digest = study._file_facts(path)[0]
        assert f"`{path}` (sha256 {digest[:16]}" in md
    assert "seed 0 base0base0ba," in md    # the run's training-config fingerprint
    assert "## best (val-selected) — query subset 'near_twin'" in md
    assert "## last — whole test split" in md
    assert "| +both | 2/1/2 |" in md
    assert "not recorded" in md     # GFLOP/s
    table = json.load(open(out + ".json"))
    rows = list(csv.DictReader(io.StringIO(open(out + ".csv").read())))
    # 3 rows x 2 kinds x 2 scopes x 4 metrics, then 3 rows x 5 cost fields
    assert len(rows) == 3 * 2 * 2 * 4 + 3 * 5
    line = [r for r in rows if (r["row"], r["kind"], r["scope"], r["metric"])
            == ("+X", "best", "near_twin", "mAP")][0]
    cell = table["kinds"]["best"]["rows"][1]["scopes"]["near_twin"]["mAP"]
    assert float(line["p"]) == pytest.approx(cell["delta"]["p"])
    assert float(line["delta_vs_baseline"]) == pytest.approx(cell["delta"]["mean_diff"])
    # the Markdown Δ cell of that number
    assert f"{cell['delta']['mean_diff']:+.2f} (p {cell['delta']['p']:.3g})" in md
    # --check: current, then stale after a summary is rewritten
    assert study.main(["--check", out + ".json"]) == 0
    with open(three_rows["plus"], "a") as f:
        f.write("\n")
    assert study.main(["--check", out + ".json"]) == 1
    assert study.check_table(out + ".json")[0].startswith("+X: ")


def test_row_from_root_and_config(three_rows, tmp_path):
    root = os.path.dirname(three_rows["base"])
    row = study.load_row("Base", root, str(tmp_path / "base.yml"))
    assert row.path == three_rows["base"]
    with pytest.raises(study.StudyError, match="no summary_other_"):
        study.load_row("Base", root, "configs/other.yml")


def test_refuses_rows_evaluated_on_another_dataset(tmp_path, monkeypatch):
    a = write_launcher_summary(tmp_path, monkeypatch, "a", BASE)
    b = write_launcher_summary(tmp_path, monkeypatch, "b", PLUS, dataset="cuhkpedes")
    with pytest.raises(study.StudyError) as err:
        study.build_table([study.load_row("Base", a), study.load_row("+X", b)], "Base")
    assert "evaluation.dataset" in str(err.value)
    assert 'Base = "synth"' in str(err.value) and '+X = "cuhkpedes"' in str(err.value)


def test_different_models_need_models_differ_and_are_named(tmp_path, monkeypatch):
    a = write_launcher_summary(tmp_path, monkeypatch, "a", BASE)
    b = write_launcher_summary(tmp_path, monkeypatch, "b", PLUS, feature="LGUR parts")
    rows = [study.load_row("ITC", a), study.load_row("LGUR", b)]
    with pytest.raises(study.StudyError, match="evaluation.feature"):
        study.build_table(rows, "ITC")
    table = study.build_table(rows, "ITC", models_differ=True)
    assert any("LGUR = LGUR parts" in n for n in table["notes"])
    assert study.FEATURE_FIELD not in table["evaluation"]   # not shown as "every row's"
    # only the feature may differ: another dataset is still refused
    c = write_launcher_summary(tmp_path, monkeypatch, "c", PLUS, dataset="cuhkpedes",
                               feature="LGUR parts")
    with pytest.raises(study.StudyError, match="evaluation.dataset"):
        study.build_table([rows[0], study.load_row("X", c)], "ITC", models_differ=True)


def test_refuses_rows_whose_run_configs_name_another_test_split(tmp_path, monkeypatch):
    a = write_launcher_summary(tmp_path, monkeypatch, "a", BASE)
    b = write_launcher_summary(tmp_path, monkeypatch, "b", PLUS,
                               run_config={"SYNTH_TEST_IDS": 50, "ROOT_DIR": "/elsewhere"})
    with pytest.raises(study.StudyError) as err:
        study.build_table([study.load_row("Base", a), study.load_row("+X", b)], "Base")
    msg = str(err.value)
    assert "run_config DATASETS.SYNTH_TEST_IDS" in msg and "Base = 100" in msg
    assert "ROOT_DIR" not in msg     # where the data lives is not what it is


def test_refuses_other_selection_and_other_test_folder(tmp_path, monkeypatch):
    a = write_launcher_summary(tmp_path, monkeypatch, "a", BASE)
    b = write_launcher_summary(tmp_path, monkeypatch, "b", PLUS)
    data = json.load(open(b))
    data["selected_on"], data["test_folder"] = "test", "test-t1234abcd"
    json.dump(data, open(b, "w"))
    with pytest.raises(study.StudyError) as err:
        study.build_table([study.load_row("Base", a), study.load_row("+X", b)], "Base")
    assert "selected_on" in str(err.value) and "test_folder" in str(err.value)


def test_refuses_a_row_whose_own_results_are_mixed(tmp_path, monkeypatch):
    a = write_launcher_summary(tmp_path, monkeypatch, "a", BASE)
    data = json.load(open(a))
    data["evaluation"]["re_ranking"] = {"mixed": ["none", "k-reciprocal"]}
    json.dump(data, open(a, "w"))
    with pytest.raises(study.StudyError, match="row Base .*re_ranking"):
        study.build_table([study.load_row("Base", a)], "Base")


def test_seed_sets_strict_or_intersection(tmp_path, monkeypatch):
    a = write_launcher_summary(tmp_path, monkeypatch, "a", BASE)
    b = write_launcher_summary(tmp_path, monkeypatch, "b", {s: PLUS[s] for s in (0, 1)})
    rows = [study.load_row("Base", a), study.load_row("+X", b)]
    with pytest.raises(study.StudyError, match=r"different seeds.*Base: \[0, 1, 2\]; \+X: "
                                               r"\[0, 1\].*--pair-on intersection"):
        study.build_table(rows, "Base")
    table = study.build_table(rows, "Base", pair_on="intersection")
    assert table["kinds"]["last"]["seeds"] == [0, 1]
    assert any("--pair-on intersection" in n for n in table["notes"])
    base = table["kinds"]["last"]["rows"][0]["scopes"]["overall"]["R1"]
    assert base["values"] == seed_values(BASE, "last", "overall", "R1")[:2]
    delta = table["kinds"]["last"]["rows"][1]["scopes"]["overall"]["R1"]["delta"]
    assert delta["n"] == 2
    assert "--pair-on intersection" in study.table_markdown(table)


def test_refuses_missing_subset_unknown_baseline_and_repeated_names(three_rows):
    rows = rows_of(three_rows)
    with pytest.raises(study.StudyError, match="no query subset 'hard'.*near_twin"):
        study.build_table(rows, "Base", subset="hard")
    with pytest.raises(study.StudyError, match="--baseline 'Nope' is not a row"):
        study.build_table(rows, "Nope")
    with pytest.raises(study.StudyError, match="given more than once"):
        study.build_table(rows[:1] * 2, "Base")


def test_a_seed_outside_the_statistics_is_left_out(tmp_path, monkeypatch):
    a = write_launcher_summary(tmp_path, monkeypatch, "a", BASE)
    data = json.load(open(a))
    data["seeds"][2]["in_statistics"] = False    # e.g. an untested checkpoint
    json.dump(data, open(a, "w"))
    b = write_launcher_summary(tmp_path, monkeypatch, "b", PLUS)
    with pytest.raises(study.StudyError, match="different seeds"):
        study.build_table([study.load_row("Base", a), study.load_row("+X", b)], "Base")
