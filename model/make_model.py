"""The re-ID model: a backbone (TransReID ViT, ResNet-50 or any timm model) + BNNeck heads, and
``make_model``, which builds it for MODEL.TASK 'reid' or the dual encoder of
model/dual_encoder.py (outputs ``img_feat``, ``txt_feat``, ``img_tokens``, ``txt_tokens``,
``logit_scale``, ``logit_bias``) for MODEL.TASK 'tbps'.

Output contract (DESIGN.md section 2), a dict:
- ``feat``: global feature before the BNNeck (B, D);
- ``feat_bn``: after the BNNeck (equal to ``feat`` with MODEL.NECK 'no');
- ``logits``: identity logits (training mode only);
- ``local_feats`` / ``local_feats_bn`` / ``local_logits``: JPM parts (MODEL.JPM only);
- ``patch_tokens``: (B, N, D) final patch tokens (or the ResNet feature map, flattened);
- ``supcon_z``: L2-normalised SupCon projection of the global feature (LOSS.SUPCON.ENABLE,
  training mode only);
- ``clip_feat`` (B, C): the CLIP tower's feature (MODEL.USE_CLIP, model/clip_fusion.py), and
  ``clip_gate`` (B, 1) the quickwin gate of the global feature. With CLIP fusion, ``feat`` is
  the fused global feature (and, for quickwin with JPM, ``local_feats`` the fused parts): the
  BNNeck, the classifier, every loss and the test feature see the fused features;
- ``tgmim_pred`` (B, 3, gh*r, gw*r), ``tgmim_mask`` (B, gh, gw) bool and ``tgmim_attn``
  (B, N, L): the TG-MIM branch (LOSS.TGMIM.ENABLE, model/tgmim.py), computed only when the
  model is called as ``model(batch, tgmim=True)`` on a batch with ``text_ids`` / ``text_mask``
  -- a second, masked forward of the backbone whose patch tokens attend to the caption's
  tokens (text encoder: model/text_encoder.py) and are decoded to pixels.

The model takes the batch dict (DESIGN.md section 2): ``model(batch)`` reads ``img`` and, where
used, ``camid`` / ``viewid`` (SIE) and ``text_ids`` / ``text_mask`` (TG-MIM).

Training-only modules (``model.weights.TRAINING_ONLY_PREFIXES``: the SupCon projection, the
TG-MIM head and the text encoder) do not contribute to the test feature; test.py loads
checkpoints with or without them (``model.weights.load_for_test``).

Heads follow TransReID / reid-strong-baseline: BatchNorm1d with a frozen zero bias (BNNeck),
classifier Linear without bias initialised N(0, 0.001); with JPM, one BNNeck + classifier per
part. Test feature (TEST.NECK_FEAT 'before' | 'after'): the global feature, or with JPM
concat(global, local_1/P, ..., local_P/P) with P = MODEL.DEVIDE_LENGTH (TransReID hard-codes /4
for its 4 parts).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from configs.validate import (FEAT_SRCS, MODEL_NAMES, NECK_FEATS, NECKS, PRETRAIN_CHOICES,
                              SUPCON_POS_RULES, TASKS)

from .backbones.resnet import build_resnet50_backbone
from .backbones.timm_net import build_timm_backbone
from .backbones.vit_transreid import build_transreid_backbone
from .backbones.vit_weights import load_vit_pretrained
from .clip_fusion import build_clip_fusion
from .dual_encoder import build_dual_encoder
from .lgur import build_lgur
from .lora import apply_lora
from .tbps_clip_weights import load_init_checkpoint
from .text_encoder import build_text_encoder
from .tgmim import TGMIMHead
from .weights import load_model_weights

logger = logging.getLogger("phasereid")

class BNNeckHead(nn.Module):
    """BNNeck (bias frozen at 0) + bias-free classifier, as in reid-strong-baseline."""

    def __init__(self, dim: int, num_classes: int, use_bn: bool = True):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim) if use_bn else nn.Identity()
        if use_bn:
            nn.init.ones_(self.bn.weight)
            nn.init.zeros_(self.bn.bias)
            self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, feat: torch.Tensor):
        feat_bn = self.bn(feat)
        logits = self.classifier(feat_bn) if self.training else None
        return feat_bn, logits


class ProjectionHead(nn.Module):
    """SupCon projection: Linear(D, hidden) -> ReLU -> Linear(hidden, out), L2-normalised
    (SupContrast's ``SupConResNet`` head; Model B uses 768 -> 2048 -> 128).

    ``feat_src`` 'pre_bn' feeds the global feature before the BNNeck, 'bnneck' the one after.
    """

    def __init__(self, dim: int, hidden: int, out: int, feat_src: str):
        super().__init__()
        if feat_src not in FEAT_SRCS:
            raise ValueError(f"LOSS.SUPCON.FEAT_SRC '{feat_src}' is not one of {list(FEAT_SRCS)}")
        self.feat_src = feat_src
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out))

    def forward(self, feat: torch.Tensor, feat_bn: torch.Tensor) -> torch.Tensor:
        z = self.net(feat if self.feat_src == "pre_bn" else feat_bn)
        return nn.functional.normalize(z, dim=1)


class ReIDModel(nn.Module):
    """Backbone + global head (+ one head per JPM part).

    Args:
        backbone: module with ``forward(img, camids, viewids) -> dict`` ('feat', optionally
            'local_feats', 'patch_tokens') and an int attribute ``feat_dim``.
        num_classes: training identities.
        neck: 'bnneck' or 'no'.
        num_parts: JPM parts (0 = no JPM).
        projection: optional SupCon :class:`ProjectionHead` (output ``supcon_z``).
        clip_fusion: optional :class:`model.clip_fusion.ClipFusion` applied to the backbone's
            features (outputs ``clip_feat``; ``feat`` / ``local_feats`` become the fused ones).
        text_encoder, tgmim: optional :class:`model.text_encoder.TextEncoder` and
            :class:`model.tgmim.TGMIMHead` (TG-MIM; both or neither).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, neck: str = "bnneck",
                 num_parts: int = 0, projection: Optional[nn.Module] = None,
                 clip_fusion: Optional[nn.Module] = None,
                 text_encoder: Optional[nn.Module] = None, tgmim: Optional[nn.Module] = None):
        super().__init__()
        if (text_encoder is None) != (tgmim is None):
            raise ValueError("TG-MIM needs both a text encoder and its head")
        if neck not in NECKS:
            raise ValueError(f"MODEL.NECK '{neck}' is not one of {list(NECKS)}")
        self.backbone = backbone
        self.feat_dim = backbone.feat_dim
        self.num_classes = num_classes
        self.num_parts = num_parts
        use_bn = neck == "bnneck"
        self.head = BNNeckHead(self.feat_dim, num_classes, use_bn)
        self.local_heads = nn.ModuleList(
            BNNeckHead(self.feat_dim, num_classes, use_bn) for _ in range(num_parts))
        self.projection = projection
        self.clip_fusion = clip_fusion
        self.text_encoder = text_encoder
        self.tgmim = tgmim

    def lr_scales(self) -> Dict[str, float]:
        """Parameter-name prefix -> LR scale that the model itself requires (merged under
        SOLVER.LR_SCALES by the optimiser; an explicit SOLVER.LR_SCALES entry wins)."""
        scales: Dict[str, float] = {}
        if self.clip_fusion is not None and self.clip_fusion.tower_lr_scale is not None:
            scales["clip_fusion.tower."] = self.clip_fusion.tower_lr_scale
        if self.text_encoder is not None and not self.text_encoder.frozen:
            scales["text_encoder."] = self.text_encoder.lr_scale
        return scales

    def _fuse(self, img: torch.Tensor, out: dict) -> dict:
        """CLIP fusion of the backbone outputs (identity without it): 'feat' (and quickwin's
        'local_feats') replaced by the fused features, 'clip_feat' / 'clip_gate' added."""
        if self.clip_fusion is None:
            return out
        return {**out, **self.clip_fusion(img, out["feat"], out.get("local_feats"))}

    def _masked_image_modelling(self, batch: dict) -> dict:
        """The TG-MIM forward: mask, masked backbone pass, text cross-attention, decoder."""
        if self.tgmim is None:
            raise RuntimeError("tgmim=True but the model has no TG-MIM branch: set "
                               "LOSS.TGMIM.ENABLE True")
        text_ids, text_mask = batch.get("text_ids"), batch.get("text_mask")
        if text_ids is None or text_mask is None:
            raise ValueError("the TG-MIM forward needs text_ids and text_mask (batch fields of "
                             "DATASETS.CAPTION_SOURCE 'annotation' | 'attributes'); the batch "
                             f"has {sorted(batch)}")
        img = batch["img"]
        mask = self.tgmim.sample_mask(img.shape[0], img.device)
        tokens = self.backbone.forward_features(img, batch.get("camid"), batch.get("viewid"),
                                                token_mask=mask.flatten(1),
                                                mask_token=self.tgmim.mask_token)
        text = self.text_encoder(text_ids, text_mask)
        pred, attn = self.tgmim(tokens[:, 1:], text, text_mask)
        return {"tgmim_pred": pred, "tgmim_mask": mask, "tgmim_attn": attn}

    def forward(self, batch: dict, tgmim: bool = False) -> dict:
        """The outputs of a batch (a dict with ``img`` (B,3,H,W) and, where the model uses
        them, ``camid`` / ``viewid`` for SIE and ``text_ids`` / ``text_mask`` for TG-MIM).

        ``tgmim=True`` (epochs where the phase plan gives TG-MIM a weight > 0) adds the masked,
        text-guided forward's outputs ``tgmim_pred``, ``tgmim_mask``, ``tgmim_attn``.
        """
        img = batch["img"]
        out = self._fuse(img, self.backbone(img, camids=batch.get("camid"),
                                            viewids=batch.get("viewid")))
        feat_bn, logits = self.head(out["feat"])
        result = {"feat": out["feat"], "feat_bn": feat_bn, "patch_tokens": out["patch_tokens"]}
        for key in ("clip_feat", "clip_gate"):
            if key in out:
                result[key] = out[key]
        if logits is not None:
            result["logits"] = logits
        if self.projection is not None and self.training:
            result["supcon_z"] = self.projection(out["feat"], feat_bn)
        if self.num_parts:
            parts = [head(f) for head, f in zip(self.local_heads, out["local_feats"])]
            result["local_feats"] = out["local_feats"]
            result["local_feats_bn"] = [p[0] for p in parts]
            if self.training:
                result["local_logits"] = [p[1] for p in parts]
        if tgmim:
            result.update(self._masked_image_modelling(batch))
        return result

    def test_feature(self, outputs: dict, neck_feat: str) -> torch.Tensor:
        """The retrieval feature for TEST.NECK_FEAT 'before' (pre-BN) or 'after' (BNNeck)."""
        if neck_feat not in NECK_FEATS:
            raise ValueError(f"TEST.NECK_FEAT '{neck_feat}' is not one of {list(NECK_FEATS)}")
        suffix = "" if neck_feat == "before" else "_bn"
        feat = outputs["feat" + suffix]
        if not self.num_parts:
            return feat
        locals_: List[torch.Tensor] = outputs["local_feats" + suffix]
        return torch.cat([feat] + [f / self.num_parts for f in locals_], dim=1)


def build_backbone(cfg, num_cams: int, num_views: int) -> nn.Module:
    m = cfg.MODEL
    if m.NAME == "resnet50":
        return build_resnet50_backbone(last_stride=m.LAST_STRIDE)
    if m.NAME == "timm":
        return build_timm_backbone(m.TIMM_NAME, tuple(cfg.INPUT.SIZE_TRAIN),
                                   last_stride=m.LAST_STRIDE, drop_path=m.DROP_PATH)
    if m.NAME != "transformer":
        raise ValueError(f"MODEL.NAME '{m.NAME}' is not one of {list(MODEL_NAMES)}")
    return build_transreid_backbone(
        m.TRANSFORMER_TYPE, img_size=tuple(cfg.INPUT.SIZE_TRAIN),
        stride_size=tuple(m.STRIDE_SIZE), depth=m.VIT_DEPTH, mlp_ratio=m.VIT_MLP_RATIO,
        drop_rate=m.DROP_OUT, attn_drop_rate=m.ATT_DROP_RATE, drop_path_rate=m.DROP_PATH,
        camera_num=num_cams if m.SIE_CAMERA else 0, view_num=num_views if m.SIE_VIEW else 0,
        sie_coe=m.SIE_COE, jpm=m.JPM, shift_num=m.SHIFT_NUM, shuffle_groups=m.SHUFFLE_GROUP,
        divide_length=m.DEVIDE_LENGTH, rearrange=m.RE_ARRANGE, stem=m.VIT_STEM)


def build_tgmim(cfg, backbone: nn.Module):
    """(text encoder, TG-MIM head) when LOSS.TGMIM.ENABLE, else (None, None)."""
    g = cfg.LOSS.TGMIM
    if not g.ENABLE:
        return None, None
    if cfg.MODEL.NAME != "transformer":
        raise ValueError(f"LOSS.TGMIM.ENABLE needs MODEL.NAME 'transformer' (masked patch "
                         f"tokens), not '{cfg.MODEL.NAME}'")
    if cfg.DATASETS.CAPTION_SOURCE == "none":
        raise ValueError("LOSS.TGMIM.ENABLE is True but DATASETS.CAPTION_SOURCE is 'none': "
                         "TG-MIM needs a caption per image; set it to 'annotation' or "
                         "'attributes'")
    sh, sw = backbone.stride_size
    if sh != sw:
        raise ValueError(f"TG-MIM decodes square stride cells; MODEL.STRIDE_SIZE {[sh, sw]} is "
                         "not square")
    text_encoder, report = build_text_encoder(cfg)
    logger.info("TG-MIM text encoder (%s):\n%s", "frozen" if text_encoder.frozen else
                f"trained at LR x {text_encoder.lr_scale:g}", report)
    head = TGMIMHead(backbone.feat_dim, text_encoder.width, backbone.grid_size, sh,
                     decoder_dim=g.DECODER_DIM, heads=g.HEADS, mask_ratio=g.MASK_RATIO,
                     mask_mode=g.MASK_MODE)
    return text_encoder, head


def make_tbps_model(cfg, num_classes: int = 0, load_weights: bool = True,
                    lora: bool = True, training: bool = True) -> nn.Module:
    """The dual encoder of MODEL.TASK 'tbps' (model/dual_encoder.py). Its towers take their
    weights from MODEL.TBPS (PRETRAINED / HF_MODEL); MODEL.PRETRAIN_CHOICE 'self' then loads a
    PhaseReID checkpoint over them (matching keys, reported), 'none' adds nothing, 'imagenet'
    does not apply. MODEL.TBPS.INIT_CHECKPOINT (with ``load_weights``): a released TBPS-CLIP
    checkpoint is loaded over the towers instead (model/tbps_clip_weights.py, reported in
    OUTPUT_DIR/init_checkpoint.txt). With MODEL.TBPS.LORA.ENABLE (and ``lora``) the LoRA adapters go on last, so
    'self' weights (a checkpoint's plain layout; LoRA checkpoints hold merged weights) load into
    the plain towers and the new adapters start on top of them (model/lora.py).
    MODEL.TBPS.ARCH 'lgur': LGUR (model/lgur.py) instead of the dual encoder; ``training`` False
    (test.py) leaves its training-only modules (text-guided block, ID classifiers) unbuilt."""
    choice = cfg.MODEL.PRETRAIN_CHOICE
    if cfg.MODEL.TBPS.ARCH == "lgur":
        model = build_lgur(cfg, load_weights=load_weights, num_classes=num_classes,
                           training=training)
    else:
        init = load_weights and bool(cfg.MODEL.TBPS.INIT_CHECKPOINT)
        model = build_dual_encoder(cfg, load_weights=load_weights, num_classes=num_classes,
                                   lora=lora and choice != "self" and not init)
        if init:   # a released TBPS-CLIP checkpoint over the towers, then the LoRA adapters
            load_init_checkpoint(model, cfg)
            if lora and cfg.MODEL.TBPS.LORA.ENABLE:
                apply_lora(model, cfg)
    if choice == "self":
        report = load_model_weights(model, cfg.MODEL.PRETRAIN_PATH)
        logger.info("Loaded PhaseReID weights from %s\n%s", cfg.MODEL.PRETRAIN_PATH, report)
        if lora and cfg.MODEL.TBPS.LORA.ENABLE:
            apply_lora(model, cfg)
    elif choice != "none":
        raise ValueError(f"MODEL.PRETRAIN_CHOICE '{choice}' does not apply to MODEL.TASK 'tbps' "
                         "(the towers' weights come from MODEL.TBPS.PRETRAINED / HF_MODEL); use "
                         "'none' or 'self'")
    return model


def make_model(cfg, num_classes: int, num_cams: int, num_views: int, load_weights: bool = True,
               lora: bool = True, training: bool = True):
    """Build the model of a config and load MODEL.PRETRAIN_CHOICE weights.

    MODEL.TASK 'reid' (a :class:`ReIDModel`): 'imagenet' loads a timm ViT/DeiT (or ResNet-50)
    state dict into the backbone and logs the load report; 'self' loads a PhaseReID checkpoint
    (all matching keys, classifier included when its shape matches) and logs what was skipped;
    'none' keeps the random init. MODEL.TASK 'tbps': the dual encoder (:func:`make_tbps_model`;
    ``num_classes`` sizes its cross-modal ID classifier when LOSS.NAMES has 'id'; the camera and
    view counts are not used; ``load_weights`` False builds the towers at random init without
    reading MODEL.TBPS.PRETRAINED / HF_MODEL weights, for test.py, which loads a checkpoint over
    them; ``lora`` False leaves MODEL.TBPS.LORA's adapters out, for test.py, whose checkpoints
    hold merged LoRA weights in the plain layout; ``training`` False: an evaluation build,
    without LGUR's training-only modules, for test.py).
    """
    m = cfg.MODEL
    if m.TASK == "tbps":
        return make_tbps_model(cfg, num_classes, load_weights, lora, training)
    if m.TASK != "reid":
        raise ValueError(f"MODEL.TASK '{m.TASK}' is not one of {list(TASKS)}")
    if m.NAME == "transformer" and tuple(cfg.INPUT.SIZE_TRAIN) != tuple(cfg.INPUT.SIZE_TEST):
        raise ValueError("INPUT.SIZE_TRAIN and INPUT.SIZE_TEST differ; the ViT's position "
                         "embedding is built for one size: use the same size for both")
    backbone = build_backbone(cfg, num_cams, num_views)
    if getattr(backbone, "sized", False) and \
            tuple(cfg.INPUT.SIZE_TRAIN) != tuple(cfg.INPUT.SIZE_TEST):
        raise ValueError(f"INPUT.SIZE_TRAIN and INPUT.SIZE_TEST differ; timm '{m.TIMM_NAME}' is "
                         "built for one input size: use the same size for both")

    sup = cfg.LOSS.SUPCON
    projection = None
    if sup.ENABLE:
        if sup.POS_RULE not in SUPCON_POS_RULES:
            raise ValueError(f"LOSS.SUPCON.POS_RULE '{sup.POS_RULE}' is not one of "
                             f"{list(SUPCON_POS_RULES)} (positives share the identity; see "
                             "LOSS.SUPCON.CAM_AWARE)")
        projection = ProjectionHead(backbone.feat_dim, sup.PROJ_HIDDEN, sup.PROJ_DIM,
                                    sup.FEAT_SRC)
    num_parts = m.DEVIDE_LENGTH if (m.NAME == "transformer" and m.JPM) else 0
    clip_fusion = None
    if m.USE_CLIP:
        if m.NAME != "transformer":
            raise ValueError("MODEL.USE_CLIP: CLIP fusion is built for the TransReID ViT "
                             f"(MODEL.NAME 'transformer'), not '{m.NAME}'")
        clip_fusion = build_clip_fusion(cfg, backbone.feat_dim, num_parts)
    text_encoder, tgmim = build_tgmim(cfg, backbone)
    model = ReIDModel(backbone, num_classes, m.NECK, num_parts, projection,
                      clip_fusion=clip_fusion, text_encoder=text_encoder, tgmim=tgmim)
    choice = m.PRETRAIN_CHOICE
    if choice == "imagenet":
        if not m.PRETRAIN_PATH:
            raise ValueError("MODEL.PRETRAIN_CHOICE 'imagenet' needs MODEL.PRETRAIN_PATH (a weight "
                             "file or 'timm:<model name>'); use 'none' for random init")
        if m.NAME == "transformer":
            report = load_vit_pretrained(backbone, m.PRETRAIN_PATH)
        else:
            report = backbone.load_pretrained(m.PRETRAIN_PATH)
        logger.info("Loaded ImageNet weights from %s\n%s", m.PRETRAIN_PATH, report)
    elif choice == "self":
        report = load_model_weights(model, m.PRETRAIN_PATH)
        logger.info("Loaded PhaseReID weights from %s\n%s", m.PRETRAIN_PATH, report)
    elif choice != "none":
        raise ValueError(f"MODEL.PRETRAIN_CHOICE '{choice}' is not one of {list(PRETRAIN_CHOICES)}")
    return model
