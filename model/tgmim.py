"""TG-MIM: text-guided masked image modelling (VFE-TPS, Shao et al.; the paper's text-guided
form -- the released code ``zhangweifeng1218/VFE_TPS`` ``model/build.py`` comments the text
guidance out).

One training step with TG-MIM (the clean forward that the other losses use is separate):
1. mask: ``MASK_RATIO`` of the N patch tokens of the ViT grid (gh x gw) are masked, either
   uniformly ('random': exactly round(ratio * N) tokens per image, drawn without replacement, as
   SimMIM / MAE) or BEiT-style blockwise ('block': rectangles of >= 4 tokens with aspect ratio in
   [0.3, 3.3] are added until the count reaches round(ratio * N); blocks never overshoot the
   target, so the count can fall short by a few tokens on small grids, as in BEiT);
2. masked forward: the masked tokens' patch embeddings are replaced by a learned mask token
   before the CLS token and the position / SIE embeddings are added (SimMIM), and the image runs
   through the whole backbone (the global branch with JPM);
3. text guidance: the final patch tokens (queries) attend to the caption's token features
   (keys / values, projected to the image width; padding ignored) in one multi-head
   cross-attention with a residual connection and LayerNorm (VFE-TPS follows it with a 4-block
   transformer; this light head omits those blocks);
4. decoder: the token grid (B, D, gh, gw) -> 3x3 conv to DECODER_DIM -> GELU -> 1x1 conv to
   r*r*3 -> PixelShuffle(r), r = the patch stride, giving (B, 3, gh*r, gw*r): each token
   reconstructs its own r x r stride cell (VFE-TPS: 1x1 conv + PixelShuffle(16) on a
   non-overlapping 16-pixel grid);
5. the loss (losses/tgmim.py): L1 on the masked pixels only.

The cross-attention weights (B, N, L), averaged over heads, are returned for figures
(``utils.visualize.tgmim_attention_figure``).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn

from configs.validate import TGMIM_MASK_MODES


def random_token_mask(batch: int, grid: Tuple[int, int], ratio: float,
                      device=None) -> torch.Tensor:
    """(B, gh, gw) bool: exactly round(ratio * N) masked tokens per image, uniformly chosen."""
    gh, gw = grid
    n = gh * gw
    count = int(round(ratio * n))
    order = torch.rand(batch, n, device=device).argsort(dim=1)
    mask = torch.zeros(batch, n, dtype=torch.bool, device=device)
    mask.scatter_(1, order[:, :count], True)
    return mask.view(batch, gh, gw)


def block_token_mask(batch: int, grid: Tuple[int, int], ratio: float, min_tokens: int = 4,
                     min_aspect: float = 0.3, device=None) -> torch.Tensor:
    """(B, gh, gw) bool: BEiT blockwise masking up to round(ratio * N) tokens per image.

    Random rectangles (area uniform between min_tokens and the remaining count, log-uniform
    aspect ratio in
    [min_aspect, 1 / min_aspect]) are added until the target is reached or ten draws in a row
    add nothing; a rectangle is only kept when it adds no more tokens than remain (BEiT's rule).
    Uses torch's global RNG (seeded runs are reproducible).
    """
    gh, gw = grid
    target = int(round(ratio * gh * gw))
    log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
    masks = torch.zeros(batch, gh, gw, dtype=torch.bool)
    for b in range(batch):
        mask = masks[b]
        count = 0
        while count < target:
            added = 0
            for _ in range(10):
                remaining = target - count
                u = torch.rand(2).tolist()
                area = min_tokens + u[0] * (remaining - min_tokens)  # between the two, as BEiT
                aspect = math.exp(log_aspect[0] + u[1] * (log_aspect[1] - log_aspect[0]))
                h = int(round(math.sqrt(area * aspect)))
                w = int(round(math.sqrt(area / aspect)))
                if not (1 <= h <= gh and 1 <= w <= gw):
                    continue
                top = int(torch.randint(0, gh - h + 1, (1,)))
                left = int(torch.randint(0, gw - w + 1, (1,)))
                new = h * w - int(mask[top:top + h, left:left + w].sum())
                if 0 < new <= remaining:
                    mask[top:top + h, left:left + w] = True
                    added = new
                    break
            if added == 0:
                break
            count += added
    return masks.to(device)


class TGMIMHead(nn.Module):
    """Mask token + text cross-attention + pixel decoder (see the module docstring).

    Args:
        dim: image token width D (the backbone's).
        text_dim: text token width (the text encoder's).
        grid: (gh, gw) token grid of the backbone.
        stride: the patch stride r (square strides only): each token decodes an r x r cell.
        decoder_dim: width of the 3x3 decoder conv (LOSS.TGMIM.DECODER_DIM).
        heads: cross-attention heads (LOSS.TGMIM.HEADS; must divide D).
        mask_ratio, mask_mode: LOSS.TGMIM.MASK_RATIO, LOSS.TGMIM.MASK_MODE ('random' | 'block').
        mask_dim: width of the learned mask token, i.e. of the patch embeddings it replaces;
            None = ``dim``. The TransReID ViT keeps one width from the patch embedding to its
            final tokens; the dual encoder's open_clip towers project their final tokens
            (ViT-B/16: 768-d patch embeddings, 512-d ``img_tokens``), so there the mask token
            has the patch-embedding width and the head reads the projected tokens.

    Call: ``pred, attn = head(patch_tokens, text_tokens, text_mask)`` with patch tokens
    (B, N, D) of the masked forward, text tokens (B, L, text_dim), text_mask (B, L) bool (True =
    real token) -> pred (B, 3, gh*r, gw*r), attn (B, N, L).
    """

    def __init__(self, dim: int, text_dim: int, grid: Tuple[int, int], stride: int,
                 decoder_dim: int = 256, heads: int = 8, mask_ratio: float = 0.6,
                 mask_mode: str = "random", mask_dim: Optional[int] = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"LOSS.TGMIM.HEADS {heads} must divide the image width {dim}")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"LOSS.TGMIM.MASK_RATIO {mask_ratio} must be in (0, 1)")
        if mask_mode not in TGMIM_MASK_MODES:
            raise ValueError(f"LOSS.TGMIM.MASK_MODE '{mask_mode}' is not one of "
                             f"{list(TGMIM_MASK_MODES)}")
        self.grid = tuple(grid)
        self.stride = int(stride)
        self.mask_ratio = float(mask_ratio)
        self.mask_mode = mask_mode
        self.mask_token = nn.Parameter(torch.zeros(1, 1, int(mask_dim or dim)))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.text_proj = nn.Linear(text_dim, dim)
        self.norm_query = nn.LayerNorm(dim)
        self.norm_text = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_out = nn.LayerNorm(dim)
        self.decoder = nn.Sequential(
            nn.Conv2d(dim, decoder_dim, kernel_size=3, padding=1), nn.GELU(),
            nn.Conv2d(decoder_dim, self.stride * self.stride * 3, kernel_size=1),
            nn.PixelShuffle(self.stride))

    def sample_mask(self, batch: int, device=None) -> torch.Tensor:
        """(B, gh, gw) bool token mask of this head's ratio and mode."""
        if self.mask_mode == "random":
            return random_token_mask(batch, self.grid, self.mask_ratio, device)
        return block_token_mask(batch, self.grid, self.mask_ratio, device=device)

    def forward(self, patch_tokens: torch.Tensor, text_tokens: torch.Tensor,
                text_mask: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        batch, n, dim = patch_tokens.shape
        gh, gw = self.grid
        if n != gh * gw:
            raise ValueError(f"{n} patch tokens do not form the {gh} x {gw} grid of TG-MIM")
        query = self.norm_query(patch_tokens)
        text = self.norm_text(self.text_proj(text_tokens.to(patch_tokens.dtype)))
        padding = None if text_mask is None else ~text_mask.bool()
        attended, attn = self.cross_attn(query, text, text, key_padding_mask=padding,
                                         need_weights=True, average_attn_weights=True)
        x = self.norm_out(patch_tokens + attended)
        x = x.transpose(1, 2).reshape(batch, dim, gh, gw)
        return self.decoder(x), attn
