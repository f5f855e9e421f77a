"""Figures.

- Ranked lists: each row is a query and its top-k gallery items, matches in green. The ranking
  shown is the evaluated one: gallery items removed by the protocol (same pid and same camera
  as the query) are left out, as in the metric. Text-to-image: the query is a caption, drawn as
  wrapped text (``t2i_ranked_list_figure``).
- TG-MIM cross-attention: the image, its masked tokens and, for the caption tokens that draw
  the most attention, where on the image the patch queries attend to them.
"""
from __future__ import annotations

import textwrap
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def ranked_list_figure(query_paths: Sequence[str], query_pids: Sequence[int],
                       ranked_paths: Sequence[Sequence[str]],
                       ranked_pids: Sequence[Sequence[int]], title: str = ""):
    """A matplotlib figure: one row per query (query image, then its ranked gallery images).

    A gallery image with the query's pid gets a green frame, any other a red one; the label
    above each image is its pid and its rank.
    """
    rows = len(query_paths)
    cols = 1 + max(len(r) for r in ranked_paths)
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 2.2 * rows), squeeze=False,
                             layout="constrained")  # keeps the title clear of row 1
    for i in range(rows):
        for j in range(cols):
            axes[i, j].axis("off")
        _show(axes[i, 0], query_paths[i], "black", f"query {query_pids[i]}")
        for j, (path, pid) in enumerate(zip(ranked_paths[i], ranked_pids[i]), start=1):
            good = pid == query_pids[i]
            _show(axes[i, j], path, "green" if good else "red", f"{pid} #{j}")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def t2i_ranked_list_figure(captions: Sequence[str], caption_pids: Sequence[int],
                           ranked_paths: Sequence[Sequence[str]],
                           ranked_pids: Sequence[Sequence[int]], title: str = "",
                           wrap: int = 34):
    """A matplotlib figure of text-to-image rankings: one row per caption query (the caption as
    wrapped text, ``wrap`` characters per line, with its pid), then its ranked gallery images.

    As :func:`ranked_list_figure`: a gallery image with the caption's pid gets a green frame,
    any other a red one; the label above each image is its pid and its rank.
    """
    rows = len(captions)
    cols = max(len(r) for r in ranked_paths)
    fig = plt.figure(figsize=(3.0 + 1.1 * cols, 2.2 * rows), layout="constrained")
    spec = fig.add_gridspec(rows, 1 + cols, width_ratios=[3.0] + [1.0] * cols)
    for i in range(rows):
        ax = fig.add_subplot(spec[i, 0])
        ax.axis("off")
        ax.text(0.0, 0.5, textwrap.fill(captions[i], wrap), fontsize=7, va="center",
                ha="left", wrap=True, transform=ax.transAxes)
        ax.set_title(f"query {caption_pids[i]}", fontsize=7, loc="left")
        for j, (path, pid) in enumerate(zip(ranked_paths[i], ranked_pids[i]), start=1):
            ax = fig.add_subplot(spec[i, j])
            good = pid == caption_pids[i]
            _show(ax, path, "green" if good else "red", f"{pid} #{j}")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def _show(ax, path: str, colour: str, label: str) -> None:
    with Image.open(path) as img:
        ax.imshow(np.asarray(img.convert("RGB")))
    ax.axis("on")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3)
    ax.set_title(label, fontsize=7, color=colour)


def save_figure(fig, path: str) -> None:
    fig.savefig(path, dpi=100)
    plt.close(fig)


def tgmim_attention_figure(image: np.ndarray, attn: np.ndarray, grid: Sequence[int],
                           tokens: Sequence[str], token_mask: Optional[np.ndarray] = None,
                           top: int = 6, title: str = ""):
    """Image + TG-MIM cross-attention over the caption's tokens.

    Args:
        image: (H, W, 3) float in [0, 1] (de-normalised model input).
        attn: (N, L) attention of the N patch queries over the L text positions (one image).
        grid: (gh, gw) token grid, N = gh * gw.
        tokens: the L readable token strings ('' for padding); start/end-of-text markers
            ('<start_of_text>', '<end_of_text>') and padding are not drawn as panels.
        token_mask: optional (gh, gw) bool mask of the masked tokens (drawn in the 2nd panel).
        top: how many tokens to draw, those with the largest total attention.

    Panels: the image; the masked tokens (black); then one heat map per drawn token (attention of
    every patch to it, on the token grid, over the image) titled with the token and its share of
    the total attention; and a bar chart of the share of every real token.
    """
    gh, gw = int(grid[0]), int(grid[1])
    attn = np.asarray(attn, dtype=np.float64)
    if attn.shape[0] != gh * gw:
        raise ValueError(f"attention has {attn.shape[0]} rows, the grid {gh}x{gw} has {gh * gw}")
    real = [i for i, t in enumerate(tokens[:attn.shape[1]])
            if t and t not in ("<start_of_text>", "<end_of_text>")]
    mass = attn.sum(axis=0)
    share = mass / max(mass.sum(), 1e-12)
    shown = sorted(real, key=lambda i: -mass[i])[:top]
    h, w = image.shape[:2]
    panels = 2 + len(shown)
    fig = plt.figure(figsize=(1.3 * panels + 4, 3.2), layout="constrained")
    spec = fig.add_gridspec(1, panels + 1, width_ratios=[1] * panels + [3])
    ax = fig.add_subplot(spec[0, 0])
    ax.imshow(image)
    ax.set_title("image", fontsize=7)
    ax.axis("off")
    ax = fig.add_subplot(spec[0, 1])
    ax.imshow(image)
    if token_mask is not None:   # masked tokens drawn black, the others left as they are
        masked = np.asarray(token_mask, dtype=bool)
        ax.imshow(np.ma.masked_where(~masked, masked.astype(float)), cmap="Greys", vmin=0,
                  vmax=1, alpha=0.85, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_title("masked (black)", fontsize=7)
    ax.axis("off")
    for k, i in enumerate(shown):
        ax = fig.add_subplot(spec[0, 2 + k])
        ax.imshow(image)
        ax.imshow(attn[:, i].reshape(gh, gw), cmap="jet", alpha=0.5, extent=(0, w, h, 0),
                  interpolation="bilinear")
        ax.set_title(f"{tokens[i].strip()}\n{100 * share[i]:.1f}%", fontsize=7)
        ax.axis("off")
    ax = fig.add_subplot(spec[0, panels])
    ax.barh(range(len(real)), [100 * share[i] for i in real], color="tab:blue")
    ax.set_yticks(range(len(real)), [tokens[i].strip() for i in real], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("% of attention", fontsize=7)
    ax.tick_params(axis="x", labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def t2i_failure_sheet(captions: Sequence[str], caption_pids: Sequence[int],
                      ranked_paths: Sequence[Sequence[str]], ranked_pids: Sequence[Sequence[int]],
                      true_paths: Sequence[str], true_ranks: Sequence[int], title: str = "",
                      wrap: int = 34):
    """Text-to-image failure cases: one row per caption query -- the caption (wrapped, with its
    pid and whether this model's top-1 is right), its top-k gallery images as in
    :func:`t2i_ranked_list_figure` (green = the caption's pid, red = another), then the image the
    caption was written for, framed blue and titled with its rank in this model's ranking."""
    rows = len(captions)
    cols = max(len(r) for r in ranked_paths)
    fig = plt.figure(figsize=(3.0 + 1.1 * (cols + 1), 2.2 * rows), layout="constrained")
    spec = fig.add_gridspec(rows, 2 + cols, width_ratios=[3.0] + [1.0] * (cols + 1))
    for i in range(rows):
        ax = fig.add_subplot(spec[i, 0])
        ax.axis("off")
        ax.text(0.0, 0.5, textwrap.fill(captions[i], wrap), fontsize=7, va="center",
                ha="left", wrap=True, transform=ax.transAxes)
        right = bool(ranked_pids[i]) and ranked_pids[i][0] == caption_pids[i]
        ax.set_title(f"query {caption_pids[i]}: top-1 {'right' if right else 'wrong'}",
                     fontsize=7, loc="left", color="green" if right else "red")
        for j, (path, pid) in enumerate(zip(ranked_paths[i], ranked_pids[i]), start=1):
            _show(fig.add_subplot(spec[i, j]), path, "green" if pid == caption_pids[i] else "red",
                  f"{pid} #{j}")
        _show(fig.add_subplot(spec[i, 1 + cols]), true_paths[i], "blue",
              f"true #{true_ranks[i]}")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def heatmap_grid_figure(images: Sequence[np.ndarray], maps: Sequence[Sequence[np.ndarray]],
                        row_labels: Sequence[str], col_labels: Sequence[str],
                        scales: Sequence[dict], title: str = "", wrap: int = 30):
    """Maps over images: row i = images[i] (H, W, 3 in [0, 1]), column j = maps[i][j], a (gh, gw)
    map drawn over the image (bilinear, alpha 0.5) with ``scales[j]`` ({'cmap', 'vmin', 'vmax'},
    per column, so maps of different kinds are never drawn on one scale). Column titles
    ``col_labels`` say what each column's map is; row labels (wrapped text) on the left."""
    rows, cols = len(images), len(col_labels)
    fig = plt.figure(figsize=(2.4 + 1.3 * cols, 2.3 * rows + 0.6), layout="constrained")
    spec = fig.add_gridspec(rows, 1 + cols, width_ratios=[2.0] + [1.0] * cols)
    for i in range(rows):
        ax = fig.add_subplot(spec[i, 0])
        ax.axis("off")
        ax.text(0.0, 0.5, textwrap.fill(row_labels[i], wrap), fontsize=6, va="center",
                ha="left", transform=ax.transAxes)
        h, w = images[i].shape[:2]
        for j in range(cols):
            ax = fig.add_subplot(spec[i, 1 + j])
            ax.imshow(images[i])
            im = ax.imshow(np.asarray(maps[i][j], dtype=np.float64), alpha=0.5,
                           extent=(0, w, h, 0), interpolation="bilinear", **scales[j])
            ax.axis("off")
            if i == 0:
                ax.set_title(textwrap.fill(col_labels[j], 22), fontsize=6)
            if i == rows - 1:
                fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.08, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
