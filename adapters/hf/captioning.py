"""Hugging Face captioners: BLIP (`BlipForConditionalGeneration`) and `VisionEncoderDecoderModel`.

Both score a caption by teacher forcing: ``word_logprobs(images, ids, word_of)`` returns
log p(word i | earlier words, image) for every word, then log p(<end> | caption, image),
so `explain_caption`'s targets (whole caption, one word) apply unchanged. A word is what
the tokenizer's pre-tokenizer calls a word; its log-probability is the sum over its
sub-word pieces (the chain rule), so "skis" split as "ski" + "##s" is one word and one map.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlcam.adapters._broadcast import tiled
from vlcam.adapters.hf._common import HFAdapter, blip_setup, check_text

MAX_NEW_TOKENS = 30


class HFCaptioner(HFAdapter):
    """The captioning interface over a Hugging Face image-to-text model.

    Subclasses define :meth:`image_features` (pixel values -> what the text decoder
    attends to, batch first), :meth:`token_logits` and :meth:`generate_ids`.
    """

    start_id: int
    end_id: int

    def __init__(self, model: nn.Module, tokenizer: Any, image_processor: Any) -> None:
        super().__init__(model, tokenizer, image_processor)
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(
                "per-word maps need a fast tokenizer (it reports which word each piece belongs "
                f"to); got {type(tokenizer).__name__}. Load the processor with use_fast=True"
            )

    # --- Subclass hooks -----------------------------------------------------------------

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Return the image encoder's output for normalised pixel values."""
        raise NotImplementedError

    def token_logits(self, features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Return next-token logits [B', L, V] for ids [B', L] given image features [B', ...]."""
        raise NotImplementedError

    def generate_ids(self, images: torch.Tensor, beam_size: int, max_len: int) -> torch.Tensor:
        """Return generated token ids [B, T] (special tokens included) for pixel values."""
        raise NotImplementedError

    # --- The captioning interface -------------------------------------------------------

    def encode_caption(self, caption: str) -> tuple[list[str], tuple[torch.Tensor, torch.Tensor]]:
        """Return (the caption's words, the scoring inputs (ids [1, L], word_of [L-1])).

        ids is <start> pieces <end>; ``word_of[t]`` is the word that ``ids[0, t+1]``
        belongs to, and the number of words for <end>.
        """
        check_text(caption, "caption")
        encoding = self.tokenizer(caption, add_special_tokens=False, return_offsets_mapping=True)
        pieces, word_ids = list(encoding["input_ids"]), encoding.word_ids()
        offsets = encoding["offset_mapping"]
        if not pieces:
            raise ValueError(f"the caption {caption!r:.80} has no words to explain")
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if unk is not None and all(p == unk for p in pieces):
            raise ValueError(
                f"every word of the caption {caption!r:.80} is unknown to the model's tokenizer; "
                "nothing could be explained"
            )
        order: dict[int, int] = {}
        for w in word_ids:
            order.setdefault(-1 if w is None else w, len(order))
        word_of = [order[-1 if w is None else w] for w in word_ids]
        # A word is shown as the caption's own text (an unknown word stays readable).
        spans: list[list[int]] = [[len(caption), 0] for _ in order]
        for (start, end), w in zip(offsets, word_of):
            spans[w] = [min(spans[w][0], start), max(spans[w][1], end)]
        words = [caption[start:end].strip() for start, end in spans]
        ids = torch.tensor([[self.start_id, *pieces, self.end_id]], dtype=torch.long, device=self.device)
        word_of_t = torch.tensor([*word_of, len(words)], dtype=torch.long, device=self.device)
        return words, (ids, word_of_t)

    def known_words(self) -> list[str]:
        """Return the tokenizer's vocabulary (its pieces, as the tokenizer spells them)."""
        return list(self.tokenizer.get_vocab())

    def word_logprobs(self, images: torch.Tensor, ids: torch.Tensor, word_of: torch.Tensor) -> torch.Tensor:
        """Return per-word log-probabilities [B', n+1] (the last column: <end>).

        When the image batch B' is r times the caption batch, the captions are tiled r
        times, as the Grad-CAM engine's batched targets need.
        """
        features = self.image_features(images)
        ids = tiled(ids, features.shape[0], "captions")
        logits = self.token_logits(features, ids)[:, :-1]
        pieces = F.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        n = int(word_of.max()) + 1
        out = pieces.new_zeros(pieces.shape[0], n)
        return out.index_add(1, word_of, pieces)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, word_of: torch.Tensor) -> torch.Tensor:
        """Return :meth:`word_logprobs`."""
        return self.word_logprobs(images, ids, word_of)

    def caption(self, images: Any, *, beam_size: int = 1, max_len: int = MAX_NEW_TOKENS) -> list[str]:
        """Return one generated caption per image (beam search if `beam_size` > 1).

        `images` is what :meth:`prepare` takes: pixel values, or images to preprocess.
        """
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
        with torch.no_grad():
            out = self.generate_ids(self.preprocess(images), beam_size, max_len)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]


class BlipCaptioner(HFCaptioner):
    """`BlipForConditionalGeneration`: ViT image encoder, BERT-style text decoder.

    Captions are scored as BLIP trains them: [DEC] (the decoder's bos) pieces [SEP].
    The default Grad-CAM layer is the vision encoder's last block; its patch tokens are
    what the decoder's cross-attention reads.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, image_processor: Any) -> None:
        super().__init__(model, tokenizer, image_processor)
        blip_setup(self)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.model.vision_model(pixel_values=images).last_hidden_state
        return features

    def token_logits(self, features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model.text_decoder(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            encoder_hidden_states=features,
        ).logits
        return logits

    def generate_ids(self, images: torch.Tensor, beam_size: int, max_len: int) -> torch.Tensor:
        out: torch.Tensor = self.model.generate(pixel_values=images, num_beams=beam_size, max_new_tokens=max_len)
        return out


class VisionEncoderDecoderCaptioner(HFCaptioner):
    """`VisionEncoderDecoderModel` (e.g. a ViT encoder with a GPT-2 decoder).

    Captions are scored as <decoder_start> pieces <eos>. The default Grad-CAM layer is the
    encoder's last transformer block (for a CNN encoder, pass its last conv stage).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, image_processor: Any) -> None:
        super().__init__(model, tokenizer, image_processor)
        config = self.model.config
        start = config.decoder_start_token_id
        if start is None:
            start = getattr(config.decoder, "bos_token_id", None)
        end = getattr(config.decoder, "eos_token_id", None) or config.eos_token_id
        if end is None:
            end = getattr(tokenizer, "eos_token_id", None)
        if start is None or end is None:
            raise ValueError(
                "the VisionEncoderDecoderModel's config sets no decoder_start_token_id / eos_token_id; "
                "set model.config.decoder_start_token_id and model.config.eos_token_id"
            )
        self.start_id, self.end_id = int(start), int(end)
        self.default_layer = "model.encoder." + _last_block(self.model.encoder)
        # A CNN encoder has no patches: its layers are spatial already.
        self.patch_size = getattr(self.model.encoder.config, "patch_size", None)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.model.encoder(pixel_values=images).last_hidden_state
        return features

    def token_logits(self, features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        # The model's own forward projects the encoder states to the decoder's width.
        logits: torch.Tensor = self.model(encoder_outputs=(features,), decoder_input_ids=ids).logits
        return logits

    def generate_ids(self, images: torch.Tensor, beam_size: int, max_len: int) -> torch.Tensor:
        out: torch.Tensor = self.model.generate(pixel_values=images, num_beams=beam_size, max_new_tokens=max_len,
                                                decoder_start_token_id=self.start_id, eos_token_id=self.end_id)
        return out


def _last_block(encoder: nn.Module) -> str:
    """Return the dotted name (in `encoder`) of its last transformer block or CNN stage."""
    lists = [(n, m) for n, m in encoder.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) and n.split(".")[-1] in ("layer", "layers", "stages", "blocks")]
    if not lists:
        raise ValueError(
            f"cannot find the blocks of the {type(encoder).__name__} encoder; pass layer= explicitly"
        )
    name, blocks = lists[0]
    return f"{name}.{len(blocks) - 1}"
