"""What the caption and answer explanations share: image intake, methods, the maps, and the
:class:`Explanation` base that remembers what produced them."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlcam._state import preserved
from vlcam.adapters.protocol import ImageModel
from vlcam.explain.figures import overlay_figure, peak, save_figure
from vlcam.gradcam import cam_from_gradients, layer_gradients
from vlcam.guided import guided_backprop, guided_grad_cam
from vlcam.image import preprocess, to_pil
from vlcam.targets import Target

METHODS = ("gradcam", "guided-gradcam", "counterfactual")


@dataclass
class PreparedImage:
    """A model-ready image batch of one, with what a figure and the maps need."""

    tensor: torch.Tensor  # [1, 3, S, S], normalised, on the model's device
    size: tuple[int, int]  # the original (H, W): maps come back at this size
    display: np.ndarray  # H x W x 3 uint8, for figures
    # True when `tensor` came from an image through the model's preprocessing (maps are then
    # put back where the processor took each part of it); False for a preprocessed tensor.
    original: bool = True


@dataclass
class Explanation:
    """Maps of one image, one per explained target, and what produced them.

    ``scorer(images, *inputs)`` is the differentiable forward that was explained and
    ``targets[k](output)`` the score behind ``maps[k]``, so an evaluation can score exactly
    what was explained (:meth:`scores`) on other images, e.g. occluded copies of `images`.
    Maps are at the original image's resolution, raw (not normalised); for
    ``method="guided-gradcam"`` they are the per-pixel L2 norm over colour channels.
    """

    maps: torch.Tensor  # [K, H, W]
    targets: list[Target]
    method: str
    layer: str
    scorer: nn.Module = field(repr=False)
    inputs: tuple[torch.Tensor, ...] = field(repr=False)
    images: torch.Tensor = field(repr=False)  # [1, 3, S, S]: the input the model saw
    image: np.ndarray = field(repr=False)  # H x W x 3 uint8

    def peaks(self) -> list[tuple[int, int]]:
        """Return each map's maximum as (row, col) in the original image."""
        return [peak(m) for m in self.maps]

    def scores(self, images: torch.Tensor | None = None) -> torch.Tensor:
        """Return each explained target's score [B, K] on preprocessed `images` (default: the
        explained image), in eval mode without grad; the model comes back as it was."""
        images = self.images if images is None else images
        with preserved(self.scorer, eval_mode=True), torch.no_grad():
            output = self.scorer(images, *self.inputs)
            return torch.stack([t(output) for t in self.targets], dim=1)

    def guided_backprop(self, k: int) -> torch.Tensor:
        """Return guided backpropagation [3, S, S] of target `k` at the explained input, in eval
        mode (the model comes back as it was)."""
        with preserved(self.scorer, eval_mode=True):
            return guided_backprop(self.scorer, (self.images, *self.inputs), self.targets[k])[0]

    def panels(self) -> tuple[list[torch.Tensor], list[str], str]:
        """Return (the maps to draw, their titles, the figure's title)."""
        return list(self.maps), [repr(t) for t in self.targets], self.method

    def plot(self, columns: int = 5) -> Any:
        """Return a matplotlib Figure: the image, then each map over it, titled."""
        maps, titles, suptitle = self.panels()
        return overlay_figure(self.image, maps, titles, suptitle=suptitle, columns=columns)

    def save(self, path: str | Path, dpi: int = 100) -> Path:
        """Return `path` after drawing :meth:`plot` into it."""
        return save_figure(self.plot(), path, dpi=dpi)

    def _repr_png_(self) -> bytes:
        """Return the figure as PNG bytes: how a notebook shows an explanation."""
        buffer = io.BytesIO()
        self.plot().savefig(buffer, format="png", dpi=80, bbox_inches="tight")
        return buffer.getvalue()

    def _repr_html_(self) -> str:
        """Return the figure and a table of each map's target, title and peak, as HTML."""
        _, titles, suptitle = self.panels()
        image = base64.b64encode(self._repr_png_()).decode("ascii")
        rows = "".join(f"<tr><td>{html.escape(repr(t))}</td><td>{html.escape(title)}</td><td>{peak}</td></tr>"
                       for t, title, peak in zip(self.targets, titles, self.peaks()))
        return (f"<div><p><b>{html.escape(suptitle)}</b> ({html.escape(self.method)} at "
                f"<code>{html.escape(self.layer)}</code>)</p><img src=\"data:image/png;base64,{image}\"/>"
                f"<table><tr><th>target</th><th>map</th><th>peak (row, col)</th></tr>{rows}</table></div>")


def check_method(method: object) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    return str(method)


def prepare_image(model: ImageModel, img: Any) -> PreparedImage:
    """Return `img` (PIL image, array, path, or preprocessed tensor) ready for `model`."""
    if isinstance(img, torch.Tensor):
        # Checks dtype, shape and values; any float precision comes back as float32.
        tensor, size = preprocess(img, model.image_size, model.mean, model.std)
        m = torch.tensor(model.mean, dtype=tensor.dtype, device=tensor.device).view(1, 3, 1, 1)
        s = torch.tensor(model.std, dtype=tensor.dtype, device=tensor.device).view(1, 3, 1, 1)
        display = ((tensor * s + m).clamp(0, 1)[0].permute(1, 2, 0) * 255).round()
        return PreparedImage(model.preprocess(tensor), size, display.byte().cpu().numpy(), original=False)
    pil = to_pil(img)
    return PreparedImage(model.preprocess(pil), (pil.height, pil.width), np.asarray(pil, dtype=np.uint8))


def explained_maps(
    model: ImageModel,
    scorer: nn.Module,
    images: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    targets: Sequence[Target],
    layer: nn.Module,
    method: str,
    prepared: PreparedImage,
) -> tuple[torch.Tensor, Any]:
    """Return (the maps [K, H, W] of `targets` on the original image of `prepared`, the scorer's
    output for the image) from one forward of ``scorer(images, *inputs)`` and one batched backward."""
    args = (images, *inputs)

    def reshape(activations: torch.Tensor) -> torch.Tensor:
        return model.gradcam_reshape(activations, images)

    if method == "guided-gradcam":
        maps = guided_grad_cam(scorer, args, list(targets), layer, reshape=reshape)[0].norm(dim=1)  # [K, S, S]
        with torch.no_grad():
            output = scorer(*args)
    else:
        result = layer_gradients(scorer, args, list(targets), layer, reshape=reshape,
                                 batch_targets=model.batch_targets)
        maps = cam_from_gradients(result, counterfactual=method == "counterfactual")[0]
        output = result.output
    maps = model.image_maps(maps, prepared.size) if prepared.original else resize_maps(maps, prepared.size)
    if not torch.isfinite(maps).all():
        raise ValueError("the maps hold non-finite values: the image or the model produced NaN/inf")
    return maps, output


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Return [N, u, v] maps resized bilinearly (align_corners=False) to `size`."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return torch.nn.functional.interpolate(
        maps.unsqueeze(0), size=size, mode="bilinear", align_corners=False
    )[0]
