"""Boxes from maps and how well a map sits inside a box (paper Sec. 4.1 and 8.1).

Boxes are COCO [x, y, w, h] in pixels with the inclusive-exclusive convention: a box
covers columns x .. x+w-1 and rows y .. y+h-1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

Box = Sequence[float]


def _map_2d(heat: torch.Tensor | np.ndarray) -> torch.Tensor:
    if not isinstance(heat, (torch.Tensor, np.ndarray)):
        raise TypeError(f"heat must be a Tensor or ndarray [H, W], got {type(heat).__name__}")
    heat = torch.as_tensor(heat)
    if heat.dim() != 2:
        raise ValueError(f"heat must be a 2-D map [H, W], got shape {tuple(heat.shape)}")
    return heat


def _box(name: str, box: Box) -> tuple[float, float, float, float]:
    values = [float(v) for v in box]
    if len(values) != 4:
        raise ValueError(f"{name} must be COCO [x, y, w, h], got {list(box)!r}")
    x, y, w, h = values
    if w <= 0 or h <= 0:
        raise ValueError(f"{name} must have positive width and height, got {list(box)!r}")
    return x, y, w, h


def box_from_map(
    heat: torch.Tensor | np.ndarray, threshold: float = 0.15
) -> tuple[int, int, int, int] | None:
    """Return the COCO box [x, y, w, h] of the largest segment of `heat` >= `threshold` x max.

    Segments are 8-connected (paper Sec. 4.1 thresholds at 15% of the maximum); of equally
    large segments the first in raster order wins. Returns None when the map has no
    positive value (e.g. all zeros), as there is nothing to segment.
    """
    heat = _map_2d(heat)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be a fraction of the maximum in (0, 1], got {threshold}")
    peak = float(heat.max())
    if not peak > 0.0:
        return None
    from scipy import ndimage

    mask = (heat >= threshold * peak).detach().cpu().numpy()
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    rows, cols = np.nonzero(labels == int(sizes.argmax()))
    x0, y0 = int(cols.min()), int(rows.min())
    return x0, y0, int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1


def box_iou(a: Box, b: Box) -> float:
    """Return the intersection over union of COCO boxes `a` and `b` [x, y, w, h]."""
    ax, ay, aw, ah = _box("a", a)
    bx, by, bw, bh = _box("b", b)
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


def box_ratio(heat: torch.Tensor | np.ndarray, box: Box) -> float:
    """Return the mean of `heat` inside `box` over its mean outside (paper Sec. 8.1).

    A uniform map scores 1.0; higher means the map concentrates on the box. The box
    [x, y, w, h] is widened to whole pixels (floor of x, y; ceil of x+w, y+h) and clipped
    to the map. Returns inf when the outside mean is 0 and the inside mean positive.
    Raises ValueError when the box is empty, lies outside the map, covers the whole map,
    or the map is zero both inside and outside (the ratio is then undefined).
    """
    heat = _map_2d(heat)
    x, y, w, h = _box("box", box)
    height, width = heat.shape
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    if x0 >= x1 or y0 >= y1:
        raise ValueError(f"box {list(box)!r} lies outside the {height}x{width} map")
    n_in = (x1 - x0) * (y1 - y0)
    n_out = height * width - n_in
    if n_out == 0:
        raise ValueError(f"box {list(box)!r} covers the whole {height}x{width} map; nothing is outside")
    heat = heat.to(torch.float64)
    sum_in = heat[y0:y1, x0:x1].sum()
    mean_in = float(sum_in) / n_in
    mean_out = float(heat.sum() - sum_in) / n_out
    if mean_out == 0.0:
        if mean_in > 0.0:
            return math.inf
        raise ValueError(f"box_ratio is undefined: the map averages {mean_in} inside and 0 outside the box")
    return mean_in / mean_out
