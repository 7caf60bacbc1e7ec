"""Turning whatever a user holds (a file, a PIL image, an array) into a model input.

Images are resized as a whole, without cropping, so that a map computed on the model
input can be resized back onto the original image pixel for pixel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vlcam._checks import non_finite

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageLike = Image.Image | str | os.PathLike[str] | np.ndarray

_ACCEPTED = (
    "a PIL image, a file path, or a numpy array of shape HxW, HxWx1, HxWx3 or HxWx4 "
    "with dtype uint8, bool, or float in [0, 1]"
)
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageTooLarge(ValueError):
    """An image file whose header claims more pixels than PIL decodes (a decompression bomb)."""


def to_pil(img: ImageLike) -> Image.Image:
    """Return `img` as an RGB PIL image.

    Transparent pixels (RGBA, LA, PA, P with transparency, HxWx4 arrays) are composited
    on white, as a viewer shows them; the RGB under a transparent pixel is often black
    or garbage. 16-bit images (modes I, I;16) are scaled from 0..65535 to 0..255; mode F
    images follow the float-array rule. Bool arrays become black (False) and white (True).
    Float arrays must be finite and within [0, 1].
    """
    if isinstance(img, Image.Image):
        return _pil_to_rgb(img, "the PIL image")
    if isinstance(img, (str, os.PathLike)):
        return _open(Path(img))
    if isinstance(img, np.ndarray):
        return _array_to_rgb(img)
    if isinstance(img, torch.Tensor):
        raise TypeError(
            f"to_pil does not take tensors (got shape {tuple(img.shape)}); pass a preprocessed "
            f"[1,3,H,W] tensor to preprocess(), or {_ACCEPTED}"
        )
    raise TypeError(f"cannot read an image from {type(img).__name__}; accepted: {_ACCEPTED}")


def preprocess(
    img: ImageLike | torch.Tensor,
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Return (a normalised float32 [1, 3, size, size] tensor, the original (H, W)).

    The whole image is resized bilinearly (antialiased when shrinking) to size x size.
    A float tensor [3, H, W] or [1, 3, H, W] is taken as already preprocessed and comes
    back as [1, 3, H, W], with (H, W) as the original size: float32 unchanged, float16,
    bfloat16 and float64 cast to float32. Integer and bool tensors are refused (TypeError:
    raw pixels go in as a PIL image or an array), as are other channel counts and
    NaN/inf values (ValueError).
    """
    if isinstance(img, torch.Tensor):
        return _preprocessed_tensor(img)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ValueError(f"mean and std must hold 3 values with std > 0, got mean={mean!r}, std={std!r}")
    pil = to_pil(img)
    original = (pil.height, pil.width)
    resized = pil.resize((size, size), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((x - m) / s).unsqueeze(0).contiguous(), original


def image_batch(
    images: torch.Tensor | ImageLike | Sequence[ImageLike],
    preprocess_one: Callable[[ImageLike], torch.Tensor],
    device: torch.device,
) -> torch.Tensor:
    """Return a model-ready batch [B, 3, H, W] on `device`.

    A tensor [3, H, W] or [B, 3, H, W] is taken as already preprocessed (a floating-point
    tensor of any precision, kept as it is); an image, path or array (or a non-empty list of
    them) goes through `preprocess_one`, which returns [1, 3, H, W] for one image.
    """
    if isinstance(images, torch.Tensor):
        return _checked_tensor(images, batched=True).to(device)
    # Anything but a list or tuple is one image; preprocess_one names the type it cannot read.
    items: list[ImageLike] = list(images) if isinstance(images, (list, tuple)) else [cast(ImageLike, images)]
    if not items:
        raise ValueError("no images given: pass a tensor, an image, or a non-empty list of images")
    return torch.cat([preprocess_one(i) for i in items]).to(device)


def _preprocessed_tensor(img: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    batch = _checked_tensor(img, batched=False).float()
    return batch, (int(batch.shape[2]), int(batch.shape[3]))


def _checked_tensor(img: torch.Tensor, *, batched: bool) -> torch.Tensor:
    """Return a preprocessed image tensor as [B, 3, H, W] (B = 1 unless `batched`), refusing
    what is not one: integer or bool pixels, other shapes or channel counts, NaN/inf."""
    accepted = "[3, H, W] or [B, 3, H, W]" if batched else "[3, H, W] or [1, 3, H, W]"
    if not img.is_floating_point():
        raise TypeError(
            f"a tensor image must be a normalised floating-point tensor {accepted}, got dtype {img.dtype} "
            f"(shape {tuple(img.shape)}); pass raw pixels as a PIL image or a numpy array instead, "
            "which are resized and normalised for the model"
        )
    batch = img.unsqueeze(0) if img.dim() == 3 else img
    if batch.dim() != 4 or (not batched and batch.shape[0] != 1):
        raise ValueError(f"a tensor image must be a preprocessed {accepted} tensor, got shape {tuple(img.shape)}")
    if batch.shape[1] != 3:
        hint = ("pass grayscale or RGBA images as a PIL image or an array: they are converted to RGB"
                if batch.shape[1] in (1, 2, 4) or batch.shape[-1] not in (1, 3, 4)
                else "a channel-last tensor must be permuted to channels first")
        raise ValueError(
            f"a tensor image must have 3 (RGB) channels, {accepted}; got shape {tuple(img.shape)} with "
            f"{batch.shape[1]} channels ({hint})"
        )
    if batch.shape[0] == 0 or batch.shape[2] == 0 or batch.shape[3] == 0:
        raise ValueError(f"the image tensor is empty: shape {tuple(img.shape)}")
    held = non_finite(img)
    if held is not None:
        raise ValueError(
            f"the image tensor of shape {tuple(img.shape)} holds non-finite values: {held}; a preprocessed "
            "image must be finite"
        )
    return batch


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if not path.is_file():
        raise ValueError(f"image path is not a file: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return _pil_to_rgb(im, str(path))
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"{path} is too large to decode ({e}); raise PIL.Image.MAX_IMAGE_PIXELS "
                            "if the file is trusted") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        # PIL signals truncated or corrupt files with OSError and, for some formats,
        # SyntaxError; both mean the same thing to the caller.
        raise ValueError(f"cannot read an image from {path}: {e}") from e


def _pil_to_rgb(im: Image.Image, what: str) -> Image.Image:
    if im.width == 0 or im.height == 0:
        raise ValueError(f"{what} is empty: size {im.width}x{im.height}")
    if im.mode == "RGB":
        return im.copy()
    if im.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(im, dtype=np.float64)
        return _array_to_rgb((np.clip(wide, 0, 65535) / 257.0).round().astype(np.uint8))
    if im.mode == "F":
        return _array_to_rgb(np.asarray(im, dtype=np.float32))
    if im.mode in _ALPHA_MODES or im.info.get("transparency") is not None:
        return _on_white(im.convert("RGBA"))
    try:
        return im.convert("RGB")
    except ValueError as e:
        raise ValueError(f"cannot convert {what} of mode {im.mode!r} to RGB: {e}") from e


def _on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _array_to_rgb(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        hint = ""
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4):
            hint = " (a channel-first array must be transposed to HxWxC first)"
        raise ValueError(
            f"cannot read an image from an array of shape {arr.shape}{hint}; accepted: {_ACCEPTED}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"the image array is empty: shape {arr.shape}")
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")
    if arr.shape[2] == 4:
        return _on_white(Image.fromarray(np.ascontiguousarray(arr)))
    return Image.fromarray(np.ascontiguousarray(arr))


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            raise ValueError(
                f"the float image holds {int((~finite).sum())} non-finite values (NaN or inf); "
                "float images must be finite and within [0, 1]"
            )
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"float image values must be within [0, 1], found range [{lo:g}, {hi:g}]; "
                "divide 0..255 data by 255 or pass it as uint8"
            )
        return (arr.astype(np.float64) * 255.0).round().astype(np.uint8)
    raise TypeError(
        f"cannot read an image from an array of dtype {arr.dtype}; accepted dtypes: uint8, "
        "bool, float16/32/64 in [0, 1] (convert 0..255 integers with .astype(np.uint8))"
    )
