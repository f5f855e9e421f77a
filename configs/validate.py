"""Config validation at load time: every value is checked once, before any work.

``configs.load_config`` calls :func:`check_config` after merging defaults, the recipe (with its
``_BASE_`` chain) and the command line, so ``train.py``, ``test.py`` and the launcher all refuse a
bad value (``TEST.DISTANCE cosin``, ``SOLVER.BASE_LR -1``, a missing ``MODEL.PRETRAIN_PATH``)
before they train, write or download anything. The error lists every bad key with its value and
what is allowed.

One place per rule:

- the allowed values of an enumeration are stated once, here (the module constants below); the
  modules that act on a key import them from here (``configs`` is the lowest floor: it imports
  nothing from ``datasets``, ``model``, ``losses``, ``solver``, ``processor`` or ``utils``). A
  module keeps a check of its own only for runtime arguments (a function called directly with a
  bad argument, e.g. ``losses.brightness.brightness_gate(mode=...)``), and that check uses the
  same constant;
- ranges and paths are stated in :data:`RULES` (one line per key) and :func:`path_problems`;
- the names of ``DATASETS.NAMES``, ``MODEL.TRANSFORMER_TYPE`` and ``INPUT.INTERPOLATION`` are
  stated here too (:data:`DATASET_NAMES`, :data:`VIT_PRESET_NAMES`, :data:`INTERPOLATIONS`);
  their registries (``datasets.factory.LOADERS``, ``model.backbones.vit_transreid.VIT_PRESETS``,
  ``datasets.transforms``) are keyed by exactly these names, which a test checks;
- ``MODEL.TIMM_NAME`` (``MODEL.NAME 'timm'``) must be a model timm knows
  (``timm.is_model``); timm is imported for that check only when the config uses it;
- rules that need the dataset or the model (P x K divisibility per phase: ``PhasePlan`` and
  ``datasets.make_dataloader.check_train_batches``) stay where that knowledge lives;
  ``train.py`` runs them before epoch 1.

Paths: ``MODEL.PRETRAIN_PATH`` must name an existing file when ``MODEL.PRETRAIN_CHOICE`` reads it
('self', or 'imagenet' unless it is a ``'timm:<model name>'`` hub tag). With ``MODEL.TASK 'tbps'``,
a ``MODEL.TBPS.PRETRAINED`` / ``MODEL.TBPS.HF_MODEL`` that reads as a path (:func:`is_local_path`)
must exist (tags and hub ids are resolved where they are read). Open_clip pretrained tags
(``MODEL.CLIP_PRETRAIN``, ``MODEL.TEXT.PRETRAINED``) may be tags or files and are resolved where
they are read. Path checks are skipped for a checkpoint's stored config (``config_text``): it
describes a run that already happened, possibly on another machine.
"""
from __future__ import annotations

import numbers
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

# ---------------------------------------------------------------- enumerations (stated once)
MODEL_NAMES = ("transformer", "resnet50", "timm")
#: MODEL.VIT_STEM: the TransReID ViT's tokenizer (model/backbones/vit_transreid.py)
VIT_STEMS = ("patch", "conv")
TASKS = ("reid", "tbps")
TBPS_FAMILIES = ("open_clip", "hf_siglip")
#: MODEL.TBPS.ARCH: the dual encoder (model/dual_encoder.py) or LGUR (model/lgur.py)
TBPS_ARCHS = ("dual_encoder", "lgur")
#: MODEL.LGUR.IMAGE_BACKBONE (model/lgur.py build_image_tower)
LGUR_IMAGE_BACKBONES = ("deit_small", "resnet50", "transreid", "open_clip")
#: MODEL.LGUR.RANK_NEGATIVE / RANK_REDUCTION (losses/lgur.py)
LGUR_RANK_NEGATIVES = ("hardest", "random_semi_hard")
LGUR_RANK_REDUCTIONS = ("sum", "mean")
#: LGUR's loss components (MODEL.TBPS.ARCH 'lgur'; losses/lgur.py): read the part features of
#: one local batch (in-batch negatives), so they have no LOSS.<NAME>.GATHER
LGUR_LOSS_NAMES = ("lgur_id", "lgur_rank_m", "lgur_rank_g")
#: what MODEL.TBPS.LORA.TARGETS may name (model/lora.py maps them to each family's modules)
LORA_TARGETS = ("q", "k", "v", "out", "mlp")
LORA_TOWERS = ("image", "text")
#: a learnable logit scale kappa is kept <= this (CLIP's clamp), so a temperature >= 1 / this
MAX_LOGIT_SCALE = 100.0
DATASET_NAMES = ("market1501", "dukemtmcreid", "msmt17", "veri", "vehicleid", "synth",
                 "cuhkpedes", "icfgpedes", "rstpreid", "vn3k")
VIT_PRESET_NAMES = ("vit_tiny", "vit_small", "vit_base", "deit_tiny", "deit_small", "deit_base")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
PRETRAIN_CHOICES = ("imagenet", "self", "none")
NECKS = ("bnneck", "no")
CLIP_IMPLS = ("open_clip", "hf")
CLIP_FUSIONS = ("minimal", "quickwin")
FEAT_SRCS = ("pre_bn", "bnneck")
NECK_FEATS = ("before", "after")
DISTANCES = ("euclidean", "cosine")
SAMPLERS = ("pk", "random")
OPTIMIZERS = ("SGD", "Adam", "AdamW")
SCHEDULERS = ("cosine", "multistep")
REID_LOSS_NAMES = ("id", "triplet", "center")
#: the text-based person search losses (MODEL.TASK 'tbps'; losses/tbps.py, losses/circle_tbps.py);
#: 'id' is shared
TBPS_LOSS_NAMES = ("itc", "sdm", "nitc", "ritc", "citc", "cmpm", "sigmoid_id", "circle_inmodal",
                   "circle_cross", "nc_itc", "mlm", "ss") + LGUR_LOSS_NAMES
#: the TBPS losses without LOSS.<NAME>.GATHER: one logsumexp over the local batch, not a mean
#: over rows, so a gathered batch would change the loss (losses/circle_tbps.py); IRRA's
#: masked-token loss 'mlm' compares no features across the batch (losses/mlm.py); LGUR's
#: ranking and ID losses are the paper's in-batch losses (losses/lgur.py)
TBPS_LOCAL_ONLY = ("circle_inmodal", "circle_cross", "mlm") + LGUR_LOSS_NAMES
LOSS_NAMES = REID_LOSS_NAMES + TBPS_LOSS_NAMES
#: the TBPS losses with an MVS option (LOSS.<NAME>.MVS: the loss averaged with the same loss on a
#: second, MVS-pool view of the image; TBPS-CLIP's MVS-I for N-ITC, the mSigLIP circle study's MVS
#: for its sigmoid loss, NC-ITC and the cross-modal circle loss; losses/make_loss.py)
MVS_LOSSES = ("nitc", "sigmoid_id", "nc_itc", "circle_cross")
NITC_STOP_FEATURES = ("second_forward", "detached")
#: INPUT.TBPS_AUG.MAIN (datasets/tbps_augment.py MAIN_PIPELINES)
TBPS_AUG_MAIN = ("standard", "mvs")
PHASE_METRICS = ("triplet", "tripletx", "routed", "none")
BRIGHTNESS_MODES = ("hard", "soft")
CAM_AWARE_MODES = ("exclude", "denominator")
SUPCON_POS_RULES = ("class",)
CIRCLE_FORMS = ("pairwise", "batch")
TGMIM_MASK_MODES = ("random", "block")
CAPTION_SOURCES = ("annotation", "attributes", "none")
CAPTION_LANGS = ("en", "vi")
SELECTION_SPLITS = ("val", "test")
#: layouts of MODEL.TBPS.INIT_CHECKPOINT (model/tbps_clip_weights.py)
INIT_CHECKPOINT_FORMATS = ("tbps_clip",)
VEHICLEID_TEST_SIZES = (800, 1600, 2400)
TIMM_PREFIX = "timm:"


class ConfigError(ValueError):
    """One or more config values are invalid; the message lists each key, value and rule."""


# ---------------------------------------------------------------- rule kinds
class OneOf:
    """The value is one of ``choices``."""

    def __init__(self, choices: Sequence):
        self.choices = tuple(choices)

    def problem(self, value) -> Optional[str]:
        if value in self.choices:
            return None
        return f"is not one of {list(self.choices)}"


class EachOneOf(OneOf):
    """A list whose every entry is one of ``choices`` (``hint``: appended to the message)."""

    def __init__(self, choices: Sequence, hint: str = ""):
        super().__init__(choices)
        self.hint = hint

    def problem(self, value) -> Optional[str]:
        bad = [v for v in value if v not in self.choices]
        if not bad:
            return None
        entries = "an unknown entry" if len(bad) == 1 else "unknown entries"
        return (f"has {entries}: {', '.join(repr(b) for b in bad)} "
                f"{'is' if len(bad) == 1 else 'are'} not one of {list(self.choices)}{self.hint}")


class Number:
    """A number in a range: ``low``/``high`` bounds (None = open), ``strict`` excludes them;
    ``integer`` also requires an int."""

    def __init__(self, low=None, high=None, low_strict=False, high_strict=False,
                 integer=False):
        self.low, self.high = low, high
        self.low_strict, self.high_strict, self.integer = low_strict, high_strict, integer

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_strict else '>='} {self.low}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_strict else '<='} {self.high}")
        return f"{kind} {' and '.join(parts)}".strip()

    def ok(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        if self.low is not None and (value <= self.low if self.low_strict else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_strict
                                      else value > self.high):
            return False
        return True

    def problem(self, value) -> Optional[str]:
        return None if self.ok(value) else f"must be {self.describe()}"


class Numbers(Number):
    """A list of ``length`` numbers (any length when None), each as :class:`Number`."""

    def __init__(self, length: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.length = length

    def problem(self, value) -> Optional[str]:
        size = f"{self.length} entries, each " if self.length else "entries each "
        if (self.length is not None and len(value) != self.length) or \
                not all(self.ok(v) for v in value):
            return f"must have {size}{self.describe()}"
        return None


class ZeroOr:
    """0 (= automatic), or a value that satisfies ``rule``."""

    def __init__(self, rule: Number):
        self.rule = rule

    def problem(self, value) -> Optional[str]:
        if value == 0 and not isinstance(value, bool):
            return None
        return None if self.rule.ok(value) else f"must be 0 or {self.rule.describe()}"


class Matches:
    """A string matching ``pattern`` (described as ``what``)."""

    def __init__(self, pattern: str, what: str):
        self.pattern, self.what = re.compile(pattern), what

    def problem(self, value) -> Optional[str]:
        return None if self.pattern.fullmatch(str(value)) else f"is not {self.what}"


POSITIVE = Number(0, low_strict=True)
NON_NEGATIVE = Number(0)
PROBABILITY = Number(0, 1)
POSITIVE_INT = Number(1, integer=True)
NON_NEGATIVE_INT = Number(0, integer=True)
RATE = Number(0, 1, high_strict=True)   # dropout rates, label smoothing: [0, 1)

# ---------------------------------------------------------------- the table: key -> rule
RULES: Dict[str, object] = {
    "MODEL.DEVICE": Matches(r"auto|cpu|cuda(:\d+)?", "'auto', 'cpu', 'cuda' or 'cuda:<index>'"),
    "MODEL.NAME": OneOf(MODEL_NAMES),
    "MODEL.TASK": OneOf(TASKS),
    "MODEL.TBPS.FAMILY": OneOf(TBPS_FAMILIES),
    "MODEL.TBPS.ARCH": OneOf(TBPS_ARCHS),
    "MODEL.LGUR.IMAGE_BACKBONE": OneOf(LGUR_IMAGE_BACKBONES),
    "MODEL.LGUR.TEXT_DROPOUT": RATE,
    "MODEL.LGUR.CONTEXT_LENGTH": Number(2, integer=True),
    "MODEL.LGUR.DICT_SIZE": POSITIVE_INT,
    "MODEL.LGUR.DICT_DIM": POSITIVE_INT,
    "MODEL.LGUR.DGA_DEPTH": POSITIVE_INT,
    "MODEL.LGUR.DGA_HEADS": POSITIVE_INT,
    "MODEL.LGUR.DGA_MLP_DIM": POSITIVE_INT,
    "MODEL.LGUR.NUM_PROTOTYPES": POSITIVE_INT,
    "MODEL.LGUR.OUT_DIM": POSITIVE_INT,
    "MODEL.LGUR.PGU_DEPTH": POSITIVE_INT,
    "MODEL.LGUR.PGU_HEADS": POSITIVE_INT,
    "MODEL.LGUR.PGU_MLP_DIM": POSITIVE_INT,
    "MODEL.LGUR.RANK_NEGATIVE": OneOf(LGUR_RANK_NEGATIVES),
    "MODEL.LGUR.RANK_MARGIN": NON_NEGATIVE,
    "MODEL.LGUR.RANK_REDUCTION": OneOf(LGUR_RANK_REDUCTIONS),
    "LOSS.LGUR_ID.W": NON_NEGATIVE,
    "LOSS.LGUR_RANK_M.W": NON_NEGATIVE,
    "LOSS.LGUR_RANK_G.W": NON_NEGATIVE,
    "MODEL.TBPS.EMBED_DIM": POSITIVE_INT,
    "MODEL.TBPS.CONTEXT_LENGTH": ZeroOr(Number(2, integer=True)),
    "MODEL.TBPS.INIT_TEMPERATURE": Number(1 / MAX_LOGIT_SCALE),
    "MODEL.TBPS.INIT_LOGIT_BIAS": Number(),
    "MODEL.TBPS.IMAGE_LR_SCALE": POSITIVE,
    "MODEL.TBPS.TEXT_LR_SCALE": POSITIVE,
    "MODEL.TBPS.LOGIT_LR_SCALE": POSITIVE,
    "MODEL.TRANSFORMER_TYPE": OneOf(VIT_PRESET_NAMES),
    "DATASETS.NAMES": OneOf(DATASET_NAMES),
    "INPUT.INTERPOLATION": OneOf(INTERPOLATIONS),
    "MODEL.VIT_DEPTH": NON_NEGATIVE_INT,
    "MODEL.VIT_MLP_RATIO": POSITIVE,
    "MODEL.VIT_STEM": OneOf(VIT_STEMS),
    "MODEL.PRETRAIN_CHOICE": OneOf(PRETRAIN_CHOICES),
    "MODEL.STRIDE_SIZE": Numbers(2, low=1, integer=True),
    "MODEL.DROP_PATH": RATE,
    "MODEL.DROP_OUT": RATE,
    "MODEL.ATT_DROP_RATE": RATE,
    "MODEL.SHIFT_NUM": POSITIVE_INT,
    "MODEL.SHUFFLE_GROUP": POSITIVE_INT,
    "MODEL.DEVIDE_LENGTH": POSITIVE_INT,
    "MODEL.LAST_STRIDE": OneOf((1, 2)),
    "MODEL.NECK": OneOf(NECKS),
    "MODEL.CLIP_IMPL": OneOf(CLIP_IMPLS),
    "MODEL.CLIP_FUSION": OneOf(CLIP_FUSIONS),
    "MODEL.CLIP_INPUT_SIZE": Numbers(2, low=1, integer=True),
    "MODEL.CLIP_LR_SCALE": NON_NEGATIVE,
    "MODEL.TEXT.CONTEXT_LENGTH": Number(2, integer=True),
    "MODEL.TEXT.LR_SCALE": NON_NEGATIVE,
    "INPUT.SIZE_TRAIN": Numbers(2, low=1, integer=True),
    "INPUT.SIZE_TEST": Numbers(2, low=1, integer=True),
    "INPUT.PROB": PROBABILITY,
    "INPUT.RE_PROB": PROBABILITY,
    "INPUT.PADDING": NON_NEGATIVE_INT,
    "INPUT.PIXEL_MEAN": Numbers(3),
    "INPUT.PIXEL_STD": Numbers(3, low=0, low_strict=True),
    "DATASETS.VEHICLEID_TEST_SIZE": OneOf(VEHICLEID_TEST_SIZES),
    "DATASETS.VEHICLEID_TRIALS": POSITIVE_INT,
    "DATASETS.SYNTH_TRAIN_IDS": POSITIVE_INT,
    "DATASETS.SYNTH_TEST_IDS": POSITIVE_INT,
    "DATASETS.SYNTH_SEED": NON_NEGATIVE_INT,
    "DATASETS.SYNTH_VAL_IDS": NON_NEGATIVE_INT,
    "DATASETS.SYNTH_IMAGE_SIZE": Numbers(2, low=32, integer=True),
    "DATASETS.CAPTION_SOURCE": OneOf(CAPTION_SOURCES),
    "DATASETS.CAPTION_LANG": OneOf(CAPTION_LANGS),
    "DATASETS.VAL_IDS": NON_NEGATIVE_INT,
    "DATASETS.VAL_SEED": NON_NEGATIVE_INT,
    "DATASETS.TRAIN_ID_FRACTION": Number(0, 1, low_strict=True),
    "DATASETS.TRAIN_ID_SEED": NON_NEGATIVE_INT,
    "DATALOADER.SAMPLER": OneOf(SAMPLERS),
    "DATALOADER.NUM_INSTANCE": POSITIVE_INT,
    "DATALOADER.NUM_WORKERS": NON_NEGATIVE_INT,
    "DATALOADER.PHASED.K_WHEN_TRIPLETX": POSITIVE_INT,
    "DATALOADER.PHASED.K_WHEN_SUPCON": POSITIVE_INT,
    "DATALOADER.PHASED.K_OTHER": POSITIVE_INT,
    "SOLVER.OPTIMIZER_NAME": OneOf(OPTIMIZERS),
    "SOLVER.BASE_LR": POSITIVE,
    "SOLVER.MOMENTUM": Number(0, 1, high_strict=True),
    "SOLVER.WEIGHT_DECAY": NON_NEGATIVE,
    "SOLVER.BIAS_LR_FACTOR": NON_NEGATIVE,
    "SOLVER.SCHEDULER": OneOf(SCHEDULERS),
    "SOLVER.MAX_EPOCHS": POSITIVE_INT,
    "SOLVER.WARMUP_EPOCHS": NON_NEGATIVE_INT,
    "SOLVER.WARMUP_FACTOR": Number(0, 1, low_strict=True),
    "SOLVER.COSINE_MIN_FACTOR": PROBABILITY,
    "SOLVER.STEPS": Numbers(low=1, integer=True),
    "SOLVER.GAMMA": POSITIVE,
    "SOLVER.IMS_PER_BATCH": POSITIVE_INT,
    "SOLVER.SEED": Number(0, 2 ** 32 - 1, integer=True),
    "SOLVER.GRAD_CLIP": NON_NEGATIVE,
    "SOLVER.CHECKPOINT_PERIOD": NON_NEGATIVE_INT,
    "SOLVER.EVAL_PERIOD": NON_NEGATIVE_INT,
    "LOSS.NAMES": EachOneOf(LOSS_NAMES, hint=" (unknown losses? an auxiliary loss is switched "
                            "on by its own LOSS.<NAME>.ENABLE True, not by LOSS.NAMES)"),
    "LOSS.ID.W": NON_NEGATIVE,
    "LOSS.ID.LABEL_SMOOTH": RATE,
    "LOSS.TRIPLET.W": NON_NEGATIVE,
    "LOSS.TRIPLET.MARGIN": NON_NEGATIVE,
    "LOSS.TRIPLET.FEAT_SRC": OneOf(FEAT_SRCS),
    "LOSS.CENTER.W": NON_NEGATIVE,
    "LOSS.CENTER.LR": POSITIVE,
    "LOSS.TRIPLETX.W": NON_NEGATIVE,
    "LOSS.TRIPLETX.MARGIN": NON_NEGATIVE,
    "LOSS.TRIPLETX.WARMUP_EPOCHS": NON_NEGATIVE_INT,
    "LOSS.TRIPLETX.K": POSITIVE_INT,
    "LOSS.TRIPLETX.SAME_CAM_NEG_BOOST": POSITIVE,
    "LOSS.TRIPLETX.ALPHA": NON_NEGATIVE,
    "LOSS.TRIPLETX.FEAT_SRC": OneOf(FEAT_SRCS),
    "LOSS.SUPCON.T": POSITIVE,
    "LOSS.SUPCON.W": NON_NEGATIVE,
    "LOSS.SUPCON.FEAT_SRC": OneOf(FEAT_SRCS),
    "LOSS.SUPCON.CAM_AWARE_MODE": OneOf(CAM_AWARE_MODES),
    "LOSS.SUPCON.POS_RULE": OneOf(SUPCON_POS_RULES),
    "LOSS.SUPCON.PROJ_HIDDEN": POSITIVE_INT,
    "LOSS.SUPCON.PROJ_DIM": POSITIVE_INT,
    "LOSS.BRIGHTNESS.THRESH": PROBABILITY,
    "LOSS.BRIGHTNESS.K": NON_NEGATIVE,   # > 0 with MODE 'soft': losses.brightness.check_gate
    "LOSS.BRIGHTNESS.MODE": OneOf(BRIGHTNESS_MODES),
    "LOSS.BRIGHTNESS.SUPCON_DARK_WEIGHT": NON_NEGATIVE,
    "LOSS.ISGVFC.W": NON_NEGATIVE,
    "LOSS.ISGVFC.T": POSITIVE,
    "LOSS.ISGVFC.FEAT_SRC": OneOf(FEAT_SRCS),
    "LOSS.CIRCLE.W": NON_NEGATIVE,
    "LOSS.CIRCLE.FORM": OneOf(CIRCLE_FORMS),
    "LOSS.CIRCLE.M": NON_NEGATIVE,
    "LOSS.CIRCLE.GAMMA": POSITIVE,
    "LOSS.CIRCLE.FEAT_SRC": OneOf(FEAT_SRCS),
    "LOSS.TGMIM.W": NON_NEGATIVE,
    "LOSS.TGMIM.MASK_RATIO": Number(0, 1, low_strict=True, high_strict=True),
    "LOSS.TGMIM.MASK_MODE": OneOf(TGMIM_MASK_MODES),
    "LOSS.TGMIM.DECODER_DIM": POSITIVE_INT,
    "LOSS.TGMIM.HEADS": POSITIVE_INT,
    "LOSS.ITC.W": NON_NEGATIVE,
    "LOSS.SDM.W": NON_NEGATIVE,
    "LOSS.SDM.TEMPERATURE": ZeroOr(Number(1 / MAX_LOGIT_SCALE)),
    "LOSS.SDM.EPS": POSITIVE,
    "LOSS.NITC.W": NON_NEGATIVE,
    "LOSS.NITC.SOFT_RATIO": PROBABILITY,
    "LOSS.NITC.STOP_FEATURES": OneOf(NITC_STOP_FEATURES),
    "LOSS.SS.W": NON_NEGATIVE,
    "LOSS.SS.T": POSITIVE,
    "LOSS.SS.HIDDEN_DIM": POSITIVE_INT,
    "INPUT.TBPS_AUG.MAIN": OneOf(TBPS_AUG_MAIN),
    "INPUT.TBPS_AUG.MVS_OPS": POSITIVE_INT,
    "INPUT.TEXT_AUG.BACKTRANS_P": PROBABILITY,
    "INPUT.TEXT_AUG.DELETE_P": PROBABILITY,
    "LOSS.RITC.W": NON_NEGATIVE,
    "LOSS.RITC.EPS": POSITIVE,
    "LOSS.CITC.W": NON_NEGATIVE,
    "LOSS.CITC.INMODAL": NON_NEGATIVE,
    "LOSS.CITC.CROSSMODAL": NON_NEGATIVE,
    "LOSS.CMPM.W": NON_NEGATIVE,
    "LOSS.CMPM.EPS": POSITIVE,
    "LOSS.SIGMOID_ID.W": NON_NEGATIVE,
    "LOSS.CIRCLE_INMODAL.W": NON_NEGATIVE,
    "LOSS.CIRCLE_INMODAL.M": NON_NEGATIVE,
    "LOSS.CIRCLE_INMODAL.GAMMA": POSITIVE,
    "LOSS.CIRCLE_CROSS.W": NON_NEGATIVE,
    "LOSS.CIRCLE_CROSS.M": NON_NEGATIVE,
    "LOSS.CIRCLE_CROSS.GAMMA": POSITIVE,
    "LOSS.NC_ITC.W": NON_NEGATIVE,
    "LOSS.NC_ITC.M": NON_NEGATIVE,
    "LOSS.NC_ITC.GAMMA": POSITIVE,
    "LOSS.MLM.W": NON_NEGATIVE,
    "LOSS.MLM.P": Number(0, 1, low_strict=True),
    "LOSS.MLM.HEADS": NON_NEGATIVE_INT,
    "LOSS.MLM.LAYERS": NON_NEGATIVE_INT,
    "LOSS.MLM.LR_SCALE": POSITIVE,
    "MODEL.TBPS.ID_LR_SCALE": POSITIVE,
    "MODEL.TBPS.LORA.RANK": POSITIVE_INT,
    "MODEL.TBPS.LORA.ALPHA": POSITIVE,
    "MODEL.TBPS.LORA.DROPOUT": RATE,
    "MODEL.TBPS.LORA.TARGETS": EachOneOf(LORA_TARGETS),
    "MODEL.TBPS.LORA.TOWERS": EachOneOf(LORA_TOWERS),
    "LOSS.PHASED.BOUNDARIES": Numbers(low=1, integer=True),
    "LOSS.PHASED.METRIC_SEQ": EachOneOf(PHASE_METRICS),
    "LOSS.PHASED.TRIPLETX_END": NON_NEGATIVE_INT,
    "TEST.IMS_PER_BATCH": POSITIVE_INT,
    "TEST.NECK_FEAT": OneOf(NECK_FEATS),
    "TEST.DISTANCE": OneOf(DISTANCES),
    "TEST.RE_RANKING_K1": POSITIVE_INT,
    "TEST.RE_RANKING_K2": POSITIVE_INT,
    "TEST.RE_RANKING_LAMBDA": PROBABILITY,
    "TEST.MAX_RANK": POSITIVE_INT,
    "TEST.EVAL_BLOCK": NON_NEGATIVE_INT,
    "TEST.VIS_QUERIES": NON_NEGATIVE_INT,
    "TEST.VIS_TOPK": POSITIVE_INT,
    "TEST.SELECT_ON": OneOf(SELECTION_SPLITS),
    "TEST.DATASET": OneOf(("",) + DATASET_NAMES),
    "MODEL.TBPS.INIT_CHECKPOINT_FORMAT": OneOf(INIT_CHECKPOINT_FORMATS),
}


def _value(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def value_problems(cfg) -> List[str]:
    """"KEY 'value' <what is wrong>" for every value that breaks its rule in :data:`RULES`."""
    problems = []
    for key, rule in RULES.items():
        value = _value(cfg, key)
        problem = rule.problem(value)
        if problem:
            problems.append(f"{key} {value!r} {problem}")
    return problems


def timm_problems(cfg) -> List[str]:
    """MODEL.NAME 'timm': MODEL.TIMM_NAME must be a timm model name, and the TransReID-only
    features (SIE, JPM) must be off."""
    m = cfg.MODEL
    if m.NAME != "timm":
        return []
    on = [k for k in ("SIE_CAMERA", "SIE_VIEW", "JPM") if m[k]]
    if on:
        return [f"MODEL.{'/'.join(on)} True is a TransReID ViT feature (MODEL.NAME "
                "'transformer'); set it False for MODEL.NAME 'timm'"]
    if not m.TIMM_NAME:
        return ["MODEL.TIMM_NAME is empty but MODEL.NAME is 'timm': give a timm model name "
                "(e.g. 'resnet18', 'resnet50', 'vit_small_patch16_224'; timm.list_models())"]
    import timm   # only for configs that use it (timm imports torch)
    if not timm.is_model(m.TIMM_NAME):
        close = timm.list_models(f"*{m.TIMM_NAME.split('.')[0][:6]}*")[:8]
        return [f"MODEL.TIMM_NAME {m.TIMM_NAME!r} is not a timm model"
                + (f" (similar names: {', '.join(close)})" if close else "")
                + "; list them with python -c \"import timm; print(timm.list_models())\""]
    return []


#: file endings that make a weight source read as a file (:func:`is_local_path`)
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def is_local_path(value: str) -> bool:
    """True when a weight / model source reads as a filesystem path rather than a tag or a hub
    id ('org/name'): it exists, starts with '/', '.' or '~', names more than one folder, or ends
    like a weight file."""
    expanded = os.path.expanduser(value)
    return (os.path.exists(expanded) or value.startswith(("/", ".", "~"))
            or value.count("/") > 1 or (os.sep != "/" and os.sep in value)
            or value.endswith(WEIGHT_SUFFIXES))


#: datasets whose annotation has a validation split (DATASETS.VAL_IDS must then be 0)
DATASETS_WITH_VAL = ("cuhkpedes", "rstpreid")
#: datasets that get a validation split only from DATASETS.VAL_IDS (VN3K's file may or may not
#: have a 'validate' split: checked when it is loaded)
DATASETS_WITHOUT_VAL = ("icfgpedes", "synth")


def task_problems(cfg) -> List[str]:
    """MODEL.TASK 'tbps': the towers' weights come from MODEL.TBPS, not MODEL.PRETRAIN_PATH; the
    training items need captions; selection on 'val' needs a validation split."""
    m, d = cfg.MODEL, cfg.DATASETS
    problems = []
    if d.VAL_IDS and d.NAMES in DATASETS_WITH_VAL:
        problems.append(f"DATASETS.VAL_IDS {d.VAL_IDS}: {d.NAMES} has its own validation split "
                        "(the annotation's 'val'); set DATASETS.VAL_IDS 0")
    if d.NAMES == "synth" and d.VAL_IDS and d.SYNTH_VAL_IDS:
        problems.append(f"DATASETS.VAL_IDS {d.VAL_IDS} and DATASETS.SYNTH_VAL_IDS "
                        f"{d.SYNTH_VAL_IDS} both hold out SynthPedes identities: set one")
    loss = cfg.LOSS
    problems += cross_domain_problems(cfg) + init_checkpoint_problems(cfg)
    problems += conv_stem_problems(cfg)
    if m.TASK != "tbps":
        tbps = [n for n in loss.NAMES if n in TBPS_LOSS_NAMES]
        if tbps:
            problems.append(f"LOSS.NAMES {tbps} are text-based person search losses: set "
                            "MODEL.TASK 'tbps' (a dual encoder) or remove them")
        return problems
    reid = [n for n in loss.NAMES if n in ("triplet", "center")]
    if reid:
        problems.append(f"LOSS.NAMES {reid} are image re-ID losses; MODEL.TASK 'tbps' composes "
                        f"'id' and {list(TBPS_LOSS_NAMES)}")
    aux = [k for k in ("TRIPLETX", "SUPCON", "BRIGHTNESS", "CIRCLE") if loss[k].ENABLE]
    if aux:
        problems.append(f"LOSS.{'/'.join(aux)}.ENABLE True is an image re-ID branch, not built "
                        "for MODEL.TASK 'tbps' (IS-GVFC and TG-MIM are: LOSS.ISGVFC.ENABLE "
                        "reads img_feat, LOSS.TGMIM.ENABLE masks the image tower)")
    if not [n for n in loss.NAMES if n in TBPS_LOSS_NAMES + ("id",)] and not loss.ISGVFC.ENABLE:
        problems.append(f"LOSS.NAMES {list(loss.NAMES)} has no text-based person search loss: "
                        f"use some of {list(TBPS_LOSS_NAMES)} (and 'id')")
    if m.PRETRAIN_CHOICE == "imagenet":
        problems.append("MODEL.PRETRAIN_CHOICE 'imagenet' does not apply to MODEL.TASK 'tbps': "
                        "the dual encoder's towers take their weights from MODEL.TBPS.PRETRAINED "
                        "(open_clip) or MODEL.TBPS.HF_MODEL (hf_siglip); use 'none', or 'self' "
                        "for a PhaseReID checkpoint")
    if d.CAPTION_SOURCE == "none":
        problems.append("DATASETS.CAPTION_SOURCE 'none' but MODEL.TASK is 'tbps': the training "
                        "items are (image, caption) pairs; set 'annotation' (the dataset's "
                        "caption file) or 'attributes'")
    evaluated = cfg.TEST.DATASET or d.NAMES   # the query subsets are of the tested dataset
    for spec in cfg.TEST.QUERY_SUBSETS:
        if spec == "near_twin" and evaluated != "synth":
            problems.append(f"TEST.QUERY_SUBSETS 'near_twin' is SynthPedes' subset, {evaluated} "
                            "has none: give a subset file")
        elif spec != "near_twin" and not str(spec).endswith(".json"):
            problems.append(f"TEST.QUERY_SUBSETS {spec!r} is neither 'near_twin' nor a .json "
                            "subset file")
    if cfg.TEST.RE_RANKING:
        problems.append("TEST.RE_RANKING True with MODEL.TASK 'tbps': k-reciprocal re-ranking is "
                        "an image re-ID step (it pools query and gallery features of one "
                        "modality); text-to-image ranks by cosine similarity, set it False")
    held_out = d.VAL_IDS or (d.SYNTH_VAL_IDS if d.NAMES == "synth" else 0)
    if cfg.TEST.SELECT_ON == "val" and d.NAMES in DATASETS_WITHOUT_VAL and not held_out:
        key = "DATASETS.SYNTH_VAL_IDS" if d.NAMES == "synth" else "DATASETS.VAL_IDS"
        problems.append(f"TEST.SELECT_ON 'val' but {d.NAMES} has no validation split: hold out "
                        f"training identities with {key} <n> (e.g. 10% of them), or "
                        "select on test explicitly with TEST.SELECT_ON 'test' (optimistic numbers)")
    return problems


def conv_stem_problems(cfg) -> List[str]:
    """MODEL.VIT_STEM 'conv' (random init, total stride 16) where the config builds a TransReID
    ViT: the re-ID backbone (MODEL.NAME 'transformer') or LGUR's 'transreid' image tower."""
    m = cfg.MODEL
    reid_vit = m.TASK == "reid" and m.NAME == "transformer"
    lgur_vit = m.TASK == "tbps" and m.TBPS.ARCH == "lgur" and m.LGUR.IMAGE_BACKBONE == "transreid"
    if m.VIT_STEM != "conv" or not (reid_vit or lgur_vit):
        return []
    problems = []
    if reid_vit and m.PRETRAIN_CHOICE == "imagenet":
        problems.append("MODEL.VIT_STEM 'conv' is random init only: no released ViT checkpoint has "
                        "the conv stem; use MODEL.VIT_STEM 'patch' with MODEL.PRETRAIN_CHOICE "
                        "'imagenet', or PRETRAIN_CHOICE 'none' / 'self'")
    if lgur_vit and m.LGUR.IMAGE_PRETRAINED:
        problems.append("MODEL.VIT_STEM 'conv' is random init only, but MODEL.LGUR."
                        f"IMAGE_PRETRAINED {m.LGUR.IMAGE_PRETRAINED!r} loads ViT weights into the "
                        "'transreid' image tower: use MODEL.VIT_STEM 'patch', or '' for random "
                        "init")
    if list(m.STRIDE_SIZE) != [16, 16]:
        problems.append(f"MODEL.VIT_STEM 'conv' has stride 16; MODEL.STRIDE_SIZE "
                        f"{list(m.STRIDE_SIZE)} (overlapping patches) applies to the 'patch' "
                        "stem only: set it to [16, 16]")
    for key in ("SIZE_TRAIN", "SIZE_TEST"):
        size = list(cfg.INPUT[key])
        if size[0] % 16 or size[1] % 16:
            problems.append(f"INPUT.{key} {size}: MODEL.VIT_STEM 'conv' needs both sides "
                            "divisible by 16")
    return problems


def cross_domain_problems(cfg) -> List[str]:
    """TEST.DATASET (cross-domain testing, test.py): text-based person search only, another
    dataset than the training one; TEST.ROOT_DIR only with it."""
    t, d = cfg.TEST, cfg.DATASETS
    problems = []
    if t.ROOT_DIR and not t.DATASET:
        problems.append(f"TEST.ROOT_DIR {t.ROOT_DIR!r} is set but TEST.DATASET is empty: it is "
                        "the folder of TEST.DATASET's data; set TEST.DATASET or drop it")
    if not t.DATASET:
        return problems
    if cfg.MODEL.TASK != "tbps":
        problems.append(f"TEST.DATASET {t.DATASET!r} (cross-domain testing) is for MODEL.TASK "
                        "'tbps' (text-to-image); image re-ID cross-dataset testing is not "
                        "implemented (the SIE camera / view tables and the camera filter belong "
                        "to the training dataset): set TEST.DATASET ''")
    elif t.DATASET == d.NAMES:
        problems.append(f"TEST.DATASET {t.DATASET!r} is the training dataset (DATASETS.NAMES): "
                        "its test split is what test.py evaluates without the key; set "
                        "TEST.DATASET '' (or name another dataset for cross-domain testing)")
    return problems


def init_checkpoint_problems(cfg) -> List[str]:
    """MODEL.TBPS.INIT_CHECKPOINT: a dual encoder of FAMILY 'open_clip' whose towers take no
    other weights (PRETRAINED '', MODEL.PRETRAIN_CHOICE 'none')."""
    m = cfg.MODEL
    t = m.TBPS
    if not t.INIT_CHECKPOINT:
        return []
    key = f"MODEL.TBPS.INIT_CHECKPOINT {t.INIT_CHECKPOINT!r}"
    problems = []
    if m.TASK != "tbps" or t.FAMILY != "open_clip" or t.ARCH != "dual_encoder":
        problems.append(f"{key} is a TBPS-CLIP dual-encoder checkpoint: it needs MODEL.TASK "
                        "'tbps', MODEL.TBPS.ARCH 'dual_encoder' and MODEL.TBPS.FAMILY "
                        "'open_clip'")
    if t.PRETRAINED:
        problems.append(f"{key} replaces the towers' weights, so MODEL.TBPS.PRETRAINED "
                        f"{t.PRETRAINED!r} would be read for nothing: set MODEL.TBPS.PRETRAINED ''")
    if m.PRETRAIN_CHOICE != "none":
        problems.append(f"{key} and MODEL.PRETRAIN_CHOICE '{m.PRETRAIN_CHOICE}' both give the "
                        "model's weights: use one (MODEL.PRETRAIN_CHOICE 'none' to start from "
                        "the TBPS-CLIP checkpoint)")
    return problems


def mvs_losses(cfg) -> Tuple[str, ...]:
    """The losses of LOSS.NAMES that run with MVS (LOSS.<NAME>.MVS True; :data:`MVS_LOSSES`)."""
    return tuple(n for n in MVS_LOSSES if n in cfg.LOSS.NAMES and cfg.LOSS[n.upper()].MVS)


def tbps_augment_problems(cfg) -> List[str]:
    """TBPS-CLIP's augmentation keys (datasets/tbps_augment.py): the image pools and MVS belong
    to MODEL.TASK 'tbps', each LOSS.<NAME>.MVS to its loss in LOSS.NAMES, the caption augmentation to training captions, and
    back-translations to a caption file."""
    problems = []
    task, loss, aug = cfg.MODEL.TASK, cfg.LOSS, cfg.INPUT
    if aug.TBPS_AUG.MAIN != "standard" and task != "tbps":
        problems.append(f"INPUT.TBPS_AUG.MAIN '{aug.TBPS_AUG.MAIN}' is TBPS-CLIP's pool for "
                        "MODEL.TASK 'tbps': set 'standard' for image re-ID")
    for name in MVS_LOSSES:
        key = f"LOSS.{name.upper()}.MVS"
        if loss[name.upper()].MVS and name not in loss.NAMES:
            problems.append(f"{key} True (MVS, an option of '{name}') but '{name}' is not in "
                            f"LOSS.NAMES {list(loss.NAMES)}: add '{name}' or set {key} False")
    text = aug.TEXT_AUG
    if (text.DELETE_P > 0 or text.BACKTRANS_P > 0) and cfg.DATASETS.CAPTION_SOURCE == "none":
        problems.append("INPUT.TEXT_AUG.DELETE_P / BACKTRANS_P > 0 but DATASETS.CAPTION_SOURCE "
                        "'none': there are no training captions to augment")
    if text.BACKTRANS_P > 0 and cfg.DATASETS.CAPTION_SOURCE != "annotation":
        problems.append(f"INPUT.TEXT_AUG.BACKTRANS_P {text.BACKTRANS_P}: back-translations "
                        "('captions_bt') come with the annotation's captions; set "
                        "DATASETS.CAPTION_SOURCE 'annotation' or BACKTRANS_P 0")
    return problems


def lora_problems(cfg) -> List[str]:
    """MODEL.TBPS.LORA with ENABLE True: the dual encoder only (MODEL.TASK 'tbps'), at least one
    target and one tower, none named twice (the names themselves: :data:`RULES`)."""
    lora = cfg.MODEL.TBPS.LORA
    if not lora.ENABLE:
        return []
    problems = []
    if cfg.MODEL.TASK != "tbps":
        problems.append(f"MODEL.TBPS.LORA.ENABLE True but MODEL.TASK is '{cfg.MODEL.TASK}': LoRA "
                        "is built for the dual encoder of MODEL.TASK 'tbps' only")
    for key, choices in (("TARGETS", LORA_TARGETS), ("TOWERS", LORA_TOWERS)):
        value = list(lora[key])
        if not value:
            problems.append(f"MODEL.TBPS.LORA.{key} is empty: name some of {list(choices)}")
        twice = sorted({v for v in value if value.count(v) > 1})
        if twice:
            problems.append(f"MODEL.TBPS.LORA.{key} {value} names {twice} more than once")
    return problems


def lgur_problems(cfg) -> List[str]:
    """MODEL.TBPS.ARCH 'lgur' (model/lgur.py): MODEL.TASK 'tbps', LGUR's own losses only (the
    dual encoder's read its logit scale / ID head), no LoRA, widths divisible by the heads; and
    LGUR's losses only with ARCH 'lgur'."""
    m, names = cfg.MODEL, list(cfg.LOSS.NAMES)
    lgur_names = [n for n in names if n in LGUR_LOSS_NAMES]
    if m.TBPS.ARCH != "lgur" or m.TASK != "tbps":
        if lgur_names:
            return [f"LOSS.NAMES {lgur_names} are LGUR's losses: set MODEL.TASK 'tbps' and "
                    "MODEL.TBPS.ARCH 'lgur', or remove them"]
        return []
    g = m.LGUR
    problems = []
    others = [n for n in names if n not in LGUR_LOSS_NAMES]
    if others:
        problems.append(f"LOSS.NAMES {others} with MODEL.TBPS.ARCH 'lgur': LGUR composes "
                        f"{list(LGUR_LOSS_NAMES)} (the dual encoder's losses read its logit "
                        "scale / ID head, which LGUR has not); use MODEL.TBPS.ARCH "
                        "'dual_encoder' for them")
    if not lgur_names:
        problems.append(f"MODEL.TBPS.ARCH 'lgur' but LOSS.NAMES has none of "
                        f"{list(LGUR_LOSS_NAMES)} (the paper: all three)")
    if m.TBPS.LORA.ENABLE:
        problems.append("MODEL.TBPS.LORA.ENABLE True is built for the dual encoder, not for "
                        "MODEL.TBPS.ARCH 'lgur'; set it False")
    for key in ("DGA_HEADS", "PGU_HEADS"):
        if g[key] > 0 and g.DICT_DIM % g[key]:
            problems.append(f"MODEL.LGUR.DICT_DIM {g.DICT_DIM} is not divisible by "
                            f"MODEL.LGUR.{key} {g[key]}")
    return problems


def path_problems(cfg) -> List[str]:
    """Paths the config will read that do not exist (see the module docstring)."""
    m = cfg.MODEL
    problems = [f"TEST.QUERY_SUBSETS file {spec!r} does not exist" for spec in cfg.TEST.QUERY_SUBSETS
                if spec != "near_twin" and not os.path.isfile(spec)]
    t = m.TBPS
    if m.TASK == "tbps" and t.FAMILY == "open_clip" and t.PRETRAINED and \
            is_local_path(t.PRETRAINED) and not os.path.isfile(os.path.expanduser(t.PRETRAINED)):
        problems.append(f"MODEL.TBPS.PRETRAINED {t.PRETRAINED!r} does not exist (a weight file, "
                        "an open_clip pretrained tag such as 'openai', or '' for random init)")
    if m.TASK == "tbps" and t.FAMILY == "hf_siglip" and not t.TINY and \
            is_local_path(t.HF_MODEL) and not os.path.isdir(os.path.expanduser(t.HF_MODEL)):
        problems.append(f"MODEL.TBPS.HF_MODEL {t.HF_MODEL!r} is not a folder (a local folder of "
                        "the Hugging Face model files, or a hub id)")
    if m.TASK == "tbps" and t.INIT_CHECKPOINT and \
            not os.path.isfile(os.path.expanduser(t.INIT_CHECKPOINT)):
        problems.append(f"MODEL.TBPS.INIT_CHECKPOINT {t.INIT_CHECKPOINT!r} does not exist (a "
                        "released TBPS-CLIP checkpoint file, or '' for none)")
    g = m.LGUR
    if m.TASK == "tbps" and t.ARCH == "lgur" and g.IMAGE_BACKBONE != "open_clip" and \
            g.IMAGE_PRETRAINED and not g.IMAGE_PRETRAINED.startswith(TIMM_PREFIX) and \
            not os.path.isfile(os.path.expanduser(g.IMAGE_PRETRAINED)):
        problems.append(f"MODEL.LGUR.IMAGE_PRETRAINED {g.IMAGE_PRETRAINED!r} does not exist (a "
                        "weight file, 'timm:<model name>', or '' for random init)")
    if m.PRETRAIN_CHOICE in ("imagenet", "self"):
        path = m.PRETRAIN_PATH
        hub_tag = m.PRETRAIN_CHOICE == "imagenet" and path.startswith(TIMM_PREFIX)
        if not path:
            what = "a weight file" + (" or 'timm:<model name>'"
                                      if m.PRETRAIN_CHOICE == "imagenet" else "")
            problems.append(f"MODEL.PRETRAIN_PATH is empty but MODEL.PRETRAIN_CHOICE "
                            f"'{m.PRETRAIN_CHOICE}' reads it: give {what}, or set "
                            "MODEL.PRETRAIN_CHOICE 'none' for random init")
        elif not hub_tag and not os.path.isfile(path):
            problems.append(f"MODEL.PRETRAIN_PATH {path!r} does not exist (MODEL.PRETRAIN_CHOICE "
                            f"'{m.PRETRAIN_CHOICE}' reads it)")
    return problems


def check_config(cfg, check_paths: bool = True) -> None:
    """Raise :class:`ConfigError` listing every invalid value of ``cfg`` (and, with
    ``check_paths``, every missing path it reads)."""
    problems = (value_problems(cfg) + timm_problems(cfg) + task_problems(cfg) + lora_problems(cfg)
                + lgur_problems(cfg))
    problems += tbps_augment_problems(cfg)
    if check_paths:
        problems += path_problems(cfg)
    if problems:
        raise ConfigError("invalid config value(s):\n  " + "\n  ".join(problems)
                          + "\n(keys and their meaning: configs/defaults.py; rules: "
                            "configs/validate.py)")
