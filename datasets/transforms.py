"""Image transforms for training and testing, and the per-sample brightness.

Training (TransReID / reid-strong-baseline order): Resize -> horizontal flip -> zero pad ->
random crop back to size -> ToTensor -> Normalize -> random erasing. Testing: Resize ->
ToTensor -> Normalize. Deliberate difference from TransReID: the SAME interpolation
(INPUT.INTERPOLATION) is used at train and test time (TransReID trains with bicubic and tests
with bilinear).

Every transform returns a new image/tensor; inputs are never modified in place.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

import torch
import torchvision.transforms as T
from torchvision.transforms import InterpolationMode

_INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

# ITU-R BT.709 luma coefficients (R, G, B).
BT709 = (0.2126, 0.7152, 0.0722)


class RandomErasing:
    """Random erasing (Zhong et al., AAAI 2020), 'pixel' mode as used by TransReID via timm.

    With probability ``probability`` one rectangle of area ratio in [sl, sh] of the image and
    aspect ratio in [r1, 1/r1] is filled with per-pixel standard-normal values (in normalised
    space). Up to 10 attempts to fit the rectangle, as in the reference implementation.
    Returns a new tensor; the input is not modified.
    """

    def __init__(self, probability: float = 0.5, sl: float = 0.02, sh: float = 1 / 3,
                 r1: float = 0.3):
        self.probability = probability
        self.sl, self.sh, self.r1 = sl, sh, r1

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.probability:
            return img
        _, h, w = img.shape
        area = h * w
        for _ in range(10):
            target = random.uniform(self.sl, self.sh) * area
            log_ratio = (math.log(self.r1), math.log(1 / self.r1))
            aspect = math.exp(random.uniform(*log_ratio))
            eh = int(round(math.sqrt(target * aspect)))
            ew = int(round(math.sqrt(target / aspect)))
            if 0 < eh < h and 0 < ew < w:
                top = random.randint(0, h - eh)
                left = random.randint(0, w - ew)
                out = img.clone()
                out[:, top:top + eh, left:left + ew] = torch.randn(img.shape[0], eh, ew)
                return out
        return img

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.probability}, sl={self.sl}, sh={self.sh:.3f}, r1={self.r1})"


def interpolation_mode(name: str) -> InterpolationMode:
    if name not in _INTERPOLATIONS:
        raise ValueError(f"INPUT.INTERPOLATION '{name}' is not one of {sorted(_INTERPOLATIONS)}")
    return _INTERPOLATIONS[name]


def build_transforms(cfg, is_train: bool) -> T.Compose:
    """The train or test pipeline from the INPUT.* keys (PIL image in, normalised tensor out)."""
    interp = interpolation_mode(cfg.INPUT.INTERPOLATION)
    normalize = T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    if not is_train:
        return T.Compose([T.Resize(list(cfg.INPUT.SIZE_TEST), interpolation=interp),
                          T.ToTensor(), normalize])
    steps = [T.Resize(list(cfg.INPUT.SIZE_TRAIN), interpolation=interp),
             T.RandomHorizontalFlip(p=cfg.INPUT.PROB)]
    if cfg.INPUT.PADDING > 0:
        steps += [T.Pad(cfg.INPUT.PADDING), T.RandomCrop(list(cfg.INPUT.SIZE_TRAIN))]
    steps += [T.ToTensor(), normalize]
    if cfg.INPUT.RE_PROB > 0:
        steps.append(RandomErasing(probability=cfg.INPUT.RE_PROB))
    return T.Compose(steps)


def brightness(img: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Mean BT.709 luma of a normalised image tensor, de-normalised and clamped to [0, 1].

    mu = mean_xy(0.2126 R + 0.7152 G + 0.0722 B) on the augmented crop (DESIGN.md section 2,
    REFERENCES.md 3.3). Accepts (3,H,W) or (B,3,H,W); returns a scalar or (B,) tensor.
    """
    mean_t = torch.as_tensor(mean, dtype=img.dtype).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=img.dtype).view(3, 1, 1)
    rgb = (img * std_t + mean_t).clamp(0.0, 1.0)
    weights = torch.as_tensor(BT709, dtype=img.dtype).view(3, 1, 1)
    luma = (rgb * weights).sum(dim=-3)
    return luma.mean(dim=(-2, -1))
