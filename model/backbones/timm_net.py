"""Any timm model as a re-ID backbone (MODEL.NAME 'timm', MODEL.TIMM_NAME '<timm model name>').

The trunk is ``timm.create_model(name, pretrained=False, num_classes=0)``: timm's own layers and
parameter names, its classifier removed. The global feature is timm's own pooled pre-logits
feature (``forward_head(x, pre_logits=True)``: global average pooling for CNNs, the class token or
the model's pooling for ViTs), so the model is the one timm defines; PhaseReID's BNNeck head,
losses, phase plan and evaluation are put on top (model/make_model.py), so CNNs and ViTs are
compared under one plan. This is what torchreid / fast-reid do for their ResNets (global average
pooling -> feature -> BNNeck / classifier); deliberate differences:

- a ViT-like model (its constructor takes ``img_size``) is built for INPUT.SIZE_TRAIN, so its
  position embedding fits the re-ID input (timm's own rule; pretrained position embeddings are
  resized bilinearly on load, CLS row kept, as TransReID does);
- ``last_stride`` 1 (BoT) is applied to ResNet-layout models (a ``layer4`` whose first block
  downsamples by strided convolutions) by setting those strides to 1; for other models only
  ``last_stride`` 2 (the model as timm builds it) is accepted.

SIE (camera / view embeddings) and JPM are TransReID ViT features and are not available here.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from utils.weights_io import (LoadReport, ResizedKey, Source, load_fitting, read_weights,
                              resize_pos_embed, unwrap)

logger = logging.getLogger("phasereid")


def _create(name: str, img_size: Tuple[int, int], drop_path: float) -> Tuple[nn.Module, bool]:
    """The timm trunk without classifier; (model, built for img_size)."""
    import timm
    if not timm.is_model(name):
        raise ValueError(f"MODEL.TIMM_NAME {name!r} is not a timm model (timm.list_models())")
    kwargs = {"num_classes": 0}
    if drop_path > 0:
        kwargs["drop_path_rate"] = drop_path
    try:
        return timm.create_model(name, pretrained=False, img_size=img_size, **kwargs), True
    except TypeError as exc:          # CNN constructors take no img_size
        if "img_size" not in str(exc):
            raise
    return timm.create_model(name, pretrained=False, **kwargs), False


def _set_last_stride(net: nn.Module, name: str) -> None:
    """BoT's last stride 1 on a ResNet-layout model: every stride-2 conv of layer4's first
    block (the 3x3 and the downsample 1x1) gets stride 1."""
    layer4 = getattr(net, "layer4", None)
    strided = []
    if layer4 is not None and len(layer4) > 0:
        for module in layer4[0].modules():
            if isinstance(module, nn.Conv2d) and tuple(module.stride) == (2, 2):
                strided.append(module)
            elif isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
                strided = []   # pooled downsample (ResNet-D): not a plain stride change
                break
    if not strided:
        raise ValueError(f"MODEL.LAST_STRIDE 1 is supported for timm ResNet-layout models whose "
                         f"layer4 downsamples by strided convolutions; '{name}' is not one: "
                         "set MODEL.LAST_STRIDE 2 (the model as timm builds it)")
    for module in strided:
        module.stride = (1, 1)


class TimmBackbone(nn.Module):
    """A timm trunk with the backbone interface of model/make_model.py.

    Args:
        name: timm model name.
        img_size: (H, W) of the input, used by ViT-like models.
        last_stride: 1 or 2 (module docstring).
        drop_path: stochastic depth rate (timm's ``drop_path_rate``; 0 = none).

    Attributes:
        feat_dim: the width of timm's pooled pre-logits feature (``head_hidden_size``, else
            ``num_features``).

    Example:
        >>> net = TimmBackbone("resnet18", (128, 64), last_stride=2)
        >>> out = net(torch.randn(2, 3, 128, 64))
        >>> out["feat"].shape, out["patch_tokens"].shape
        (torch.Size([2, 512]), torch.Size([2, 8, 512]))
    """

    def __init__(self, name: str, img_size: Tuple[int, int], last_stride: int = 2,
                 drop_path: float = 0.0):
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        net, self.sized = _create(name, tuple(int(v) for v in img_size), drop_path)
        if last_stride == 1:
            _set_last_stride(net, name)
        self.net = net
        self.name = name
        self.last_stride = last_stride
        # the pooled pre-logits width: a head with its own hidden layer (MobileNetV3's
        # conv_head) makes it differ from the trunk's num_features
        self.feat_dim = int(getattr(net, "head_hidden_size", None) or net.num_features)
        self.num_prefix = int(getattr(net, "num_prefix_tokens", 0))

    def forward(self, x: torch.Tensor, camids=None, viewids=None) -> Dict[str, torch.Tensor]:
        """'feat' (B, D) timm's pooled pre-logits feature; 'patch_tokens' (B, N, D) the final
        feature map in row-major order (CNNs) or the tokens after the prefix tokens (ViTs).
        camids / viewids are accepted for API symmetry and ignored (no SIE)."""
        fmap = self.net.forward_features(x)
        feat = self.net.forward_head(fmap, pre_logits=True)
        if fmap.dim() == 4:
            tokens = fmap.flatten(2).transpose(1, 2)
        else:
            tokens = fmap[:, self.num_prefix:]
        return {"feat": feat, "patch_tokens": tokens}

    def load_pretrained(self, source: Source, strict: bool = True) -> LoadReport:
        """Load timm weights of the same architecture (a file, ``'timm:<name>'`` or a state
        dict): the classifier is skipped, a ``pos_embed`` of another grid is resized
        (bilinear, prefix rows kept), anything else that does not fit is an error (strict) or
        reported."""
        raw, description = read_weights(source, key="MODEL.PRETRAIN_PATH")
        report = LoadReport(source=description, source_format=f"timm {self.name}")
        state = unwrap(raw, report)
        classifier = self.net.pretrained_cfg.get("classifier", "") or ""
        heads = [h for h in (classifier if isinstance(classifier, (list, tuple))
                             else (classifier,)) if h]

        def skip(key: str) -> Optional[str]:
            return ("ImageNet classifier"
                    if any(key == h or key.startswith(h + ".") for h in heads) else None)

        def refit(key: str, value: torch.Tensor, target: torch.Tensor) -> Optional[torch.Tensor]:
            """A pos_embed of another square grid, resized to this model's grid."""
            if key != "pos_embed" or not self.sized:
                return None
            grid_to = self.net.patch_embed.grid_size
            n_src = value.shape[1] - self.num_prefix
            side = int(round(n_src ** 0.5))
            if side * side != n_src:
                return None
            out = resize_pos_embed(value, (side, side), grid_to, num_prefix=self.num_prefix,
                                   mode="bilinear")
            report.resized.append(ResizedKey(key, tuple(value.shape), tuple(out.shape),
                                             f"grid {side}x{side} -> {grid_to[0]}x{grid_to[1]} "
                                             "(bilinear)"))
            return out

        return load_fitting(self.net, state, report, f"timm '{self.name}'", strict, skip, refit)


def build_timm_backbone(name: str, img_size: Tuple[int, int], last_stride: int = 2,
                        drop_path: float = 0.0,
                        pretrained_path: Optional[Source] = None) -> TimmBackbone:
    """Build a :class:`TimmBackbone`, optionally loading weights (report at
    ``backbone.load_report``)."""
    backbone = TimmBackbone(name, img_size, last_stride, drop_path)
    backbone.load_report = backbone.load_pretrained(pretrained_path) if pretrained_path else None
    return backbone
