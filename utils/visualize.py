"""Ranked-list figures: each row is a query and its top-k gallery items, matches in green.

The ranking shown is the evaluated one: gallery items removed by the protocol (same pid and
same camera as the query) are left out, as in the metric.
"""
from __future__ import annotations

from typing import Sequence

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
