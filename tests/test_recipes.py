"""Every dataset recipe builds its model and runs a forward pass at its own input size.

The real datasets and ImageNet weights are not available here, so the recipes are checked with
random init and the dataset's camera / view counts (Market 6 cams, Duke 8, MSMT17 15, VeRi 20
cams x 8 views, VehicleID none); recipes with CLIP fusion get a tiny random-init CLIP tower
(MODEL.CLIP_TINY) instead of the downloaded one.
"""
import glob
import os

import pytest
import torch

from configs import load_config
from model.make_model import make_model
from solver.phase_plan import PhasePlan

COUNTS = {"market1501": (751, 6, 1), "dukemtmcreid": (702, 8, 1), "msmt17": (1041, 15, 1),
          "veri": (576, 20, 8), "vehicleid": (13164, 1, 1)}


#: the text-based person search recipes (tests/test_tbps_recipes.py)
TBPS_FOLDERS = ("CUHK-PEDES", "ICFG-PEDES", "RSTPReid", "VN3K")


def recipes(repo_root, synth=False):
    """The image re-ID recipes (with ``synth`` also the SynthPedes ones)."""
    return sorted(p for p in glob.glob(os.path.join(repo_root, "configs", "*", "*.yml"))
                  if (synth or "Synth" not in p)
                  and os.path.basename(os.path.dirname(p)) not in TBPS_FOLDERS
                  and load_config(p, check_paths=False).MODEL.TASK == "reid")


@pytest.mark.slow
def test_recipes_build_and_forward(repo_root):
    paths = recipes(repo_root)
    assert len(paths) == 27
    built = set()
    for path in paths:
        cfg = load_config(path, ["MODEL.PRETRAIN_CHOICE", "none", "MODEL.CLIP_TINY", "True"])
        key = (cfg.MODEL.dump(), cfg.INPUT.dump(), cfg.LOSS.SUPCON.dump(), cfg.DATASETS.NAMES)
        if key in built:   # the loss variants of one dataset share the model
            continue
        built.add(key)
        assert cfg.MODEL.PRETRAIN_PATH.endswith(".pth"), path
        classes, cams, views = COUNTS[cfg.DATASETS.NAMES]
        model = make_model(cfg, classes, cams, views).eval()
        h, w = cfg.INPUT.SIZE_TEST
        with torch.no_grad():
            out = model({"img": torch.randn(1, 3, h, w), "camid": torch.tensor([cams - 1]),
                         "viewid": torch.tensor([views - 1])})
        feat = model.test_feature(out, cfg.TEST.NECK_FEAT)
        parts = cfg.MODEL.DEVIDE_LENGTH if cfg.MODEL.JPM else 0
        assert feat.shape == (1, 768 * (1 + parts)), path


def test_missing_pretrained_file_is_a_clear_error(repo_root, tmp_path):
    cfg = load_config(os.path.join(repo_root, "configs", "Market", "vit_base.yml"),
                      ["MODEL.PRETRAIN_PATH", str(tmp_path / "nope.pth"),
                       "MODEL.TRANSFORMER_TYPE", "vit_tiny", "MODEL.VIT_DEPTH", "1"],
                      check_paths=False)   # make_model's own check, behind the load-time one
    with pytest.raises(FileNotFoundError, match="PRETRAIN_PATH"):
        make_model(cfg, 751, 6, 1)


def test_every_recipe_has_a_valid_phase_plan(repo_root):
    for path in recipes(repo_root, synth=True):
        PhasePlan(load_config(path, check_paths=False))   # raises on an inconsistent plan


@pytest.mark.parametrize("dataset", ["VeRi", "Market"])
def test_model_b_variants_do_what_the_readme_says(repo_root, dataset):
    def plan(name):
        path = os.path.join(repo_root, "configs", dataset, f"deit_transreid_stride_{name}.yml")
        return PhasePlan(load_config(path, check_paths=False))

    b0 = plan("baseline").state(1)
    assert (b0.metric, b0.num_instances, b0.weight("supcon")) == ("triplet", 4, 0.0)
    sup = plan("ce_triplet_pk8_prebn_supcon_prebn")
    assert (sup.state(1).num_instances, sup.state(1).weight("supcon")) == (8, 0.3)
    assert sup.cfg.LOSS.SUPCON.FEAT_SRC == "pre_bn" and sup.cfg.LOSS.TRIPLET.FEAT_SRC == "pre_bn"
    abc = plan("A_ce_triplet_B_ce_tripletx_supcon_C_ce_triplet_supcon")
    states = [abc.state(e) for e in (40, 41, 80, 81, 120)]
    assert [(s.metric, s.num_instances) for s in states] == [
        ("triplet", 4), ("tripletx", 8), ("tripletx", 8), ("triplet", 8), ("triplet", 8)]
    assert [s.weight("supcon") for s in states] == pytest.approx([0, 0.3, 0.3, 0.3, 0.3])
    for name, supcon in (("ce_triplet_tripletx_supcon_prebn_brightness", 0.3),
                         ("ce_triplet_tripletx_brightness", 0.0)):
        s = plan(name).state(1)
        assert (s.routing, s.num_instances, s.weight("supcon")) == (True, 8, supcon)


def test_veri_clip_variants_do_what_the_readme_says(repo_root):
    """Model B README 4.6 / table row W5: CE + Triplet, P x K 8 x 4, plus CLIP fusion."""
    def load(name):
        path = os.path.join(repo_root, "configs", "VeRi", f"deit_transreid_stride_{name}.yml")
        return load_config(path, check_paths=False)

    baseline = load("baseline")
    for name in ("ce_triplet_openclip_minimal", "ce_triplet_tinyclip_quickwin"):
        cfg = load(name)
        s = PhasePlan(cfg).state(1)
        assert (s.metric, s.num_instances, s.weight("supcon"), s.routing) == (
            "triplet", 4, 0.0, False), name
        assert (cfg.SOLVER.IMS_PER_BATCH, list(cfg.LOSS.NAMES)) == (32, ["id", "triplet"]), name
        assert cfg.MODEL.USE_CLIP and not cfg.MODEL.CLIP_TINY and cfg.MODEL.JPM, name
        # apart from the CLIP keys and the output folder, the recipe is B0
        clipless = cfg.clone()
        clipless.defrost()
        for key in [k for k in clipless.MODEL if k.startswith("CLIP_") or k == "USE_CLIP"]:
            clipless.MODEL[key] = baseline.MODEL[key]
        clipless.OUTPUT_DIR = baseline.OUTPUT_DIR
        assert clipless.dump() == baseline.dump(), name
    m = load("ce_triplet_openclip_minimal").MODEL
    assert (m.CLIP_IMPL, m.CLIP_FUSION, m.CLIP_BACKBONE, m.CLIP_PRETRAIN, list(m.CLIP_INPUT_SIZE)) \
        == ("open_clip", "minimal", "ViT-B-16", "laion2b_s34b_b88k", [224, 224])
    m = load("ce_triplet_tinyclip_quickwin").MODEL
    assert (m.CLIP_IMPL, m.CLIP_HF_ID, list(m.CLIP_INPUT_SIZE), m.CLIP_FINETUNE, m.CLIP_LR_SCALE,
            m.CLIP_USE_AFEM, m.CLIP_USE_SEM_REFINE) == (
        "hf", "wkcn/TinyCLIP-ViT-61M-32-Text-29M-LAION400M", [224, 224], True, 0.2, True, True)
