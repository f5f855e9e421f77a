"""Evaluate one checkpoint.

    python test.py --config_file CFG TEST.WEIGHT path/transformer_120.pth [KEY VALUE ...]
    python test.py TEST.WEIGHT path/transformer_120.pth [KEY VALUE ...]   # config from the file
    python test.py --config_file CFG [KEY VALUE ...]   # MODEL.TASK 'tbps' only: zero-shot

Without --config_file the resolved config stored in the checkpoint is used (overrides still
apply). Results go to OUTPUT_DIR when it is given on the command line, otherwise to
``<checkpoint folder>/test_<checkpoint name>/``: test_log.txt, an R1/R5/R10/mAP/mINP table,
ranked_list.png (also in tensorboard under tb/), optionally features.npz (TEST.EXPORT_FEATURES),
and summary.json, written LAST and only on success. It names the weight file evaluated (path,
size, mtime) and the fingerprint of the test config (utils/summary.py); the launcher counts it as
"this checkpoint is tested" only while both still match.

MODEL.TASK 'tbps' is evaluated text-to-image (processor/t2i.py; protocol 'text-to-image'):
every test caption against the captioned test images (``metrics``, split ['test']), the
validation split when the dataset has one (``extra_metrics['val']``, its source named), and with
TEST.I2T image-to-text on test (``extra_metrics['i2t']``). The best epoch is selected on 'val'
(TEST.SELECT_ON 'val', ``select_on 'val'``) or, when asked for, on test (``select_on`` None,
``test_selection_asked`` True). features.npz then holds the caption queries (``q_feats``,
``q_pids``, ``q_captions``, ``q_image``: the gallery index of each caption's image) and the image
gallery (``g_feats``, ``g_pids``, ``g_paths``), not normalised, in the order ranked: similarity =
cosine of the L2-normalised rows, ties by ascending gallery index. The ranked-list figure shows
TEST.VIS_QUERIES captions with their top TEST.VIS_TOPK images.

LoRA (MODEL.TBPS.LORA): a run's checkpoints hold the adapters merged into the towers' weights, in
the plain layout (model/lora.py), so the dual encoder is built without adapters and peft is not
needed here.

Zero-shot: without TEST.WEIGHT, a MODEL.TASK 'tbps' recipe is evaluated as its config builds the
dual encoder (the towers of MODEL.TBPS.PRETRAINED / HF_MODEL, no training) into the recipe's
OUTPUT_DIR (or the one given); its summary says ``zero_shot: true`` with no weight and no epoch,
and never counts as the result of a checkpoint. Image re-ID needs TEST.WEIGHT. A recipe with
MODEL.TBPS.INIT_CHECKPOINT is evaluated zero-shot as that released TBPS-CLIP model.

Cross-domain (open-set) testing, MODEL.TASK 'tbps': ``TEST.DATASET <name>`` (and ``TEST.ROOT_DIR``)
evaluates the checkpoint, trained on DATASETS.NAMES, on the test split of another dataset with
that dataset's loader and the text-to-image protocol (``utils.eval_config.cross_domain_config``).
The 'val' numbers (selection) are those of the TRAINING dataset's validation split
(``extra_metrics['val'].dataset`` names it); with TEST.SELECT_ON 'test' the cross-domain test
split is used for selection, as asked, and the summary says so. summary.json: ``dataset`` = the
dataset evaluated, ``train_dataset`` = DATASETS.NAMES.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from datasets.factory import build_dataset
from datasets.make_dataloader import make_dataloader
from datasets.t2i import query_subset, subset_name, t2i_sets
from datasets.tokenize import build_tokenizer
from model.make_model import make_model
from model.weights import load_for_test
from processor.inference import (check_evaluable, check_t2i_evaluable, evaluate_model,
                                 format_metrics)
from processor.t2i import evaluate_subset, evaluate_t2i, top_images
from utils.checkpoint import checkpoint_meta, load_checkpoint
from utils.dist import resolve_device
from utils.eval_config import (cross_domain_config, has_clip_tower, is_zero_shot,
                               require_weight, resolve_eval_config)
from utils.logger import log_crash, setup_logger
from utils.provenance import evaluation_fingerprint
from utils.summary import SUMMARY_FILE, MetricSet, TestSummary, weight_fields
from utils.visualize import ranked_list_figure, save_figure, t2i_ranked_list_figure

#: the weight fields of a zero-shot summary (no checkpoint)
ZERO_SHOT_WEIGHT = {"weight": None, "weight_size": None, "weight_mtime_ns": None}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="PhaseReID evaluation of one checkpoint")
    parser.add_argument("--config_file", default="", help="YAML recipe (default: the config "
                        "stored in the checkpoint)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, "
                        "including TEST.WEIGHT")
    return parser.parse_args(argv)


def resolve_config(args):
    """(cfg, checkpoint, meta) from --config_file or the checkpoint's stored config
    (``utils.eval_config.resolve_eval_config``, which the launcher uses too); zero-shot (no
    TEST.WEIGHT, a MODEL.TASK 'tbps' recipe): (cfg, None, None)."""
    if is_zero_shot(args.opts) and args.config_file:
        return resolve_eval_config(args.opts, config_file=args.config_file), None, None
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
    # before the file is read
    weight_file = ZERO_SHOT_WEIGHT if is_zero_shot(args.opts) else evaluated_file(args.opts)
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
    fingerprint (``utils.provenance.evaluation_fingerprint``). ``ckpt`` None: zero-shot (the
    dual encoder as its config builds it)."""
    logger.info("Command: %s", " ".join(sys.argv))
    start = time.time()
    device = resolve_device(cfg)
    cross = cross_domain_config(cfg)
    val_ds = None
    if cross is None:
        data = make_dataloader(cfg)
        ds = data.dataset
        check_evaluable(ds, cfg)
        unseen = data.unseen_test_ids
    else:
        data = None
        ds, val_ds = cross_domain_datasets(cfg, cross, logger)
        unseen = {"camera": [], "view": []}   # SIE is image re-ID's; TEST.DATASET is tbps only
    counts = (meta["num_classes"], meta["num_cams"], meta["num_views"]) if meta else (
        ds.num_train_pids, ds.num_cams, ds.num_views)
    zero_shot = ckpt is None
    # a checkpoint replaces the towers' weights: do not read (or download) the pretrained ones.
    # No LoRA adapters (MODEL.TBPS.LORA): a checkpoint holds them merged, in the plain layout
    # (model/lora.py), and zero-shot they would start at B = 0, i.e. as the plain towers
    model = make_model(cfg, *counts, load_weights=zero_shot or meta is None, lora=False,
                       training=False)
    if cfg.MODEL.TASK == "tbps" and cfg.MODEL.TBPS.LORA.ENABLE:
        logger.info("MODEL.TBPS.LORA: evaluating the plain towers (%s)",
                    "zero-shot: LoRA starts as the base model" if zero_shot else
                    "the checkpoint holds the LoRA-merged weights" if meta and
                    meta.get("lora_merged") else "the checkpoint holds no LoRA adapters")
    if zero_shot:
        clip_fusion = "off"
        warn_zero_shot(cfg, logger)
    else:
        clip_fusion = load_for_test(model, ckpt, meta, cfg.TEST.WEIGHT, logger)
    model.to(device).eval()

    epoch = meta["epoch"] if meta else None
    if cfg.MODEL.TASK == "tbps":
        results, latency = evaluate_text_to_image(cfg, model, ds, device, epoch, logger, val_ds)
    else:
        results, latency = evaluate_image_reid(cfg, model, data, device, epoch, logger)
    # what the result cost: the training's (the checkpoint's metadata) and this test's latency
    results["cost"] = dict((meta or {}).get("cost") or {}, **latency)

    summary = TestSummary(
        **results,
        **weight_file,
        test_config_sha256=evaluation_fingerprint(cfg),
        epoch=epoch,
        dataset=ds.name,
        # the dataset the checkpoint was trained on (cross-domain testing: not ``dataset``)
        train_dataset=None if zero_shot else cfg.DATASETS.NAMES,
        clip_fusion=clip_fusion,
        zero_shot=zero_shot,
        # test camera / view ids that no training image has (untrained SIE rows when SIE is on)
        unseen_test_cameras=unseen["camera"],
        unseen_test_views=unseen["view"],
        seconds=round(time.time() - start, 2),
    )
    summary.write(summary_path)
    logger.info("Wrote %s", summary_path)
    return 0


def cross_domain_datasets(cfg, cross, logger) -> tuple:
    """TEST.DATASET (cross-domain testing): (the evaluated dataset, built from ``cross`` --
    ``utils.eval_config.cross_domain_config`` --, the training dataset whose validation split
    selects the best epoch, or None with TEST.SELECT_ON 'test'). Both are checked for what is
    evaluated on them: captioned test images, a captioned validation split."""
    ds = build_dataset(cross)
    logger.info("Cross-domain testing (TEST.DATASET): the checkpoint trained on %s is evaluated "
                "on the test split of %s (%s)\n%s", cfg.DATASETS.NAMES, ds.name,
                cross.DATASETS.ROOT_DIR, ds.statistics())
    check_t2i_evaluable(ds, "test")
    if cfg.TEST.SELECT_ON != "val":
        logger.warning("TEST.SELECT_ON 'test' with TEST.DATASET: the best epoch is selected on "
                       "the cross-domain TEST split of %s (optimistic numbers; the summary says "
                       "so)", ds.name)
        return ds, None
    train_ds = build_dataset(cfg)
    check_t2i_evaluable(train_ds, "val")
    return ds, train_ds


def warn_zero_shot(cfg, logger) -> None:
    t = cfg.MODEL.TBPS
    random_init = not t.INIT_CHECKPOINT and (t.TINY or (t.FAMILY == "open_clip"
                                                         and not t.PRETRAINED))
    logger.info("Zero-shot evaluation (no TEST.WEIGHT): the dual encoder as its config builds it "
                "(MODEL.TBPS), no training")
    if random_init:
        logger.warning("Zero-shot with random-init towers (MODEL.TBPS.TINY %s, PRETRAINED %r): "
                       "expect chance-level numbers", bool(t.TINY), t.PRETRAINED)


def save_ranked_list(cfg, fig, epoch) -> None:
    """The ranked-list figure into tensorboard (test/ranked_list) and ranked_list.png."""
    writer = SummaryWriter(os.path.join(cfg.OUTPUT_DIR, "tb"))
    writer.add_figure("test/ranked_list", fig, global_step=epoch or 0)
    writer.close()
    save_figure(fig, os.path.join(cfg.OUTPUT_DIR, "ranked_list.png"))


def evaluate_image_reid(cfg, model, data, device, epoch, logger) -> tuple:
    """Image re-ID (Market-1501 protocol): the numbers, figure and features of every split;
    returns the summary fields of the evaluation and its latency (seconds per image)."""
    ds = data.dataset
    vis = pick_vis_queries(len(ds.splits[0].query_idx), cfg.TEST.VIS_QUERIES)
    start = time.perf_counter()
    result = evaluate_model(cfg, model, data, device, vis)
    per_image = (time.perf_counter() - start) / max(len(ds.test), 1)
    metrics, evaluation = result.metrics, result.description
    logger.info("Results of %s on %s (%s):%s", cfg.TEST.WEIGHT, ds.name, evaluation,
                format_metrics(metrics))
    if vis:
        fig = ranked_list_figure(*ranked_for_figure(cfg, ds, ds.splits[0], vis,
                                                    result.outcomes[0].vis_dist),
                                 title=f"{ds.name} epoch {epoch}: top-{cfg.TEST.VIS_TOPK}")
        save_ranked_list(cfg, fig, epoch)
    if cfg.TEST.EXPORT_FEATURES:
        np.savez(os.path.join(cfg.OUTPUT_DIR, "features.npz"), feats=result.feats.numpy(),
                 pids=result.pids, camids=result.camids,
                 paths=np.array([r.path for r in ds.test]))
    # image re-ID: features and ranking of every test image (query and gallery alike)
    latency = {"s_per_query": round(per_image, 6), "s_per_gallery_image": round(per_image, 6)}
    return dict(metrics=metrics, split=[s.name for s in ds.splits], **evaluation), latency


def evaluate_text_to_image(cfg, model, ds, device, epoch, logger, val_ds=None) -> tuple:
    """Text-to-image (module docstring): test, val when there is one, i2t with TEST.I2T; the
    figure and features.npz of test; returns the summary fields of the evaluation and its
    latency (seconds per caption query and per gallery image). ``val_ds``: cross-domain testing
    (TEST.DATASET): the training dataset, whose validation split is evaluated as 'val' (named in
    its ``dataset``) instead of ``ds``'s own."""
    sets = t2i_sets(ds)
    if cfg.TEST.DATASET:   # selection stays on the training dataset (or on test, when asked)
        sets.pop("val", None)
        if val_ds is not None:
            sets["val"] = t2i_sets(val_ds)["val"]
    val_from = val_ds or ds
    tokenizer = build_tokenizer(cfg)
    what = cfg.TEST.WEIGHT or "the zero-shot dual encoder"
    test = evaluate_t2i(cfg, model, sets["test"], device, tokenizer)
    logger.info("Text-to-image results of %s on %s test (%d captions x %d images; %s):%s", what,
                ds.name, len(sets["test"].captions), len(sets["test"].images), test.description,
                format_metrics(test.metrics))
    extra = {}
    if "val" in sets:
        val = evaluate_t2i(cfg, model, sets["val"], device, tokenizer, i2t=False)
        extra["val"] = MetricSet(split=["val"], metrics=val.metrics, source=val_from.val_source,
                                 dataset=val_from.name if val_from is not ds else None)
        logger.info("Text-to-image on the val split of %s (%s; %d captions x %d images):%s",
                    val_from.name, val_from.val_source, len(sets["val"].captions),
                    len(sets["val"].images), format_metrics(val.metrics))
    for spec in cfg.TEST.QUERY_SUBSETS:
        queries = query_subset(sets["test"], spec, ds.name)
        name = subset_name(spec)
        metrics = evaluate_subset(cfg, test, queries)
        extra[f"test-{name}"] = MetricSet(
            split=["test"], metrics=metrics,
            source=f"query subset {spec!r}: {len(queries)} of {len(sets['test'].captions)} "
                   "test captions against the whole test gallery")
        logger.info("Text-to-image on the query subset %s (%d captions):%s", name, len(queries),
                    format_metrics(metrics))
    if test.i2t_metrics is not None:
        extra["i2t"] = MetricSet(split=["test"], metrics=test.i2t_metrics)
        logger.info("Image-to-text on test (TEST.I2T):%s", format_metrics(test.i2t_metrics))
    asked_test = cfg.TEST.SELECT_ON == "test"
    if asked_test:
        logger.warning("TEST.SELECT_ON 'test': the summary names the TEST split for selecting "
                       "the best epoch (optimistic best-epoch numbers)")

    t2i = sets["test"]
    vis = pick_vis_queries(len(t2i.captions), cfg.TEST.VIS_QUERIES)
    if vis:
        top = top_images(test, vis, cfg.TEST.VIS_TOPK)
        when = "zero-shot" if epoch is None and not cfg.TEST.WEIGHT else f"epoch {epoch}"
        fig = t2i_ranked_list_figure(
            [t2i.captions[q] for q in vis], [int(t2i.caption_pids[q]) for q in vis],
            [[t2i.images[j].path for j in row] for row in top],
            [[int(t2i.image_pids[j]) for j in row] for row in top],
            title=f"{ds.name} {when}: text-to-image top-{cfg.TEST.VIS_TOPK}")
        save_ranked_list(cfg, fig, epoch)
    if cfg.TEST.EXPORT_FEATURES:
        np.savez(os.path.join(cfg.OUTPUT_DIR, "features.npz"),
                 q_feats=test.txt_feats.numpy(), q_pids=test.caption_pids,
                 q_captions=np.array(t2i.captions), q_image=t2i.caption_image,
                 g_feats=test.img_feats.numpy(), g_pids=test.image_pids,
                 g_paths=np.array([r.path for r in t2i.images]))
    latency = {"s_per_query": round(test.seconds_captions / max(len(t2i.captions), 1), 6),
               "s_per_gallery_image": round(test.seconds_images / max(len(t2i.images), 1), 6)}
    return dict(protocol="text-to-image", metrics=test.metrics, split=["test"],
                extra_metrics=extra, select_on=None if asked_test else "val",
                test_selection_asked=asked_test, **test.description), latency


if __name__ == "__main__":
    sys.exit(main())
