"""TG-MIM reconstruction loss: L1 on the masked pixels only (SimMIM, as used by VFE-TPS).

    L = sum_{p masked} |x_hat_p - x_p|_1 / (3 * #masked pixels)

i.e. the mean absolute error over the masked pixels and the 3 channels (SimMIM divides the
masked-pixel sum by the mask size and the channel count; VFE-TPS then scales it by 10, our
LOSS.TGMIM.W default). The target is the (normalised) image the model saw. The prediction
covers the token grid's stride cells, (gh * r, gw * r) pixels from the top-left corner, so the
target is cropped to that area (with overlapping patches, e.g. 256 x 128 at stride 12, the last
4 / 8 pixel rows / columns belong to no stride cell); a pixel is masked when its token is.

``norm_target`` True normalises each token's r x r x 3 target cell by its own mean and standard
deviation (MAE's ``norm_pix_loss``: (x - mean) / sqrt(var + 1e-6), biased variance).
"""
from __future__ import annotations

import torch


def patchify(img: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, 3, gh*r, gw*r) -> (B, gh*gw, r*r*3), tokens in row-major order."""
    b, c, h, w = img.shape
    gh, gw = h // stride, w // stride
    x = img.reshape(b, c, gh, stride, gw, stride)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, stride * stride * c)


def tgmim_loss(pred: torch.Tensor, img: torch.Tensor, token_mask: torch.Tensor,
               norm_target: bool = False) -> torch.Tensor:
    """Masked-pixel L1 between a TG-MIM reconstruction and the input image.

    Args:
        pred: (B, 3, gh*r, gw*r) decoder output.
        img: (B, 3, H, W) the input image (H >= gh*r, W >= gw*r); not modified.
        token_mask: (B, gh, gw) bool, True = masked token.
        norm_target: per-token normalised targets (MAE).

    Returns:
        scalar loss (0-dim tensor).
    """
    b, _, ph, pw = pred.shape
    gh, gw = token_mask.shape[1:]
    if ph % gh or pw % gw or ph // gh != pw // gw:
        raise ValueError(f"TG-MIM prediction {ph}x{pw} is not a square-cell multiple of the "
                         f"{gh}x{gw} token grid")
    stride = ph // gh
    if img.shape[-2] < ph or img.shape[-1] < pw:
        raise ValueError(f"image {tuple(img.shape[-2:])} is smaller than the TG-MIM "
                         f"prediction {ph}x{pw}")
    pred = pred.float()   # float32 under AMP too: the L1 of small pixel errors
    target = patchify(img[..., :ph, :pw].float(), stride)
    if norm_target:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True, unbiased=False)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_token = (patchify(pred, stride) - target).abs().mean(dim=-1)     # (B, N)
    mask = token_mask.reshape(b, -1).to(per_token.dtype)
    if mask.sum() == 0:
        raise ValueError("TG-MIM: no token is masked (LOSS.TGMIM.MASK_RATIO too small for the "
                         "token grid)")
    return (per_token * mask).sum() / mask.sum()
