"""Per-epoch figure hooks: small callables the trainer gives the first batch of every epoch.

A hook is called as ``hook(epoch, batch, outputs, writer)`` (rank 0 only, ``writer`` a
tensorboard SummaryWriter) after the first forward of the epoch; it decides itself whether the
outputs carry what it draws. The training loop knows nothing about any branch's figures.

- :class:`TGMIMAttentionFigure`: the TG-MIM cross-attention of the epoch's first image over its
  caption's tokens (``tgmim/attention``), in epochs where the masked forward ran.
"""
from __future__ import annotations

from typing import Callable, List

import torch

from utils.visualize import tgmim_attention_figure

EpochHook = Callable[[int, dict, dict, object], None]


class TGMIMAttentionFigure:
    """Draws ``outputs['tgmim_attn'][0]`` over the de-normalised first image of the batch.

    Args:
        pixel_mean, pixel_std: INPUT.PIXEL_MEAN / PIXEL_STD (to undo the normalisation).
        tokenizer: the caption tokenizer (its ``tokens(ids)`` labels the attention columns).
    """

    def __init__(self, pixel_mean, pixel_std, tokenizer):
        self.mean = torch.tensor(pixel_mean).view(3, 1, 1)
        self.std = torch.tensor(pixel_std).view(3, 1, 1)
        self.tokenizer = tokenizer

    def __call__(self, epoch: int, batch: dict, outputs: dict, writer) -> None:
        if writer is None or "tgmim_attn" not in outputs:
            return
        image = (batch["img"][0].detach().float().cpu() * self.std + self.mean).clamp(0, 1)
        mask = outputs["tgmim_mask"][0].cpu()
        title = f"epoch {epoch}: {batch['caption'][0]}" if "caption" in batch else f"epoch {epoch}"
        fig = tgmim_attention_figure(
            image.permute(1, 2, 0).numpy(), outputs["tgmim_attn"][0].detach().float().cpu().numpy(),
            tuple(mask.shape), self.tokenizer.tokens(batch["text_ids"][0].cpu()),
            token_mask=mask.numpy(), title=title)
        writer.add_figure("tgmim/attention", fig, epoch)


def make_epoch_hooks(cfg, data) -> List[EpochHook]:
    """The figure hooks a config asks for (TG-MIM attention when LOSS.TGMIM.ENABLE)."""
    hooks: List[EpochHook] = []
    if cfg.LOSS.TGMIM.ENABLE:
        hooks.append(TGMIMAttentionFigure(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD,
                                          data.train_set.tokenizer))
    return hooks
