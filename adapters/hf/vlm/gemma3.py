"""Gemma 3 (`Gemma3ForConditionalGeneration`): a SigLIP tower (no class token), a projector that
average-pools the patch grid to ``mm_tokens_per_image`` tokens, a Gemma 3 decoder.

The chat template marks the image with <start_of_image>; the processor writes it out as
"\\n\\n" <start_of_image>, the image tokens, <end_of_image> "\\n\\n" and tokenises the whole text,
so the newlines merge with the text around them. The prompt is encoded the same way, with one
image token standing for all of them, so the expanded ids are the processor's. The image
tokens attend to each other both ways (``token_type_ids`` 1 for them), the rest causally, as in
Gemma 3's own forward and generation. Pan-and-scan (extra crops of the image, each its own
tokens) is a tiled view and is refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlcam.adapters.hf._common import patch_grid
from vlcam.adapters.hf._view import SingleView
from vlcam.adapters.hf.vlm._base import GenerativeVLM, check_fixed_size
from vlcam.adapters.hf.vlm.llava import last_block


class Gemma3VLM(SingleView, GenerativeVLM):
    """`Gemma3ForConditionalGeneration` (Gemma 3 4B, 12B, 27B and their instruction-tuned versions)."""

    def __init__(self, model: nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        if _pan_and_scan(processor):
            raise ValueError(
                f"the {type(processor).__name__} is configured with do_pan_and_scan=True: pan-and-scan adds "
                "crops of the image, each with its own image tokens (a tiled view), which vlcam does not "
                "explain; set processor.image_processor.do_pan_and_scan = False"
            )
        config = self.model.config
        self.image_token_id = int(config.image_token_id)
        self.tokens = int(config.mm_tokens_per_image)
        seq_length = getattr(processor, "image_seq_length", self.tokens)
        if seq_length != self.tokens:
            raise ValueError(
                f"the processor writes {seq_length} image tokens per image but the model's projector gives "
                f"mm_tokens_per_image={self.tokens}: load the processor that belongs to the model"
            )
        self.patch = int(config.vision_config.patch_size)
        self.side = int(config.vision_config.image_size)
        self.boi = str(self.tokenizer.boi_token)
        image = self.tokenizer.decode([self.image_token_id])
        # The processor's image sequence with one image token: _expanded puts back all of them.
        self.image_text = processor.full_image_sequence.replace(image * seq_length, image)
        self.default_layer = "model.model.vision_tower." + last_block(self.model.model.vision_tower)

    def prompt_text(self, prompt: str) -> str:
        """Return the chat template's prompt (or <start_of_image> and the prompt, without one)
        with the image written out as the processor writes it, one image token standing for all."""
        template = getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text: str = (self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                     if template else f"{self.boi}{prompt}")
        return text.replace(self.boi, self.image_text)

    def image_tokens(self, images: torch.Tensor) -> list[int]:
        """Return one image token per pooled cell of the patch grid (``mm_tokens_per_image``)."""
        return [self.image_token_id] * self.tokens

    def vision_inputs(self, images: torch.Tensor) -> dict[str, Any]:
        """Return the pixel values; ValueError for images not at the tower's size."""
        return {"pixel_values": check_fixed_size(images, self.side, self.model).to(self.dtype)}

    def text_inputs(self, ids: torch.Tensor, mask: torch.Tensor, images: torch.Tensor, prompt_length: int,
                    per_image: int) -> dict[str, Any]:
        """Return token_type_ids: 1 for the image tokens (they attend to each other both ways)."""
        return {"token_type_ids": (ids == self.image_token_id).long()}

    def gradcam_reshape(self, activations: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Return SigLIP tokens [B, h*w, C] on the patch grid [B, C, h, w]."""
        return patch_grid(activations, images, self.patch)


def _pan_and_scan(processor: Any) -> bool:
    """Return whether `processor` crops images by pan-and-scan by default."""
    image_processor = getattr(processor, "image_processor", None)
    defaults = getattr(processor, "images_kwargs", None)
    return bool(getattr(image_processor, "do_pan_and_scan", False)) or \
        (isinstance(defaults, dict) and bool(defaults.get("do_pan_and_scan")))
