"""Train one model from a config.

    python train.py --config_file configs/Synth/quickstart.yml [KEY VALUE ...]
    torchrun --nproc_per_node 4 train.py --config_file CFG MODEL.DIST_TRAIN True

Writes OUTPUT_DIR/config.yaml (the resolved config), history.json (the run's segments),
OUTPUT_DIR/train_log.txt, tensorboard events under OUTPUT_DIR/tb, transformer_<epoch>.pth
checkpoints and resume.pth. Running the same command again resumes after the last complete epoch
(and does nothing when training finished). A different config is refused before anything is
written, naming the keys that differ; a raised SOLVER.MAX_EPOCHS continues the run only with
--allow-extend, recorded as a new segment (utils/segments.py).
"""
from __future__ import annotations

import argparse
import os
import random
import sys

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from configs import load_config
from datasets.make_dataloader import check_images_readable, check_train_batches, make_dataloader
from losses.make_loss import make_loss
from model.make_model import make_model
from processor.hooks import make_epoch_hooks
from processor.inference import check_evaluable
from processor.processor import do_train
from solver.make_optimizer import make_optimizer
from solver.phase_plan import PhasePlan
from solver.scheduler import make_scheduler
from utils.atomic import atomic_write_text
from utils.checkpoint import load_resume_state, set_rng_state
from utils.dist import init_distributed, resolve_device, timeout_hint
from utils.logger import log_crash, setup_logger
from utils.segments import ALLOW_FLAG, plan_segment, record_segment


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="PhaseReID training")
    parser.add_argument("--config_file", default="", help="YAML recipe")
    parser.add_argument(ALLOW_FLAG, dest="allow_extend", action="store_true",
                        help="continue resume.pth although SOLVER.MAX_EPOCHS was raised (or "
                        "resume.pth does not record its config); the new segment is recorded "
                        "in history.json")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    misplaced = [o for o in args.opts if o.startswith("--")]
    if misplaced:
        parser.error(f"options go before the KEY VALUE overrides: {misplaced}")
    return args


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def restore_model(cfg, model, resume, logger) -> int:
    """Load resume.pth's weights into ``model``; returns the first epoch to train."""
    if resume is None:
        return 1
    try:
        model.load_state_dict(resume["model"])
    except RuntimeError as exc:
        raise RuntimeError(
            f"{cfg.OUTPUT_DIR}/resume.pth was written by a different model: {exc}\n"
            "Use another OUTPUT_DIR, or delete resume.pth to start over.") from None
    logger.info("Resuming after epoch %d from %s/resume.pth", resume["epoch"], cfg.OUTPUT_DIR)
    return resume["epoch"] + 1


def wrap_ddp(model, device):
    """DDP with find_unused_parameters: the phase plan can leave a branch idle for whole epochs
    (SupCon head at weight 0, classifier without 'id'), so no gradient is expected for every
    parameter."""
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    plan = PhasePlan(cfg)   # an inconsistent phase plan fails here, before any work
    resume = load_resume_state(cfg.OUTPUT_DIR)
    segment = plan_segment(cfg, resume, args.allow_extend)   # refusals: before any write
    rank = init_distributed(cfg)
    check_train_batches(cfg, plan.num_instances_by_epoch())   # per-process batch: after init
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    logger = setup_logger(cfg.OUTPUT_DIR, "train_log.txt", rank)
    with log_crash(logger, timeout_hint(cfg)):
        return train(cfg, plan, resume, segment, rank, logger)


def log_segment(segment, logger) -> None:
    """Say what the comparison with resume.pth found (utils/segments.py)."""
    cmp = segment.comparison
    if cmp is not None and cmp.runtime_changed:
        logger.info("Runtime-only keys differ from resume.pth (they do not change the weights):"
                    "\n%s", cmp.describe("runtime_changed"))
    if cmp is not None and cmp.new_at_default:
        logger.info("Keys added to the code since resume.pth was written, at their defaults: %s",
                    ", ".join(cmp.new_at_default))
    if segment.kind == "extend":
        changed = cmp.describe() if cmp is not None else "  (earlier config unknown)"
        logger.warning("Continuing after epoch %d under a changed config (%s):\n%s\n%s",
                       segment.resume_epoch, ALLOW_FLAG, changed, "\n".join(segment.notes))


def train(cfg, plan, resume, segment, rank, logger) -> int:
    """The run after the checks of :func:`main`: record the segment, build, train."""
    logger.info("Command: %s", " ".join(sys.argv))
    log_segment(segment, logger)
    if resume is not None and resume["epoch"] >= cfg.SOLVER.MAX_EPOCHS:
        logger.info("Training already complete in %s (epoch %d of %d); nothing to do.",
                    cfg.OUTPUT_DIR, resume["epoch"], cfg.SOLVER.MAX_EPOCHS)
        return 0
    if rank == 0:
        for path in record_segment(cfg, segment, " ".join(sys.argv), atomic_write_text):
            logger.info("Wrote %s", path)
    seed_everything(cfg.SOLVER.SEED)
    device = resolve_device(cfg)

    data = make_dataloader(cfg)
    ds = data.dataset
    # fail now, not after the first evaluation period; text-based person search always: its
    # checkpoints are selected on the val split later (test.py, the launcher)
    if cfg.SOLVER.EVAL_PERIOD > 0 or cfg.MODEL.TASK == "tbps":
        check_evaluable(ds, cfg)
        check_images_readable(ds.test)
        check_images_readable(ds.val, "validation")
    model = make_model(cfg, ds.num_train_pids, ds.num_cams, ds.num_views)
    composer = make_loss(cfg, ds.num_train_pids, model.feat_dim)
    start_epoch = restore_model(cfg, model, resume, logger)
    model.to(device)
    composer.to(device)
    optimizer, center_optimizer = make_optimizer(cfg, model, composer.center)
    scheduler = make_scheduler(cfg, optimizer)
    if cfg.MODEL.DIST_TRAIN:
        model = wrap_ddp(model, device)
    writer = None
    if rank == 0:
        writer = SummaryWriter(os.path.join(cfg.OUTPUT_DIR, "tb"))
    if resume is not None:
        set_rng_state(resume["rng"])
    what = "a dual encoder (MODEL.TASK 'tbps')" if cfg.MODEL.TASK == "tbps" else cfg.MODEL.NAME
    logger.info("Training %s on %s: %d identities, %d images (%d training items), epochs %d..%d",
                what, device, ds.num_train_pids, len(ds.train), len(data.train_set),
                start_epoch, cfg.SOLVER.MAX_EPOCHS)
    do_train(cfg, model, data, composer, plan, optimizer, center_optimizer, scheduler, device,
             start_epoch=start_epoch, writer=writer, resume_state=resume,
             hooks=make_epoch_hooks(cfg, data))
    if writer is not None:
        writer.close()
    if cfg.MODEL.DIST_TRAIN:
        # every rank leaves its last collective before gloo/NCCL is torn down (a rank destroying
        # the group while its peer is still inside one aborts the peer: SIGABRT)
        del model
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
