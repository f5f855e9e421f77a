"""ResNet-50 backbone for the BoT baseline (reid-strong-baseline), built from timm's 'resnet50'.

Reference: Luo et al., "Bag of Tricks and A Strong Baseline for Deep Person Re-identification"
(michuanhaohao/reid-strong-baseline ``modeling/baseline.py``): torchvision-layout ResNet-50 without
the classifier, the first block of the last stage with stride ``last_stride`` (1 in BoT, doubling
the final map to 16x8 for 256x128 inputs), global average pooling -> 2048-d feature.

The stem and stages are timm's ResNet-50 modules, held at the top level so the parameter names are
the torchvision/timm names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer4.0.downsample.0`` ...):
a torchvision or timm ResNet-50 state dict loads by key (its ``fc`` classifier is skipped).
Deliberate difference: timm's Bottleneck puts the stride on the 3x3 conv (``conv2``), like
torchvision >= 0.3 ("ResNet v1.5"); BoT's own ResNet strides the same conv.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn

from utils.weights_io import LoadReport, Source, load_fitting, read_weights, unwrap


class ResNet50Backbone(nn.Module):
    """ResNet-50 feature extractor (no pooling / classifier inside the trunk).

    Args:
        last_stride: stride of ``layer4`` (1 as BoT, or 2 as ImageNet).

    Attributes:
        feat_dim: 2048.

    Example:
        >>> net = ResNet50Backbone(last_stride=1)
        >>> net(torch.randn(2, 3, 256, 128))['patch_tokens'].shape
        torch.Size([2, 128, 2048])
    """

    def __init__(self, last_stride: int = 1):
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        import timm
        net = timm.create_model("resnet50", pretrained=False, num_classes=0, global_pool="")
        self.conv1, self.bn1, self.act1, self.maxpool = net.conv1, net.bn1, net.act1, net.maxpool
        self.layer1, self.layer2 = net.layer1, net.layer2
        self.layer3, self.layer4 = net.layer3, net.layer4
        first = self.layer4[0]
        first.conv2.stride = (last_stride, last_stride)
        first.downsample[0].stride = (last_stride, last_stride)
        self.last_stride = last_stride
        self.feat_dim = 2048

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> final feature map (B, 2048, h, w)."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor, camids=None, viewids=None) -> Dict[str, torch.Tensor]:
        """Backbone outputs (camids / viewids are accepted for API symmetry and ignored).

        Returns:
            dict: 'feat' (B, 2048) global average pool; 'patch_tokens' (B, h * w, 2048) the
            final map in row-major order.
        """
        fmap = self.forward_features(x)
        return {"feat": fmap.mean(dim=(2, 3)), "patch_tokens": fmap.flatten(2).transpose(1, 2)}

    def load_pretrained(self, source: Source, strict: bool = True) -> LoadReport:
        """Load a timm / torchvision ResNet-50 state dict (file, 'timm:resnet50' or mapping).

        'model' / 'state_dict' wrappers and 'module.' / 'base.' (BoT) prefixes are removed; the
        ``fc`` classifier is skipped.

        Args:
            source: weight file path, 'timm:<model_name>' or a state dict.
            strict: raise on missing model keys, unknown keys or shape mismatches.

        Returns:
            LoadReport.

        Raises:
            FileNotFoundError: missing file (names MODEL.PRETRAIN_PATH).
            ValueError: strict violations.
        """
        raw, description = read_weights(source, key="MODEL.PRETRAIN_PATH")
        report = LoadReport(source=description, source_format="timm/torchvision ResNet-50")
        state = unwrap(raw, report)
        if any(k.startswith("base.") for k in state):  # BoT / TransReID: base.* + heads
            report.left_for_caller = [k for k in state if not k.startswith("base.")]
            state = {k[len("base."):]: v for k, v in state.items() if k.startswith("base.")}
            report.notes.append("stripped the 'base.' prefix (BoT checkpoint)")
        return load_fitting(self, state, report, "ResNet-50", strict,
                            skip=lambda k: "ImageNet classifier" if k.startswith("fc.") else None)


def build_resnet50_backbone(last_stride: int = 1,
                            pretrained_path: Optional[Source] = None) -> ResNet50Backbone:
    """Build the BoT ResNet-50 backbone, optionally loading ImageNet weights.

    Args:
        last_stride: stride of the last stage (BoT: 1).
        pretrained_path: weight file, 'timm:resnet50' or state dict; None = random init.

    Returns:
        ResNet50Backbone (the load report, if any, is at ``backbone.load_report``).
    """
    backbone = ResNet50Backbone(last_stride)
    backbone.load_report = backbone.load_pretrained(pretrained_path) if pretrained_path else None
    return backbone
