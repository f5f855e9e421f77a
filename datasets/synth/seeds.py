"""Seeding of the SynthPedes generator: one ``numpy`` generator per (seed, stream, ...) tuple.

Every random draw of the generator comes from ``seeded_rng(seed, STREAM_*, ...)``: identity
attributes from (seed, STREAM_IDENTITIES), the image plan of identity ``pid`` from (seed,
STREAM_PLAN, pid), the pixels of its i-th image from (seed, STREAM_IMAGE, pid, i), and so on. A
draw therefore never depends on the order in which other images are planned or rendered, which
is what makes the output byte-identical for any number of worker processes.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

# Seed streams: the first words of every SeedSequence entropy after the user seed.
STREAM_IDENTITIES, STREAM_PLAN, STREAM_IMAGE = 1, 2, 3
STREAM_DISTRACTOR, STREAM_JUNK, STREAM_CAPTION = 4, 5, 6


def seeded_rng(seed: int, *words: int) -> np.random.Generator:
    """``numpy.random.default_rng([seed, *words])``: the generator of one stream / item."""
    return np.random.default_rng([seed, *words])


def choice(rng: np.random.Generator, options: Sequence, p: Optional[Sequence[float]] = None):
    """One element of ``options`` (probabilities ``p``), drawn as an index so any sequence works."""
    return options[int(rng.choice(len(options), p=p))]
