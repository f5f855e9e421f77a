"""Evaluate one checkpoint.

    python test.py --config_file CFG TEST.WEIGHT path/transformer_120.pth [KEY VALUE ...]
    python test.py TEST.WEIGHT path/transformer_120.pth [KEY VALUE ...]   # config from the file

Without --config_file the resolved config stored in the checkpoint is used (overrides still
apply). Results go to OUTPUT_DIR when it is given on the command line, otherwise to
``<checkpoint folder>/test_<checkpoint name>/``: test_log.txt, an R1/R5/R10/mAP/mINP table,
ranked_list.png (also in tensorboard under tb/), optionally features.npz (TEST.EXPORT_FEATURES),
and summary.json, written LAST and only on success (the launcher treats its presence as
"this checkpoint is tested").
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from configs import load_config
from datasets.make_dataloader import make_dataloader
from model.make_model import make_model
from model.weights import load_for_test
from processor.inference import check_evaluable, evaluate_model, format_metrics
from utils.checkpoint import checkpoint_meta, load_checkpoint
from utils.dist import resolve_device
from utils.logger import log_crash, setup_logger
from utils.summary import SUMMARY_FILE, TestSummary
from utils.visualize import ranked_list_figure, save_figure


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="PhaseReID evaluation of one checkpoint")
    parser.add_argument("--config_file", default="", help="YAML recipe (default: the config "
                        "stored in the checkpoint)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, "
                        "including TEST.WEIGHT")
    return parser.parse_args(argv)


def option_value(opts, key):
    """The value given for ``key`` in a KEY VALUE list, or None."""
    for k, v in zip(opts[::2], opts[1::2]):
        if k == key:
            return v
    return None


def resolve_config(args):
    """(cfg, checkpoint, meta) from --config_file or the checkpoint's stored config."""
    weight = option_value(args.opts, "TEST.WEIGHT")
    if not weight:
        raise ValueError("give the checkpoint to evaluate: python test.py [--config_file CFG] "
                         "TEST.WEIGHT path/to/transformer_<epoch>.pth")
    ckpt = load_checkpoint(weight)
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    if args.config_file:
        # no path checks: the weights come from TEST.WEIGHT, not MODEL.PRETRAIN_PATH
        cfg = load_config(args.config_file, args.opts, freeze=False, check_paths=False)
    else:
        meta = checkpoint_meta(ckpt, weight)
        cfg = load_config(config_text=meta["config"], opts=args.opts, freeze=False)
    out_dir = option_value(args.opts, "OUTPUT_DIR")
    if out_dir is None:
        stem = os.path.splitext(os.path.basename(weight))[0]
        out_dir = os.path.join(os.path.dirname(os.path.abspath(weight)), f"test_{stem}")
    cfg.OUTPUT_DIR = out_dir
    cfg.MODEL.PRETRAIN_CHOICE = "none"  # the weights come from TEST.WEIGHT
    # training-only branches are not built: TG-MIM's text encoder is not part of the test
    # feature (and building it could need a download); test images need no captions
    cfg.LOSS.TGMIM.ENABLE = False
    cfg.DATASETS.CAPTION_SOURCE = "none"
    if meta is not None and any(k.startswith("clip_fusion.tower.") for k in ckpt["model"]):
        cfg.MODEL.CLIP_PRETRAIN = ""   # the open_clip tower's weights are in the checkpoint
    cfg.MODEL.DIST_TRAIN = False
    cfg.freeze()
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
    cfg, ckpt, meta = resolve_config(args)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    summary_path = os.path.join(cfg.OUTPUT_DIR, SUMMARY_FILE)
    if os.path.exists(summary_path):
        os.remove(summary_path)  # a stale summary must not survive a failed re-test
    logger = setup_logger(cfg.OUTPUT_DIR, "test_log.txt")
    with log_crash(logger):
        return evaluate_checkpoint(cfg, ckpt, meta, summary_path, logger)


def evaluate_checkpoint(cfg, ckpt, meta, summary_path: str, logger) -> int:
    """Evaluate, draw the ranked list, export features, then write summary.json (last)."""
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
        weight=os.path.abspath(cfg.TEST.WEIGHT),
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
