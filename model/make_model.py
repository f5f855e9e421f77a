"""The re-ID model: a backbone (TransReID ViT or ResNet-50) + BNNeck heads.

Output contract (DESIGN.md section 2), a dict:
- ``feat``: global feature before the BNNeck (B, D);
- ``feat_bn``: after the BNNeck (equal to ``feat`` with MODEL.NECK 'no');
- ``logits``: identity logits (training mode only);
- ``local_feats`` / ``local_feats_bn`` / ``local_logits``: JPM parts (MODEL.JPM only);
- ``patch_tokens``: (B, N, D) final patch tokens (or the ResNet feature map, flattened);
- ``supcon_z``: L2-normalised SupCon projection of the global feature (LOSS.SUPCON.ENABLE,
  training mode only).

Heads follow TransReID / reid-strong-baseline: BatchNorm1d with a frozen zero bias (BNNeck),
classifier Linear without bias initialised N(0, 0.001); with JPM, one BNNeck + classifier per
part. Test feature (TEST.NECK_FEAT 'before' | 'after'): the global feature, or with JPM
concat(global, local_1/P, ..., local_P/P) with P = MODEL.DEVIDE_LENGTH (TransReID hard-codes /4
for its 4 parts).
"""
from __future__ import annotations

import logging
import re
from typing import List, Optional

import torch
import torch.nn as nn

from utils.checkpoint import load_model_weights

from .backbones.resnet import build_resnet50_backbone
from .backbones.vit_transreid import build_transreid_backbone
from .backbones.vit_weights import LoadReport, load_vit_pretrained, read_state_dict, unwrap_state_dict

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
        if feat_src not in ("pre_bn", "bnneck"):
            raise ValueError(f"LOSS.SUPCON.FEAT_SRC '{feat_src}' is not 'pre_bn' or 'bnneck'")
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
    """

    def __init__(self, backbone: nn.Module, num_classes: int, neck: str = "bnneck",
                 num_parts: int = 0, projection: Optional[nn.Module] = None):
        super().__init__()
        if neck not in ("bnneck", "no"):
            raise ValueError(f"MODEL.NECK '{neck}' is not 'bnneck' or 'no'")
        self.backbone = backbone
        self.feat_dim = backbone.feat_dim
        self.num_classes = num_classes
        self.num_parts = num_parts
        use_bn = neck == "bnneck"
        self.head = BNNeckHead(self.feat_dim, num_classes, use_bn)
        self.local_heads = nn.ModuleList(
            BNNeckHead(self.feat_dim, num_classes, use_bn) for _ in range(num_parts))
        self.projection = projection

    def forward(self, img: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> dict:
        out = self.backbone(img, camids=camids, viewids=viewids)
        feat_bn, logits = self.head(out["feat"])
        result = {"feat": out["feat"], "feat_bn": feat_bn, "patch_tokens": out["patch_tokens"]}
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
        return result

    def test_feature(self, outputs: dict, neck_feat: str) -> torch.Tensor:
        """The retrieval feature for TEST.NECK_FEAT 'before' (pre-BN) or 'after' (BNNeck)."""
        if neck_feat not in ("before", "after"):
            raise ValueError(f"TEST.NECK_FEAT '{neck_feat}' is not 'before' or 'after'")
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
    if m.NAME != "transformer":
        raise ValueError(f"MODEL.NAME '{m.NAME}' is not 'transformer' or 'resnet50'")
    return build_transreid_backbone(
        m.TRANSFORMER_TYPE, img_size=tuple(cfg.INPUT.SIZE_TRAIN),
        stride_size=tuple(m.STRIDE_SIZE), depth=m.VIT_DEPTH, drop_rate=m.DROP_OUT,
        attn_drop_rate=m.ATT_DROP_RATE, drop_path_rate=m.DROP_PATH,
        camera_num=num_cams if m.SIE_CAMERA else 0, view_num=num_views if m.SIE_VIEW else 0,
        sie_coe=m.SIE_COE, jpm=m.JPM, shift_num=m.SHIFT_NUM, shuffle_groups=m.SHUFFLE_GROUP,
        divide_length=m.DEVIDE_LENGTH, rearrange=m.RE_ARRANGE)


def make_model(cfg, num_classes: int, num_cams: int, num_views: int) -> ReIDModel:
    """Build the model of a config and load MODEL.PRETRAIN_CHOICE weights.

    'imagenet' loads a timm ViT/DeiT (or ResNet-50) state dict into the backbone and logs the
    load report; 'self' loads a PhaseReID checkpoint (all matching keys, classifier included
    when its shape matches) and logs what was skipped; 'none' keeps the random init.
    """
    m = cfg.MODEL
    if m.NAME == "transformer" and tuple(cfg.INPUT.SIZE_TRAIN) != tuple(cfg.INPUT.SIZE_TEST):
        raise ValueError("INPUT.SIZE_TRAIN and INPUT.SIZE_TEST differ; the ViT's position "
                         "embedding is built for one size: use the same size for both")
    backbone = build_backbone(cfg, num_cams, num_views)
    sup = cfg.LOSS.SUPCON
    projection = None
    if sup.ENABLE:
        if sup.POS_RULE != "class":
            raise ValueError(f"LOSS.SUPCON.POS_RULE '{sup.POS_RULE}' is not 'class' (the only "
                             "rule: positives share the identity; see LOSS.SUPCON.CAM_AWARE)")
        projection = ProjectionHead(backbone.feat_dim, sup.PROJ_HIDDEN, sup.PROJ_DIM,
                                    sup.FEAT_SRC)
    model = ReIDModel(backbone, num_classes, m.NECK, m.DEVIDE_LENGTH if (
        m.NAME == "transformer" and m.JPM) else 0, projection)
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
        raise ValueError(f"MODEL.PRETRAIN_CHOICE '{choice}' is not 'imagenet', 'self' or 'none'")
    return model


_TRANSREID_HEAD = re.compile(r"^(bottleneck|classifier)(?:_(\d+))?\.(.+)$")


def load_transreid_model(model: ReIDModel, source) -> str:
    """Load a plain TransReID full-model checkpoint (or a timm ViT file) for evaluation.

    The backbone goes through ``load_vit_pretrained`` (base / b1 / b2 remapped and reported);
    TransReID's heads map as bottleneck -> head.bn, classifier -> head.classifier,
    bottleneck_k / classifier_k -> local_heads[k-1]. A classifier of another size is skipped
    (it is not used at test time). ``source``: a file path or an already loaded state dict.
    Returns the report text.
    """
    raw, description = read_state_dict(source)
    state = unwrap_state_dict(raw, LoadReport(source=description))
    report = load_vit_pretrained(model.backbone, state)
    own = model.state_dict()
    heads, skipped = {}, []
    for key in report.left_for_caller:
        match = _TRANSREID_HEAD.match(key)
        if not match:
            skipped.append(key)
            continue
        kind, part, rest = match.groups()
        prefix = "head" if part is None else f"local_heads.{int(part) - 1}"
        target = f"{prefix}.{'bn' if kind == 'bottleneck' else 'classifier'}.{rest}"
        if target in own and own[target].shape == state[key].shape:
            heads[target] = state[key]
        else:
            skipped.append(key)
    model.load_state_dict(heads, strict=False)
    return (f"{report}\n  heads loaded: {len(heads)} tensors"
            + (f"; head keys skipped: {', '.join(skipped)}" if skipped else ""))
