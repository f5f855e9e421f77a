"""Center loss (Wen et al., ECCV 2016) as used by reid-strong-baseline.

L = (1/N) sum_i clamp(|f_i - c_{y_i}|^2, 1e-12, 1e12). The centres are parameters of this
module and are updated by their own SGD (LOSS.CENTER.LR, BoT 0.5) whose gradients are rescaled
by 1 / LOSS.CENTER.W before the step, so the centre update does not depend on the loss weight
(BoT ``layers/center_loss.py`` + ``engine/trainer.py``); the weight is the epoch's (phase
state), and with AMP the gradients are unscaled first (processor.Trainer.backward_and_step).
feat_dim comes from the model, and the loss is used when 'center' is in LOSS.NAMES
(docs/reference_differences.md, losses/center.py).
"""
import torch
import torch.nn as nn


class CenterLoss(nn.Module):
    """Args: num_classes, feat_dim. forward(feats (B, D), pids (B,)) -> scalar."""

    def __init__(self, num_classes: int, feat_dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, feats: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        centers = self.centers[pids]
        dist = (feats.float() - centers).pow(2).sum(1).clamp(min=1e-12, max=1e12)
        return dist.mean()
