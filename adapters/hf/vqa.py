"""Hugging Face VQA models: ViLT (a classifier over answers) and BLIP (answers are generated).

`ViltVQA` has the VQA interface of the native models: ``model(images, questions)``
returns answer logits over `answers` (the config's id2label), and Grad-CAM explains one
logit. `BlipVQA` is open-vocabulary: it scores any answer string by the log-probability
of its token sequence, log p(answer, [SEP] | image, question), which is the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlcam.adapters._broadcast import tiled
from vlcam.adapters.hf._common import HFAdapter, PatchGrid, blip_setup, check_text, pad_rows

MAX_ANSWER_TOKENS = 10


class _Questions(HFAdapter):
    def encode_questions(self, questions: Sequence[str]) -> torch.Tensor:
        """Return the tokenized questions as padded ids [B, L] on the model's device."""
        if isinstance(questions, str) or not isinstance(questions, Sequence) or not questions:
            raise ValueError(f"questions must be a non-empty list of strings, got {questions!r:.80}")
        config = getattr(self.model.config, "text_config", self.model.config)
        limit = getattr(config, "max_position_embeddings", None)
        rows = []
        for q in questions:
            check_text(q, "question")
            rows.append(list(self.tokenizer(q)["input_ids"]))
            pieces = self.tokenizer(q, add_special_tokens=False)["input_ids"]
            if self.tokenizer.unk_token_id is not None and all(p == self.tokenizer.unk_token_id for p in pieces):
                raise ValueError(
                    f"every word of the question {q!r:.80} is unknown to the model's tokenizer; "
                    "nothing could be explained"
                )
            if limit is not None and len(rows[-1]) > limit:
                raise ValueError(
                    f"the question {q!r:.80} is {len(rows[-1])} tokens long; this model reads at most {limit}"
                )
        return pad_rows(rows, self.pad_id, self.device)[0]

    def _mask(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids != self.pad_id).long()


class ViltVQA(_Questions):
    """`ViltForQuestionAnswering`: text and image patches in one transformer; answer logits.

    The default Grad-CAM layer is the second-to-last block: the answer head reads only the
    last block's first token, so the last block's image tokens receive no gradient. ViLT
    shuffles (and, with ``max_image_length`` below the patch count, samples) its patches on
    every forward; the adapter records where each token came from and lays the tokens back
    on the patch grid (unsampled patches stay 0). The shuffling draws from a forked random
    generator, so explaining leaves the caller's random stream untouched.
    """

    # ViLT's VQA head is trained with a sigmoid per answer (soft VQA scores), not a softmax.
    answer_probability = "sigmoid"

    def __init__(self, model: nn.Module, tokenizer: Any, image_processor: Any) -> None:
        super().__init__(model, tokenizer, image_processor)
        id2label = model.config.id2label
        self.answers = [str(id2label[i]) for i in range(len(id2label))]
        layers = len(model.vilt.encoder.layer)
        self.default_layer = f"model.vilt.encoder.layer.{max(layers - 2, 0)}"
        self.gradcam_reshape = self._lay_out
        self._layout: tuple[int, torch.Tensor, tuple[int, int]] | None = None

    def forward(self, images: torch.Tensor, questions: torch.Tensor) -> torch.Tensor:
        """Return answer logits [B', A] for pixel values and question ids [B, L]."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(f"images must be a normalised batch [B, 3, H, W], got {_shape(images)}")
        questions = tiled(questions, images.shape[0], "questions")
        embeddings = self.model.vilt.embeddings
        visual_embed = embeddings.visual_embed
        shadowed = "visual_embed" in vars(embeddings)

        def recording(*args: Any, **kwargs: Any) -> Any:
            out = visual_embed(*args, **kwargs)
            patch_index, grid = out[2]
            self._layout = (questions.shape[1], patch_index, grid)
            return out

        devices = [images.device] if images.is_cuda else []
        embeddings.visual_embed = recording
        try:
            with torch.random.fork_rng(devices=devices):
                return self.model(
                    input_ids=questions,
                    attention_mask=self._mask(questions),
                    pixel_values=images,
                    pixel_mask=torch.ones(images.shape[0], *images.shape[2:], dtype=torch.long,
                                          device=images.device),
                ).logits
        finally:
            if shadowed:
                embeddings.visual_embed = visual_embed
            else:
                del embeddings.visual_embed

    def _lay_out(self, tokens: torch.Tensor) -> torch.Tensor:
        """Return image tokens [B, N+L, C] of the last forward laid out as [B, C, h, w]."""
        if tokens.dim() == 4:
            return tokens
        if self._layout is None:
            raise ValueError("no ViLT forward has run yet: the patch layout is unknown")
        text_length, patch_index, (h, w) = self._layout
        patches = tokens[:, text_length + 1:]  # after the text and the image's class token
        if patches.shape[1] != patch_index.shape[1]:
            raise ValueError(
                f"the layer holds {tokens.shape[1]} tokens; expected {text_length} text + 1 + "
                f"{patch_index.shape[1]} image tokens: choose a block of model.vilt.encoder"
            )
        grid = tokens.new_zeros(tokens.shape[0], h * w, tokens.shape[2])
        flat = (patch_index[..., 0] * w + patch_index[..., 1]).to(tokens.device)
        grid.scatter_(1, flat.unsqueeze(-1).expand(-1, -1, tokens.shape[2]), patches)
        return grid.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


class BlipVQA(_Questions):
    """`BlipForQuestionAnswering`: the answer is generated, so any answer can be explained.

    ``model(images, questions, answers, answer_mask)`` returns [B', K]: log p(answer k,
    [SEP] | image, question) for each of K answers from :meth:`encode_answers`. The
    default Grad-CAM layer is the vision encoder's last block.
    """

    open_vocabulary = True

    def __init__(self, model: nn.Module, tokenizer: Any, image_processor: Any) -> None:
        super().__init__(model, tokenizer, image_processor)
        blip_setup(self)
        self.patch_grid = PatchGrid()
        self.gradcam_reshape = self.patch_grid

    def encode_answers(self, answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ([bos] pieces [SEP] ids [K, L], their mask [K, L]) for the answer strings."""
        rows = []
        for a in answers:
            check_text(a, "answer")
            pieces = list(self.tokenizer(a, add_special_tokens=False)["input_ids"])
            rows.append([self.start_id, *pieces, self.end_id])
        return pad_rows(rows, self.pad_id, self.device)

    def forward(
        self, images: torch.Tensor, questions: torch.Tensor, answers: torch.Tensor, answer_mask: torch.Tensor
    ) -> torch.Tensor:
        """Return each answer's sequence log-probability [B', K]."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(f"images must be a normalised batch [B, 3, H, W], got {_shape(images)}")
        self.patch_grid.record(images, self.model.config.vision_config.patch_size)
        image_embeds = self.model.vision_model(pixel_values=images).last_hidden_state
        batch = image_embeds.shape[0]
        questions = tiled(questions, batch, "questions")
        question_mask = self._mask(questions)
        question_embeds = self.model.text_encoder(
            input_ids=questions,
            attention_mask=question_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:2], dtype=torch.long, device=images.device),
        ).last_hidden_state
        k = answers.shape[0]
        # Every (item, answer) pair: item-major, so row i*K + j is item i, answer j.
        logits = self.model.text_decoder(
            input_ids=answers.repeat(batch, 1),
            attention_mask=answer_mask.repeat(batch, 1),
            encoder_hidden_states=question_embeds.repeat_interleave(k, dim=0),
            encoder_attention_mask=question_mask.repeat_interleave(k, dim=0),
        ).logits[:, :-1]
        targets = answers.repeat(batch, 1)[:, 1:]
        picked = F.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        picked = picked * answer_mask.repeat(batch, 1)[:, 1:]
        return picked.sum(dim=1).view(batch, k)

    def answer(self, images: torch.Tensor, questions: torch.Tensor) -> list[str]:
        """Return the generated answer (greedy) for each image and question."""
        with torch.no_grad():
            out = self.model.generate(input_ids=questions, attention_mask=self._mask(questions),
                                      pixel_values=images, max_new_tokens=MAX_ANSWER_TOKENS)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
