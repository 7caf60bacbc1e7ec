"""LLaVA (`LlavaForConditionalGeneration`): a CLIP-style ViT, a projector, a Llama-style decoder.

The projector reads the vision tower's hidden state `vision_feature_layer` (often -2, the
second-to-last block), without the class token under the "default" select strategy. The
blocks above that one get no gradient, so the default Grad-CAM layer is the block whose
output the projector reads. A list of feature layers (concatenated) explains the deepest.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlcam.adapters.hf._common import patch_grid
from vlcam.adapters.hf._view import SingleView
from vlcam.adapters.hf.vlm._base import GenerativeVLM, check_fixed_size


class LlavaVLM(SingleView, GenerativeVLM):
    """`LlavaForConditionalGeneration` (LLaVA-1.5 and its llava-hf conversions)."""

    def __init__(self, model: nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        config = self.model.config
        self.image_token_id = int(config.image_token_id)
        self.strategy = config.vision_feature_select_strategy
        tower = self.model.model.vision_tower
        self.patch = int(config.vision_config.patch_size)
        name, blocks = _blocks(tower)
        block = feature_block(config.vision_feature_layer, len(blocks))
        self.default_layer = f"model.model.vision_tower.{name}.{block}"

    def vision_inputs(self, images: torch.Tensor) -> dict[str, Any]:
        """Return the pixel values; ValueError naming the shape of images of another size than
        the vision tower's (its position embeddings are fixed)."""
        side = int(self.model.config.vision_config.image_size)
        return {"pixel_values": check_fixed_size(images, side, self.model).to(self.dtype)}

    def image_tokens(self, images: torch.Tensor) -> list[int]:
        """Return one image token per patch (and one for the class token unless dropped)."""
        h, w = images.shape[-2] // self.patch, images.shape[-1] // self.patch
        return [self.image_token_id] * (h * w + (0 if self.strategy == "default" else 1))

    def gradcam_reshape(self, activations: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Return a vision block's tokens [B, 1 + h*w, C] on the patch grid [B, C, h, w]."""
        return patch_grid(activations, images, self.patch)


def feature_block(feature_layer: int | list[int], blocks: int) -> int:
    """Return the index of the vision block whose output is hidden state `feature_layer`
    (hidden_states[0] is the embeddings, hidden_states[i] block i-1's output); for a list,
    the deepest of them."""
    layers = feature_layer if isinstance(feature_layer, (list, tuple)) else [feature_layer]
    indices = [(layer if layer >= 0 else blocks + 1 + layer) - 1 for layer in layers]
    if not all(0 <= i < blocks for i in indices):
        raise ValueError(
            f"vision_feature_layer {feature_layer!r} does not name a block of the {blocks}-block vision "
            "tower; pass layer= explicitly"
        )
    return max(indices)


def last_block(tower: nn.Module) -> str:
    """Return the dotted name (in `tower`) of a vision tower's last block."""
    name, blocks = _blocks(tower)
    return f"{name}.{len(blocks) - 1}"


def _blocks(tower: nn.Module) -> tuple[str, nn.ModuleList]:
    for name, module in tower.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and name.split(".")[-1] in ("layers", "layer", "blocks"):
            return name, module
    raise ValueError(f"cannot find the blocks of the {type(tower).__name__} vision tower; pass layer= explicitly")
