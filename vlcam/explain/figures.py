"""Figures in the style of the paper's Fig. 11 and 12: the image, then one overlay per map."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def overlay_figure(
    image: np.ndarray,
    maps: Sequence[torch.Tensor],
    titles: Sequence[str],
    *,
    suptitle: str = "",
    columns: int = 5,
    panel_size: float = 2.6,
) -> Any:
    """Return a matplotlib Figure: `image`, then each map over it, titled, peak marked.

    Each map is scaled to [0, 1] on its own (the display choice the engine leaves open).
    """
    from matplotlib.figure import Figure  # lazy: matplotlib is slow to import

    panels = 1 + len(maps)
    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=(panel_size * columns, panel_size * rows + (0.5 if suptitle else 0)))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=10)
    for ax, heat, title in zip(axes[1:], maps, titles):
        heat = heat.detach().float().cpu()
        scaled = heat / heat.max() if heat.max() > 0 else heat
        ax.imshow(image)
        ax.imshow(scaled.numpy(), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        if heat.max() > 0:
            row, col = divmod(int(heat.argmax()), heat.shape[1])
            ax.plot([col], [row], marker="+", color="white", markersize=12, markeredgewidth=2)
        ax.set_title(title, fontsize=10)
    for ax in axes:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Return `path` after writing `fig` to it (format from the suffix: png, pdf, svg...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def peak(heat: torch.Tensor) -> tuple[int, int]:
    """Return the (row, col) of a map's maximum (the first one on ties)."""
    row, col = divmod(int(heat.reshape(-1).argmax()), int(heat.shape[-1]))
    return row, col
