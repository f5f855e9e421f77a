"""Text-to-image evaluation of a dual encoder (MODEL.TASK 'tbps') on one split.

Protocol (DESIGN.md section 3, REFERENCES.md 1.3; IRRA ``utils/metrics.py`` ``rank``): every
caption of the split (``datasets.t2i.T2ISet.captions``) queries every gallery image once;
similarity = cosine of the L2-normalised projected global features (``encode_text`` /
``encode_image``: ``txt_feat`` / ``img_feat``); the gallery is ranked by descending similarity,
ties by ascending gallery index; relevant = same pid; no camera filter, no re-ranking;
R1/R5/R10, mAP, mINP (``utils.metrics.eval_t2i_features``, blocked over TEST.EVAL_BLOCK queries,
CMC up to TEST.MAX_RANK). With TEST.I2T the image-to-text direction (each image queries every
caption) is computed on the same features. Features are always normalised, as IRRA and
TBPS-CLIP do (the mSigLIP repos rank un-normalised dot products: REFERENCES.md 1.3); TEST.FEAT_NORM,
TEST.DISTANCE and TEST.NECK_FEAT are image re-ID keys and not read here.

Features are extracted with the model in eval mode (its mode is restored afterwards), under
``torch.no_grad``: images through ``datasets.make_dataloader.build_test_loader`` (the test
transform, TEST.IMS_PER_BATCH per batch), captions tokenised by the dual encoder's tokenizer
(``datasets.tokenize.build_tokenizer``) in batches of TEST.IMS_PER_BATCH.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from datasets.make_dataloader import build_test_loader
from datasets.t2i import T2ISet
from datasets.tokenize import build_tokenizer
from utils.dist import unwrap
from utils.metrics import cosine_similarity_matrix, eval_t2i_features
from utils.progress import progress

logger = logging.getLogger("phasereid")

#: what summary.json and the logs say was computed (beside the numbers)
T2I_FEATURE = "img_feat / txt_feat (projected global features)"


#: the same for LGUR (MODEL.TBPS.ARCH 'lgur'; model/lgur.py)
T2I_FEATURE_LGUR = "LGUR T_re / V_re parts, concatenated (encode_text / encode_image)"


def describe_t2i(cfg) -> Dict[str, object]:
    """What a text-to-image evaluation computes (summary.json fields, logs)."""
    feature = T2I_FEATURE_LGUR if cfg.MODEL.TBPS.ARCH == "lgur" else T2I_FEATURE
    return {"feature": feature, "feat_norm": True, "distance": "cosine",
            "re_ranking": "none", "max_rank": int(cfg.TEST.MAX_RANK)}


@dataclass
class T2IEvaluation:
    """One text-to-image evaluation of a split.

    Attributes:
        split: the split evaluated ('val' | 'test').
        metrics: t2i numbers in percent (``EvalResult.as_dict()``: METRIC_KEYS, num_valid,
            num_skipped).
        i2t_metrics: image-to-text numbers in percent, or None (TEST.I2T False).
        txt_feats: (Q, D) float32 caption features (not normalised), in ``T2ISet.captions`` order.
        img_feats: (G, D) float32 image features (not normalised), in ``T2ISet.images`` order.
        caption_pids, image_pids: (Q,) / (G,) int64 pids.
        description: :func:`describe_t2i`.
        seconds_images, seconds_captions: wall time of the image / caption feature extraction.
    """

    split: str
    metrics: Dict[str, float]
    i2t_metrics: Optional[Dict[str, float]]
    txt_feats: torch.Tensor
    img_feats: torch.Tensor
    caption_pids: np.ndarray
    image_pids: np.ndarray
    description: Dict[str, object]
    seconds_images: float = 0.0
    seconds_captions: float = 0.0


@torch.no_grad()
def extract_image_features(cfg, model, records, device, desc: str = "image features"
                           ) -> torch.Tensor:
    """``encode_image`` of ``records`` through the test loader: (N, D) float32 on the CPU, in
    record order. The model is put in eval mode and its mode restored afterwards."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    feats = []
    try:
        for batch in progress(build_test_loader(cfg, list(records)), desc=desc):
            feats.append(net.encode_image(batch["img"].to(device)).float().cpu())
    finally:
        net.train(was_training)
    return torch.cat(feats)


@torch.no_grad()
def extract_caption_features(cfg, model, captions: Sequence[str], tokenizer, device,
                             desc: str = "caption features") -> torch.Tensor:
    """``encode_text`` of ``captions`` tokenised by ``tokenizer`` in batches of
    TEST.IMS_PER_BATCH: (N, D) float32 on the CPU, in caption order. The model is put in eval
    mode and its mode restored afterwards."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    size = int(cfg.TEST.IMS_PER_BATCH)
    starts = range(0, len(captions), size)
    feats = []
    try:
        for start in progress(starts, desc=desc):
            ids, mask = tokenizer(list(captions[start:start + size]))
            feats.append(net.encode_text(ids.to(device), mask.to(device)).float().cpu())
    finally:
        net.train(was_training)
    return torch.cat(feats)


def evaluate_t2i(cfg, model, t2i: T2ISet, device, tokenizer=None,
                 i2t: Optional[bool] = None) -> T2IEvaluation:
    """Extract the features of one split's captions and images and evaluate them (module
    docstring).

    Args:
        cfg: the config (TEST.IMS_PER_BATCH, MAX_RANK, EVAL_BLOCK, I2T; INPUT.* for the images).
        model: a ``DualEncoder`` (or a DDP wrapper of one).
        t2i: the split's queries and gallery (``datasets.t2i.t2i_set``).
        device: where the model runs.
        tokenizer: the caption tokenizer; None = ``build_tokenizer(cfg)``.
        i2t: also evaluate image-to-text; None = TEST.I2T.

    Returns:
        :class:`T2IEvaluation`.
    """
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(cfg)
    i2t = bool(cfg.TEST.I2T) if i2t is None else bool(i2t)
    start = time.perf_counter()
    img_feats = extract_image_features(cfg, model, t2i.images, device,
                                       desc=f"{t2i.name} image features")
    seconds_images = time.perf_counter() - start
    start = time.perf_counter()
    txt_feats = extract_caption_features(cfg, model, t2i.captions, tokenizer, device,
                                         desc=f"{t2i.name} caption features")
    seconds_captions = time.perf_counter() - start
    t = cfg.TEST
    result = eval_t2i_features(txt_feats, img_feats, t2i.caption_pids, t2i.image_pids,
                               max_rank=t.MAX_RANK, block_size=t.EVAL_BLOCK)
    i2t_metrics = None
    if i2t:
        i2t_metrics = eval_t2i_features(txt_feats, img_feats, t2i.caption_pids, t2i.image_pids,
                                        max_rank=t.MAX_RANK, i2t=True,
                                        block_size=t.EVAL_BLOCK).as_dict()
    return T2IEvaluation(split=t2i.name, metrics=result.as_dict(), i2t_metrics=i2t_metrics,
                         txt_feats=txt_feats, img_feats=img_feats,
                         caption_pids=t2i.caption_pids, image_pids=t2i.image_pids,
                         description=describe_t2i(cfg), seconds_images=seconds_images,
                         seconds_captions=seconds_captions)


def evaluate_subset(cfg, evaluation: T2IEvaluation, queries: np.ndarray) -> Dict[str, float]:
    """Text-to-image numbers (percent) of the caption queries ``queries`` (indices into the
    split's captions, ``datasets.t2i.query_subset``) against the same whole gallery: the rows of
    those captions of the full evaluation, so each query's ranking is the one it has there."""
    t = cfg.TEST
    q = torch.as_tensor(np.asarray(queries, dtype=np.int64))
    return eval_t2i_features(evaluation.txt_feats[q], evaluation.img_feats,
                             evaluation.caption_pids[np.asarray(queries)], evaluation.image_pids,
                             max_rank=t.MAX_RANK, block_size=t.EVAL_BLOCK).as_dict()


def top_images(evaluation: T2IEvaluation, queries: Sequence[int], k: int) -> np.ndarray:
    """The first ``k`` gallery indices of each caption in ``queries`` (positions in the split's
    captions) as the protocol ranks them: descending cosine similarity, ties by ascending gallery
    index (``utils.metrics.cosine_similarity_matrix``, a stable sort). Shape (len(queries),
    min(k, G)); for the ranked-list figure."""
    sim = cosine_similarity_matrix(evaluation.txt_feats[list(queries)], evaluation.img_feats)
    order = np.argsort(-sim.numpy(), axis=1, kind="stable")
    return order[:, :k]
