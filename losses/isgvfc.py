"""IS-GVFC: identity-supervised global visual feature calibration (VFE-TPS, task 'iikl').

Reference: VFE-TPS ("Enhancing Visual Representation for Text-based Person Searching",
Shen et al., arXiv 2412.20646), released code github zhangweifeng1218/VFE_TPS @ 60f2d4e:
``model/objectives.py`` ``compute_iikl`` (l. 361-389), the per-pid feature dictionary filled at
the end of ``model/build.py`` ``VFE_TPS.forward`` (l. 341-352), emptied by ``clear_dic``
(l. 101-102) which ``processor/processor.py`` calls at the start of every epoch (l. 62), and the
fixed logit scale ``1 / args.temperature`` (``model/build.py`` l. 20) with
``--temperature 0.02`` (``utils/options.py`` l. 19). This module follows the semantics of that
code; it is written independently (no code copied).

Formula
-------
Let x_1..x_N be the rows taking part (the B batch features, then the selected memory entries,
see below), each L2-normalised, with identities y_1..y_N. For every row i (an "anchor")

    s_ij = cos(x_i, x_j) / T                     (all j, self-similarity j = i included)
    p_ij = softmax_j(s_ij)                       (predicted image-image distribution)
    q_ij = [y_i == y_j] / #{k : y_k == y_i}      (ground-truth identity distribution)
    L_i  = sum_j p_ij * (log p_ij - log(q_ij + eps))      = KL(p_i || q_i + eps)

    loss = (1 / N) * sum_i L_i                   (mean over all N anchors, memory rows included)

Choices (all as in the released code unless marked DIFFERENCE)
--------------------------------------------------------------
* KL direction: KL(p || q), prediction first, exactly as IRRA's SDM which the reference copies:
  ``softmax(s) * (log_softmax(s) - log(labels_distribute + eps))``. Because p is the weight, a
  negative j (q_ij = 0) costs p_ij * (log p_ij - log eps): similarity mass placed on another
  identity is penalised, while how the mass is spread among the positives matters only through
  p log p. The reverse direction KL(q || p) would be cross-entropy to a soft target instead.
* eps = 1e-8, added to q inside the log only (q + eps is not renormalised, so this is not an
  exact KL): log(0 + eps) = -18.42 is the finite penalty per unit of negative mass. The loss can
  therefore be very slightly negative, bounded below by -log(1 + N * eps) (Jensen).
* temperature T = 0.02 (logit scale 50): the reference's fixed, non-learnable
  ``logit_scale = 1 / args.temperature`` with default ``--temperature 0.02``, shared with SDM.
* self-similarity: included, on both sides (the diagonal logit is 1 / T and the anchor is its
  own positive in q), as in the reference.
* q normalisation: each row of the same-identity mask divided by its row sum. The reference
  writes ``labels / labels.sum(dim=1)``, which broadcasts over columns (entry (i, j) is divided
  by the count of y_j); for a symmetric same-identity mask this equals row normalisation on
  every non-zero entry, so the values are the same.
* reduction: mean over all N anchors of the per-anchor sum over j (``torch.mean(torch.sum(.,
  dim=1))`` in the reference), so N = B + number of memory entries used.
* an anchor whose only positive is itself (its identity occurs once in the batch and not in the
  memory) keeps a one-hot target on itself; its term is finite and not masked out: it is
  p_ii log p_ii + sum_{j != i} p_ij (log p_ij - log eps), i.e. it pushes every other row away
  from it (an instance-discrimination term). A batch of one row gives -log(1 + eps) ~ 0.
* precision: computed in float32 with autocast disabled; fp16 / bf16 inputs are cast up (the
  gradient comes back in the input dtype) and the result is a float32 scalar. The reference also
  computes in float32 (it calls ``.float()`` on the CLS token).
* DIFFERENCE: features are normalised with ``F.normalize`` (norm clamped at 1e-12), so an
  all-zero feature gives cosine 0 instead of the reference's NaN; inputs are never modified in
  place.

Same-identity memory
--------------------
Reference: after the losses of a step, every batch image's global feature (the fp32 CLS token,
before normalisation) is appended, ``.clone().detach()``, to a Python dict pid -> list; the dict
is cleared at the start of each epoch and is unbounded within it (a whole epoch). In
``compute_iikl``, for every element of ``pids`` (so once per occurrence of a pid in the batch)
all stored features of that pid are appended to the feature matrix and to the label vector. The
memory thus enters as extra rows and columns of the N x N similarity matrix: extra positives for
the batch anchors of the same identity, and extra anchors whose rows (softmax over batch and
memory columns) send gradient to the batch features through the columns. Entries of identities
absent from the batch are not used (the memory adds no negatives). Memory entries are constants.

Here (``ISGVFCLoss``):
* stored: ``feats.detach()`` copied to float32 on the feats' device, with the pids, AFTER the
  loss of the step is computed (the current batch is never its own memory); only in training
  mode (``module.train()``, the nn.Module default) and when ``use_memory``.
* reset: ``reset()`` empties it; the coordinator calls it at the start of each epoch, like the
  reference's ``clear_dic``.
* used: the entries whose pid occurs in the batch, as extra rows and columns (as above).
* DIFFERENCE (bound): a global first-in-first-out ring buffer keeps the most recent
  ``memory_size`` entries (default 16384: a whole epoch of Market-1501 (12,936 training images),
  about one of DukeMTMC-reID (16,522), half of MSMT17 (32,621); 16384 x 768 float32 = 48 MiB).
  The reference keeps the whole epoch without bound. ``memory_size = 0`` stores nothing.
* DIFFERENCE (duplicates): by default each memory entry is used once. The released code appends
  a stored entry once per occurrence of its pid in the batch, so with a P x K identity sampler
  every entry would appear K times (as K identical rows and K identical columns), which reweights
  memory against the batch by K; with the reference's default random sampler a pid rarely occurs
  twice in a batch and the two agree. ``repeat_memory=True`` reproduces the released behaviour.
* DIFFERENCE (storage): plain attributes, not buffers, so the memory is never in
  ``state_dict``; it follows the feats' device lazily (``module.to`` does not move it).
* distributed training: the memory is per process (no all-gather), as the reference is
  single-GPU.
* the reference fills the memory on every training forward even when 'iikl' is not an active
  loss; a composer that skips this loss (weight 0) can call ``push(feats, pids)`` to keep the
  memory filled.

Saturation (a property of the released semantics, measured here)
-----------------------------------------------------------------
With the self-similarity in the softmax and T = 0.02, the diagonal logit 50 dominates unless the
same-identity cosines are already high: p_ii ~ 1, so L_i ~ log(#positives) and the gradient
vanishes (exp(50 (cos - 1)) ~ 1e-11 at cos = 0.5). Measured on 16 ids x 4 images, D = 256: loss
= log 4 with gradient norm 4e-9 at mean positive cosine 0.49, 3e-4 at 0.80, 2e-2 at 0.94. The
reference applies it to CLIP image features, whose same-person cosines are typically high; a
feature space that starts with low same-identity cosines gets almost no signal from it until
other losses have pulled identities together. ``include_self=False`` (DIFFERENCE, opt-in, off by
default) leaves the diagonal out of p and q, which removes this plateau; anchors with no other
positive then have no target and are left out of the mean. The opposite regime (nearly
collinear features across identities: the similarity mass on negatives, a large loss) also
occurs; how this module relates to the paper and the released code, and what was observed on
SynthPedes, is in docs/reference_differences.md (losses/isgvfc.py).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .masks import pid_masks

__all__ = ["isgvfc_loss", "ISGVFCLoss"]


def _select_bank(pids: torch.Tensor, bank_feats: torch.Tensor, bank_pids: torch.Tensor,
                 repeat: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Memory entries whose pid occurs in ``pids`` (each once, or once per occurrence)."""
    match = bank_pids.view(-1, 1) == pids.view(1, -1)          # (M, B)
    if repeat:
        counts = match.sum(1)
        idx = torch.repeat_interleave(torch.arange(len(bank_pids), device=pids.device), counts)
    else:
        idx = match.any(1).nonzero(as_tuple=True)[0]
    return bank_feats.index_select(0, idx), bank_pids.index_select(0, idx)


def isgvfc_loss(feats: torch.Tensor, pids: torch.Tensor, temperature: float = 0.02,
                eps: float = 1e-8, bank_feats: Optional[torch.Tensor] = None,
                bank_pids: Optional[torch.Tensor] = None,
                repeat_bank: bool = False, include_self: bool = True) -> torch.Tensor:
    """IS-GVFC loss (see the module docstring): mean_i KL(p_i || q_i + eps).

    Args:
        feats: (B, D) global visual features of the batch (any float dtype; not modified).
        pids: (B,) identity labels.
        temperature: T in softmax(cos / T); 0.02 is the reference's logit scale 50.
        eps: added to the target inside the log.
        bank_feats: optional (M, D) stored features, treated as constants (detached here).
        bank_pids: (M,) their identities. Only entries whose pid occurs in ``pids`` are used,
            as extra rows and columns; the others are ignored.
        repeat_bank: use each selected entry once per occurrence of its pid in ``pids``
            (the released code) instead of once.
        include_self: keep the diagonal in p and q (the released code). False is an opt-in
            variant (see "Saturation" in the module docstring): the diagonal is left out of
            both, and anchors with no other positive are left out of the mean.

    Returns:
        float32 scalar; 0 (connected to ``feats``) for an empty batch (or, with
        ``include_self=False``, when no anchor has another positive).
    """
    if feats.dim() != 2:
        raise ValueError(f"feats must be (B, D), got {tuple(feats.shape)}")
    pids = pids.reshape(-1).to(feats.device)
    if len(pids) != len(feats):
        raise ValueError(f"{len(feats)} features but {len(pids)} pids")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if len(feats) == 0:
        return feats.float().sum() * 0.0

    with torch.autocast(device_type=feats.device.type, enabled=False):
        x = feats.float()
        y = pids
        if bank_feats is not None and bank_pids is not None and len(bank_pids) > 0:
            if bank_feats.dim() != 2 or bank_feats.shape[1] != feats.shape[1]:
                raise ValueError(f"bank_feats must be (M, {feats.shape[1]}), "
                                 f"got {tuple(bank_feats.shape)}")
            mem, mem_pids = _select_bank(pids, bank_feats.detach().to(x.device, torch.float32),
                                         bank_pids.reshape(-1).to(x.device), repeat_bank)
            x = torch.cat([x, mem], 0)
            y = torch.cat([y, mem_pids.to(y.dtype)], 0)

        x = F.normalize(x, dim=1)
        logits = (x @ x.t()) / temperature
        masks = pid_masks(y)
        if include_self:
            log_p = F.log_softmax(logits, dim=1)
            q = masks.same.float() / masks.same.sum(1, keepdim=True)
            return (log_p.exp() * (log_p - torch.log(q + eps))).sum(1).mean()

        # self-similarity left out of p and q; anchors with no other positive are dropped
        n = len(y)
        if n < 2:
            return x.sum() * 0.0
        eye = masks.eye
        # the diagonal's log p = -inf is replaced before any product (no 0 * inf in autograd)
        log_p = F.log_softmax(logits.masked_fill(eye, float("-inf")), dim=1).masked_fill(eye, 0.0)
        p = log_p.exp().masked_fill(eye, 0.0)
        pos = masks.pos
        q = pos.float() / pos.sum(1, keepdim=True).clamp(min=1)
        per_anchor = (p * (log_p - torch.log(q + eps))).sum(1)
        valid = pos.any(1)
        if not bool(valid.any()):
            return per_anchor.sum() * 0.0
        return per_anchor[valid].mean()


class ISGVFCLoss(nn.Module):
    """IS-GVFC loss with the per-epoch same-identity memory (see the module docstring).

    Args:
        temperature: T (0.02, the reference's logit scale 50).
        use_memory: keep and use the memory of earlier batches' detached features.
        eps: added to the target inside the log (1e-8, as the reference).
        memory_size: the most recent entries kept (FIFO over all identities); 0 stores none.
        repeat_memory: use a memory entry once per occurrence of its pid in the batch, as the
            released code, instead of once.
        include_self: keep the self-similarity in p and q (the released code); False is the
            opt-in non-saturating variant (module docstring, "Saturation").

    Call ``reset()`` at the start of each epoch. ``forward(feats, pids)`` returns the loss of
    the batch with the memory, then (in training mode) appends the batch to the memory.
    """

    def __init__(self, temperature: float = 0.02, use_memory: bool = True, eps: float = 1e-8,
                 memory_size: int = 16384, repeat_memory: bool = False,
                 include_self: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if memory_size < 0:
            raise ValueError(f"memory_size must be >= 0, got {memory_size}")
        self.temperature = float(temperature)
        self.use_memory = bool(use_memory)
        self.eps = float(eps)
        self.memory_size = int(memory_size)
        self.repeat_memory = bool(repeat_memory)
        self.include_self = bool(include_self)
        self.reset()

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, use_memory={self.use_memory}, eps={self.eps}, "
                f"memory_size={self.memory_size}, repeat_memory={self.repeat_memory}, "
                f"include_self={self.include_self}")

    # ---- memory (plain attributes: never in state_dict) ----
    def reset(self) -> None:
        """Empty the memory (new epoch)."""
        self._bank_feats: Optional[torch.Tensor] = None   # (memory_size, D) float32 ring buffer
        self._bank_pids: Optional[torch.Tensor] = None    # (memory_size,) int64
        self._next = 0                                     # next slot to write
        self._count = 0                                    # valid entries

    def __len__(self) -> int:
        return self._count

    @torch.no_grad()
    def push(self, feats: torch.Tensor, pids: torch.Tensor) -> None:
        """Append detached float32 copies of ``feats`` (B, D) with ``pids`` (B,) to the memory,
        dropping the oldest entries beyond ``memory_size``."""
        if self.memory_size == 0 or len(feats) == 0:
            return
        x = feats.detach().to(torch.float32)
        y = pids.detach().reshape(-1).to(device=x.device, dtype=torch.long)
        if self._bank_feats is None:
            self._bank_feats = torch.zeros(self.memory_size, x.shape[1], device=x.device)
            self._bank_pids = torch.zeros(self.memory_size, dtype=torch.long, device=x.device)
        elif self._bank_feats.shape[1] != x.shape[1]:
            raise ValueError(f"feature size {x.shape[1]} differs from the memory's "
                             f"{self._bank_feats.shape[1]}; call reset() first")
        self._follow_device(x.device)
        if len(x) > self.memory_size:                      # only the newest fit
            x, y = x[-self.memory_size:], y[-self.memory_size:]
        slots = (torch.arange(len(x), device=x.device) + self._next) % self.memory_size
        self._bank_feats[slots] = x                        # copies: no storage shared with feats
        self._bank_pids[slots] = y
        self._next = (self._next + len(x)) % self.memory_size
        self._count = min(self._count + len(x), self.memory_size)

    def _follow_device(self, device: torch.device) -> None:
        if self._bank_feats is not None and self._bank_feats.device != device:
            self._bank_feats = self._bank_feats.to(device)
            self._bank_pids = self._bank_pids.to(device)

    # ---- loss ----
    def forward(self, feats: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        bank_feats = bank_pids = None
        if self.use_memory and self._count > 0:
            self._follow_device(feats.device)
            n = self._count                                # order is irrelevant to the loss
            bank_feats, bank_pids = self._bank_feats[:n], self._bank_pids[:n]
        loss = isgvfc_loss(feats, pids, self.temperature, self.eps, bank_feats, bank_pids,
                           repeat_bank=self.repeat_memory, include_self=self.include_self)
        if self.use_memory and self.training:
            self.push(feats, pids)
        return loss
