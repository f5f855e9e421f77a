"""Every text-based person search recipe (configs/{CUHK-PEDES,ICFG-PEDES,RSTPReid,VN3K}/) loads,
has the anchors' settings (REFERENCES.md section 5), and builds its model (tiny random-init towers
of its family substituted: the real weights are not available here), loss composer, phase plan,
optimiser and scheduler; one training step runs through the composer."""
import glob
import os

import pytest
import torch

from configs import load_config
from configs.validate import mvs_losses
from losses.make_loss import make_loss
from model.make_model import make_model
from solver.make_optimizer import make_optimizer
from solver.phase_plan import PhasePlan
from solver.scheduler import make_scheduler
from datasets.tokenize import build_tokenizer

FOLDERS = ("CUHK-PEDES", "ICFG-PEDES", "RSTPReid", "VN3K")
CLASSES = {"cuhkpedes": 11003, "icfgpedes": 2792, "rstpreid": 3701, "vn3k": 100}
TINY = ["MODEL.TBPS.TINY", "True", "MODEL.TBPS.PRETRAINED", "", "MODEL.DEVICE", "cpu",
        "MODEL.TBPS.CONTEXT_LENGTH", "32", "INPUT.SIZE_TRAIN", "[64, 32]",
        "INPUT.SIZE_TEST", "[64, 32]"]


#: seeds/001's strategies -> (LOSS.NAMES, {name: (W, M, GAMMA)} of the circle losses)
CIRCLE_STRATEGIES = {
    "baseline": (["sigmoid_id", "citc", "ss"], {}),
    "auxiliary": (["sigmoid_id", "circle_inmodal", "citc", "ss"],
                  {"circle_inmodal": (0.1, 0.25, 64.0)}),
    "intrinsic": (["nc_itc", "citc", "ss"], {"nc_itc": (1.0, 0.25, 64.0)}),
    "circle_only": (["circle_cross", "citc", "ss"], {"circle_cross": (1.0, 0.25, 64.0)}),
    "auxiliary_cross": (["sigmoid_id", "circle_cross", "citc", "ss"],
                        {"circle_cross": (0.1, 0.25, 64.0)}),
}
#: the losses with MVS on, per strategy (the reference scripts: MVS on every "NITC" / circle
#: term of the strategy; the in-modal circle has none)
CIRCLE_MVS = {"baseline": ("sigmoid_id",), "auxiliary": ("sigmoid_id",), "intrinsic": ("nc_itc",),
              "circle_only": ("circle_cross",), "auxiliary_cross": ("sigmoid_id", "circle_cross")}


def tbps_batch(cfg, n, classes, size):
    """n (image, caption) pairs of n // 2 identities."""
    ids, mask = build_tokenizer(cfg)([f"a person in a red shirt number {i // 2}" for i in range(n)])
    torch.manual_seed(0)
    return {"img": torch.randn(n, 3, *size), "text_ids": ids, "text_mask": mask,
            "pid": torch.arange(n) // 2 % classes}


def tbps_recipes(repo_root):
    return sorted(p for f in FOLDERS for p in glob.glob(os.path.join(repo_root, "configs", f, "*.yml")))


def test_there_is_a_recipe_per_anchor_and_dataset(repo_root):
    names = {os.path.relpath(p, os.path.join(repo_root, "configs")) for p in tbps_recipes(repo_root)}
    for folder in FOLDERS[:3]:
        for recipe in ("clip_itc", "irra_sdm_id", "tbps_clip_simplified"):
            assert f"{folder}/{recipe}.yml" in names
    assert "VN3K/msiglip_sigmoid.yml" in names
    for strategy in CIRCLE_STRATEGIES:
        assert f"VN3K/circle_{strategy}.yml" in names
    assert "VN3K/circle_auxiliary_cross_curriculum.yml" in names


def test_recipes_have_the_anchor_settings(repo_root):
    def load(rel):
        return load_config(os.path.join(repo_root, "configs", rel), check_paths=False)
    irra = load("CUHK-PEDES/irra_sdm_id.yml")
    assert list(irra.LOSS.NAMES) == ["sdm", "id"] and irra.LOSS.SDM.TEMPERATURE == 0.02
    assert (irra.SOLVER.OPTIMIZER_NAME, irra.SOLVER.BASE_LR, irra.SOLVER.MAX_EPOCHS,
            irra.SOLVER.IMS_PER_BATCH, list(irra.INPUT.SIZE_TRAIN)) == ("Adam", 1e-5, 60, 64, [384, 128])
    assert irra.MODEL.TBPS.ID_LR_SCALE == 5.0 and irra.DATALOADER.SAMPLER == "random"
    assert (irra.MODEL.TBPS.OPEN_CLIP_MODEL, irra.MODEL.TBPS.PRETRAINED) == ("ViT-B-16", "openai")
    clip = load("RSTPReid/clip_itc.yml")
    assert list(clip.LOSS.NAMES) == ["itc"] and list(clip.LOSS.PHASED.FREEZE_SEQ) == ["logit_scale"]
    assert clip.MODEL.TBPS.INIT_TEMPERATURE == 0.02 and clip.MODEL.TBPS.RESET_LOGIT_PARAMS
    tbps = load("ICFG-PEDES/tbps_clip_simplified.yml")
    assert list(tbps.LOSS.NAMES) == ["nitc", "ritc"] and tbps.LOSS.NITC.SOFT_RATIO == 0.5
    assert (tbps.SOLVER.OPTIMIZER_NAME, tbps.SOLVER.BASE_LR, tbps.SOLVER.WEIGHT_DECAY,
            tbps.SOLVER.MAX_EPOCHS, list(tbps.INPUT.SIZE_TRAIN)) == ("AdamW", 1e-4, 0.02, 5, [224, 224])
    assert tbps.DATASETS.VAL_IDS == 310 and tbps.TEST.SELECT_ON == "val"
    vn = load("VN3K/msiglip_sigmoid.yml")
    assert (vn.MODEL.TBPS.FAMILY, vn.MODEL.TBPS.HF_MODEL, vn.MODEL.TBPS.CONTEXT_LENGTH) == (
        "hf_siglip", "google/siglip-base-patch16-256-multilingual", 64)
    assert list(vn.LOSS.NAMES) == ["sigmoid_id"] and vn.DATASETS.CAPTION_LANG == "vi"
    for path in tbps_recipes(repo_root):
        cfg = load_config(path, check_paths=False)
        assert cfg.MODEL.TASK == "tbps" and cfg.TEST.SELECT_ON == "val", path


def test_circle_recipes_have_the_study_settings(repo_root):
    def load(rel):
        return load_config(os.path.join(repo_root, "configs", rel), check_paths=False)
    base = load("VN3K/msiglip_sigmoid.yml")
    for strategy, (names, circles) in CIRCLE_STRATEGIES.items():
        cfg = load(f"VN3K/circle_{strategy}.yml")
        assert list(cfg.LOSS.NAMES) == names, strategy
        assert (cfg.LOSS.CITC.W, cfg.LOSS.CITC.INMODAL, cfg.LOSS.CITC.CROSSMODAL) == (0.1, 0.25, 0.25)
        assert (cfg.LOSS.SS.W, cfg.LOSS.SS.T, cfg.LOSS.SS.HIDDEN_DIM) == (0.4, 0.1, 768)
        assert mvs_losses(cfg) == CIRCLE_MVS[strategy], strategy
        for name, wmg in circles.items():
            c = cfg.LOSS[name.upper()]
            assert (c.W, c.M, c.GAMMA) == wmg and list(c.W_SEQ) == [], (strategy, name)
        # the mSigLIP tower and the rest of the recipe are msiglip_sigmoid.yml's
        assert cfg.MODEL.TBPS == base.MODEL.TBPS and cfg.SOLVER == base.SOLVER
        assert cfg.OUTPUT_DIR == f"./logs/vn3k_circle_{strategy}" and not cfg.LOSS.PHASED.ENABLE
    cur = load("VN3K/circle_auxiliary_cross_curriculum.yml")
    c = cur.LOSS.CIRCLE_CROSS
    assert (c.M, c.GAMMA, list(c.W_SEQ)) == (0.35, 128.0, ["const:0", "linear:0->0.1", "const:0.1"])
    assert cur.LOSS.PHASED.ENABLE and list(cur.LOSS.PHASED.BOUNDARIES) == [5, 20]
    plan = PhasePlan(cur)
    weights = [plan.state(e).weights for e in range(1, 61)]
    assert [w["circle_cross"] for w in weights[:5]] == [0.0] * 5
    assert [w["circle_cross"] for w in weights[5:20]] == pytest.approx(
        [0.1 * k / 14 for k in range(15)])
    assert [w["circle_cross"] for w in weights[20:]] == [0.1] * 40
    assert all(w["sigmoid_id"] == 1.0 and w["citc"] == 0.1 for w in weights)


def test_synth_circle_recipes_are_the_strategies_without_ss(repo_root):
    """The SynthPedes circle study (docs/circle_study.md): each strategy's losses, weights and
    MVS as the VN3K recipe's, without SS (the same in every strategy), on the tiny open_clip
    towers; the near-twin subset is tested beside the whole split."""
    for strategy, (names, circles) in CIRCLE_STRATEGIES.items():
        cfg = load_config(os.path.join(repo_root, "configs", "Synth", f"circle_{strategy}.yml"),
                          check_paths=False)
        assert list(cfg.LOSS.NAMES) == [n for n in names if n != "ss"], strategy
        assert mvs_losses(cfg) == CIRCLE_MVS[strategy], strategy
        assert (cfg.LOSS.CITC.W, cfg.LOSS.CITC.INMODAL, cfg.LOSS.CITC.CROSSMODAL) == (0.1, 0.25, 0.25)
        for name, wmg in circles.items():
            c = cfg.LOSS[name.upper()]
            assert (c.W, c.M, c.GAMMA) == wmg and list(c.W_SEQ) == [], (strategy, name)
        assert (cfg.MODEL.TBPS.FAMILY, cfg.MODEL.TBPS.TINY) == ("open_clip", True), strategy
        assert list(cfg.TEST.QUERY_SUBSETS) == ["near_twin"] and not cfg.LOSS.PHASED.ENABLE


@pytest.mark.parametrize("rel, epoch", [
    ("CUHK-PEDES/clip_itc.yml", 1), ("CUHK-PEDES/irra_sdm_id.yml", 1),
    ("ICFG-PEDES/tbps_clip_simplified.yml", 1), ("VN3K/msiglip_sigmoid.yml", 1),
    *[(f"VN3K/circle_{s}.yml", 1) for s in CIRCLE_STRATEGIES],
    ("VN3K/circle_auxiliary_cross_curriculum.yml", 21)])
def test_recipe_builds_model_loss_and_solver_and_trains_a_step(repo_root, rel, epoch):
    cfg = load_config(os.path.join(repo_root, "configs", rel), TINY)
    plan = PhasePlan(cfg)
    classes = CLASSES[cfg.DATASETS.NAMES]
    model = make_model(cfg, classes, 1, 1)
    composer = make_loss(cfg, classes, model.feat_dim)
    optimizer, _ = make_optimizer(cfg, model, composer.center)
    scheduler = make_scheduler(cfg, optimizer)
    scheduler.step(epoch)
    state = plan.state(epoch)
    from processor.processor import batch_views, forward_options
    batch = tbps_batch(cfg, 8, classes, (64, 32))
    for view in batch_views(state, cfg):   # SS-I / MVS views (datasets/tbps_augment.py)
        batch[view] = torch.randn_like(batch["img"])
    out = model(batch, **forward_options(state, cfg))
    total, parts = composer(out, batch, state)
    assert set(cfg.LOSS.NAMES) <= set(parts) and torch.isfinite(total)
    assert {f"{n}_mvs" for n in mvs_losses(cfg) if state.weight(n) > 0} <= set(parts)
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
