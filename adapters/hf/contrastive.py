"""Contrastive image-text models: CLIP (`CLIPModel`) and SigLIP (`SiglipModel`).

Not generative: the score of a text is the model's image-text logit (the scaled cosine
similarity of the two embeddings; plus SigLIP's bias), and `vlcam.explain_texts` explains K
texts against one image from one forward and one vectorised backward. CLIP's probabilities
are a softmax over the K texts (they compete); SigLIP's a sigmoid per text (each is a
yes/no match), as each model is trained.

Default layers: CLIP embeds the image from the class token of its last block, which reads
the patch tokens of the block below; the last block's own patch tokens feed nothing, so the
default is the second-to-last block. SigLIP pools every patch token of its last block
(attention pooling), so the default is the last block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vlcam.adapters.hf._common import HFAdapter, check_text, pad_rows, patch_grid
from vlcam.adapters.hf._view import SingleView
from vlcam.adapters.hf.vlm.llava import last_block


class ContrastiveAdapter(SingleView, HFAdapter):
    """Base of the CLIP and SigLIP adapters."""

    patch: int

    def __init__(self, model: nn.Module, tokenizer: Any, image_processor: Any) -> None:
        super().__init__(model, tokenizer, image_processor)
        self.patch = int(self.model.config.vision_config.patch_size)

    def encode_texts(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (ids [K, L] padded, attention mask [K, L]); ValueError for an empty list, an
        empty text or one longer than the text encoder reads."""
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
            raise ValueError(f"texts must be a non-empty list of strings, got {texts!r:.80}")
        limit = int(self.model.config.text_config.max_position_embeddings)
        rows = []
        for text in texts:
            check_text(text, "text")
            rows.append(list(self.tokenizer(text, **self._text_kwargs())["input_ids"]))
            if len(rows[-1]) > limit:
                raise ValueError(
                    f"the text {text!r:.80} is {len(rows[-1])} tokens long; this model reads at most {limit}")
        return self._padded(rows)

    def _text_kwargs(self) -> dict[str, Any]:
        return {}

    def _padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_rows(rows, self.pad_id, self.device)

    def text_scores(self, images: torch.Tensor, *text_inputs: torch.Tensor) -> torch.Tensor:
        """Return the image-text logits [B, K] (the model's ``logits_per_image``)."""
        ids, mask = text_inputs
        scores: torch.Tensor = self.model(input_ids=ids, attention_mask=mask,
                                          pixel_values=images.to(self.dtype)).logits_per_image
        return scores.float()

    def forward(self, images: torch.Tensor, *text_inputs: torch.Tensor) -> torch.Tensor:
        """Return :meth:`text_scores`."""
        return self.text_scores(images, *text_inputs)

    def gradcam_reshape(self, activations: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Return ViT tokens [B, (1 +) h*w, C] on the patch grid [B, C, h, w]."""
        return patch_grid(activations, images, self.patch)

    @property
    def dtype(self) -> torch.dtype:
        """Return the dtype of the model's parameters (pixels are cast to it)."""
        dtype: torch.dtype = next(self.model.parameters()).dtype
        return dtype


class ClipAdapter(ContrastiveAdapter):
    """`CLIPModel`: probabilities are a softmax over the texts."""

    def __init__(self, model: nn.Module, tokenizer: Any, image_processor: Any) -> None:
        super().__init__(model, tokenizer, image_processor)
        blocks = last_block(self.model.vision_model).rsplit(".", 1)
        self.default_layer = f"model.vision_model.{blocks[0]}.{max(int(blocks[1]) - 1, 0)}"

    def text_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Return the softmax of the logits over the texts (the last dimension)."""
        return torch.softmax(scores.float(), dim=-1)


class SiglipAdapter(ContrastiveAdapter):
    """`SiglipModel`: each text's probability is the sigmoid of its logit."""

    def __init__(self, model: nn.Module, tokenizer: Any, image_processor: Any) -> None:
        super().__init__(model, tokenizer, image_processor)
        self.default_layer = "model.vision_model." + last_block(self.model.vision_model)

    def _text_kwargs(self) -> dict[str, Any]:
        # SigLIP is trained on texts padded to the full length ("max_length"), as its processor pads.
        return {"padding": "max_length", "max_length": int(self.model.config.text_config.max_position_embeddings)}

    def _padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, _ = pad_rows(rows, self.pad_id, self.device)
        return ids, torch.ones_like(ids)

    def text_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Return the sigmoid of each logit: SigLIP scores each text on its own."""
        return torch.sigmoid(scores.float())
