"""The SynthPedes image plan: every image to render (identity, distractor, junk), in a fixed order.

Each :class:`ImageJob` carries the entropy of its own generator, so the plan is independent of
how the images are later rendered (one process or many).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

from . import render
from .identities import MIN_IDENTITY_DISTANCE, attribute_distance, sample_attributes
from .seeds import (STREAM_DISTRACTOR, STREAM_IMAGE, STREAM_JUNK, STREAM_PLAN, choice,
                    seeded_rng)

OCCLUSION_PROB = 0.15
IMAGES_PER_ID = (15, 20)            # inclusive range of images per identity
CAMERAS_PER_ID = ((3, 4, 5, 6), (0.15, 0.35, 0.30, 0.20))


@dataclasses.dataclass
class ImageJob:
    """One image to render. ``entropy`` seeds its generator; ``folder`` is the Market folder."""

    kind: str                       # 'identity' | 'distractor' | 'junk'
    folder: str
    name: str
    pid: int                        # raw pid as in the file name (0 distractor, -1 junk)
    camid: int                      # 0-based
    view: int
    occluded: bool
    attrs: dict
    entropy: Tuple[int, ...]
    size: Tuple[int, int] = (128, 64)
    out_dir: str = ""

    @property
    def rel_path(self) -> str:
        return f"{self.folder}/{self.name}"


def _file_name(pid: int, cam: int, seq: int, frame: int, box: int) -> str:
    pid_s = "-1" if pid == -1 else f"{pid:04d}"
    return f"{pid_s}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"


def _identity_jobs(pid: int, info: dict, seed: int) -> List[ImageJob]:
    rng = seeded_rng(seed, STREAM_PLAN, pid)
    n = int(rng.integers(IMAGES_PER_ID[0], IMAGES_PER_ID[1] + 1))
    k = int(choice(rng, *CAMERAS_PER_ID))
    cams = sorted(int(c) for c in rng.choice(len(render.CAMERAS), size=k, replace=False))
    counts = 2 + rng.multinomial(n - 2 * k, [1.0 / k] * k)
    is_test = info["split"] == "test"
    query_cams = set()
    if is_test:
        n_query = 1 if rng.random() < 0.6 else 2
        query_cams = {int(c) for c in rng.choice(cams, size=n_query, replace=False)}
    jobs: List[ImageJob] = []
    for cam, count in zip(cams, counts):
        camera = render.CAMERAS[cam]
        seq = int(rng.integers(1, 7))
        frame = int(rng.integers(1, 5000))
        for j in range(int(count)):
            frame += int(rng.integers(5, 60))
            view = int(rng.choice(3, p=camera.view_probs))
            occluded = bool(rng.random() < OCCLUSION_PROB)
            if not is_test:
                folder = "bounding_box_train"
            else:
                folder = "query" if (cam in query_cams and j == 0) else "bounding_box_test"
            jobs.append(ImageJob("identity", folder, _file_name(pid, cam + 1, seq, frame, 1), pid,
                                 cam, view, occluded, info["attrs"],
                                 (seed, STREAM_IMAGE, pid, len(jobs))))
    return jobs


def _extra_jobs(num: int, kind: str, seed: int, taken: List[dict]) -> List[ImageJob]:
    """Distractors (pid 0) or junk boxes (pid -1).

    Distractor people are at ``attribute_distance`` >= MIN_IDENTITY_DISTANCE from every
    identity (``taken``), so they are never accidental near-twins of an identity.
    """
    stream = STREAM_DISTRACTOR if kind == "distractor" else STREAM_JUNK
    jobs = []
    for i in range(num):
        rng = seeded_rng(seed, stream, i)
        while True:
            attrs = sample_attributes(rng)
            if all(attribute_distance(attrs, t) >= MIN_IDENTITY_DISTANCE for t in taken):
                break
        cam = int(rng.integers(0, len(render.CAMERAS)))
        view = int(rng.choice(3, p=render.CAMERAS[cam].view_probs))
        occluded = kind == "distractor" and bool(rng.random() < OCCLUSION_PROB)
        pid = 0 if kind == "distractor" else -1
        name = _file_name(pid, cam + 1, int(rng.integers(1, 7)), 100 * i + int(rng.integers(1, 100)),
                          int(rng.integers(1, 9)))
        jobs.append(ImageJob(kind, "bounding_box_test", name, pid, cam, view, occluded, attrs,
                             (seed, stream, i, 1)))
    return jobs


def plan_images(identities: Dict[int, dict], seed: int, num_distractors: int,
                num_junk: int) -> List[ImageJob]:
    """Every image of the dataset, in a fixed order (identities by pid, distractors, junk)."""
    jobs: List[ImageJob] = []
    for pid, info in identities.items():
        jobs += _identity_jobs(pid, info, seed)
    taken = [info["attrs"] for info in identities.values()]
    jobs += _extra_jobs(num_distractors, "distractor", seed, taken)
    jobs += _extra_jobs(num_junk, "junk", seed, taken)
    return jobs

