"""What the Hugging Face adapters share: image intake, tokenizers, token grids.

An adapter is an ``nn.Module`` that holds the user's transformers model as its `model`
submodule (so Grad-CAM layers are named ``model.<the model's own module path>``) and its
processor's parts as plain attributes. It adds no weights of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from vlcam.adapters.protocol import BatchTargets, ImageModelBase, Triple
from vlcam.image import image_batch, to_pil


class HFAdapter(ImageModelBase):
    """Base of the Hugging Face adapters: the model, its tokenizer and image processor.

    `image_size` is the processor's target size, `mean` / `std` its normalisation, and
    :meth:`preprocess` runs the model's own image processor, so explained inputs are exactly
    what the model sees in use. Token layers are laid out on the patch grid of
    `patch_size` (None for a CNN image encoder, whose layers are already spatial).
    """

    # Any transformers model: its attributes (config, vision_model, generate, ...) are the
    # model's own, which nn.Module's __getattr__ would type as Tensor | Module.
    model: Any
    default_layer: str
    patch_size: int | tuple[int, int] | None = None
    # The layers above the explained one (the rest of the image encoder, a text decoder that
    # cross-attends to every image token) cost about as much as the encoder below it:
    # stacking K copies of them would redo that work K times, so the K targets share one
    # forward and run one vectorised backward instead.
    batch_targets: BatchTargets = "vmap"

    def __init__(self, model: nn.Module, tokenizer: Any, image_processor: Any) -> None:
        super().__init__()
        if tokenizer is None or not callable(tokenizer):
            raise TypeError(
                f"{type(model).__name__} needs its tokenizer: pass the model's processor, or "
                "tokenizer= (and image_processor=) explicitly"
            )
        if image_processor is None or not callable(image_processor):
            raise TypeError(
                f"{type(model).__name__} needs its image processor: pass the model's processor, "
                "or image_processor= explicitly"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.mean: Triple = _triple(getattr(image_processor, "image_mean", None), "image_mean")
        self.std: Triple = _triple(getattr(image_processor, "image_std", None), "image_std")
        self.image_size = _image_size(image_processor)

    def preprocess(self, images: Any) -> torch.Tensor:
        """Return pixel values [B, 3, H, W] on the model's device from a preprocessed tensor
        ([3, H, W] or [B, 3, H, W]) or from one or more images (PIL, arrays, paths), each
        through the model's image processor."""
        return image_batch(images, self._pixel_values, self.device)

    def _pixel_values(self, image: Any) -> torch.Tensor:
        pixels = self._processed(image)["pixel_values"]
        return torch.as_tensor(pixels, dtype=torch.float32)

    def _processed(self, image: Any, **options: Any) -> Any:
        """Return the image processor's output for one image (`options` go to the processor);
        ValueError naming the image's size when the processor refuses it."""
        pil = to_pil(image)
        try:
            return self.image_processor(images=pil, return_tensors="pt", **options)
        except (ValueError, TypeError, RuntimeError, IndexError) as e:
            raise ValueError(
                f"the {type(self.image_processor).__name__} of this {type(self.model).__name__} refuses the "
                f"{pil.height} x {pil.width} image: {e}"
            ) from e

    def gradcam_reshape(self, activations: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Return a token layer [B, N, C] laid out on the patch grid [B, C, h, w] of `images`
        (a spatial layer passes through unchanged); see :func:`patch_grid`."""
        if activations.dim() == 4 or self.patch_size is None:
            return super().gradcam_reshape(activations, images)
        return patch_grid(activations, images, self.patch_size)

    @property
    def device(self) -> torch.device:
        """Return the device of the model's parameters, where inputs are put."""
        device: torch.device = next(self.model.parameters()).device
        return device

    @property
    def pad_id(self) -> int:
        """Return the tokenizer's padding id."""
        value = getattr(self.tokenizer, "pad_token_id", None)
        if not isinstance(value, int):
            raise ValueError(
                f"the tokenizer of this {type(self.model).__name__} has no pad token; set "
                "tokenizer.pad_token (it pads questions and answers of different lengths)"
            )
        return value


class _BlipAdapter(Protocol):
    """What :func:`blip_setup` sets: a BLIP captioner or VQA adapter."""

    model: Any
    start_id: int
    end_id: int
    default_layer: str
    patch_size: int | tuple[int, int] | None


def blip_setup(adapter: _BlipAdapter) -> None:
    """Set a BLIP adapter's decoder <start>/<end> ids ([DEC], [SEP]), as BLIP trains and
    generates text, and its default layer, the vision encoder's last block."""
    model = adapter.model
    text = model.config.text_config
    adapter.start_id = int(text.bos_token_id)
    adapter.end_id = int(text.sep_token_id)
    adapter.default_layer = f"model.vision_model.encoder.layers.{len(model.vision_model.encoder.layers) - 1}"
    adapter.patch_size = model.config.vision_config.patch_size


def patch_grid(tokens: torch.Tensor, images: torch.Tensor, patch_size: int | Sequence[int]) -> torch.Tensor:
    """Return ViT-style tokens [B, N, C] as [B, C, h, w] on the patch grid of `images`.

    The grid is (H // ph, W // pw) of the pixel values the forward was given; its h*w
    patches are the last h*w tokens (class, distillation or register tokens, or text tokens,
    come first and are dropped), row-major as the patch convolution flattens them.
    """
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    h, w = images.shape[-2] // ph, images.shape[-1] // pw
    if tokens.dim() != 3:
        raise ValueError(f"cannot lay out a layer output of shape {tuple(tokens.shape)} on a patch grid")
    if tokens.shape[1] < h * w:
        raise ValueError(
            f"the layer holds {tokens.shape[1]} tokens, fewer than the {h}x{w} patch grid; "
            "choose a layer of the image encoder"
        )
    patches = tokens[:, tokens.shape[1] - h * w:]
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def check_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"the {what} {text!r:.80} has no words")
    return text


def pad_rows(rows: Sequence[Sequence[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (ids [N, L] right-padded with `pad`, the attention mask [N, L])."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def _triple(value: Any, name: str) -> Triple:
    if value is None:
        raise ValueError(f"the image processor has no {name}; vlcam needs it to show the image")
    values = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value] * 3)]
    if len(values) != 3:
        raise ValueError(f"the image processor's {name} must hold 3 values, got {value!r}")
    return (values[0], values[1], values[2])


def _image_size(image_processor: Any) -> int:
    size: Any = getattr(image_processor, "size", None)
    if isinstance(size, int):
        return size
    if isinstance(size, dict) or hasattr(size, "get"):
        for key in ("height", "shortest_edge", "width", "longest_edge"):
            value = size.get(key) if hasattr(size, "get") else None
            if isinstance(value, int):
                return value
    for key in ("height", "shortest_edge"):
        value = getattr(size, key, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot read a target image size from the image processor's size {size!r}")
