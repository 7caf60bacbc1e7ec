"""How widely each conv feature fires: an auxiliary loss that keeps features where objects are.

Under max pooling a feature's value counts only where it peaks, so the caption loss leaves its
activation everywhere else free, and a feature that fires on a whole textured background costs
nothing. Grad-CAM (Eq. 1-2) weighs each feature by its mean gradient and then draws the
feature's whole map: a feature that peaks on the object but also fires on the background
paints the background too, and a word's map can light the background and stay dark on the
object (benchmarks/RESULTS.md, the 6-epoch ablation). `spread_loss` is each feature's mean
activation over positions divided by its peak, averaged over features and images: 0 for a
feature that fires at one place, 1 for one that fires equally everywhere. It does not change
with the features' scale, so the model cannot meet it by shrinking them, only by firing where
it looks.
"""

from __future__ import annotations

import torch

_EPS = 1e-6


def spread_loss(conv_map: torch.Tensor) -> torch.Tensor:
    """Return the mean over images and channels of mean / max activation of `conv_map` [B, C, h, w] (>= 0)."""
    positive = conv_map.clamp(min=0)
    peaks = positive.amax(dim=(2, 3))
    return (positive.mean(dim=(2, 3)) / (peaks + _EPS)).mean()
