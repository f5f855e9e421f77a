"""The PhaseReID configuration tree (yacs).

Every key is documented beside its default and is read somewhere in the code
(``tests/test_config.py`` checks this). Recipes under ``configs/<Dataset>/*.yml``
override these defaults; the command line overrides the recipe
(``python train.py --config_file CFG KEY VALUE ...``). A recipe may start from another one with
``_BASE_: relative/path.yml`` (relative to the recipe; bases chain; the recipe's sections merge
key by key over the base's, its lists and values replace the base's): shared recipes are
``configs/Base-*.yml``. Resolution rules: ``configs/__init__.py``.

Every value is validated when a config is loaded (``configs/validate.py``: allowed values,
ranges, paths that must exist), so a typo fails before any work.

Conventions
- Booleans are booleans (``True``/``False``), never ``'yes'``/``'no'``.
- Epochs are 1-based: epoch 1 is the first pass over the data.
- Paths are taken from the config only (never from environment variables).
"""
from yacs.config import CfgNode as CN

_C = CN()

# ---------------------------------------------------------------------------
# MODEL
# ---------------------------------------------------------------------------
_C.MODEL = CN()
# 'auto' = CUDA when available else CPU; or 'cpu' / 'cuda' / 'cuda:1'.
_C.MODEL.DEVICE = "auto"
# The task: 'reid' (image query -> image gallery; the re-ID model of MODEL.NAME and its heads) or
# 'tbps' (text-based person search, caption query -> image gallery; the dual encoder of
# MODEL.TBPS, model/dual_encoder.py, and its tokenizer, datasets/tokenize.py).
_C.MODEL.TASK = "reid"
# Backbone family: 'transformer' (TransReID ViT/DeiT), 'resnet50' (timm ResNet-50 baseline) or
# 'timm' (any timm model by MODEL.TIMM_NAME under the same BNNeck head; model/backbones/timm_net.py).
_C.MODEL.NAME = "transformer"
# timm model name for MODEL.NAME 'timm' (e.g. 'resnet18', 'resnet50', 'efficientnet_b0',
# 'vit_small_patch16_224'); ViT-like models are built for INPUT.SIZE_TRAIN.
_C.MODEL.TIMM_NAME = ""
# ViT size preset: vit_tiny | vit_small | vit_base | deit_tiny | deit_small | deit_base
# (patch 16; DeiT presets share the ViT architecture, only the weights differ).
_C.MODEL.TRANSFORMER_TYPE = "vit_base"
# Number of transformer blocks to build; 0 = the preset's depth. A smaller value keeps the
# first blocks (pretrained weights of the dropped blocks are reported as unexpected keys).
_C.MODEL.VIT_DEPTH = 0
# MLP hidden width of every TransReID ViT block as a multiple of the embedding width (4 in every
# ViT/DeiT preset and checkpoint; a smaller ratio is for random-init models on a small budget).
_C.MODEL.VIT_MLP_RATIO = 4.0
# How the TransReID ViT turns the image into tokens: 'patch' (TransReID: one 16x16 convolution
# with stride STRIDE_SIZE) or 'conv' (Xiao et al. 2021: four 3x3 stride-2 conv + BN + ReLU
# layers and a 1x1 projection, total stride 16; random init only; model/backbones/
# vit_transreid.py ConvStem). A random-init ViT learns much faster with the conv stem.
_C.MODEL.VIT_STEM = "patch"
# Where initial weights come from: 'imagenet' (timm ViT/DeiT or ResNet state dict),
# 'self' (a PhaseReID checkpoint: finetune from its weights, classifier kept when shapes match)
# or 'none' (random init).
_C.MODEL.PRETRAIN_CHOICE = "none"
# Path to the weight file for PRETRAIN_CHOICE 'imagenet' / 'self'. For 'imagenet' it may also be
# 'timm:<model_name>' (e.g. 'timm:vit_base_patch16_224.augreg2_in21k_ft_in1k') to download
# through timm's hub (needs internet).
_C.MODEL.PRETRAIN_PATH = ""
# Overlapping patch embedding stride (TransReID: 12 for the *_stride recipes, 16 = no overlap).
_C.MODEL.STRIDE_SIZE = [16, 16]
# Stochastic depth rate, dropout after the position embedding, attention dropout.
_C.MODEL.DROP_PATH = 0.1
_C.MODEL.DROP_OUT = 0.0
_C.MODEL.ATT_DROP_RATE = 0.0
# Side Information Embedding: learned camera and/or view embeddings added to every token,
# scaled by SIE_COE. Used at training and test time.
_C.MODEL.SIE_CAMERA = False
_C.MODEL.SIE_VIEW = False
_C.MODEL.SIE_COE = 3.0
# Jigsaw Patch Module (TransReID): shift SHIFT_NUM patches, shuffle in SHUFFLE_GROUP groups,
# divide into DEVIDE_LENGTH parts. RE_ARRANGE False skips shift + shuffle.
_C.MODEL.JPM = False
_C.MODEL.SHIFT_NUM = 5
_C.MODEL.SHUFFLE_GROUP = 2
_C.MODEL.DEVIDE_LENGTH = 4
_C.MODEL.RE_ARRANGE = True
# ResNet-50 baseline and timm ResNet-family models (MODEL.NAME 'timm' with a layer4): stride of
# the last stage (1 = BoT's 2x larger final map; torchreid's ResNet-18/34 use 2).
_C.MODEL.LAST_STRIDE = 1
# 'bnneck' = BatchNorm after the global feature (bias frozen), classifier on the BN output;
# 'no' = classifier on the raw feature.
_C.MODEL.NECK = "bnneck"
# Distributed training through torchrun + DDP (one process per GPU; gloo on CPU).
_C.MODEL.DIST_TRAIN = False
# Seconds a DDP collective (or the start-up rendezvous) waits for the other processes before the
# job stops with an error (torch's own default is 30 minutes). Waits for rank 0 count too: the
# others wait while it generates SynthPedes on first use and while it evaluates, so raise it
# when that takes longer (e.g. re-ranking on a large gallery).
_C.MODEL.DIST_TIMEOUT_S = 300

# CLIP semantic fusion (Model B, model/clip_fusion.py): a CLIP image tower's feature c is fused
# into the pre-BNNeck global feature g (and, for 'quickwin', into every JPM local feature); the
# fused feature replaces g for the BNNeck, the classifier and every metric loss.
# USE_CLIP: build the fusion (False = plain TransReID; a checkpoint trained with fusion is tested
# without it by passing MODEL.USE_CLIP False to test.py: the fusion layers are dropped, expect a
# lower mAP).
_C.MODEL.USE_CLIP = False
# 'open_clip': a frozen open_clip image tower (CLIP_BACKBONE + CLIP_PRETRAIN), fused by
# CLIP_FUSION; 'hf': a Hugging Face CLIP vision tower (CLIP_HF_ID, e.g. TinyCLIP), trainable,
# fused into the global feature only (CLIP_FUSION is not used), optional AFEM / semantic
# refinement. 'hf' needs the transformers package.
_C.MODEL.CLIP_IMPL = "open_clip"
# open_clip fusion: 'minimal' = Linear([g; c]) on the global feature only; 'quickwin' =
# LayerNorm on both, a learned sigmoid gate a, Linear([(1 - a) LN(g); a LN(c)]) on the global
# feature and (a shared head) on every JPM local feature.
_C.MODEL.CLIP_FUSION = "minimal"
# open_clip model name and pretrained tag (or a local weight file); '' = random init.
_C.MODEL.CLIP_BACKBONE = "ViT-B-16"
_C.MODEL.CLIP_PRETRAIN = "laion2b_s34b_b88k"
# Hugging Face hub id or a local folder of a CLIP (vision) model, for CLIP_IMPL 'hf'.
_C.MODEL.CLIP_HF_ID = "wkcn/TinyCLIP-ViT-61M-32-Text-29M-LAION400M"
# (height, width) the image is resized to before the CLIP tower (ImageNet/0.5 normalisation is
# undone and CLIP's mean/std applied); the tower's position embedding is resized once to it.
_C.MODEL.CLIP_INPUT_SIZE = [224, 224]
# True = a tiny random-init tower of the same family (width 64, 2 layers, 2 heads, patch 16)
# instead of loading CLIP_BACKBONE / CLIP_HF_ID: for tests and SynthPedes, never for real runs.
_C.MODEL.CLIP_TINY = False
# 'hf' only: train the CLIP tower (False = frozen) at BASE_LR * CLIP_LR_SCALE.
_C.MODEL.CLIP_FINETUNE = True
_C.MODEL.CLIP_LR_SCALE = 0.2
# 'hf' only: AFEM (T + W_g * f(T), f = Linear -> BN -> ReLU, one learned scale per channel group
# of 32) on the CLIP feature, and the semantic refinement term Linear(AFEM(t) or t) added to the
# fused feature.
_C.MODEL.CLIP_USE_AFEM = True
_C.MODEL.CLIP_USE_SEM_REFINE = True

_C.MODEL.TEXT = CN()
# Text encoder (model/text_encoder.py) for text-guided losses (TG-MIM): the text tower of the
# open_clip model OPEN_CLIP_MODEL with weights PRETRAINED (an open_clip pretrained tag such as
# 'openai', or a local weight file; '' = random init). The tokenizer is open_clip's for that model
# (CLIP's BPE ships with open_clip and works offline).
_C.MODEL.TEXT.OPEN_CLIP_MODEL = "ViT-B-16"
_C.MODEL.TEXT.PRETRAINED = "openai"
# True = a local PRETRAINED file that is a TorchScript archive (OpenAI's released CLIP .pt files)
# is read with torch.jit.load, which runs code from the archive (logged when used); False = such
# a file is refused with the one-line conversion to a plain state dict.
_C.MODEL.TEXT.ALLOW_TORCHSCRIPT = False
# True = a tiny random-init text tower (width 64, 2 layers, 2 heads; CLIP BPE tokenizer): tests
# and SynthPedes only.
_C.MODEL.TEXT.TINY = False
# Tokens per caption (CLIP: 77); longer captions are truncated (the end-of-text token is kept).
_C.MODEL.TEXT.CONTEXT_LENGTH = 77
# True = frozen text tower (no gradients, eval mode); False = trained at BASE_LR * LR_SCALE.
_C.MODEL.TEXT.FREEZE = True
_C.MODEL.TEXT.LR_SCALE = 0.1

_C.MODEL.TBPS = CN()
# The dual encoder of MODEL.TASK 'tbps' (model/dual_encoder.py): an image tower and a text tower,
# each giving a projected global feature (img_feat / txt_feat, not normalised) and token
# features, a learnable logit scale kappa = exp(s) <= 100 and, for hf_siglip, SigLIP's logit bias.
# The image tower is built for INPUT.SIZE_TRAIN (= SIZE_TEST; e.g. [384, 128] as IRRA): a loaded
# position embedding of another grid is resized once, bicubically, at load. Images arrive
# normalised with INPUT.PIXEL_MEAN / STD and are mapped to the tower's own normalisation (CLIP's
# or SigLIP's mean / std; none for random-init towers).
# FAMILY: 'open_clip' (open_clip's CLIP architectures: OPEN_CLIP_MODEL + PRETRAINED) or
# 'hf_siglip' (a Hugging Face transformers SiglipModel and its tokenizer: HF_MODEL).
_C.MODEL.TBPS.FAMILY = "open_clip"
# The model of MODEL.TASK 'tbps': 'dual_encoder' (the towers of FAMILY, model/dual_encoder.py) or
# 'lgur' (LGUR, ACM MM 2022: image / text token encoders + DGA + PGU, model/lgur.py, settings
# MODEL.LGUR.*, losses 'lgur_id' / 'lgur_rank_m' / 'lgur_rank_g'). With 'lgur' the FAMILY /
# OPEN_CLIP_MODEL / PRETRAINED / TINY keys describe its image tower only when
# MODEL.LGUR.IMAGE_BACKBONE is 'open_clip'; IMAGE_LR_SCALE / TEXT_LR_SCALE / ID_LR_SCALE apply to
# its image tower, its text tower (the BiLSTM; BERT is frozen) and its ID classifiers.
_C.MODEL.TBPS.ARCH = "dual_encoder"
# open_clip architecture (open_clip.list_models(): 'ViT-B-16', 'ViT-B-16-quickgelu', 'ViT-L-14',
# ...; towers of open_clip's own VisionTransformer / TextTransformer) and its weights: a
# pretrained tag (e.g. 'openai', as IRRA and TBPS-CLIP; QuickGELU follows the tag; downloaded
# once into open_clip's cache), a local weight file (a CLIP state dict as open_clip or OpenAI save
# it; name the '-quickgelu' architecture for OpenAI weights from a file), or '' = random init.
_C.MODEL.TBPS.OPEN_CLIP_MODEL = "ViT-B-16"
_C.MODEL.TBPS.PRETRAINED = "openai"
# True = a PRETRAINED file that is a TorchScript archive (OpenAI's released ViT-B-16.pt) is read
# with torch.jit.load, which runs code from the archive (logged); False = refused with the
# one-line conversion to a plain state dict.
_C.MODEL.TBPS.ALLOW_TORCHSCRIPT = False
# hf_siglip: a local folder (save_pretrained / hf download) or a hub id of a SiglipModel; its
# weights, config and tokenizer (sentencepiece) are all read from it. seeds/001-002 use
# 'google/siglip-base-patch16-256-multilingual' (256 x 256, captions of 64 tokens).
_C.MODEL.TBPS.HF_MODEL = "google/siglip-base-patch16-256-multilingual"
# hf_siglip: True = the caption's padding is hidden from the text tower's attention (the
# tokenizer's attention mask, as the mSigLIP TBPS repos pass it); False = every position is
# attended, as SigLIP was pretrained. (open_clip's CLIP text tower is causal and pools at the
# end-of-text token, so its padding never reaches the features.)
_C.MODEL.TBPS.HF_ATTENTION_MASK = True
# True = tiny random-init towers of FAMILY (width 64, 2 layers, 2 heads, patch 16, CLIP BPE
# tokenizer) for tests and SynthPedes, never for real runs; an open_clip PRETRAINED weight file
# of the same shape is still loaded into them (a tag is an error).
_C.MODEL.TBPS.TINY = False
# TINY only: D, the dimension of img_feat / txt_feat (open_clip: the projection of the 64-wide
# towers; hf_siglip: the width of both towers). Pretrained towers have their own.
_C.MODEL.TBPS.EMBED_DIM = 64
# Tokens per caption L; 0 = the text tower's own (CLIP 77, SigLIP 64). A CLIP tower built for a
# smaller L keeps the first L rows of a loaded text position embedding.
_C.MODEL.TBPS.CONTEXT_LENGTH = 0
# Initial logit scale kappa_0 = 1 / INIT_TEMPERATURE (the parameter is ln kappa; CLIP and
# TBPS-CLIP: 0.07; SigLIP's paper: 0.1) and SigLIP's logit bias b_0 (-10), used for random-init
# towers, and for loaded ones when RESET_LOGIT_PARAMS is True (TBPS-CLIP and the mSigLIP repos
# start a fresh scale at 1 / 0.07 on pretrained CLIP); False keeps the loaded weights' own
# values. kappa <= 100 always (as CLIP), so INIT_TEMPERATURE >= 0.01. A loss with its own fixed
# temperature (IRRA's SDM, tau 0.02) ignores the model's scale.
_C.MODEL.TBPS.RESET_LOGIT_PARAMS = False
_C.MODEL.TBPS.INIT_TEMPERATURE = 0.07
_C.MODEL.TBPS.INIT_LOGIT_BIAS = -10.0
# LR rules (DualEncoder.lr_scales(), merged under SOLVER.LR_SCALES, which wins for the same
# prefix): lr = BASE_LR x scale for the image tower ('image_tower.'), the text tower
# ('text_tower.') and the logit scale / bias. New modules (branches, classifiers) are at scale 1,
# so pretrained towers below 1 (or new modules above, e.g. SOLVER.LR_SCALES ['classifier=5'] as
# IRRA) give the anchors' split. Freezing a tower for some phases: LOSS.PHASED.FREEZE_SEQ with
# the prefix 'image_tower' or 'text_tower' (all but its last k blocks: 'image_tower_but_last<k>').
_C.MODEL.TBPS.IMAGE_LR_SCALE = 1.0
_C.MODEL.TBPS.TEXT_LR_SCALE = 1.0
_C.MODEL.TBPS.LOGIT_LR_SCALE = 1.0
# LR scale of the cross-modal ID classifier 'id_head' (built when LOSS.NAMES has 'id'; IRRA x5).
_C.MODEL.TBPS.ID_LR_SCALE = 1.0
# True = activation (gradient) checkpointing in both towers: each transformer block's activations
# are recomputed in the backward pass instead of stored (less memory, about one more forward of
# time). open_clip: set_grad_checkpointing; hf_siglip: activation_checkpointing_enable (the
# successor of gradient_checkpointing_enable), non-reentrant. With or without LoRA.
_C.MODEL.TBPS.GRAD_CHECKPOINTING = False

# A released TBPS model checkpoint to start from (model/tbps_clip_weights.py), loaded over the
# open_clip towers instead of PRETRAINED (which must then be ''): the weights of both towers and
# the logit scale (unless RESET_LOGIT_PARAMS), with a load report logged and written to
# OUTPUT_DIR/init_checkpoint.txt. Read for training (the starting point) and for test.py without
# TEST.WEIGHT (zero-shot evaluation of the released model); a PhaseReID checkpoint given as
# TEST.WEIGHT replaces it. FAMILY 'open_clip' only; the towers are built with QuickGELU and
# OpenAI-CLIP-style key names (TBPS-CLIP is OpenAI's ViT-B/16 CLIP fine-tuned), and images are
# mapped to the normalisation the checkpoint was trained with (TBPS-CLIP: ImageNet's mean / std).
# '' = none.
_C.MODEL.TBPS.INIT_CHECKPOINT = ""
# The layout of INIT_CHECKPOINT: 'tbps_clip' (Flame-Chasers/TBPS-CLIP's checkpoint_best.pth:
# {'model': state dict with 'visual.*' / 'encode_text.*' / 'logit_scale' and training-only heads,
# 'optimizer', 'config'}).
_C.MODEL.TBPS.INIT_CHECKPOINT_FORMAT = "tbps_clip"

_C.MODEL.TBPS.LORA = CN()
# LoRA (Hu et al. 2021) on the towers through the peft package (model/lora.py; installed from
# requirements.txt, imported only when ENABLE is True): each adapted nn.Linear computes
# W x + (ALPHA / RANK) B A dropout(x) with W frozen, A (RANK x in) and B (out x RANK) trained, B
# starting at 0 (the model starts as the base). Only LoRA's A / B train in the towers (every
# other tower weight is frozen; a tower not in TOWERS is frozen whole); the logit scale / bias and
# the ID head train as without LoRA. LR: the tower's IMAGE_LR_SCALE / TEXT_LR_SCALE applies to
# its LoRA weights; no weight decay on them. transformer_<epoch>.pth holds the merged weights
# (W + (ALPHA / RANK) B A) in the plain layout: test.py evaluates it without peft; resume.pth keeps
# A, B and their optimiser state.
_C.MODEL.TBPS.LORA.ENABLE = False
_C.MODEL.TBPS.LORA.RANK = 16
_C.MODEL.TBPS.LORA.ALPHA = 32.0
# Dropout on the input of the LoRA branch (training only), in [0, 1).
_C.MODEL.TBPS.LORA.DROPOUT = 0.05
# The Linear layers adapted in every transformer block: 'q', 'k', 'v', 'out' (the attention's
# query / key / value / output projections: hf_siglip q_proj / k_proj / v_proj / out_proj;
# open_clip's nn.MultiheadAttention is re-expressed with separate q / k / v / out Linear layers,
# see model/lora.py) and 'mlp' (open_clip c_fc / c_proj, hf_siglip fc1 / fc2).
_C.MODEL.TBPS.LORA.TARGETS = ["q", "k", "v", "out"]
# The towers that get LoRA: 'image', 'text' (a tower left out is frozen).
_C.MODEL.TBPS.LORA.TOWERS = ["image", "text"]

_C.MODEL.LGUR = CN()
# LGUR (MODEL.TBPS.ARCH 'lgur'; model/lgur.py, losses/lgur.py; the paper's settings are the
# defaults, the released code's where the paper is silent). Image encoder IMAGE_BACKBONE:
# 'deit_small' (timm deit_small_patch16_224 at INPUT.SIZE_TRAIN, the paper), 'resnet50' (its final
# map, last stride 1), 'transreid' (the TransReID ViT of MODEL.TRANSFORMER_TYPE / STRIDE_SIZE /
# VIT_DEPTH) or 'open_clip' (the image tower of MODEL.TBPS.OPEN_CLIP_MODEL / PRETRAINED / TINY);
# its patch tokens, mapped by a Linear to DICT_DIM when their width differs.
_C.MODEL.LGUR.IMAGE_BACKBONE = "deit_small"
# Weights of 'deit_small' / 'resnet50' / 'transreid': a local file or 'timm:<model name>' (timm
# hub, needs internet or timm's cache), '' = random init.
_C.MODEL.LGUR.IMAGE_PRETRAINED = "timm:deit_small_patch16_224.fb_in1k"
# The frozen BERT before the BiLSTM: a Hugging Face hub id or local folder (weights, config and
# tokenizer), or 'tiny' (random-init 2-layer BERT of width 64 on a built-in vocabulary: tests and
# SynthPedes only). Tokens per caption CONTEXT_LENGTH (LGUR: 100), [CLS] and [SEP] included.
_C.MODEL.LGUR.TEXT_MODEL = "bert-base-uncased"
_C.MODEL.LGUR.CONTEXT_LENGTH = 100
# Dropout on the BERT features entering the BiLSTM (the released code declares 0.3 but never
# applies it: 0.0 reproduces it).
_C.MODEL.LGUR.TEXT_DROPOUT = 0.3
# DGA: dictionary of DICT_SIZE atoms of DICT_DIM (also the width of T, V and the PGU input);
# its cross-attention blocks: DGA_DEPTH blocks, DGA_HEADS heads, MLP width DGA_MLP_DIM (released
# code: 1 / 6 / 768). SHARE_DGA_BLOCK True = one block for the visual and text reconstruction and
# the text guidance (the released code); False = three blocks (the paper's T_V, T_T, MHA).
_C.MODEL.LGUR.DICT_SIZE = 400
_C.MODEL.LGUR.DICT_DIM = 384
_C.MODEL.LGUR.DGA_DEPTH = 1
_C.MODEL.LGUR.DGA_HEADS = 6
_C.MODEL.LGUR.DGA_MLP_DIM = 768
_C.MODEL.LGUR.SHARE_DGA_BLOCK = False
# PGU: NUM_PROTOTYPES shared queries, a decoder of PGU_DEPTH cross-attention blocks of PGU_HEADS
# heads and MLP width PGU_MLP_DIM (released code: 2 / 6 / 512), one projection per prototype to
# OUT_DIM. Inference feature: the NUM_PROTOTYPES x OUT_DIM parts of T_re / V_re, concatenated.
_C.MODEL.LGUR.NUM_PROTOTYPES = 6
_C.MODEL.LGUR.OUT_DIM = 512
_C.MODEL.LGUR.PGU_DEPTH = 2
_C.MODEL.LGUR.PGU_HEADS = 6
_C.MODEL.LGUR.PGU_MLP_DIM = 512
# The ranking loss of 'lgur_rank_m' / 'lgur_rank_g' (losses/lgur.py): margin alpha; negative
# 'hardest' (the paper: the hardest in-batch negative of another identity) or 'random_semi_hard'
# (the released code: one drawn at random among s_ii - m < s_ij < s_ii); 'sum' over anchors (the
# released code) or 'mean'.
_C.MODEL.LGUR.RANK_MARGIN = 0.3
_C.MODEL.LGUR.RANK_NEGATIVE = "hardest"
_C.MODEL.LGUR.RANK_REDUCTION = "sum"

# ---------------------------------------------------------------------------
# INPUT
# ---------------------------------------------------------------------------
_C.INPUT = CN()
# (height, width) of training and test images.
_C.INPUT.SIZE_TRAIN = [256, 128]
_C.INPUT.SIZE_TEST = [256, 128]
# Resize interpolation, the same at train and test: 'bilinear' | 'bicubic' | 'nearest'.
_C.INPUT.INTERPOLATION = "bicubic"
# Probability of a horizontal flip (training).
_C.INPUT.PROB = 0.5
# Probability of random erasing (training; Zhong et al. 2020, pixel-wise random fill).
_C.INPUT.RE_PROB = 0.5
# Zero padding (pixels) before the random crop back to SIZE_TRAIN; 0 disables pad + crop.
_C.INPUT.PADDING = 10
# Normalisation mean / std (0.5 for TransReID's ViT recipes, ImageNet's for DeiT / ResNet).
_C.INPUT.PIXEL_MEAN = [0.5, 0.5, 0.5]
_C.INPUT.PIXEL_STD = [0.5, 0.5, 0.5]
_C.INPUT.TBPS_AUG = CN()
# TBPS-CLIP's image augmentation pools (MODEL.TASK 'tbps'; datasets/tbps_augment.py). MAIN: the
# main training image's pipeline: 'standard' (flip / pad + crop / random erasing above) or 'mvs'
# (TBPS-CLIP: MVS_OPS operations drawn with replacement from its pool of ColorJitter 0.1,
# rotation 15 deg, RandomResizedCrop 0.9-1, grayscale 0.1, flip, random erasing 0.10-0.20). The
# extra views (SS-I's two SimCLR views, MVS-I's second MVS draw) are built when their loss is on
# (LOSS.NAMES 'ss', LOSS.<NAME>.MVS) and carried only in epochs where it weighs > 0.
_C.INPUT.TBPS_AUG.MAIN = "standard"
_C.INPUT.TBPS_AUG.MVS_OPS = 2
_C.INPUT.TEXT_AUG = CN()
# Training-caption augmentation (TBPS-CLIP; datasets/tbps_augment.py), seeded per (SOLVER.SEED,
# epoch, item): BACKTRANS_P = probability of using the caption's back-translation (the
# annotation's 'captions_bt' field; TBPS-CLIP 0.1; > 0 without any 'captions_bt' is an error),
# then DELETE_P = probability of deleting each word (EDA random deletion; TBPS-CLIP 0.05; never
# leaves a caption empty). 0 = off.
_C.INPUT.TEXT_AUG.BACKTRANS_P = 0.0
_C.INPUT.TEXT_AUG.DELETE_P = 0.0

# ---------------------------------------------------------------------------
# DATASETS
# ---------------------------------------------------------------------------
_C.DATASETS = CN()
# Dataset name: market1501 | dukemtmcreid | msmt17 | veri | vehicleid | synth | cuhkpedes |
# icfgpedes | rstpreid | vn3k (the text datasets: training with captions; image re-ID
# evaluation is not defined for them)
_C.DATASETS.NAMES = "market1501"
# Folder that holds the dataset folders (e.g. ROOT_DIR/market1501/bounding_box_train).
_C.DATASETS.ROOT_DIR = "./data"
# MSMT17: merge list_val into training (TransReID / BoT do: 1,041 ids, 32,621 images).
_C.DATASETS.MSMT17_TRAIN_WITH_VAL = True
# VehicleID: test list size (800 | 1600 | 2400), number of seeded gallery draws, their seed.
_C.DATASETS.VEHICLEID_TEST_SIZE = 800
_C.DATASETS.VEHICLEID_TRIALS = 10
_C.DATASETS.VEHICLEID_TRIAL_SEED = 0
# SynthPedes (DATASETS.NAMES 'synth'): generated on first use under ROOT_DIR, in a folder named
# after these parameters (e.g. synthpedes_ids250_seed0_128x64).
# Number of training identities, test identities, the generator seed, and the image size
# written to disk (height, width).
_C.DATASETS.SYNTH_TRAIN_IDS = 150
_C.DATASETS.SYNTH_TEST_IDS = 100
_C.DATASETS.SYNTH_SEED = 0
_C.DATASETS.SYNTH_IMAGE_SIZE = [128, 64]
# SynthPedes' validation split: this many of its training identities (drawn with SYNTH_SEED) are
# held out as ReIDDataset.val, as DATASETS.VAL_IDS does for other datasets (0 = none). A SynthPedes
# key, so a recipe that sets it still runs unchanged on another dataset (DATASETS.NAMES cuhkpedes).
_C.DATASETS.SYNTH_VAL_IDS = 0
# Captions of the training images (datasets/captions.py), needed by text-guided losses:
# 'annotation' = the dataset's caption file (SynthPedes reid_raw.json, CUHK-PEDES reid_raw.json,
# ICFG-PEDES ICFG-PEDES.json, RSTPReid / VN3K data_captions.json); 'attributes' = captions built
# from attribute annotations (SynthPedes attributes.json, VeRi-776 colour/type from
# train_label.xml / test_label.xml, Market-1501 market_attribute.mat); 'none' = no text. With
# captions, batches carry 'text_ids' / 'text_mask'; one caption per image is drawn per epoch.
_C.DATASETS.CAPTION_SOURCE = "none"
# Caption language where a dataset has several: 'en' or 'vi' (VN3K captions vs en_captions;
# SynthPedes reid_raw_vi.json).
_C.DATASETS.CAPTION_LANG = "en"
# Validation split by held-out training identities (datasets/factory.py hold_out_val_ids): VAL_IDS
# training identities, drawn with VAL_SEED, and all their images leave training and form
# ReIDDataset.val (text-based person search selects the best epoch on it, TEST.SELECT_ON). For
# datasets whose annotation has no validation split (ICFG-PEDES, SynthPedes); 0 = none. A dataset
# that has one (CUHK-PEDES, RSTPReid, VN3K 'validate') uses its own: VAL_IDS > 0 is then an error.
_C.DATASETS.VAL_IDS = 0
_C.DATASETS.VAL_SEED = 0
# Few-shot training: keep this fraction of the training identities (all their images), drawn with
# TRAIN_ID_SEED after any validation hold-out (datasets/factory.py keep_train_id_fraction); 1.0 = all
# (e.g. 0.1 = 10 % of CUHK-PEDES, as seeds/001 reports). Test and val splits are unchanged.
_C.DATASETS.TRAIN_ID_FRACTION = 1.0
_C.DATASETS.TRAIN_ID_SEED = 0
# CUHK-PEDES: True drops annotation ids 1369, 4116 and 6116 (one image each) from the training
# split, as LGUR's released code does (processed_data_singledata_CUHK.py; 11,000 classes);
# False = every identity (11,003), the other methods' protocol.
_C.DATASETS.CUHKPEDES_LGUR_DROP_IDS = False

# ---------------------------------------------------------------------------
# DATALOADER
# ---------------------------------------------------------------------------
_C.DATALOADER = CN()
# 'pk' = P identities x K images per batch (needed by triplet losses); 'random' = plain shuffle.
_C.DATALOADER.SAMPLER = "pk"
# K of the P x K sampler (images per identity in a batch); P = SOLVER.IMS_PER_BATCH / K.
_C.DATALOADER.NUM_INSTANCE = 4
# DataLoader worker processes (0 = load in the main process). Does not change the trained weights:
# every random choice of a training item is seeded by (SOLVER.SEED, epoch, item index).
_C.DATALOADER.NUM_WORKERS = 4
# Decode every training image once (resized to INPUT.SIZE_TRAIN) into one uint8 tensor in memory
# (N x 3 x H x W bytes) and augment from there: the same tensors, so the same weights, without
# the per-epoch JPEG decode (datasets/make_dataloader.py: decode_images).
_C.DATALOADER.CACHE_IMAGES = False
_C.DATALOADER.PHASED = CN()
# Conditional P x K (Model B): K follows the phase state, IMS_PER_BATCH stays fixed and
# P = IMS_PER_BATCH / K. K_WHEN_TRIPLETX while TripletX is active (metric 'tripletx' or
# 'routed'), else K_WHEN_SUPCON while SupCon's weight is > 0, else K_OTHER. Only the sampler is
# rebuilt when K changes. ENABLE False = NUM_INSTANCE in every epoch.
_C.DATALOADER.PHASED.ENABLE = False
_C.DATALOADER.PHASED.K_WHEN_TRIPLETX = 8
_C.DATALOADER.PHASED.K_WHEN_SUPCON = 8
_C.DATALOADER.PHASED.K_OTHER = 4

# ---------------------------------------------------------------------------
# SOLVER
# ---------------------------------------------------------------------------
_C.SOLVER = CN()
# 'SGD' | 'Adam' | 'AdamW'.
_C.SOLVER.OPTIMIZER_NAME = "SGD"
_C.SOLVER.BASE_LR = 0.008
_C.SOLVER.MOMENTUM = 0.9
# Use torch's fused optimizer kernel (``fused=True`` of SGD / Adam / AdamW: one kernel per
# parameter instead of ~6 element-wise passes). The same update rule; results differ from the
# default (for-loop) implementation only by floating-point rounding. On a 2-core CPU it makes
# the quickstart's AdamW step about 3x faster (bench/bench_train_step.py).
_C.SOLVER.FUSED_OPTIMIZER = False
_C.SOLVER.WEIGHT_DECAY = 1e-4
# Learning-rate factor of bias parameters (TransReID / BoT: 2).
_C.SOLVER.BIAS_LR_FACTOR = 2.0
# No weight decay on biases and normalisation parameters (and cls/pos/SIE embeddings).
_C.SOLVER.NO_DECAY_BIAS_NORM = True
# Per-sub-module LR scales as 'prefix=scale' strings matched against parameter names,
# e.g. ['classifier=10.0']; the longest matching prefix wins.
_C.SOLVER.LR_SCALES = []
# Schedule: 'cosine' (TransReID: linear warmup, then cosine over MAX_EPOCHS, stepped per epoch)
# or 'multistep' (BoT: x GAMMA at each epoch in STEPS, after the warmup).
_C.SOLVER.SCHEDULER = "cosine"
_C.SOLVER.MAX_EPOCHS = 120
_C.SOLVER.WARMUP_EPOCHS = 5
# Warmup starts at BASE_LR * WARMUP_FACTOR; cosine ends at BASE_LR * COSINE_MIN_FACTOR.
_C.SOLVER.WARMUP_FACTOR = 0.01
_C.SOLVER.COSINE_MIN_FACTOR = 0.002
_C.SOLVER.STEPS = [40, 70]
_C.SOLVER.GAMMA = 0.1
# Total images per optimisation step (summed over DDP processes).
_C.SOLVER.IMS_PER_BATCH = 64
# Seed of python, numpy and torch RNGs and of the sampler.
_C.SOLVER.SEED = 1234
# Mixed precision (used on CUDA only; CPU always trains in float32).
_C.SOLVER.AMP = True
# Clip the global gradient norm to this value; 0 = no clipping.
_C.SOLVER.GRAD_CLIP = 0.0
# Save transformer_<epoch>.pth every CHECKPOINT_PERIOD epochs and at the last epoch.
_C.SOLVER.CHECKPOINT_PERIOD = 10
# Evaluate on the test split every EVAL_PERIOD epochs and after the last epoch, like the
# checkpoints (0 = never during training).
_C.SOLVER.EVAL_PERIOD = 10

# ---------------------------------------------------------------------------
# LOSS
# ---------------------------------------------------------------------------
_C.LOSS = CN()
# Base loss components composed by name, each scaled by LOSS.<NAME>.W: 'id', 'triplet',
# 'center'. The auxiliary losses (TRIPLETX, SUPCON, ISGVFC, CIRCLE, TGMIM) are switched on by
# their own ENABLE key. Which metric loss runs in an epoch ('triplet', 'tripletx',
# brightness-'routed' Triplet/TripletX, or none) and every weight come from the phase plan
# (processor/phases.py):
# without LOSS.PHASED.ENABLE the whole run is one phase: metric 'routed' when
# LOSS.BRIGHTNESS.ENABLE, else 'tripletx' when LOSS.TRIPLETX.ENABLE, else 'triplet' when it is
# in NAMES, else none.
_C.LOSS.NAMES = ["id", "triplet"]
_C.LOSS.ID = CN()
# Weight of the identity (classification) loss.
_C.LOSS.ID.W = 1.0
# Per-phase weight specs ('const:x' or 'linear:x->y' across the phase, one per phase of the plan);
# [] = W in every phase. The same key exists for CENTER, ISGVFC, CIRCLE, TGMIM and the
# text-based person search losses. With MODEL.TASK 'tbps', 'id' is the cross-modal ID loss:
# 1/2 [CE(W v, y) + CE(W t, y)], one classifier (the dual encoder's 'id_head', LR x
# MODEL.TBPS.ID_LR_SCALE) shared by the image and text features (IRRA).
_C.LOSS.ID.W_SEQ = []
# Label smoothing epsilon: target (1 - eps) * onehot + eps / C (0 = plain CE).
_C.LOSS.ID.LABEL_SMOOTH = 0.0
_C.LOSS.TRIPLET = CN()
# Weight of the batch-hard triplet loss and its hinge margin m (BoT SOLVER.MARGIN).
_C.LOSS.TRIPLET.W = 1.0
_C.LOSS.TRIPLET.MARGIN = 0.3
# True = soft margin log(1 + exp(d_ap - d_an)) (every TransReID recipe); False = hinge with MARGIN.
_C.LOSS.TRIPLET.SOFT_MARGIN = True
# Feature the triplet loss reads: 'pre_bn' (global feature before BNNeck) or 'bnneck'.
_C.LOSS.TRIPLET.FEAT_SRC = "pre_bn"
# L2-normalise features before computing distances (BoT / TransReID: False).
_C.LOSS.TRIPLET.NORM_FEAT = False
_C.LOSS.CENTER = CN()
# Center loss weight (BoT 0.0005) and the learning rate of the separate SGD on the centres.
_C.LOSS.CENTER.W = 0.0005
_C.LOSS.CENTER.LR = 0.5
# Per-phase weight specs of the center loss ([] = W in every phase).
_C.LOSS.CENTER.W_SEQ = []

_C.LOSS.TRIPLETX = CN()
# TripletX (Model B, losses/tripletx.py): L2-normalised features (NORM_FEAT), cross-camera
# positives (CROSS_CAM_POS; all positives when an anchor has none), mean of the K hardest positive
# and negative distances, same-camera negative distances divided by SAME_CAM_NEG_BOOST,
# detached hardness weights sigmoid(ALPHA (d_ap - d_an)) rescaled to mean 1; soft-plus during the
# first WARMUP_EPOCHS epochs (SOFT_WARMUP), margin hinge (MARGIN) after. W = its weight when the
# phase plan is off (LOSS.PHASED.W_METRIC_SEQ when on). FEAT_SRC 'pre_bn' | 'bnneck'.
_C.LOSS.TRIPLETX.ENABLE = False
_C.LOSS.TRIPLETX.W = 1.0
_C.LOSS.TRIPLETX.MARGIN = 0.3
_C.LOSS.TRIPLETX.SOFT_WARMUP = True
_C.LOSS.TRIPLETX.WARMUP_EPOCHS = 10
_C.LOSS.TRIPLETX.K = 5
_C.LOSS.TRIPLETX.NORM_FEAT = True
_C.LOSS.TRIPLETX.CROSS_CAM_POS = True
_C.LOSS.TRIPLETX.SAME_CAM_NEG_BOOST = 1.2
_C.LOSS.TRIPLETX.ALPHA = 2.0
_C.LOSS.TRIPLETX.FEAT_SRC = "pre_bn"

_C.LOSS.SUPCON = CN()
# Supervised contrastive loss (losses/supcon.py) on a projection head (model output 'supcon_z':
# Linear(D, PROJ_HIDDEN) -> ReLU -> Linear(PROJ_HIDDEN, PROJ_DIM), L2-normalised) fed with
# FEAT_SRC 'bnneck' or 'pre_bn' (JPM: global feature only). Temperature T, weight W (when the
# phase plan is off; LOSS.PHASED.W_SUP_SPEC when on). POS_RULE 'class' = positives share the
# pid (the only rule). CAM_AWARE True: positives = same pid and another camera; False =
# SupContrast semantics. CAM_AWARE_MODE (read with CAM_AWARE True) says what the same-pid
# same-camera samples are: 'exclude' = neither positives nor negatives (left out of the softmax
# denominator too); 'denominator' = kept in the denominator, as Model B's camera-aware SupCon
# (to reproduce its published recipes).
_C.LOSS.SUPCON.ENABLE = False
_C.LOSS.SUPCON.T = 0.07
_C.LOSS.SUPCON.W = 0.30
_C.LOSS.SUPCON.FEAT_SRC = "bnneck"
_C.LOSS.SUPCON.CAM_AWARE = False
_C.LOSS.SUPCON.CAM_AWARE_MODE = "exclude"
_C.LOSS.SUPCON.POS_RULE = "class"
_C.LOSS.SUPCON.PROJ_HIDDEN = 2048
_C.LOSS.SUPCON.PROJ_DIM = 128

_C.LOSS.BRIGHTNESS = CN()
# Brightness routing (Model B "threshold-driven multi-loss routing"): mu = the batch's mean
# BT.709 luma of each augmented crop. MODE 'hard': anchors with mu < THRESH take TripletX, the
# others Triplet, each averaged within its subset and combined by subset size; 'soft': each
# anchor mixes its terms with the gate sigmoid((THRESH - mu) / K). Applied to the global and
# the JPM local features alike, in the phases whose metric is 'routed'.
# SUPCON_DARK_WEIGHT: weight of dark anchors in the SupCon mean (1.0 = off; Model B's code
# hard-codes 1.8, its README says no up-weighting).
_C.LOSS.BRIGHTNESS.ENABLE = False
_C.LOSS.BRIGHTNESS.THRESH = 0.35
_C.LOSS.BRIGHTNESS.K = 0.08
_C.LOSS.BRIGHTNESS.MODE = "hard"
_C.LOSS.BRIGHTNESS.SUPCON_DARK_WEIGHT = 1.0

_C.LOSS.ISGVFC = CN()
# IS-GVFC (VFE-TPS, losses/isgvfc.py): identity-calibrated distribution matching among the
# batch's global visual features (FEAT_SRC), similarity softmax at temperature T against the
# ground-truth identity distribution; MEMORY adds detached features of the same identities seen
# earlier in the epoch. Weight W, per-phase W_SEQ. INCLUDE_SELF True = the released code (each
# feature is in its own similarity row and its own positive); False leaves the diagonal out of
# both distributions (losses/isgvfc.py explains when that matters; docs/ablation_phased.md).
_C.LOSS.ISGVFC.ENABLE = False
_C.LOSS.ISGVFC.W = 1.0
_C.LOSS.ISGVFC.W_SEQ = []
_C.LOSS.ISGVFC.T = 0.02
_C.LOSS.ISGVFC.MEMORY = True
_C.LOSS.ISGVFC.INCLUDE_SELF = True
_C.LOSS.ISGVFC.FEAT_SRC = "pre_bn"

_C.LOSS.CIRCLE = CN()
# Circle loss (Sun et al. 2020, losses/circle.py) on FEAT_SRC: FORM 'pairwise' (per anchor,
# fast-reid) or 'batch' (all pairs at once, the Circle-loss reference code); margin M, scale
# GAMMA. Weight W, per-phase W_SEQ.
_C.LOSS.CIRCLE.ENABLE = False
_C.LOSS.CIRCLE.W = 1.0
_C.LOSS.CIRCLE.W_SEQ = []
_C.LOSS.CIRCLE.FORM = "pairwise"
_C.LOSS.CIRCLE.M = 0.25
_C.LOSS.CIRCLE.GAMMA = 128.0
_C.LOSS.CIRCLE.FEAT_SRC = "pre_bn"

_C.LOSS.TGMIM = CN()
# TG-MIM (text-guided masked image modelling, VFE-TPS paper; model/tgmim.py, losses/tgmim.py):
# MASK_RATIO of the patch tokens are replaced by a learned mask token (MASK_MODE 'random' =
# uniform without replacement, 'block' = BEiT-style rectangles), the masked image runs through
# the backbone (a second forward, separate from the clean one), patch tokens attend to the
# caption's text tokens (one cross-attention, HEADS heads), a light decoder (3x3 conv of width
# DECODER_DIM, 1x1 conv, PixelShuffle) reconstructs the pixels, and the loss is L1 on the masked
# pixels only. NORM_TARGET True = per-patch normalised targets (MAE). Weight W (VFE-TPS: 10),
# per-phase W_SEQ. Needs DATASETS.CAPTION_SOURCE != 'none' and, for MODEL.TASK 'reid', MODEL.NAME
# 'transformer'. MODEL.TASK 'tbps': the same head on the dual encoder's image tower (open_clip ViT,
# HF SigLIP ViT, tiny towers; mask token before the CLS / position embeddings), the image tokens
# attend to the text tower's caption tokens of the same forward, target = the INPUT-normalised
# image (model/dual_encoder.py); HEADS must divide MODEL.TBPS.EMBED_DIM / the towers' width.
_C.LOSS.TGMIM.ENABLE = False
_C.LOSS.TGMIM.W = 10.0
_C.LOSS.TGMIM.W_SEQ = []
_C.LOSS.TGMIM.MASK_RATIO = 0.6
_C.LOSS.TGMIM.MASK_MODE = "random"
_C.LOSS.TGMIM.DECODER_DIM = 256
_C.LOSS.TGMIM.HEADS = 8
_C.LOSS.TGMIM.NORM_TARGET = False

# ---- text-based person search losses (MODEL.TASK 'tbps'; losses/tbps.py, REFERENCES.md section 5)
# Composed by name like the image re-ID losses: put them in LOSS.NAMES ('itc', 'sdm', 'nitc',
# 'ritc', 'citc', 'cmpm', 'sigmoid_id', 'circle_inmodal', 'circle_cross', 'nc_itc', 'mlm', 'ss';
# 'id' is then the cross-modal ID loss, one classifier shared by the image and the text
# features, IRRA); each has its weight W and per-phase W_SEQ.
# All but 'mlm' and 'ss' read the dual encoder's img_feat / txt_feat (raw; each loss
# L2-normalises; 'ss' reads the SimCLR views' projections, 'mlm' the IRR head's logits).
# GATHER True: under DDP the loss compares the local rows with the features of every process (a
# gradient-correct all-gather; TBPS-CLIP's 320-image gathered batch); no effect on one process.
_C.LOSS.ITC = CN()
# ITC: CLIP InfoNCE with the model's learnable logit scale kappa (<= 100).
_C.LOSS.ITC.W = 1.0
_C.LOSS.ITC.W_SEQ = []
_C.LOSS.ITC.GATHER = True
_C.LOSS.SDM = CN()
# SDM (IRRA): KL(P || Q + EPS) per direction, summed over both, at a FIXED temperature
# TEMPERATURE (IRRA 0.02 -> kappa 50); 0 = use the model's learnable kappa instead.
_C.LOSS.SDM.W = 1.0
_C.LOSS.SDM.W_SEQ = []
_C.LOSS.SDM.TEMPERATURE = 0.02
_C.LOSS.SDM.EPS = 1e-8
_C.LOSS.SDM.GATHER = True
_C.LOSS.NITC = CN()
# N-ITC (TBPS-CLIP): CE against identity targets softened by the model's stop-gradient predictions
# with ratio alpha = SOFT_RATIO ramped linearly from 0 over the first epoch (0 = hard identity
# targets). STOP_FEATURES: where the stop-gradient features come from: 'second_forward' (TBPS-CLIP:
# a second forward of the batch under no_grad in training mode, +1 forward per step) or
# 'detached' (the current features, detached: the mSigLIP repos; equal without dropout).
_C.LOSS.NITC.W = 1.0
_C.LOSS.NITC.W_SEQ = []
_C.LOSS.NITC.SOFT_RATIO = 0.5
_C.LOSS.NITC.STOP_FEATURES = "second_forward"
_C.LOSS.NITC.GATHER = True
# MVS-I (TBPS-CLIP 'mvs_image'): N-ITC = 1/2 [N-ITC(I, T) + N-ITC(I~, T)], I~ a second draw of
# the image from the MVS pool (INPUT.TBPS_AUG; one more image-tower forward, plus one under
# no_grad with STOP_FEATURES 'second_forward', in epochs where N-ITC weighs > 0).
_C.LOSS.NITC.MVS = False
_C.LOSS.RITC = CN()
# R-ITC (TBPS-CLIP): the SDM form with EPS 0.01, the two directions averaged, learnable kappa.
_C.LOSS.RITC.W = 1.0
_C.LOSS.RITC.W_SEQ = []
_C.LOSS.RITC.EPS = 0.01
_C.LOSS.RITC.GATHER = True
_C.LOSS.CITC = CN()
# C-ITC (TBPS-CLIP, from CyCLIP): INMODAL x in-modal + CROSSMODAL x cross-modal consistency
# (lambda 0.25 / 0.25; TBPS-CLIP weighs the loss 0.1).
_C.LOSS.CITC.W = 0.1
_C.LOSS.CITC.W_SEQ = []
_C.LOSS.CITC.INMODAL = 0.25
_C.LOSS.CITC.CROSSMODAL = 0.25
_C.LOSS.CITC.GATHER = True
_C.LOSS.SS = CN()
# SS-I (TBPS-CLIP, SimCLR): two SimCLR views of each image (INPUT.TBPS_AUG) -> image tower ->
# MLP head EMBED_DIM -> HIDDEN_DIM -> EMBED_DIM (ReLU; training-only, not in the checkpoints
# test.py reads) -> NT-Xent at temperature T over the 2N views (gathered under DDP with GATHER).
# TBPS-CLIP: 512 -> 128 -> 512, T 0.1, weight 0.4. Switched on by 'ss' in LOSS.NAMES.
_C.LOSS.SS.W = 0.4
_C.LOSS.SS.W_SEQ = []
_C.LOSS.SS.T = 0.1
_C.LOSS.SS.HIDDEN_DIM = 128
_C.LOSS.SS.GATHER = True
_C.LOSS.CMPM = CN()
# CMPM (Zhang & Lu 2018): row-sum normalised identity targets, no temperature.
_C.LOSS.CMPM.W = 1.0
_C.LOSS.CMPM.W_SEQ = []
_C.LOSS.CMPM.EPS = 1e-8
_C.LOSS.CMPM.GATHER = True
_C.LOSS.SIGMOID_ID = CN()
# The mSigLIP repos' sigmoid identity loss ("NITC" there; not TBPS-CLIP's N-ITC): +-1 targets
# by pid, the model's learned logit scale and bias (MODEL.TBPS.FAMILY 'hf_siglip', or any dual
# encoder with INIT_LOGIT_BIAS: a bias is built when this loss is on).
_C.LOSS.SIGMOID_ID.W = 1.0
_C.LOSS.SIGMOID_ID.W_SEQ = []
_C.LOSS.SIGMOID_ID.GATHER = True
# MVS (the mSigLIP circle study's 'MVS'): 1/2 [L(I, T) + L(I~, T)], I~ the MVS-pool view of the
# image (as LOSS.NITC.MVS; one more image-tower forward in epochs where the loss weighs > 0).
# DIFFERENCE: the repos pass the original image features in the second term of their sigmoid loss
# (a no-op that costs a forward); here the term is on I~, as their MVS for NC-ITC and the circle.
_C.LOSS.SIGMOID_ID.MVS = False
# ---- circle-loss strategies on the dual encoder (losses/circle_tbps.py; the mSigLIP circle-loss
# study, REFERENCES.md section 5): circle margin M and scale GAMMA (its yaml: 0.25 / 64), weight W
# and per-phase W_SEQ. The two circle losses are one logsumexp over the local batch: no GATHER.
_C.LOSS.CIRCLE_INMODAL = CN()
# In-modal circle loss, 1/2 [Circle(image x image) + Circle(text x text)] (strategy 'auxiliary').
_C.LOSS.CIRCLE_INMODAL.W = 0.1
_C.LOSS.CIRCLE_INMODAL.W_SEQ = []
_C.LOSS.CIRCLE_INMODAL.M = 0.25
_C.LOSS.CIRCLE_INMODAL.GAMMA = 64.0
_C.LOSS.CIRCLE_CROSS = CN()
# Cross-modal circle loss on image x text similarities, positives every same-identity pair
# (strategies 'circle_only', weight 1, and 'auxiliary_cross', weight 0.1).
_C.LOSS.CIRCLE_CROSS.W = 0.1
_C.LOSS.CIRCLE_CROSS.W_SEQ = []
_C.LOSS.CIRCLE_CROSS.M = 0.25
_C.LOSS.CIRCLE_CROSS.GAMMA = 64.0
# MVS: 1/2 [Circle(V T^T) + Circle(V~ T^T)], V~ the MVS-pool view's features (the mSigLIP circle
# study's strategies 'circle_only' and 'auxiliary_cross' with MVS).
_C.LOSS.CIRCLE_CROSS.MVS = False
_C.LOSS.NC_ITC = CN()
# NC-ITC: BCE-with-logits against the identity indicator on circle-shaped logits of S and S^T,
# mean over all pairs (strategy 'intrinsic', in place of the sigmoid identity loss).
_C.LOSS.NC_ITC.W = 1.0
_C.LOSS.NC_ITC.W_SEQ = []
_C.LOSS.NC_ITC.M = 0.25
_C.LOSS.NC_ITC.GAMMA = 64.0
_C.LOSS.NC_ITC.GATHER = True
# MVS: 1/2 [NC-ITC(I, T) + NC-ITC(I~, T)] (the mSigLIP circle study's 'intrinsic' with MVS).
_C.LOSS.NC_ITC.MVS = False
_C.LOSS.MLM = CN()
# IRRA's implicit relation reasoning (IRR), 'mlm' in LOSS.NAMES: captions masked BERT-style
# (each ordinary token chosen with probability P = 0.15 -> 80 % mask token, 10 % random token,
# 10 % kept; datasets/mlm.py; CLIP BPE mask id 49405), the masked caption's text tokens attend
# to the image tokens in a cross-attention (HEADS heads; 0 = IRRA's D / 64, at least 1) followed
# by LAYERS transformer blocks (IRRA 4) and a vocabulary head (model/mlm.py); the loss is the
# cross-entropy at the chosen positions (losses/mlm.py), weight W (IRRA 1), per-phase W_SEQ; the
# masked forward runs only in epochs where it weighs > 0. The head's parameters ('mlm_head.')
# train at BASE_LR x LR_SCALE (IRRA: new modules x5, 5e-5 vs 1e-5). Training-only: checkpoints
# leave the head out. Local batch only (no GATHER).
_C.LOSS.MLM.W = 1.0
_C.LOSS.MLM.W_SEQ = []
_C.LOSS.MLM.P = 0.15
_C.LOSS.MLM.HEADS = 0
_C.LOSS.MLM.LAYERS = 4
_C.LOSS.MLM.LR_SCALE = 1.0

# ---- LGUR (MODEL.TBPS.ARCH 'lgur'; losses/lgur.py): put them in LOSS.NAMES; weight W, W_SEQ.
# L = L_M + L_G of the paper = all three at weight 1 (the released code sums the same terms).
_C.LOSS.LGUR_ID = CN()
# L_ID(T_re) + L_ID(V_re) + L_ID(T) + L_ID(V_g), each the mean over the prototypes of CE(W_k
# part_k); one classifier per prototype (LR x MODEL.TBPS.ID_LR_SCALE).
_C.LOSS.LGUR_ID.W = 1.0
_C.LOSS.LGUR_ID.W_SEQ = []
_C.LOSS.LGUR_RANK_M = CN()
# L_RK(T_re, V_re) + L_RK(T, V_g): the cross-modal ranking terms of L_M.
_C.LOSS.LGUR_RANK_M.W = 1.0
_C.LOSS.LGUR_RANK_M.W_SEQ = []
_C.LOSS.LGUR_RANK_G = CN()
# L_G = L_RK(T_re, T) + L_RK(V_re, V_g): reconstructed features pulled to the guidance features.
_C.LOSS.LGUR_RANK_G.W = 1.0
_C.LOSS.LGUR_RANK_G.W_SEQ = []

_C.LOSS.PHASED = CN()
# The phase plan (processor/phases.py; printed at the start of training). Epochs are 1-based and
# phase j covers BOUNDARIES[j-1] < epoch <= BOUNDARIES[j] (the last phase runs to MAX_EPOCHS):
# [30, 60] -> A = 1..30, B = 31..60, C = 61..MAX_EPOCHS. Per phase: METRIC_SEQ = metric loss
# ('triplet' | 'tripletx' | 'routed' | 'none'), W_METRIC_SEQ = its weight (a number or a spec),
# W_SUP_SPEC = SupCon weight spec ('const:x' or 'linear:x->y', x at the phase's first epoch and
# y at its last). TRIPLETX_END > 0 retires TripletX after that epoch (inclusive: TripletX runs
# in epochs <= TRIPLETX_END, then 'triplet' takes its place with the same weight); 0 = never.
# FREEZE_SEQ: per phase, comma-separated parameter-name prefixes whose updates are skipped
# (e.g. 'backbone'); [] or '' = nothing frozen. ENABLE False = one phase over the whole run.
# Dual encoder (MODEL.TASK 'tbps'): 'image_tower' / 'text_tower' freeze a tower whole;
# 'image_tower_but_last<k>' / 'text_tower_but_last<k>' (e.g. 'image_tower_but_last2') freeze it
# except its last k transformer blocks and the final LayerNorm / projection / pooling head after
# them (DualEncoder.freeze_prefixes). Every entry is resolved against the model before epoch 1.
_C.LOSS.PHASED.ENABLE = False
_C.LOSS.PHASED.BOUNDARIES = [30, 60]
_C.LOSS.PHASED.METRIC_SEQ = ["tripletx", "triplet", "triplet"]
_C.LOSS.PHASED.W_METRIC_SEQ = [1.2, 1.0, 1.0]
_C.LOSS.PHASED.W_SUP_SPEC = ["const:0.30", "linear:0.30->0.15", "const:0.0"]
_C.LOSS.PHASED.TRIPLETX_END = 0
_C.LOSS.PHASED.FREEZE_SEQ = []

# ---------------------------------------------------------------------------
# TEST
# ---------------------------------------------------------------------------
_C.TEST = CN()
# Images per batch when extracting test features.
_C.TEST.IMS_PER_BATCH = 128
# Weight file to evaluate (test.py).
_C.TEST.WEIGHT = ""
# 'before' = pre-BNNeck feature, 'after' = BNNeck output.
_C.TEST.NECK_FEAT = "before"
# L2-normalise features before the distance.
_C.TEST.FEAT_NORM = True
# 'euclidean' (squared Euclidean, as TransReID / BoT) or 'cosine' (1 - cosine similarity).
_C.TEST.DISTANCE = "euclidean"
# k-reciprocal re-ranking (Zhong et al. 2017). Paper defaults k1 20, k2 6, lambda 0.3;
# TransReID's code hard-codes k1 50, k2 15.
_C.TEST.RE_RANKING = False
_C.TEST.RE_RANKING_K1 = 20
_C.TEST.RE_RANKING_K2 = 6
_C.TEST.RE_RANKING_LAMBDA = 0.3
# CMC is reported up to this rank.
_C.TEST.MAX_RANK = 50
# Queries per evaluation block (memory O(block x gallery)); 0 = chosen from the gallery size.
_C.TEST.EVAL_BLOCK = 0
# test.py: also save query/gallery features, pids and camids to OUTPUT_DIR/features.npz.
_C.TEST.EXPORT_FEATURES = False
# MODEL.TASK 'tbps': the split the best epoch is selected on, by evaluation during training and
# by the launcher: 'val' (the dataset's validation split or DATASETS.VAL_IDS held-out identities;
# a config without either is refused at load) or 'test' (only when asked for: selecting on test
# makes the best-epoch numbers optimistic, and every summary says it was done). Image re-ID
# datasets have no validation split: their launcher summaries say that 'best' is test-selected.
_C.TEST.SELECT_ON = "val"
# MODEL.TASK 'tbps': test.py also reports image-to-text retrieval (each test image queries every
# test caption; relevant = same pid) as extra_metrics['i2t'] of summary.json (processor/t2i.py).
_C.TEST.I2T = False
# MODEL.TASK 'tbps': named caption-query subsets evaluated beside the full test set (test.py,
# summary.json extra_metrics['test-<name>']): 'near_twin' (SynthPedes: captions of identities with a
# near-twin) or a JSON file {"name": ..., "queries": [{"file_path": ..., "caption": ...}, ...]}
# (datasets/t2i.py query_subset). Each query keeps its ranking against the whole test gallery.
_C.TEST.QUERY_SUBSETS = []
# Ranked-list figure: number of queries drawn and gallery items per row (0 queries = no figure).
# MODEL.TASK 'tbps', test.py with TEST.WEIGHT: cross-domain (open-set) testing. The checkpoint
# (trained on DATASETS.NAMES) is evaluated on the TEST split of this dataset instead, with its own
# loader and the text-to-image protocol (e.g. trained on cuhkpedes, tested on icfgpedes /
# rstpreid); DATASETS.CAPTION_SOURCE / CAPTION_LANG and the SYNTH_* keys apply to it too. The best
# epoch is still selected on the TRAINING dataset's validation split (TEST.SELECT_ON 'val'),
# never on the cross-domain test split unless TEST.SELECT_ON 'test' asks for it. summary.json
# names both (``dataset`` = this one, ``train_dataset``). '' = the training dataset (in-domain).
# Training (in-training evaluation) ignores it; image re-ID refuses it.
_C.TEST.DATASET = ""
# The folder holding TEST.DATASET's folder; '' = DATASETS.ROOT_DIR.
_C.TEST.ROOT_DIR = ""
_C.TEST.VIS_QUERIES = 8
_C.TEST.VIS_TOPK = 10

# ---------------------------------------------------------------------------
# Misc
# ---------------------------------------------------------------------------
# Where logs, checkpoints, tensorboard events and test results go.
_C.OUTPUT_DIR = "./logs/run"


def get_cfg_defaults():
    """A fresh, mutable copy of the default configuration."""
    return _C.clone()
