"""Masked captions for IRRA's implicit relation reasoning (IRR, a masked-token prediction task).

Reference: IRRA (Jiang & Ye, CVPR 2023), ``anosorae/IRRA`` ``datasets/bases.py``
``ImageTextMLMDataset._build_random_masked_tokens_and_labels`` (BERT's rule):

- every ORDINARY token (not SOT / EOT / padding / the mask token) is chosen with probability
  p = 0.15; a chosen token is replaced by the mask token with probability 0.8, by a random
  ordinary token with probability 0.1 (drawn uniformly; it may equal the original) and kept
  with probability 0.1;
- the label of a chosen position is its original id, 0 everywhere else (0 = "not a target";
  the loss ignores label 0, ``losses.mlm.mlm_loss``);
- a caption in which nothing was chosen gets its position 1 (the first token after SOT) masked
  with label = its id ("at least mask 1").

CLIP BPE (IRRA): mask 49405, SOT 49406, EOT 49407, pad 0, vocabulary 49408, random tokens from
1..49404. Which ids are special comes from the tokenizer object (``datasets/tokenize.py``:
``mask_token_id``, ``special_token_ids``, ``vocab_size``). Id 0 is never chosen nor drawn as a
random token, whatever the tokenizer, because label 0 means "not a target" (CLIP BPE: 0 is the
padding and '!', which IRRA never chooses either).

Deliberate differences, all for tokenizers and rows IRRA never sees:

- "Position 1" is generalised to the first ordinary position of the row (CLIP BPE: position 1,
  IRRA's rule; SigLIP has no SOT, its first token is ordinary). A row without any ordinary token
  (an empty caption) stays unmasked with labels all 0 (IRRA would mask its EOT and make it a
  target).
- A Hugging Face tokenizer without a mask token (SigLIP's sentencepiece) is an error
  (:meth:`TokenMasker.from_tokenizer`): there is no id to mask with that the text tower knows.

Where masking happens: in the training item (``datasets.make_dataloader.ImageDataset``), as
IRRA does, with a ``torch.Generator`` seeded per (SOLVER.SEED, epoch, item index)
(:func:`mlm_seed`), like the augmentation's generator. So the masks depend on neither the batch
order, the worker, DATALOADER.NUM_WORKERS, the device, nor on whatever else draws from torch's
global RNG (dropout, TG-MIM's masks, the in-training evaluation): a run resumed after a kill -9
redraws exactly the masks of the uninterrupted run, and turning another branch on or off does
not change them. Drawing in the model from the global RNG (also restored on resume) would couple
the masks to every other consumer of that RNG.
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import numpy as np
import torch

#: IRRA / BERT: share of the chosen tokens replaced by the mask token, and by a random token
#: (the rest, 0.1, are kept)
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1
#: the word after (seed, epoch, index) in the masking generator's seed, apart from the
#: augmentation's stream (datasets/make_dataloader.py uses 1) and the caption draw's (none);
#: 'MLM' in ASCII, unlikely to collide with other small stream numbers
_MLM_STREAM = 0x4D4C4D


def mlm_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of item ``index``'s masking generator in ``epoch``: the first 63 bits of
    ``numpy.random.SeedSequence([seed, epoch, index, _MLM_STREAM])``."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index), _MLM_STREAM])
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


def mask_tokens(ids: torch.Tensor, mask: Optional[torch.Tensor] = None, *, mask_id: int,
                vocab_size: int, special_ids: Iterable[int], p: float = 0.15,
                generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """IRRA's masking of token ids (module docstring). Pure: the inputs are not modified.

    Args:
        ids: (..., L) int64 token ids; each row (last dim) is one caption.
        mask: (..., L) bool, True on real tokens (``text_mask``), or None = every position.
            Positions outside it are never chosen (the special ids already exclude padding;
            this is a second guard).
        mask_id: the id that replaces 80 % of the chosen tokens.
        vocab_size: ids are 0..vocab_size-1; random replacements are drawn uniformly from the
            ordinary ids among them (not special, not the mask, not 0).
        special_ids: ids never chosen (SOT, EOT, pad, ...); ``mask_id`` and 0 are added.
        p: probability of choosing an ordinary token, in (0, 1].
        generator: the torch generator of every draw (CPU); None = torch's global one.

    Returns:
        (masked ids, labels), both (..., L) int64: labels = the original id at chosen
        positions, 0 elsewhere.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masked, labels = mask_tokens(ids, mask, mask_id=49405, vocab_size=49408,
        ...                              special_ids={49406, 49407, 0}, generator=g)
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"masking probability p {p} is not in (0, 1] (LOSS.MLM.P)")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask id {mask_id} is outside the vocabulary 0..{vocab_size - 1}")
    ids = torch.as_tensor(ids)
    if ids.dtype != torch.long:
        raise TypeError(f"token ids must be int64, got {ids.dtype}")
    shape = ids.shape
    rows = ids.reshape(-1, shape[-1]) if ids.ndim else ids.reshape(1, 1)
    real = (torch.ones_like(rows, dtype=torch.bool) if mask is None
            else torch.as_tensor(mask).reshape(rows.shape).bool())

    excluded = sorted({int(i) for i in special_ids} | {int(mask_id), 0})
    ordinary_table = torch.ones(vocab_size, dtype=torch.bool)
    ordinary_table[[i for i in excluded if 0 <= i < vocab_size]] = False
    ordinary_ids = ordinary_table.nonzero().flatten()
    if ordinary_ids.numel() == 0:
        raise ValueError(f"no ordinary token id in a vocabulary of {vocab_size}")

    # every draw is made for every position, so the stream's use does not depend on the ids
    u = torch.rand(rows.shape, generator=generator, dtype=torch.float64)
    random_ids = ordinary_ids[torch.randint(ordinary_ids.numel(), rows.shape, generator=generator)]

    in_vocab = (rows >= 0) & (rows < vocab_size)
    eligible = real & in_vocab & ordinary_table[rows.clamp(0, vocab_size - 1)]
    chosen = eligible & (u < p)
    share = u / p   # uniform in [0, 1) given chosen: IRRA's `prob /= 0.15`
    to_mask = chosen & (share < MASK_SHARE)
    to_random = chosen & (share >= MASK_SHARE) & (share < MASK_SHARE + RANDOM_SHARE)

    # none chosen: the first ordinary position (IRRA: position 1, the first token after SOT)
    none = ~chosen.any(dim=1) & eligible.any(dim=1)
    first = eligible.int().argmax(dim=1)
    forced = torch.zeros_like(chosen)
    forced[none, first[none]] = True
    to_mask = to_mask | forced
    chosen = chosen | forced

    masked = torch.where(to_mask, torch.full_like(rows, mask_id),
                         torch.where(to_random, random_ids, rows))
    labels = torch.where(chosen, rows, torch.zeros_like(rows))
    return masked.reshape(shape), labels.reshape(shape)


class TokenMasker:
    """:func:`mask_tokens` with a tokenizer's ids and a per-(seed, epoch, index) generator, for
    the training items (picklable for DataLoader workers).

    Args:
        mask_id, vocab_size, special_ids, p: as :func:`mask_tokens`.
        seed: SOLVER.SEED, the first word of every item's masking seed (:func:`mlm_seed`).

    Example:
        >>> masker = TokenMasker.from_tokenizer(build_tokenizer(cfg), p=0.15, seed=1)
        >>> mlm_ids, mlm_labels = masker(text_ids, text_mask, epoch=3, index=17)
    """

    def __init__(self, mask_id: int, vocab_size: int, special_ids: Iterable[int],
                 p: float = 0.15, seed: int = 0):
        self.mask_id = int(mask_id)
        self.vocab_size = int(vocab_size)
        self.special_ids = frozenset(int(i) for i in special_ids)
        self.p = float(p)
        self.seed = int(seed)
        # fail at construction, not in a worker
        mask_tokens(torch.zeros(1, 1, dtype=torch.long), mask_id=self.mask_id,
                    vocab_size=self.vocab_size, special_ids=self.special_ids, p=self.p)

    @classmethod
    def from_tokenizer(cls, tokenizer, p: float = 0.15, seed: int = 0) -> "TokenMasker":
        """The masker of a ``datasets.tokenize`` tokenizer (its ``mask_token_id``,
        ``special_token_ids``, ``vocab_size``).

        Raises:
            ValueError: the tokenizer has no mask token (e.g. SigLIP's sentencepiece).
        """
        mask_id = tokenizer.mask_token_id
        if mask_id is None:
            raise ValueError(
                f"'mlm' in LOSS.NAMES (IRRA's masked-token prediction) needs a mask token, but "
                f"the caption tokenizer {tokenizer!r} has none. Use a tokenizer with one: "
                "MODEL.TBPS.FAMILY 'open_clip' (CLIP BPE, mask id 49405 as IRRA) or a Hugging "
                "Face model whose tokenizer defines mask_token; or remove 'mlm'")
        return cls(mask_id, tokenizer.vocab_size, tokenizer.special_token_ids, p, seed)

    def generator(self, epoch: int, index: int) -> torch.Generator:
        """The generator of item ``index``'s masking in ``epoch``."""
        return torch.Generator().manual_seed(mlm_seed(self.seed, epoch, index))

    def __call__(self, ids: torch.Tensor, mask: Optional[torch.Tensor], epoch: int,
                 index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(mlm_ids, mlm_labels) of one item's ``text_ids`` / ``text_mask`` (L,)."""
        return mask_tokens(ids, mask, mask_id=self.mask_id, vocab_size=self.vocab_size,
                           special_ids=self.special_ids, p=self.p,
                           generator=self.generator(epoch, index))

    def __repr__(self) -> str:
        return (f"TokenMasker(mask_id={self.mask_id}, vocab_size={self.vocab_size}, "
                f"p={self.p}, {len(self.special_ids)} special ids)")
