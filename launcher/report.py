"""Summaries of an experiment: per seed the best and last epoch, statistics across seeds,
an optional paired comparison with another experiment, as JSON, Markdown and CSV.

- best = the tested checkpoint with the highest (mAP, R1) of the numbers each test summary
  names for selection (``TestSummary.selection_metrics``: the test split for image re-ID, which
  has no validation split -- the summary says so; the validation split for text-to-image unless
  TEST.SELECT_ON 'test' asked for test), earlier epoch on ties; last = the final epoch. Tables
  label it by its selection split ('best (test-selected)', 'best (val-selected)').
- across seeds: mean and sample std (ddof=1; n/a for one seed) of every metric, over the seeds
  whose training is complete and every saved checkpoint tested.
- ``--compare-to``: a paired t-test per metric (seeds paired by number) against another
  launcher's summary.
- files: ``<root>/summary_<stem>_<variant>_e<epochs>[_test-t<hash>].json/.md/.csv``, written
  atomically.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import os
from typing import Dict, Optional, Sequence

from utils.atomic import atomic_write_text
from utils.results import METRIC_KEYS
from utils.run_files import checkpoint_name, list_checkpoints
from utils.stats import mean_std, paired_ttest
from utils.summary import TestSummary

from .experiment import Experiment, flat
from .identity import DISCARD_FLAG, check_run, read_test_summary
from .runner import Failure

KINDS = ("best", "last")
# what each test evaluated; the summary reports it (and 'mixed' when the tests disagree)
EVALUATION_FIELDS = ("split", "dataset", "train_dataset", "protocol", "feature", "feat_norm",
                     "distance", "re_ranking", "clip_fusion")


def summary_field(summary: TestSummary, name: str):
    """A summary's EVALUATION_FIELDS value; ``train_dataset`` of a summary that does not record it
    (version < 5, before cross-domain testing) is its ``dataset``."""
    value = getattr(summary, name)
    if name == "train_dataset" and value is None:
        return summary.dataset
    return value


def cross_domain(info: dict) -> Optional[str]:
    """'trained on X, tested on Y' when the tests evaluated another dataset than the training one
    (test.py TEST.DATASET), else None."""
    tested, trained = info.get("dataset"), info.get("train_dataset")
    if tested is None or trained is None or tested == trained:
        return None
    show = lambda v: v if isinstance(v, str) else json.dumps(v)   # noqa: E731 ('mixed')
    return f"trained on {show(trained)}, tested on {show(tested)}"


def seed_record(exp: Experiment, seed: int) -> dict:
    """Best (by (mAP, R1); ties -> earlier epoch) and last epoch of one seed, from disk; nothing
    of a run folder that holds another training config (launcher.identity), nor of a test
    result that is not the result of the checkpoint as it is now under this command's test
    config (launcher.identity.read_test_summary)."""
    check = check_run(exp, seed)
    if check.stale:
        keys = ", ".join(check.comparison.changed)
        print(f"[seed {seed}] left out of the summary: {check.describe()}", flush=True)
        return {"seed": seed, "run_dir": exp.run_dir(seed), "checkpoints": [], "tested": [],
                "untested": [], "best": None, "last": None, "in_statistics": False,
                "note": f"its run folder holds another training config (differs in {keys}); "
                        f"rerun this seed with {DISCARD_FLAG} to train it with this one",
                "_summaries": {}}
    ckpts = [e for e in list_checkpoints(exp.train_dir(seed)) if e <= exp.epochs]
    tested = {}
    for e in ckpts:
        summary = read_test_summary(exp, seed, e)
        if summary is not None:
            tested[e] = summary
    untested = [e for e in ckpts if e not in tested]
    complete = exp.epochs in ckpts
    best = None
    if tested:
        epoch = max(sorted(tested), key=lambda e: (tested[e].selection_metrics()["mAP"],
                                                  tested[e].selection_metrics()["R1"], -e))
        best = epoch_entry(epoch, tested[epoch])
    last = epoch_entry(exp.epochs, tested[exp.epochs]) if exp.epochs in tested else None
    notes = []
    if not complete:
        notes.append(f"training incomplete ({checkpoint_name(exp.epochs)} missing)")
    if untested:
        notes.append(f"untested checkpoints: epochs {untested}")
    return {"seed": seed, "run_dir": exp.run_dir(seed), "checkpoints": ckpts,
            "tested": sorted(tested), "untested": untested, "best": best, "last": last,
            "in_statistics": complete and not untested, "note": "; ".join(notes) or None,
            "_summaries": tested}


def pick_metrics(summary: TestSummary) -> Dict[str, float]:
    """The headline test numbers of one tested epoch."""
    return {k: float(summary.metrics[k]) for k in METRIC_KEYS}


#: extra_metrics entries of a named query subset of the test split (test.py, TEST.QUERY_SUBSETS)
SUBSET_PREFIX = "test-"


def epoch_entry(epoch: int, summary: TestSummary) -> dict:
    """{'epoch', 'metrics'} of a tested epoch, plus 'subsets' (name -> the numbers of that query
    subset, the same epoch) when its summary has query subsets."""
    entry = {"epoch": epoch, "metrics": pick_metrics(summary)}
    subsets = {name[len(SUBSET_PREFIX):]: {k: float(m.metrics[k]) for k in METRIC_KEYS}
               for name, m in summary.extra_metrics.items() if name.startswith(SUBSET_PREFIX)}
    if subsets:
        entry["subsets"] = subsets
    if summary.cost:
        entry["cost"] = dict(summary.cost)
    return entry


#: the cost fields averaged over the seeds (summary.json ``cost``)
COST_FIELDS = ("trainable_params", "total_params", "s_per_iteration", "s_per_epoch",
               "train_peak_memory_mb", "s_per_query", "s_per_gallery_image", "fp32_matmul_gflops")


def aggregate_cost(records: Sequence[dict]) -> Optional[dict]:
    """Mean and sample std of each cost field over the seeds in the statistics, from the last
    epoch's test summary (its checkpoint's training cost and its test latency); None when no
    summary records a cost."""
    rows = [r["last"]["cost"] for r in records
            if r["in_statistics"] and r["last"] and r["last"].get("cost")]
    if not rows:
        return None
    out = {"n": len(rows), "memory_kind": sorted({str(c.get("train_peak_memory_kind"))
                                                  for c in rows})}
    for key in COST_FIELDS:
        values = [c[key] for c in rows if c.get(key) is not None]
        mean, std = mean_std(values) if values else (None, None)
        out[key] = {"mean": mean, "std": std}
    return out


def aggregate_subsets(records: Sequence[dict]) -> dict:
    """Per kind and query subset: mean and sample std over the seeds in the statistics (the
    subset numbers of the same best / last epochs as the headline numbers)."""
    out: Dict[str, dict] = {}
    for kind in KINDS:
        rows = [r[kind] for r in records if r["in_statistics"] and r[kind]]
        names = sorted({n for row in rows for n in row.get("subsets", {})})
        for name in names:
            values = [row["subsets"][name] for row in rows if name in row.get("subsets", {})]
            stats = {}
            for key in METRIC_KEYS:
                mean, std = mean_std([v[key] for v in values])
                stats[key] = {"mean": mean, "std": std}
            out.setdefault(kind, {})[name] = {"n": len(values), "metrics": stats}
    return out


def aggregate(records: Sequence[dict]) -> dict:
    """Mean and sample std (ddof=1) per metric over the seeds in the statistics."""
    out = {}
    for kind in KINDS:
        rows = [r[kind]["metrics"] for r in records if r["in_statistics"] and r[kind]]
        stats = {}
        for key in METRIC_KEYS:
            mean, std = mean_std([row[key] for row in rows])
            stats[key] = {"mean": mean, "std": std}
        out[kind] = {"n": len(rows), "seeds": [r["seed"] for r in records
                                               if r["in_statistics"] and r[kind]],
                     "metrics": stats}
    return out


def evaluation_info(records: Sequence[dict]) -> dict:
    """Split(s) and evaluation description of the test results (they should all agree)."""
    seen: Dict[str, list] = {f: [] for f in EVALUATION_FIELDS}
    for r in records:
        for s in r["_summaries"].values():
            for f in EVALUATION_FIELDS:
                value = summary_field(s, f)
                if value not in seen[f]:
                    seen[f].append(value)
    return {f: (v[0] if len(v) == 1 else {"mixed": v}) if v else None for f, v in seen.items()}


def find_other_summary(path: str, own_name: str) -> str:
    """--compare-to: a summary_*.json file, or a root holding one (or one named like ours)."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--compare-to {path}: no such file or folder")
    found = sorted(glob.glob(os.path.join(path, "summary_*.json")))
    if len(found) == 1:
        return found[0]
    same = [f for f in found if os.path.basename(f) == f"{own_name}.json"]
    if same:
        return same[0]
    if not found:
        raise FileNotFoundError(f"--compare-to {path}: no summary_*.json there (run the other "
                                "launcher to the end first)")
    raise ValueError(f"--compare-to {path} holds several summaries "
                     f"({', '.join(os.path.basename(f) for f in found)}): pass one of the files")


def compare(records: Sequence[dict], other_path: str, epochs: Optional[int] = None) -> dict:
    """Paired t-test per metric (ours - theirs) over the seeds both have in their statistics;
    with ``epochs`` (ours) also :func:`time_efficiency` against the other run."""
    with open(other_path) as f:
        other = json.load(f)
    theirs = {int(s["seed"]): s for s in other["seeds"] if s.get("in_statistics")}
    result = {"other": os.path.abspath(other_path), "other_experiment": other.get("experiment"),
              "test": "paired t-test, two-sided (scipy.stats.ttest_rel), ours - other, seeds "
                      "paired by number"}
    for kind in KINDS:
        ours = {r["seed"]: r for r in records if r["in_statistics"] and r[kind]}
        common = sorted(s for s in ours if s in theirs and theirs[s].get(kind))
        metrics = {}
        for key in METRIC_KEYS:
            a = [ours[s][kind]["metrics"][key] for s in common]
            b = [float(theirs[s][kind]["metrics"][key]) for s in common]
            metrics[key] = paired_ttest(a, b)
        result[kind] = {"seeds": common, "metrics": metrics}
    if epochs is not None:
        result["efficiency"] = time_efficiency(records, theirs, epochs, other.get("epochs"))
    return result


def time_efficiency(records: Sequence[dict], theirs: dict, epochs: int,
                    other_epochs: Optional[int]) -> Optional[dict]:
    """"R1 gain per 10 % more training time" against the other run, on the last epoch of the
    seeds both have with a recorded cost: training time = s / epoch (summary.json ``cost``, the
    training process that wrote the last checkpoint) x epochs; extra time = ours / theirs - 1;
    gain = mean R1 difference / (extra time / 10 %). None when a side records no cost; the gain
    is None (with a note) when ours is not slower."""
    ours = {r["seed"]: r["last"] for r in records
            if r["in_statistics"] and r["last"] and (r["last"].get("cost") or {}).get("s_per_epoch")}
    other = {s: t["last"] for s, t in theirs.items()
             if t.get("last") and (t["last"].get("cost") or {}).get("s_per_epoch")}
    common = sorted(s for s in ours if s in other)
    if not common or not other_epochs:
        return None
    time_ours = sum(ours[s]["cost"]["s_per_epoch"] * epochs for s in common) / len(common)
    time_other = sum(other[s]["cost"]["s_per_epoch"] * other_epochs for s in common) / len(common)
    delta_r1 = sum(ours[s]["metrics"]["R1"] - float(other[s]["metrics"]["R1"])
                   for s in common) / len(common)
    extra = time_ours / time_other - 1.0
    out = {"seeds": common, "kind": "last", "delta_R1": delta_r1,
           "train_seconds": time_ours, "other_train_seconds": time_other,
           "extra_time_percent": 100.0 * extra,
           "R1_gain_per_10_percent_time": delta_r1 / (extra / 0.10) if extra > 0 else None}
    if extra <= 0:
        out["note"] = "not slower than the other run: no time was added"
    return out


def selection_text(records: Sequence[dict], info: dict, epochs: int) -> str:
    """How 'best' was chosen, naming the split it was chosen on (each test summary says which
    of its numbers are for selection: ``TestSummary.select_on``)."""
    chosen = {(s.select_on, tuple(s.selection_split()))
              for r in records for s in r["_summaries"].values()}
    if not chosen:
        return (f"no checkpoint has a test result yet, so there is no best epoch; 'last' = epoch "
                f"{epochs} once it is tested")
    if all(select_on is None for select_on, _ in chosen):
        split = info["split"]
        split_text = ", ".join(split) if isinstance(split, list) else str(split)
        asked = [s.test_selection_asked for r in records for s in r["_summaries"].values()]
        why = ("as asked (TEST.SELECT_ON 'test')" if asked and all(asked) else
               "there is no validation split")
        return (f"best = the tested checkpoint with the highest (mAP, R1), earlier epoch on ties, "
                f"selected on the test split ({split_text}): {why}, so "
                f"best-epoch numbers are optimistic; 'last' = epoch {epochs}, no selection")
    names = ", ".join(sorted({name for _, split in chosen for name in split}))
    of = sorted({str(s.extra_metrics[s.select_on].dataset or s.dataset)
                 for r in records for s in r["_summaries"].values() if s.select_on})
    where = cross_domain(info)
    domain = (f" of {', '.join(of)} (cross-domain: {where}; selection stays on the training "
              "dataset)" if where else "")
    return (f"best = the tested checkpoint with the highest (mAP, R1) on the selection split "
            f"({names}){domain}, earlier epoch on ties; its test numbers are reported; 'last' = "
            f"epoch {epochs}, no selection")


def selected_on(records: Sequence[dict]) -> str:
    """What 'best' was selected on, for table labels: 'test' (every summary selects on its
    headline test numbers, or there are none), the name of the summaries' selection entry
    ('val'), or 'mixed' when the summaries disagree."""
    names = {s.select_on or "test" for r in records for s in r["_summaries"].values()}
    if not names:
        return "test"
    return names.pop() if len(names) == 1 else "mixed"


def best_label(s: dict) -> str:
    """The table label of the best epoch: 'best (test-selected)', 'best (val-selected)', ..."""
    return f"best ({s.get('selected_on', 'test')}-selected)"


def build_summary(exp: Experiment, seeds: Sequence[int], failures: Sequence[Failure],
                  comparison: Optional[dict]) -> dict:
    records = [seed_record(exp, s) for s in seeds]
    info = evaluation_info(records)
    summary = {
        "experiment": exp.name, "config": exp.config, "variant": exp.variant,
        "toggles": exp.flags, "opts": flat(exp.user_opts), "epochs": exp.epochs,
        "save_every": exp.save_every, "test_folder": exp.test_tag, "evaluation": info,
        "selection": selection_text(records, info, exp.epochs),
        "selected_on": selected_on(records),
        "std": "sample standard deviation (ddof=1); null when n = 1",
        "statistics_rule": "a seed enters mean/std and comparisons when its training is complete "
                           "and every saved checkpoint is tested",
        "seeds": [{k: v for k, v in r.items() if not k.startswith("_")} for r in records],
        "aggregate": aggregate(records),
        "compare": comparison,
        "failures": [str(f) for f in failures],
    }
    subsets = aggregate_subsets(records)
    if subsets:
        summary["aggregate_subsets"] = subsets
    cost = aggregate_cost(records)
    if cost:
        summary["cost"] = cost
    return summary


def fmt(x: Optional[float], digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def fmt_p(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def tested_on(s: dict) -> str:
    """The table title's suffix naming the dataset of the test numbers when it is not the
    training dataset (cross-domain testing), else ''."""
    where = cross_domain(s["evaluation"])
    return f": test numbers of a cross-domain test ({where})" if where else ""


def summary_markdown(s: dict) -> str:
    keys = list(METRIC_KEYS)
    head = "| " + " | ".join(keys) + " |"
    lines = [f"# {s['experiment']}", "",
             f"- config: `{s['config']}`; variant `{s['variant']}` (toggles: "
             f"{' '.join(s['toggles']) or 'none'}; --opts: {' '.join(s['opts']) or 'none'})",
             f"- {s['epochs']} epochs, a checkpoint every {s['save_every']}; results in "
             f"`<run>/{s['test_folder']}/epoch_<N>/summary.json`",
             f"- evaluation: {json.dumps(s['evaluation'])}",
             f"- **{s['selection']}**", f"- std: {s['std']}; {s['statistics_rule']}", "",
             f"## Per seed{tested_on(s)}", "",
             "| seed | kind | epoch " + head, "|---|---|---|" + "---|" * len(keys)]
    for r in s["seeds"]:
        for kind in KINDS:
            entry = r[kind]
            label = best_label(s) if kind == "best" else "last"
            cells = ([fmt(entry["metrics"][k]) for k in keys] if entry else ["-"] * len(keys))
            lines.append(f"| {r['seed']} | {label} | {entry['epoch'] if entry else '-'} | "
                         + " | ".join(cells) + " |")
    lines += ["", f"## Across seeds (mean ± sample std){tested_on(s)}", "",
              "| kind | n " + head, "|---|---|" + "---|" * len(keys)]
    for kind in KINDS:
        agg = s["aggregate"][kind]
        cells = []
        for k in keys:
            m = agg["metrics"][k]
            cells.append(f"{fmt(m['mean'])} ± {fmt(m['std'])}" if m["mean"] is not None else "-")
        label = best_label(s) if kind == "best" else "last"
        lines.append(f"| {label} | {agg['n']} | " + " | ".join(cells) + " |")
    if s.get("aggregate_subsets"):
        lines += ["", "## Query subsets of the test split (the same epochs; mean ± sample std)",
                  "", "| kind | subset | n " + head, "|---|---|---|" + "---|" * len(keys)]
        for kind in KINDS:
            for name, agg in s["aggregate_subsets"].get(kind, {}).items():
                cells = [f"{fmt(agg['metrics'][k]['mean'])} ± {fmt(agg['metrics'][k]['std'])}"
                         if agg["metrics"][k]["mean"] is not None else "-" for k in keys]
                label = best_label(s) if kind == "best" else "last"
                lines.append(f"| {label} | {name} | {agg['n']} | " + " | ".join(cells) + " |")
    if s.get("cost"):
        c = s["cost"]

        def cell(key, digits):
            m = c[key]
            return "-" if m["mean"] is None else (
                f"{m['mean']:.{digits}f}" + (f" ± {m['std']:.{digits}f}" if m["std"] else ""))
        lines += ["", f"## Cost (last epoch's summaries, {c['n']} seed(s); mean ± sample std)", "",
                  "| trainable params | total params | s / iteration | s / epoch | "
                  f"train peak memory MB ({', '.join(c['memory_kind'])}) | s / query | "
                  "s / gallery image | fp32 matmul GFLOP/s |", "|---|---|---|---|---|---|---|---|",
                  f"| {cell('trainable_params', 0)} | {cell('total_params', 0)} | "
                  f"{cell('s_per_iteration', 4)} | {cell('s_per_epoch', 1)} | "
                  f"{cell('train_peak_memory_mb', 0)} | {cell('s_per_query', 6)} | "
                  f"{cell('s_per_gallery_image', 6)} | "
                  f"{cell('fp32_matmul_gflops', 0) if 'fp32_matmul_gflops' in c else '-'} |"]
    left_out = [r for r in s["seeds"] if not r["in_statistics"]]
    if left_out:
        lines += ["", "Not in the statistics:"]
        lines += [f"- seed {r['seed']}: {r['note']}" for r in left_out]
    if s["compare"]:
        c = s["compare"]
        lines += ["", f"## Paired t-test vs `{c.get('other_experiment')}` ({c['other']})", "",
                  f"{c['test']}.", "",
                  "| kind | seeds | metric | mean diff | t | p | note |",
                  "|---|---|---|---|---|---|---|"]
        for kind in KINDS:
            for k in keys:
                t = c[kind]["metrics"][k]
                lines.append(f"| {kind} | {', '.join(map(str, c[kind]['seeds'])) or '-'} | {k} | "
                             f"{fmt(t['mean_diff'])} | {fmt(t['t'], 3)} | {fmt_p(t['p'])} | "
                             f"{t['reason'] or ''} |")
    eff = (s["compare"] or {}).get("efficiency")
    if eff:
        gain = eff["R1_gain_per_10_percent_time"]
        lines += ["", f"Training time (last epoch's cost, seeds {', '.join(map(str, eff['seeds']))}):"
                  f" {fmt(eff['train_seconds'], 1)} s vs {fmt(eff['other_train_seconds'], 1)} s "
                  f"({eff['extra_time_percent']:+.1f} %), R1 {eff['delta_R1']:+.2f}: "
                  + (f"R1 gain per 10 % more training time {gain:+.2f}" if gain is not None
                     else eff.get("note", ""))]
    if s["failures"]:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in s["failures"]]
    return "\n".join(lines) + "\n"


def summary_csv(s: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["experiment", "row", "kind", "epoch", "n", *METRIC_KEYS])
    name = s["experiment"]
    for r in s["seeds"]:
        for kind in KINDS:
            e = r[kind]
            w.writerow([name, f"seed{r['seed']}", kind, e["epoch"] if e else "", "",
                        *[e["metrics"][k] if e else "" for k in METRIC_KEYS]])
    for kind in KINDS:
        agg = s["aggregate"][kind]
        for stat in ("mean", "std"):
            w.writerow([name, stat, kind, "", agg["n"],
                        *["" if agg["metrics"][k][stat] is None else agg["metrics"][k][stat]
                          for k in METRIC_KEYS]])
    if s["compare"]:
        for kind in KINDS:
            c = s["compare"][kind]
            for stat in ("mean_diff", "p"):
                w.writerow([name, f"{stat}_paired_t", kind, "", len(c["seeds"]),
                            *["" if c["metrics"][k][stat] is None else c["metrics"][k][stat]
                              for k in METRIC_KEYS]])
    return buf.getvalue()


def write_summaries(exp: Experiment, summary: dict) -> str:
    base = exp.summary_base
    text = summary_markdown(summary)
    atomic_write_text(base + ".json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(base + ".md", text)
    atomic_write_text(base + ".csv", summary_csv(summary))
    print(f"Summaries written: {base}.json, .md, .csv", flush=True)
    return text
