"""TBPS-CLIP's augmentation: the SimCLR image pool (SS-I), the MVS image pool (MVS-I) and the
caption augmentation (back-translation, random word deletion).

Reference: TBPS-CLIP (Cao et al., "An Empirical Study of CLIP for Text-based Person Search",
AAAI 2024), ``misc/data.py`` (``get_self_supervised_augmentation``, ``Choose`` over
``rand_from``), ``misc/caption_dataset.py`` (``captions_bt``), ``model/tbps_model.py``
(``back_trans`` / ``backtrans_p``, EDA ``random_deletion`` with ``eda_alpha``); REFERENCES.md
section 5 (SS-I, MVS-I).

Image pools (torchvision ``transforms.v2.functional`` kernels on tensors; every random draw from
the ``torch.Generator`` passed in, as ``datasets/transforms.py``, so an item's views are a pure
function of (SOLVER.SEED, epoch, index, view); see :data:`VIEW_STREAMS`):

- SimCLR pool (:func:`simclr_pool`, views ``img_ss1`` / ``img_ss2``): RandomResizedCrop to
  INPUT.SIZE_TRAIN with area scale [0.2, 1] and aspect [3/4, 4/3] -> ColorJitter(brightness 0.4,
  contrast 0.4, saturation 0.4, hue 0.1) with p 0.8 -> grayscale with p 0.2 -> Gaussian blur with
  sigma ~ U[0.1, 2] with p 0.5 -> horizontal flip p 0.5 -> normalise (INPUT.PIXEL_MEAN / STD).
- MVS pool (:func:`mvs_pool`, view ``img_mvs``, and the main image with INPUT.TBPS_AUG.MAIN
  'mvs'): INPUT.TBPS_AUG.MVS_OPS (2) operations drawn uniformly WITH replacement from
  [ColorJitter(0.1, 0.1, 0.1, 0), rotation U[-15, 15] deg (nearest, fill 0), RandomResizedCrop
  scale [0.9, 1], grayscale p 0.1, horizontal flip p 0.5, random erasing p 0.5 of area [0.10,
  0.20], aspect [0.3, 3.3], value 0], applied in the drawn order on the [0, 1] image, then
  normalised (``numpy.random.choice(rand_from, 2)`` of the reference; the parameters are
  torchvision's defaults there).

Both pools take the (3, H, W) uint8 image already resized to INPUT.SIZE_TRAIN (the training
pipeline's deterministic prefix, ``datasets.transforms.cache_transform``; what
DATALOADER.CACHE_IMAGES holds), so they work alike with and without the cache. DIFFERENCE: the
reference's SimCLR pool crops the image at its file resolution (``RandomResizedCrop`` on the PIL
image); here it crops the resized image (on CUHK-PEDES' ~100 x 300-pixel crops resized to 384 x
128 the two are close; a 0.2-area crop is up-sampled from fewer pixels). Its Gaussian blur is
PIL's ``GaussianBlur(radius=sigma)``; here a Gaussian kernel of size 2 ceil(3 sigma) + 1 (odd,
at most the image side) with that sigma. ColorJitter draws its order and factors as torchvision's
``ColorJitter.get_params`` (order = randperm(4), then brightness, contrast, saturation, hue
factors), each on the float image.

Caption augmentation (:class:`CaptionAugment`; training captions only, off by default): with
INPUT.TEXT_AUG.BACKTRANS_P the caption is replaced by its back-translated version (the record's
``captions_bt``, the same position as the caption in ``captions``; TBPS-CLIP's
``{split}_reid.json`` field), then every word is deleted with INPUT.TEXT_AUG.DELETE_P (EDA's
random deletion: a one-word caption is kept, and when every word was deleted one of them, drawn
uniformly, is kept). Draws from ``numpy.random.default_rng([seed, epoch, index,``
:data:`TEXT_STREAM` ``])``: first u_bt (always), then one u per word, then the kept word's index
(only when all were deleted). DIFFERENCES: a record without a back-translation keeps its caption
(the reference substitutes an empty string); EDA's one-word case returns a list there (a bug),
the word here.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as F2

from configs.validate import TBPS_AUG_MAIN, mvs_losses

from .transforms import Compose, RandomHorizontalFlip, UInt8ToFloat, _randint, _uniform

#: (seed, epoch, index, stream) -> the generator of each extra view (the main image's
#: augmentation is stream 1, ``datasets.make_dataloader.augment_seed``)
VIEW_STREAMS = {"img_ss1": 3, "img_ss2": 4, "img_mvs": 5}
#: the caption augmentation's stream word (the caption draw itself is (seed, epoch, index))
TEXT_STREAM = 2
#: INPUT.TBPS_AUG.MAIN values: the main training image's pipeline (stated in configs/validate.py)
MAIN_PIPELINES = TBPS_AUG_MAIN


# ---- operations on (3, H, W) float images in [0, 1] --------------------------------------------
class ColorJitter:
    """torchvision ``ColorJitter(brightness, contrast, saturation, hue)`` with draws from the
    generator: the order ``torch.randperm(4)``, then a factor per enabled operation (brightness,
    contrast, saturation from U[max(0, 1 - x), 1 + x], hue from U[-h, h]; 0 = disabled, no draw),
    applied in the drawn order."""

    takes_generator = True

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float):
        self.values = (brightness, contrast, saturation, hue)

    def __call__(self, img: torch.Tensor, generator: Optional[torch.Generator] = None):
        order = torch.randperm(4, generator=generator).tolist()
        factors = []
        for k, x in enumerate(self.values):
            if x <= 0:
                factors.append(None)
            elif k == 3:
                factors.append(_uniform(-x, x, generator))
            else:
                factors.append(_uniform(max(0.0, 1 - x), 1 + x, generator))
        kernels = (F2.adjust_brightness, F2.adjust_contrast, F2.adjust_saturation, F2.adjust_hue)
        for k in order:
            if factors[k] is not None:
                img = kernels[k](img, factors[k])
        return img

    def __repr__(self) -> str:
        return "ColorJitter(b={}, c={}, s={}, h={})".format(*self.values)


class RandomApply:
    """``op`` with probability ``p``: one draw u, apply iff u < p (torchvision ``RandomApply``)."""

    takes_generator = True

    def __init__(self, op, p: float):
        self.op, self.p = op, float(p)

    def __call__(self, img: torch.Tensor, generator: Optional[torch.Generator] = None):
        if torch.rand(1, generator=generator).item() < self.p:
            return self.op(img, generator)
        return img

    def __repr__(self) -> str:
        return f"RandomApply({self.op}, p={self.p})"


class RandomGrayscale:
    """Grayscale (3 equal channels, ITU-R 601 weights) with probability ``p`` (one draw)."""

    takes_generator = True

    def __init__(self, p: float):
        self.p = float(p)

    def __call__(self, img: torch.Tensor, generator: Optional[torch.Generator] = None):
        if torch.rand(1, generator=generator).item() < self.p:
            return F2.rgb_to_grayscale(img, num_output_channels=3)
        return img

    def __repr__(self) -> str:
        return f"RandomGrayscale(p={self.p})"


class GaussianBlur:
    """Gaussian blur with sigma ~ U[low, high] (one draw; SimCLR's blur): kernel size 2 ceil(3
    sigma) + 1, capped at the largest odd size below twice the shorter image side."""

    takes_generator = True

    def __init__(self, sigma: Tuple[float, float] = (0.1, 2.0)):
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, img: torch.Tensor, generator: Optional[torch.Generator] = None):
        sigma = _uniform(*self.sigma, generator)
        size = 2 * math.ceil(3 * sigma) + 1
        side = min(img.shape[-2:])
        size = min(size, 2 * side - 1 if side > 1 else 1)
        return F2.gaussian_blur(img, [size, size], [sigma, sigma])

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma={self.sigma})"


class RandomResizedCrop:
    """torchvision ``RandomResizedCrop(size, scale, ratio)`` (bilinear, antialiased) with draws
    from the generator, in ``get_params``' order: up to 10 attempts of area ~ U[scale] x H W and
    log aspect ~ U[log ratio]; on the first fitting box top ~ randint(0, H - h + 1), left ~
    randint(0, W - w + 1); else the central crop with the aspect clamped to ``ratio``."""

    takes_generator = True

    def __init__(self, size: Sequence[int], scale: Tuple[float, float],
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3)):
        self.size = [int(size[0]), int(size[1])]
        self.scale, self.ratio = tuple(scale), tuple(ratio)

    def params(self, height: int, width: int, generator) -> Tuple[int, int, int, int]:
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * _uniform(*self.scale, generator)
            aspect = math.exp(_uniform(*log_ratio, generator))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return _randint(0, height - h + 1, generator), _randint(0, width - w + 1,
                                                                         generator), h, w
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            h, w = height, int(round(height * max(self.ratio)))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: torch.Tensor, generator: Optional[torch.Generator] = None):
        top, left, h, w = self.params(img.shape[-2], img.shape[-1], generator)
        return F2.resized_crop(img, top, left, h, w, self.size,
                               interpolation=T.InterpolationMode.BILINEAR, antialias=True)

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale})"


class RandomRotation:
    """Rotation by an angle ~ U[-degrees, degrees] (one draw), nearest interpolation, the same
    size, corners filled with 0 (torchvision ``RandomRotation(degrees)`` defaults)."""

    takes_generator = True

    def __init__(self, degrees: float):
        self.degrees = float(degrees)

    def __call__(self, img: torch.Tensor, generator: Optional[torch.Generator] = None):
        angle = _uniform(-self.degrees, self.degrees, generator)
        return F2.rotate(img, angle, interpolation=T.InterpolationMode.NEAREST, fill=0.0)

    def __repr__(self) -> str:
        return f"RandomRotation({self.degrees})"


class RandomErasingValue:
    """torchvision ``RandomErasing(p, scale, ratio, value=0)`` with draws from the generator:
    gate u < p; up to 10 attempts of area ~ U[scale] x H W and log aspect ~ U[log ratio], h =
    round(sqrt(area aspect)), w = round(sqrt(area / aspect)); on the first box with h < H and w < W
    top ~ randint(0, H - h + 1), left ~ randint(0, W - w + 1), the box set to ``value``. Unlike
    ``datasets.transforms.RandomErasing`` (TransReID's, noise in normalised space) this one runs
    before normalisation with a constant, as TBPS-CLIP's pool. Returns a new tensor."""

    takes_generator = True

    def __init__(self, p: float = 0.5, scale: Tuple[float, float] = (0.10, 0.20),
                 ratio: Tuple[float, float] = (0.3, 3.3), value: float = 0.0):
        self.p, self.scale, self.ratio, self.value = float(p), tuple(scale), tuple(ratio), value

    def __call__(self, img: torch.Tensor, generator: Optional[torch.Generator] = None):
        if torch.rand(1, generator=generator).item() >= self.p:
            return img
        height, width = img.shape[-2:]
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = height * width * _uniform(*self.scale, generator)
            aspect = math.exp(_uniform(*log_ratio, generator))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if not (h < height and w < width):
                continue
            top = _randint(0, height - h + 1, generator)
            left = _randint(0, width - w + 1, generator)
            out = img.clone()
            out[..., top:top + h, left:left + w] = self.value
            return out
        return img

    def __repr__(self) -> str:
        return f"RandomErasingValue(p={self.p}, scale={self.scale}, value={self.value})"


class ChooseOps:
    """``k`` operations drawn uniformly with replacement (``torch.randint(0, len(ops), (k,))``,
    one draw of k indices), applied in the drawn order (TBPS-CLIP ``Choose``)."""

    takes_generator = True

    def __init__(self, ops: Sequence, k: int):
        self.ops, self.k = list(ops), int(k)

    def chosen(self, generator: Optional[torch.Generator]) -> List[int]:
        return torch.randint(0, len(self.ops), (self.k,), generator=generator).tolist()

    def __call__(self, img: torch.Tensor, generator: Optional[torch.Generator] = None):
        for i in self.chosen(generator):
            img = self.ops[i](img, generator)
        return img

    def __repr__(self) -> str:
        return f"ChooseOps(k={self.k}, from {self.ops})"


# ---- the pools ----------------------------------------------------------------------------------
def _size(cfg) -> List[int]:
    return [int(s) for s in cfg.INPUT.SIZE_TRAIN]


def simclr_pool(cfg) -> Compose:
    """SS-I's SimCLR view pipeline (module docstring): resized uint8 (3, H, W) -> normalised
    float tensor of INPUT.SIZE_TRAIN; ``pipeline(img, generator)``."""
    return Compose([UInt8ToFloat(), RandomResizedCrop(_size(cfg), (0.2, 1.0)),
                    RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8), RandomGrayscale(0.2),
                    RandomApply(GaussianBlur((0.1, 2.0)), 0.5), RandomHorizontalFlip(0.5),
                    T.Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)])


def mvs_pool(cfg) -> Compose:
    """MVS-I's pool (module docstring): INPUT.TBPS_AUG.MVS_OPS operations drawn with replacement,
    resized uint8 (3, H, W) -> normalised float tensor; ``pipeline(img, generator)``."""
    ops = [ColorJitter(0.1, 0.1, 0.1, 0.0), RandomRotation(15.0),
           RandomResizedCrop(_size(cfg), (0.9, 1.0)), RandomGrayscale(0.1),
           RandomHorizontalFlip(0.5), RandomErasingValue(0.5, (0.10, 0.20))]
    return Compose([UInt8ToFloat(), ChooseOps(ops, cfg.INPUT.TBPS_AUG.MVS_OPS),
                    T.Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)])


def view_pipelines(cfg) -> Dict[str, Compose]:
    """The extra views a config can ask for, by batch key: ``img_ss1`` / ``img_ss2`` (the SimCLR
    pool) with 'ss' in LOSS.NAMES, ``img_mvs`` (the MVS pool) when a loss of LOSS.NAMES runs
    with MVS (LOSS.<NAME>.MVS; ``configs.validate.mvs_losses``). Which of them a batch carries is decided per epoch (``ImageDataset.set_views``,
    from ``processor.processor.batch_views``)."""
    if cfg.MODEL.TASK != "tbps":
        return {}
    views = {}
    if "ss" in cfg.LOSS.NAMES:
        views["img_ss1"] = views["img_ss2"] = simclr_pool(cfg)
    if mvs_losses(cfg):
        views["img_mvs"] = mvs_pool(cfg)
    return views


def main_pipeline(cfg, prefix: Optional[Compose]) -> Optional[Compose]:
    """The main training image's pipeline with INPUT.TBPS_AUG.MAIN 'mvs' (TBPS-CLIP draws the
    main image from the MVS pool too): ``prefix`` (the deterministic resize to uint8, None when
    the images are cached) + the MVS pool. None for 'standard' (``build_transforms``' pipeline)."""
    if cfg.INPUT.TBPS_AUG.MAIN == "standard":
        return None
    if cfg.INPUT.TBPS_AUG.MAIN != "mvs":
        raise ValueError(f"INPUT.TBPS_AUG.MAIN '{cfg.INPUT.TBPS_AUG.MAIN}' is not one of "
                         f"{list(MAIN_PIPELINES)}")
    steps = (list(prefix.transforms) if prefix is not None else []) + mvs_pool(cfg).transforms
    return Compose(steps)


# ---- captions -----------------------------------------------------------------------------------
def random_deletion(caption: str, p: float, rng: np.random.Generator) -> str:
    """EDA's random deletion (Wei & Zou 2019; TBPS-CLIP ``eda_alpha`` 0.05): each whitespace-
    separated word is kept iff u > p (one u ~ U[0, 1) per word, in order); a one-word caption is
    returned as it is (no draw); when every word was deleted, one word drawn uniformly is kept.
    Never returns an empty caption for a non-empty one; p = 0 returns the words unchanged."""
    words = caption.split()
    if len(words) <= 1:
        return caption
    kept = [w for w in words if rng.random() > p]
    if not kept:
        return words[int(rng.integers(len(words)))]
    return " ".join(kept)


class CaptionAugment:
    """The training captions' augmentation (module docstring): back-translation with
    probability ``backtrans_p``, then random deletion with ``delete_p``.

    Args:
        delete_p: INPUT.TEXT_AUG.DELETE_P. backtrans_p: INPUT.TEXT_AUG.BACKTRANS_P.
        seed: SOLVER.SEED (the first word of every draw's seed).

    Example:
        >>> aug = CaptionAugment(0.05, 0.1, seed=0)
        >>> aug("a man in a red coat", "a man wearing a red jacket", epoch=1, index=7)
    """

    def __init__(self, delete_p: float, backtrans_p: float, seed: int = 0):
        for name, p in (("DELETE_P", delete_p), ("BACKTRANS_P", backtrans_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"INPUT.TEXT_AUG.{name} {p} must be in [0, 1]")
        self.delete_p, self.backtrans_p, self.seed = float(delete_p), float(backtrans_p), int(seed)

    @property
    def active(self) -> bool:
        return self.delete_p > 0 or self.backtrans_p > 0

    def __call__(self, caption: str, back_translation: Optional[str], epoch: int,
                 index: int) -> str:
        rng = np.random.default_rng([self.seed, int(epoch), int(index), TEXT_STREAM])
        u_bt = rng.random()
        if back_translation and u_bt < self.backtrans_p:
            caption = back_translation
        if self.delete_p > 0:
            caption = random_deletion(caption, self.delete_p, rng)
        return caption
