"""Benchmark the evaluator and k-reciprocal re-ranking on synthetic problems of real benchmark sizes.

    .venv/bin/python bench/bench_eval.py                # all three cases
    .venv/bin/python bench/bench_eval.py --cases market --repeat 3

Cases (each runs in a fresh 'spawn' subprocess, so each one's peak memory is its own):
  market  Market-1501 size (3,368 x 15,913; 751 ids, 6 cameras, 2,793 distractors): blocked ``evaluate``
          vs the per-query numpy loop ``evaluate_loop`` on the same distance matrix. Wall times, speed-up,
          max |difference| of mAP / mINP / CMC.
  msmt    MSMT17 size (11,659 x 82,161; 3,060 ids, 15 cameras): ``evaluate_features`` from features. It
          never builds the 3.6 GiB (float32) distance matrix. Wall time and peak memory.
  rerank  ``re_ranking`` on 1,000 x 5,000: wall time and peak memory (and mAP before/after).

Process peak = VmHWM of the case's process over its whole life (interpreter, torch, synthetic data and
the timed calls). Phase peak = the high-water mark reached during the timed call alone: it is reset
(/proc/self/clear_refs) just before the call, so it counts what was already resident plus what the call
added. "n/a" where the kernel refuses the reset.
Synthetic features: per-id centres + a per-camera shift + Gaussian noise, so the rankings are neither
perfect nor random.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

GIB = 1 << 30
MIB = 1 << 20


# ----------------------------------------------------------------------------------------------
# memory probes (Linux /proc)
# ----------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs). False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Phase:
    """Times a block and records the peak RSS reached inside it (if the peak can be reset)."""

    def __enter__(self):
        self.resettable = _reset_peak()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.start
        self.peak = _status_kib("VmHWM") * 1024 if self.resettable else None
        return False

    def as_dict(self):
        """Plain values: results travel back from the 'spawn' subprocess by pickle."""
        return {"wall": self.wall, "peak": self.peak}


# ----------------------------------------------------------------------------------------------
# synthetic re-ID features
# ----------------------------------------------------------------------------------------------
def synthetic_split(num_ids, num_query, num_gallery, num_cams, num_distractors, dim, noise, seed):
    """Query/gallery features with ids and cameras, float32, generated in chunks to keep memory low.

    Gallery: ``num_gallery - num_distractors`` images cycling over ids 1..num_ids (several per id, random
    cameras) + distractors (pid 0, features unrelated to any id). Query: images cycling over the ids.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids + 1, dim), dtype=np.float32)
    cam_shift = 0.5 * rng.standard_normal((num_cams, dim), dtype=np.float32)
    num_real = num_gallery - num_distractors
    g_pids = np.concatenate([np.arange(num_real) % num_ids + 1, np.zeros(num_distractors, dtype=np.int64)])
    q_pids = np.arange(num_query) % num_ids + 1
    g_cams = rng.integers(0, num_cams, num_gallery)
    q_cams = rng.integers(0, num_cams, num_query)

    def features(pids, cams):
        out = np.empty((pids.size, dim), dtype=np.float32)
        for s in range(0, pids.size, 8192):
            e = min(s + 8192, pids.size)
            block = noise * rng.standard_normal((e - s, dim), dtype=np.float32)
            block += cam_shift[cams[s:e]]
            real = pids[s:e] > 0
            block[real] += centres[pids[s:e][real]]
            block[~real] += rng.standard_normal((int((~real).sum()), dim), dtype=np.float32)
            out[s:e] = block
        return out

    return features(q_pids, q_cams), features(g_pids, g_cams), q_pids, g_pids, q_cams, g_cams


# ----------------------------------------------------------------------------------------------
# cases (run in a subprocess)
# ----------------------------------------------------------------------------------------------
def case_market(opts):
    import torch
    import torch.nn.functional as F
    from utils.metrics import evaluate, evaluate_features, evaluate_loop, pairwise_distance

    qf, gf, q_pids, g_pids, q_cams, g_cams = synthetic_split(
        751, 3368, 15913, 6, 2793, opts["dim"], opts["market_noise"], opts["seed"])
    qf, gf = torch.from_numpy(qf), torch.from_numpy(gf)
    distmat = pairwise_distance(F.normalize(qf, dim=1), F.normalize(gf, dim=1)).numpy()
    labels = (q_pids, g_pids, q_cams, g_cams)
    blocked, loop, feats = [], [], []
    for _ in range(opts["repeat"]):
        with _Phase() as p:
            res = evaluate(distmat, *labels)
        blocked.append(p)
        with _Phase() as p:
            ref = evaluate_loop(distmat, *labels)
        loop.append(p)
        with _Phase() as p:
            res_f = evaluate_features(qf, gf, *labels)
        feats.append(p)
    best = lambda phases: min(phases, key=lambda ph: ph.wall).as_dict()  # noqa: E731  (shared machine: best of N)
    return {
        "blocked": best(blocked), "loop": best(loop), "features": best(feats),
        "diff": max(abs(res.mAP - ref.mAP), abs(res.mINP - ref.mINP), float(np.abs(res.cmc - ref.cmc).max())),
        "features_equal": res_f.mAP == res.mAP and res_f.mINP == res.mINP and np.array_equal(res_f.cmc, res.cmc),
        "skipped": (res.num_skipped, ref.num_skipped), "metrics": res.as_dict(),
        "process_peak": _status_kib("VmHWM") * 1024,
    }


def case_msmt(opts):
    import torch
    from utils.metrics import evaluate_features

    qf, gf, q_pids, g_pids, q_cams, g_cams = synthetic_split(
        3060, 11659, 82161, 15, 0, opts["msmt_dim"], opts["msmt_noise"], opts["seed"])
    qf, gf = torch.from_numpy(qf), torch.from_numpy(gf)
    resident = _status_kib("VmRSS") * 1024
    with _Phase() as p:
        res = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams)
    return {"eval": p.as_dict(), "metrics": res.as_dict(), "resident_before": resident,
            "process_peak": _status_kib("VmHWM") * 1024}


def case_rerank(opts):
    import torch
    import torch.nn.functional as F
    from utils.metrics import evaluate, pairwise_distance
    from utils.reranking import describe_reranking, re_ranking

    qf, gf, q_pids, g_pids, q_cams, g_cams = synthetic_split(
        300, 1000, 5000, 6, 500, opts["dim_rerank"], opts["rerank_noise"], opts["seed"])
    qf, gf = F.normalize(torch.from_numpy(qf), dim=1), F.normalize(torch.from_numpy(gf), dim=1)
    labels = (q_pids, g_pids, q_cams, g_cams)
    before = evaluate(pairwise_distance(qf, gf), *labels)
    resident = _status_kib("VmRSS") * 1024
    with _Phase() as p:
        dist = re_ranking(qf, gf, k1=20, k2=6, lambda_value=0.3)
    after = evaluate(dist, *labels)
    return {"eval": p.as_dict(), "variant": describe_reranking(20, 6, 0.3), "mAP_before": before.mAP * 100,
            "mAP_after": after.mAP * 100, "resident_before": resident, "process_peak": _status_kib("VmHWM") * 1024}


CASES = {"market": case_market, "msmt": case_msmt, "rerank": case_rerank}


def _run_isolated(name, opts):
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(CASES[name], (opts,))


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def _mib(num_bytes):
    return "n/a" if num_bytes is None else f"{num_bytes / MIB:,.0f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["market", "msmt", "rerank"])
    parser.add_argument("--repeat", type=int, default=2, help="Market timings: best of N runs")
    parser.add_argument("--dim", type=int, default=256, help="feature dim of the Market case")
    parser.add_argument("--msmt-dim", type=int, default=768, help="feature dim of the MSMT17 case")
    parser.add_argument("--dim-rerank", type=int, default=768, help="feature dim of the re-ranking case")
    # within-id noise std, tuned so the synthetic rankings look like a trained model's (R1 ~90+, mAP 60-80)
    parser.add_argument("--market-noise", type=float, default=1.5)
    parser.add_argument("--msmt-noise", type=float, default=2.3)
    parser.add_argument("--rerank-noise", type=float, default=2.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    opts = {"repeat": args.repeat, "dim": args.dim, "msmt_dim": args.msmt_dim, "dim_rerank": args.dim_rerank,
            "market_noise": args.market_noise, "msmt_noise": args.msmt_noise, "rerank_noise": args.rerank_noise,
            "seed": args.seed}

    import torch
    print(f"torch {torch.__version__}, numpy {np.__version__}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}")
    rows, notes = [], []
    header = ("case", "size", "wall [s]", "phase peak [MiB]", "process peak [MiB]", "target", "ok")
    if "market" in args.cases:
        r = _run_isolated("market", opts)
        speedup = r["loop"]["wall"] / r["blocked"]["wall"]
        size = "3,368 x 15,913"
        rows.append(("Market: evaluate (blocked)", size, f"{r['blocked']['wall']:.2f}", _mib(r["blocked"]["peak"]),
                     _mib(r["process_peak"]), ">= 5x loop, diff <= 1e-12",
                     "yes" if speedup >= 5 and r["diff"] <= 1e-12 else "NO"))
        rows.append(("Market: evaluate_loop (numpy)", size, f"{r['loop']['wall']:.2f}", _mib(r["loop"]["peak"]),
                     "", "", ""))
        rows.append(("Market: evaluate_features", size, f"{r['features']['wall']:.2f}", _mib(r["features"]["peak"]),
                     "", "equal to evaluate", "yes" if r["features_equal"] else "NO"))
        m = r["metrics"]
        notes.append(f"Market: speed-up {speedup:.1f}x; max |diff| mAP/mINP/CMC blocked vs loop = {r['diff']:.1e}; "
                     f"skipped queries {r['skipped'][0]} (loop {r['skipped'][1]}); "
                     f"R1 {m['R1']:.1f} mAP {m['mAP']:.1f} mINP {m['mINP']:.1f}")
    if "msmt" in args.cases:
        r = _run_isolated("msmt", opts)
        rows.append((f"MSMT17: evaluate_features ({args.msmt_dim}-d)", "11,659 x 82,161", f"{r['eval']['wall']:.1f}",
                     _mib(r["eval"]["peak"]), _mib(r["process_peak"]), "<= 6 GiB peak",
                     "yes" if r["process_peak"] <= 6 * GIB else "NO"))
        m = r["metrics"]
        notes.append(f"MSMT17: resident before evaluation (interpreter + features) {_mib(r['resident_before'])} MiB; "
                     f"R1 {m['R1']:.1f} mAP {m['mAP']:.1f} mINP {m['mINP']:.1f}")
    if "rerank" in args.cases:
        r = _run_isolated("rerank", opts)
        rows.append((f"re_ranking ({args.dim_rerank}-d)", "1,000 x 5,000", f"{r['eval']['wall']:.1f}",
                     _mib(r["eval"]["peak"]), _mib(r["process_peak"]), "<= 2 GiB peak",
                     "yes" if r["process_peak"] <= 2 * GIB else "NO"))
        notes.append(f"re-ranking {r['variant']}: mAP {r['mAP_before']:.1f} -> {r['mAP_after']:.1f}; "
                     f"resident before {_mib(r['resident_before'])} MiB")

    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    line = lambda row: "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    for note in notes:
        print("- " + note)


if __name__ == "__main__":
    main()
