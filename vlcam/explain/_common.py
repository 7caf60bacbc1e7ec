"""What the caption and answer explanations share: image intake, methods, map sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vlcam.image import preprocess, to_pil

METHODS = ("gradcam", "guided-gradcam", "counterfactual")


@dataclass
class PreparedImage:
    """A model-ready image batch of one, with what a figure and the maps need."""

    tensor: torch.Tensor  # [1, 3, S, S], normalised, on the model's device
    size: tuple[int, int]  # the original (H, W): maps come back at this size
    display: np.ndarray  # H x W x 3 uint8, for figures


def check_method(method: object) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    return method  # type: ignore[return-value]


def prepare_image(model: nn.Module, img: Any) -> PreparedImage:
    """Return `img` (PIL image, array, path, or preprocessed tensor) ready for `model`."""
    device = next(model.parameters()).device
    mean, std = tuple(model.mean), tuple(model.std)
    if isinstance(img, torch.Tensor):
        tensor, size = preprocess(img, model.image_size, mean, std)
        if not torch.isfinite(tensor).all():
            raise ValueError("the image tensor holds NaN or infinite values")
        m = torch.tensor(mean, dtype=tensor.dtype, device=tensor.device).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=tensor.dtype, device=tensor.device).view(1, 3, 1, 1)
        display = ((tensor * s + m).clamp(0, 1)[0].permute(1, 2, 0) * 255).round()
        return PreparedImage(tensor.float().to(device), size, display.byte().cpu().numpy())
    pil = to_pil(img)
    own = getattr(model, "preprocess_image", None)
    if own is not None:
        # Adapters of models that come with an image processor (Hugging Face) use it, so
        # the explained input is exactly what the model sees in use.
        tensor, size = own(pil), (pil.height, pil.width)
    else:
        tensor, size = preprocess(pil, model.image_size, mean, std)
    return PreparedImage(tensor.to(device), size, np.asarray(pil, dtype=np.uint8))


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Return [N, u, v] maps resized bilinearly (align_corners=False) to `size`."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return torch.nn.functional.interpolate(
        maps.unsqueeze(0), size=size, mode="bilinear", align_corners=False
    )[0]


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
