"""Benchmark the text-to-image evaluator on synthetic problems of the real TBPS test sizes.

    flock /tmp/cpu.lock .venv/bin/python bench/bench_t2i_eval.py            # both sizes
    .venv/bin/python bench/bench_t2i_eval.py --cases cuhk --repeat 3

Cases (each runs in a fresh 'spawn' subprocess, so each one's peak memory is its own):
  cuhk  CUHK-PEDES test size: 6,156 captions x 3,074 images, 1,000 ids (2 captions per image, 8 with 3).
  icfg  ICFG-PEDES test size: 19,848 captions x 19,848 images, 1,000 ids (1 caption per image).
In each case, in this order and in one process:
  1. ``eval_t2i_features`` from the features (the Q x G similarity never exists; it is not built yet);
  2. the float32 similarity matrix ``cosine_similarity_matrix`` (ICFG: 1.5 GiB), built once, not timed;
  3. ``eval_t2i`` (blocked) on that matrix, then ``eval_t2i_loop`` (the per-query numpy loop, one stable
     argsort per query) on the same matrix. Speed-up = loop / blocked; max |difference| of mAP, mINP and the
     CMC curve; whether the features path equals ``eval_t2i`` bit for bit.
Timings: best of ``--repeat`` runs for the blocked and features calls (a shared machine), one run of the loop
(``--loop-repeat``). Targets (issue 14): blocked >= 5x the loop with identical numbers (|diff| <= 1e-12);
the ICFG case's whole process within 4 GiB.

Memory, measured as in ``bench/bench_eval.py`` (Linux /proc): process peak = the high-water mark of the case's
process over its whole life (interpreter, torch, features, the similarity matrix, every timed call): the
max of VmHWM read just before each phase's reset and VmHWM at the end. Phase peak =
the high-water mark during one timed call alone: it is reset (/proc/self/clear_refs) just before the call,
so it counts what was already resident plus what the call added; "added" = phase peak - RSS just before
the call (the call's own temporaries). "n/a" where the kernel refuses the reset.
Synthetic features (512-d, as CLIP ViT-B/16): per-id centres + Gaussian noise for images; the same centres +
a shared text offset + noise for captions, noise tuned so R1 lands near published models' (~60-75).

Measured on this project's machine (2-core AMD EPYC, AVX2, shared with other jobs, load avg 1.6; fp32 matmul
111 GFLOP/s by this script's header, 118 before / 108 after the run by ../shared/tools/matmul_gflops.py;
torch 2.14.1, numpy 2.4.6; 2 min 26 s in all), memory in MiB:

| case | size | wall [s] | phase peak | added | process peak | target | ok |
|---|---|---|---|---|---|---|---|
| CUHK: eval_t2i (blocked) | 6,156 x 3,074 | 0.23 | 796 | 144 | 796 | >= 5x loop, diff <= 1e-12 | yes |
| CUHK: eval_t2i_loop (numpy) | 6,156 x 3,074 | 2.91 | 654 | 2 | | | |
| CUHK: eval_t2i_features | 6,156 x 3,074 | 1.03 | 713 | 180 | | equal to eval_t2i | yes |
| ICFG: eval_t2i (blocked) | 19,848 x 19,848 | 5.27 | 2,482 | 341 | 2,482 | ... , process <= 4 GiB | yes |
| ICFG: eval_t2i_loop (numpy) | 19,848 x 19,848 | 50.38 | 2,146 | 5 | | | |
| ICFG: eval_t2i_features | 19,848 x 19,848 | 9.59 | 1,029 | 436 | | equal to eval_t2i | yes |

- CUHK: speed-up 12.5x; max |diff| mAP/mINP/CMC blocked vs loop 0 (bit-identical); R1 74.1 R5 92.9 R10 96.4
  mAP 57.0 mINP 29.8.
- ICFG: speed-up 9.6x; max |diff| 0; R1 65.1 R5 90.7 R10 95.7 mAP 21.8 mINP 0.8. The process (1.5 GiB
  similarity matrix included) peaks at 2.4 GiB; the features path alone, before the matrix exists, at 1.0 GiB.
- ``eval_t2i_features`` includes the similarity GEMM (ICFG: 2 x 19,848^2 x 512 = 4.0e11 flop, ~4 s at
  ~110 GFLOP/s); ``eval_t2i`` starts from the finished matrix.
