"""The head of IRRA's implicit relation reasoning (IRR): cross-modal masked-token prediction.

Reference: IRRA (Jiang & Ye, CVPR 2023), ``anosorae/IRRA`` ``model/build.py`` (``cross_former``
and ``mlm_head``). For a caption with some tokens masked (``datasets/mlm.py``), the text tower
gives the masked caption's token features T (B, L, D); the image tower gives the image's token
features V (B, 1 + N, D). Then

    x = CrossAttn(Q = LN_t(T), K = V_ = LN_i(V), V = V_)      (HEADS heads, width D, no residual)
    x = Transformer(x)                                         (LAYERS pre-norm CLIP blocks,
                                                                QuickGELU MLP of 4 D, bidirectional)
    x = LN_post(x)
    logits = Linear(D, vocab) (LN(QuickGELU(Linear(D, D)(x))))       (B, L, vocab)

and the loss is the cross-entropy of ``logits`` at the masked positions (``losses/mlm.py``).
IRRA: D = 512, heads D / 64 = 8, 4 layers, vocabulary 49408; initialisation as IRRA (attention
in-projections N(0, D^-1/2), output projections and the vocabulary layer N(0, D^-1/2 (2
LAYERS)^-1/2), MLP inputs and the dense layer N(0, (2 D)^-1/2); biases and LayerNorms keep
PyTorch's defaults, as IRRA leaves them).

The image tokens V are the image tower's global feature followed by its patch tokens
(``[img_feat; img_tokens]``, both projected to D): for the open_clip towers that is exactly
IRRA's ``image_feats`` (every token of CLIP's visual transformer after ``ln_post``, @ proj, CLS
first); for hf_siglip the global feature is its attention-pooling output. As in IRRA, no
attention mask is used (padding positions of the caption are queries too; their labels are 0).

Training-only: the text-to-image evaluation never calls it, ``transformer_<epoch>.pth`` leaves
it out (``model.weights.TRAINING_ONLY_PREFIXES``) and test.py loads a checkpoint with or without
it.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), CLIP's (and IRRA's) activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualBlock(nn.Module):
    """CLIP's pre-norm transformer block: x + Attn(LN(x)); x + MLP(LN(x)), MLP = Linear(D, 4 D)
    -> QuickGELU -> Linear(4 D, D); full (bidirectional) self-attention."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.c_fc = nn.Linear(width, 4 * width)
        self.act = QuickGELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.c_proj(self.act(self.c_fc(self.ln_2(x))))


class IRRHead(nn.Module):
    """IRRA's cross-modal masked-token predictor (module docstring).

    Args:
        width: D, the token features' dimension (text and image).
        vocab_size: the text tower's vocabulary (the logits' last dimension).
        heads: attention heads of the cross-attention and of every block (must divide D).
        layers: transformer blocks after the cross-attention (IRRA 4).

    Example:
        >>> head = IRRHead(512, 49408, heads=8, layers=4)
        >>> logits = head(txt_tokens, image_tokens)   # (B, L, D), (B, 1 + N, D) -> (B, L, 49408)
    """

    def __init__(self, width: int, vocab_size: int, heads: int = 8, layers: int = 4):
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"LOSS.MLM.HEADS {heads} must divide the token width {width}")
        self.width, self.vocab_size, self.heads, self.layers = width, vocab_size, heads, layers
        self.ln_pre_t = nn.LayerNorm(width)
        self.ln_pre_i = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.blocks = nn.ModuleList(ResidualBlock(width, heads) for _ in range(layers))
        self.ln_post = nn.LayerNorm(width)
        self.dense = nn.Linear(width, width)
        self.act = QuickGELU()
        self.ln = nn.LayerNorm(width)
        self.fc = nn.Linear(width, vocab_size)
        self._init_weights()

    def _init_weights(self) -> None:
        attn_std = self.width ** -0.5
        proj_std = attn_std * (2 * max(self.layers, 1)) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for attn in [self.cross_attn] + [b.attn for b in self.blocks]:
            nn.init.normal_(attn.in_proj_weight, std=attn_std)
            nn.init.normal_(attn.out_proj.weight, std=proj_std)
        for block in self.blocks:
            nn.init.normal_(block.c_fc.weight, std=fc_std)
            nn.init.normal_(block.c_proj.weight, std=proj_std)
        nn.init.normal_(self.dense.weight, std=fc_std)
        nn.init.normal_(self.fc.weight, std=proj_std)

    def forward(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits (B, L, vocab) of the masked caption's tokens (B, L, D), attending to
        the image's tokens (B, M, D)."""
        if text_tokens.shape[-1] != self.width or image_tokens.shape[-1] != self.width:
            raise ValueError(f"IRR head of width {self.width}: text tokens "
                             f"{tuple(text_tokens.shape)}, image tokens "
                             f"{tuple(image_tokens.shape)}")
        q = self.ln_pre_t(text_tokens)
        kv = self.ln_pre_i(image_tokens)
        x = self.cross_attn(q, kv, kv, need_weights=False)[0]
        for block in self.blocks:
            x = block(x)
        x = self.ln_post(x)
        return self.fc(self.ln(self.act(self.dense(x))))
