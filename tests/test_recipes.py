"""Every dataset recipe builds its model and runs a forward pass at its own input size.

The real datasets and ImageNet weights are not available here, so the recipes are checked with
random init and the dataset's camera / view counts (Market 6 cams, Duke 8, MSMT17 15, VeRi 20
cams x 8 views, VehicleID none).
"""
import glob
import os

import pytest
import torch

from configs import load_config
from model.make_model import make_model

COUNTS = {"market1501": (751, 6, 1), "dukemtmcreid": (702, 8, 1), "msmt17": (1041, 15, 1),
          "veri": (576, 20, 8), "vehicleid": (13164, 1, 1)}


def recipes(repo_root):
    return sorted(p for p in glob.glob(os.path.join(repo_root, "configs", "*", "*.yml"))
                  if "Synth" not in p)


@pytest.mark.slow
def test_recipes_build_and_forward(repo_root):
    paths = recipes(repo_root)
    assert len(paths) == 15
    for path in paths:
        cfg = load_config(path, ["MODEL.PRETRAIN_CHOICE", "none"])
        assert cfg.MODEL.PRETRAIN_PATH.endswith(".pth"), path
        classes, cams, views = COUNTS[cfg.DATASETS.NAMES]
        model = make_model(cfg, classes, cams, views).eval()
        h, w = cfg.INPUT.SIZE_TEST
        with torch.no_grad():
            out = model(torch.randn(1, 3, h, w), torch.tensor([cams - 1]),
                        torch.tensor([views - 1]))
        feat = model.test_feature(out, cfg.TEST.NECK_FEAT)
        parts = cfg.MODEL.DEVIDE_LENGTH if cfg.MODEL.JPM else 0
        assert feat.shape == (1, 768 * (1 + parts)), path


def test_missing_pretrained_file_is_a_clear_error(repo_root, tmp_path):
    cfg = load_config(os.path.join(repo_root, "configs", "Market", "vit_base.yml"),
                      ["MODEL.PRETRAIN_PATH", str(tmp_path / "nope.pth"),
                       "MODEL.TRANSFORMER_TYPE", "vit_tiny", "MODEL.VIT_DEPTH", "1"])
    with pytest.raises(FileNotFoundError, match="PRETRAIN_PATH"):
        make_model(cfg, 751, 6, 1)
