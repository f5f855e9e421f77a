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
from model.make_model import load_transreid_model, make_model
from processor.inference import (check_evaluable, describe_evaluation, evaluate_split,
                                 extract_features, format_metrics, summarise_results)
from utils.checkpoint import checkpoint_meta, load_checkpoint
from utils.dist import resolve_device
from utils.logger import setup_logger
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
        cfg = load_config(args.config_file, args.opts, freeze=False)
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


# training-only modules: not part of the retrieval feature, so a test config may build them or not
TRAINING_ONLY_PREFIXES = ("projection.",)   # the SupCon projection head
# CLIP fusion (MODEL.USE_CLIP): a checkpoint trained with it may be tested without it
# ("train with fusion, test without", MODEL.USE_CLIP False): its keys are then dropped, reported
CLIP_FUSION_PREFIX = "clip_fusion."


def load_weights(model, ckpt, meta, path, logger) -> str:
    """Strict load of a PhaseReID checkpoint (except training-only heads, reported; and the CLIP
    fusion of a checkpoint tested with MODEL.USE_CLIP False, reported); plain TransReID/timm
    files with a load report.

    Returns the CLIP fusion state for summary.json: 'on' (the model fuses, with the
    checkpoint's fusion weights), 'off' (neither has fusion) or 'disabled at test' (trained
    with fusion, evaluated without it).
    """
    fused = getattr(model, "clip_fusion", None) is not None
    if meta is not None:
        try:
            result = model.load_state_dict(ckpt["model"], strict=False)
        except RuntimeError as exc:
            raise RuntimeError(f"{path} does not match the model built from the config: {exc}\n"
                               "Test with the checkpoint's own config (omit --config_file).") from None
        missing = [k for k in result.missing_keys if not k.startswith(TRAINING_ONLY_PREFIXES)]
        unexpected = [k for k in result.unexpected_keys
                      if not k.startswith(TRAINING_ONLY_PREFIXES)]
        dropped = [] if fused else [k for k in unexpected if k.startswith(CLIP_FUSION_PREFIX)]
        unexpected = [k for k in unexpected if k not in set(dropped)]
        if missing or unexpected:
            raise RuntimeError(f"{path} does not match the model built from the config: missing "
                               f"keys {missing}, unexpected keys {unexpected}\n"
                               "Test with the checkpoint's own config (omit --config_file).")
        skipped = [k for k in result.missing_keys + result.unexpected_keys
                   if k.startswith(TRAINING_ONLY_PREFIXES)]
        if skipped:
            logger.info("Training-only keys not loaded (not used for test features): %s",
                        ", ".join(skipped))
        if dropped:
            logger.warning("CLIP fusion trained but disabled for this test (MODEL.USE_CLIP "
                           "False): %d tensors not loaded; expect lower accuracy than with "
                           "fusion", len(dropped))
            return "disabled at test"
        return "on" if fused else "off"
    if fused:
        raise RuntimeError(f"{path} is a plain (non-PhaseReID) weight file without CLIP fusion "
                           "weights; test it with MODEL.USE_CLIP False")
    report = load_transreid_model(model, ckpt)
    logger.info("Loaded plain (non-PhaseReID) weights from %s\n%s", path, report)
    return "off"


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
    logger.info("Command: %s", " ".join(sys.argv))
    start = time.time()
    device = resolve_device(cfg)
    data = make_dataloader(cfg)
    ds = data.dataset
    check_evaluable(ds)
    counts = (meta["num_classes"], meta["num_cams"], meta["num_views"]) if meta else (
        ds.num_train_pids, ds.num_cams, ds.num_views)
    model = make_model(cfg, *counts)
    clip_fusion = load_weights(model, ckpt, meta, cfg.TEST.WEIGHT, logger)
    model.to(device).eval()

    feats = extract_features(model, data.test_loader, device, cfg.TEST.NECK_FEAT)
    pids = np.array([r.pid for r in ds.test])
    camids = np.array([r.camid for r in ds.test])
    vis = pick_vis_queries(len(ds.splits[0].query_idx), cfg.TEST.VIS_QUERIES)
    outcomes = [evaluate_split(cfg, feats, pids, camids, split, vis if i == 0 else ())
                for i, split in enumerate(ds.splits)]
    metrics = summarise_results([o.result for o in outcomes])
    evaluation = describe_evaluation(cfg)
    logger.info("Results of %s on %s (%s):%s", cfg.TEST.WEIGHT, ds.name, evaluation,
                format_metrics(metrics))

    epoch = meta["epoch"] if meta else None
    if vis:
        fig = ranked_list_figure(*ranked_for_figure(cfg, ds, ds.splits[0], vis,
                                                    outcomes[0].vis_dist),
                                 title=f"{ds.name} epoch {epoch}: top-{cfg.TEST.VIS_TOPK}")
        writer = SummaryWriter(os.path.join(cfg.OUTPUT_DIR, "tb"))
        writer.add_figure("test/ranked_list", fig, global_step=epoch or 0)
        writer.close()
        save_figure(fig, os.path.join(cfg.OUTPUT_DIR, "ranked_list.png"))
    if cfg.TEST.EXPORT_FEATURES:
        np.savez(os.path.join(cfg.OUTPUT_DIR, "features.npz"), feats=feats.numpy(), pids=pids,
                 camids=camids, paths=np.array([r.path for r in ds.test]))

    summary = TestSummary(
        metrics=metrics,
        weight=os.path.abspath(cfg.TEST.WEIGHT),
        epoch=epoch,
        dataset=ds.name,
        split=[s.name for s in ds.splits],
        **evaluation,
        clip_fusion=clip_fusion,
        seconds=round(time.time() - start, 2),
    )
    summary.write(summary_path)
    logger.info("Wrote %s", summary_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
