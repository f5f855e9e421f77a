"""The thesis study recipes (issue 15 item 3; configs/Base-TBPS-Thesis.yml,
configs/{CUHK-PEDES,RSTPReid}/thesis_{base,isgvfc,tgmim,both}.yml and the SynthPedes study
configs/Synth/thesis_*.yml): the four phases through the ONE phase plan (weights per epoch, frozen
parameters per phase), the TBPS-CLIP Base losses in every row, the released TBPS-CLIP checkpoint
as the start, and one training step per phase with tiny towers (every row's extra forwards: the
SS-I / MVS-I views, the TG-MIM masked forward only where it weighs)."""
import os

import pytest
import torch

from configs import ConfigError, load_config
from losses.make_loss import make_loss
from model.make_model import make_model
from processor.processor import batch_views, forward_options
from solver.phase_plan import PhasePlan, frozen_parameters
from tests.test_tbps_recipes import TINY, tbps_batch

ROWS = ("base", "isgvfc", "tgmim", "both")
DATASETS = {"CUHK-PEDES": "cuhkpedes", "RSTPReid": "rstpreid"}
# weights per epoch 1..12 of the auxiliary losses (0 where the row does not have them)
ISGVFC = [0.0, 0.0, 0.05, 0.125, 0.2] + [0.2] * 7
TGMIM = [0.0] * 5 + [0.1] * 7


def load(repo_root, rel, *opts, check_paths=False):
    return load_config(os.path.join(repo_root, "configs", rel), list(opts),
                       check_paths=check_paths)


@pytest.mark.parametrize("folder", DATASETS)
@pytest.mark.parametrize("row", ROWS)
def test_thesis_rows_share_base_and_phases_and_differ_in_aux_weights(repo_root, folder, row):
    cfg = load(repo_root, f"{folder}/thesis_{row}.yml")
    assert cfg.DATASETS.NAMES == DATASETS[folder] and cfg.TEST.SELECT_ON == "val"
    # TBPS-CLIP Base, complete, from the released checkpoint of the dataset
    assert list(cfg.LOSS.NAMES) == ["nitc", "ss", "ritc", "citc"] and cfg.LOSS.NITC.MVS
    assert (cfg.LOSS.SS.W, cfg.LOSS.SS.T, cfg.LOSS.CITC.W) == (0.4, 0.1, 0.1)
    assert cfg.INPUT.TBPS_AUG.MAIN == "mvs" and cfg.INPUT.TEXT_AUG.DELETE_P == 0.05
    assert cfg.MODEL.TBPS.INIT_CHECKPOINT == f"./weights/tbps_clip_{DATASETS[folder]}.pth"
    assert cfg.MODEL.TBPS.PRETRAINED == "" and cfg.OUTPUT_DIR.endswith(f"thesis_{row}")
    plan = PhasePlan(cfg)
    states = [plan.state(e) for e in range(1, 13)]
    assert [s.name for s in states] == list("AABBBCCCDDDD")
    assert [list(s.freeze) for s in states[::3]] == [   # epochs 1, 4, 7, 10: phases A-D
        ["image_tower", "text_tower"], ["image_tower_but_last2", "text_tower_but_last2"],
        ["image_tower_but_last2", "text_tower_but_last2"], []]
    for s in states:
        assert (s.weight("nitc"), s.weight("ss"), s.weight("ritc"), s.weight("citc")) == (
            1.0, 0.4, 1.0, 0.1)
    has_is, has_tg = row in ("isgvfc", "both"), row in ("tgmim", "both")
    assert [s.weight("isgvfc") for s in states] == pytest.approx(
        ISGVFC if has_is else [0.0] * 12)
    assert [s.weight("tgmim") for s in states] == pytest.approx(TGMIM if has_tg else [0.0] * 12)
    assert cfg.LOSS.TGMIM.ENABLE == has_tg and cfg.LOSS.ISGVFC.ENABLE == has_is
    if has_tg:
        assert cfg.LOSS.TGMIM.MASK_RATIO == 0.4
    if has_is:   # IS-GVFC needs identities in the batch
        assert cfg.DATALOADER.SAMPLER == "pk"


def test_missing_tbps_clip_checkpoint_is_a_clear_error_before_training(repo_root):
    with pytest.raises(ConfigError, match="INIT_CHECKPOINT './weights/tbps_clip_rstpreid.pth' "
                                          "does not exist"):
        load(repo_root, "RSTPReid/thesis_base.yml", "DATASETS.ROOT_DIR", repo_root,
             check_paths=True)


@pytest.mark.parametrize("row", ROWS)
def test_thesis_row_trains_a_step_in_every_phase(repo_root, row):
    """Tiny towers stand in for ViT-B/16 (no weights here; the checkpoint start is tested in
    tests/test_tbps_clip_weights.py): each phase's frozen set, forward options and losses."""
    cfg = load(repo_root, f"CUHK-PEDES/thesis_{row}.yml", *TINY,
               "MODEL.TBPS.INIT_CHECKPOINT", "", "LOSS.TGMIM.DECODER_DIM", "16",
               "LOSS.TGMIM.HEADS", "2")
    plan = PhasePlan(cfg)
    model = make_model(cfg, 4, 1, 1)
    composer = make_loss(cfg, 4, model.feat_dim)
    towers = {n for n, _ in model.named_parameters() if n.startswith(("image_tower.",
                                                                       "text_tower."))}
    for epoch in (1, 3, 6, 9):
        state = plan.state(epoch)
        frozen = {id(p) for p in frozen_parameters(model, state.freeze)}
        names = {n for n, p in model.named_parameters() if id(p) in frozen}
        if state.name == "A":
            assert names == towers
        elif state.name in ("B", "C"):
            assert names and names < towers   # the stems and the earlier blocks only
            assert not any(n.startswith("image_tower.visual.transformer.resblocks.1.")
                           for n in names)
        else:
            assert not names
        options = forward_options(state, cfg)
        assert options.get("tgmim", False) == (state.weight("tgmim") > 0)
        assert options["ss"] and options["mvs"]
        batch = tbps_batch(cfg, 8, 4, (64, 32))
        for view in batch_views(state, cfg):
            batch[view] = batch["img"] + 0.1 * torch.randn_like(batch["img"])
        composer.start_epoch(epoch)
        out = model(batch, **options)
        total, parts = composer(out, batch, state)
        assert torch.isfinite(total)
        assert ("tgmim" in parts) == (state.weight("tgmim") > 0)
        assert ("isgvfc" in parts) == (state.weight("isgvfc") > 0)
        total.backward()
        if state.name == "A":   # what trains in the warm-up: the logit scale and the SS-I head
            assert model.ss_head[0].weight.grad.abs().sum() > 0
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("row", ROWS)
def test_synthpedes_thesis_study_rows(repo_root, row):
    """The SynthPedes study (configs/Synth/thesis_*.yml): the same four phases on 10 epochs
    (1-3, 4-5, 6-7, 8-10), towers not frozen (random init), the near-twin hard subset."""
    cfg = load(repo_root, f"Synth/thesis_{row}.yml")
    plan = PhasePlan(cfg)
    states = [plan.state(e) for e in range(1, 11)]
    assert [s.name for s in states] == list("AAABBCCDDD")
    assert all(not s.freeze for s in states)
    assert list(cfg.TEST.QUERY_SUBSETS) == ["near_twin"]
    has_is, has_tg = row in ("isgvfc", "both"), row in ("tgmim", "both")
    assert [s.weight("isgvfc") for s in states] == pytest.approx(
        [0, 0, 0, 0.05, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2] if has_is else [0] * 10)
    assert [s.weight("tgmim") for s in states] == pytest.approx(
        [0] * 5 + [0.1] * 5 if has_tg else [0] * 10)
