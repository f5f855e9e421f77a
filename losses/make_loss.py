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
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn as nn

from configs.validate import CIRCLE_FORMS, FEAT_SRCS, LOSS_NAMES
from solver.phase_plan import PhaseState

from .brightness import brightness_gate, check_gate, route
from .center import CenterLoss
from .circle import batch_circle_loss, pairwise_circle_loss
from .isgvfc import ISGVFCLoss
from .softmax_ce import cross_entropy_label_smooth
from .supcon import check_cam_aware_mode, supcon_loss
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
}


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
            key, _ = feature_keys(self.cfg.ISGVFC.FEAT_SRC)
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
        for name, w in weights.items():
            if w == 0.0 or (state.routing and name in ("triplet", "tripletx")):
                continue
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
