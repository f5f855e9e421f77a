"""Transforms: shapes, same interpolation at train and test, no in-place mutation, brightness."""
import numpy as np
import torch
from PIL import Image

from configs import load_config
from datasets.transforms import RandomErasing, brightness, build_transforms


def test_train_and_test_pipelines_shape_and_interpolation():
    cfg = load_config(opts=["INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
                            "INPUT.INTERPOLATION", "bilinear"])
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 50, 3), dtype=np.uint8))
    train, test = build_transforms(cfg, True), build_transforms(cfg, False)
    assert train(img).shape == test(img).shape == (3, 64, 32)
    modes = {t.interpolation for t in list(train.transforms) + list(test.transforms)
             if hasattr(t, "interpolation")}
    assert len(modes) == 1 and str(modes.pop()).endswith("BILINEAR")


def test_random_erasing_returns_new_tensor():
    torch.manual_seed(0)
    img = torch.zeros(3, 32, 16)
    before = img.clone()
    out = RandomErasing(probability=1.0)(img)
    assert torch.equal(img, before)
    assert not torch.equal(out, img)


def test_brightness_is_bt709_luma_of_denormalised_image():
    mean, std = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
    rgb = torch.tensor([0.2, 0.6, 1.0]).view(3, 1, 1).expand(3, 4, 4)
    normalised = (rgb - 0.5) / 0.5
    expected = 0.2126 * 0.2 + 0.7152 * 0.6 + 0.0722 * 1.0
    assert abs(brightness(normalised, mean, std).item() - expected) < 1e-6
    batch = torch.stack([normalised, torch.full_like(normalised, 5.0)])  # 5 -> clamped to 1
    assert torch.allclose(brightness(batch, mean, std), torch.tensor([expected, 1.0]), atol=1e-6)


# -- seeded randomness (the augmentation depends only on the generator passed in) -------------

def _pil(h=40, w=24, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_seeded_flip_happens_iff_the_draw_is_below_p():
    from datasets.transforms import RandomHorizontalFlip
    img = _pil()
    flips = 0
    for seed in range(40):
        flipped = np.array_equal(np.asarray(RandomHorizontalFlip(0.5)(img, _gen(seed))),
                                 np.asarray(img)[:, ::-1])
        assert flipped == (torch.rand(1, generator=_gen(seed)).item() < 0.5)
        flips += flipped
    assert 5 < flips < 35


def test_seeded_crop_position_is_top_then_left_from_the_generator():
    from datasets.transforms import RandomCrop
    img = _pil(48, 32)
    positions = set()
    for seed in range(30):
        ref = _gen(seed)
        top = int(torch.randint(0, 48 - 40 + 1, (1,), generator=ref))
        left = int(torch.randint(0, 32 - 24 + 1, (1,), generator=ref))
        out = np.asarray(RandomCrop((40, 24))(img, _gen(seed)))
        assert np.array_equal(out, np.asarray(img)[top:top + 40, left:left + 24])
        positions.add((top, left))
    assert len(positions) > 10
    assert RandomCrop((48, 32))(img, _gen(0)) is img   # nothing to choose, nothing drawn


def _reference_erasing(img, seed, p, sl=0.02, sh=1 / 3, r1=0.3):
    """Zhong et al.'s random erasing written out with every draw from one seeded generator."""
    g = _gen(seed)
    if torch.rand(1, generator=g, dtype=torch.float64).item() >= p:
        return img
    _, h, w = img.shape
    for _ in range(10):
        area = (sl + (sh - sl) * torch.rand(1, generator=g, dtype=torch.float64).item()) * h * w
        lo, hi = np.log(r1), np.log(1 / r1)
        aspect = np.exp(lo + (hi - lo) * torch.rand(1, generator=g, dtype=torch.float64).item())
        eh, ew = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < eh < h and 0 < ew < w:
            top = int(torch.randint(0, h - eh + 1, (1,), generator=g))
            left = int(torch.randint(0, w - ew + 1, (1,), generator=g))
            out = img.clone()
            out[:, top:top + eh, left:left + ew] = torch.randn(3, eh, ew, generator=g)
            return out
    return img


def test_seeded_random_erasing_equals_the_reference():
    img = torch.zeros(3, 32, 16)
    erased = 0
    for seed in range(30):
        out = RandomErasing(probability=0.5)(img, _gen(seed))
        assert torch.equal(out, _reference_erasing(img, seed, 0.5))
        erased += not torch.equal(out, img)
    assert 5 < erased < 25
    assert torch.equal(img, torch.zeros(3, 32, 16))


def test_training_pipeline_depends_only_on_the_generator():
    import random
    cfg = load_config(opts=["INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.PADDING", "10",
                            "INPUT.RE_PROB", "0.5", "INPUT.PROB", "0.5"])
    pipeline = build_transforms(cfg, True)
    img = _pil(100, 50)
    outs = []
    for global_seed in (1, 2):   # the global RNG state does not matter ...
        torch.manual_seed(global_seed)
        random.seed(global_seed)
        outs.append(pipeline(img, _gen(123)))
    assert torch.equal(outs[0], outs[1])
    others = [pipeline(img, _gen(seed)) for seed in range(5)]   # ... the generator does
    assert all(not torch.equal(outs[0], o) for o in others)
