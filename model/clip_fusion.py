"""CLIP semantic fusion (Model B, MODEL.USE_CLIP): a CLIP image tower's feature fused into the
TransReID features before the BNNeck.

Reference semantics: REFERENCES.md section 3.4 (Model B ``model/make_model.py``, JPM model).
With g the backbone's global feature (B, D), f_k its JPM local features and c the CLIP feature
(B, C) of the same image:

- ``open_clip`` (MODEL.CLIP_IMPL): a frozen open_clip image tower (CLIP_BACKBONE, CLIP_PRETRAIN);
  c = its pooled, projected output. CLIP_FUSION

  * 'minimal': g' = Linear([g; c] -> D); the local features are untouched.
  * 'quickwin': a = sigmoid(MLP([LN(g); LN(c)])) (one scalar gate per image),
    g' = Linear([(1 - a) LN(g); a LN(c)] -> D); one such head for the global feature and a
    second one, shared by every JPM part, for f_k' (same c). Without JPM only g is fused.

- ``hf``: a Hugging Face ``CLIPVisionModel`` (CLIP_HF_ID, e.g. TinyCLIP), trained at
  BASE_LR * CLIP_LR_SCALE when CLIP_FINETUNE (else frozen); t = pooler_output (the
  post-LayerNorm CLS token; the CLS token if a model has no pooler). Global feature only:
  g' = Linear([g; t] -> D) + (CLIP_USE_SEM_REFINE ? Linear(AFEM(t) or t -> D) : 0), with
  AFEM(T) = T + W_g * f(T), f = Linear -> BatchNorm1d -> ReLU, W_g one learnable scalar per
  channel group (32 groups of C / 32 channels, init N(0, 1)). CLIP_FUSION is not used (as in
  Model B's code); a log line says so when it is set to 'quickwin'.

- Tower input: the ReID tensor x = (p - m_reid) / s_reid (INPUT.PIXEL_MEAN / STD) is mapped to
  CLIP's normalisation, (p - m_clip) / s_clip = x * s_reid / s_clip + (m_reid - m_clip) / s_clip
  (OpenAI CLIP mean / std, taken from the tower's own package), then resized to CLIP_INPUT_SIZE
  (bicubic for open_clip, bilinear for hf, as Model B; ``F.interpolate``, no antialiasing).
  When CLIP_INPUT_SIZE differs from the tower's native size its position-embedding grid is
  resized bicubically once at build time (``utils.weights_io.resize_pos_embed``).

The fused g' replaces the backbone's pre-BNNeck feature, so the BNNeck, the classifier and every
metric loss see it; at test time the retrieval feature is built from it too.

Deliberate differences from Model B:

- CLIP_INPUT_SIZE applies to both implementations (Model B resizes to 224 for open_clip) and the
  open_clip position embedding is resized as well when it differs from the native size. A
  non-square CLIP_INPUT_SIZE works with open_clip; HF's ``CLIPVisionEmbeddings`` only accepts
  square inputs, so 'hf' raises a clear error for it.
- The tower lives under ``clip_fusion.tower`` (Model B names the HF tower ``clip_model``); its LR
  scale is reported by ``ReIDModel.lr_scales()`` and merged into the optimiser's groups.
- The width of quickwin's gate MLP is not given by the reference: here Linear([D + C] -> D / 4)
  -> ReLU -> Linear(-> 1).
- AFEM only feeds the semantic-refinement term, so with CLIP_USE_SEM_REFINE False it is not built
  (logged) instead of being a module without gradients.
- MODEL.USE_CLIP defaults to False (Model B: True).
- CLIP_TINY builds a tiny random-init tower of the same family (width 64, 2 layers, 2 heads,
  patch 16, native size 224) for tests and SynthPedes; with open_clip, a CLIP_PRETRAIN weight
  file is still loaded into it (a pretrained tag is not used).
"""
from __future__ import annotations

import copy
import logging
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from configs.validate import CLIP_FUSIONS, CLIP_IMPLS
from utils.packages import import_open_clip
from utils.weights_io import LoadReport, read_weights, resize_pos_embed, unwrap

logger = logging.getLogger("phasereid")

#: AFEM's number of channel groups (one learnable scale each).
AFEM_GROUPS = 32
#: The tiny towers of CLIP_TINY (tests / SynthPedes): width 64, 2 layers, 2 heads, patch 16.
TINY_WIDTH, TINY_LAYERS, TINY_HEADS, TINY_PATCH, TINY_NATIVE_SIZE = 64, 2, 2, 16, 224
#: open_clip.create_model overrides of the tiny open_clip CLIP (the text tower is tiny too; only
#: ``.visual`` is kept). A full tiny model's state dict saved with torch.save loads back through
#: MODEL.CLIP_PRETRAIN.
OPEN_CLIP_TINY_KWARGS = {
    "embed_dim": TINY_WIDTH,
    "vision_cfg": {"layers": TINY_LAYERS, "width": TINY_WIDTH,
                   "head_width": TINY_WIDTH // TINY_HEADS, "patch_size": TINY_PATCH,
                   "image_size": TINY_NATIVE_SIZE},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": TINY_WIDTH,
                 "heads": TINY_HEADS, "layers": TINY_LAYERS},
}
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
#: CLIP towers resize their position-embedding grid bicubically, keeping the CLS row (as HF's
#: ``interpolate_pos_encoding``; align_corners False, no antialiasing)
_POS_EMBED_MODE = "bicubic"


# --------------------------------------------------------------------------------------------
# input conversion and position embeddings
# --------------------------------------------------------------------------------------------
class ClipInput(nn.Module):
    """ReID-normalised image -> CLIP-normalised image at the tower's input size.

    out = resize(x * s_reid / s_clip + (m_reid - m_clip) / s_clip, size, mode): undoing the ReID
    normalisation and applying CLIP's in one affine map (per channel). Resizing is skipped when
    the image already has ``size``. The buffers are not saved in checkpoints (they follow from
    the config).
    """

    def __init__(self, reid_mean: Sequence[float], reid_std: Sequence[float],
                 clip_mean: Sequence[float], clip_std: Sequence[float], size: Tuple[int, int],
                 mode: str):
        super().__init__()
        reid_mean, reid_std, clip_mean, clip_std = (
            torch.tensor([float(v) for v in t]).view(1, 3, 1, 1)
            for t in (reid_mean, reid_std, clip_mean, clip_std))
        self.register_buffer("scale", reid_std / clip_std, persistent=False)
        self.register_buffer("shift", (reid_mean - clip_mean) / clip_std, persistent=False)
        self.size = tuple(int(s) for s in size)
        self.mode = mode

    def extra_repr(self) -> str:
        return f"size={self.size}, mode={self.mode}"

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img * self.scale + self.shift
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode=self.mode, align_corners=False)
        return x


def _grid_of(size: Sequence[int], patch: Sequence[int], key: str) -> Tuple[int, int]:
    if size[0] < patch[0] or size[1] < patch[1]:
        raise ValueError(f"{key} {list(size)} is smaller than the CLIP tower's patch {list(patch)}")
    return size[0] // patch[0], size[1] // patch[1]


def resize_open_clip_pos_embed(visual: nn.Module, size: Sequence[int]) -> Optional[str]:
    """Resize an open_clip ``VisionTransformer``'s position embedding to input ``size`` (H, W)
    in place (``positional_embedding``, ``grid_size``, ``image_size``). Returns what was done,
    or None when the grid already fits."""
    old_grid = tuple(visual.grid_size)
    new_grid = _grid_of(size, tuple(visual.patch_size), "MODEL.CLIP_INPUT_SIZE")
    old_size = tuple(visual.image_size)
    visual.image_size = tuple(int(s) for s in size)
    if new_grid == old_grid:
        return None
    old = visual.positional_embedding
    new = resize_pos_embed(old.detach(), old_grid, new_grid, mode=_POS_EMBED_MODE)
    visual.positional_embedding = nn.Parameter(new, requires_grad=old.requires_grad)
    visual.grid_size = new_grid
    return f"position embedding resized from {old_size} (grid {old_grid}) to {tuple(size)} " \
           f"(grid {new_grid})"


def _hf_embeddings(model: nn.Module) -> nn.Module:
    """The ``CLIPVisionEmbeddings`` inside a HF CLIP vision model (its attribute path differs
    between transformers versions)."""
    for module in model.modules():
        if type(module).__name__ == "CLIPVisionEmbeddings":
            return module
    raise ValueError(f"{type(model).__name__} has no CLIPVisionEmbeddings module")


def _check_square(size: Sequence[int]) -> None:
    if size[0] != size[1]:
        raise ValueError(f"MODEL.CLIP_INPUT_SIZE {list(size)} is not square: HF "
                         "CLIPVisionEmbeddings accepts square inputs only (use CLIP_IMPL "
                         "'open_clip' for a non-square CLIP input)")


def resize_hf_pos_embed(model: nn.Module, size: Sequence[int]) -> Optional[str]:
    """Resize a HF ``CLIPVisionModel``'s position embedding to a square input ``size`` in place
    (``position_embedding``, ``position_ids``, ``image_size``, ``num_patches``,
    ``num_positions`` and ``config.image_size``). Returns what was done, or None."""
    _check_square(size)
    emb = _hf_embeddings(model)
    side, patch = int(size[0]), int(emb.patch_size)
    old_side = emb.image_size
    old_grid = (old_side // patch,) * 2
    new_grid = _grid_of((side, side), (patch, patch), "MODEL.CLIP_INPUT_SIZE")
    if new_grid == old_grid:
        emb.image_size = side
        model.config.image_size = side
        return None
    old = emb.position_embedding.weight
    new = resize_pos_embed(old.detach(), old_grid, new_grid, mode=_POS_EMBED_MODE)
    table = nn.Embedding(new.shape[0], new.shape[1]).to(device=old.device, dtype=old.dtype)
    with torch.no_grad():
        table.weight.copy_(new)
    table.weight.requires_grad_(old.requires_grad)
    emb.position_embedding = table
    emb.register_buffer("position_ids", torch.arange(new.shape[0], device=old.device)
                        .expand((1, -1)), persistent=False)
    emb.image_size = side
    emb.num_patches = new_grid[0] * new_grid[1]
    emb.num_positions = emb.num_patches + 1
    model.config.image_size = side
    return f"position embedding resized from {old_side}x{old_side} (grid {old_grid}) to " \
           f"{side}x{side} (grid {new_grid})"


# --------------------------------------------------------------------------------------------
# towers
# --------------------------------------------------------------------------------------------
class ClipTower(nn.Module):
    """A CLIP image tower returning one (B, out_dim) feature per image.

    ``frozen``: no parameter takes gradients, the forward runs without autograd and the tower
    stays in eval mode even when the model is put in training mode.
    """

    def __init__(self, net: nn.Module, out_dim: int, frozen: bool):
        super().__init__()
        self.net = net
        self.out_dim = int(out_dim)
        self.frozen = bool(frozen)
        if self.frozen:
            self.net.requires_grad_(False)
            self.net.eval()

    def train(self, mode: bool = True):
        return super().train(mode and not self.frozen)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                return self.features(x)
        return self.features(x)


class OpenClipTower(ClipTower):
    """open_clip ``VisionTransformer``: feature = its pooled output times ``proj``
    (``visual.output_dim``)."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, tuple) else out


class HFClipTower(ClipTower):
    """HF ``CLIPVisionModel``: feature = ``pooler_output`` (post-LayerNorm CLS), else the CLS
    token of ``last_hidden_state``."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith(_WEIGHT_SUFFIXES)


def fit_open_clip_pos_embed(state: Dict[str, torch.Tensor], visual: nn.Module,
                            source: str) -> Optional[str]:
    """Fit the ``positional_embedding`` of an open_clip image-tower state dict to ``visual``'s
    patch grid, in place (once, at load): a table of CLS + a square s x s grid of another size
    is resized to ``visual.grid_size`` (which may be non-square, e.g. 24 x 8 for 384 x 128 with
    patch 16; IRRA's recipe) by :func:`utils.weights_io.resize_pos_embed` with the CLIP
    convention (CLS row kept, bicubic). A table of the tower's own shape is left as it is.

    Returns what was done (for the load report), or None. Raises ValueError (naming ``source``)
    for a table that is neither the tower's shape nor CLS + a square grid.
    """
    pos = state.get("positional_embedding")
    own = visual.positional_embedding
    if pos is None or pos.shape == own.shape or pos.ndim != 2:
        return None
    side = math.isqrt(pos.shape[0] - 1)
    if side * side != pos.shape[0] - 1:
        raise ValueError(f"{source}: position embedding {tuple(pos.shape)} is not CLS + a square "
                         f"grid and not the tower's {tuple(own.shape)}; cannot resize it")
    state["positional_embedding"] = resize_pos_embed(pos, (side, side), tuple(visual.grid_size),
                                                     mode=_POS_EMBED_MODE)
    return f"position embedding resized from grid {(side, side)} to {tuple(visual.grid_size)}"


def load_open_clip_visual_file(visual: nn.Module, path: str) -> str:
    """Load a weight file into an open_clip ``VisionTransformer``, strictly.

    The file holds a full open_clip CLIP state dict (its ``visual.*`` keys are taken) or the image
    tower's own state dict, read by ``utils.weights_io.read_weights`` (.pt/.pth/.bin with
    ``weights_only``, or .safetensors; 'model' / 'state_dict' wrappers and 'module.' prefixes are
    removed). A square position-embedding grid of another size is resized to the tower's.
    Returns a one-line report.
    """
    raw, description = read_weights(path, key="MODEL.CLIP_PRETRAIN")
    state = unwrap(raw, LoadReport(source=description), key="MODEL.CLIP_PRETRAIN")
    if any(k.startswith("visual.") for k in state):
        state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        kind = "full CLIP model (visual.* keys)"
    else:
        kind = "image tower"
    resized = fit_open_clip_pos_embed(state, visual, f"MODEL.CLIP_PRETRAIN {path}")
    note = f"; {resized}" if resized else ""
    try:
        visual.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RuntimeError(f"MODEL.CLIP_PRETRAIN {path} does not fit the open_clip image tower "
                           f"of MODEL.CLIP_BACKBONE: {exc}") from None
    return f"loaded {len(state)} tensors from {path} ({kind}){note}"


def build_open_clip_tower(m) -> Tuple[OpenClipTower, str]:
    """The frozen open_clip image tower of cfg.MODEL ``m``, at CLIP_INPUT_SIZE. Returns the
    tower and a description for the build log."""
    open_clip = import_open_clip("MODEL.CLIP_IMPL 'open_clip'")
    pretrained = m.CLIP_PRETRAIN
    is_file = bool(pretrained) and os.path.isfile(pretrained)
    if pretrained and not is_file and _looks_like_path(pretrained):
        raise FileNotFoundError(f"MODEL.CLIP_PRETRAIN file not found: {pretrained}")
    kwargs = copy.deepcopy(OPEN_CLIP_TINY_KWARGS) if m.CLIP_TINY else {}
    tag = pretrained if (pretrained and not is_file and not m.CLIP_TINY) else None
    try:
        clip = open_clip.create_model(m.CLIP_BACKBONE, pretrained=tag, **kwargs)
    except RuntimeError as exc:
        raise RuntimeError(
            f"open_clip could not build MODEL.CLIP_BACKBONE '{m.CLIP_BACKBONE}' with "
            f"MODEL.CLIP_PRETRAIN '{pretrained}': {exc}\nWithout internet, download the weights "
            "once and set MODEL.CLIP_PRETRAIN to the local file, or use MODEL.CLIP_TINY True "
            "(a random-init test tower)") from exc
    visual = clip.visual
    del clip  # the text tower is not used
    if not hasattr(visual, "positional_embedding") or not hasattr(visual, "grid_size"):
        raise ValueError(f"MODEL.CLIP_BACKBONE '{m.CLIP_BACKBONE}' is not a ViT image tower "
                         "(open_clip VisionTransformer); CLIP fusion needs one")
    name = f"tiny {TINY_WIDTH}-wide, {TINY_LAYERS}-layer" if m.CLIP_TINY else m.CLIP_BACKBONE
    if is_file:
        source = load_open_clip_visual_file(visual, pretrained)
    elif tag:
        source = f"pretrained '{tag}'"
    else:
        source = "random init" + (f" (CLIP_PRETRAIN '{pretrained}' is a tag: not used by the "
                                  "tiny tower)" if pretrained else "")
    resized = resize_open_clip_pos_embed(visual, tuple(m.CLIP_INPUT_SIZE))
    tower = OpenClipTower(visual, visual.output_dim, frozen=True)
    desc = f"open_clip {name} image tower, {source}, frozen"
    return tower, desc + (f"; {resized}" if resized else "")


def build_hf_tower(m) -> Tuple[HFClipTower, str]:
    """The HF CLIP vision tower of cfg.MODEL ``m`` (trainable when CLIP_FINETUNE), at
    CLIP_INPUT_SIZE. Returns the tower and a description for the build log."""
    try:
        from transformers import CLIPVisionConfig, CLIPVisionModel
    except ImportError as exc:
        raise ImportError("MODEL.CLIP_IMPL 'hf' needs the transformers package: pip install "
                          "transformers") from exc
    size = tuple(m.CLIP_INPUT_SIZE)
    _check_square(size)  # before loading anything
    if m.CLIP_TINY:
        net = CLIPVisionModel(CLIPVisionConfig(
            hidden_size=TINY_WIDTH, intermediate_size=2 * TINY_WIDTH,
            num_hidden_layers=TINY_LAYERS, num_attention_heads=TINY_HEADS,
            image_size=TINY_NATIVE_SIZE, patch_size=TINY_PATCH))
        source = f"tiny {TINY_WIDTH}-wide, {TINY_LAYERS}-layer, random init"
    else:
        try:
            net = CLIPVisionModel.from_pretrained(m.CLIP_HF_ID)
        except (OSError, ValueError) as exc:
            raise OSError(
                f"MODEL.CLIP_HF_ID '{m.CLIP_HF_ID}' could not be loaded: {exc}\nWithout "
                "internet, download the model once (save_pretrained or huggingface-cli download) "
                "and set MODEL.CLIP_HF_ID to the local folder, or use MODEL.CLIP_TINY True "
                "(a random-init test tower)") from exc
        source = f"'{m.CLIP_HF_ID}'"
    net = net.float()
    resized = resize_hf_pos_embed(net, size)
    frozen = not m.CLIP_FINETUNE
    tower = HFClipTower(net, net.config.hidden_size, frozen=frozen)
    desc = (f"HF CLIPVisionModel {source}, "
            + ("frozen" if frozen else f"trained at BASE_LR x {m.CLIP_LR_SCALE}"))
    return tower, desc + (f"; {resized}" if resized else "")


# --------------------------------------------------------------------------------------------
# fusion heads
# --------------------------------------------------------------------------------------------
class MinimalFusion(nn.Module):
    """g' = Linear([g; c] -> D) (Model B 'minimal')."""

    def __init__(self, feat_dim: int, clip_dim: int):
        super().__init__()
        self.proj = nn.Linear(feat_dim + clip_dim, feat_dim)

    def forward(self, g: torch.Tensor, c: torch.Tensor):
        return self.proj(torch.cat([g, c.to(g.dtype)], dim=1)), None


class QuickwinFusion(nn.Module):
    """Gated fusion (Model B 'quickwin'): a = sigmoid(MLP([LN(g); LN(c)])) (B, 1),
    out = Linear([(1 - a) LN(g); a LN(c)] -> D); MLP = Linear(-> D / 4) -> ReLU -> Linear(-> 1).
    Returns (out, a)."""

    def __init__(self, feat_dim: int, clip_dim: int):
        super().__init__()
        self.norm_feat = nn.LayerNorm(feat_dim)
        self.norm_clip = nn.LayerNorm(clip_dim)
        hidden = max(feat_dim // 4, 1)
        self.gate = nn.Sequential(nn.Linear(feat_dim + clip_dim, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, 1))
        self.proj = nn.Linear(feat_dim + clip_dim, feat_dim)

    def forward(self, g: torch.Tensor, c: torch.Tensor):
        gn, cn = self.norm_feat(g), self.norm_clip(c.to(g.dtype))
        a = torch.sigmoid(self.gate(torch.cat([gn, cn], dim=1)))
        return self.proj(torch.cat([(1 - a) * gn, a * cn], dim=1)), a


class AFEM(nn.Module):
    """AFEM(T) = T + W_g * f(T), f = Linear(C, C) -> BatchNorm1d(C) -> ReLU; W_g: one learnable
    scalar per group of C / groups consecutive channels, init N(0, 1) (Model B)."""

    def __init__(self, dim: int, groups: int = AFEM_GROUPS):
        super().__init__()
        if dim % groups:
            raise ValueError(f"AFEM needs a CLIP feature width divisible by {groups} channel "
                             f"groups, got {dim} (MODEL.CLIP_USE_AFEM False to switch it off)")
        self.groups = groups
        self.f = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True))
        self.group_scale = nn.Parameter(torch.randn(groups))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        w = self.group_scale.repeat_interleave(t.shape[1] // self.groups)
        return t + w * self.f(t)


class SemanticFusion(nn.Module):
    """HF fusion (Model B): g' = Linear([g; t] -> D) + (refine ? Linear(AFEM(t) or t -> D) : 0).
    Returns (g', None)."""

    def __init__(self, feat_dim: int, clip_dim: int, sem_refine: bool, afem: bool):
        super().__init__()
        self.proj = nn.Linear(feat_dim + clip_dim, feat_dim)
        self.afem = AFEM(clip_dim) if (sem_refine and afem) else None
        self.refine = nn.Linear(clip_dim, feat_dim) if sem_refine else None

    def forward(self, g: torch.Tensor, t: torch.Tensor):
        t = t.to(g.dtype)
        out = self.proj(torch.cat([g, t], dim=1))
        if self.refine is not None:
            out = out + self.refine(self.afem(t) if self.afem is not None else t)
        return out, None


class ClipFusion(nn.Module):
    """CLIP tower + fusion heads, applied right after the backbone.

    Args:
        tower: a :class:`ClipTower` (``clip_fusion.tower`` in the model).
        preprocess: :class:`ClipInput` from the ReID image to the tower's input.
        global_head: fusion head of the global feature, ``head(g, c) -> (g', gate or None)``.
        local_head: one head shared by every JPM local feature (quickwin), or None.
        tower_lr_scale: LR scale the tower trains at (a trainable HF tower), or None.

    ``forward(img, feat, local_feats=None)`` returns a dict: 'feat' (B, D) fused global
    feature, 'clip_feat' (B, C) the tower's feature, 'clip_gate' (B, 1) quickwin's global gate,
    and 'local_feats' (the fused parts) when there is a local head.
    """

    def __init__(self, tower: ClipTower, preprocess: ClipInput, global_head: nn.Module,
                 local_head: Optional[nn.Module] = None, tower_lr_scale: Optional[float] = None):
        super().__init__()
        self.tower = tower
        self.preprocess = preprocess
        self.global_head = global_head
        self.local_head = local_head
        self.tower_lr_scale = tower_lr_scale

    def forward(self, img: torch.Tensor, feat: torch.Tensor,
                local_feats: Optional[List[torch.Tensor]] = None) -> Dict[str, object]:
        clip_feat = self.tower(self.preprocess(img))
        fused, gate = self.global_head(feat, clip_feat)
        out: Dict[str, object] = {"feat": fused, "clip_feat": clip_feat}
        if gate is not None:
            out["clip_gate"] = gate
        if self.local_head is not None and local_feats is not None:
            out["local_feats"] = [self.local_head(f, clip_feat)[0] for f in local_feats]
        return out


def build_clip_fusion(cfg, feat_dim: int, num_parts: int) -> ClipFusion:
    """The CLIP fusion of a config (MODEL.USE_CLIP True; see the module docstring).

    Args:
        cfg: the config (MODEL.CLIP_*, INPUT.PIXEL_MEAN / PIXEL_STD).
        feat_dim: D of the backbone's features.
        num_parts: JPM parts (0 = no JPM: quickwin fuses the global feature only).

    Raises:
        ValueError: unknown CLIP_IMPL / CLIP_FUSION, a bad CLIP_INPUT_SIZE or CLIP_LR_SCALE.
        ImportError: the implementation's package is missing.
        RuntimeError / OSError / FileNotFoundError: the tower's weights cannot be loaded.
    """
    m = cfg.MODEL
    impl, fusion = m.CLIP_IMPL, m.CLIP_FUSION
    if impl not in CLIP_IMPLS:
        raise ValueError(f"MODEL.CLIP_IMPL '{impl}' is not one of {list(CLIP_IMPLS)}")
    if fusion not in CLIP_FUSIONS:
        raise ValueError(f"MODEL.CLIP_FUSION '{fusion}' is not one of {list(CLIP_FUSIONS)}")
    size = tuple(m.CLIP_INPUT_SIZE)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"MODEL.CLIP_INPUT_SIZE {list(size)} is not a positive (height, width)")
    tower_lr_scale = None
    if impl == "open_clip":
        tower, desc = build_open_clip_tower(m)   # first: a missing package is reported there
        from open_clip.constants import OPENAI_DATASET_MEAN as mean, OPENAI_DATASET_STD as std
        mode = "bicubic"
        if fusion == "minimal":
            global_head, local_head = MinimalFusion(feat_dim, tower.out_dim), None
            how = "minimal: g' = Linear([g; c]); JPM parts untouched"
        else:
            global_head = QuickwinFusion(feat_dim, tower.out_dim)
            local_head = QuickwinFusion(feat_dim, tower.out_dim) if num_parts else None
            how = ("quickwin: gated LN fusion of the global feature"
                   + (f" and (one shared head) the {num_parts} JPM parts" if num_parts else
                      " only (no JPM parts: MODEL.JPM is off)"))
    else:
        if m.CLIP_FINETUNE and m.CLIP_LR_SCALE <= 0:
            raise ValueError(f"MODEL.CLIP_LR_SCALE {m.CLIP_LR_SCALE} must be > 0 for a trained "
                             "tower; use MODEL.CLIP_FINETUNE False to freeze it")
        tower, desc = build_hf_tower(m)
        from transformers.utils.constants import OPENAI_CLIP_MEAN as mean, OPENAI_CLIP_STD as std
        mode = "bilinear"
        if fusion == "quickwin":
            logger.info("MODEL.CLIP_FUSION 'quickwin' is not used with CLIP_IMPL 'hf': the HF "
                        "tower is fused into the global feature only (Linear([g; t]) + semantic "
                        "refinement, as Model B's code), the JPM parts are untouched; Model B's "
                        "'TinyCLIP-quickwin' recipe name notwithstanding")
        if m.CLIP_USE_AFEM and not m.CLIP_USE_SEM_REFINE:
            logger.info("MODEL.CLIP_USE_AFEM has no effect without CLIP_USE_SEM_REFINE (AFEM only "
                        "feeds the refinement term): not built")
        global_head, local_head = SemanticFusion(
            feat_dim, tower.out_dim, m.CLIP_USE_SEM_REFINE, m.CLIP_USE_AFEM), None
        how = ("g' = Linear([g; t])" + (" + Linear(" + ("AFEM(t)" if global_head.afem is not None
                                                         else "t") + ")"
                                          if m.CLIP_USE_SEM_REFINE else "")
               + "; JPM parts untouched")
        if not tower.frozen:
            tower_lr_scale = float(m.CLIP_LR_SCALE)
    preprocess = ClipInput(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, mean, std, size, mode)
    logger.info("CLIP fusion: %s; feature %d-d; input %dx%d (%s); %s", desc, tower.out_dim,
                size[0], size[1], mode, how)
    return ClipFusion(tower, preprocess, global_head, local_head, tower_lr_scale)
