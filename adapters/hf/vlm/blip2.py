"""BLIP-2 and InstructBLIP (`Blip2ForConditionalGeneration`, `InstructBlipForConditionalGeneration`)
with a decoder-only language model (OPT, Llama, Vicuna).

A Q-Former reads the ViT's patch tokens through cross-attention and hands a fixed number of
query tokens to the language model, so the query tokens have no place in the image: Grad-CAM
explains the ViT grid, by default its last block (the Q-Former reads its output after the
post-layernorm). Prompts are BLIP-2's "Question: ... Answer:" format; InstructBLIP's Q-Former
also reads the prompt, so its instruction ids go with the pixels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlcam.adapters.hf._common import patch_grid
from vlcam.adapters.hf._view import SingleView
from vlcam.adapters.hf.vlm._base import GenerativeVLM
from vlcam.adapters.hf.vlm.llava import last_block


class Blip2VLM(SingleView, GenerativeVLM):
    """`Blip2ForConditionalGeneration` with a decoder-only language model."""

    def __init__(self, model: nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        config = self.model.config
        if not config.use_decoder_only_language_model:
            raise TypeError(
                f"{type(self.model).__name__} with an encoder-decoder language model ({config.text_config.model_type}) "
                "is not supported: vlcam explains BLIP-2 with a decoder-only language model (OPT, Llama)"
            )
        self.image_token_id = int(config.image_token_id)
        self.queries = int(config.num_query_tokens)
        self.patch = int(config.vision_config.patch_size)
        self.default_layer = "model.vision_model." + last_block(self.model.vision_model)

    def prompt_text(self, prompt: str) -> str:
        """Return the image placeholder, then "Question: <prompt> Answer:"."""
        return f"{self.tokenizer.decode([self.image_token_id])}Question: {prompt} Answer:"

    def image_tokens(self, images: torch.Tensor) -> list[int]:
        """Return one image token per Q-Former query."""
        return [self.image_token_id] * self.queries

    def gradcam_reshape(self, activations: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Return ViT tokens [B, 1 + h*w, C] on the patch grid [B, C, h, w]."""
        return patch_grid(activations, images, self.patch)
