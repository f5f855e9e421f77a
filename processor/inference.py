"""Feature extraction and evaluation of a model on a dataset's evaluation splits.

Protocol: utils/metrics.py (Market-1501 ``eval_func`` semantics, blocked); VehicleID-style
datasets carry several seeded splits (trials) whose metrics are averaged (mean and std).
With TEST.RE_RANKING the k-reciprocal distance (utils/reranking.py) is evaluated instead of
TEST.DISTANCE; features are L2-normalised first when TEST.FEAT_NORM is True.

MODEL.TASK 'tbps' is evaluated text-to-image instead (``processor/t2i.py``): during training on
the selection split (TEST.SELECT_ON), by test.py on every split.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from datasets.t2i import t2i_set
from utils.dist import unwrap
from utils.metrics import evaluate, evaluate_features, pairwise_distance
from utils.progress import progress
from utils.reranking import describe_reranking, re_ranking
from utils.results import METRIC_KEYS, EvalResult

from .t2i import evaluate_t2i

logger = logging.getLogger("phasereid")


@torch.no_grad()
def extract_features(model, loader, device, neck_feat: str, desc: str = "features") -> torch.Tensor:
    """Test features (N, D) float32 on the CPU, in loader order."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    feats = []
    for batch in progress(loader, desc=desc):
        out = net({k: batch[k].to(device) for k in ("img", "camid", "viewid")})
        feats.append(net.test_feature(out, neck_feat).float().cpu())
    net.train(was_training)
    return torch.cat(feats)


def describe_evaluation(cfg) -> Dict[str, object]:
    """What an evaluation computes (goes into summary.json and the logs beside the numbers)."""
    t = cfg.TEST
    return {
        "feature": f"{t.NECK_FEAT} BNNeck" + (" + JPM parts" if cfg.MODEL.JPM else ""),
        "feat_norm": bool(t.FEAT_NORM),
        "distance": t.DISTANCE if not t.RE_RANKING else "squared euclidean (re-ranking input)",
        "re_ranking": describe_reranking(t.RE_RANKING_K1, t.RE_RANKING_K2, t.RE_RANKING_LAMBDA)
        if t.RE_RANKING else "none",
        "max_rank": t.MAX_RANK,
    }


@dataclass
class SplitOutcome:
    result: EvalResult
    vis_dist: Optional[np.ndarray]  # distances of the queries picked for the figure, (n, G)


def evaluate_split(cfg, feats: torch.Tensor, pids: np.ndarray, camids: np.ndarray, split,
                   vis_queries: Sequence[int] = ()) -> SplitOutcome:
    """Evaluate one split; also return the distance rows of ``vis_queries`` (split positions)."""
    t = cfg.TEST
    qf, gf = feats[split.query_idx], feats[split.gallery_idx]
    q_pids, g_pids = pids[split.query_idx], pids[split.gallery_idx]
    q_cams, g_cams = camids[split.query_idx], camids[split.gallery_idx]
    vis = list(vis_queries)
    if t.RE_RANKING:
        if t.FEAT_NORM:
            qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
        dist = re_ranking(qf, gf, k1=t.RE_RANKING_K1, k2=t.RE_RANKING_K2,
                          lambda_value=t.RE_RANKING_LAMBDA)
        result = evaluate(dist, q_pids, g_pids, q_cams, g_cams, max_rank=t.MAX_RANK,
                          block_size=t.EVAL_BLOCK, camera_filter=split.camera_filter)
        vis_dist = np.asarray(dist[vis]) if vis else None
    else:
        result = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=t.DISTANCE,
                                   feat_norm=t.FEAT_NORM, max_rank=t.MAX_RANK,
                                   block_size=t.EVAL_BLOCK, camera_filter=split.camera_filter)
        vis_dist = None
        if vis:
            a, b = qf[vis], gf
            if t.FEAT_NORM:
                a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
            vis_dist = pairwise_distance(a, b, t.DISTANCE).numpy()
    return SplitOutcome(result, vis_dist)


def summarise_results(results: List[EvalResult]) -> Dict[str, float]:
    """Percent metrics of one split, or mean and std over several (VehicleID trials)."""
    rows = [r.as_dict() for r in results]
    if len(rows) == 1:
        return rows[0]
    summary: Dict[str, float] = {}
    for key in METRIC_KEYS:
        values = np.array([row[key] for row in rows])
        summary[key] = float(values.mean())
        summary[key + "_std"] = float(values.std(ddof=1))
    summary["num_valid"] = int(sum(r.num_valid for r in results))
    summary["num_skipped"] = int(sum(r.num_skipped for r in results))
    summary["num_trials"] = len(rows)
    return summary


def check_evaluable(dataset, cfg) -> None:
    """Raise a clear error when ``dataset`` cannot be evaluated under ``cfg``'s task.

    MODEL.TASK 'reid': the dataset needs an image re-ID evaluation split; the text-based person
    search datasets (``datasets/text_datasets.py``) have ``splits == []``: their test images have
    no query / gallery roles. MODEL.TASK 'tbps' (text-to-image, ``processor/t2i.py``): the test
    split, and with TEST.SELECT_ON 'val' the validation split, must hold captioned images
    (``datasets.t2i.t2i_set``).
    """
    if cfg.MODEL.TASK == "tbps":
        check_t2i_evaluable(dataset, cfg.TEST.SELECT_ON)
        return
    if not dataset.splits:
        raise ValueError(
            f"{dataset.name} has no image re-ID evaluation split (a text-based person search "
            "dataset): evaluate it text-to-image with MODEL.TASK 'tbps', or set "
            "SOLVER.EVAL_PERIOD 0 to train")


def check_t2i_evaluable(dataset, select_on: str) -> None:
    """Text-to-image: the test split has captioned images, and so does the validation split
    when the best epoch is selected on it (``select_on`` = TEST.SELECT_ON)."""
    t2i_set(dataset, "test")
    if select_on != "val":
        return
    if not dataset.val:
        raise ValueError(
            f"TEST.SELECT_ON 'val' but {dataset.name} has no validation split: hold out training "
            f"identities with DATASETS.{'SYNTH_' if dataset.name == 'synth' else ''}VAL_IDS <n>, "
            "or select on test explicitly with "
            "TEST.SELECT_ON 'test' (optimistic best-epoch numbers)")
    try:
        t2i_set(dataset, "val")
    except ValueError as exc:
        raise ValueError(f"{exc} (TEST.SELECT_ON 'val' selects the best epoch on it; or select "
                         "on test explicitly with TEST.SELECT_ON 'test')") from None


@dataclass
class Evaluation:
    """One evaluation of a model on a dataset's test set (the one path of train and test).

    ``feats`` (N, D) are the test features in ``dataset.test`` order; ``outcomes`` one per
    evaluation split (several for VehicleID trials); ``metrics`` their summary (percent);
    ``description`` says what was computed (:func:`describe_evaluation`).
    """

    feats: torch.Tensor
    pids: np.ndarray
    camids: np.ndarray
    outcomes: List[SplitOutcome]
    metrics: Dict[str, float]
    description: Dict[str, object]


def evaluate_model(cfg, model, data, device, vis_queries: Sequence[int] = ()) -> Evaluation:
    """Extract test features and evaluate every split; ``vis_queries`` (positions in the first
    split's queries) also get their distance rows, for the ranked-list figure."""
    dataset = data.dataset
    check_evaluable(dataset, cfg)
    feats = extract_features(model, data.test_loader, device, cfg.TEST.NECK_FEAT)
    pids = np.array([r.pid for r in dataset.test])
    camids = np.array([r.camid for r in dataset.test])
    outcomes = [evaluate_split(cfg, feats, pids, camids, split, vis_queries if i == 0 else ())
                for i, split in enumerate(dataset.splits)]
    metrics = summarise_results([o.result for o in outcomes])
    return Evaluation(feats, pids, camids, outcomes, metrics, describe_evaluation(cfg))


def do_inference(cfg, model, data, device) -> Dict[str, float]:
    """Evaluate during training; logs and returns percent metrics (``METRIC_KEYS`` and the
    query counts).

    MODEL.TASK 'reid': :func:`evaluate_model` on the test splits. MODEL.TASK 'tbps':
    text-to-image (``processor.t2i.evaluate_t2i``) on the selection split of TEST.SELECT_ON --
    'val' the validation split, 'test' the test split (logged as a warning: best-epoch numbers
    selected on test are optimistic).
    """
    if cfg.MODEL.TASK == "tbps":
        return _t2i_selection_metrics(cfg, model, data.dataset, device)
    metrics = evaluate_model(cfg, model, data, device).metrics
    logger.info(format_metrics(metrics))
    return metrics


def _t2i_selection_metrics(cfg, model, dataset, device) -> Dict[str, float]:
    split = cfg.TEST.SELECT_ON
    check_t2i_evaluable(dataset, split)
    if split == "test":
        logger.warning("Selecting the best epoch on the TEST split (TEST.SELECT_ON 'test'): the "
                       "best-epoch numbers of %s are optimistic", dataset.name)
    t2i = t2i_set(dataset, split)
    source = f", {dataset.val_source}" if split == "val" else ""
    evaluation = evaluate_t2i(cfg, model, t2i, device, i2t=False)
    logger.info("Text-to-image on the %s split of %s (%d captions x %d images%s):%s", split,
                dataset.name, len(t2i.captions), len(t2i.images), source,
                format_metrics(evaluation.metrics))
    return evaluation.metrics


def format_metrics(metrics: Dict[str, float]) -> str:
    """An R1/R5/R10/mAP/mINP table (with +/- std when averaged over trials)."""
    head = " | ".join(f"{k:>7}" for k in METRIC_KEYS)
    cells = []
    for key in METRIC_KEYS:
        std = metrics.get(key + "_std")
        cells.append(f"{metrics[key]:6.2f}" + (f"±{std:.2f}" if std is not None else " "))
    body = " | ".join(f"{c:>7}" for c in cells)
    extra = f"valid queries {metrics['num_valid']}, skipped (no match) {metrics['num_skipped']}"
    return f"\n  {head}\n  {body}\n  {extra}"
