"""The launcher's toggles as config overlays.

Each toggle (``--phased``, ``--baseline``, ``--supcon``, ``--no-supcon``, ``--tripletx``,
``--no-tripletx``) is an ``Overlay``: fixed KEY VALUE pairs, plus -- for the two toggles whose
effect depends on the recipe's phase table -- one function of the config that returns the
phase-table keys to rewrite. A toggle overrides the YAML only when it is given; the resolved
config is then validated by building its phase plan (``solver.phase_plan.PhasePlan``, in
``launcher.experiment``), so an overlay that leaves the plan inconsistent is refused before
anything runs.

``--baseline`` = the phase plan off and CE + Triplet: it implies ``--no-supcon`` and
``--no-tripletx`` unless ``--supcon`` / ``--tripletx`` are given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

Pairs = List[Tuple[str, str]]


def no_supcon_phase_weights(cfg) -> Pairs:
    """Under a phase plan, SupCon off also zeroes its per-phase weight spec: every phase
    ``'const:0.0'`` (LOSS.PHASED.W_SUP_SPEC has one entry per phase, len(BOUNDARIES) + 1)."""
    if not cfg.LOSS.PHASED.ENABLE:
        return []
    n_phases = len(cfg.LOSS.PHASED.BOUNDARIES) + 1
    return [("LOSS.PHASED.W_SUP_SPEC", str(["const:0.0"] * n_phases))]


def no_tripletx_metric_seq(cfg) -> Pairs:
    """Under a phase plan, TripletX off maps the recipe's METRIC_SEQ entries 'tripletx' and
    'routed' (brightness routing between Triplet and TripletX) to 'triplet'; the other entries
    stay."""
    if not cfg.LOSS.PHASED.ENABLE:
        return []
    seq = ["triplet" if m in ("tripletx", "routed") else str(m)
           for m in cfg.LOSS.PHASED.METRIC_SEQ]
    return [("LOSS.PHASED.METRIC_SEQ", str(seq))]


@dataclass(frozen=True)
class Overlay:
    """What one toggle sets: ``pairs`` always, then ``derive(cfg)`` -- evaluated on the config
    with every toggle's fixed pairs applied -- for keys that depend on the recipe."""

    pairs: Tuple[Tuple[str, str], ...]
    derive: Optional[Callable[[object], Pairs]] = None
    help: str = ""


OVERLAYS = {
    "--phased": Overlay((("LOSS.PHASED.ENABLE", "True"), ("DATALOADER.PHASED.ENABLE", "True")),
                        help="LOSS.PHASED.ENABLE and DATALOADER.PHASED.ENABLE True "
                             "(absent: as in the YAML)"),
    "--baseline": Overlay((("LOSS.PHASED.ENABLE", "False"),
                           ("DATALOADER.PHASED.ENABLE", "False")),
                          help="phase plan off; CE + Triplet (SupCon / TripletX / brightness off "
                               "unless --supcon / --tripletx)"),
    "--supcon": Overlay((("LOSS.SUPCON.ENABLE", "True"),),
                        help="LOSS.SUPCON.ENABLE True (absent: as in the YAML)"),
    "--no-supcon": Overlay((("LOSS.SUPCON.ENABLE", "False"),), no_supcon_phase_weights,
                           help="SupCon off (and LOSS.PHASED.W_SUP_SPEC all 'const:0.0' when "
                                "phased)"),
    "--tripletx": Overlay((("LOSS.TRIPLETX.ENABLE", "True"),),
                          help="LOSS.TRIPLETX.ENABLE True (absent: as in the YAML)"),
    "--no-tripletx": Overlay((("LOSS.TRIPLETX.ENABLE", "False"),
                              ("LOSS.BRIGHTNESS.ENABLE", "False")), no_tripletx_metric_seq,
                             help="TripletX and brightness routing off; METRIC_SEQ "
                                  "tripletx/routed -> triplet"),
}
# the toggles of one group exclude each other; a run's toggles are listed in this group order
GROUPS = (("--phased", "--baseline"), ("--supcon", "--no-supcon"),
          ("--tripletx", "--no-tripletx"))
# a toggle implied by another unless one of its group is given
IMPLIED = {"--baseline": ("--no-supcon", "--no-tripletx")}


def ordered_flags(flags: Sequence[str]) -> List[str]:
    """``flags`` in group order; an unknown toggle or two of one group are errors."""
    unknown = [f for f in flags if f not in OVERLAYS]
    if unknown:
        raise ValueError(f"unknown toggles {unknown}; known: {', '.join(OVERLAYS)}")
    out = []
    for group in GROUPS:
        given = [f for f in group if f in flags]
        if len(given) > 1:
            raise ValueError(f"toggles {' and '.join(given)} contradict each other")
        out += given
    return out


def effective_flags(flags: Sequence[str]) -> List[str]:
    """The given toggles plus the ones they imply, in group order."""
    flags = ordered_flags(flags)
    implied = []
    for flag in flags:
        for other in IMPLIED.get(flag, ()):
            group = next(g for g in GROUPS if other in g)
            if not any(f in flags for f in group):
                implied.append(other)
    return ordered_flags(flags + implied)


def toggle_overrides(cfg, flags: Sequence[str]) -> Pairs:
    """KEY VALUE pairs the toggles ``flags`` imply for ``cfg`` (the YAML + --opts), in group
    order; none when no toggle is given (the YAML decides)."""
    active = [OVERLAYS[f] for f in effective_flags(flags)]
    fixed = [pair for overlay in active for pair in overlay.pairs]
    merged = cfg.clone()
    merged.defrost()
    merged.merge_from_list([item for pair in fixed for item in pair])
    out: Pairs = []
    for overlay in active:
        out += list(overlay.pairs)
        if overlay.derive is not None:
            out += overlay.derive(merged)
    return out


def recipe_line(cfg) -> str:
    """One line saying which losses the resolved config trains."""
    on = lambda flag: "on" if flag else "off"  # noqa: E731
    return (f"phase plan {on(cfg.LOSS.PHASED.ENABLE)}, conditional PxK "
            f"{on(cfg.DATALOADER.PHASED.ENABLE)}, SupCon {on(cfg.LOSS.SUPCON.ENABLE)}, "
            f"TripletX {on(cfg.LOSS.TRIPLETX.ENABLE)}, brightness routing "
            f"{on(cfg.LOSS.BRIGHTNESS.ENABLE)}")


def variant_name(flags: Sequence[str]) -> str:
    """The toggle part of a run name: 'yaml' when none, else e.g. 'phased-nosup-notx'."""
    return "-".join(f.lstrip("-").replace("no-supcon", "nosup").replace("no-tripletx", "notx")
                    for f in ordered_flags(flags)) or "yaml"
