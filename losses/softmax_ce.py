"""Identity (classification) loss: cross-entropy with label smoothing.

Reference: reid-strong-baseline / TransReID ``CrossEntropyLabelSmooth(num_classes, epsilon)``:
target q = (1 - eps) * onehot(y) + eps / C, loss = mean_i sum_c -q_ic log p_ic. This is exactly
PyTorch's ``cross_entropy(label_smoothing=eps)``, which is used here (eps = 0 -> plain CE).
fast-reid's variant (eps / (C - 1) on the other classes) is NOT what this computes.
"""
import torch
import torch.nn.functional as F


def cross_entropy_label_smooth(logits: torch.Tensor, targets: torch.Tensor,
                               epsilon: float = 0.0) -> torch.Tensor:
    """Mean label-smoothed CE of ``logits`` (B, C) against integer ``targets`` (B,), computed in
    float32 (half / bfloat16 logits are cast up; float64 is kept)."""
    logits = logits if logits.dtype == torch.float64 else logits.float()
    return F.cross_entropy(logits, targets, label_smoothing=epsilon)
