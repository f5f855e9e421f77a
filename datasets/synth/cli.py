"""``python -m datasets.synth``: generate SynthPedes and print its statistics."""
from __future__ import annotations

import argparse
import time
from typing import Optional, Sequence

from .generator import generate_synthpedes, read_meta
from .identities import DEFAULT_TWIN_SHARE
from .loader import load_synth


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Generate (or reuse) the dataset named by the arguments and print its statistics."""
    parser = argparse.ArgumentParser(prog="python -m datasets.synth",
                                     description="Generate the SynthPedes dataset.")
    parser.add_argument("--root", required=True, help="folder that will hold the dataset folder")
    parser.add_argument("--ids", type=int, default=300, help="total identities (train + test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-ids", type=int, default=None, help="default: half of --ids")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
    parser.add_argument("--twin-share", type=float, default=DEFAULT_TWIN_SHARE)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    train_ids = args.ids // 2 if args.train_ids is None else args.train_ids
    start = time.perf_counter()
    dataset_dir = generate_synthpedes(args.root, args.ids, args.seed, train_ids, args.size,
                                      args.workers, args.twin_share)
    elapsed = time.perf_counter() - start
    meta = read_meta(dataset_dir)
    print(f"SynthPedes written to {dataset_dir} ({elapsed:.1f} s)")
    print(load_synth(args.root, train_ids, args.ids - train_ids, args.seed, args.size,
                     twin_share=args.twin_share).statistics())
    print("counts: " + ", ".join(f"{k} {v}" for k, v in meta["counts"].items()))
    for cam in meta["cameras"]:
        print(f"  camera {cam['camera']} ({cam['name']}): {cam['images']} images, "
              f"mean luma {cam['mean_luma']:.3f}{'  [dark]' if cam['dark'] else ''}")
