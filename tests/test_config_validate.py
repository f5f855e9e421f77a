"""The rule table of configs/validate.py: every enumeration, ranges, lists, one statement per
rule (issue 13, item 4). What a user sees at load time: tests/test_config_load_errors.py."""
import pytest

import losses.brightness
import losses.make_loss
import losses.supcon
import solver.phase_plan
import utils.metrics
from configs import load_config
from configs import validate as v
from configs.defaults import get_cfg_defaults
from datasets import captions, vehicleid


@pytest.mark.parametrize("key", sorted(k for k, r in v.RULES.items() if isinstance(r, v.OneOf)
                                       and not isinstance(r, v.EachOneOf)))
def test_every_enumeration_rejects_an_unknown_value(key):
    bad = "nope" if isinstance(v.RULES[key].choices[0], str) else 7
    with pytest.raises(v.ConfigError) as err:
        load_config(opts=[key, str(bad)])
    msg = str(err.value)
    assert f"{key} {bad!r} is not one of" in msg and str(list(v.RULES[key].choices)) in msg


@pytest.mark.parametrize("key, value, words", [
    ("SOLVER.IMS_PER_BATCH", "0", "an integer >= 1"),
    ("SOLVER.MAX_EPOCHS", "0", "an integer >= 1"),
    ("SOLVER.BASE_LR", "0.0", "a number > 0"),
    ("INPUT.PROB", "1.5", "a number >= 0 and <= 1"),
    ("INPUT.RE_PROB", "-0.1", "a number >= 0 and <= 1"),
    ("DATALOADER.NUM_INSTANCE", "0", "an integer >= 1"),
    ("TEST.RE_RANKING_LAMBDA", "2.0", "<= 1"),
    ("INPUT.SIZE_TRAIN", "[256]", "2 entries"),
    ("LOSS.PHASED.METRIC_SEQ", "['triplet', 'tripletz']", "'tripletz' is not one of"),
    ("LOSS.NAMES", "['id', 'supcon']", "LOSS.<NAME>.ENABLE True"),
    ("MODEL.DEVICE", "gpu", "'auto', 'cpu', 'cuda'"),
])
def test_ranges_and_lists_are_checked(key, value, words):
    with pytest.raises(v.ConfigError, match=key) as err:
        load_config(opts=[key, value])
    assert words in str(err.value)


def test_every_problem_is_listed_at_once():
    with pytest.raises(v.ConfigError) as err:
        load_config(opts=["TEST.DISTANCE", "cosin", "SOLVER.MAX_EPOCHS", "0"])
    assert "TEST.DISTANCE" in str(err.value) and "SOLVER.MAX_EPOCHS" in str(err.value)


def test_enumerations_are_stated_once():
    """The modules that act on a key use the allowed values of configs/validate.py."""
    assert losses.brightness.MODES is v.BRIGHTNESS_MODES
    assert losses.supcon.CAM_AWARE_MODES is v.CAM_AWARE_MODES
    assert losses.make_loss.KNOWN_LOSSES is v.LOSS_NAMES
    assert solver.phase_plan.METRICS is v.PHASE_METRICS
    assert utils.metrics.METRICS is v.DISTANCES
    assert captions.CAPTION_SOURCES is v.CAPTION_SOURCES
    assert captions.CAPTION_LANGS is v.CAPTION_LANGS
    assert vehicleid.TEST_SIZES is v.VEHICLEID_TEST_SIZES


def test_registries_are_keyed_by_the_stated_names():
    """DATASETS.NAMES, MODEL.TRANSFORMER_TYPE and INPUT.INTERPOLATION are validated at load
    against names stated in configs/validate.py; the registries that act on them hold exactly
    those names."""
    from datasets import factory, transforms
    from model.backbones import vit_transreid
    assert set(factory.LOADERS) == set(v.DATASET_NAMES)
    assert set(vit_transreid.VIT_PRESETS) == set(v.VIT_PRESET_NAMES)
    assert set(transforms._INTERPOLATIONS) == set(v.INTERPOLATIONS)


def test_timm_model_name_is_checked_at_load():
    with pytest.raises(v.ConfigError, match="MODEL.TIMM_NAME 'resnet1' is not a timm model"):
        load_config(opts=["MODEL.NAME", "timm", "MODEL.TIMM_NAME", "resnet1"])
    with pytest.raises(v.ConfigError, match="MODEL.TIMM_NAME is empty"):
        load_config(opts=["MODEL.NAME", "timm"])
    assert load_config(opts=["MODEL.NAME", "timm", "MODEL.TIMM_NAME", "resnet18"])


def test_every_rule_names_a_config_key():
    defaults = get_cfg_defaults()
    for key in v.RULES:
        node = defaults
        for part in key.split("."):
            node = node[part]   # KeyError for a rule on a key that does not exist
        assert v.RULES[key].problem(node) is None, f"the default of {key} breaks its own rule"
