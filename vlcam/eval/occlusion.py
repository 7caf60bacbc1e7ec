"""Occlusion sensitivity (Zeiler & Fergus; paper Sec. 5.3) and rank correlation of maps.

The paper compares Grad-CAM maps with occlusion maps by rank correlation: a patch of the
image is blanked out, and the drop in the explained score is credited to the pixels it hid.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def _starts(size: int, patch: int, stride: int) -> list[int]:
    """Return the top-left offsets along one axis: a stride grid, the last flush with the border."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def _scores(score_fn: ScoreFn, images: torch.Tensor) -> torch.Tensor:
    scores = score_fn(images)
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"score_fn must return a Tensor of shape [N], got {type(scores).__name__}")
    if scores.shape != (images.shape[0],):
        raise ValueError(
            f"score_fn must return shape [N] = [{images.shape[0]}] for a batch of "
            f"{images.shape[0]} images, got {tuple(scores.shape)}"
        )
    return scores


def occlusion_map(
    score_fn: ScoreFn,
    image: torch.Tensor,
    *,
    patch: int = 16,
    stride: int = 8,
    fill: float = 0.0,
    batch_size: int = 64,
) -> torch.Tensor:
    """Return the occlusion-sensitivity map [H, W] of `score_fn` at `image`, on its device.

    `image` is [1, C, H, W]; `score_fn` maps images [N, C, H, W] to scores [N]. Each
    `patch` x `patch` square, with top-left corners on a `stride` grid (the last row and
    column flush with the border), is set to `fill`; the drop in score (original minus
    occluded) is credited to each pixel of the square, and a pixel's value is the mean over
    the squares covering it. `stride <= patch` is required so that every pixel is covered.
    The occluded copies are scored `batch_size` at a time under `torch.no_grad()`.
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a Tensor [1, C, H, W], got {type(image).__name__}")
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"image must have shape [1, C, H, W], got {tuple(image.shape)}")
    patch = _positive_int("patch", patch)
    stride = _positive_int("stride", stride)
    batch_size = _positive_int("batch_size", batch_size)
    height, width = image.shape[-2:]
    if patch > min(height, width):
        raise ValueError(f"patch must be <= the image size {height}x{width}, got {patch}")
    if stride > patch:
        raise ValueError(f"stride must be <= patch ({patch}) so every pixel is covered, got {stride}")

    corners = [(y, x) for y in _starts(height, patch, stride) for x in _starts(width, patch, stride)]
    drop_sum = torch.zeros(height, width, dtype=torch.float64, device=image.device)
    count = torch.zeros(height, width, dtype=torch.float64, device=image.device)
    with torch.no_grad():
        original = _scores(score_fn, image)[0]
        for first in range(0, len(corners), batch_size):
            chunk = corners[first:first + batch_size]
            occluded = image.expand(len(chunk), -1, -1, -1).clone()
            for i, (y, x) in enumerate(chunk):
                occluded[i, :, y:y + patch, x:x + patch] = fill
            drops = (original - _scores(score_fn, occluded)).to(torch.float64)
            for drop, (y, x) in zip(drops, chunk):
                drop_sum[y:y + patch, x:x + patch] += drop
                count[y:y + patch, x:x + patch] += 1
    return (drop_sum / count).to(image.dtype if image.is_floating_point() else torch.float32)


def _flat_numpy(m: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(m, torch.Tensor):
        m = m.detach().cpu().numpy()
    return np.asarray(m, dtype=np.float64).ravel()


def rank_correlation(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Return Spearman's rho between maps `a` and `b` of the same shape (ties get average ranks).

    Resizing is the caller's job. A constant map has no ranking, so rho is undefined
    there; 0.0 is returned instead of NaN so that averages over many images stay finite.
    """
    from scipy.stats import spearmanr

    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}; resize one first"
        )
    x, y = _flat_numpy(a), _flat_numpy(b)
    if x.size < 2:
        raise ValueError(f"rank correlation needs at least 2 values, got maps of shape {tuple(a.shape)}")
    if np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    return float(spearmanr(x, y).statistic)
