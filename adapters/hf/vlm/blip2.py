"""BLIP-2 and InstructBLIP (`Blip2ForConditionalGeneration`, `InstructBlipForConditionalGeneration`),
with a decoder-only (OPT, Llama, Vicuna) or an encoder-decoder (Flan-T5) language model.

A Q-Former reads the ViT's patch tokens through cross-attention and hands a fixed number of
query tokens to the language model, so the query tokens have no place in the image: Grad-CAM
explains the ViT grid, by default its last block (the Q-Former reads its output after the
post-layernorm), whose tokens are the class token, then the patches row by row.

The processor puts the query tokens first, before the tokenizer's own <bos>: the prompt is
the image placeholder, then the tokenised text. BLIP-2's text is "Question: ... Answer:".
InstructBLIP's is the instruction itself, which its Q-Former reads too (in its own vocabulary),
so the image features depend on the prompt: the Q-Former ids are read back from the prompt's
ids in the scoring forward, so every row scored with a prompt gets the features of that
prompt, and K answers to one question share one vision and Q-Former forward.

With T5 the query tokens and the prompt are the encoder's input and the response is the
decoder's, teacher-forced after its start token (:class:`Blip2T5VLM`, :class:`InstructBlipT5VLM`;
wrapping picks them from the model's config).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlcam.adapters.hf._common import check_text, patch_grid
from vlcam.adapters.hf._view import SingleView
from vlcam.adapters.hf.vlm._base import GenerativeVLM, _repeated, check_fixed_size
from vlcam.adapters.hf.vlm.llava import last_block


class Blip2VLM(SingleView, GenerativeVLM):
    """`Blip2ForConditionalGeneration`; constructed on a T5 model, a :class:`Blip2T5VLM`."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Blip2VLM:
        """Return a new adapter of `cls`, or of its encoder-decoder variant for a model (the first
        argument) whose language model is an encoder-decoder (T5)."""
        model = args[0] if args else kwargs.get("model")
        if model is not None and not model.config.use_decoder_only_language_model:
            cls = _ENCODER_DECODER.get(cls, cls)
        return super().__new__(cls)

    def __init__(self, model: nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        config = self.model.config
        if config.use_decoder_only_language_model == isinstance(self, EncoderDecoderLM):
            kind = "a decoder-only" if config.use_decoder_only_language_model else "an encoder-decoder"
            raise TypeError(
                f"{type(self).__name__} does not take a {type(self.model).__name__} with {kind} language model "
                f"({config.text_config.model_type}): wrap it with vlcam.adapters.hf.wrap(model, processor)"
            )
        self.image_token_id = int(config.image_token_id)
        self.queries = int(config.num_query_tokens)
        self.patch = int(config.vision_config.patch_size)
        self.side = int(config.vision_config.image_size)
        self.default_layer = "model.vision_model." + last_block(self.model.vision_model)

    def prompt_text(self, prompt: str) -> str:
        """Return "Question: <prompt> Answer:"."""
        return f"Question: {prompt} Answer:"

    def encode_prompt(self, prompt: str) -> list[int]:
        """Return the image placeholder, then the tokenizer's ids of :meth:`prompt_text` (with its
        <bos> or <eos>), as the processor writes them; ValueError for an empty prompt or one that
        holds the image token."""
        check_text(prompt, "prompt")
        ids = list(self.tokenizer(self.prompt_text(prompt))["input_ids"])
        if self.image_token_id in ids:
            raise ValueError(
                f"the prompt {prompt!r:.80} holds the image token "
                f"{self.tokenizer.decode([self.image_token_id])!r}: the processor puts the image first, "
                "a prompt must not contain it"
            )
        return [self.image_token_id, *ids]

    def image_tokens(self, images: torch.Tensor) -> list[int]:
        """Return one image token per Q-Former query."""
        return [self.image_token_id] * self.queries

    def vision_inputs(self, images: torch.Tensor) -> dict[str, Any]:
        """Return the pixel values; ValueError for images not at the ViT's size."""
        return {"pixel_values": check_fixed_size(images, self.side, self.model).to(self.dtype)}

    def gradcam_reshape(self, activations: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Return ViT tokens [B, 1 + h*w, C] on the patch grid [B, C, h, w]."""
        return patch_grid(activations, images, self.patch)


class InstructBlipVLM(Blip2VLM):
    """`InstructBlipForConditionalGeneration`; constructed on a T5 model, an :class:`InstructBlipT5VLM`.

    The prompt is the instruction, read by the language model after the query tokens and by
    the Q-Former with them (``qformer_input_ids``), as the processor gives both for it. The
    Q-Former reads the instruction only, never the response, as in InstructBLIP's training
    and in generation.
    """

    def __init__(self, model: nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        self.qformer_tokenizer: Any = getattr(processor, "qformer_tokenizer", None)
        if self.qformer_tokenizer is None or not callable(self.qformer_tokenizer):
            raise TypeError(
                f"{type(self.model).__name__} needs its InstructBlipProcessor, which holds the Q-Former's "
                f"tokenizer; got {type(processor).__name__}"
            )

    def prompt_text(self, prompt: str) -> str:
        """Return the instruction as it is."""
        return prompt

    def encode_prompt(self, prompt: str) -> list[int]:
        """Return :meth:`Blip2VLM.encode_prompt`; ValueError also for a prompt that the tokenizer
        does not read back as the Q-Former's tokenizer reads it (the Q-Former's ids are read back
        from these ids)."""
        ids = super().encode_prompt(prompt)
        expected = list(self.qformer_tokenizer(prompt)["input_ids"])
        if self._instruction(ids) != expected:
            raise ValueError(
                f"the prompt {prompt!r:.80} reads back through the tokenizer as "
                f"{self.tokenizer.decode(ids, skip_special_tokens=True)!r:.80}, which the Q-Former would read "
                "differently: leave out characters the tokenizer does not know and its special tokens"
            )
        return ids

    def prompt_image_inputs(self, prompt: torch.Tensor, images: torch.Tensor) -> dict[str, Any]:
        """Return the Q-Former's ids of the instruction that the prompt ids [R, P] spell, for
        each image; ValueError when the rows hold different prompts."""
        if bool((prompt != prompt[:1]).any()):
            raise ValueError("the text rows hold different prompts: InstructBLIP's image features depend on it, "
                             "so one call scores one prompt")
        instruction = torch.tensor([self._instruction(prompt[0].tolist())], dtype=torch.long, device=prompt.device)
        instruction = instruction.expand(images.shape[0], -1)
        return {"qformer_input_ids": instruction, "qformer_attention_mask": torch.ones_like(instruction)}

    def text_inputs(self, ids: torch.Tensor, mask: torch.Tensor, images: torch.Tensor, prompt_length: int,
                    per_image: int) -> dict[str, Any]:
        """Return no Q-Former ids: the forward takes them, but the Q-Former ran on them already."""
        return {"qformer_input_ids": None}

    def _instruction(self, prompt_ids: list[int]) -> list[int]:
        """Return the Q-Former's ids of the text that `prompt_ids` spell (special tokens dropped)."""
        text = self.tokenizer.decode(prompt_ids, skip_special_tokens=True)
        return list(self.qformer_tokenizer(text)["input_ids"])


class EncoderDecoderLM(GenerativeVLM):
    """Scoring and generation of a BLIP adapter whose language model is an encoder-decoder (T5).

    The image's query tokens and the prompt are the encoder's input; the response (its pieces
    and the end token) is the decoder's target, and its input is the response shifted right
    after the decoder's start token, as T5 trains. All rows still share one vision forward and
    the engine's one vectorised backward.
    """

    def _text_logprobs(self, encoded: Any, images: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor,
                       prompt: int, scored: int) -> torch.Tensor:
        """Return log p(token) [B * R, scored] of each row's `scored` response ids after its
        `prompt` encoder ids, from the image encoder's output `encoded` for `images`."""
        batch, per_image = images.shape[0], rows.shape[0]
        source, source_mask = self._expanded(rows[:, :prompt], mask[:, :prompt], self.image_tokens(images))
        targets = rows[:, prompt:prompt + scored]
        start = torch.full_like(targets[:, :1], self._decoder_start_id())
        # Padding after a short answer only reaches the decoder positions after it (causal), whose
        # scores the caller drops.
        decoder = torch.cat([start, targets[:, :-1]], dim=1)
        source, source_mask = source.repeat(batch, 1), source_mask.repeat(batch, 1)
        outputs = self.model(
            input_ids=source, attention_mask=source_mask, decoder_input_ids=decoder.repeat(batch, 1),
            pixel_values=None, mm_encoder_outputs={"image": _repeated(encoded, per_image)}, use_cache=False,
            **self.text_inputs(source, source_mask, images, source.shape[1], per_image),
        )
        logprobs = F.log_softmax(outputs.logits.float(), dim=-1)
        return logprobs.gather(-1, targets.repeat(batch, 1).unsqueeze(-1)).squeeze(-1)

    def _response_ids(self, generated: torch.Tensor, prompt_length: int) -> torch.Tensor:
        """Return the decoder's ids after its start token: the encoder's prompt is not in them."""
        return generated[1:]

    def _decoder_start_id(self) -> int:
        start = getattr(self.model.language_model.config, "decoder_start_token_id", None)
        if not isinstance(start, int):
            raise ValueError(
                f"the {type(self.model.language_model).__name__} language model's config sets no "
                "decoder_start_token_id (T5 starts its decoder with the pad token): set it"
            )
        return start


class Blip2T5VLM(EncoderDecoderLM, Blip2VLM):
    """`Blip2ForConditionalGeneration` with a T5 language model (BLIP-2 Flan-T5)."""


class InstructBlipT5VLM(EncoderDecoderLM, InstructBlipVLM):
    """`InstructBlipForConditionalGeneration` with a T5 language model (InstructBLIP Flan-T5)."""


# The adapter that Blip2VLM / InstructBlipVLM become for an encoder-decoder language model.
_ENCODER_DECODER: dict[type[Blip2VLM], type[Blip2VLM]] = {Blip2VLM: Blip2T5VLM, InstructBlipVLM: InstructBlipT5VLM}
