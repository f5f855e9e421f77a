"""The phase plan: ONE table that decides, for every epoch, which losses run with which weights,
which metric loss is used, K of the P x K sampler, brightness routing and freezing.

Built once from the config by ``train.py`` (``PhasePlan(cfg)``) and passed to whoever needs it
(the trainer; the launcher validates configs with it). It checks plan facts only: phase lists of
the right length, weight specs, metrics, and that a phase asking for a loss has that loss
switched on. Facts about the model or the data (TG-MIM needs a ViT and captions, K must divide
the batch) are checked by the builders that own them. The plan is printed as a table at the
start and queried per epoch (``plan.state(epoch)`` -> :class:`PhaseState`); the loss composer,
the sampler and the freezer read that state; nothing else decides. This module imports nothing
from ``losses/``, ``model/``, ``processor/`` or ``datasets/``.

Rules (the Model B README's keys, with one boundary rule everywhere):
- Epochs are 1-based. With LOSS.PHASED.BOUNDARIES [b_0, ..., b_{n-2}] phase j covers
  b_{j-1} < epoch <= b_j (b_{-1} = 0; the last phase runs to SOLVER.MAX_EPOCHS): half-open
  [b_{j-1}, b_j) in completed epochs. [30, 60] -> A = 1..30, B = 31..60, C = 61..end.
  LOSS.PHASED.ENABLE False -> one phase over the whole run.
- Weight specs: a number, 'const:x', or 'linear:x->y' (x at the phase's first epoch, y at its
  last, linear in between). Per phase: LOSS.PHASED.W_METRIC_SEQ (metric), W_SUP_SPEC (SupCon),
  LOSS.{ID,CENTER,ISGVFC,CIRCLE,TGMIM}.W_SEQ and the text-based person search losses'
  LOSS.{ITC,SDM,NITC,RITC,CITC,CMPM,SIGMOID_ID,CIRCLE_INMODAL,CIRCLE_CROSS,NC_ITC,MLM}.W_SEQ (the
  others; [] = LOSS.<NAME>.W in every phase).
- Metric per phase (LOSS.PHASED.METRIC_SEQ): 'triplet', 'tripletx', 'routed' (brightness
  routing between Triplet and TripletX) or 'none'. Without the plan: 'routed' when
  LOSS.BRIGHTNESS.ENABLE, else 'tripletx' when LOSS.TRIPLETX.ENABLE, else 'triplet' when it is in
  LOSS.NAMES, else 'none'; weights LOSS.TRIPLET.W / LOSS.TRIPLETX.W (both in 'routed').
  In a phased 'routed' phase both Triplet and TripletX weigh W_METRIC_SEQ[j].
- LOSS.PHASED.TRIPLETX_END = E > 0 retires TripletX: TripletX runs in epochs <= E (inclusive),
  then 'triplet' takes the metric slot (weight W_METRIC_SEQ[j], or LOSS.TRIPLET.W without the
  plan). Model B's default is 30 (= its first boundary); ours is 0 = never, so moving the
  boundaries cannot silently retire TripletX.
- K (DATALOADER.PHASED.ENABLE): K_WHEN_TRIPLETX while TripletX is active (its weight > 0), else
  K_WHEN_SUPCON while SupCon's weight > 0, else K_OTHER; DATALOADER.NUM_INSTANCE when disabled.
- Freezing (LOSS.PHASED.FREEZE_SEQ): per phase, comma-separated parameter-name prefixes whose
  updates are skipped in that phase (or entries the model resolves to prefixes itself, e.g. the
  dual encoder's 'image_tower_but_last<k>': :func:`frozen_parameters`).

Where Model B's released code does otherwise: docs/reference_differences.md (solver/phase_plan.py).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from itertools import groupby
from typing import Dict, List, Optional, Sequence, Tuple

from configs.validate import PHASE_METRICS, TBPS_LOSS_NAMES

logger = logging.getLogger("phasereid")

METRICS = PHASE_METRICS   # stated once in configs/validate.py
# every weight the state carries (the loss composer's component names)
WEIGHT_NAMES = ("id", "triplet", "tripletx", "center", "supcon", "isgvfc", "circle", "tgmim") \
    + TBPS_LOSS_NAMES
# losses scheduled by LOSS.<NAME>.W_SEQ, with the switch that enables each
_SCHEDULED = {"id": "LOSS.NAMES contains 'id'", "center": "LOSS.NAMES contains 'center'",
              "isgvfc": "LOSS.ISGVFC.ENABLE True", "circle": "LOSS.CIRCLE.ENABLE True",
              "tgmim": "LOSS.TGMIM.ENABLE True",
              **{name: f"LOSS.NAMES contains '{name}'" for name in TBPS_LOSS_NAMES}}
# the losses switched on by their name in LOSS.NAMES (the others by LOSS.<NAME>.ENABLE)
_BY_NAME = ("id", "center") + TBPS_LOSS_NAMES

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_CONST = re.compile(rf"^const:\s*({_NUMBER})$")
_LINEAR = re.compile(rf"^linear:\s*({_NUMBER})\s*->\s*({_NUMBER})$")


@dataclass(frozen=True)
class WeightSpec:
    """A weight over one phase: constant, or linear from ``start`` (first epoch) to ``end``."""

    start: float
    end: float
    linear: bool = False

    @classmethod
    def parse(cls, value, key: str) -> "WeightSpec":
        """A number, 'const:x' or 'linear:x->y'; anything else is an error naming ``key``."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(float(value), float(value))
        text = str(value).strip()
        match = _CONST.match(text)
        if match:
            return cls(float(match.group(1)), float(match.group(1)))
        match = _LINEAR.match(text)
        if match:
            return cls(float(match.group(1)), float(match.group(2)), linear=True)
        raise ValueError(f"{key}: weight spec {value!r} is not a number, 'const:x' or "
                         "'linear:x->y' (e.g. 'linear:0.30->0.15')")

    def at(self, epoch: int, first: int, last: int) -> float:
        """The weight at ``epoch`` of a phase covering first..last (inclusive)."""
        if not self.linear or last <= first:
            return self.start
        t = (epoch - first) / (last - first)
        return self.start + t * (self.end - self.start)

    @property
    def ever_positive(self) -> bool:
        return self.start > 0 or self.end > 0

    def __str__(self) -> str:
        if self.linear:
            return f"{self.start:g}->{self.end:g}"
        return f"{self.start:g}"


@dataclass(frozen=True)
class Phase:
    """One row of the plan: epochs first..last (1-based, inclusive)."""

    name: str
    first: int
    last: int
    metric: str
    weights: Dict[str, WeightSpec]
    freeze: Tuple[str, ...] = ()


@dataclass(frozen=True)
class PhaseState:
    """What one epoch trains with (read by the loss composer, the sampler and the freezer)."""

    epoch: int
    index: int                 # 0-based phase index
    name: str                  # 'A', 'B', ...
    metric: str                # effective metric this epoch (after TRIPLETX_END)
    weights: Dict[str, float]  # one entry per WEIGHT_NAMES
    num_instances: int         # K of the P x K sampler
    routing: bool              # brightness routing (metric 'routed')
    freeze: Tuple[str, ...] = field(default=())

    def weight(self, name: str) -> float:
        return self.weights.get(name, 0.0)


def _phase_names(n: int) -> List[str]:
    return [chr(ord("A") + j) if j < 26 else f"P{j + 1}" for j in range(n)]


def _boundaries(values) -> List[int]:
    bounds = [int(b) for b in values]
    if any(b < 1 for b in bounds) or any(b >= c for b, c in zip(bounds, bounds[1:])):
        raise ValueError(f"LOSS.PHASED.BOUNDARIES {bounds} must be strictly increasing "
                         "epochs >= 1 (phase j covers b_(j-1) < epoch <= b_j)")
    return bounds


class _PerPhase:
    """Reads a per-phase list key: one entry per phase, or (optional keys) [] for none."""

    def __init__(self, names: Sequence[str], bounds_text: str):
        self.names = list(names)
        self.bounds_text = bounds_text

    def __call__(self, values, key: str, optional: bool = False) -> Optional[list]:
        values = list(values)
        if optional and not values:
            return None
        n = len(self.names)
        if len(values) != n:
            raise ValueError(f"{key} has {len(values)} entries but the plan has {n} phase(s) "
                             f"({', '.join(self.names)}; LOSS.PHASED.BOUNDARIES "
                             f"{self.bounds_text}): give one per phase")
        return values


class PhasePlan:
    """The parsed, validated phase table of a config (see the module docstring).

    Example:
        >>> plan = PhasePlan(cfg)          # raises on an inconsistent config
        >>> logger.info(plan.table())
        >>> state = plan.state(31)         # PhaseState of epoch 31
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.max_epochs = int(cfg.SOLVER.MAX_EPOCHS)
        if self.max_epochs < 1:
            raise ValueError(f"SOLVER.MAX_EPOCHS {self.max_epochs} must be >= 1")
        loss = cfg.LOSS
        self.tripletx_end = int(loss.PHASED.TRIPLETX_END)
        if self.tripletx_end < 0:
            raise ValueError(f"LOSS.PHASED.TRIPLETX_END {self.tripletx_end} must be >= 0 "
                             "(0 = never retire TripletX)")
        self.phases = self._build_phases(cfg)
        self.states = [self.state(e) for e in range(1, self.max_epochs + 1)]
        self._check_branches(cfg)

    # -- construction -------------------------------------------------------------------
    def _build_phases(self, cfg) -> List[Phase]:
        loss = cfg.LOSS
        phased = bool(loss.PHASED.ENABLE)
        bounds = _boundaries(loss.PHASED.BOUNDARIES) if phased else []
        n = len(bounds) + 1
        names = _phase_names(n)
        firsts = [1] + [b + 1 for b in bounds]
        lasts = bounds + [max(self.max_epochs, firsts[-1])]
        per_phase = _PerPhase(names, f"{bounds if phased else '(plan off)'}")
        metrics, metric_weights = self._metric_columns(loss, phased, per_phase)
        w_sup = ([WeightSpec.parse(v, "LOSS.PHASED.W_SUP_SPEC")
                  for v in per_phase(loss.PHASED.W_SUP_SPEC, "LOSS.PHASED.W_SUP_SPEC")]
                 if phased else [WeightSpec.parse(loss.SUPCON.W if loss.SUPCON.ENABLE else 0.0,
                                                  "LOSS.SUPCON.W")])
        freeze_seq = per_phase(loss.PHASED.FREEZE_SEQ, "LOSS.PHASED.FREEZE_SEQ", optional=True)
        scheduled = {}
        for name in _SCHEDULED:
            key = f"LOSS.{name.upper()}.W_SEQ"
            seq = per_phase(loss[name.upper()].W_SEQ, key, optional=True)
            scheduled[name] = [WeightSpec.parse(v, key) for v in seq] if seq is not None else None

        phases = []
        for j in range(n):
            weights = dict(metric_weights[j])
            weights["supcon"] = w_sup[j]
            for name, seq in scheduled.items():
                if seq is not None:
                    weights[name] = seq[j]
                elif self._enabled(name):
                    weights[name] = WeightSpec.parse(loss[name.upper()].W,
                                                     f"LOSS.{name.upper()}.W")
            freeze = ()
            if freeze_seq is not None:
                freeze = tuple(p.strip() for p in str(freeze_seq[j]).split(",") if p.strip())
            phases.append(Phase(names[j], firsts[j], lasts[j], metrics[j], weights, freeze))
        return phases

    @staticmethod
    def _metric_columns(loss, phased: bool, per_phase: "_PerPhase"):
        """(metric per phase, {'triplet' / 'tripletx': WeightSpec} per phase)."""
        if phased:
            metrics = per_phase(loss.PHASED.METRIC_SEQ, "LOSS.PHASED.METRIC_SEQ")
            for m in metrics:
                if m not in METRICS:
                    raise ValueError(f"LOSS.PHASED.METRIC_SEQ entry '{m}' is not one of {METRICS}")
            specs = [WeightSpec.parse(v, "LOSS.PHASED.W_METRIC_SEQ")
                     for v in per_phase(loss.PHASED.W_METRIC_SEQ, "LOSS.PHASED.W_METRIC_SEQ")]
            triplet, tripletx = specs, specs   # both weigh W_METRIC_SEQ[j] ('routed')
        else:
            metrics = [("routed" if loss.BRIGHTNESS.ENABLE else "tripletx" if loss.TRIPLETX.ENABLE
                        else "triplet" if "triplet" in loss.NAMES else "none")]
            triplet = [WeightSpec.parse(loss.TRIPLET.W, "LOSS.TRIPLET.W")]
            tripletx = ([WeightSpec.parse(loss.TRIPLETX.W, "LOSS.TRIPLETX.W")]
                        if metrics[0] not in ("triplet", "none") else [None])
        columns = []
        for j, metric in enumerate(metrics):
            weights: Dict[str, WeightSpec] = {}
            if metric != "none":
                weights["triplet"] = triplet[j]
                if metric != "triplet":
                    weights["tripletx"] = tripletx[j]
            columns.append(weights)
        return metrics, columns

    def _enabled(self, name: str) -> bool:
        loss = self.cfg.LOSS
        if name in _BY_NAME:
            return name in loss.NAMES
        return bool(loss[name.upper()].ENABLE)

    def _check_branches(self, cfg) -> None:
        """A phase that asks for a loss whose branch is disabled is an error (before training)."""
        loss = cfg.LOSS
        where = "LOSS.PHASED.METRIC_SEQ" if loss.PHASED.ENABLE else "the config"
        for phase in self.phases:
            label = f"phase {phase.name} (epochs {phase.first}-{phase.last})"
            if phase.metric in ("tripletx", "routed") and not loss.TRIPLETX.ENABLE:
                raise ValueError(f"{label} uses '{phase.metric}' ({where}) but "
                                 "LOSS.TRIPLETX.ENABLE is False: enable TripletX or change "
                                 "LOSS.PHASED.METRIC_SEQ")
            if phase.metric == "routed" and not loss.BRIGHTNESS.ENABLE:
                raise ValueError(f"{label} uses 'routed' (brightness routing) but "
                                 "LOSS.BRIGHTNESS.ENABLE is False: enable it or change "
                                 "LOSS.PHASED.METRIC_SEQ")
            if phase.weights["supcon"].ever_positive and not loss.SUPCON.ENABLE:
                raise ValueError(f"{label} gives SupCon weight '{phase.weights['supcon']}' "
                                 "(LOSS.PHASED.W_SUP_SPEC) but LOSS.SUPCON.ENABLE is False (no "
                                 "projection head is built): enable SupCon or set the spec to "
                                 "'const:0.0'")
            for name, switch in _SCHEDULED.items():
                spec = phase.weights.get(name)
                if spec is not None and spec.ever_positive and not self._enabled(name):
                    raise ValueError(f"{label} gives '{name}' weight '{spec}' "
                                     f"(LOSS.{name.upper()}.W_SEQ) but that loss is off: needs "
                                     f"{switch}")
        if loss.PHASED.ENABLE and loss.BRIGHTNESS.ENABLE and not any(
                p.metric == "routed" for p in self.phases):
            raise ValueError("LOSS.BRIGHTNESS.ENABLE is True but no phase routes: put 'routed' "
                             "in LOSS.PHASED.METRIC_SEQ for the phases that should use it")
        if loss.TRIPLETX.ENABLE and not any(p.metric in ("tripletx", "routed")
                                            for p in self.phases):
            raise ValueError("LOSS.TRIPLETX.ENABLE is True but no phase uses it: put 'tripletx' "
                             "or 'routed' in LOSS.PHASED.METRIC_SEQ, or disable TripletX")
        if loss.SUPCON.ENABLE and not any(p.weights["supcon"].ever_positive
                                          for p in self.phases):
            logger.warning("LOSS.SUPCON.ENABLE is True but its weight is 0 in every phase: the "
                           "projection head is built and never trained")

    # -- queries ------------------------------------------------------------------------
    def phase_index(self, epoch: int) -> int:
        if epoch < 1:
            raise ValueError(f"epoch {epoch}: epochs are 1-based")
        for j, phase in enumerate(self.phases[:-1]):
            if epoch <= phase.last:
                return j
        return len(self.phases) - 1

    def state(self, epoch: int) -> PhaseState:
        """The phase state of 1-based ``epoch``."""
        j = self.phase_index(epoch)
        phase = self.phases[j]
        last = phase.last if j < len(self.phases) - 1 else max(self.max_epochs, phase.first)
        weights = {name: 0.0 for name in WEIGHT_NAMES}
        for name, spec in phase.weights.items():
            weights[name] = spec.at(epoch, phase.first, last)
        metric = phase.metric
        retired = self.tripletx_end > 0 and epoch > self.tripletx_end
        if metric == "tripletx" and not retired:
            weights["triplet"] = 0.0
        elif metric in ("tripletx", "routed") and retired:
            metric = "triplet"
            weights["tripletx"] = 0.0
        return PhaseState(epoch=epoch, index=j, name=phase.name, metric=metric, weights=weights,
                          num_instances=self._k(weights), routing=metric == "routed",
                          freeze=phase.freeze)

    def _k(self, weights: Dict[str, float]) -> int:
        d = self.cfg.DATALOADER
        if not d.PHASED.ENABLE:
            return int(d.NUM_INSTANCE)
        if weights["tripletx"] > 0:
            return int(d.PHASED.K_WHEN_TRIPLETX)
        if weights["supcon"] > 0:
            return int(d.PHASED.K_WHEN_SUPCON)
        return int(d.PHASED.K_OTHER)

    def num_instances_by_epoch(self) -> List[Tuple[int, int]]:
        """(epoch, K of the P x K sampler) for every epoch of the run."""
        return [(s.epoch, s.num_instances) for s in self.states]

    def components(self) -> Tuple[str, ...]:
        """Every loss that is active (weight > 0) in at least one epoch of the run."""
        active = {n for s in self.states for n, w in s.weights.items() if w > 0}
        return tuple(n for n in WEIGHT_NAMES if n in active)

    def table(self) -> str:
        """The plan as a text table: one row per run of epochs with the same phase, metric, K,
        routing and freezing; weights as specs of the phase ('a->b' = linear across it)."""
        rows = []
        runs = groupby(self.states, key=lambda s: (s.index, s.metric, s.num_instances,
                                                   s.routing, s.freeze))
        for _, group in runs:
            group = list(group)
            first = group[0]
            phase = self.phases[first.index]
            specs = dict(phase.weights)
            if first.metric == "triplet" and phase.metric != "triplet":
                specs.pop("tripletx", None)   # retired by TRIPLETX_END
            if first.metric == "tripletx":
                specs.pop("triplet", None)
            weights = " ".join(f"{n}={specs[n]}" for n in WEIGHT_NAMES
                               if n in specs and specs[n].ever_positive) or "-"
            rows.append((phase.name, f"{first.epoch}-{group[-1].epoch}", first.metric, weights,
                         str(first.num_instances), "on" if first.routing else "off",
                         ",".join(first.freeze) or "-"))
        unreached = [p for p in self.phases if p.first > self.max_epochs]
        header = ("phase", "epochs", "metric", "weights", "K", "routing", "freeze")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
        line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        text = [f"Phase plan ({'LOSS.PHASED' if self.cfg.LOSS.PHASED.ENABLE else 'one phase'}; "
                "1-based epochs, phase j = b_(j-1) < epoch <= b_j):", line(header)]
        text += [line(r) for r in rows]
        for p in unreached:
            text.append(f"phase {p.name} starts at epoch {p.first} > SOLVER.MAX_EPOCHS "
                        f"{self.max_epochs}: not reached")
        return "\n".join(text)


def frozen_parameters(model, prefixes: Sequence[str]) -> list:
    """The parameters whose names match any prefix; a prefix matching nothing is an error.

    An entry the model resolves itself stands for the prefixes it returns: a model with a
    ``freeze_prefixes(entry)`` method (the dual encoder: 'image_tower_but_last<k>',
    'text_tower_but_last<k>'; ``model.dual_encoder.DualEncoder.freeze_prefixes``) gives a list
    for its own entries and None for ordinary prefixes."""
    named = list(model.named_parameters())
    resolve = getattr(model, "freeze_prefixes", None)
    expanded = []
    for entry in prefixes:
        own = resolve(entry) if callable(resolve) else None
        for prefix in ([entry] if own is None else own):
            if not any(n.startswith(prefix) for n, _ in named):
                what = f"prefix '{prefix}'" + ("" if own is None else f" (of '{entry}')")
                raise ValueError(f"LOSS.PHASED.FREEZE_SEQ {what} matches no parameter of the "
                                 f"model (e.g. {', '.join(n for n, _ in named[:3])}, ...)")
            expanded.append(prefix)
    return [p for n, p in named if n.startswith(tuple(expanded))]
