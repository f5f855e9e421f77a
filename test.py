"""Evaluate one checkpoint.

    python test.py --config_file CFG TEST.WEIGHT path/transformer_120.pth [KEY VALUE ...]
    python test.py TEST.WEIGHT path/transformer_120.pth [KEY VALUE ...]   # config from the file

Without --config_file the resolved config stored in the checkpoint is used (overrides still
apply). Results go to OUTPUT_DIR when it is given on the command line, otherwise to
``<checkpoint folder>/test_<checkpoint name>/``: test_log.txt, an R1/R5/R10/mAP/mINP table,
ranked_list.png (also in tensorboard under tb/), optionally features.npz (TEST.EXPORT_FEATURES),
and summary.json, written LAST and only on success. It names the weight file evaluated (path,
size, mtime) and the fingerprint of the test config (utils/summary.py); the launcher counts it as
"this checkpoint is tested" only while both still match.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from datasets.make_dataloader import make_dataloader
from model.make_model import make_model
from model.weights import load_for_test
from processor.inference import check_evaluable, evaluate_model, format_metrics
from utils.checkpoint import checkpoint_meta, load_checkpoint
from utils.dist import resolve_device
from utils.eval_config import has_clip_tower, require_weight, resolve_eval_config
from utils.logger import log_crash, setup_logger
from utils.provenance import evaluation_fingerprint
from utils.summary import SUMMARY_FILE, TestSummary, weight_fields
from utils.visualize import ranked_list_figure, save_figure


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="PhaseReID evaluation of one checkpoint")
    parser.add_argument("--config_file", default="", help="YAML recipe (default: the config "
                        "stored in the checkpoint)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, "
                        "including TEST.WEIGHT")
    return parser.parse_args(argv)


def resolve_config(args):
    """(cfg, checkpoint, meta) from --config_file or the checkpoint's stored config
    (``utils.eval_config.resolve_eval_config``, which the launcher uses too)."""
    weight = require_weight(args.opts)
    ckpt = load_checkpoint(weight)
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    stored = None
    if not args.config_file:
        meta = checkpoint_meta(ckpt, weight)
        stored = meta["config"]
    clip_tower = meta is not None and has_clip_tower(ckpt["model"])
    cfg = resolve_eval_config(args.opts, config_file=args.config_file, stored_config=stored,
                              clip_tower=clip_tower)
    return cfg, ckpt, meta


def pick_vis_queries(num_queries: int, count: int):
    if count <= 0 or num_queries == 0:
        return []
    return sorted(set(np.linspace(0, num_queries - 1, min(count, num_queries)).astype(int)))


def ranked_for_figure(cfg, dataset, split, vis, vis_dist):
    """Top-k gallery items per picked query, after the protocol's same-pid-same-camera removal."""
    test = dataset.test
    q_recs = [test[split.query_idx[i]] for i in vis]
    g_recs = [test[j] for j in split.gallery_idx]
    ranked_paths, ranked_pids = [], []
    for q, row in zip(q_recs, vis_dist):
        order = np.argsort(row, kind="stable")
        keep = [j for j in order if not (split.camera_filter and g_recs[j].pid == q.pid
                                         and g_recs[j].camid == q.camid)]
        top = keep[:cfg.TEST.VIS_TOPK]
        ranked_paths.append([g_recs[j].path for j in top])
        ranked_pids.append([g_recs[j].pid for j in top])
    return [q.path for q in q_recs], [q.pid for q in q_recs], ranked_paths, ranked_pids


def main(argv=None) -> int:
    args = parse_args(argv)
    weight_file = evaluated_file(args.opts)   # before the file is read
    cfg, ckpt, meta = resolve_config(args)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    summary_path = os.path.join(cfg.OUTPUT_DIR, SUMMARY_FILE)
    if os.path.exists(summary_path):
        os.remove(summary_path)  # a stale summary must not survive a failed re-test
    logger = setup_logger(cfg.OUTPUT_DIR, "test_log.txt")
    with log_crash(logger):
        return evaluate_checkpoint(cfg, ckpt, meta, weight_file, summary_path, logger)


def evaluated_file(opts) -> dict:
    """Path, size and mtime of the weight file (``utils.summary.weight_fields``), taken before
    the file is read so that they describe the file evaluated; a missing file is reported by the
    load that follows."""
    weight = require_weight(opts)
    if not os.path.isfile(weight):
        return {"weight": os.path.abspath(weight), "weight_size": None, "weight_mtime_ns": None}
    return weight_fields(weight)


def evaluate_checkpoint(cfg, ckpt, meta, weight_file: dict, summary_path: str, logger) -> int:
    """Evaluate, draw the ranked list, export features, then write summary.json (last), naming
    the weight file evaluated (``weight_file``: path, size, mtime) and the test config's
    fingerprint (``utils.provenance.evaluation_fingerprint``)."""
    logger.info("Command: %s", " ".join(sys.argv))
    start = time.time()
    device = resolve_device(cfg)
    data = make_dataloader(cfg)
    ds = data.dataset
    check_evaluable(ds)
    counts = (meta["num_classes"], meta["num_cams"], meta["num_views"]) if meta else (
        ds.num_train_pids, ds.num_cams, ds.num_views)
    model = make_model(cfg, *counts)
    clip_fusion = load_for_test(model, ckpt, meta, cfg.TEST.WEIGHT, logger)
    model.to(device).eval()

    vis = pick_vis_queries(len(ds.splits[0].query_idx), cfg.TEST.VIS_QUERIES)
    result = evaluate_model(cfg, model, data, device, vis)
    metrics, evaluation = result.metrics, result.description
    logger.info("Results of %s on %s (%s):%s", cfg.TEST.WEIGHT, ds.name, evaluation,
                format_metrics(metrics))

    epoch = meta["epoch"] if meta else None
    if vis:
        fig = ranked_list_figure(*ranked_for_figure(cfg, ds, ds.splits[0], vis,
                                                    result.outcomes[0].vis_dist),
                                 title=f"{ds.name} epoch {epoch}: top-{cfg.TEST.VIS_TOPK}")
        writer = SummaryWriter(os.path.join(cfg.OUTPUT_DIR, "tb"))
        writer.add_figure("test/ranked_list", fig, global_step=epoch or 0)
        writer.close()
        save_figure(fig, os.path.join(cfg.OUTPUT_DIR, "ranked_list.png"))
    if cfg.TEST.EXPORT_FEATURES:
        np.savez(os.path.join(cfg.OUTPUT_DIR, "features.npz"), feats=result.feats.numpy(),
                 pids=result.pids, camids=result.camids,
                 paths=np.array([r.path for r in ds.test]))

    summary = TestSummary(
        metrics=metrics,
        **weight_file,
        test_config_sha256=evaluation_fingerprint(cfg),
        epoch=epoch,
        dataset=ds.name,
        split=[s.name for s in ds.splits],
        **evaluation,
        clip_fusion=clip_fusion,
        # test camera / view ids that no training image has (untrained SIE rows when SIE is on)
        unseen_test_cameras=data.unseen_test_ids["camera"],
        unseen_test_views=data.unseen_test_ids["view"],
        seconds=round(time.time() - start, 2),
    )
    summary.write(summary_path)
    logger.info("Wrote %s", summary_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
