"""LLaVA-NeXT and LLaVA-OneVision (`LlavaNextForConditionalGeneration`,
`LlavaOnevisionForConditionalGeneration`): any-resolution tiles and a base view.

The processor picks the best of `image_grid_pinpoints` for the image: a canvas of gh x gw tiles
of the vision tower's side s. It resizes the image into the canvas keeping its aspect ratio,
pads it (black, centred), cuts the canvas into tiles, and puts first a base view, the whole
image resized to s x s. The vision tower reads each view on its own. The model stitches the
tiles' patch features back into the canvas's patch grid, drops the rows or columns of padding
(``unpad_image``, from the original size), ends each row with ``image_newline`` and puts the
base view's features first; OneVision also shrinks the stitched grid bilinearly when it holds
more than ``anyres_max_N`` tiles' worth. So the number of image tokens depends on the image.

**The preprocessed image** is one tensor [B, 3, s + 1, s * (1 + n)]: the processor's n + 1
views side by side (columns [0, s) the base view, then the tiles in the processor's
row-major order), over one row whose first four pixels of channel 0 hold the original size
(H, W) as base-256 digits (exact in any float dtype) and whose other pixels are 0. Everything
the forward needs, the pixel values, ``image_sizes``, the number of image tokens and the layout,
is a function of that tensor alone, and it passes as an image batch wherever vlcam takes one.

**The layout: one Grad-CAM map over both views.** :meth:`LlavaNextVLM.gradcam_reshape` lays a
vision block's tokens on the canvas's patch grid (gh * s/patch rows, gw * s/patch columns): the
tiles stitched, exactly where the processor cut them, and the base view resampled where the
image lies in the canvas (0 over the padding), the two views concatenated along channels,
[B, 2C, rows, cols]. The engine's Eq. 1 then weighs each view's channels by their own pooled
gradients and Eq. 2 sums both views' contributions before the ReLU. The base view is resampled
by area (each grid cell takes the base patches it overlaps, by the share it overlaps) rather
than nearest, and carries the factor sqrt(canvas area / image area): with area weights every
base patch covers the same area of the grid, so the engine's spatial mean over the grid is
exactly the mean over the base view's own patches (nearest resampling would count some patches
once and others twice). :meth:`LlavaNextVLM.image_maps` lays the canvas grid back on the
original image from the processor's own resize and padding arithmetic (``select_best_resolution``,
``get_patch_output_size``, centred padding).

Guided backpropagation reaches the input tensor, whose views lie side by side and not where
they are in the image: guided Grad-CAM is refused (a ValueError from :meth:`image_maps`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vlcam.adapters.hf._view import View, maps_in_original
from vlcam.adapters.hf.vlm._base import GenerativeVLM
from vlcam.adapters.hf.vlm.llava import _blocks, feature_block

# The original size is written as base-256 digits: bfloat16 holds 0..256 exactly.
_DIGIT = 256
_MAX_SIDE = _DIGIT**2 - 1


@dataclass(frozen=True)
class Canvas:
    """Where the processor puts an image of a given size: a canvas of `height` x `width` pixels
    (the best pinpoint), the resized image `rows` x `cols` pixels inside it from (`top`, `left`)."""

    height: int
    width: int
    top: int
    left: int
    rows: int
    cols: int


class LlavaNextVLM(GenerativeVLM):
    """`LlavaNextForConditionalGeneration` (LLaVA-NeXT, LLaVA-1.6 and their llava-hf conversions).

    Images are preprocessed into the tensor the module docstring describes; maps combine the
    base view and the tiles on the canvas's patch grid.
    """

    def __init__(self, model: nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        config = self.model.config
        vision = config.vision_config
        self.image_token_id = int(config.image_token_id)
        self.strategy = config.vision_feature_select_strategy
        self.side = int(vision.image_size)
        self.patch = int(vision.patch_size)
        self.pinpoints = [(int(h), int(w)) for h, w in config.image_grid_pinpoints]
        tower = self.model.model.vision_tower
        name, blocks = _blocks(tower)
        block = feature_block(config.vision_feature_layer, len(blocks))
        self.default_layer = f"model.model.vision_tower.{name}.{block}"
        self.view_tokens = _view_tokens(tower, (self.side // self.patch) ** 2)
        self._check_processor()

    # --- The tensor: views side by side over the size row ------------------------------------

    def preprocess(self, images: Any) -> torch.Tensor:
        """Return the tensor [B, 3, s + 1, s * (1 + n)] of the module docstring from images (each
        through the model's processor) or from such a tensor, checked; ValueError for a list of
        images with different numbers of tiles."""
        if isinstance(images, (list, tuple)) and len(images) > 1:
            parts = [self.preprocess(image) for image in images]
            shapes = sorted({tuple(part.shape) for part in parts})
            if len(shapes) > 1:
                raise ValueError(f"the images give tensors of shapes {shapes}, different numbers of tiles: a batch "
                                 "takes images with one number (preprocess them one by one)")
            return torch.cat(parts)
        batch = super().preprocess(images)
        self._sizes(batch)
        return batch

    def _pixel_values(self, image: Any) -> torch.Tensor:
        out = self._processed(image)
        views = torch.as_tensor(out["pixel_values"], dtype=torch.float32)[0]
        h, w = (int(v) for v in out["image_sizes"][0])
        canvas = self.canvas(h, w)
        expected = (1 + (canvas.height // self.side) * (canvas.width // self.side), 3, self.side, self.side)
        if tuple(views.shape) != expected:
            raise ValueError(
                f"the {type(self.image_processor).__name__} gave views of shape {tuple(views.shape)} for the "
                f"{h} x {w} image; the model reads {expected} (a base view and the tiles of its "
                f"{canvas.height} x {canvas.width} canvas)"
            )
        if max(h, w) > _MAX_SIDE:
            raise ValueError(f"the {h} x {w} image is larger than {_MAX_SIDE} pixels a side, the most this "
                             "adapter takes")
        strip = views.permute(1, 2, 0, 3).reshape(3, self.side, -1)
        size_row = strip.new_zeros(3, 1, strip.shape[-1])
        size_row[0, 0, :4] = torch.tensor([h // _DIGIT, h % _DIGIT, w // _DIGIT, w % _DIGIT], dtype=strip.dtype)
        return torch.cat([strip, size_row], dim=1).unsqueeze(0)

    def _sizes(self, images: torch.Tensor) -> list[tuple[int, int]]:
        """Return each image's original (H, W), read off the size row; ValueError for a tensor
        that is not this adapter's."""
        s = self.side
        accepted = (f"{type(self).__name__} takes images, or the tensors its preprocess makes: [B, 3, {s} + 1, "
                    f"{s} * (1 + tiles)], the processor's views side by side over a row holding the image's size")
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != s + 1 or images.shape[3] % s \
                or images.shape[3] < 2 * s:
            raise ValueError(f"{accepted}; got shape {tuple(images.shape)}")
        digits = images[:, 0, s, :4].double()
        rest = images[:, :, s].double().clone()
        rest[:, 0, :4] = 0
        if bool((digits != digits.round()).any() or (digits < 0).any() or (digits >= _DIGIT).any()
                or rest.any()):
            raise ValueError(f"{accepted}; the last row of this tensor of shape {tuple(images.shape)} holds no size")
        sizes = [(int(d[0]) * _DIGIT + int(d[1]), int(d[2]) * _DIGIT + int(d[3])) for d in digits.tolist()]
        views = images.shape[3] // s
        for h, w in sizes:
            canvas = self.canvas(h, w) if h > 0 and w > 0 else None
            if canvas is None or views != 1 + (canvas.height // s) * (canvas.width // s):
                raise ValueError(f"{accepted}; this tensor of shape {tuple(images.shape)} holds {views} views and "
                                 f"the size {h} x {w}, which do not match")
        return sizes

    def _views(self, images: torch.Tensor) -> torch.Tensor:
        """Return the processor's pixel values [B, 1 + n, 3, s, s] in `images`."""
        s = self.side
        b, views = images.shape[0], images.shape[3] // s
        return images[:, :, :s].reshape(b, 3, s, views, s).permute(0, 3, 1, 2, 4)

    # --- Geometry -------------------------------------------------------------------------------

    def canvas(self, h: int, w: int) -> Canvas:
        """Return where the processor puts an `h` x `w` image: its canvas and the resized image in it."""
        from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
        from transformers.image_utils import ChannelDimension

        height, width = select_best_resolution((h, w), self.pinpoints)
        # get_patch_output_size reads only the image's shape.
        rows, cols = get_patch_output_size(np.broadcast_to(np.uint8(0), (h, w)), (height, width),
                                           ChannelDimension.FIRST)
        return Canvas(int(height), int(width), (height - rows) // 2, (width - cols) // 2, int(rows), int(cols))

    def kept_grid(self, h: int, w: int) -> tuple[int, int]:
        """Return the (rows, columns) of the stitched tile features the language model reads for
        an `h` x `w` image (each row then ends with ``image_newline``)."""
        from transformers.models.llava_next.modeling_llava_next import unpad_image

        return self._unpadded(unpad_image, h, w)

    def _unpadded(self, unpad: Any, h: int, w: int) -> tuple[int, int]:
        canvas = self.canvas(h, w)
        # The model's own unpadding, run on an empty feature grid of the canvas's shape.
        shape = unpad(torch.empty(0, canvas.height // self.patch, canvas.width // self.patch), (h, w)).shape
        return int(shape[1]), int(shape[2])

    def _check_processor(self) -> None:
        ip = self.image_processor
        pinpoints = [(int(h), int(w)) for h, w in getattr(ip, "image_grid_pinpoints", None) or []]
        if pinpoints != self.pinpoints:
            raise ValueError(f"the image processor's image_grid_pinpoints {pinpoints} are not the model's "
                             f"{self.pinpoints}")
        s = self.side
        uneven = [p for p in self.pinpoints if p[0] % s or p[1] % s]
        if uneven or s % self.patch:
            raise ValueError(f"the pinpoints {uneven} are not whole tiles of {s} pixels (or the tile of {s} is not "
                             f"whole patches of {self.patch}): this adapter lays out whole tiles")
        size, crop = getattr(ip, "size", None), getattr(ip, "crop_size", None)
        base = (getattr(size, "height", None), getattr(size, "width", None))
        if None in base:
            base = (getattr(size, "shortest_edge", None),) * 2
        cropped = getattr(ip, "do_center_crop", False) and getattr(crop, "height", None) not in (None, s)
        if base != (s, s) or cropped:
            raise ValueError(f"the image processor's size {size} and crop_size {crop} must keep views of "
                             f"{s} x {s} (the vision tower's image_size) as they are")

    # --- The VLM hooks ----------------------------------------------------------------------------

    def image_tokens(self, images: torch.Tensor) -> list[int]:
        """Return the image tokens of the images: the base view's, then each kept row of the
        stitched tiles and its newline; ValueError when the batch's images need different numbers."""
        counts = {self._token_count(h, w) for h, w in self._sizes(images)}
        if len(counts) != 1:
            raise ValueError(f"the images of this batch take {sorted(counts)} image tokens: a batch takes images "
                             "with the same number (explain them one by one)")
        return [self.image_token_id] * counts.pop()

    def _token_count(self, h: int, w: int) -> int:
        rows, cols = self.kept_grid(h, w)
        base = self.view_tokens - (1 if self.strategy == "default" else 0)
        return base + rows * (cols + 1)

    def _image_extra(self) -> int:
        return self._token_count(self.side, self.side) - 1

    def vision_inputs(self, images: torch.Tensor) -> dict[str, Any]:
        """Return the processor's pixel values [B, 1 + n, 3, s, s] and ``image_sizes`` [B, 2]."""
        sizes = torch.tensor(self._sizes(images), dtype=torch.long, device=images.device)
        return {"pixel_values": self._views(images).to(self.dtype), "image_sizes": sizes}

    # --- Layout -----------------------------------------------------------------------------------

    def gradcam_reshape(self, activations: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Return a vision block's tokens [B * (1 + n), T, C] (class token first, if any) on the
        canvas's patch grid [B, 2C, rows, cols]: the base view's C channels (resampled by area,
        0 over the padding, scaled so that Eq. 1 pools them over the base view's patches), then
        the tiles' C channels, stitched."""
        sizes = self._sizes(images)
        b, views = len(sizes), images.shape[3] // self.side
        p = self.side // self.patch
        if activations.dim() != 3 or activations.shape[0] != b * views or activations.shape[1] < p * p:
            raise ValueError(
                f"the layer outputs shape {tuple(activations.shape)}, not {b * views} views of {p} x {p} patch "
                "tokens for these images: choose a block of the vision tower (model.model.vision_tower)"
            )
        canvases = [self.canvas(h, w) for h, w in sizes]
        if len({(c.height, c.width) for c in canvases}) != 1:
            raise ValueError("the images of this batch lie on canvases of different shapes: explain them one by one")
        gh, gw = canvases[0].height // self.side, canvases[0].width // self.side
        c = activations.shape[-1]
        patches = activations[:, -p * p:].reshape(b, views, p, p, c)
        tiles = patches[:, 1:].reshape(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, gh * p, gw * p)
        base = torch.stack([self._base_on_grid(patches[i, 0], canvas) for i, canvas in enumerate(canvases)])
        return torch.cat([base, tiles], dim=1)

    def _base_on_grid(self, base: torch.Tensor, canvas: Canvas) -> torch.Tensor:
        """Return base-view tokens [p, p, C] on the canvas's patch grid [C, rows, cols]."""
        p = base.shape[0]
        ys = _overlaps(canvas.height // self.patch, self.patch, canvas.top, canvas.rows, p).to(base)
        xs = _overlaps(canvas.width // self.patch, self.patch, canvas.left, canvas.cols, p).to(base)
        # The engine's mean over the grid sees the base patches over the image's share of it.
        factor = math.sqrt(canvas.height * canvas.width / (canvas.rows * canvas.cols))
        return torch.einsum("ia,abc,jb->cij", ys, base, xs) * factor

    def image_maps(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Return maps [K, rows, cols] on the canvas's patch grid as maps [K, H, W] on the original
        image of `size`: each pixel samples the map where the processor put it; the padding is
        no part of the image. ValueError for maps on another grid (guided Grad-CAM's, on the
        input tensor)."""
        h, w = size
        canvas = self.canvas(h, w)
        grid = (canvas.height // self.patch, canvas.width // self.patch)
        if tuple(maps.shape[-2:]) != grid:
            raise ValueError(
                f"{type(self).__name__} lays maps on the {grid[0]} x {grid[1]} patch grid of the {h} x {w} image's "
                f"tiles, not {tuple(maps.shape[-2:])}: guided backpropagation and guided Grad-CAM "
                f"(method='guided-gradcam') are not supported for {type(self.model).__name__}, whose input tensor "
                "holds the base view and the tiles side by side; use method='gradcam' or 'counterfactual'"
            )
        view = View(h / canvas.rows, -canvas.top * h / canvas.rows, w / canvas.cols, -canvas.left * w / canvas.cols,
                    canvas.height, canvas.width)
        return maps_in_original(maps, view, size)


class LlavaOnevisionVLM(LlavaNextVLM):
    """`LlavaOnevisionForConditionalGeneration` with one image: LLaVA-NeXT's tiles and layout; the
    stitched grid the language model reads shrinks past ``anyres_max_N`` tiles (after the layer
    explained, so the layout is the same)."""

    def __init__(self, model: nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        aspect = str(self.model.config.vision_aspect_ratio)
        if not re.fullmatch(r"anyres_max_\d+", aspect):
            raise ValueError(f"vision_aspect_ratio {aspect!r} is not 'anyres_max_N', which this adapter reads")
        self.max_tiles = int(aspect.removeprefix("anyres_max_"))

    def kept_grid(self, h: int, w: int) -> tuple[int, int]:
        """Return the (rows, columns) of the stitched tile features the language model reads:
        unpadded, then shrunk as the model does when they exceed `max_tiles` tiles by 10%."""
        from transformers.models.llava_onevision.modeling_llava_onevision import unpad_image

        rows, cols = self._unpadded(unpad_image, h, w)
        p = self.side // self.patch
        ratio = math.sqrt(rows * cols / (self.max_tiles * p * p))
        if ratio > 1.1:
            return int(rows // ratio), int(cols // ratio)
        return rows, cols


def _view_tokens(tower: nn.Module, patches: int) -> int:
    """Return how many tokens the vision tower gives one view: its patches and class token, if any."""
    for module in tower.modules():
        positions = getattr(module, "num_positions", None)
        if isinstance(positions, int) and getattr(module, "num_patches", None) == patches:
            return positions
    raise ValueError(f"cannot find the patch embedding of the {type(tower).__name__} vision tower "
                     f"({patches} patches a view)")


def _overlaps(cells: int, cell: int, start: int, length: int, parts: int) -> torch.Tensor:
    """Return [cells, parts]: the share of grid cell i (pixels [i * cell, (i + 1) * cell)) that
    part a of a span (pixels start + [a, a + 1) * length / parts) covers."""
    grid = torch.arange(cells + 1, dtype=torch.float64) * cell
    span = start + torch.arange(parts + 1, dtype=torch.float64) * (length / parts)
    low = torch.maximum(grid[:-1, None], span[None, :-1])
    high = torch.minimum(grid[1:, None], span[None, 1:])
    return (high - low).clamp(min=0) / cell
