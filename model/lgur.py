"""LGUR as a text-based person search model (MODEL.TASK 'tbps', MODEL.TBPS.ARCH 'lgur').

Shao et al., "Learning Granularity-Unified Representations for Text-to-Image Person
Re-identification", ACM MM 2022 (seeds/003; released code ``ZhiyinShao-H/LGUR``, read for its
semantics, REFERENCES.md section 5). Two light modules replace an image-text cross-encoder:

Encoders
  * image: any of the project's image backbones returning token features V (B, N, C)
    (MODEL.LGUR.IMAGE_BACKBONE: 'deit_small' = timm ``deit_small_patch16_224`` built for
    INPUT.SIZE_TRAIN, the paper's default; 'resnet50' = the ResNet-50 final map (last stride 1),
    row-major; 'transreid' = the TransReID ViT of MODEL.TRANSFORMER_TYPE / STRIDE_SIZE /
    VIT_DEPTH / VIT_MLP_RATIO / VIT_STEM; 'open_clip' = the open_clip image tower of MODEL.TBPS
    (OPEN_CLIP_MODEL, PRETRAINED, TINY), its projected patch tokens). Weights:
    MODEL.LGUR.IMAGE_PRETRAINED (a file or 'timm:<name>'; '' = random init) for the first three,
    MODEL.TBPS.PRETRAINED for 'open_clip'. Tokens of another width than DICT_DIM go through a
    Linear to DICT_DIM (``image_proj``; identity for DeiT-S, 384 = 384).
  * text: a frozen BERT from ``transformers`` (MODEL.LGUR.TEXT_MODEL: a hub id / local folder,
    'bert-base-uncased' by default, or 'tiny' = a random-init 2-layer BERT of width 64 on a
    small built-in vocabulary, for tests and SynthPedes), always in eval mode and under no_grad,
    then a trainable BiLSTM (hidden DICT_DIM per direction, no bias, input dropout
    TEXT_DROPOUT) over the real tokens (packed by ``text_mask``). T = the mean of its two
    directions (B, L, DICT_DIM), as the released ``TextExtract_Bert_lstm``; padding rows are 0.

DGA (dictionary-based granularity alignment)
  D (DICT_SIZE x DICT_DIM, N(0, 1) init) is a learnable dictionary shared by both modalities.
  MHA(Q, K, V) = a cross-attention transformer block (pre-LayerNorm on the query and on the
  memory, residual multi-head cross-attention, residual ReLU MLP; no self-attention):
    M    = sigmoid(W_m V)                 (B, N, 1), a 1x1 projection of the image tokens
    V_re = MHA_V(V, D, D) * M             visual feature reconstruction
    V_g  = MHA_G(V, T, T) * M             text-guided visual tokens (TRAINING ONLY; padding keys
                                          masked)
    T_re = MHA_T(T, D, D)                 text feature reconstruction (no mask)
  The paper writes T_V and T_T for the two reconstruction blocks and one MHA for the guidance;
  PhaseReID builds three blocks ('dga.visual', 'dga.text', 'text_guided'). The released code
  uses ONE block for all three (``TXTDecoder_2``): MODEL.LGUR.SHARE_DGA_BLOCK True.
  'text_guided' is built only for training (``build_lgur(training=True)``); test.py builds
  the model without it and ``transformer_<epoch>.pth`` leaves it out
  (``model.weights.TRAINING_ONLY_PREFIXES``).

PGU (prototype-based granularity unification)
  K = NUM_PROTOTYPES shared queries P (N(0, 1) init) decode each of V_re, V_g, T_re and T with one
  shared cross-attention decoder (PGU_DEPTH blocks, PGU_HEADS heads, no self-attention between
  the prototypes, so f_k(p_k, F) depends on p_k alone, as the paper's per-prototype MHA_2),
  then prototype k's own projection W_k (OUT_DIM x DICT_DIM, no bias; the released 1x1 convs)
  gives part k. F~ = (B, K, OUT_DIM).

Outputs of ``model(batch)`` (training): ``lgur_v_re``, ``lgur_t_re``, ``lgur_t`` and, with the
text-guided block, ``lgur_v_g`` (each (B, K, OUT_DIM)); ``img_feat`` / ``txt_feat`` = the
concatenated parts of V_re / T_re (B, K * OUT_DIM), so the TBPS evaluator and every loss that
reads them work unchanged; with the ID heads ``lgur_id_weight`` (K, C, OUT_DIM) and
``lgur_id_bias`` (K, C). ``encode_image`` / ``encode_text`` give the inference features,
concat(PGU(V_re)) and concat(PGU(T_re)) (the paper's inference; L2-normalised by the evaluator,
so the cosine is that of the concatenated parts, as the released ``calculate_similarity_part``).

ID classifiers (``id_head``, built with 'lgur_id' in LOSS.NAMES): one Linear(OUT_DIM, C) per
prototype (N(0, 0.001) weights, zero bias), shared by the four features and both modalities, as
the released code (``id_loss_fun[i]`` for part i). Training-only, left out of checkpoints.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from configs.validate import LGUR_IMAGE_BACKBONES
from datasets.tokenize import tiny_bert_vocab
from utils.hf_hub import hf_from_pretrained
from utils.weights_io import LoadReport, read_weights, unwrap

from .dual_encoder import check_text_shape

logger = logging.getLogger("phasereid")

_IMG_KEY = "MODEL.LGUR.IMAGE_PRETRAINED"
_TEXT_KEY = "MODEL.LGUR.TEXT_MODEL"
#: timm name of the paper's image encoder (MODEL.LGUR.IMAGE_BACKBONE 'deit_small')
DEIT_SMALL = "deit_small_patch16_224"
#: MODEL.LGUR.TEXT_MODEL value of the random-init test BERT
TINY_TEXT = "tiny"
TINY_BERT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=128, max_position_embeddings=512)


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------
class CrossBlock(nn.Module):
    """x + MHA(LN_q(x), LN_m(mem)); then x + MLP(LN(x)) (ReLU MLP). ``mem_pad`` (B, M) bool is
    True on memory positions to ignore (padding)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.norm_q = nn.LayerNorm(dim)
        self.norm_mem = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor, mem: torch.Tensor,
                mem_pad: Optional[torch.Tensor] = None) -> torch.Tensor:
        m = self.norm_mem(mem)
        x = x + self.attn(self.norm_q(x), m, m, key_padding_mask=mem_pad, need_weights=False)[0]
        return x + self.mlp(self.norm_mlp(x))


class CrossDecoder(nn.Module):
    """``depth`` :class:`CrossBlock` s, each attending to the same memory."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int):
        super().__init__()
        self.blocks = nn.ModuleList(CrossBlock(dim, heads, mlp_dim) for _ in range(depth))

    def forward(self, x, mem, mem_pad=None):
        for block in self.blocks:
            x = block(x, mem, mem_pad)
        return x


class DGA(nn.Module):
    """The shared dictionary, the foreground mask and the reconstruction blocks (module
    docstring). ``share_block``: one block for image and text (the released code)."""

    def __init__(self, dict_size: int, dim: int, depth: int, heads: int, mlp_dim: int,
                 share_block: bool):
        super().__init__()
        self.dictionary = nn.Parameter(torch.randn(dict_size, dim))
        self.mask = nn.Linear(dim, 1)
        self.visual = CrossDecoder(dim, depth, heads, mlp_dim)
        self.text = None if share_block else CrossDecoder(dim, depth, heads, mlp_dim)

    def foreground(self, v: torch.Tensor) -> torch.Tensor:
        """M = sigmoid(W_m V), (B, N, 1)."""
        return torch.sigmoid(self.mask(v))

    def reconstruct_image(self, v: torch.Tensor) -> torch.Tensor:
        """V_re = MHA_V(V, D, D) * M."""
        d = self.dictionary.unsqueeze(0).expand(v.shape[0], -1, -1)
        return self.visual(v, d) * self.foreground(v)

    def reconstruct_text(self, t: torch.Tensor) -> torch.Tensor:
        """T_re = MHA_T(T, D, D)."""
        d = self.dictionary.unsqueeze(0).expand(t.shape[0], -1, -1)
        return (self.visual if self.text is None else self.text)(t, d)


class PGU(nn.Module):
    """K shared prototypes, one cross-attention decoder, a projection per prototype."""

    def __init__(self, num_prototypes: int, dim: int, out_dim: int, depth: int, heads: int,
                 mlp_dim: int):
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(num_prototypes, dim))
        self.decoder = CrossDecoder(dim, depth, heads, mlp_dim)
        # W_k (out, dim) per prototype: kaiming normal, fan_out, as the released 1x1 convs
        self.proj = nn.Parameter(torch.randn(num_prototypes, out_dim, dim)
                                 * math.sqrt(2.0 / out_dim))

    def forward(self, f: torch.Tensor, pad: Optional[torch.Tensor] = None) -> torch.Tensor:
        """F~ (B, K, out) of tokens ``f`` (B, L, dim); ``pad`` (B, L) True on padding."""
        q = self.prototypes.unsqueeze(0).expand(f.shape[0], -1, -1)
        h = self.decoder(q, f, pad)
        return torch.einsum("bkd,kod->bko", h, self.proj)


class IDHeads(nn.Module):
    """K classifiers Linear(out, C), stored as one (K, C, out) weight and (K, C) bias."""

    def __init__(self, num_prototypes: int, out_dim: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_prototypes, num_classes, out_dim) * 0.001)
        self.bias = nn.Parameter(torch.zeros(num_prototypes, num_classes))


class BertBiLSTM(nn.Module):
    """Frozen BERT -> dropout -> trainable BiLSTM; T = mean of the two directions (module
    docstring). ``forward(ids, mask) -> (B, L, hidden)``, zero on padding."""

    def __init__(self, bert: nn.Module, hidden: int, dropout: float):
        super().__init__()
        self.bert = bert
        for p in self.bert.parameters():
            p.requires_grad_(False)
        self.bert.eval()
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(int(bert.config.hidden_size), hidden, num_layers=1, bias=False,
                            batch_first=True, bidirectional=True)
        self.hidden = int(hidden)

    def train(self, mode: bool = True):
        super().train(mode)
        self.bert.eval()   # frozen: dropout off always
        return self

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        x = self.dropout(x.detach())
        lengths = mask.long().sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=ids.shape[1])
        return 0.5 * (out[..., :self.hidden] + out[..., self.hidden:])


class TokenImageTower(nn.Module):
    """A backbone whose forward returns a dict with 'patch_tokens' (PhaseReID backbones)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.backbone(img)["patch_tokens"]


class OpenClipTokenTower(nn.Module):
    """An open_clip image tower (``model.dual_encoder.OpenClipImageTower``): its projected
    patch tokens."""

    def __init__(self, tower: nn.Module):
        super().__init__()
        self.tower = tower

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.tower(img)[1]


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
class LGURModel(nn.Module):
    """LGUR (module docstring).

    Args:
        image_tower: ``forward(img) -> V`` (B, N, C).
        image_width: C.
        text_tower: :class:`BertBiLSTM`.
        preprocess: INPUT-normalised image -> the image tower's input.
        dga: :class:`DGA`. pgu: :class:`PGU`.
        text_guided: the text-guided block MHA_G (None: not built, i.e. evaluation; or shared
            with ``dga.visual`` when ``share_guided``).
        context_length: L of ``text_ids``.
        id_heads: :class:`IDHeads` or None.
        lr_scales: parameter-name prefix -> LR scale.

    Example:
        >>> out = model({"img": img, "text_ids": ids, "text_mask": mask})
        >>> out["lgur_v_re"].shape        # (B, K, OUT_DIM)
        >>> model.encode_image(img).shape  # (B, K * OUT_DIM)
    """

    def __init__(self, image_tower: nn.Module, image_width: int, text_tower: BertBiLSTM,
                 preprocess: nn.Module, dga: DGA, pgu: PGU, text_guided: Optional[nn.Module],
                 share_guided: bool, context_length: int, id_heads: Optional[IDHeads] = None,
                 lr_scales: Optional[Dict[str, float]] = None):
        super().__init__()
        dim = dga.dictionary.shape[1]
        self.preprocess = preprocess
        self.image_tower = image_tower
        self.image_proj = nn.Identity() if image_width == dim else nn.Linear(image_width, dim)
        self.text_tower = text_tower
        self.dga = dga
        self.pgu = pgu
        self.text_guided = text_guided
        self.share_guided = bool(share_guided)
        self.id_head = id_heads
        self.context_length = int(context_length)
        self.num_prototypes, self.out_dim = pgu.proj.shape[0], pgu.proj.shape[1]
        self._lr_scales = dict(lr_scales or {})

    @property
    def feat_dim(self) -> int:
        """K * OUT_DIM, the size of img_feat / txt_feat."""
        return self.num_prototypes * self.out_dim

    @property
    def has_guidance(self) -> bool:
        return self.share_guided or self.text_guided is not None

    def lr_scales(self) -> Dict[str, float]:
        return dict(self._lr_scales)

    def _check_text(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        check_text_shape(ids, mask, self.context_length, "LGUR's tokenizer gives",
                         "MODEL.LGUR.CONTEXT_LENGTH")

    def image_tokens(self, img: torch.Tensor) -> torch.Tensor:
        """V (B, N, DICT_DIM)."""
        return self.image_proj(self.image_tower(self.preprocess(img)))

    def text_tokens(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """T (B, L, DICT_DIM)."""
        self._check_text(ids, mask)
        return self.text_tower(ids, mask)

    def encode_image(self, img: torch.Tensor) -> torch.Tensor:
        """concat(PGU(V_re)) (B, K * OUT_DIM), not normalised."""
        return self.pgu(self.dga.reconstruct_image(self.image_tokens(img))).flatten(1)

    def encode_text(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """concat(PGU(T_re)) (B, K * OUT_DIM), not normalised; padding keys masked."""
        t = self.text_tokens(text_ids, text_mask)
        return self.pgu(self.dga.reconstruct_text(t), ~text_mask.bool()).flatten(1)

    def forward(self, batch: dict) -> Dict[str, torch.Tensor]:
        missing = [k for k in ("img", "text_ids", "text_mask") if batch.get(k) is None]
        if missing:
            raise KeyError(f"LGUR (MODEL.TBPS.ARCH 'lgur') needs batch fields {missing}; the "
                           f"batch has {sorted(batch)}")
        ids, mask = batch["text_ids"], batch["text_mask"].bool()
        v = self.image_tokens(batch["img"])
        t = self.text_tokens(ids, mask)
        pad = ~mask
        v_re = self.pgu(self.dga.reconstruct_image(v))
        t_re = self.pgu(self.dga.reconstruct_text(t), pad)
        out = {"lgur_v_re": v_re, "lgur_t_re": t_re, "lgur_t": self.pgu(t, pad),
               "img_feat": v_re.flatten(1), "txt_feat": t_re.flatten(1)}
        if self.has_guidance:
            block = self.dga.visual if self.share_guided else self.text_guided
            v_g = block(v, t, pad) * self.dga.foreground(v)
            out["lgur_v_g"] = self.pgu(v_g)
        if self.id_head is not None:
            out["lgur_id_weight"], out["lgur_id_bias"] = self.id_head.weight, self.id_head.bias
        return out


# --------------------------------------------------------------------------------------------
# encoders
# --------------------------------------------------------------------------------------------
def _image_state(source: str):
    raw, description = read_weights(os.path.expanduser(source) if not source.startswith("timm:")
                                    else source, key=_IMG_KEY)
    return unwrap(raw, LoadReport(source=description), key=_IMG_KEY), description


def build_image_tower(cfg, load_weights: bool) -> Tuple[nn.Module, int, nn.Module, str]:
    """(tower: img -> V (B, N, C), C, preprocess, description) of MODEL.LGUR.IMAGE_BACKBONE.

    Raises:
        ValueError: an unknown backbone. FileNotFoundError / RuntimeError: IMAGE_PRETRAINED (or
            MODEL.TBPS.PRETRAINED for 'open_clip') cannot be read (offline and not cached, a
            missing file); the message names the key.
    """
    g, m = cfg.MODEL.LGUR, cfg.MODEL
    kind = g.IMAGE_BACKBONE
    size = tuple(int(s) for s in cfg.INPUT.SIZE_TRAIN)
    source = g.IMAGE_PRETRAINED if load_weights else ""
    if kind not in LGUR_IMAGE_BACKBONES:
        raise ValueError(f"MODEL.LGUR.IMAGE_BACKBONE '{kind}' is not one of "
                         f"{list(LGUR_IMAGE_BACKBONES)}")
    if kind == "open_clip":
        from .dual_encoder import ClipInput, build_open_clip_towers
        # the text tower open_clip builds beside it is discarded (LGUR has its own)
        image, _, _, _, mean_std, desc = build_open_clip_towers(cfg, 8, load_weights)
        preprocess = nn.Identity() if mean_std is None else ClipInput(
            cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, mean_std[0], mean_std[1], size, "bicubic")
        return OpenClipTokenTower(image), int(image.visual.output_dim), preprocess, \
            desc.replace("towers", "image tower")
    state, loaded = None, "random init"
    if source:
        state, loaded = _image_state(source)
    if kind == "deit_small":
        from .backbones.timm_net import TimmBackbone
        backbone = TimmBackbone(DEIT_SMALL, size, drop_path=m.DROP_PATH)
        if state is not None:
            loaded = f"{loaded}: {len(backbone.load_pretrained(state).loaded)} tensors loaded"
        desc = f"timm {DEIT_SMALL} at {size[0]}x{size[1]}"
    elif kind == "resnet50":
        from .backbones.resnet import build_resnet50_backbone
        backbone = build_resnet50_backbone(last_stride=1)
        if state is not None:
            loaded = f"{loaded}: {len(backbone.load_pretrained(state).loaded)} tensors loaded"
        desc = "ResNet-50 (last stride 1) feature map"
    else:
        from .backbones.vit_transreid import build_transreid_backbone
        from .backbones.vit_weights import load_vit_pretrained
        backbone = build_transreid_backbone(
            m.TRANSFORMER_TYPE, img_size=size, stride_size=tuple(m.STRIDE_SIZE),
            depth=m.VIT_DEPTH, mlp_ratio=m.VIT_MLP_RATIO, drop_rate=m.DROP_OUT,
            attn_drop_rate=m.ATT_DROP_RATE, drop_path_rate=m.DROP_PATH, stem=m.VIT_STEM)
        if state is not None:
            loaded = f"{loaded}: {len(load_vit_pretrained(backbone, state).loaded)} tensors loaded"
        desc = f"TransReID {m.TRANSFORMER_TYPE} (stride {list(m.STRIDE_SIZE)})"
    if not load_weights:
        loaded = "weights to come from a checkpoint"
    return TokenImageTower(backbone), int(backbone.feat_dim), nn.Identity(), f"{desc}, {loaded}"


def build_text_tower(cfg, load_weights: bool) -> Tuple[BertBiLSTM, str]:
    """(BertBiLSTM, description) of MODEL.LGUR (TEXT_MODEL, DICT_DIM, TEXT_DROPOUT).

    Raises:
        OSError / FileNotFoundError: TEXT_MODEL cannot be loaded (offline and not cached, a
            folder without the files); the message names MODEL.LGUR.TEXT_MODEL.
    """
    from transformers import AutoConfig, BertConfig, BertModel
    g = cfg.MODEL.LGUR
    if g.TEXT_MODEL == TINY_TEXT:
        bert = BertModel(BertConfig(vocab_size=len(tiny_bert_vocab()), **TINY_BERT),
                         add_pooling_layer=False)
        desc = "tiny BERT (2 layers, width 64), random init"
    elif load_weights:
        bert = hf_from_pretrained(BertModel, g.TEXT_MODEL, _TEXT_KEY, "model weights",
                                  add_pooling_layer=False)
        desc = f"BERT '{g.TEXT_MODEL}' (frozen)"
    else:
        config = hf_from_pretrained(AutoConfig, g.TEXT_MODEL, _TEXT_KEY, "config")
        bert = BertModel(config, add_pooling_layer=False)
        desc = f"BERT '{g.TEXT_MODEL}' architecture, weights to come from a checkpoint"
    return BertBiLSTM(bert.float(), int(g.DICT_DIM), float(g.TEXT_DROPOUT)), \
        f"{desc} -> BiLSTM {bert.config.hidden_size} -> 2 x {g.DICT_DIM} (directions averaged)"


def build_lgur(cfg, load_weights: bool = True, num_classes: int = 0,
               training: bool = True) -> LGURModel:
    """The LGUR model of a config (module docstring).

    Args:
        cfg: the config (MODEL.LGUR.*, MODEL.TBPS.IMAGE_LR_SCALE / TEXT_LR_SCALE / ID_LR_SCALE,
            INPUT.*; MODEL.TBPS.* for IMAGE_BACKBONE 'open_clip').
        load_weights: read the encoders' weights (False: random init, a checkpoint loads over it).
        num_classes: training identities; with 'lgur_id' in LOSS.NAMES the K ID classifiers.
        training: build the training-only modules (the text-guided block, the ID classifiers);
            test.py passes False.
    """
    g = cfg.MODEL.LGUR
    size = tuple(int(s) for s in cfg.INPUT.SIZE_TRAIN)
    if size != tuple(int(s) for s in cfg.INPUT.SIZE_TEST):
        raise ValueError("INPUT.SIZE_TRAIN and INPUT.SIZE_TEST differ; LGUR's image encoder is "
                         "built for one size: use the same size for both")
    image, width, preprocess, image_desc = build_image_tower(cfg, load_weights)
    text, text_desc = build_text_tower(cfg, load_weights)
    dim = int(g.DICT_DIM)
    dga = DGA(int(g.DICT_SIZE), dim, int(g.DGA_DEPTH), int(g.DGA_HEADS), int(g.DGA_MLP_DIM),
              share_block=bool(g.SHARE_DGA_BLOCK))
    pgu = PGU(int(g.NUM_PROTOTYPES), dim, int(g.OUT_DIM), int(g.PGU_DEPTH), int(g.PGU_HEADS),
              int(g.PGU_MLP_DIM))
    guided = None
    if training and not g.SHARE_DGA_BLOCK:
        guided = CrossDecoder(dim, int(g.DGA_DEPTH), int(g.DGA_HEADS), int(g.DGA_MLP_DIM))
    t = cfg.MODEL.TBPS
    scales = {"image_tower.": float(t.IMAGE_LR_SCALE), "text_tower.": float(t.TEXT_LR_SCALE)}
    heads = None
    if training and "lgur_id" in cfg.LOSS.NAMES:
        if num_classes < 1:
            raise ValueError("LOSS.NAMES has 'lgur_id' but the number of training identities is "
                             "unknown (num_classes 0)")
        heads = IDHeads(int(g.NUM_PROTOTYPES), int(g.OUT_DIM), int(num_classes))
        scales["id_head."] = float(t.ID_LR_SCALE)
    model = LGURModel(image, width, text, preprocess, dga, pgu, guided,
                      share_guided=training and bool(g.SHARE_DGA_BLOCK),
                      context_length=int(g.CONTEXT_LENGTH), id_heads=heads, lr_scales=scales)
    logger.info("LGUR (MODEL.TBPS.ARCH 'lgur'): image %s (%d-d tokens%s); text %s; DGA "
                "dictionary %dx%d, %s; PGU %d prototypes -> %d x %d; %s; LR scales %s",
                image_desc, width, "" if width == dim else f", Linear to {dim}", text_desc,
                g.DICT_SIZE, dim, "one block shared (released code)" if g.SHARE_DGA_BLOCK
                else "separate visual / text / text-guided blocks", g.NUM_PROTOTYPES,
                g.NUM_PROTOTYPES, g.OUT_DIM,
                "training modules built" if training else "evaluation build (no text-guided "
                "block, no ID classifiers)", scales)
    return model
