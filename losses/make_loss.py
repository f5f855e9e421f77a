"""Compose the training loss from named components (fast-reid style), driven by the phase plan.

total = sum over components with weight w > 0 in this epoch's PhaseState of w * L_name, where
each component is a small function of the model output dict and the batch dict. Every
component's value is returned by name so the processor logs each one (console, tensorboard).

Components (weights from ``solver.phase_plan.PhaseState``):
- 'id':       label-smoothed CE on ``logits``; with JPM 0.5 CE(global) + 0.5 mean_k CE(local_k),
              as TransReID.
- 'triplet':  batch-hard triplet (LOSS.TRIPLET.*) on its FEAT_SRC; JPM halves as for 'id'.
- 'tripletx': TripletX (LOSS.TRIPLETX.*, losses/tripletx.py); JPM halves.
- routed metric (PhaseState.routing): brightness routing between the two (losses/brightness.py),
              logged as 'triplet' / 'tripletx' (subset means) and 'dark_share' (share of the
              batch with brightness < LOSS.BRIGHTNESS.THRESH).
- 'center':   center loss on the pre-BN global feature (its centres have their own optimiser).
- 'supcon':   SupCon on the model's ``supcon_z`` projection (losses/supcon.py; LOSS.SUPCON.
              CAM_AWARE / CAM_AWARE_MODE choose the positives and the contrast set); in routing
              phases dark anchors weigh LOSS.BRIGHTNESS.SUPCON_DARK_WEIGHT (1 = off).
- 'isgvfc':   IS-GVFC on the global feature LOSS.ISGVFC.FEAT_SRC (losses/isgvfc.py).
- 'circle':   circle loss, LOSS.CIRCLE.FORM 'pairwise' | 'batch' (losses/circle.py); JPM halves.
- 'tgmim':    TG-MIM masked-pixel L1 (losses/tgmim.py) on the model's ``tgmim_pred`` /
              ``tgmim_mask`` (the masked, text-guided forward; model/tgmim.py).

MODEL.TASK 'tbps' (the dual encoder's ``img_feat`` / ``txt_feat``, ``logit_scale`` kappa and
``logit_bias``; losses/tbps.py, REFERENCES.md section 5):
- 'itc' (CLIP InfoNCE, learnable kappa), 'sdm' (IRRA; fixed kappa 1 / LOSS.SDM.TEMPERATURE, or
  the learnable one with TEMPERATURE 0), 'nitc' (TBPS-CLIP N-ITC; soft-label ratio
  ``nitc_alpha_at(progress, LOSS.NITC.SOFT_RATIO)`` with ``progress`` = epochs done, fractional,
  set by the trainer through :meth:`LossComposer.set_progress`; stop-gradient features from the
  model's second forward (``img_stop`` / ``txt_stop``) or the current ones detached,
  LOSS.NITC.STOP_FEATURES), 'ritc', 'citc', 'cmpm', 'sigmoid_id' (the mSigLIP repos' loss, with the
  model's ``logit_bias``), the circle-loss strategies' 'circle_inmodal', 'circle_cross' and
  'nc_itc' (losses/circle_tbps.py; LOSS.<NAME>.M / GAMMA) and 'id' = the cross-modal ID loss on
  the model's ``id_head`` (``id_weight`` / ``id_bias``), label smoothing LOSS.ID.LABEL_SMOOTH;
- 'mlm': IRRA's IRR, the masked-token cross-entropy (losses/mlm.py) on the model's
  ``mlm_logits`` / ``mlm_labels`` (the IRR forward, ``model(batch, mlm=True)``, run in epochs
  where 'mlm' weighs > 0; processor.forward_options); logged beside it: ``mlm_acc``. Local batch
  only (a per-token mean: no GATHER);
- 'nitc' with LOSS.NITC.MVS (MVS-I, TBPS-CLIP ``mvs_image``): 1/2 [N-ITC(I, T) + N-ITC(I~, T)]
  with I~ the model's ``img_mvs_feat`` (its stop features ``img_mvs_stop``, or detached), the
  same alpha, targets and text columns; logged as 'nitc' (the average, TBPS-CLIP's ``nitc_loss``)
  beside ``nitc_mvs`` (the I~ term). An option of N-ITC, not a component of its own: the
  reference averages the two terms under one weight, so the N-ITC weight keeps its published
  meaning; MVS-I is scheduled with N-ITC's W / W_SEQ (the MVS view and its forward exist only in
  epochs where N-ITC weighs > 0);
- 'sigmoid_id', 'nc_itc', 'circle_cross' with LOSS.<NAME>.MVS (the mSigLIP circle study's MVS,
  ``configs.validate.MVS_LOSSES``): 1/2 [L(I, T) + L(I~, T)], the same loss with the MVS view's
  image features ``img_mvs_feat`` (gathered the same way under GATHER), logged as '<name>' (the
  average) beside '<name>_mvs' (the I~ term); scheduled with the loss's W / W_SEQ. The sigmoid
  loss's second term is on I~ (the repos pass the original features there: a no-op), as their
  MVS for NC-ITC and the cross-modal circle;
- 'ss' (SS-I, TBPS-CLIP): NT-Xent (``losses.simclr.nt_xent_loss``, LOSS.SS.T) on the model's
  ``ss_z1`` / ``ss_z2`` (the SimCLR views through ``ss_head``), gathered with LOSS.SS.GATHER;
- 'isgvfc' reads ``img_feat`` (the image tower's global feature);
- LOSS.<NAME>.GATHER: under DDP the loss's columns are the features of every process
  (``losses.tbps.gather_columns``, gathered once per step and shared by the losses that ask);
  the two circle losses have no GATHER (local batch only, ``TBPS_LOCAL_ONLY``);
- logged beside the losses: ``kappa`` (the logit scale) and, with N-ITC, ``nitc_alpha``;
- MODEL.TBPS.ARCH 'lgur' (losses/lgur.py): 'lgur_id', 'lgur_rank_m', 'lgur_rank_g' on LGUR's
  part features ``lgur_v_re`` / ``lgur_t_re`` / ``lgur_t`` / ``lgur_v_g`` (and its ID
  classifiers ``lgur_id_weight`` / ``lgur_id_bias``); ranking settings MODEL.LGUR.RANK_*; local
  batch only (in-batch negatives, no GATHER).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn as nn

from configs.validate import (CIRCLE_FORMS, FEAT_SRCS, LGUR_LOSS_NAMES, LOSS_NAMES,
                              MVS_LOSSES, TBPS_LOCAL_ONLY, TBPS_LOSS_NAMES)
from solver.phase_plan import PhaseState
from utils.dist import all_gather_with_grad, world_info

from .brightness import brightness_gate, check_gate, route
from .center import CenterLoss
from .circle import batch_circle_loss, pairwise_circle_loss
from .circle_tbps import circle_inmodal_loss, cross_modal_circle_loss, nc_itc_loss
from .isgvfc import ISGVFCLoss
from .mlm import mlm_accuracy, mlm_loss
from .simclr import nt_xent_loss
from .lgur import lgur_components
from .softmax_ce import cross_entropy_label_smooth
from .supcon import check_cam_aware_mode, supcon_loss
from .tbps import (citc_loss, cmpm_loss, cross_modal_id_loss, gather_columns, itc_loss,
                   nitc_alpha_at, nitc_loss, ritc_loss, sdm_loss, sigmoid_identity_loss)
from .tgmim import tgmim_loss
from .triplet import batch_hard_terms, triplet_loss
from .tripletx import tripletx_loss, tripletx_terms

KNOWN_LOSSES = LOSS_NAMES   # stated once in configs/validate.py
# auxiliary losses have their own switch (LOSS.<NAME>.ENABLE), not an entry in LOSS.NAMES
_AUXILIARY = ("tripletx", "supcon", "isgvfc", "circle", "tgmim")

# which model branch produces each output key (for the error message)
_BRANCH_OF = {
    "logits": "the classifier (model in training mode)",
    "local_feats": "JPM (MODEL.JPM True)",
    "local_feats_bn": "JPM (MODEL.JPM True)",
    "local_logits": "JPM (MODEL.JPM True)",
    "supcon_z": "the SupCon projection head (LOSS.SUPCON.ENABLE True, model in training mode)",
    "tgmim_pred": "the TG-MIM branch (LOSS.TGMIM.ENABLE True; the model called with the "
                  "batch's text_ids / text_mask and tgmim=True)",
    "tgmim_mask": "the TG-MIM branch (LOSS.TGMIM.ENABLE True; the model called with the "
                  "batch's text_ids / text_mask and tgmim=True)",
    "img_feat": "the dual encoder (MODEL.TASK 'tbps')",
    "txt_feat": "the dual encoder (MODEL.TASK 'tbps')",
    "logit_scale": "the dual encoder (MODEL.TASK 'tbps')",
    "logit_bias": "the dual encoder's logit bias (MODEL.TBPS.FAMILY 'hf_siglip', or any dual "
                  "encoder built with 'sigmoid_id' in LOSS.NAMES)",
    "id_weight": "the dual encoder's ID classifier (built when LOSS.NAMES has 'id')",
    "img_stop": "the dual encoder's stop-gradient forward (model called with "
                "stop_features=True; LOSS.NITC.STOP_FEATURES 'second_forward')",
    "mlm_logits": "the dual encoder's IRR / MLM forward (built when LOSS.NAMES has 'mlm'; the "
                  "model called with mlm=True, as processor.forward_options does in epochs "
                  "where 'mlm' weighs > 0)",
    "mlm_labels": "the dual encoder's IRR / MLM forward (built when LOSS.NAMES has 'mlm'; the "
                  "model called with mlm=True, as processor.forward_options does in epochs "
                  "where 'mlm' weighs > 0)",
    "ss_z1": "SS-I's forward of the SimCLR views (model called with ss=True; 'ss' in "
             "LOSS.NAMES)",
    "img_mvs_feat": "the forward of the MVS view (model called with mvs=True; "
                    "LOSS.<NAME>.MVS True)",
    "img_mvs_stop": "MVS-I's stop-gradient forward (model called with mvs=True and "
                    "stop_features=True; LOSS.NITC.STOP_FEATURES 'second_forward')",
    **{k: "LGUR (MODEL.TBPS.ARCH 'lgur')" for k in ("lgur_v_re", "lgur_t_re", "lgur_t")},
    "lgur_v_g": "LGUR's text-guided branch (built for training: model.lgur.build_lgur "
                "training=True)",
    "lgur_id_weight": "LGUR's ID classifiers (built for training when LOSS.NAMES has 'lgur_id')",
}
_LGUR_FEATURES = ("lgur_v_re", "lgur_t_re", "lgur_t", "lgur_v_g")


def output_key(outputs: dict, key: str, loss: str) -> torch.Tensor:
    """``outputs[key]``, or an error naming the branch that produces it."""
    if key not in outputs:
        branch = _BRANCH_OF.get(key, "the model")
        raise KeyError(f"loss '{loss}' needs model output '{key}', produced by {branch}; "
                       f"the model returned {sorted(outputs)}")
    return outputs[key]


def batch_key(batch: dict, key: str, loss: str) -> torch.Tensor:
    """``batch[key]``, or an error naming the loss that needs it."""
    if key not in batch:
        raise KeyError(f"loss '{loss}' needs batch field '{key}'; the batch has {sorted(batch)}")
    return batch[key]


def feature_keys(feat_src: str) -> Tuple[str, str]:
    """(global key, local key) for a FEAT_SRC value."""
    if feat_src == "pre_bn":
        return "feat", "local_feats"
    if feat_src == "bnneck":
        return "feat_bn", "local_feats_bn"
    raise ValueError(f"FEAT_SRC '{feat_src}' is not one of {list(FEAT_SRCS)}")


def features_of(outputs: dict, feat_src: str, loss: str) -> List[torch.Tensor]:
    """[global] or, with JPM local outputs, [global, local_1, ..., local_P]."""
    key, local_key = feature_keys(feat_src)
    feats = [output_key(outputs, key, loss)]
    if local_key in outputs:
        feats += list(outputs[local_key])
    return feats


def jpm_combine(values: List[torch.Tensor]) -> torch.Tensor:
    """values[0] alone, or 0.5 values[0] + 0.5 mean(values[1:]) (TransReID's JPM weighting)."""
    if len(values) == 1:
        return values[0]
    return 0.5 * values[0] + 0.5 * torch.stack(values[1:]).mean()


class LossComposer(nn.Module):
    """Named loss components whose weights come from the phase plan.

    Args:
        cfg: the config (LOSS.*).
        num_classes: training identities (center loss).
        feat_dim: global feature size (center loss).

    The composer does not own the phase plan: the caller passes each epoch's state.
    Call: ``total, parts = composer(outputs, batch, state)`` with ``state`` =
    ``plan.state(epoch)``; ``parts`` maps each computed component (and routing diagnostics) to
    its unweighted, detached value. Components with weight 0 in ``state`` are not computed.
    Call ``composer.start_epoch(epoch)`` before an epoch (it clears the IS-GVFC memory).

    Example:
        >>> plan = PhasePlan(cfg)
        >>> composer = make_loss(cfg, num_classes, model.feat_dim)
        >>> total, parts = composer(model(batch), batch, plan.state(epoch))
    """

    def __init__(self, cfg, num_classes: int, feat_dim: int):
        super().__init__()
        unknown = [n for n in cfg.LOSS.NAMES if n not in KNOWN_LOSSES]
        if unknown:
            aux = [n for n in unknown if n in _AUXILIARY]
            hint = (f"; {aux} are switched on by LOSS.<NAME>.ENABLE True, not LOSS.NAMES"
                    if aux else "")
            raise ValueError(f"LOSS.NAMES has unknown losses {unknown}; known: {KNOWN_LOSSES}"
                             + hint)
        self.cfg = cfg.LOSS
        self.lgur = cfg.MODEL.LGUR
        self.task = cfg.MODEL.TASK
        self.progress = 0.0   # epochs done, fractional (N-ITC's soft-label ramp)
        self.center = CenterLoss(num_classes, feat_dim) if "center" in cfg.LOSS.NAMES else None
        self.isgvfc = None
        if cfg.LOSS.ISGVFC.ENABLE:
            self.isgvfc = ISGVFCLoss(temperature=cfg.LOSS.ISGVFC.T,
                                     use_memory=cfg.LOSS.ISGVFC.MEMORY,
                                     include_self=cfg.LOSS.ISGVFC.INCLUDE_SELF)
        if cfg.LOSS.CIRCLE.FORM not in CIRCLE_FORMS:
            raise ValueError(f"LOSS.CIRCLE.FORM '{cfg.LOSS.CIRCLE.FORM}' is not one of "
                             f"{list(CIRCLE_FORMS)}")
        check_cam_aware_mode(cfg.LOSS.SUPCON.CAM_AWARE_MODE)
        check_gate(cfg.LOSS.BRIGHTNESS.MODE, cfg.LOSS.BRIGHTNESS.K)
        for section in ("TRIPLET", "TRIPLETX", "ISGVFC", "CIRCLE"):
            feature_keys(cfg.LOSS[section].FEAT_SRC)   # a bad FEAT_SRC fails here, not mid-run

    def start_epoch(self, epoch: int) -> None:
        if self.isgvfc is not None:
            self.isgvfc.reset()
        self.progress = float(epoch - 1)

    def set_progress(self, progress: float) -> None:
        """Epochs done, fractional: (epoch - 1) + i / iterations_per_epoch before the 0-based
        iteration i (the trainer calls it every step; N-ITC's soft-label ratio ramps on it)."""
        self.progress = float(progress)

    # -- text-based person search ------------------------------------------------------------
    def _tbps_columns(self, outputs: dict, batch: dict, weights: Dict[str, float]) -> dict:
        """{'cols': Columns or None, 'stop': Columns or None, 'mvs' / 'mvs_stop': the MVS view's
        (stop) image features of every process or None}: the features of every process,
        gathered once per step when an active loss has LOSS.<NAME>.GATHER and there are several
        processes (None = the local batch). 'ss' gathers its own projections (not these)."""
        gathered = {"cols": None, "stop": None, "mvs": None, "mvs_stop": None}
        world, _ = world_info()
        wanted = [n for n in TBPS_LOSS_NAMES if weights.get(n, 0.0) > 0 and n != "ss"
                  and n not in TBPS_LOCAL_ONLY and self.cfg[n.upper()].GATHER]
        if world == 1 or not wanted:
            return gathered
        img = output_key(outputs, "img_feat", wanted[0])
        txt = output_key(outputs, "txt_feat", wanted[0])
        gathered["cols"] = gather_columns(img, txt, batch["pid"])
        if "nitc" in wanted and "img_stop" in outputs:
            gathered["stop"] = gather_columns(outputs["img_stop"], outputs["txt_stop"])
        if "img_mvs_feat" in outputs and any(n in MVS_LOSSES and self.cfg[n.upper()].MVS
                                             for n in wanted):
            gathered["mvs"] = all_gather_with_grad(outputs["img_mvs_feat"])
            if "nitc" in wanted and "img_mvs_stop" in outputs:
                gathered["mvs_stop"] = all_gather_with_grad(outputs["img_mvs_stop"])
        return gathered

    def _ss(self, outputs: dict) -> torch.Tensor:
        """SS-I: NT-Xent on the two SimCLR views' projections, gathered under DDP (GATHER)."""
        c = self.cfg.SS
        z1, z2 = output_key(outputs, "ss_z1", "ss"), output_key(outputs, "ss_z2", "ss")
        cols = gather_columns(z1, z2) if c.GATHER and world_info()[0] > 1 else None
        return nt_xent_loss(z1, z2, c.T, columns=cols)

    def _nitc_mvs(self, img_mvs: torch.Tensor, txt: torch.Tensor, pids: torch.Tensor, kappa,
                  alpha: float, txt_stop, cols, stop_cols, outputs: dict,
                  gathered: dict) -> torch.Tensor:
        """MVS-I's term N-ITC(I~, T): the MVS view's image features against the same texts,
        with the same alpha and text (stop) columns; only the image side is the MVS view's."""
        c = self.cfg.NITC
        mvs_cols = None if cols is None else cols._replace(img=gathered["mvs"])
        img_stop = mvs_stop_cols = None
        if alpha > 0:
            if c.STOP_FEATURES == "second_forward":
                img_stop = output_key(outputs, "img_mvs_stop", "nitc")
                if stop_cols is not None:
                    mvs_stop_cols = stop_cols._replace(img=gathered["mvs_stop"])
            else:
                img_stop = img_mvs.detach()
                if stop_cols is not None:
                    mvs_stop_cols = stop_cols._replace(img=gathered["mvs"].detach())
        return nitc_loss(img_mvs, txt, pids, kappa, alpha=alpha, img_stop=img_stop,
                         txt_stop=txt_stop, columns=mvs_cols, stop_columns=mvs_stop_cols)

    def _lgur_component(self, name: str, outputs: dict, batch: dict) -> torch.Tensor:
        """'lgur_id' / 'lgur_rank_m' / 'lgur_rank_g' (losses/lgur.py) of LGUR's outputs."""
        feats = {k: output_key(outputs, k, name) for k in _LGUR_FEATURES}
        if name == "lgur_id":
            feats["lgur_id_weight"] = output_key(outputs, "lgur_id_weight", name)
            feats["lgur_id_bias"] = outputs.get("lgur_id_bias")
        g = self.lgur
        return lgur_components(feats, batch["pid"], name, margin=g.RANK_MARGIN,
                               negative=g.RANK_NEGATIVE, reduction=g.RANK_REDUCTION)

    def _tbps_component(self, name: str, outputs: dict, batch: dict, gathered: dict,
                        parts: dict) -> torch.Tensor:
        if name in LGUR_LOSS_NAMES:
            return self._lgur_component(name, outputs, batch)
        if name == "mlm":
            logits = output_key(outputs, "mlm_logits", name)
            labels = output_key(outputs, "mlm_labels", name)
            parts["mlm_acc"] = mlm_accuracy(logits, labels)
            return mlm_loss(logits, labels)
        if name == "ss":
            return self._ss(outputs)
        img = output_key(outputs, "img_feat", name)
        txt = output_key(outputs, "txt_feat", name)
        pids = batch["pid"]
        c = self.cfg[name.upper()] if name != "id" else self.cfg.ID
        if name == "id":
            return cross_modal_id_loss(img, txt, pids, output_key(outputs, "id_weight", name),
                                       outputs.get("id_bias"), label_smoothing=c.LABEL_SMOOTH)
        if name == "circle_inmodal":
            return circle_inmodal_loss(img, txt, pids, margin=c.M, gamma=c.GAMMA)
        cols = gathered["cols"] if name not in TBPS_LOCAL_ONLY and c.GATHER else None
        if name == "nitc":
            return self._nitc(img, txt, pids, outputs, gathered, cols, parts)
        value = self._pair_loss(name, img, txt, pids, outputs, cols)
        if name in MVS_LOSSES and c.MVS:
            img_mvs = output_key(outputs, "img_mvs_feat", name)
            mvs_cols = None if cols is None else cols._replace(img=gathered["mvs"])
            mvs = self._pair_loss(name, img_mvs, txt, pids, outputs, mvs_cols)
            parts[f"{name}_mvs"] = mvs.detach()
            return 0.5 * (value + mvs)
        return value

    def _pair_loss(self, name: str, img: torch.Tensor, txt: torch.Tensor, pids: torch.Tensor,
                   outputs: dict, cols) -> torch.Tensor:
        """One image-text loss of (img, txt) against the columns ``cols`` (None = the local
        batch): every TBPS loss but N-ITC, 'id', 'circle_inmodal', 'mlm', 'ss' and LGUR's."""
        c = self.cfg[name.upper()]
        if name == "circle_cross":
            return cross_modal_circle_loss(img, txt, pids, margin=c.M, gamma=c.GAMMA)
        if name == "nc_itc":
            return nc_itc_loss(img, txt, pids, margin=c.M, gamma=c.GAMMA, columns=cols)
        kappa = output_key(outputs, "logit_scale", name)
        if name == "itc":
            return itc_loss(img, txt, kappa, columns=cols)
        if name == "sdm":
            scale = 1.0 / c.TEMPERATURE if c.TEMPERATURE > 0 else kappa
            return sdm_loss(img, txt, pids, scale, eps=c.EPS, columns=cols)
        if name == "ritc":
            return ritc_loss(img, txt, pids, kappa, eps=c.EPS, columns=cols)
        if name == "citc":
            return citc_loss(img, txt, inmodal_weight=c.INMODAL, crossmodal_weight=c.CROSSMODAL,
                             columns=cols)
        if name == "cmpm":
            return cmpm_loss(img, txt, pids, eps=c.EPS, columns=cols)
        if name == "sigmoid_id":
            return sigmoid_identity_loss(img, txt, pids, kappa,
                                         output_key(outputs, "logit_bias", name), columns=cols)
        raise ValueError(f"unknown text-based person search loss '{name}'")

    def _nitc(self, img: torch.Tensor, txt: torch.Tensor, pids: torch.Tensor, outputs: dict,
              gathered: dict, cols, parts: dict) -> torch.Tensor:
        """N-ITC with its soft-label ratio and stop features, and MVS-I with LOSS.NITC.MVS."""
        c = self.cfg.NITC
        kappa = output_key(outputs, "logit_scale", "nitc")
        alpha = nitc_alpha_at(self.progress, c.SOFT_RATIO)
        parts["nitc_alpha"] = torch.tensor(alpha)
        img_stop = txt_stop = stop_cols = None
        if alpha > 0:
            if c.STOP_FEATURES == "second_forward":
                img_stop = output_key(outputs, "img_stop", "nitc")
                txt_stop = output_key(outputs, "txt_stop", "nitc")
                stop_cols = gathered["stop"] if cols is not None else None
            else:
                img_stop, txt_stop = img.detach(), txt.detach()
                if cols is not None:
                    stop_cols = cols._replace(img=cols.img.detach(), txt=cols.txt.detach())
        value = nitc_loss(img, txt, pids, kappa, alpha=alpha, img_stop=img_stop,
                          txt_stop=txt_stop, columns=cols, stop_columns=stop_cols)
        if not c.MVS:
            return value
        mvs = self._nitc_mvs(output_key(outputs, "img_mvs_feat", "nitc"), txt, pids, kappa,
                             alpha, txt_stop, cols, stop_cols, outputs, gathered)
        parts["nitc_mvs"] = mvs.detach()
        return 0.5 * (value + mvs)

    # -- components ---------------------------------------------------------------------
    def _triplet(self, feat: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        c = self.cfg.TRIPLET
        return triplet_loss(feat, pids, c.MARGIN, c.SOFT_MARGIN, c.NORM_FEAT)

    def _tripletx_kwargs(self, epoch: int) -> dict:
        c = self.cfg.TRIPLETX
        return dict(epoch=epoch, margin=c.MARGIN, soft_warmup=c.SOFT_WARMUP,
                    warmup_epochs=c.WARMUP_EPOCHS, topk=c.K, norm_feat=c.NORM_FEAT,
                    cross_cam_pos=c.CROSS_CAM_POS, same_cam_neg_boost=c.SAME_CAM_NEG_BOOST,
                    alpha=c.ALPHA)

    def _routed(self, outputs: dict, batch: dict, state: PhaseState, weights: Dict[str, float],
                parts: dict) -> torch.Tensor:
        """Brightness-routed Triplet/TripletX on the global and every JPM local feature."""
        b = self.cfg.BRIGHTNESS
        pids, camids = batch["pid"], batch_key(batch, "camid", "tripletx")
        mu = batch_key(batch, "brightness", "brightness routing")
        gate = brightness_gate(mu, b.THRESH, b.K, b.MODE)
        t, x = self.cfg.TRIPLET, self.cfg.TRIPLETX
        kw = self._tripletx_kwargs(state.epoch)
        terms = [route(batch_hard_terms(ft, pids, t.MARGIN, t.SOFT_MARGIN, t.NORM_FEAT),
                       tripletx_terms(fx, pids, camids, **kw), gate)
                 for ft, fx in zip(features_of(outputs, t.FEAT_SRC, "triplet"),
                                   features_of(outputs, x.FEAT_SRC, "tripletx"))]
        total = (weights["tripletx"] * jpm_combine([r.tripletx for r in terms])
                 + weights["triplet"] * jpm_combine([r.triplet for r in terms]))
        if terms[0].tripletx_mean is not None:
            parts["tripletx"] = jpm_combine([r.tripletx_mean for r in terms]).detach()
        if terms[0].triplet_mean is not None:
            parts["triplet"] = jpm_combine([r.triplet_mean for r in terms]).detach()
        parts["dark_share"] = (mu < b.THRESH).float().mean().detach()
        return total

    def _supcon(self, outputs: dict, batch: dict, state: PhaseState) -> torch.Tensor:
        c = self.cfg.SUPCON
        camids = batch_key(batch, "camid", "supcon") if c.CAM_AWARE else None
        anchor_weights = None
        dark_weight = self.cfg.BRIGHTNESS.SUPCON_DARK_WEIGHT
        if state.routing and dark_weight != 1.0:
            mu = batch_key(batch, "brightness", "supcon dark weighting")
            anchor_weights = torch.where(mu < self.cfg.BRIGHTNESS.THRESH,
                                         torch.full_like(mu, dark_weight, dtype=torch.float32),
                                         torch.ones_like(mu, dtype=torch.float32))
        return supcon_loss(output_key(outputs, "supcon_z", "supcon"), batch["pid"], camids,
                           temperature=c.T, cam_aware=c.CAM_AWARE,
                           cam_aware_mode=c.CAM_AWARE_MODE, anchor_weights=anchor_weights)

    def component(self, name: str, outputs: dict, batch: dict,
                  state: PhaseState) -> torch.Tensor:
        pids = batch["pid"]
        if name == "id":
            eps = self.cfg.ID.LABEL_SMOOTH
            logits = [output_key(outputs, "logits", name)]
            if "local_logits" in outputs:
                logits += list(outputs["local_logits"])
            return jpm_combine([cross_entropy_label_smooth(z, pids, eps) for z in logits])
        if name == "triplet":
            feats = features_of(outputs, self.cfg.TRIPLET.FEAT_SRC, name)
            return jpm_combine([self._triplet(f, pids) for f in feats])
        if name == "tripletx":
            camids = batch_key(batch, "camid", name)
            kw = self._tripletx_kwargs(state.epoch)
            feats = features_of(outputs, self.cfg.TRIPLETX.FEAT_SRC, name)
            return jpm_combine([tripletx_loss(f, pids, camids, **kw) for f in feats])
        if name == "center":
            return self.center(output_key(outputs, "feat", name), pids)
        if name == "supcon":
            return self._supcon(outputs, batch, state)
        if name == "isgvfc":
            key = "img_feat" if self.task == "tbps" else feature_keys(self.cfg.ISGVFC.FEAT_SRC)[0]
            return self.isgvfc(output_key(outputs, key, name), pids)
        if name == "circle":
            c = self.cfg.CIRCLE
            fn = pairwise_circle_loss if c.FORM == "pairwise" else batch_circle_loss
            feats = features_of(outputs, c.FEAT_SRC, name)
            return jpm_combine([fn(f, pids, margin=c.M, gamma=c.GAMMA) for f in feats])
        if name == "tgmim":
            return tgmim_loss(output_key(outputs, "tgmim_pred", name), batch["img"],
                              output_key(outputs, "tgmim_mask", name), self.cfg.TGMIM.NORM_TARGET)
        raise ValueError(f"unknown loss component '{name}'")

    def forward(self, outputs: dict, batch: dict,
                state: PhaseState) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        weights = state.weights
        total = None
        parts: Dict[str, torch.Tensor] = {}

        def add(value: torch.Tensor) -> None:
            nonlocal total
            total = value if total is None else total + value

        if state.routing:
            add(self._routed(outputs, batch, state, weights, parts))
        gathered = None
        if self.task == "tbps":
            gathered = self._tbps_columns(outputs, batch, weights)
            if "logit_scale" in outputs:
                parts["kappa"] = outputs["logit_scale"].detach()
        for name, w in weights.items():
            if w == 0.0 or (state.routing and name in ("triplet", "tripletx")):
                continue
            if gathered is not None and (name in TBPS_LOSS_NAMES or name == "id"):
                value = self._tbps_component(name, outputs, batch, gathered, parts)
            else:
                value = self.component(name, outputs, batch, state)
            parts[name] = value.detach()
            add(w * value)
        if total is None:
            raise ValueError(f"every loss has weight 0 in epoch {state.epoch} (phase "
                             f"{state.name}): nothing to train; check the phase plan")
        return total, parts


def make_loss(cfg, num_classes: int, feat_dim: int) -> LossComposer:
    """The loss composer for a config (see :class:`LossComposer`)."""
    return LossComposer(cfg, num_classes, feat_dim)
