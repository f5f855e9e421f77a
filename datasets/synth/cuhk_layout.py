"""SynthPedes in the CUHK-PEDES layout, for running a text-based person search recipe through the
real CUHK-PEDES loader (``DATASETS.NAMES cuhkpedes``) without the real dataset.

Writes ``<out_root>/CUHK-PEDES/reid_raw.json`` and ``<out_root>/CUHK-PEDES/imgs`` (a symbolic link
to the SynthPedes folder, so ``file_path`` values such as ``bounding_box_train/0001_c1s1_...jpg``
resolve). The JSON holds SynthPedes' ``reid_raw.json`` (or ``reid_raw_vi.json``) entries -- the
identity images, no distractors or junk -- with ``split`` 'train' / 'test' as generated, except
that the images of ``val_ids`` training identities get ``split`` 'val'. They are drawn exactly as
``datasets.factory.hold_out_val_ids`` draws them (``numpy.random.default_rng(seed).choice`` over
the sorted training ids), so with the same number and seed the CUHK-PEDES-layout copy has the
same train / val / test identities as ``DATASETS.NAMES synth`` with ``DATASETS.SYNTH_VAL_IDS``.

Usage::

    python -m datasets.synth.cuhk_layout --synth-dir data/synthpedes_ids400_seed0_128x64_train300 \\
        --out data/synth_as_cuhk --val-ids 30 --seed 0
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Optional, Sequence

import numpy as np

from configs.validate import CAPTION_LANGS

from .generator import read_json, read_meta


def export_cuhkpedes_layout(synth_dir: str, out_root: str, val_ids: int, seed: int,
                            caption_lang: str = "en") -> str:
    """Write the CUHK-PEDES layout of a generated SynthPedes folder (module docstring).

    Returns:
        the ``<out_root>/CUHK-PEDES`` folder.
    Raises:
        FileNotFoundError: ``synth_dir`` is not a complete SynthPedes folder (no meta.json).
        FileExistsError: ``<out_root>/CUHK-PEDES`` exists and was not written for this folder.
        ValueError: ``val_ids`` leaves fewer than 2 training identities; an unknown language.
    """
    if caption_lang not in CAPTION_LANGS:
        raise ValueError(f"caption language {caption_lang!r} is not one of {CAPTION_LANGS}")
    read_meta(synth_dir)   # a complete dataset, or a clear error
    entries = read_json(os.path.join(synth_dir, "reid_raw.json" if caption_lang == "en"
                                     else "reid_raw_vi.json"))
    train_ids = sorted({e["id"] for e in entries if e["split"] == "train"})
    if val_ids > len(train_ids) - 2:
        raise ValueError(f"--val-ids {val_ids}: {synth_dir} has {len(train_ids)} training "
                         "identities; hold out at most all but 2")
    chosen = ({int(p) for p in np.random.default_rng(seed).choice(train_ids, val_ids,
                                                                   replace=False)}
              if val_ids else set())
    out = [dict(e, split="val") if e["split"] == "train" and e["id"] in chosen else e
           for e in entries]
    target = os.path.join(out_root, "CUHK-PEDES")
    imgs = os.path.join(target, "imgs")
    os.makedirs(target, exist_ok=True)
    if os.path.lexists(imgs):
        if os.path.realpath(imgs) != os.path.realpath(synth_dir):
            raise FileExistsError(f"{imgs} exists and does not point to {synth_dir}; use another "
                                  "--out folder")
    else:
        os.symlink(os.path.abspath(synth_dir), imgs)
    tmp = os.path.join(target, f".reid_raw.json.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
    os.replace(tmp, os.path.join(target, "reid_raw.json"))
    return target


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m datasets.synth.cuhk_layout",
                                     description="Write SynthPedes in the CUHK-PEDES layout.")
    parser.add_argument("--synth-dir", required=True, help="a generated SynthPedes folder")
    parser.add_argument("--out", required=True, help="DATASETS.ROOT_DIR of the copy")
    parser.add_argument("--val-ids", type=int, default=0, help="training ids moved to 'val'")
    parser.add_argument("--seed", type=int, default=0, help="the draw's seed (SYNTH_SEED)")
    parser.add_argument("--lang", default="en", choices=CAPTION_LANGS)
    args = parser.parse_args(argv)
    target = export_cuhkpedes_layout(args.synth_dir, args.out, args.val_ids, args.seed, args.lang)
    print(f"CUHK-PEDES layout written to {target}: use DATASETS.NAMES cuhkpedes "
          f"DATASETS.ROOT_DIR {args.out}")


if __name__ == "__main__":
    main()
