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
