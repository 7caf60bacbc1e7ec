"""Hugging Face VQA models: ViLT (a classifier over answers) and BLIP (answers are generated).

`ViltVQA` scores a fixed vocabulary, as the native models do: ``answer_scores(images,
questions)`` returns answer logits over `answers` (the config's id2label), and Grad-CAM
explains one logit. `BlipVQA` is open-vocabulary: it scores any answer string by the
log-probability of its token sequence, log p(answer, [SEP] | image, question), which is
the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlcam.adapters._broadcast import tiled
from vlcam.adapters.hf._common import (
    HFAdapter,
    blip_setup,
    check_text,
    pad_rows,
)
from vlcam.adapters.protocol import answer_indices

MAX_ANSWER_TOKENS = 10


class _Questions(HFAdapter):
    def encode_questions(self, questions: Sequence[str]) -> torch.Tensor:
        """Return the tokenized questions as padded ids [B, L] on the model's device.

        ValueError for a question without words, whose every piece is the tokenizer's
        unknown token, or longer than the model reads.
        """
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

    def encode_question(self, question: str) -> torch.Tensor:
        """Return one question's ids [1, L] (see :meth:`encode_questions`)."""
        return self.encode_questions([question])

    def _mask(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids != self.pad_id).long()


class ViltVQA(_Questions):
    """`ViltForQuestionAnswering`: text and image patches in one transformer; answer logits.

    The default Grad-CAM layer is the second-to-last block: the answer head reads only the
    last block's first token, so the last block's image tokens receive no gradient.

    ViLT shuffles (and, with ``max_image_length`` below the patch count, samples) its
    patches on every forward. The adapter keeps every patch and puts the image tokens back
    in raster order right after ViLT's patch embedding. Position embeddings are added
    before that point and attention does not depend on token order, so the answer logits
    are the model's own (to float rounding), and any block's image tokens lie on the patch
    grid. The shuffle draws from a forked random generator, so explaining leaves the
    caller's random stream untouched.
    """

    open_vocabulary = False

    def __init__(self, model: nn.Module, tokenizer: Any, image_processor: Any) -> None:
        super().__init__(model, tokenizer, image_processor)
        id2label = self.model.config.id2label
        self.answers = [str(id2label[i]) for i in range(len(id2label))]
        layers = len(self.model.vilt.encoder.layer)
        self.default_layer = f"model.vilt.encoder.layer.{max(layers - 2, 0)}"
        self.patch_size = self.model.config.patch_size

    def answer_inputs(self, answers: Sequence[str]) -> tuple[tuple[torch.Tensor, ...], list[int]]:
        """Return ((), each answer's index in `answers`); ValueError naming an unknown answer."""
        return (), answer_indices(self.answers, answers)

    def answer_scores(self, images: torch.Tensor, questions: torch.Tensor, *answer_inputs: torch.Tensor
                      ) -> torch.Tensor:
        """Return answer logits [B', A] for pixel values and question ids [B, L]."""
        if answer_inputs:
            raise ValueError("ViLT scores its fixed answer vocabulary: it takes no answer inputs")
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(f"images must be a normalised batch [B, 3, H, W], got {_shape(images)}")
        questions = tiled(questions, images.shape[0], "questions")
        embeddings = self.model.vilt.embeddings
        visual_embed = embeddings.visual_embed
        shadowed = "visual_embed" in vars(embeddings)

        def in_raster_order(pixel_values: torch.Tensor, pixel_mask: torch.Tensor, max_image_length: Any = -1
                            ) -> Any:
            tokens, mask, (patch_index, (h, w)) = visual_embed(pixel_values, pixel_mask, max_image_length=-1)
            order = (patch_index[..., 0] * w + patch_index[..., 1]).argsort(dim=1).to(tokens.device)
            rows = order.unsqueeze(-1)
            tokens = torch.cat([tokens[:, :1], tokens[:, 1:].gather(1, rows.expand(-1, -1, tokens.shape[2]))], 1)
            mask = torch.cat([mask[:, :1], mask[:, 1:].gather(1, order)], 1)
            patch_index = patch_index.gather(1, rows.expand(-1, -1, 2).to(patch_index.device))
            return tokens, mask, (patch_index, (h, w))

        devices = [images.device] if images.is_cuda else []
        embeddings.visual_embed = in_raster_order
        try:
            with torch.random.fork_rng(devices=devices):
                logits: torch.Tensor = self.model(
                    input_ids=questions,
                    attention_mask=self._mask(questions),
                    pixel_values=images,
                    pixel_mask=torch.ones(images.shape[0], *images.shape[2:], dtype=torch.long,
                                          device=images.device),
                ).logits
                return logits
        finally:
            if shadowed:
                embeddings.visual_embed = visual_embed
            else:
                del embeddings.visual_embed

    def forward(self, images: torch.Tensor, questions: torch.Tensor) -> torch.Tensor:
        """Return :meth:`answer_scores`."""
        return self.answer_scores(images, questions)

    def answer_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Return the sigmoid of each logit: ViLT's VQA head is trained with one per answer
        (soft VQA scores), not a softmax."""
        return torch.sigmoid(scores.float())

    def top_answers(self, images: torch.Tensor, questions: torch.Tensor) -> list[str]:
        """Return the highest-scoring answer per image, without grad."""
        with torch.no_grad():
            top = self.answer_scores(images, questions).argmax(dim=1)
        return [self.answers[i] for i in top.tolist()]


class BlipVQA(_Questions):
    """`BlipForQuestionAnswering`: the answer is generated, so any answer can be explained.

    ``answer_scores(images, questions, answers, answer_mask)`` returns [B', K]: log p(answer
    k, [SEP] | image, question) for each of K answers from :meth:`answer_inputs`. The
    default Grad-CAM layer is the vision encoder's last block.
    """

    open_vocabulary = True
    answers: Sequence[str] = ()
    # The decoder's [DEC] and [SEP] ids, set by blip_setup; every answer is scored between them.
    start_id: int
    end_id: int

    def __init__(self, model: nn.Module, tokenizer: Any, image_processor: Any) -> None:
        super().__init__(model, tokenizer, image_processor)
        blip_setup(self)

    def answer_inputs(self, answers: Sequence[str]) -> tuple[tuple[torch.Tensor, ...], list[int]]:
        """Return (([bos] pieces [SEP] ids [K, L], their mask [K, L]), columns 0..K-1)."""
        rows = []
        for a in answers:
            check_text(a, "answer")
            pieces = list(self.tokenizer(a, add_special_tokens=False)["input_ids"])
            rows.append([self.start_id, *pieces, self.end_id])
        return pad_rows(rows, self.pad_id, self.device), list(range(len(rows)))

    def answer_scores(self, images: torch.Tensor, questions: torch.Tensor, *answer_inputs: torch.Tensor
                      ) -> torch.Tensor:
        """Return each answer's sequence log-probability [B', K]."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(f"images must be a normalised batch [B, 3, H, W], got {_shape(images)}")
        if len(answer_inputs) != 2:
            raise ValueError("BLIP scores answers from answer_inputs(answers): (ids [K, L], mask [K, L])")
        answers, answer_mask = answer_inputs
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

    def forward(self, images: torch.Tensor, questions: torch.Tensor, answers: torch.Tensor,
                answer_mask: torch.Tensor) -> torch.Tensor:
        """Return :meth:`answer_scores`."""
        return self.answer_scores(images, questions, answers, answer_mask)

    def answer_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Return exp of each answer's sequence log-probability."""
        return scores.float().exp()

    def top_answers(self, images: torch.Tensor, questions: torch.Tensor) -> list[str]:
        """Return the generated answer (greedy) for each image and question."""
        questions = tiled(questions, images.shape[0], "questions")
        with torch.no_grad():
            out = self.model.generate(input_ids=questions, attention_mask=self._mask(questions),
                                      pixel_values=images, max_new_tokens=MAX_ANSWER_TOKENS)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
