"""The study table: several launcher summaries side by side, one of them the baseline.

    python -m launcher.study --row Base logs/study/base --row +IS-GVFC logs/study/isgvfc \\
        --row +TG-MIM logs/study/tgmim --row +both logs/study/both \\
        --baseline Base --subset near_twin --out logs/study/thesis_table

One row per ``--row NAME SOURCE [CONFIG]``: SOURCE is a launcher summary
(``summary_<stem>_<variant>_e<epochs>[_test-t<hash>].json``, ``launcher.report``) or the launcher's
``--output-root`` holding exactly one; with CONFIG (the launcher's ``--config``) the root's
summary of that recipe (``summary_<config stem>_*.json``, exactly one). The table is built from
the per-seed records of the summaries, never from the launcher's own means, so that seeds can be
paired across rows:

- for 'best' (the summaries' selection: 'val-selected' for text-to-image) and 'last': R1, R5,
  mAP, mINP on the whole test split and, with ``--subset NAME``, on that query subset of it
  (``TEST.QUERY_SUBSETS``, e.g. SynthPedes' ``near_twin``), each as mean ± sample std
  (``utils.stats.mean_std``, ddof=1) over the paired seeds;
- Δ vs the baseline row per metric: mean of the per-seed differences (row - baseline) and the
  two-sided paired t-test over the seeds, paired by number (``utils.stats.paired_ttest``,
  scipy.stats.ttest_rel). Only seeds in a summary's statistics count (complete training, every
  checkpoint tested: ``launcher.report``). Seed sets that differ between rows are an error
  (:class:`StudyError`) unless ``--pair-on intersection``, which uses the seeds every row has,
  for every row, and says so in the table;
- cost: the summaries' cost (``launcher.report.aggregate_cost``: the last epoch's test summary of
  each seed in the statistics): trainable params, s / iteration (and its ratio to the baseline's),
  train peak memory, s / query and s / gallery item, the device, and the machine's fp32 matmul
  GFLOP/s where a cost records it (``cost['fp32_matmul_gflops']``; 'not recorded' otherwise:
  timings of different machines are not comparable).

It never mixes numbers of different evaluations: every row must agree on the summaries'
``evaluation`` fields (split, dataset, protocol, feature, distance, re-ranking, CLIP fusion),
the selection split (``selected_on``), the test folder (``test`` / ``test-t<hash>``: TEST.*
options or --test-opts that change the numbers) and, from each seed's ``run_config.yaml``
(the resolved training config the launcher records), the DATASETS.* keys except ROOT_DIR and
the TEST.* keys that change numbers (``utils.provenance.is_test_runtime_only``; QUERY_SUBSETS is
checked as the subset itself). Any difference is a :class:`StudyError` naming the rows, the field
and the values. A field a row does not record (a summary from before it existed, a run folder
that is gone) is compared among the rows that do, and the table says so.

Output: ``OUT.md``, ``OUT.csv`` (long form: one line per row, kind, scope and metric) and
``OUT.json``, written atomically (``utils.atomic``). The Markdown header names the command and
every summary read with its sha256 and mtime, and the training configs' fingerprints
(``launcher.json``'s ``config_sha256``) of its seeds, so a stale table can be told;
``python -m launcher.study --check OUT.json`` says whether any input changed since.

Torch-free (like ``launcher.report``).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import glob
import hashlib
import io
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple


from utils.atomic import atomic_write_text
from utils.provenance import flatten_config, is_test_runtime_only
from utils.stats import mean_std, paired_ttest

from .identity import RUN_CONFIG_FILE
from .report import KINDS

#: the metrics of the table, in its column order
STUDY_METRICS = ("R1", "R5", "mAP", "mINP")
#: the cost fields shown (``launcher.report.COST_FIELDS`` names; the summary's ``cost``)
COST_COLUMNS = (("trainable_params", "trainable params", 0),
                ("s_per_iteration", "s / iteration", 4),
                ("train_peak_memory_mb", "train peak memory MB", 0),
                ("s_per_query", "s / query", 6),
                ("s_per_gallery_image", "s / gallery item", 6))
#: where a cost records the machine's fp32 matmul speed (../shared/tools/matmul_gflops.py)
GFLOPS_KEY = "fp32_matmul_gflops"
PAIR_POLICIES = ("strict", "intersection")
OVERALL = "overall"
LAUNCHER_RECORD = "launcher.json"


class StudyError(ValueError):
    """The rows cannot form one table (what differs is in the message); nothing was written."""


@dataclass
class Row:
    """One row: its name, the summary file it comes from and what the table needs of it."""

    name: str
    path: str
    summary: dict
    sha256: str
    mtime: str
    #: per seed, the flattened run_config.yaml (None when the run folder has none)
    run_configs: Dict[int, Optional[dict]] = field(default_factory=dict)
    #: per seed, launcher.json's config_sha256 (None when absent)
    config_sha256: Dict[int, Optional[str]] = field(default_factory=dict)


# -- inputs -------------------------------------------------------------------------------------
def resolve_summary(source: str, config: Optional[str] = None) -> str:
    """The launcher summary a row names: a summary file, or a root holding exactly one
    (``config``: exactly one of that recipe, ``summary_<config stem>_*.json``)."""
    if os.path.isfile(source):
        if config:
            raise StudyError(f"{source} is a file: a CONFIG is given only with a launcher root")
        return os.path.abspath(source)
    if not os.path.isdir(source):
        raise StudyError(f"{source}: no such summary file or launcher root")
    pattern = "summary_*.json"
    if config:
        pattern = f"summary_{os.path.splitext(os.path.basename(config))[0]}_*.json"
    found = sorted(glob.glob(os.path.join(source, pattern)))
    if len(found) == 1:
        return os.path.abspath(found[0])
    if not found:
        raise StudyError(f"{source}: no {pattern} there (run the launcher to the end first, or "
                         "name the summary file)")
    raise StudyError(f"{source} holds several {pattern} "
                     f"({', '.join(os.path.basename(f) for f in found)}): name one of the files")


def _file_facts(path: str) -> Tuple[str, str]:
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    mtime = datetime.datetime.fromtimestamp(os.stat(path).st_mtime).isoformat(timespec="seconds")
    return digest, mtime


def load_row(name: str, source: str, config: Optional[str] = None) -> Row:
    """Read one row's summary and, for each of its seeds, the run folder's training config and
    fingerprint where they still exist."""
    path = resolve_summary(source, config)
    with open(path) as f:
        summary = json.load(f)
    for key in ("seeds", "evaluation", "aggregate"):
        if key not in summary:
            raise StudyError(f"row {name}: {path} is not a launcher summary (no {key!r})")
    digest, mtime = _file_facts(path)
    row = Row(name=name, path=path, summary=summary, sha256=digest, mtime=mtime)
    for s in summary["seeds"]:
        seed, run_dir = int(s["seed"]), s.get("run_dir") or ""
        run_config = os.path.join(run_dir, RUN_CONFIG_FILE)
        row.run_configs[seed] = None
        if os.path.isfile(run_config):
            with open(run_config) as f:
                row.run_configs[seed] = flatten_config(f.read())
        record = os.path.join(run_dir, LAUNCHER_RECORD)
        row.config_sha256[seed] = None
        if os.path.isfile(record):
            with open(record) as f:
                row.config_sha256[seed] = json.load(f).get("config_sha256")
    return row


# -- the evaluation check -----------------------------------------------------------------------
def _evaluation_key(key: str) -> bool:
    """Run-config keys that decide which numbers a test gives (module docstring)."""
    if key.startswith("DATASETS."):
        return key != "DATASETS.ROOT_DIR"
    return (key.startswith("TEST.") and not is_test_runtime_only(key)
            and key not in ("TEST.WEIGHT", "TEST.QUERY_SUBSETS"))


def evaluation_settings(row: Row) -> Dict[str, object]:
    """{field: value} of what decided the row's numbers (module docstring); a field on which the
    row's own results disagree is an error."""
    s = row.summary
    out: Dict[str, object] = {}
    mixed = []
    for key, value in s["evaluation"].items():
        if isinstance(value, dict) and "mixed" in value:
            mixed.append(f"{key} {value['mixed']}")
        elif value is not None:
            out[f"evaluation.{key}"] = value
    if mixed:
        raise StudyError(f"row {row.name} ({row.path}): its own test results were evaluated "
                         f"differently ({'; '.join(mixed)}); re-test its checkpoints under one "
                         "setting before tabulating it")
    for key in ("selected_on", "test_folder"):
        if s.get(key) is not None:
            out[key] = s[key]
    per_seed = {seed: {k: v for k, v in cfg.items() if _evaluation_key(k)}
                for seed, cfg in row.run_configs.items() if cfg is not None}
    keys = sorted({k for cfg in per_seed.values() for k in cfg})
    for key in keys:
        values = {json.dumps(cfg.get(key), sort_keys=True) for cfg in per_seed.values()}
        if len(values) > 1:
            raise StudyError(f"row {row.name} ({row.path}): its seeds' run configs differ in "
                             f"{key} ({', '.join(sorted(values))})")
        out[f"run_config {key}"] = next(iter(per_seed.values())).get(key)
    return out


#: the evaluation field that names the model's retrieval feature: it differs whenever the rows
#: are different models (LGUR's parts vs a dual encoder's global features), which --models-differ
#: allows (the table lists each row's feature); every other field must still agree
FEATURE_FIELD = "evaluation.feature"


def check_evaluation(rows: Sequence[Row], models_differ: bool = False) -> List[str]:
    """Raise :class:`StudyError` when rows differ in any evaluation field (all differences in
    one message); returns notes on fields some rows do not record. ``models_differ`` accepts a
    differing retrieval feature (:data:`FEATURE_FIELD`, rows of different architectures) and
    notes each row's."""
    settings = {r.name: evaluation_settings(r) for r in rows}
    fields_ = sorted({f for s in settings.values() for f in s})
    differ, notes = [], []
    for f in fields_:
        have = {name: s[f] for name, s in settings.items() if f in s}
        if models_differ and f == FEATURE_FIELD:
            notes.append("different models (--models-differ): retrieval features " + "; ".join(
                f"{name} = {v}" for name, v in have.items()))
            continue
        if len({json.dumps(v, sort_keys=True) for v in have.values()}) > 1:
            differ.append(f"  {f}: " + "; ".join(f"{name} = {json.dumps(v)}"
                                                 for name, v in have.items()))
        lacking = [name for name in settings if f not in settings[name]]
        if lacking:
            notes.append(f"{f} is not recorded by row(s) {', '.join(lacking)} (compared among "
                         "the others only)")
    if differ:
        raise StudyError("the rows were evaluated differently, and a study table never mixes "
                         "evaluation settings:\n" + "\n".join(differ) + "\nRe-test the rows "
                         "under one setting (the same dataset keys, TEST options and "
                         "--test-opts), or tabulate them separately.")
    return notes


# -- seeds, statistics, deltas ------------------------------------------------------------------
def seed_entries(row: Row, kind: str) -> Dict[int, dict]:
    """{seed: best / last entry} of the row's seeds in the statistics."""
    return {int(s["seed"]): s[kind] for s in row.summary["seeds"]
            if s.get("in_statistics") and s.get(kind)}


def pair_seeds(rows: Sequence[Row], kind: str, policy: str) -> Tuple[List[int], Optional[str]]:
    """The seeds every row is tabulated over for ``kind`` and a note when some were dropped
    (``policy`` 'intersection'); differing seed sets are an error under 'strict'."""
    sets = {r.name: sorted(seed_entries(r, kind)) for r in rows}
    empty = [name for name, seeds in sets.items() if not seeds]
    if empty:
        raise StudyError(f"row(s) {', '.join(empty)} have no seed in the statistics for "
                         f"'{kind}' (training incomplete or checkpoints untested: finish the "
                         "launcher runs first)")
    if len({tuple(s) for s in sets.values()}) == 1:
        return next(iter(sets.values())), None
    listing = "; ".join(f"{name}: {seeds}" for name, seeds in sets.items())
    if policy == "strict":
        raise StudyError(f"the rows have different seeds in their statistics for '{kind}' "
                         f"({listing}); run the missing seeds, or pass --pair-on intersection "
                         "to tabulate every row over the seeds all rows have")
    common = sorted(set.intersection(*(set(s) for s in sets.values())))
    if not common:
        raise StudyError(f"the rows share no seed for '{kind}' ({listing})")
    return common, (f"'{kind}': every row over the seeds all rows have, {common} (--pair-on "
                    f"intersection; the rows have {listing})")


def metric_values(entries: Dict[int, dict], seeds: Sequence[int], scope: str, row: str,
                  kind: str) -> Dict[str, List[float]]:
    """{metric: per-seed values in ``seeds`` order} of the whole test split (``scope``
    'overall') or of a query subset."""
    out: Dict[str, List[float]] = {m: [] for m in STUDY_METRICS}
    for seed in seeds:
        entry = entries[seed]
        if scope == OVERALL:
            numbers = entry["metrics"]
        else:
            subsets = entry.get("subsets") or {}
            if scope not in subsets:
                have = ", ".join(sorted(subsets)) or "none"
                raise StudyError(f"row {row}, seed {seed}, '{kind}' (epoch {entry['epoch']}): no "
                                 f"query subset {scope!r} in its test results (it has: {have}); "
                                 f"test with TEST.QUERY_SUBSETS \"['{scope}']\" or drop --subset")
            numbers = subsets[scope]
        for m in STUDY_METRICS:
            out[m].append(float(numbers[m]))
    return out


def build_table(rows: Sequence[Row], baseline: str, subset: Optional[str] = None,
                pair_on: str = "strict", command: str = "", title: str = "",
                models_differ: bool = False) -> dict:
    """The table (a JSON-ready dict; :func:`table_markdown` / :func:`table_csv` render it).

    Raises :class:`StudyError` for repeated row names, an unknown baseline, rows evaluated
    differently, differing seed sets (``pair_on`` 'strict'), a missing subset."""
    names = [r.name for r in rows]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise StudyError(f"row name(s) {', '.join(repeated)} given more than once")
    if baseline not in names:
        raise StudyError(f"--baseline {baseline!r} is not a row (rows: {', '.join(names)})")
    if pair_on not in PAIR_POLICIES:
        raise StudyError(f"--pair-on {pair_on!r} is not one of {PAIR_POLICIES}")
    notes = check_evaluation(rows, models_differ)
    base = next(r for r in rows if r.name == baseline)
    scopes = [OVERALL] + ([subset] if subset else [])
    table = {"title": title or f"Study table ({len(rows)} rows, baseline {baseline})",
             "command": command, "baseline": baseline, "subset": subset, "pair_on": pair_on,
             "metrics": list(STUDY_METRICS),
             "written": datetime.datetime.now().isoformat(timespec="seconds"),
             "std": "sample standard deviation (ddof=1) over the paired seeds; null when n = 1",
             "test": "Δ = mean over seeds of (row - baseline); p: two-sided paired t-test "
                     "(scipy.stats.ttest_rel, utils.stats.paired_ttest), seeds paired by number",
             "evaluation": {k: v for k, v in evaluation_settings(base).items()
                            if not (models_differ and k == FEATURE_FIELD)},
             "selected_on": base.summary.get("selected_on", "test"),
             "selection": base.summary.get("selection"),
             "inputs": [{"row": r.name, "summary": r.path, "sha256": r.sha256, "mtime": r.mtime,
                         "experiment": r.summary.get("experiment"),
                         "config": r.summary.get("config"), "epochs": r.summary.get("epochs"),
                         "config_sha256": {str(k): v for k, v in r.config_sha256.items()}}
                        for r in rows],
             "kinds": {}, "cost": [], "notes": list(notes)}
    for kind in KINDS:
        seeds, note = pair_seeds(rows, kind, pair_on)
        if note:
            table["notes"].append(note)
        base_values = {scope: metric_values(seed_entries(base, kind), seeds, scope, base.name,
                                            kind) for scope in scopes}
        out_rows = []
        for r in rows:
            entries = seed_entries(r, kind)
            row_out = {"row": r.name, "epochs": [entries[s]["epoch"] for s in seeds],
                       "scopes": {}}
            for scope in scopes:
                values = metric_values(entries, seeds, scope, r.name, kind)
                cells = {}
                for m in STUDY_METRICS:
                    mean, std = mean_std(values[m])
                    cell = {"values": values[m], "mean": mean, "std": std, "delta": None}
                    if r.name != baseline:
                        cell["delta"] = paired_ttest(values[m], base_values[scope][m])
                    cells[m] = cell
                row_out["scopes"][scope] = cells
            out_rows.append(row_out)
        table["kinds"][kind] = {"seeds": seeds, "rows": out_rows}
    table["cost"] = cost_rows(rows, base)
    devices = {c["device"] for c in table["cost"] if c["device"]}
    if len(devices) > 1:
        table["notes"].append(f"the rows' costs were measured on different devices "
                              f"({', '.join(sorted(devices))}): compare their timings with care")
    return table


def cost_rows(rows: Sequence[Row], base: Row) -> List[dict]:
    """Per row: the summary's cost means (and stds), its device(s), GFLOP/s where recorded, and
    s / iteration as a ratio to the baseline's."""
    def mean(row: Row, key: str) -> Optional[float]:
        return ((row.summary.get("cost") or {}).get(key) or {}).get("mean")

    out = []
    for r in rows:
        cost = r.summary.get("cost") or {}
        lasts = [s["last"].get("cost") or {} for s in r.summary["seeds"]
                 if s.get("in_statistics") and s.get("last")]
        gflops = sorted({c[GFLOPS_KEY] for c in lasts if c.get(GFLOPS_KEY) is not None})
        devices = sorted({str(c["device"]) for c in lasts if c.get("device")})
        entry = {"row": r.name, "n": cost.get("n", 0),
                 "memory_kind": cost.get("memory_kind") or [],
                 "device": ", ".join(devices) or None, "fp32_matmul_gflops": gflops or None}
        for key, _, _ in COST_COLUMNS:
            m = cost.get(key) or {}
            entry[key] = {"mean": m.get("mean"), "std": m.get("std")}
        ours, theirs = mean(r, "s_per_iteration"), mean(base, "s_per_iteration")
        entry["s_per_iteration_vs_baseline"] = ours / theirs if ours and theirs else None
        out.append(entry)
    return out


# -- rendering ----------------------------------------------------------------------------------
def _fmt(x: Optional[float], digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _mean_std(cell: dict) -> str:
    return f"{_fmt(cell['mean'])} ± {_fmt(cell['std'])}"


def _delta(cell: dict) -> str:
    d = cell["delta"]
    if d is None:
        return "—"
    p = "n/a" if d["p"] is None else f"{d['p']:.3g}"
    return f"{d['mean_diff']:+.2f} (p {p})"


def kind_label(table: dict, kind: str) -> str:
    return f"best ({table['selected_on']}-selected)" if kind == "best" else "last"


def table_markdown(t: dict) -> str:
    """The Markdown table: header (command, inputs), per kind a table of the whole test split and
    of the subset, the cost table, notes."""
    lines = [f"# {t['title']}", "",
             f"Written {t['written']} by:", "", "```", t["command"] or "(no command recorded)",
             "```", "", "Inputs (a changed sha256 or mtime means this table is stale; "
             "`python -m launcher.study --check <this table>.json`):", ""]
    for i in t["inputs"]:
        fps = ", ".join(f"seed {s} {v[:12] if v else 'n/a'}"
                        for s, v in i["config_sha256"].items())
        lines.append(f"- **{i['row']}**: `{i['summary']}` (sha256 {i['sha256'][:16]}, mtime "
                     f"{i['mtime']}; {i['epochs']} epochs; training config sha256: {fps})")
    shown = {k: v for k, v in t["evaluation"].items() if not k.startswith("run_config ")}
    agreed = len(t["evaluation"]) - len(shown)
    lines += ["", f"- evaluation (every row): {json.dumps(shown)}; and {agreed} DATASETS.* / "
              "TEST.* keys of the runs' run_config.yaml (listed in the JSON)",
              f"- {t['selection']}" if t.get("selection") else "- selection: n/a",
              f"- mean ± {t['std']}", f"- {t['test']}; baseline row: **{t['baseline']}**"]
    lines += [f"- note: {n}" for n in t["notes"]]
    scopes = [OVERALL] + ([t["subset"]] if t["subset"] else [])
    metrics = t["metrics"]
    for kind in KINDS:
        k = t["kinds"][kind]
        for scope in scopes:
            what = "whole test split" if scope == OVERALL else f"query subset '{scope}'"
            lines += ["", f"## {kind_label(t, kind)} — {what} (seeds {k['seeds']})", "",
                      "| row | epochs | " + " | ".join(metrics) + " | "
                      + " | ".join(f"Δ{m} (p)" for m in metrics) + " |",
                      "|---|---|" + "---|" * (2 * len(metrics))]
            for r in k["rows"]:
                cells = r["scopes"][scope]
                lines.append(f"| {r['row']} | {'/'.join(map(str, r['epochs']))} | "
                             + " | ".join(_mean_std(cells[m]) for m in metrics) + " | "
                             + " | ".join(_delta(cells[m]) for m in metrics) + " |")
    lines += ["", "## Cost (each summary's last-epoch cost, mean over its seeds in the "
              "statistics)", "",
              "| row | n | " + " | ".join(label for _, label, _ in COST_COLUMNS)
              + " | s / iteration vs baseline | device | fp32 matmul GFLOP/s |",
              "|---|---|" + "---|" * (len(COST_COLUMNS) + 3)]
    for c in t["cost"]:
        cells = []
        for key, _, digits in COST_COLUMNS:
            m = c[key]
            cells.append("-" if m["mean"] is None else f"{m['mean']:.{digits}f}"
                         + (f" ± {m['std']:.{digits}f}" if m["std"] else ""))
        ratio = c["s_per_iteration_vs_baseline"]
        gflops = ("not recorded" if not c["fp32_matmul_gflops"]
                  else ", ".join(f"{g:g}" for g in c["fp32_matmul_gflops"]))
        device = (c["device"] or "-") + (f" ({', '.join(c['memory_kind'])})"
                                         if c["memory_kind"] else "")
        lines.append(f"| {c['row']} | {c['n']} | " + " | ".join(cells)
                     + f" | {'-' if ratio is None else f'{ratio:.2f}x'} | {device} | {gflops} |")
    return "\n".join(lines) + "\n"


def table_csv(t: dict) -> str:
    """Long form: one line per (row, kind, scope, metric), then one per (row, cost field)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "kind", "scope", "metric", "n", "seeds", "mean", "std", "values",
                "delta_vs_baseline", "t", "p", "p_note"])

    def blank(x):
        return "" if x is None else x
    for kind in KINDS:
        k = t["kinds"][kind]
        for r in k["rows"]:
            for scope, cells in r["scopes"].items():
                for m in t["metrics"]:
                    c = cells[m]
                    d = c["delta"] or {}
                    w.writerow([r["row"], kind, scope, m, len(k["seeds"]),
                                " ".join(map(str, k["seeds"])), blank(c["mean"]),
                                blank(c["std"]), " ".join(repr(v) for v in c["values"]),
                                blank(d.get("mean_diff")), blank(d.get("t")), blank(d.get("p")),
                                blank(d.get("reason"))])
    for c in t["cost"]:
        for key, _, _ in COST_COLUMNS:
            w.writerow([c["row"], "last", "cost", key, c["n"], "", blank(c[key]["mean"]),
                        blank(c[key]["std"]), "", "", "", "", ""])
    return buf.getvalue()


def write_table(table: dict, out: str) -> List[str]:
    """``out``.md / .csv / .json, each written atomically; returns the paths."""
    paths = [out + ".json", out + ".md", out + ".csv"]
    atomic_write_text(paths[0], json.dumps(table, indent=2) + "\n")
    atomic_write_text(paths[1], table_markdown(table))
    atomic_write_text(paths[2], table_csv(table))
    return paths


def check_table(path: str) -> List[str]:
    """What changed since the table at ``path`` (its .json) was written: one line per summary
    that is gone or whose sha256 differs; empty when it is current."""
    with open(path) as f:
        table = json.load(f)
    changed = []
    for i in table["inputs"]:
        if not os.path.isfile(i["summary"]):
            changed.append(f"{i['row']}: {i['summary']} is gone")
            continue
        digest, mtime = _file_facts(i["summary"])
        if digest != i["sha256"]:
            changed.append(f"{i['row']}: {i['summary']} changed (mtime {i['mtime']} -> {mtime})")
    return changed


# -- command line -------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m launcher.study",
        description="One study table from several launcher summaries: best and last epoch, "
                    "mean ± std over seeds, Δ vs a baseline row with paired-t p-values, a query "
                    "subset, cost (module docstring).")
    p.add_argument("--row", nargs="+", action="append", default=[],
                   metavar=("NAME SOURCE", "CONFIG"),
                   help="a row: its name and a launcher summary_*.json or --output-root (with "
                        "CONFIG: that recipe's summary there); repeat per row, in table order")
    p.add_argument("--baseline", default=None, help="the row Δ and p are against (default: the "
                                                    "first row)")
    p.add_argument("--subset", default=None,
                   help="a query subset of the test split (TEST.QUERY_SUBSETS), e.g. near_twin")
    p.add_argument("--pair-on", choices=PAIR_POLICIES, default="strict",
                   help="strict (default): rows with different seed sets are an error; "
                        "intersection: every row over the seeds all rows have (the table says so)")
    p.add_argument("--models-differ", action="store_true",
                   help="the rows are different models (e.g. LGUR vs a dual encoder): their "
                        "retrieval features may differ (listed in the table); every other "
                        "evaluation field must still agree")
    p.add_argument("--title", default="", help="the table's title")
    p.add_argument("--out", default=None, help="output path without extension: OUT.md/.csv/.json")
    p.add_argument("--check", default=None, metavar="TABLE_JSON",
                   help="only say whether a table's inputs changed since it was written "
                        "(exit 1 when they did)")
    args = p.parse_args(argv)
    if args.check is None:
        if not args.row:
            p.error("give at least one --row NAME SOURCE [CONFIG] (or --check TABLE_JSON)")
        if not args.out:
            p.error("--out is required (the output path without extension)")
        for spec in args.row:
            if len(spec) not in (2, 3):
                p.error(f"--row {' '.join(spec)}: expected NAME SOURCE [CONFIG]")
    return args


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.check:
        changed = check_table(args.check)
        for line in changed:
            print(f"stale: {line}")
        print("the table is stale" if changed else "the table's inputs are unchanged")
        return 1 if changed else 0
    rows = [load_row(*spec) for spec in args.row]
    baseline = args.baseline or rows[0].name
    command = " ".join(["python -m launcher.study"] + [shlex.quote(a) for a in argv])
    table = build_table(rows, baseline, args.subset, args.pair_on, command, args.title,
                        args.models_differ)
    paths = write_table(table, args.out)
    print(table_markdown(table))
    print("Written: " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (StudyError, FileNotFoundError) as exc:
        print(f"launcher.study: error: {exc}", file=sys.stderr)
        sys.exit(2)
