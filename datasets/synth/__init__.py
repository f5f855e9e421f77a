"""SynthPedes: a deterministic synthetic pedestrian re-ID / text-search dataset (DESIGN.md section 5).

What is generated, under ``<root>/<dataset_dirname(...)>/``:

- ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` in the real Market-1501 layout,
  file names ``%04d_c%ds%d_%06d_%02d.jpg`` (pid, camera 1-6, sequence, frame, box), JPEG q95
  without chroma subsampling. Train and test identities are disjoint. Each test identity has 1-2
  query images (from 1-2 cameras) and its other images in the gallery, which therefore holds
  cross-camera matches and same-camera images (removed by the protocol). The gallery also holds
  distractors (pid 0000, people who are none of the identities) and junk boxes (pid -1: empty
  backgrounds or extreme crops), which the loader drops.
- ``reid_raw.json``: CUHK-PEDES-style list, one record per identity image:
  ``{"split": "train"|"test", "captions": [2 English descriptions], "file_path":
  "bounding_box_train/0001_c1s1_000001_01.jpg", "id": pid (1-based, as in the file name),
  "processed_tokens": [[lower-case word tokens], ...]}``; distractors and junk are not listed.
- ``reid_raw_vi.json``: the same records with Vietnamese captions.
- ``attributes.json``: ``{"identities": {"<pid>": {<ATTRIBUTE_KEYS>..., "twin_of": pid|null,
  "twin_detail": key|null, "near_twin": bool, "split": ...}}, "images": {"<file_path>": {"pid",
  "camid" (0-based), "viewid", "view", "occluded"}}}``.
- ``meta.json`` (written last, its presence marks a complete dataset): generator version, seed,
  arguments, counts, per-camera settings with the mean BT.709 luma measured on the written
  images, the dark cameras, the near-twin pairs.

Identities are tuples of visual attributes (``ATTRIBUTE_KEYS``); any two identities that are
not a near-twin pair differ by a weighted attribute distance >= MIN_IDENTITY_DISTANCE. A share
(``twin_share``) of the identities of each split are near-twins: copies of another identity of
the same split with exactly ONE of ``TWIN_DETAILS`` changed (shoes colour, bag, hat, chest logo,
hair colour), so they are hard negatives in the same gallery. Every caption names all of those
details with a fixed phrase (``detail_phrase``), so the captions of a near-twin pair always
differ on the separating detail.

Six cameras (``render.CAMERAS``): different backgrounds, colour casts and illumination;
cameras 3 and 5 (camids 2 and 4) are the dark ones (mean luma < 0.35). Views front / back / side
are view ids 0 / 1 / 2. About 15 % of the images are partially occluded.

Determinism: identity attributes and the image plan are drawn from generators seeded with
(seed, stream, pid); each image is rendered with its own generator seeded with
(seed, stream, pid, image index). The output is byte-identical for the same arguments whatever
the number of worker processes. Generation writes into a hidden temporary folder next to the
target and renames it at the end, so an interrupted run never leaves a complete-looking dataset.

Usage::

    python -m datasets.synth --root ./data --ids 300 --seed 0 [--train-ids 150] [--size 128 64]

Modules: ``identities`` (attributes, near-twins, the identity plan), ``captions`` (English /
Vietnamese captions), ``plan`` (the image list), ``render`` (drawing one image under one camera),
``generator`` (``generate_synthpedes``: rendering and the files), ``loader`` (``load_synth``),
``seeds`` (the seed streams), ``cli`` (the command line).
"""
from ..bases import DatasetFormatError
from .captions import detail_phrase, make_captions, tokenize
from .cli import main
from .generator import (DARK_LUMA_THRESHOLD, GENERATOR_VERSION, dataset_dirname, generate_synthpedes,
                        read_meta)
from .identities import (ATTRIBUTE_KEYS, DEFAULT_TWIN_SHARE, MIN_IDENTITY_DISTANCE, TWIN_DETAILS,
                         attribute_distance, make_near_twin, plan_identities, sample_attributes)
from .loader import SYNTH_LAYOUT, load_synth

__all__ = [
    "ATTRIBUTE_KEYS", "DARK_LUMA_THRESHOLD", "DEFAULT_TWIN_SHARE", "GENERATOR_VERSION",
    "MIN_IDENTITY_DISTANCE", "SYNTH_LAYOUT", "TWIN_DETAILS", "DatasetFormatError",
    "attribute_distance", "dataset_dirname", "detail_phrase", "generate_synthpedes", "load_synth",
    "main", "make_captions", "make_near_twin", "plan_identities", "read_meta", "sample_attributes",
    "tokenize",
]
