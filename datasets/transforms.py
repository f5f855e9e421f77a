"""Image transforms for training and testing, and the per-sample brightness.

Training (TransReID / reid-strong-baseline order): Resize -> horizontal flip -> zero pad ->
random crop back to size -> ToTensor -> Normalize -> random erasing. Testing: Resize ->
ToTensor -> Normalize. Deliberate difference from TransReID: the SAME interpolation
(INPUT.INTERPOLATION) is used at train and test time (TransReID trains with bicubic and tests
with bilinear).

Seeded randomness: the random steps (flip, crop, erasing) draw ONLY from the ``torch.Generator``
passed to the pipeline (``pipeline(img, generator)``), never from the global ``random`` / torch
state. The training dataset seeds one generator per (SOLVER.SEED, epoch, sample index)
(``datasets/make_dataloader.py``), so an item's augmentation depends on neither the worker that
loads it nor DATALOADER.NUM_WORKERS, and the same config gives the same weights for any worker
count. torchvision's v1 random transforms use the global RNG, so the three random steps are
re-implemented here with the same distributions as the references:

- ``RandomHorizontalFlip(p)``: flip iff ``torch.rand(1) < p`` (torchvision).
- ``RandomCrop(size)`` after ``Pad``: top ``~ randint(0, H - h + 1)``, then left
  ``~ randint(0, W - w + 1)`` (torchvision ``RandomCrop.get_params``, same draw order; no draw
  when the image already has the crop size).
- ``RandomErasing``: as timm / Zhong et al. (class docstring).

Each draw order is fixed (documented per class), so a pipeline is a pure function of the image
and the generator's seed. Without a generator (``generator=None``) the steps draw from torch's
default generator, as torch functions do.

Every transform returns a new image/tensor; inputs are never modified in place.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

_INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

# ITU-R BT.709 luma coefficients (R, G, B).
BT709 = (0.2126, 0.7152, 0.0722)


def _uniform(low: float, high: float, generator: Optional[torch.Generator]) -> float:
    """One float64 draw from U[low, high) (``random.uniform`` of the reference)."""
    u = torch.rand(1, generator=generator, dtype=torch.float64).item()
    return low + (high - low) * u


def _randint(low: int, high: int, generator: Optional[torch.Generator]) -> int:
    """One integer draw from [low, high) (``torch.randint`` semantics, high exclusive)."""
    return int(torch.randint(low, high, (1,), generator=generator).item())


class RandomHorizontalFlip:
    """Flip a PIL image (or a (C, H, W) tensor) left-right with probability ``p``: one draw ``u = torch.rand(1)``,
    flip iff ``u < p`` (torchvision ``RandomHorizontalFlip``)."""

    takes_generator = True

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img, generator: Optional[torch.Generator] = None):
        if torch.rand(1, generator=generator).item() < self.p:
            return TF.hflip(img)
        return img

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomCrop:
    """Crop a PIL image (or a (C, H, W) tensor) to ``size`` (h, w) at a uniformly drawn position: top from
    ``randint(0, H - h + 1)`` first, then left from ``randint(0, W - w + 1)`` (torchvision
    ``RandomCrop.get_params``); an image of exactly that size is returned without a draw."""

    takes_generator = True

    def __init__(self, size: Sequence[int]):
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, img, generator: Optional[torch.Generator] = None):
        _, h, w = TF.get_dimensions(img)   # PIL image or (C, H, W) tensor
        th, tw = self.size
        if h < th or w < tw:
            raise ValueError(f"RandomCrop: image {h}x{w} is smaller than the crop {th}x{tw}")
        if (h, w) == (th, tw):
            return img
        top = _randint(0, h - th + 1, generator)
        left = _randint(0, w - tw + 1, generator)
        return TF.crop(img, top, left, th, tw)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size})"


class RandomErasing:
    """Random erasing (Zhong et al., AAAI 2020), 'pixel' mode as used by TransReID via timm.

    With probability ``probability`` one rectangle of area ratio in [sl, sh] of the image and
    aspect ratio in [r1, 1/r1] is filled with per-pixel standard-normal values (in normalised
    space). Up to 10 attempts to fit the rectangle, as in the reference implementation.
    Draw order: ``u < probability`` gate; per attempt area ratio ~ U[sl, sh], log aspect ~
    U[log r1, -log r1]; on a fitting rectangle top ~ randint(0, h - eh + 1), left ~
    randint(0, w - ew + 1), then the (C, eh, ew) normal fill. The reference draws the geometry
    from Python's ``random`` with the same distributions; here every draw is from ``generator``.
    Returns a new tensor; the input is not modified.
    """

    takes_generator = True

    def __init__(self, probability: float = 0.5, sl: float = 0.02, sh: float = 1 / 3,
                 r1: float = 0.3):
        self.probability = probability
        self.sl, self.sh, self.r1 = sl, sh, r1

    def __call__(self, img: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if _uniform(0.0, 1.0, generator) >= self.probability:
            return img
        _, h, w = img.shape
        area = h * w
        log_ratio = (math.log(self.r1), math.log(1 / self.r1))
        for _ in range(10):
            target = _uniform(self.sl, self.sh, generator) * area
            aspect = math.exp(_uniform(*log_ratio, generator))
            eh = int(round(math.sqrt(target * aspect)))
            ew = int(round(math.sqrt(target / aspect)))
            if 0 < eh < h and 0 < ew < w:
                top = _randint(0, h - eh + 1, generator)
                left = _randint(0, w - ew + 1, generator)
                out = img.clone()
                out[:, top:top + eh, left:left + ew] = torch.randn(
                    img.shape[0], eh, ew, generator=generator, dtype=img.dtype)
                return out
        return img

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.probability}, sl={self.sl}, sh={self.sh:.3f}, r1={self.r1})"


class UInt8ToFloat:
    """(C, H, W) uint8 tensor -> float32 in [0, 1]: ``T.ToTensor`` for an image already held as a
    tensor (the same operation on the same bytes, so the same floats)."""

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.dtype != torch.uint8:
            raise TypeError(f"UInt8ToFloat expects a uint8 tensor, got {img.dtype}")
        return img.to(torch.float32).div(255)

    def __repr__(self) -> str:
        return "UInt8ToFloat()"


class Compose:
    """``T.Compose`` that hands ``generator`` to its random steps (``takes_generator = True``);
    the deterministic torchvision steps are called as usual."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, img, generator: Optional[torch.Generator] = None):
        for step in self.transforms:
            img = step(img, generator) if getattr(step, "takes_generator", False) else step(img)
        return img

    def __repr__(self) -> str:
        inner = "".join(f"\n    {step}" for step in self.transforms)
        return f"Compose({inner}\n)"


def interpolation_mode(name: str) -> InterpolationMode:
    if name not in _INTERPOLATIONS:
        raise ValueError(f"INPUT.INTERPOLATION '{name}' is not one of {sorted(_INTERPOLATIONS)}")
    return _INTERPOLATIONS[name]


def build_transforms(cfg, is_train: bool, cached: bool = False) -> Compose:
    """The train or test pipeline from the INPUT.* keys (PIL image in, normalised tensor out).

    Call it as ``pipeline(img, generator)``: the random steps of the training pipeline draw from
    ``generator`` only (module docstring); the test pipeline draws nothing.

    ``cached=True`` (training only) gives the pipeline after its deterministic prefix
    (:func:`cache_transform`): it takes the (3, H, W) uint8 tensor that prefix made and returns
    exactly the tensor the full pipeline returns for the same image and generator (flip, pad and
    crop move the same bytes; ``UInt8ToFloat`` is ``ToTensor``'s conversion).
    """
    interp = interpolation_mode(cfg.INPUT.INTERPOLATION)
    normalize = T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    if not is_train:
        if cached:
            raise ValueError("build_transforms: cached=True is for the training pipeline only")
        return Compose([T.Resize(list(cfg.INPUT.SIZE_TEST), interpolation=interp),
                        T.ToTensor(), normalize])
    steps = [] if cached else [T.Resize(list(cfg.INPUT.SIZE_TRAIN), interpolation=interp)]
    steps.append(RandomHorizontalFlip(p=cfg.INPUT.PROB))
    if cfg.INPUT.PADDING > 0:
        steps += [T.Pad(cfg.INPUT.PADDING), RandomCrop(cfg.INPUT.SIZE_TRAIN)]
    steps += [UInt8ToFloat() if cached else T.ToTensor(), normalize]
    if cfg.INPUT.RE_PROB > 0:
        steps.append(RandomErasing(probability=cfg.INPUT.RE_PROB))
    return Compose(steps)


def cache_transform(cfg) -> Compose:
    """The deterministic prefix of the training pipeline: PIL image -> resized (3, H, W) uint8
    tensor (H, W = INPUT.SIZE_TRAIN), what DATALOADER.CACHE_IMAGES keeps in memory."""
    interp = interpolation_mode(cfg.INPUT.INTERPOLATION)
    return Compose([T.Resize(list(cfg.INPUT.SIZE_TRAIN), interpolation=interp), T.PILToTensor()])


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
