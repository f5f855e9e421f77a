"""Build a hard caption-query subset from a reference model's text-to-image features.

    python -m datasets.hard_subset --features <test dir>/features.npz --out hard.json [--name hard]

``features.npz`` is what ``test.py ... TEST.EXPORT_FEATURES True`` writes for MODEL.TASK 'tbps'
(``q_feats``, ``q_pids``, ``q_captions``, ``q_image``, ``g_feats``, ``g_pids``, ``g_paths``). A
caption query is hard when, under the reference model, the best-scoring image of another identity
scores above the best-scoring image of its own identity (cosine of L2-normalised features, the
similarity the evaluation ranks by): its rank-1 is wrong. The subset is written as the file
``TEST.QUERY_SUBSETS`` reads (``datasets/t2i.py`` ``query_subset``)::

    {"name": "hard", "rule": "...", "reference": "<features.npz>",
     "queries": [{"file_path": "<image path>", "caption": "<caption>"}, ...]}

so any later run on the same split evaluates the same captions beside the full set. The rule
"shares the caption's colour / clothing words" of the thesis plan is not implemented (it needs a
vocabulary of attribute words per language); SynthPedes has its own built-in hard subset,
``near_twin``.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Optional, Sequence

import numpy as np
import torch

from utils.atomic import atomic_write_text
from utils.metrics import cosine_similarity_matrix

RULE = ("rank-1 wrong under the reference model: the best-scoring image of another identity "
        "scores above every image of the caption's identity")


def hard_queries(q_feats, g_feats, q_pids, g_pids, block: int = 1024) -> np.ndarray:
    """Indices of the caption queries whose best other-identity image outscores every image of
    their own identity (ties count as not hard: the protocol ranks equal scores by gallery
    index, and a tie is not an error of the model). Computed ``block`` queries at a time."""
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q = torch.as_tensor(np.asarray(q_feats), dtype=torch.float32)
    g = torch.as_tensor(np.asarray(g_feats), dtype=torch.float32)
    gp = torch.as_tensor(g_pids)
    hard = []
    for start in range(0, len(q), block):
        sim = cosine_similarity_matrix(q[start:start + block], g)
        same = torch.as_tensor(q_pids[start:start + block])[:, None] == gp[None, :]
        best_true = sim.masked_fill(~same, float("-inf")).max(1).values
        best_wrong = sim.masked_fill(same, float("-inf")).max(1).values
        hard += (start + torch.nonzero(best_wrong > best_true).flatten()).tolist()
    return np.asarray(hard, dtype=np.int64)


def build_hard_subset(features: str, out: str, name: str = "hard") -> int:
    """Write the hard subset of ``features`` (a t2i features.npz) to ``out``; returns its size.

    Raises:
        KeyError: the file is not a text-to-image features.npz (names the missing arrays).
    """
    data = np.load(features)
    needed = ("q_feats", "q_pids", "q_captions", "q_image", "g_feats", "g_pids", "g_paths")
    missing = [k for k in needed if k not in data.files]
    if missing:
        raise KeyError(f"{features} lacks {missing}: write it with test.py TEST.EXPORT_FEATURES "
                       "True on a MODEL.TASK 'tbps' checkpoint")
    index = hard_queries(data["q_feats"], data["g_feats"], data["q_pids"], data["g_pids"])
    queries = [{"file_path": str(data["g_paths"][int(data["q_image"][q])]),
                "caption": str(data["q_captions"][q])} for q in index]
    text = json.dumps({"name": name, "rule": RULE, "reference": os.path.abspath(features),
                       "queries": queries}, ensure_ascii=False, indent=1)
    atomic_write_text(out, text + "\n")
    return len(queries)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m datasets.hard_subset",
                                     description="Write a hard caption-query subset file.")
    parser.add_argument("--features", required=True, help="a t2i features.npz (test.py)")
    parser.add_argument("--out", required=True, help="the subset file (.json)")
    parser.add_argument("--name", default="hard", help="its name in summaries (default hard)")
    args = parser.parse_args(argv)
    size = build_hard_subset(args.features, args.out, args.name)
    total = len(np.load(args.features)["q_pids"])
    print(f"{size} of {total} caption queries are hard ({RULE}); written to {args.out}: "
          f"evaluate with TEST.QUERY_SUBSETS \"['{args.out}']\"")


if __name__ == "__main__":
    main()
