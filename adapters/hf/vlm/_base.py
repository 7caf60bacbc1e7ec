"""What the generative vision-language adapters share: prompts, responses, answers, scoring.

A generative VLM (LLaVA, Qwen2-VL, PaliGemma, BLIP-2, ...) writes a response to a prompt about
an image. The adapter explains it in two roles:

- a :class:`~vlcam.adapters.Responder` (a captioner with prompts): the words of a response,
  each scored log p(word's sub-tokens | image, prompt, earlier pieces), by teacher forcing;
- an open-vocabulary :class:`~vlcam.adapters.AnswerModel`: any answer strings to a question,
  each scored log p(answer's pieces | image, question).

Text is encoded without the image: the prompt holds one image placeholder token where the
chat template puts the image, and the scoring forward replaces it by the image tokens of the
images it is given (their number depends on the image for dynamic-resolution models). The
image encoder runs once per image; its output reaches every text row through transformers'
``mm_encoder_outputs``, so K answers, or a response's words, share one vision forward and the
engine's one vectorised backward.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlcam.adapters.hf._common import HFAdapter, check_text, pad_rows
from vlcam.adapters.protocol import BatchTargets, Images

DEFAULT_PROMPT = "Describe the image."
MAX_NEW_TOKENS = 40
MAX_ANSWER_TOKENS = 10


class GenerativeVLM(HFAdapter):
    """Base of the generative VLM adapters.

    Subclasses set `image_token_id`, `default_layer` and `patch_size` and define
    :meth:`image_tokens` (the ids that replace the placeholder for one image) and
    :meth:`vision_inputs` (what ``get_image_features`` and ``generate`` take besides text);
    :meth:`text_inputs` adds what the language model needs for given rows (3-D positions,
    prefix masks).
    """

    open_vocabulary = True
    answers: Sequence[str] = ()
    batch_targets: BatchTargets = "vmap"
    default_prompt = DEFAULT_PROMPT
    image_token_id: int
    #: The vision tower's patch side in pixels.
    patch: int

    def __init__(self, model: nn.Module, processor: Any) -> None:
        tokenizer = getattr(processor, "tokenizer", None)
        image_processor = getattr(processor, "image_processor", None)
        super().__init__(model, tokenizer, image_processor)
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(
                "per-word maps need a fast tokenizer (it reports which word each piece belongs "
                f"to); got {type(tokenizer).__name__}. Load the processor with use_fast=True"
            )
        self.processor = processor
        self.end_id = self._end_id()

    # --- Subclass hooks -----------------------------------------------------------------

    def image_tokens(self, images: torch.Tensor) -> list[int]:
        """Return the token ids that stand for one image of the batch `images` in the text."""
        raise NotImplementedError

    def vision_inputs(self, images: torch.Tensor) -> dict[str, Any]:
        """Return the image keyword arguments of the model's ``get_image_features``/``generate``."""
        return {"pixel_values": images.to(self.dtype)}

    def prompt_image_inputs(self, prompt: torch.Tensor, images: torch.Tensor) -> dict[str, Any]:
        """Return the keyword arguments of ``get_image_features``/``generate`` that the prompt
        ids `prompt` [R, P] (R copies of one prompt) set for `images`: none, unless the image
        encoder reads the prompt too (InstructBLIP's Q-Former)."""
        return {}

    def text_inputs(self, ids: torch.Tensor, mask: torch.Tensor, images: torch.Tensor, prompt_length: int,
                    per_image: int) -> dict[str, Any]:
        """Return extra keyword arguments of the model's forward for expanded rows `ids`
        ([B * per_image, L], image b's rows first); `prompt_length` tokens precede the response."""
        return {}

    def prompt_text(self, prompt: str) -> str:
        """Return `prompt` as the model reads it before its response: the processor's chat
        template with the image first, or the prompt itself when there is no template."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        template = getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        if not template:
            return f"{self.tokenizer.decode([self.image_token_id])}{prompt}"
        text: str = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text

    # --- Text -----------------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> list[int]:
        """Return the prompt's ids, holding the image placeholder once; ValueError for an empty
        prompt or a template that does not place one image."""
        check_text(prompt, "prompt")
        text = self.prompt_text(prompt)
        bos = getattr(self.tokenizer, "bos_token", None)
        # As the processor's apply_chat_template(tokenize=True): a template that writes <bos>
        # itself gets no second one from the tokenizer.
        special = not (isinstance(bos, str) and bos and text.startswith(bos))
        ids = list(self.tokenizer(text, add_special_tokens=special)["input_ids"])
        if ids.count(self.image_token_id) != 1:
            raise ValueError(
                f"the prompt {prompt!r:.80} as the processor writes it holds the image token "
                f"{ids.count(self.image_token_id)} times, not once: the prompt must not contain "
                f"{self.tokenizer.decode([self.image_token_id])!r}"
            )
        return ids

    def encode_response(self, response: str, prompt: str | None = None
                        ) -> tuple[list[str], tuple[torch.Tensor, torch.Tensor]]:
        """Return (the response's words, the scoring inputs (ids [1, L], word_of [R + 1])).

        ids is the prompt, then the response's R pieces, then the end of the turn; the response
        is its last R + 1 ids. ``word_of[t]`` is the word of response piece t, and n (the number
        of words) for pieces that are no word (punctuation, special tokens) and for the end.
        A word is what the tokenizer's pre-tokenizer calls a word and holds a letter or digit.
        """
        prompt_ids = self.encode_prompt(self.default_prompt if prompt is None else prompt)
        check_text(response, "response")
        encoding = self.tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
        pieces, word_ids = list(encoding["input_ids"]), encoding.word_ids()
        offsets = encoding["offset_mapping"]
        spans: dict[int, list[int]] = {}
        for (start, end), w in zip(offsets, word_ids):
            if w is not None:
                span = spans.setdefault(w, [start, end])
                span[0], span[1] = min(span[0], start), max(span[1], end)
        words: list[str] = []
        index: dict[int, int] = {}
        for w, (start, end) in sorted(spans.items(), key=lambda item: item[1][0]):
            text = response[start:end].strip()
            if any(c.isalnum() for c in text):
                index[w] = len(words)
                words.append(text)
        if not words:
            raise ValueError(f"the response {response!r:.80} has no words to explain")
        ids = [*prompt_ids, *pieces, self.end_id]
        limit = self._context_length()
        if limit is not None and len(ids) + self._image_extra() > limit:
            raise ValueError(
                f"the prompt and response are {len(ids) + self._image_extra()} tokens with the image; "
                f"this model reads at most {limit}"
            )
        word_of = [index.get(w, len(words)) if w is not None else len(words) for w in word_ids]
        return words, (torch.tensor([ids], dtype=torch.long, device=self.device),
                       torch.tensor([*word_of, len(words)], dtype=torch.long, device=self.device))

    def encode_caption(self, caption: str) -> tuple[list[str], tuple[torch.Tensor, torch.Tensor]]:
        """Return :meth:`encode_response` of `caption` to the default prompt."""
        return self.encode_response(caption)

    def known_words(self) -> list[str]:
        """Return the tokenizer's vocabulary, each piece as it reads in text."""
        pieces = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        return [self.tokenizer.convert_tokens_to_string([p]).strip() for p in pieces]

    def encode_question(self, question: str) -> torch.Tensor:
        """Return the question as a prompt's ids [1, L] (see :meth:`encode_prompt`)."""
        check_text(question, "question")
        return torch.tensor([self.encode_prompt(question)], dtype=torch.long, device=self.device)

    def answer_inputs(self, answers: Sequence[str]) -> tuple[tuple[torch.Tensor, ...], list[int]]:
        """Return ((answer ids [K, A] right-padded, their mask [K, A]), [0 .. K-1])."""
        if isinstance(answers, str) or not isinstance(answers, Sequence) or not answers:
            raise ValueError(f"answers must be a non-empty list of strings, got {answers!r:.80}")
        rows = []
        for a in answers:
            check_text(a, "answer")
            rows.append(list(self.tokenizer(a, add_special_tokens=False)["input_ids"]))
            if not rows[-1]:
                raise ValueError(f"the answer {a!r:.80} has no tokens")
        ids, mask = pad_rows(rows, self.pad_id, self.device)
        return (ids, mask), list(range(len(rows)))

    # --- Scoring --------------------------------------------------------------------------

    def word_logprobs(self, images: torch.Tensor, ids: torch.Tensor, word_of: torch.Tensor) -> torch.Tensor:
        """Return per-word log-probabilities [B, n + 1]: log p(word i's pieces | image, prompt,
        earlier pieces), then the pieces that are no word and the end of the turn together."""
        response = word_of.shape[0]
        mask = torch.ones_like(ids)
        logprobs = self._piece_logprobs(images, ids, mask, ids.shape[1] - response, response)
        n = int(word_of.max()) + 1
        return logprobs.new_zeros(logprobs.shape[0], n).index_add(1, word_of, logprobs)

    def answer_scores(self, images: torch.Tensor, questions: torch.Tensor, *answer_inputs: torch.Tensor
                      ) -> torch.Tensor:
        """Return [B, K]: log p(answer k's pieces | image, question) for each image."""
        if len(answer_inputs) != 2:
            raise ValueError("answer_scores takes the question ids and answer_inputs' (ids, mask)")
        answers, answer_mask = answer_inputs
        k, length = answers.shape
        prompt = questions.shape[1]
        ids = torch.cat([questions.expand(k, -1), answers], dim=1)
        mask = torch.cat([torch.ones_like(questions).expand(k, -1), answer_mask], dim=1)
        logprobs = self._piece_logprobs(images, ids, mask, prompt, length)  # [B * K, A]
        return (logprobs * answer_mask.repeat(images.shape[0], 1)).sum(dim=1).view(images.shape[0], k)

    def forward(self, images: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """Return :meth:`word_logprobs`."""
        return self.word_logprobs(images, *inputs)

    def answer_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Return each answer string's probability, exp(score): answers are not exclusive."""
        return scores.float().exp()

    def _piece_logprobs(self, images: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor, prompt: int,
                        scored: int) -> torch.Tensor:
        """Return log p(token) [B * R, scored] of each row's `scored` tokens after its first
        `prompt` ones, every row of `rows` [R, L] paired with every image (image b's rows first)."""
        encoded = self.model.get_image_features(**self.vision_inputs(images),
                                                **self.prompt_image_inputs(rows[:, :prompt], images),
                                                return_dict=True)
        return self._text_logprobs(encoded, images, rows, mask, prompt, scored)

    def _text_logprobs(self, encoded: Any, images: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor,
                       prompt: int, scored: int) -> torch.Tensor:
        """Return :meth:`_piece_logprobs` from the image encoder's output `encoded` for `images`."""
        batch, per_image = images.shape[0], rows.shape[0]
        image_ids = self.image_tokens(images)
        ids, mask = self._expanded(rows, mask, image_ids)
        ids, mask = ids.repeat(batch, 1), mask.repeat(batch, 1)
        start = prompt - 1 + len(image_ids)  # the expanded prompt's length
        outputs = self.model(
            input_ids=ids, attention_mask=mask, pixel_values=None,
            mm_encoder_outputs={"image": _repeated(encoded, per_image)},
            logits_to_keep=scored + 1, use_cache=False,
            **self.text_inputs(ids, mask, images, start, per_image),
        )
        logits = outputs.logits[:, -(scored + 1):-1]
        targets = ids[:, start:start + scored]
        return F.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    def _expanded(self, rows: torch.Tensor, mask: torch.Tensor, image_ids: list[int]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `rows` with their image placeholder replaced by `image_ids`."""
        where = (rows == self.image_token_id).nonzero()
        if where.shape[0] != rows.shape[0] or len(set(where[:, 1].tolist())) != 1:
            raise ValueError("each text row must hold the image placeholder once, at the same position")
        at = int(where[0, 1])
        tokens = torch.tensor(image_ids, dtype=rows.dtype, device=rows.device).expand(rows.shape[0], -1)
        ids = torch.cat([rows[:, :at], tokens, rows[:, at + 1:]], dim=1)
        ones = torch.ones_like(tokens, dtype=mask.dtype)
        return ids, torch.cat([mask[:, :at], ones, mask[:, at + 1:]], dim=1)

    # --- Generation -----------------------------------------------------------------------

    def respond(self, images: Images, prompt: str | None = None, *, max_new_tokens: int = MAX_NEW_TOKENS,
                beam_size: int = 1) -> list[str]:
        """Return the model's greedy (or beam) response to `prompt` for each image, special
        tokens dropped."""
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
        prompt_ids = self.encode_prompt(self.default_prompt if prompt is None else prompt)
        rows = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        return self._generated(self.preprocess(images), rows, max_new_tokens, beam_size)

    def caption(self, images: Images, *, beam_size: int = 1) -> list[str]:
        """Return the response to the default prompt for each image."""
        return self.respond(images, beam_size=beam_size)

    def top_answers(self, images: torch.Tensor, questions: torch.Tensor) -> list[str]:
        """Return the model's short greedy answer to the question (ids [1, L]) for each image."""
        return self._generated(images, questions[:1], MAX_ANSWER_TOKENS, 1)

    def _generated(self, images: torch.Tensor, prompt: torch.Tensor, max_new_tokens: int, beam_size: int
                   ) -> list[str]:
        out = []
        with torch.no_grad():
            for b in range(images.shape[0]):
                one = images[b:b + 1]
                ids, mask = self._expanded(prompt, torch.ones_like(prompt), self.image_tokens(one))
                # generate computes its own positions
                extra = {k: v for k, v in self.text_inputs(ids, mask, one, ids.shape[1], 1).items()
                         if k != "position_ids"}
                vision = {**self.vision_inputs(one), **self.prompt_image_inputs(prompt, one)}
                generated = self.model.generate(
                    input_ids=ids, attention_mask=mask, **{**extra, **vision},
                    max_new_tokens=max_new_tokens, num_beams=beam_size, do_sample=False,
                    eos_token_id=self.end_id, pad_token_id=self.pad_id,
                )
                new_ids = self._response_ids(generated[0], ids.shape[1])
                out.append(self.tokenizer.decode(new_ids, skip_special_tokens=True).strip())
        return out

    def _response_ids(self, generated: torch.Tensor, prompt_length: int) -> torch.Tensor:
        """Return the response in `generate`'s output ids [T]: a decoder-only model writes the
        (expanded) prompt of `prompt_length` ids back first."""
        return generated[prompt_length:]

    # --- Helpers --------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """Return the dtype of the model's parameters (pixels are cast to it)."""
        dtype: torch.dtype = next(self.model.parameters()).dtype
        return dtype

    def _end_id(self) -> int:
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None
        if eos is None:
            eos = getattr(self.tokenizer, "eos_token_id", None)
        if not isinstance(eos, int):
            raise ValueError(
                f"neither the {type(self.model).__name__}'s generation config nor its tokenizer sets an "
                "eos token: set model.generation_config.eos_token_id (the end of the model's turn)"
            )
        return eos

    def _context_length(self) -> int | None:
        config = getattr(self.model.config, "text_config", self.model.config)
        limit = getattr(config, "max_position_embeddings", None)
        return limit if isinstance(limit, int) else None

    def _image_extra(self) -> int:
        """Return how many tokens the image adds to the prompt at the model's default size."""
        size = self.image_size
        return len(self.image_tokens(torch.zeros(1, 3, size, size))) - 1


def _repeated(encoded: Any, per_image: int) -> Any:
    """Return the image encoder's output with each image's features repeated `per_image` times,
    so that each of its text rows gets them."""
    if per_image == 1:
        return encoded
    out = copy.copy(encoded)
    features = encoded.pooler_output
    if isinstance(features, torch.Tensor):
        out.pooler_output = features.repeat_interleave(per_image, dim=0)
    else:
        out.pooler_output = [f for f in features for _ in range(per_image)]
    return out


def check_fixed_size(images: torch.Tensor, side: int, model: nn.Module) -> torch.Tensor:
    """Return `images` when they are [B, 3, side, side]: a vision tower with fixed position
    embeddings reads no other size; ValueError naming the shape otherwise."""
    if images.dim() != 4 or tuple(images.shape[1:]) != (3, side, side):
        raise ValueError(
            f"{type(model).__name__} reads images [B, 3, {side}, {side}] (its vision tower's position "
            f"embeddings are fixed), got shape {tuple(images.shape)}; pass an image to preprocess instead"
        )
    return images
