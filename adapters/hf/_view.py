"""Where the model's view lies in the original image, read off the image processor itself.

Image processors pad, resize and crop in ways that differ by model and by version (LLaVA's
pad-to-square or CLIP's shortest-edge resize and centre crop, SigLIP's plain resize,
Qwen2-VL's resize to multiples of 28). Rather than re-implement each, the processor is run
on a coordinate image: red encodes the row, green the column, blue is a constant marker
that padding does not have. Every step is affine in the coordinates, so a least-squares fit
of the processed pixels gives, per axis, original = scale * view + offset (pixel centres).
Maps on the model's view are then sampled at each original pixel; where the view did not
reach (a crop), the map is 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vlcam.image import to_pil

# The view: pixel values [1, 3, Vh, Vw] for an image (PIL), normalised as the model reads them.
ViewOf = Callable[[Image.Image], torch.Tensor]


@dataclass(frozen=True)
class View:
    """original_y = scale_y * view_y + offset_y (pixel centres), likewise x; the view's size."""

    scale_y: float
    offset_y: float
    scale_x: float
    offset_x: float
    height: int
    width: int


def fitted_view(view_of: ViewOf, size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]) -> View:
    """Return the affine view of an original image of `size` (H, W) through `view_of`."""
    h, w = size
    rows = (np.arange(h) + 0.5) / h * 255.0
    cols = (np.arange(w) + 0.5) / w * 255.0
    pixels = np.zeros((h, w, 3), dtype=np.float64)
    pixels[..., 0] = rows[:, None]
    pixels[..., 1] = cols[None, :]
    pixels[..., 2] = 255.0
    view = view_of(Image.fromarray(np.round(pixels).astype(np.uint8)))[0].float().cpu()
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    values = (view * s + m) * 255.0  # [3, Vh, Vw], back in 0..255
    vh, vw = values.shape[-2:]
    marked = values[2] > 250.0
    # Away from the view's edges, where resampling blends in padding or clamps.
    marked[:1], marked[-1:], marked[:, :1], marked[:, -1:] = False, False, False, False
    if int(marked.sum()) < 4:
        marked = values[2] > 250.0
    vy, vx = torch.meshgrid(torch.arange(vh) + 0.5, torch.arange(vw) + 0.5, indexing="ij")
    scale_y, offset_y = _fit(vy[marked], values[0][marked] / 255.0 * h)
    scale_x, offset_x = _fit(vx[marked], values[1][marked] / 255.0 * w)
    return View(scale_y, offset_y, scale_x, offset_x, int(vh), int(vw))


def _fit(view: torch.Tensor, original: torch.Tensor) -> tuple[float, float]:
    a = torch.stack([view.double(), torch.ones_like(view, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(a, original.double().unsqueeze(1)).solution[:, 0]
    return float(solution[0]), float(solution[1])


def maps_in_original(maps: torch.Tensor, view: View, size: tuple[int, int]) -> torch.Tensor:
    """Return maps [K, h, w] laid over the model's view as maps [K, H, W] on the original image:
    bilinear samples at each original pixel's place in the view, 0 outside the view."""
    h, w = size
    y = (torch.arange(h, dtype=torch.float64, device=maps.device) + 0.5 - view.offset_y) / view.scale_y
    x = (torch.arange(w, dtype=torch.float64, device=maps.device) + 0.5 - view.offset_x) / view.scale_x
    inside = ((y >= 0) & (y <= view.height))[:, None] & ((x >= 0) & (x <= view.width))[None, :]
    gy = (y / view.height * 2 - 1).float()
    gx = (x / view.width * 2 - 1).float()
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).unsqueeze(0)  # [1, H, W, 2]
    sampled = F.grid_sample(maps.float().unsqueeze(0), grid.to(maps.device), mode="bilinear",
                            padding_mode="border", align_corners=False)[0]
    return sampled * inside.to(sampled.dtype)


class SingleView:
    """Mixin of a Hugging Face adapter whose pixel values are one view of the image (no tiles)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    if TYPE_CHECKING:
        def _pixel_values(self, image: Any) -> torch.Tensor: ...

    def image_maps(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Return maps [K, h, w] on the model's view as maps [K, H, W] on the original image of
        `size`: 0 where the processor cropped the image away, nothing from its padding."""
        view = fitted_view(lambda pil: self._pixel_values(to_pil(pil)), size, self.mean, self.std)
        return maps_in_original(maps, view, size)
