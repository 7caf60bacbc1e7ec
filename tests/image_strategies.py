"""Hypothesis strategies shared by the property tests: images of every kind users pass."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

# 1 to 40 pixels a side, or a 2000-pixel side (as 2000 x 1 or 1 x 2000, to keep tests fast).
sizes = st.one_of(st.integers(1, 40), st.sampled_from([2000]))


@st.composite
def images(draw):
    """An RGB, grayscale or RGBA uint8 array, a float array in [0, 1], or a [3, H, W] tensor."""
    h, w = draw(sizes), draw(sizes)
    if h * w > 40 * 40:
        h, w = (2000, 1) if draw(st.booleans()) else (1, 2000)
    kind = draw(st.sampled_from(["rgb", "gray", "rgba", "float", "tensor"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "rgb":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "gray":
        return rng.integers(0, 256, (h, w), dtype=np.uint8)
    if kind == "rgba":
        return rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    if kind == "float":
        return rng.random((h, w, 3), dtype=np.float32)
    return torch.from_numpy(rng.standard_normal((3, h, w), dtype=np.float32))
