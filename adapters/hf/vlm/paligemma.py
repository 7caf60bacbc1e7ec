"""PaliGemma (`PaliGemmaForConditionalGeneration`): a SigLIP tower (no class token), a linear
projector, a Gemma decoder with prefix-LM attention.

The prompt is PaliGemma's own format, not a chat: the image tokens, <bos>, the prompt, "\\n".
Image and prompt (the prefix) attend to each other both ways; the response attends causally,
as in generation (``token_type_ids`` 0 for the prefix, 1 for the response).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlcam.adapters.hf._common import patch_grid
from vlcam.adapters.hf._view import SingleView
from vlcam.adapters.hf.vlm._base import GenerativeVLM, check_fixed_size
from vlcam.adapters.hf.vlm.llava import last_block


class PaliGemmaVLM(SingleView, GenerativeVLM):
    """`PaliGemmaForConditionalGeneration` (PaliGemma 1 and 2)."""

    default_prompt = "caption en"

    def __init__(self, model: nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        config = self.model.config
        self.image_token_id = int(config.image_token_id)
        self.patch = int(config.vision_config.patch_size)
        self.default_layer = "model.model.vision_tower." + last_block(self.model.model.vision_tower)

    def prompt_text(self, prompt: str) -> str:
        """Return PaliGemma's prefix: <image> <bos> prompt "\\n"."""
        return f"{self.tokenizer.decode([self.image_token_id])}{self.tokenizer.bos_token}{prompt}\n"

    def vision_inputs(self, images: torch.Tensor) -> dict[str, Any]:
        """Return the pixel values; ValueError naming the shape of images of another size than
        the vision tower's (its position embeddings are fixed)."""
        side = int(self.model.config.vision_config.image_size)
        return {"pixel_values": check_fixed_size(images, side, self.model).to(self.dtype)}

    def image_tokens(self, images: torch.Tensor) -> list[int]:
        """Return one image token per SigLIP patch."""
        h, w = images.shape[-2] // self.patch, images.shape[-1] // self.patch
        return [self.image_token_id] * (h * w)

    def text_inputs(self, ids: torch.Tensor, mask: torch.Tensor, images: torch.Tensor, prompt_length: int,
                    per_image: int) -> dict[str, Any]:
        """Return token_type_ids: 0 for the prefix (bidirectional), 1 for the response."""
        positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        return {"token_type_ids": (positions >= prompt_length).long()}

    def gradcam_reshape(self, activations: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Return SigLIP tokens [B, h*w, C] on the patch grid [B, C, h, w]."""
        return patch_grid(activations, images, self.patch)
