"""Captions -> token ids and masks for the text tower (open_clip's tokenizers).

``build_tokenizer(cfg)`` returns a :class:`CaptionTokenizer` for MODEL.TEXT.OPEN_CLIP_MODEL (or
CLIP's BPE for MODEL.TEXT.TINY) with L = MODEL.TEXT.CONTEXT_LENGTH tokens per caption::

    tok = build_tokenizer(cfg)
    ids, mask = tok(["A man in a red shirt."])   # (1, L) int64, (1, L) bool
    tok.tokens(ids[0])   # ['<start_of_text>', 'a', 'man', 'in', 'a', 'red', 'shirt', '.', '<end_of_text>']

Semantics follow open_clip (``open_clip.get_tokenizer``), which is what its text towers expect:

- CLIP models (e.g. 'ViT-B-16'): open_clip's ``SimpleTokenizer``, CLIP's byte-level BPE (vocabulary
  ``bpe_simple_vocab_16e6.txt.gz`` shipped inside the open_clip package, so it works offline). A
  caption is lower-cased and whitespace-cleaned, then encoded as ``[SOT=49406] + BPE + [EOT=49407]``
  and zero-padded to L. A caption longer than L tokens is TRUNCATED to its first L tokens and the
  last one is overwritten with EOT (open_clip's rule), so every row ends its real tokens with EOT,
  which is where CLIP pools its text feature. ``mask`` is True from SOT to EOT inclusive and False
  on the padding; it is computed from the EOT position, not from ``ids != 0``, because id 0 is
  also a real BPE token ('!').
- Models whose tokenizer is a Hugging Face tokenizer (SigLIP, e.g. the multilingual
  'ViT-B-16-SigLIP-i18n-256', or ``hf-hub:`` names): open_clip loads it through ``transformers``,
  which needs the files in the Hugging Face cache. Offline without them, :func:`build_tokenizer`
  raises an error saying so. ``mask`` is ``ids != pad_token_id`` for these.

The tokenizer is picklable (DataLoader workers tokenise in ``__getitem__``).

With MODEL.TASK 'tbps' the captions are tokenised for the dual encoder (model/dual_encoder.py,
MODEL.TBPS.*) instead, with L = :func:`tbps_context_length`:

- FAMILY 'open_clip': open_clip's tokenizer of MODEL.TBPS.OPEN_CLIP_MODEL, as above;
- FAMILY 'hf_siglip': the model's own Hugging Face tokenizer (SigLIP: a sentencepiece model,
  which needs the ``sentencepiece`` package), loaded by ``AutoTokenizer`` from the same folder
  or hub id as the weights (MODEL.TBPS.HF_MODEL), wrapped in :class:`HFCaptionTokenizer`: each
  caption is encoded with the tokenizer's own rules (SigLIP: lower-cased, ``</s>`` appended),
  truncated to L tokens (the end token kept last) and padded to L ("max_length" padding, as
  SigLIP was trained: its text tower pools the LAST position); ``mask`` is the tokenizer's
  attention mask (True on real tokens incl. ``</s>``; SigLIP's pad token is ``</s>`` too, so
  the mask cannot be computed from the ids);
- TINY (either family): CLIP's BPE, which ships with open_clip (no files needed).

Masked-token prediction (IRRA's IRR / MLM, datasets/mlm.py) reads three facts from the tokenizer
object: ``mask_token_id`` (CLIP BPE: 49405, IRRA's ``<|mask|>``; a Hugging Face tokenizer: its
own mask token, or None when it has none), ``special_token_ids`` (never masked: CLIP BPE's SOT,
EOT, pad 0 and the mask id; a Hugging Face tokenizer's special ids, its pad and its mask) and
``vocab_size`` (the ids a replaced token is drawn from).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from utils.hf_hub import hf_from_pretrained
from utils.packages import import_open_clip

CLIP_BPE_MODEL = "ViT-B-16"  # MODEL.TEXT.TINY and MODEL.TBPS.TINY use its tokenizer (CLIP BPE)
#: IRRA's ``<|mask|>`` in CLIP's BPE (vocabulary 49408: SOT 49406, EOT 49407, pad 0). IRRA's
#: tokenizer drops the last BPE merge ('jekyll</w>') to free this id; open_clip's keeps it, so a
#: caption with the word 'jekyll' gives id 49405, which masked-token prediction then treats as a
#: mask (never chosen, never a target) -- a rare word, a documented difference.
CLIP_BPE_MASK_ID = 49405
#: L of the tiny dual-encoder towers when MODEL.TBPS.CONTEXT_LENGTH is 0: CLIP's 77, SigLIP's 64
TBPS_TINY_CONTEXT = {"open_clip": 77, "hf_siglip": 64}


class CaptionTokenizer:
    """Wraps an open_clip tokenizer: ``__call__(texts) -> (ids, mask)`` and ``tokens(row)``.

    Args:
        tokenizer: the object returned by ``open_clip.get_tokenizer``.
        context_length: L, tokens per caption (padding / truncation length).
        model_name: the open_clip model the tokenizer belongs to (for messages).
    """

    def __init__(self, tokenizer, context_length: int, model_name: str):
        self.tokenizer = tokenizer
        self.context_length = int(context_length)
        self.model_name = model_name
        self.eot_token_id = getattr(tokenizer, "eot_token_id", None)
        self.is_clip_bpe = type(tokenizer).__name__ == "SimpleTokenizer"
        self.pad_token_id = None
        if not self.is_clip_bpe:
            hf = getattr(tokenizer, "tokenizer", None)
            self.pad_token_id = getattr(hf, "pad_token_id", None)
            if self.pad_token_id is None:
                raise ValueError(f"the tokenizer of '{model_name}' ({type(tokenizer).__name__}) "
                                 "has no pad token id, so the text mask cannot be computed")

    def __call__(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Token ids (n, L) int64 and mask (n, L) bool (True on real tokens incl. SOT / EOT)."""
        if isinstance(texts, str):
            texts = [texts]
        ids = self.tokenizer(list(texts), context_length=self.context_length).long()
        if self.is_clip_bpe:
            # open_clip's truncation keeps EOT last, so every row holds exactly one EOT.
            is_eot = ids == self.eot_token_id
            last = is_eot.int().argmax(dim=1)
            mask = torch.arange(ids.shape[1]).unsqueeze(0) <= last.unsqueeze(1)
        else:
            mask = ids != self.pad_token_id
        return ids, mask

    def lengths(self, texts: Sequence[str]) -> List[int]:
        """Untruncated token counts (SOT and EOT included) of ``texts``."""
        out = []
        for text in texts:
            if self.is_clip_bpe:
                out.append(len(self.tokenizer.encode(text)) + 2)
            else:
                out.append(len(self.tokenizer.tokenizer(text)["input_ids"]))
        return out

    def tokens(self, ids_row: torch.Tensor) -> List[str]:
        """Readable token strings of one row, up to its last real token (for attention figures).

        CLIP BPE: each id decoded on its own by open_clip's ``SimpleTokenizer`` decoder, the
        end-of-word marker stripped (so a word split into pieces shows as several strings; a
        multi-byte character split across tokens shows as U+FFFD).
        """
        row = [int(i) for i in torch.as_tensor(ids_row).flatten().tolist()]
        if self.is_clip_bpe:
            end = row.index(self.eot_token_id) + 1 if self.eot_token_id in row else len(row)
            return [self.tokenizer.decode([i]).strip() for i in row[:end]]
        keep = [i for i in row if i != self.pad_token_id]
        return list(self.tokenizer.tokenizer.convert_ids_to_tokens(keep))


    # -- masked-token prediction (datasets/mlm.py) ---------------------------------------------
    @property
    def mask_token_id(self) -> Optional[int]:
        """The mask id of masked-token prediction: CLIP BPE 49405 (IRRA's ``<|mask|>``,
        :data:`CLIP_BPE_MASK_ID`); a Hugging Face tokenizer's ``mask_token_id`` (None: it has
        none)."""
        if self.is_clip_bpe:
            return CLIP_BPE_MASK_ID
        return getattr(getattr(self.tokenizer, "tokenizer", None), "mask_token_id", None)

    @property
    def special_token_ids(self) -> frozenset:
        """Ids never chosen for masking: CLIP BPE SOT, EOT, pad 0 and the mask id; otherwise the
        Hugging Face tokenizer's special ids, its pad and its mask."""
        if self.is_clip_bpe:
            return frozenset({self.tokenizer.sot_token_id, self.eot_token_id, 0,
                              CLIP_BPE_MASK_ID})
        hf = getattr(self.tokenizer, "tokenizer", None)
        ids = set(getattr(hf, "all_special_ids", []) or []) | {self.pad_token_id}
        return frozenset(i for i in ids | {self.mask_token_id} if i is not None)

    @property
    def vocab_size(self) -> int:
        """Number of token ids (CLIP BPE 49408)."""
        if self.is_clip_bpe:
            return len(self.tokenizer.encoder)
        return len(self.tokenizer.tokenizer)

    def __repr__(self) -> str:
        return (f"CaptionTokenizer({self.model_name!r}, {type(self.tokenizer).__name__}, "
                f"context_length={self.context_length})")


class HFCaptionTokenizer:
    """A Hugging Face tokenizer (SigLIP's sentencepiece, ...) with :class:`CaptionTokenizer`'s
    interface: ``__call__(texts) -> (ids, mask)`` and ``tokens(row)``.

    Args:
        tokenizer: a ``transformers`` tokenizer (e.g. from ``AutoTokenizer.from_pretrained``).
        context_length: L; every caption is truncated / padded ("max_length") to L tokens.
        name: where the tokenizer came from (for messages).
    """

    def __init__(self, tokenizer, context_length: int, name: str):
        self.tokenizer = tokenizer
        self.context_length = int(context_length)
        self.model_name = name
        self.pad_token_id = tokenizer.pad_token_id
        if self.pad_token_id is None:
            raise ValueError(f"the tokenizer of '{name}' ({type(tokenizer).__name__}) has no pad "
                             "token, so captions cannot be padded to a fixed length")

    def __call__(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Token ids (n, L) int64 and mask (n, L) bool (True on real tokens incl. the end token)."""
        if isinstance(texts, str):
            texts = [texts]
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True,
                             max_length=self.context_length, return_attention_mask=True,
                             return_tensors="pt")
        return enc["input_ids"].long(), enc["attention_mask"].bool()

    def lengths(self, texts: Sequence[str]) -> List[int]:
        """Untruncated token counts (special tokens included) of ``texts``."""
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]]

    def tokens(self, ids_row: torch.Tensor) -> List[str]:
        """Readable token strings of one row, trailing padding removed (one end token kept when
        the pad token is also the end token, as in SigLIP)."""
        row = [int(i) for i in torch.as_tensor(ids_row).flatten().tolist()]
        end = len(row)
        while end > 0 and row[end - 1] == self.pad_token_id:
            end -= 1
        if end < len(row) and self.pad_token_id == self.tokenizer.eos_token_id:
            end += 1
        return list(self.tokenizer.convert_ids_to_tokens(row[:end]))


    # -- masked-token prediction (datasets/mlm.py) ---------------------------------------------
    @property
    def mask_token_id(self) -> Optional[int]:
        """The tokenizer's own mask id, or None when it has none (SigLIP's sentencepiece)."""
        return self.tokenizer.mask_token_id

    @property
    def special_token_ids(self) -> frozenset:
        """Ids never chosen for masking: the tokenizer's special ids, its pad and its mask."""
        ids = set(self.tokenizer.all_special_ids) | {self.pad_token_id, self.mask_token_id}
        return frozenset(i for i in ids if i is not None)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included (``len(tokenizer)``)."""
        return len(self.tokenizer)

    def __repr__(self) -> str:
        return (f"HFCaptionTokenizer({self.model_name!r}, {type(self.tokenizer).__name__}, "
                f"context_length={self.context_length})")


def build_tokenizer(cfg):
    """The caption tokenizer of a config: MODEL.TEXT (OPEN_CLIP_MODEL, TINY, CONTEXT_LENGTH), or
    with MODEL.TASK 'tbps' the dual encoder's (:func:`build_tbps_tokenizer`).

    Raises:
        ValueError: an unknown open_clip model name (checked here rather than left to open_clip:
            docs/reference_differences.md) or a context length < 2.
        RuntimeError: the model's tokenizer cannot be loaded (e.g. a Hugging Face tokenizer
            that is not in the local cache and no internet).
    """
    if cfg.MODEL.TASK == "tbps":
        return build_tbps_tokenizer(cfg)
    t = cfg.MODEL.TEXT
    model_name = CLIP_BPE_MODEL if t.TINY else t.OPEN_CLIP_MODEL
    return build_tokenizer_for(model_name, t.CONTEXT_LENGTH)


def tbps_context_length(cfg) -> int:
    """L, tokens per caption of the dual encoder: MODEL.TBPS.CONTEXT_LENGTH, or when it is 0 the
    text tower's own length (open_clip: its ``text_cfg`` context length, 77 for CLIP; hf_siglip:
    the model config's ``max_position_embeddings``, 64 for SigLIP; TINY: 77 / 64). The text
    tower is built for this L (model/dual_encoder.py reads it here) and the tokenizer pads to it.

    Raises:
        ValueError: an unknown open_clip architecture. OSError / FileNotFoundError: the HF model
            config cannot be loaded (see ``utils.hf_hub``).
    """
    t = cfg.MODEL.TBPS
    if t.ARCH == "lgur":
        return int(cfg.MODEL.LGUR.CONTEXT_LENGTH)
    if t.CONTEXT_LENGTH:
        return int(t.CONTEXT_LENGTH)
    if t.TINY:
        return TBPS_TINY_CONTEXT[t.FAMILY]
    if t.FAMILY == "open_clip":
        open_clip = import_open_clip("MODEL.TBPS.FAMILY 'open_clip'")
        model_cfg = open_clip.get_model_config(t.OPEN_CLIP_MODEL)
        if model_cfg is None:
            raise ValueError(f"MODEL.TBPS.OPEN_CLIP_MODEL '{t.OPEN_CLIP_MODEL}' is not an "
                             "open_clip architecture; see open_clip.list_models()")
        return int(model_cfg["text_cfg"].get("context_length", 77))
    from transformers import AutoConfig
    config = hf_from_pretrained(AutoConfig, t.HF_MODEL, "MODEL.TBPS.HF_MODEL", "config")
    return int(config.text_config.max_position_embeddings)


def build_tbps_tokenizer(cfg):
    """The dual encoder's caption tokenizer (module docstring): a :class:`CaptionTokenizer` for
    the open_clip family and the tiny towers, a :class:`HFCaptionTokenizer` for hf_siglip.

    Raises:
        OSError / FileNotFoundError: MODEL.TBPS.HF_MODEL's tokenizer is not on disk and cannot be
            downloaded, or its package (sentencepiece) is missing; the message names the key and
            how to provide the files.
    """
    t = cfg.MODEL.TBPS
    length = tbps_context_length(cfg)
    if t.ARCH == "lgur":
        return build_lgur_tokenizer(cfg)
    if t.TINY:
        return build_tokenizer_for(CLIP_BPE_MODEL, length, section="MODEL.TBPS")
    if t.FAMILY == "open_clip":
        return build_tokenizer_for(t.OPEN_CLIP_MODEL, length, section="MODEL.TBPS")
    if length < 2:
        raise ValueError(f"MODEL.TBPS.CONTEXT_LENGTH must be >= 2, got {length}")
    from transformers import AutoTokenizer
    tokenizer = hf_from_pretrained(AutoTokenizer, t.HF_MODEL, "MODEL.TBPS.HF_MODEL", "tokenizer")
    return HFCaptionTokenizer(tokenizer, length, t.HF_MODEL)


def tiny_bert_vocab() -> dict:
    """The vocabulary of the tiny test BERT (MODEL.LGUR.TEXT_MODEL 'tiny'): BERT's special
    tokens, words of pedestrian descriptions, and every ASCII letter / digit / punctuation mark
    alone and as a '##' continuation, so any English caption tokenises without [UNK] (unknown
    words fall back to pieces). Fixed in the code: no files, the same at train and test."""
    words = (
        "a an the this that is are was has have with without and or of in on at to from by "
        "for his her he she they it its who wearing wears wear dressed carrying carries "
        "carry holding holds hold walking walks standing looking man woman lady guy girl boy "
        "person pedestrian young old tall short slim heavy thin fat long hair head face "
        "shirt t top blouse sweater jacket coat vest dress skirt shorts pants trousers jeans "
        "leggings shoes boots sneakers sandals socks bag backpack handbag shoulder purse "
        "hat cap beanie glasses sunglasses scarf belt logo chest front back side sleeve "
        "sleeves sleeveless stripes striped checked plain dark light bright colored color "
        "colour red orange yellow green blue navy purple pink brown beige white grey gray "
        "black blond golden silver horizontal vertical set no also something").split()
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += sorted(set(words) | set(chars))
    tokens += ["##" + c for c in chars]
    return {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}


def build_lgur_tokenizer(cfg) -> HFCaptionTokenizer:
    """LGUR's caption tokenizer (MODEL.TBPS.ARCH 'lgur'; model/lgur.py): the WordPiece tokenizer
    of its BERT, MODEL.LGUR.TEXT_MODEL (``transformers`` ``BertTokenizer``, lower-cased,
    ``[CLS] ... [SEP]``, padded / truncated to MODEL.LGUR.CONTEXT_LENGTH, mask = the attention
    mask), read from the same hub id / folder as the weights; for 'tiny' a tokenizer on the
    built-in vocabulary of the tiny BERT (:func:`tiny_bert_vocab`; no files).

    Raises:
        OSError / FileNotFoundError: TEXT_MODEL's tokenizer is not on disk and cannot be
            downloaded; the message names MODEL.LGUR.TEXT_MODEL.
    """
    from transformers import AutoTokenizer, BertTokenizer

    g = cfg.MODEL.LGUR
    length = int(g.CONTEXT_LENGTH)
    if g.TEXT_MODEL == "tiny":
        return HFCaptionTokenizer(BertTokenizer(vocab=tiny_bert_vocab(), do_lower_case=True),
                                  length, "LGUR tiny BERT vocabulary")
    tokenizer = hf_from_pretrained(AutoTokenizer, g.TEXT_MODEL, "MODEL.LGUR.TEXT_MODEL",
                                   "tokenizer")
    return HFCaptionTokenizer(tokenizer, length, g.TEXT_MODEL)


def build_tokenizer_for(model_name: str, context_length: int,
                        section: str = "MODEL.TEXT") -> CaptionTokenizer:
    """:func:`build_tokenizer` for an explicit open_clip model name and context length
    (``section``: the config section named in errors)."""
    open_clip = import_open_clip("the caption tokenizer")
    if context_length < 2:
        raise ValueError(f"{section}.CONTEXT_LENGTH must be >= 2 (SOT + EOT), got {context_length}")
    has_schema = model_name.startswith(("hf-hub:", "local-dir:"))
    if not has_schema and open_clip.get_model_config(model_name) is None:
        raise ValueError(f"{section}.OPEN_CLIP_MODEL '{model_name}' is not an open_clip model "
                         "(see open_clip.list_models())")
    try:
        tokenizer = open_clip.get_tokenizer(model_name, context_length=context_length)
    except Exception as exc:  # transformers / huggingface_hub raise OSError, ValueError, ...
        raise RuntimeError(
            f"cannot load the tokenizer of open_clip model '{model_name}' ({type(exc).__name__}: "
            f"{exc}). Its tokenizer is not CLIP's BPE (which ships with open_clip) but a Hugging "
            "Face tokenizer that must be in the local Hugging Face cache: download it once with "
            "internet (e.g. python -c \"import open_clip; open_clip.get_tokenizer('"
            f"{model_name}')\"), or set {section}.OPEN_CLIP_MODEL to a CLIP model (e.g. "
            "'ViT-B-16') whose BPE ships with open_clip.") from exc
    return CaptionTokenizer(tokenizer, context_length, model_name)


def truncation_warning(tokenizer, captions: Sequence[str], key: str,
                       sample: int = 2000) -> Optional[str]:
    """A warning text when captions are longer than the tokenizer's L (they are truncated, and
    the words past L never reach the text tower), else None. Up to ``sample`` captions, evenly
    spaced, are measured (``tokenizer.lengths``); ``key`` is the config key that sets L."""
    if not captions:
        return None
    step = max(1, len(captions) // sample)
    picked = list(captions[::step])
    lengths = tokenizer.lengths(picked)
    over = [n for n in lengths if n > tokenizer.context_length]
    if not over:
        return None
    return (f"{len(over)} of {len(picked)} captions measured ({100.0 * len(over) / len(picked):.0f} %"
            f") are longer than {key} {tokenizer.context_length} tokens (up to {max(lengths)}) and "
            f"are truncated: their last words never reach the text tower. Raise {key} (random-init "
            "towers take any length; a pretrained tower is limited by its position embedding)")
