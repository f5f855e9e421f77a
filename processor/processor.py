"""The training loop (do_train) and evaluation entry (do_inference).

``train.py`` builds the phase plan (solver/phase_plan.py) once and passes it in; it is printed
at the start and gives every epoch its PhaseState. One epoch (1-based ``epoch``):
  state = plan.state(epoch) -> scheduler.step(epoch) -> composer.start_epoch -> build/reuse the
  train loader for the
  state's K (only the sampler/loader is rebuilt, only when K changes) -> set the sampler's
  epoch and the train set's (which draws each image's caption) -> iterate (``model(batch)`` --
  with ``tgmim=True`` in epochs where TG-MIM weighs > 0, or the dual encoder's stop-gradient
  forward for N-ITC, SS-I's and the MVS view's forwards, see :func:`forward_options`; the
  batches carry those views only then, :func:`batch_views` --, the composer told the fractional
  epoch (``set_progress``), composed loss with the state's weights, finite check, backward, frozen
  parameters' gradients dropped, optional clipping, step, the dual encoder's logit scale clamped
  to kappa <= 100; the epoch hooks (processor/hooks.py) see the first batch)
  -> one log line with the phase, K and every loss component, lr, time and images/s
  (+ tensorboard: the same, plus the phase index and every weight) ->
  transformer_<epoch>.pth every SOLVER.CHECKPOINT_PERIOD epochs and at the last epoch (LoRA
  adapters merged into a copy, plain layout: model/lora.py) ->
  resume.pth -> evaluation every SOLVER.EVAL_PERIOD epochs and at the last epoch (unless the
  period is 0). Saving comes first, so an evaluation that fails (a corrupt test image, an
  out-of-memory) never costs the epoch's checkpoint or resume state.

A non-finite loss stops the run with FloatingPointError naming the component; it is raised
before the optimiser step, so the weights and every checkpoint on disk stay as they were.
AMP (float16 autocast + GradScaler) is used on CUDA when SOLVER.AMP is True, never on CPU.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Optional, Sequence

import torch
import torch.distributed as dist

from configs.validate import mvs_losses
from datasets.make_dataloader import build_train_loader
from model.lora import has_lora, merged_state_dict
from model.weights import TRAINING_ONLY_PREFIXES
from solver.phase_plan import PhasePlan, PhaseState, frozen_parameters
from utils.checkpoint import save_checkpoint, save_resume_state
from utils.dist import unwrap, world_info
from utils.machine import matmul_gflops
from utils.meters import AverageMeter
from utils.progress import progress
from utils.results import METRIC_KEYS
from utils.run_files import checkpoint_path

from .inference import do_inference

logger = logging.getLogger("phasereid")


def check_finite(total: torch.Tensor, parts: Dict[str, torch.Tensor], epoch: int,
                 iteration: int) -> None:
    """Raise FloatingPointError naming the non-finite loss component(s)."""
    if torch.isfinite(total):
        return
    bad = [name for name, value in parts.items() if not torch.isfinite(value)]
    names = ", ".join(f"'{n}' = {parts[n].item()}" for n in bad) or f"total = {total.item()}"
    raise FloatingPointError(
        f"non-finite loss at epoch {epoch}, iteration {iteration}: {names}. Training stopped "
        "before the optimiser step; checkpoints on disk are from earlier epochs. Lower "
        "SOLVER.BASE_LR, enable SOLVER.GRAD_CLIP or check the inputs.")


def forward_options(state: PhaseState, cfg=None) -> dict:
    """Keyword options of ``model(batch, ...)`` for an epoch: the masked, text-guided TG-MIM
    forward only when TG-MIM weighs > 0 (epochs without it pay nothing; the image re-ID model
    and the dual encoder alike); for the dual encoder (MODEL.TASK 'tbps') also the
    stop-gradient second forward only when N-ITC weighs > 0 with soft labels from it
    (LOSS.NITC.SOFT_RATIO > 0, STOP_FEATURES 'second_forward'), SS-I's forward of the SimCLR
    views (``ss``) only when 'ss' weighs > 0, the forward of the MVS view (``mvs``) only when a
    loss with LOSS.<NAME>.MVS weighs > 0 (``configs.validate.mvs_losses``; its stop-gradient
    forward only for N-ITC's MVS-I: ``mvs_stop`` False otherwise), and IRRA's masked-caption IRR
    forward (``mlm=True``) only when 'mlm' weighs > 0."""
    options = {"tgmim": True} if state.weight("tgmim") > 0 else {}
    if cfg is not None and cfg.MODEL.TASK == "tbps":
        n = cfg.LOSS.NITC
        nitc = state.weight("nitc") > 0
        if nitc and n.SOFT_RATIO > 0 and n.STOP_FEATURES == "second_forward":
            options["stop_features"] = True
        if state.weight("ss") > 0:
            options["ss"] = True
        mvs = [name for name in mvs_losses(cfg) if state.weight(name) > 0]
        if mvs:
            options["mvs"] = True
            if options.get("stop_features") and "nitc" not in mvs:
                options["mvs_stop"] = False   # the stop forward is N-ITC's; its MVS is off
        if state.weight("mlm") > 0:
            options["mlm"] = True
    return options


def batch_views(state: PhaseState, cfg) -> tuple:
    """The extra image views the training batches carry in an epoch (datasets/tbps_augment.py),
    the ones :func:`forward_options` reads: SS-I's ``img_ss1`` / ``img_ss2`` when 'ss' weighs
    > 0, the MVS view ``img_mvs`` when a loss with LOSS.<NAME>.MVS weighs > 0; none otherwise."""
    options = forward_options(state, cfg)
    views = ("img_ss1", "img_ss2") if options.get("ss") else ()
    return views + (("img_mvs",) if options.get("mvs") else ())


class Trainer:
    """Holds what an epoch needs; ``run(start_epoch)`` trains up to SOLVER.MAX_EPOCHS.

    Args:
        cfg: frozen config.
        model: the (possibly DDP-wrapped) model.
        data: ReIDData from make_dataloader.
        composer: LossComposer.
        plan: the run's PhasePlan (built once by train.py).
        optimizer, center_optimizer: from make_optimizer (center_optimizer may be None).
        scheduler: EpochLRScheduler.
        device: torch device.
        writer: tensorboard SummaryWriter (rank 0) or None.
        hooks: epoch hooks (processor/hooks.py), called with the first batch of every epoch.
    """

    def __init__(self, cfg, model, data, composer, plan: PhasePlan, optimizer, center_optimizer,
                 scheduler, device, writer=None, hooks: Sequence = ()):
        self.cfg = cfg
        self.model = model
        self.data = data
        self.composer = composer
        self.optimizer = optimizer
        self.center_optimizer = center_optimizer
        self.scheduler = scheduler
        self.device = device
        self.writer = writer
        self.use_amp = bool(cfg.SOLVER.AMP) and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None
        self.world, self.rank = world_info()
        self._loader = None
        self._loader_k = None
        self.plan = plan
        self.hooks = list(hooks)
        self._frozen: list = []
        self._epoch_costs: list = []   # (epoch, seconds, iterations) trained by this process

    # -- data ---------------------------------------------------------------------------
    def train_loader(self, num_instances: int):
        """The loader for K = num_instances, rebuilt only when K changes."""
        if self._loader is None or self._loader_k != num_instances:
            self._loader = build_train_loader(self.cfg, self.data.train_set, num_instances)
            self._loader_k = num_instances
        return self._loader

    # -- one epoch ----------------------------------------------------------------------
    def apply_freeze(self, state: PhaseState) -> None:
        """Parameters whose updates are skipped this epoch (the phase's FREEZE_SEQ prefixes)."""
        self._frozen = frozen_parameters(unwrap(self.model), state.freeze)

    def train_epoch(self, epoch: int, state: PhaseState) -> Dict[str, float]:
        cfg = self.cfg
        loader = self.train_loader(state.num_instances)
        loader.batch_sampler.set_epoch(epoch)
        self.data.train_set.set_epoch(epoch)   # the caption drawn for each image this epoch
        views = batch_views(state, cfg)
        if views or getattr(self.data.train_set, "active_views", ()):
            self.data.train_set.set_views(views)   # SS-I / MVS-I views, only when they weigh
        self.model.train()
        meters = {"loss": AverageMeter()}
        start, seen = time.time(), 0
        bar = progress(loader, desc=f"epoch {epoch}/{cfg.SOLVER.MAX_EPOCHS}",
                       disable=self.rank != 0)
        options = forward_options(state, cfg)
        for iteration, batch in enumerate(bar, start=1):
            batch = {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v)
                     for k, v in batch.items()}
            self.composer.set_progress(epoch - 1 + (iteration - 1) / len(loader))
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
                outputs = self.model(batch, **options)
                total, parts = self.composer(outputs, batch, state)
            if iteration == 1 and self.rank == 0:
                for hook in self.hooks:
                    hook(epoch, batch, outputs, self.writer)
            check_finite(total, parts, epoch, iteration)
            self.optimizer.zero_grad(set_to_none=True)
            if self.center_optimizer is not None:
                self.center_optimizer.zero_grad(set_to_none=True)
            self.backward_and_step(total, state.weight("center"))
            n = batch["img"].shape[0]
            seen += n
            meters["loss"].update(total.item(), n)
            for name, value in parts.items():
                meters.setdefault(name, AverageMeter()).update(value.item(), n)
            bar.set_postfix(loss=f"{meters['loss'].avg:.3f}")
        elapsed = time.time() - start
        self._epoch_costs.append((epoch, elapsed, iteration if seen else 0))
        stats = {name: m.avg for name, m in meters.items()}
        stats["lr"] = self.optimizer.param_groups[0]["lr"] / self.optimizer.param_groups[0].get(
            "lr_scale", 1.0)
        stats["time"] = elapsed
        stats["images_per_s"] = seen * self.world / max(elapsed, 1e-9)
        return stats

    def drop_frozen_grads(self) -> None:
        """Frozen parameters keep their values: no gradient means no optimiser update (no
        momentum, no weight decay). Gradients are still computed, so DDP is unaffected."""
        for param in self._frozen:
            param.grad = None

    def backward_and_step(self, total: torch.Tensor, center_weight: float) -> None:
        """Backward, optional clipping and the optimiser steps of one iteration.

        ``center_weight`` is this epoch's center-loss weight (the phase state's). With AMP the
        centre gradients are unscaled by the same GradScaler as the model's, and the centres
        step only when the scaler found no inf/NaN gradient (the step the scaler skips for the
        model is skipped for the centres too).
        """
        clip = self.cfg.SOLVER.GRAD_CLIP
        centers = self.center_optimizer is not None and center_weight > 0
        overflow = False
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.drop_frozen_grads()
            if clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            if centers:
                self.reduce_center_grads()
                self.scaler.unscale_(self.center_optimizer)
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            # update() backs the scale off exactly when an unscaled gradient (the model's or
            # the centres') was inf/NaN, which is when the model step was skipped
            overflow = self.scaler.get_scale() < scale
        else:
            total.backward()
            self.drop_frozen_grads()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
            if centers:
                self.reduce_center_grads()
        if centers and not overflow:
            self.step_centers(center_weight)
        net = unwrap(self.model)
        if hasattr(net, "clamp_logit_scale_"):
            net.clamp_logit_scale_()   # CLIP's kappa <= 100 on the parameter, after every step

    def reduce_center_grads(self) -> None:
        """Average the centre gradients over DDP ranks (the centres are not in the DDP model)."""
        if self.world == 1:
            return
        for param in self.composer.center.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= self.world

    def step_centers(self, center_weight: float) -> None:
        """BoT's centre update: the (unscaled, rank-averaged) gradients of ``center_weight`` x
        center loss are rescaled by 1 / center_weight, so the centres move by SGD
        (LOSS.CENTER.LR) on the unweighted center loss whatever the epoch's weight."""
        for param in self.composer.center.parameters():
            if param.grad is not None:
                param.grad *= 1.0 / center_weight
        self.center_optimizer.step()

    def cost(self) -> dict:
        """The training cost so far, for the checkpoint's metadata and summary.json (plain
        values): parameters (trainable = requires_grad; a phase's FREEZE_SEQ is not counted
        out), mean seconds per iteration and per epoch over the epochs this process trained
        (``epochs_measured``; a resumed run counts its new segment only), peak memory (CUDA max
        allocated on CUDA, else the process's max RSS), the device, and its fp32 matmul GFLOP/s
        (utils.machine, measured once per process, so a timing always carries the machine's
        speed)."""
        net = unwrap(self.model)
        params = list(net.parameters())
        seconds = sum(c[1] for c in self._epoch_costs)
        iterations = sum(c[2] for c in self._epoch_costs)
        if self.device.type == "cuda":
            peak, kind = torch.cuda.max_memory_allocated(self.device) / 2 ** 20, "cuda max allocated"
        else:
            import resource   # Linux: ru_maxrss in KiB
            peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu max rss"
        epochs = [c[0] for c in self._epoch_costs]
        return {"trainable_params": int(sum(p.numel() for p in params if p.requires_grad)),
                "total_params": int(sum(p.numel() for p in params)),
                "s_per_iteration": round(seconds / iterations, 5) if iterations else None,
                "s_per_epoch": round(seconds / len(epochs), 3) if epochs else None,
                "epochs_measured": [min(epochs), max(epochs)] if epochs else [],
                "train_peak_memory_mb": round(peak, 1), "train_peak_memory_kind": kind,
                "device": str(self.device), "fp32_matmul_gflops": self._gflops()}

    def _gflops(self) -> float:
        if getattr(self, "_matmul_gflops", None) is None:
            self._matmul_gflops = matmul_gflops(self.device)
        return self._matmul_gflops

    # -- logging ------------------------------------------------------------------------
    def log_epoch(self, epoch: int, stats: Dict[str, float], state: PhaseState) -> None:
        losses = " ".join(f"{k} {v:.4f}" for k, v in stats.items()
                          if k not in ("lr", "time", "images_per_s"))
        weights = " ".join(f"{k} {v:.3g}" for k, v in state.weights.items() if v > 0)
        logger.info("Epoch %d/%d | phase %s (%s) K %d | %s | weights %s | lr %.3e | %.1f s | "
                    "%.1f img/s", epoch, self.cfg.SOLVER.MAX_EPOCHS, state.name, state.metric,
                    state.num_instances, losses, weights, stats["lr"], stats["time"],
                    stats["images_per_s"])
        if self.writer is not None:
            for key, value in stats.items():
                self.writer.add_scalar(f"train/{key}", value, epoch)
            self.writer.add_scalar("phase/index", state.index, epoch)
            self.writer.add_scalar("phase/K", state.num_instances, epoch)
            self.writer.add_scalar("phase/routing", float(state.routing), epoch)
            for name, value in state.weights.items():
                self.writer.add_scalar(f"weight/{name}", value, epoch)
            self.writer.flush()

    def log_eval(self, epoch: int, metrics: Dict[str, float]) -> None:
        if self.writer is not None:
            for key in METRIC_KEYS:
                self.writer.add_scalar(f"eval/{key}", metrics[key], epoch)
            self.writer.flush()

    # -- the loop -----------------------------------------------------------------------
    def save(self, epoch: int, extra: Optional[dict] = None) -> None:
        """Checkpoint (when due) and the resume state of a completed epoch (rank 0)."""
        cfg = self.cfg
        if self.rank != 0:
            return
        period = cfg.SOLVER.CHECKPOINT_PERIOD
        ds = self.data.dataset
        if epoch == cfg.SOLVER.MAX_EPOCHS or (period > 0 and epoch % period == 0):
            path = checkpoint_path(cfg.OUTPUT_DIR, epoch)
            net = unwrap(self.model)
            # LoRA: the file holds the merged weights (test.py needs no peft); resume.pth below
            # keeps the adapters and their optimiser state
            merged = merged_state_dict(net) if has_lora(net) else None
            save_checkpoint(path, self.model, cfg, epoch, ds.num_train_pids, ds.num_cams,
                            ds.num_views, exclude_prefixes=TRAINING_ONLY_PREFIXES,
                            merged_lora_state=merged, cost=self.cost())
            logger.info("Saved %s", path)
        optimizers = {"model": self.optimizer}
        if self.center_optimizer is not None:
            optimizers["center"] = self.center_optimizer
        extra = dict(extra or {})
        if self.composer.center is not None:
            extra["center"] = self.composer.center.state_dict()
        save_resume_state(cfg.OUTPUT_DIR, epoch, self.model, optimizers, self.scheduler,
                          self.scaler, extra, config=cfg.dump())

    def evaluate(self, epoch: int) -> Optional[Dict[str, float]]:
        """Evaluate on rank 0 every EVAL_PERIOD epochs and after the last (0 = never).

        The RNG state is restored afterwards (iterating a DataLoader draws from torch's default
        generator), so the trained weights do not depend on EVAL_PERIOD.
        """
        period = self.cfg.SOLVER.EVAL_PERIOD
        if period <= 0 or (epoch % period and epoch != self.cfg.SOLVER.MAX_EPOCHS):
            return None
        metrics = None
        if self.rank == 0:
            logger.info("Evaluation after epoch %d:", epoch)
            cuda = []
            if self.device.type == "cuda":
                cuda = [torch.cuda.current_device() if self.device.index is None
                        else self.device.index]
            with torch.random.fork_rng(devices=cuda):
                metrics = do_inference(self.cfg, self.model, self.data, self.device)
            self.log_eval(epoch, metrics)
        if self.world > 1:
            dist.barrier()
        return metrics

    def run(self, start_epoch: int) -> Optional[Dict[str, float]]:
        """Train epochs start_epoch..MAX_EPOCHS; returns the last evaluation's metrics."""
        cfg = self.cfg
        last_metrics = None
        if self.rank == 0:
            logger.info("%s", self.plan.table())
        for phase in self.plan.phases:   # every FREEZE_SEQ entry resolves before epoch 1
            frozen_parameters(unwrap(self.model), phase.freeze)
        for epoch in range(start_epoch, cfg.SOLVER.MAX_EPOCHS + 1):
            state = self.plan.state(epoch)
            self.scheduler.step(epoch)
            self.composer.start_epoch(epoch)
            self.apply_freeze(state)
            stats = self.train_epoch(epoch, state)
            if self.rank == 0:
                self.log_epoch(epoch, stats, state)
            # save before evaluating: a failing evaluation leaves this epoch's checkpoint and
            # resume.pth on disk (the RNG state saved is the one after evaluation: it forks)
            self.save(epoch, {"phase": state.name, "K": state.num_instances})
            metrics = self.evaluate(epoch)
            last_metrics = metrics or last_metrics
        return last_metrics


def do_train(cfg, model, data, composer, plan, optimizer, center_optimizer, scheduler, device,
             start_epoch: int = 1, writer=None, resume_state: Optional[dict] = None,
             hooks: Sequence = ()):
    """Train from ``start_epoch`` (restoring ``resume_state`` when given) to SOLVER.MAX_EPOCHS."""
    trainer = Trainer(cfg, model, data, composer, plan, optimizer, center_optimizer, scheduler,
                      device, writer, hooks)
    if resume_state is not None:
        restore_trainer(trainer, resume_state)
    return trainer.run(start_epoch)


def restore_trainer(trainer: Trainer, state: dict) -> None:
    """Load optimiser, scheduler, scaler and center states from a resume state."""
    trainer.optimizer.load_state_dict(state["optimizers"]["model"])
    if trainer.center_optimizer is not None:
        trainer.center_optimizer.load_state_dict(state["optimizers"]["center"])
        trainer.composer.center.load_state_dict(state["extra"]["center"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.scaler is not None and state.get("scaler") is not None:
        trainer.scaler.load_state_dict(state["scaler"])


__all__ = ["do_train", "do_inference", "Trainer", "check_finite", "forward_options",
           "batch_views", "unwrap"]
