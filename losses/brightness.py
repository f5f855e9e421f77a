"""Brightness routing between Triplet and TripletX (Model B "threshold-driven multi-loss routing").

mu_i is the mean BT.709 luma of anchor i's augmented crop (the batch's ``brightness``, computed
by the dataset after augmentation and de-normalised to [0, 1]). The gate g_i says how much of
anchor i goes to TripletX:
- 'hard': g_i = 1[mu_i < THRESH] (dark -> TripletX, the rest -> Triplet);
- 'soft': g_i = sigmoid((THRESH - mu_i) / K).

Routing is per anchor; positives and negatives are mined from the whole batch (masked mining),
so a dark anchor may have bright positives. Over the valid anchors V (a positive and a negative):

    L_X = sum_V g_i w_i lX_i / sum_V g_i w_i       (w_i: TripletX's detached hardness weights)
    L_T = sum_V (1 - g_i) lT_i / sum_V (1 - g_i)
    routed = W_X * (sum_V g_i / |V|) * L_X + W_T * (sum_V (1 - g_i) / |V|) * L_T

In 'hard' mode that is "each averaged within its subset, combined by subset size"; in 'soft'
mode each anchor mixes its two terms by its gate (TripletX's hardness weights are rescaled to
mean 1 under the gate). Deliberate differences from Model B's routing: mining over the whole
batch rather than inside each subset, the 'soft' gate is used, and the same routing applies to
the global and every JPM local feature (docs/reference_differences.md, losses/brightness.py).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from configs.validate import BRIGHTNESS_MODES

from .triplet import TripletTerms
from .tripletx import TripletXTerms

MODES = BRIGHTNESS_MODES   # stated once, in configs/validate.py


def check_gate(mode: str, temperature: float) -> None:
    """LOSS.BRIGHTNESS.MODE is 'hard' or 'soft'; 'soft' needs a temperature K > 0."""
    if mode not in MODES:
        raise ValueError(f"LOSS.BRIGHTNESS.MODE '{mode}' is not one of {MODES}")
    if mode == "soft" and temperature <= 0:
        raise ValueError(f"LOSS.BRIGHTNESS.K {temperature} must be > 0 for MODE 'soft'")


def brightness_gate(mu: torch.Tensor, thresh: float, temperature: float,
                    mode: str) -> torch.Tensor:
    """Per-anchor share of TripletX: 1[mu < thresh] ('hard') or sigmoid((thresh - mu) / K)."""
    check_gate(mode, temperature)
    if mode == "hard":
        return (mu < thresh).float()
    return torch.sigmoid((thresh - mu.float()) / temperature)


class RoutedTerms(NamedTuple):
    """Share-weighted contributions (to be multiplied by W_X and W_T) and subset means."""

    tripletx: torch.Tensor                 # (sum_V g / |V|) * L_X
    triplet: torch.Tensor                  # (sum_V (1 - g) / |V|) * L_T
    tripletx_mean: Optional[torch.Tensor]  # L_X, None when no anchor goes to TripletX
    triplet_mean: Optional[torch.Tensor]   # L_T, None when no anchor goes to Triplet


def route(triplet: TripletTerms, tripletx: TripletXTerms, gate: torch.Tensor) -> RoutedTerms:
    """Combine per-anchor Triplet and TripletX terms by the gate (see the module docstring)."""
    valid = (triplet.valid & tripletx.valid).float()
    count = valid.sum()
    zero = (triplet.loss.sum() + tripletx.loss.sum()) * 0.0
    if count == 0:
        return RoutedTerms(zero, zero, None, None)
    a = gate.to(valid.dtype) * valid
    b = (1.0 - gate.to(valid.dtype)) * valid
    aw = a * tripletx.weight.to(valid.dtype)
    x_mean = t_mean = None
    x_part = t_part = zero
    if aw.sum() > 0:
        x_mean = (aw * tripletx.loss).sum() / aw.sum()
        x_part = x_mean * a.sum() / count
    if b.sum() > 0:
        t_mean = (b * triplet.loss).sum() / b.sum()
        t_part = t_mean * b.sum() / count
    return RoutedTerms(x_part, t_part, x_mean, t_mean)
