"""TransReID ViT backbone: overlapping patches, SIE and JPM, with timm-compatible parameter names.

Reference semantics (damo-cv/TransReID, ``model/backbones/vit_pytorch.py`` ``TransReID`` and
``model/make_model.py`` ``build_transformer_local``; He et al., "TransReID: Transformer-based Object
Re-Identification", ICCV 2021):

- Overlapping patch embedding: Conv2d(3, D, kernel 16, stride s); the token grid is
  ((H - 16) // s_h + 1) x ((W - 16) // s_w + 1), e.g. 256x128 at stride 12 -> 21x10,
  at stride 16 -> 16x8. The input size is fixed (the position embedding is built for one grid).
- Tokens: [CLS; patches] + pos_embed (+ sie_coe * S[r], see SIE), then pre-norm transformer
  blocks (LayerNorm eps 1e-6, exact GELU, qkv bias) and a final LayerNorm.
- SIE (side information embedding): one table S of C*V, C or V rows (trunc-normal std 0.02;
  C = camera_num, V = view_num, a side with 0 or 1 entries is off). Row index r = cam * V + view
  (both sides), cam (cameras only) or view (views only). The same vector is added to every token,
  in training and at test time.
- JPM (jigsaw patch module): the trunk runs ``blocks[:-1]``; the global branch b1 = (last block,
  final norm) gives the global CLS feature; a second copy b2 = (last block, final norm) is shared
  by the parts. The patch tokens (CLS dropped) are shifted so the sequence starts at patch
  ``shift_num`` (patches numbered from 1, as TransReID indexes them after the CLS token at 0):
  [p_s ... p_N, p_1 ... p_{s-1}]; shuffled with ``view(G, N/G).transpose`` (if N % G != 0, one
  copy of the second-to-last token is appended first); divided into ``divide_length`` parts of
  N // divide_length tokens (remainder dropped); each part is prefixed with the trunk's CLS token
  and run through b2; the part's CLS output is the local feature. ``rearrange=False`` skips the
  shift and shuffle.

Deliberate differences from TransReID (numerics are unchanged):

- Parameter names follow timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``,
  ``pos_embed``, ``blocks.{i}.norm1/.attn.qkv/.attn.proj/.norm2/.mlp.fc1/.mlp.fc2``, ``norm``), so a
  timm ViT/DeiT state dict loads by key. The SIE table keeps TransReID's name and shape
  (``sie_embed``, (rows, 1, D)).
- JPM structure: TransReID keeps all 12 blocks + norm in ``base`` (the last block and norm are
  never used when JPM is on, so DDP needs ``find_unused_parameters``) and adds deep copies ``b1``
  and ``b2``. Here b1 *is* ``blocks[-1]`` + ``norm`` (the trunk runs ``blocks[:-1]``), and b2 is the
  module ``b2`` (``b2.0`` block, ``b2.1`` LayerNorm, TransReID's key names). The function is the
  same (global = norm(blocks[-1](trunk)) = TransReID's b1 output) and every parameter receives a
  gradient.
  Key mapping from a TransReID JPM checkpoint: ``b1.0.* -> blocks.{L-1}.*``, ``b1.1.* -> norm.*``,
  ``b2.* -> b2.*``, ``base.X -> X`` (``base.blocks.{L-1}`` and ``base.norm`` are unused there and
  skipped). See ``vit_weights.checkpoint_filter_fn``.
- The JPM parts run through b2 as one batch of B * divide_length sequences instead of
  divide_length separate calls (same math: attention and LayerNorm act per sequence; stochastic
  depth draws an independent mask per sequence in both cases).
- Attention uses ``torch.nn.functional.scaled_dot_product_attention`` (TransReID computes the
  softmax explicitly); attention dropout is active only in training, as before.
- A camera/view id outside the SIE table raises ``ValueError`` instead of an index error (or a
  silent wrap with negative ids).
- ``shift_num`` must lie in [1, N] (TransReID's ``shift_num = 0`` would move the CLS token into the
  parts) and ``shuffle_groups`` must divide N or N + 1 (otherwise TransReID's reshape fails).
- ``drop_rate`` is used as in TransReID: dropout after the position embedding and after the
  attention projection and the MLP (timm splits it into pos/proj drop rates).

Presets: ``vit_tiny`` (D 192, 3 heads), ``vit_small`` (384, 6), ``vit_base`` (768, 12) and
``deit_tiny/small/base`` (the same architectures; only the weights differ): patch 16, 12 blocks,
MLP ratio 4, qkv bias. Note that TransReID's own ``vit_small_patch16_224_TransReID`` is the old
timm ViT-S (768-d, 8 blocks, MLP ratio 3, no qkv bias); it is not provided here.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from configs.validate import VIT_STEMS

IntPair = Union[int, Sequence[int]]

PATCH_SIZE = 16
PRESET_DEPTH = 12

#: name -> (embed_dim, num_heads); all presets: patch 16, 12 blocks, MLP ratio 4, qkv bias.
VIT_PRESETS: Dict[str, Tuple[int, int]] = {
    "vit_tiny": (192, 3),
    "vit_small": (384, 6),
    "vit_base": (768, 12),
    "deit_tiny": (192, 3),
    "deit_small": (384, 6),
    "deit_base": (768, 12),
}


def _pair(value: IntPair, name: str) -> Tuple[int, int]:
    if isinstance(value, int):
        pair = (value, value)
    else:
        pair = tuple(int(v) for v in value)
        if len(pair) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
    if min(pair) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair  # type: ignore[return-value]


def overlap_grid_size(img_size: IntPair, stride_size: IntPair,
                      patch_size: int = PATCH_SIZE) -> Tuple[int, int]:
    """Token grid of the overlapping patch embedding.

    Args:
        img_size: input (H, W) or one int for both.
        stride_size: convolution stride (s_h, s_w) or one int for both.
        patch_size: kernel size (16 for every preset).

    Returns:
        (rows, cols) = ((H - patch) // s_h + 1, (W - patch) // s_w + 1), as TransReID's
        ``PatchEmbed_overlap``. Example: 256x128 at stride 12 -> (21, 10).
    """
    (h, w), (sh, sw) = _pair(img_size, "img_size"), _pair(stride_size, "stride_size")
    if h < patch_size or w < patch_size:
        raise ValueError(f"img_size {h}x{w} is smaller than the patch size {patch_size}")
    return (h - patch_size) // sh + 1, (w - patch_size) // sw + 1


def shift_and_shuffle_patches(patches: torch.Tensor, shift_num: int, groups: int) -> torch.Tensor:
    """JPM shift + patch shuffle of the patch tokens (TransReID ``shuffle_unit``, CLS excluded).

    Shift: with patches numbered 1..N, the sequence is rotated to start at patch ``shift_num``:
    [p_s, ..., p_N, p_1, ..., p_{s-1}] (TransReID: ``cat(features[:, s:], features[:, 1:s])`` on
    the sequence with CLS at index 0). Shuffle: if N % groups != 0, one copy of the second-to-last
    token of the shifted sequence is appended; then ``view(groups, M / groups)``, transpose and
    flatten.

    Args:
        patches: (B, N, D) patch tokens without the CLS token.
        shift_num: 1 <= shift_num <= N (1 = no rotation).
        groups: shuffle groups G; N or N + 1 must be divisible by G.

    Returns:
        (B, M, D) with M = N, or N + 1 when N % G != 0. Example (N=10, s=3, G=2, 0-based indices):
        [2, 7, 3, 8, 4, 9, 5, 0, 6, 1].
    """
    batch, num, dim = patches.shape
    if not 1 <= shift_num <= num:
        raise ValueError(f"JPM shift_num must be in [1, {num}] (patches are numbered from 1), "
                         f"got {shift_num}")
    shifted = torch.cat([patches[:, shift_num - 1:], patches[:, :shift_num - 1]], dim=1)
    if num % groups != 0:
        shifted = torch.cat([shifted, shifted[:, -2:-1]], dim=1)
    total = shifted.shape[1]
    if total % groups != 0:
        raise ValueError(f"JPM shuffle_groups {groups} divides neither N={num} nor N+1")
    shuffled = shifted.view(batch, groups, total // groups, dim).transpose(1, 2)
    return shuffled.reshape(batch, total, dim)


class OverlapPatchEmbed(nn.Module):
    """Conv2d patch embedding with stride <= kernel (overlapping patches), flattened to tokens.

    Args:
        img_size: fixed input (H, W).
        stride_size: (s_h, s_w).
        in_chans: input channels.
        embed_dim: token dimension D.
        patch_size: kernel size.
    """

    def __init__(self, img_size: IntPair, stride_size: IntPair, in_chans: int = 3,
                 embed_dim: int = 768, patch_size: int = PATCH_SIZE):
        super().__init__()
        self.img_size = _pair(img_size, "img_size")
        self.stride_size = _pair(stride_size, "stride_size")
        self.grid_size = overlap_grid_size(self.img_size, self.stride_size, patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=self.stride_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D), tokens in row-major grid order."""
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"expected images of shape (B, C, {self.img_size[0]}, "
                             f"{self.img_size[1]}) (the model's img_size), got {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)


class ConvStem(nn.Module):
    """Convolutional stem in place of the 16x16 patch projection (Xiao et al., "Early
    Convolutions Help Transformers See Better", NeurIPS 2021, the ViT_C stem): four 3x3
    stride-2 convolutions, each followed by BatchNorm and ReLU, with D/8, D/4, D/2, D channels,
    then a 1x1 convolution to D (``proj``); total stride 16, so the token grid is (H/16, W/16),
    the same as non-overlapping 16x16 patches. The paper removes one transformer block to keep
    the FLOPs; here the depth stays what MODEL.VIT_DEPTH says. Random init only (no released
    ViT checkpoint has this stem). Same interface as :class:`OverlapPatchEmbed`. A token's
    receptive field reaches into its neighbours' patches (the 3x3 convolutions overlap), so
    masked image modelling (TG-MIM) sees a little of a masked patch through its neighbours,
    unlike with the patch stem.

    Args:
        img_size: fixed input (H, W), both divisible by 16.
        in_chans: input channels.
        embed_dim: token dimension D (divisible by 8).
    """

    def __init__(self, img_size: IntPair, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.img_size = _pair(img_size, "img_size")
        if self.img_size[0] % PATCH_SIZE or self.img_size[1] % PATCH_SIZE:
            raise ValueError(f"the conv stem needs an input size divisible by {PATCH_SIZE}, "
                             f"got {self.img_size[0]}x{self.img_size[1]} "
                             "(INPUT.SIZE_TRAIN / SIZE_TEST)")
        if embed_dim % 8:
            raise ValueError(f"the conv stem needs an embedding width divisible by 8, got "
                             f"{embed_dim}")
        self.stride_size = (PATCH_SIZE, PATCH_SIZE)
        self.grid_size = (self.img_size[0] // PATCH_SIZE, self.img_size[1] // PATCH_SIZE)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        layers, width = [], in_chans
        for out in (embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim):
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            width = out
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(width, embed_dim, kernel_size=1)
        for module in self.convs:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D), tokens in row-major grid order."""
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"expected images of shape (B, C, {self.img_size[0]}, "
                             f"{self.img_size[1]}) (the model's img_size), got {tuple(x.shape)}")
        return self.proj(self.convs(x)).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention (timm names ``qkv`` / ``proj``) via PyTorch SDPA.

    Args:
        dim: token dimension.
        num_heads: heads; head dim = dim // num_heads, scale head_dim ** -0.5.
        qkv_bias: bias in the qkv projection.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, attn_drop={self.attn_drop}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, num, dim = x.shape
        qkv = self.qkv(x).reshape(batch, num, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(batch, num, dim)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> dropout -> fc2 -> dropout (timm ``Mlp`` names)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: zero a whole sample's residual branch with probability ``p`` (training),
    scaling kept samples by 1 / (1 - p)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)) (timm ``Block``).

    Args:
        dim: token dimension.
        num_heads: attention heads.
        mlp_ratio: MLP hidden dim = int(dim * mlp_ratio).
        qkv_bias: bias in the qkv projection.
        drop: dropout after attention projection and MLP layers.
        attn_drop: attention-weight dropout.
        drop_path: stochastic depth rate of both residual branches.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class TransReIDBackbone(nn.Module):
    """TransReID ViT (overlapping patches, SIE, optional JPM); see the module docstring.

    Args:
        img_size: fixed input (H, W) (or one int).
        stride_size: patch-embedding stride (s_h, s_w) (or one int); 16 = no overlap.
        embed_dim: token dimension D.
        depth: number of transformer blocks built (>= 1).
        num_heads: attention heads.
        mlp_ratio: MLP expansion.
        qkv_bias: bias in the qkv projections.
        drop_rate: dropout after pos embedding, attention projection and MLP layers.
        attn_drop_rate: attention-weight dropout.
        drop_path_rate: stochastic depth, linear from 0 (first block) to this (last built block).
        camera_num: SIE camera count C (0 or 1 = off).
        view_num: SIE view count V (0 or 1 = off).
        sie_coe: SIE weight lambda.
        jpm: build the jigsaw patch module (local features).
        shift_num: JPM shift, patch number (from 1) the shifted sequence starts with.
        shuffle_groups: JPM shuffle groups G.
        divide_length: number of JPM parts.
        rearrange: JPM shift + shuffle on (False: contiguous parts).
        in_chans: input channels.
        stem: 'patch' (the 16x16 patch projection, TransReID) or 'conv' (:class:`ConvStem`).

    Attributes:
        feat_dim: D. num_patches: N. grid_size: (rows, cols). sie_embed: the SIE table
        (rows, 1, D) or None. b2: JPM local branch ``Sequential(Block, LayerNorm)`` (JPM only).

    Example:
        >>> m = TransReIDBackbone((256, 128), 12, embed_dim=192, depth=2, num_heads=3)
        >>> m(torch.randn(2, 3, 256, 128))['patch_tokens'].shape
        torch.Size([2, 210, 192])
    """

    def __init__(self, img_size: IntPair = (256, 128), stride_size: IntPair = 16,
                 embed_dim: int = 768, depth: int = PRESET_DEPTH, num_heads: int = 12,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, camera_num: int = 0,
                 view_num: int = 0, sie_coe: float = 1.5, jpm: bool = False, shift_num: int = 5,
                 shuffle_groups: int = 2, divide_length: int = 4, rearrange: bool = True,
                 in_chans: int = 3, stem: str = "patch"):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.feat_dim = self.embed_dim = embed_dim
        if stem == "patch":
            self.patch_embed = OverlapPatchEmbed(img_size, stride_size, in_chans, embed_dim)
        elif stem == "conv":
            if _pair(stride_size, "stride_size") != (PATCH_SIZE, PATCH_SIZE):
                raise ValueError(f"the conv stem has stride {PATCH_SIZE}; MODEL.STRIDE_SIZE "
                                 f"{list(_pair(stride_size, 'stride_size'))} (overlapping patches) "
                                 f"applies to the patch stem only")
            self.patch_embed = ConvStem(img_size, in_chans, embed_dim)
        else:
            raise ValueError(f"stem must be one of {list(VIT_STEMS)}, got {stem!r}")
        self.img_size = self.patch_embed.img_size
        self.stride_size = self.patch_embed.stride_size
        self.grid_size = self.patch_embed.grid_size
        self.num_patches = self.patch_embed.num_patches

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dim))

        self.camera_num, self.view_num = int(camera_num), int(view_num)
        if camera_num < 0 or view_num < 0:
            raise ValueError(f"camera_num / view_num must be >= 0, got {camera_num} / {view_num}")
        self.sie_coe = float(sie_coe)
        self.use_sie_camera = self.camera_num > 1
        self.use_sie_view = self.view_num > 1
        rows = (self.camera_num if self.use_sie_camera else 1) * \
               (self.view_num if self.use_sie_view else 1)
        self.sie_embed = (nn.Parameter(torch.zeros(rows, 1, embed_dim))
                          if (self.use_sie_camera or self.use_sie_view) else None)
        self.pos_drop = nn.Dropout(drop_rate)

        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear 0 -> rate
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i])
            for i in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

        self.jpm = bool(jpm)
        self.shift_num, self.shuffle_groups = int(shift_num), int(shuffle_groups)
        self.divide_length, self.rearrange = int(divide_length), bool(rearrange)
        if self.jpm:
            self._check_jpm_settings()
            # TransReID: b2 = deepcopy(last block, final norm); re-copied from loaded weights
            # by vit_weights.checkpoint_filter_fn.
            self.b2 = nn.Sequential(copy.deepcopy(self.blocks[-1]), copy.deepcopy(self.norm))
        else:
            self.b2 = None

    def _init_weights(self) -> None:
        """TransReID init: trunc-normal 0.02 for tokens, SIE and Linear weights, zero biases,
        LayerNorm (1, 0), patch conv N(0, sqrt(2 / (k * k * out_channels)))."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.sie_embed is not None:
            nn.init.trunc_normal_(self.sie_embed, std=0.02)
        conv = self.patch_embed.proj   # the conv stem's 3x3 layers init themselves (ConvStem)
        fan = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
        nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _check_jpm_settings(self) -> None:
        num = self.num_patches
        if self.divide_length < 1 or num // self.divide_length < 1:
            raise ValueError(f"JPM divide_length {self.divide_length} must be in [1, {num}] "
                             f"(N = {num} patches)")
        if self.rearrange:
            if not 1 <= self.shift_num <= num:
                raise ValueError(f"JPM shift_num must be in [1, {num}] (patches are numbered "
                                 f"from 1), got {self.shift_num}")
            if self.shuffle_groups < 1 or (num % self.shuffle_groups and
                                           (num + 1) % self.shuffle_groups):
                raise ValueError(f"JPM shuffle_groups {self.shuffle_groups} divides neither "
                                 f"N={num} nor N+1")

    # ------------------------------------------------------------------ embedding / SIE
    @staticmethod
    def _side_ids(ids, size: int, batch: int, what: str, arg: str, device) -> torch.Tensor:
        if ids is None:
            raise ValueError(f"the model was built with SIE for {size} {what}s; pass {arg} "
                             f"(one id per image)")
        ids = torch.as_tensor(ids, device=device).long().reshape(-1)
        if ids.numel() != batch:
            raise ValueError(f"got {ids.numel()} {what} ids for a batch of {batch} images")
        bad = (ids < 0) | (ids >= size)
        if bool(bad.any()):
            first = int(ids[bad][0])
            raise ValueError(f"{what} id {first} is outside the SIE table of {size} rows: the "
                             f"model was built for {size} {what}s (ids 0..{size - 1}); build it "
                             f"with the dataset's {what} count")
        return ids

    def sie_rows(self, camids, viewids, batch: int, device=None) -> Optional[torch.Tensor]:
        """SIE row index per image (None when SIE is off): cam * V + view, cam, or view.

        Args:
            camids: (B,) camera ids (needed when camera SIE is on).
            viewids: (B,) view ids (needed when view SIE is on).
            batch: B.
            device: device of the returned index.

        Returns:
            (B,) long tensor, or None.

        Raises:
            ValueError: an id is missing, negative or >= the table's count for that side.
        """
        if self.sie_embed is None:
            return None
        device = device if device is not None else self.sie_embed.device
        rows = None
        if self.use_sie_camera:
            rows = self._side_ids(camids, self.camera_num, batch, "camera", "camids", device)
        if self.use_sie_view:
            views = self._side_ids(viewids, self.view_num, batch, "view", "viewids", device)
            rows = views if rows is None else rows * self.view_num + views
        return rows

    def embed_tokens(self, x: torch.Tensor, camids=None, viewids=None, token_mask=None,
                     mask_token=None) -> torch.Tensor:
        """Patch embedding, [CLS; patches] + pos_embed (+ sie_coe * S[r]), dropout.

        Masked image modelling (SimMIM / TG-MIM): with ``token_mask`` (B, N) bool, the patch
        embeddings of masked tokens are replaced by ``mask_token`` (1, 1, D) before the CLS token
        and the position / SIE embeddings are added.

        Returns:
            (B, 1 + N, D) tokens entering the first block.
        """
        tokens = self.patch_embed(x)
        batch = tokens.shape[0]
        if token_mask is not None:
            if mask_token is None or token_mask.shape != tokens.shape[:2]:
                raise ValueError(f"token_mask must be (B, N) = {tuple(tokens.shape[:2])} and come "
                                 "with a mask_token")
            tokens = torch.where(token_mask.unsqueeze(-1), mask_token.to(tokens.dtype), tokens)
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        tokens = tokens + self.pos_embed
        rows = self.sie_rows(camids, viewids, batch, tokens.device)
        if rows is not None:
            tokens = tokens + self.sie_coe * self.sie_embed[rows]
        return self.pos_drop(tokens)

    # ------------------------------------------------------------------ forwards
    def forward_trunk(self, x: torch.Tensor, camids=None, viewids=None, token_mask=None,
                      mask_token=None) -> torch.Tensor:
        """Tokens after ``blocks[:-1]`` (TransReID ``local_feature=True`` output), (B, 1 + N, D).
        ``token_mask`` / ``mask_token``: see ``embed_tokens``."""
        tokens = self.embed_tokens(x, camids, viewids, token_mask, mask_token)
        for block in self.blocks[:-1]:
            tokens = block(tokens)
        return tokens

    def forward_features(self, x: torch.Tensor, camids=None, viewids=None, token_mask=None,
                         mask_token=None) -> torch.Tensor:
        """All tokens after every block and the final norm, (B, 1 + N, D), as timm's
        ``forward_features``. With JPM on this is the global branch b1's output.
        ``token_mask`` / ``mask_token``: masked image modelling (see ``embed_tokens``)."""
        trunk = self.forward_trunk(x, camids, viewids, token_mask, mask_token)
        return self.norm(self.blocks[-1](trunk))

    def forward_local(self, trunk_tokens: torch.Tensor) -> List[torch.Tensor]:
        """JPM local features from trunk tokens (see module docstring).

        Args:
            trunk_tokens: (B, 1 + N, D) output of ``forward_trunk``.

        Returns:
            ``divide_length`` tensors (B, D): the part CLS outputs of b2.
        """
        if self.b2 is None:
            raise RuntimeError("forward_local needs a backbone built with jpm=True")
        batch, _, dim = trunk_tokens.shape
        cls, patches = trunk_tokens[:, :1], trunk_tokens[:, 1:]
        part_len = self.num_patches // self.divide_length
        if self.rearrange:
            patches = shift_and_shuffle_patches(patches, self.shift_num, self.shuffle_groups)
        parts = patches[:, :part_len * self.divide_length].reshape(
            batch, self.divide_length, part_len, dim)
        cls = cls.unsqueeze(1).expand(-1, self.divide_length, -1, -1)
        seqs = torch.cat([cls, parts], dim=2).reshape(batch * self.divide_length, 1 + part_len, dim)
        part_cls = self.b2(seqs)[:, 0].reshape(batch, self.divide_length, dim)
        return list(part_cls.unbind(1))

    def forward(self, x: torch.Tensor, camids=None, viewids=None) -> Dict[str, object]:
        """Backbone outputs.

        Args:
            x: (B, 3, H, W) images of the model's img_size.
            camids: (B,) camera ids (required with camera SIE; ignored otherwise).
            viewids: (B,) view ids (required with view SIE; ignored otherwise).

        Returns:
            dict: 'feat' (B, D) global CLS feature after the final norm (b1 with JPM);
            'patch_tokens' (B, N, D) the final patch tokens (no CLS); 'local_feats' (JPM only)
            list of ``divide_length`` (B, D) part features.
        """
        trunk = self.forward_trunk(x, camids, viewids)
        final = self.norm(self.blocks[-1](trunk))
        out: Dict[str, object] = {"feat": final[:, 0], "patch_tokens": final[:, 1:]}
        if self.jpm:
            out["local_feats"] = self.forward_local(trunk)
        return out


def build_transreid_backbone(name: str, img_size: IntPair = (256, 128), stride_size: IntPair = 16,
                             depth: int = 0, mlp_ratio: float = 4.0, drop_rate: float = 0.0,
                             attn_drop_rate: float = 0.0,
                             drop_path_rate: float = 0.1, camera_num: int = 0, view_num: int = 0,
                             sie_coe: float = 3.0, jpm: bool = False, shift_num: int = 5,
                             shuffle_groups: int = 2, divide_length: int = 4,
                             rearrange: bool = True, stem: str = "patch") -> TransReIDBackbone:
    """Build a preset TransReID backbone (random init; load weights with
    ``vit_weights.load_vit_pretrained``).

    Args:
        name: one of ``VIT_PRESETS`` (vit_/deit_ tiny, small, base).
        img_size: input (H, W).
        stride_size: patch stride (MODEL.STRIDE_SIZE).
        depth: blocks to build; 0 = all 12 of the preset, k > 0 = the first k.
        mlp_ratio: MLP hidden width / embedding width (4 in every preset and released
            checkpoint; MODEL.VIT_MLP_RATIO).
        drop_rate, attn_drop_rate, drop_path_rate: regularisation (see ``TransReIDBackbone``).
        camera_num, view_num: SIE table sides (0 or 1 = off).
        sie_coe: SIE lambda (MODEL.SIE_COE).
        jpm, shift_num, shuffle_groups, divide_length, rearrange: JPM settings.
        stem: 'patch' or 'conv' (MODEL.VIT_STEM; see ``TransReIDBackbone``).

    Returns:
        TransReIDBackbone.

    Raises:
        ValueError: unknown preset or an invalid depth / JPM setting.
    """
    if name not in VIT_PRESETS:
        raise ValueError(f"unknown ViT preset '{name}'; choose one of {sorted(VIT_PRESETS)}")
    if depth < 0 or depth > PRESET_DEPTH:
        raise ValueError(f"depth must be 0 (all {PRESET_DEPTH} blocks) or 1..{PRESET_DEPTH}, "
                         f"got {depth}")
    embed_dim, num_heads = VIT_PRESETS[name]
    return TransReIDBackbone(
        img_size=img_size, stride_size=stride_size, embed_dim=embed_dim,
        depth=depth or PRESET_DEPTH, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
        drop_rate=drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
        camera_num=camera_num, view_num=view_num, sie_coe=sie_coe, jpm=jpm, shift_num=shift_num,
        shuffle_groups=shuffle_groups, divide_length=divide_length, rearrange=rearrange,
        stem=stem)
