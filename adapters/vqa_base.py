"""What the native VQA adapters share: vocabularies, question encoding, the broadcasting
rule and checkpoints (:class:`VQAModel`), and the checks their constructors use."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from vlcam.adapters._broadcast import tiled
from vlcam.adapters._word_ids import check_word_ids
from vlcam.adapters.backbones import Backbone
from vlcam.adapters.protocol import AnswerModelBase
from vlcam.checkpoint import (
    CONFIG_FILE,
    FRACTION,
    NAME,
    POSITIVE_INT,
    CheckpointConfig,
    build_with_weights,
    existing_dir,
    read_config,
    read_json,
    read_vocabulary,
    read_weights,
    save_checkpoint,
    setting,
)
from vlcam.image import ImageLike, image_batch, preprocess
from vlcam.text import PAD, Vocabulary, explainable_ids, pad_sequences

VOCAB_FILE = "vocab.json"
ANSWERS_FILE = "answers.json"
MAX_QUESTION_WORDS = 64


@dataclass(frozen=True)
class VQAConfig(CheckpointConfig):
    """The keys every native VQA checkpoint's config.json has; each model adds its own."""

    DESCRIBES_FILES = ("vocab_size", "num_answers")

    backbone: str = setting(NAME)
    image_size: int = setting(POSITIVE_INT)
    dropout: float = setting(FRACTION)
    vocab_size: int = setting(POSITIVE_INT)
    num_answers: int = setting(POSITIVE_INT)


class VQAModel(AnswerModelBase):
    """A VQA classifier: ``model(images, questions) -> logits [B', num_answers]``.

    Attributes: `vocab` (the question Vocabulary), `answers` (the answer vocabulary, index
    = logit column), `image_size`, `mean`, `std` (input normalisation), `default_layer`
    (the Grad-CAM layer's dotted name), `config` (JSON-ready, with "kind").

    Broadcasting: when the image-feature batch is r > 1 times the question batch (r copies
    of the images, or of a CNN layer's activations), the questions are tiled r times
    (``questions.repeat(r, 1)``), so copy j (rows ``j*B .. j*B+B-1``) pairs with the same
    questions; the Grad-CAM engine relies on this to explain several answers with one
    backward (``batch_targets=True``).
    """

    kind: ClassVar[str]
    config_schema: ClassVar[type[VQAConfig]]

    def __init__(self, vocab: Vocabulary, answers: Sequence[str], backbone: Backbone, image_size: int) -> None:
        super().__init__()
        if not isinstance(vocab, Vocabulary):
            raise TypeError(f"vocab must be a vlcam.text.Vocabulary, got {type(vocab).__name__}")
        if isinstance(answers, str) or not answers or not all(isinstance(a, str) and a for a in answers):
            raise ValueError(f"answers must be a non-empty list of non-empty strings, got {answers!r:.80}")
        if len(set(answers)) != len(answers):
            raise ValueError("answers must be distinct: each answer is one logit")
        check_positive(image_size=image_size)
        self.vocab = vocab
        self.answers = list(answers)
        self.image_size = image_size
        self.cnn = backbone
        self.mean = backbone.mean
        self.std = backbone.std
        self.default_layer = "cnn." + backbone.gradcam_layer
        self.config: dict[str, Any] = {}

    # --- The model (subclasses define encode_conv_map and answer_logits) -------------------

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Return the image representation the answer head consumes, batch first."""
        return self.encode_conv_map(self.cnn(images))

    def encode_conv_map(self, conv_map: torch.Tensor) -> torch.Tensor:
        """Return :meth:`encode_images`'s output from the CNN's last conv map [B, C, h, w]."""
        raise NotImplementedError

    def answer_logits(self, image_features: torch.Tensor, questions: torch.Tensor) -> torch.Tensor:
        """Return answer logits [B', A] from :meth:`encode_images` output and questions [B, L]."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, questions: torch.Tensor) -> torch.Tensor:
        """Return answer logits [B', num_answers] (pre-softmax) for normalised images and
        question ids [B, L] from :meth:`encode_questions` (see the class doc for B'); an id
        outside the vocabulary is a ValueError."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a normalised batch [B, 3, H, W], got {shape}")
        # The questions are checked before the CNN runs, so bad ones leave the batch-norm
        # statistics of a model in train mode alone.
        question_lengths(questions)
        check_word_ids(questions, len(self.vocab), "question")
        tile(questions, images.shape[0])
        return self.answer_logits(self.encode_images(images), questions)

    # --- Inputs and outputs -----------------------------------------------------------------

    def encode_questions(self, questions: Sequence[str], *, warn: bool = True) -> torch.Tensor:
        """Return the questions as <pad>-padded word ids [B, L] on the model's device.

        Unknown words become <unk> (with one warning naming them if `warn`); a question
        without any word is a ValueError.
        """
        if isinstance(questions, str) or not isinstance(questions, Sequence) or not questions:
            raise ValueError(f"questions must be a non-empty list of strings, got {questions!r:.80}")
        ids = self.vocab.encode_many(questions, add_special=False, warn=warn)
        empty = [i for i, seq in enumerate(ids) if not seq]
        if empty:
            raise ValueError(
                f"question {empty[0]} ({questions[empty[0]]!r:.80}) has no words; every question "
                "needs at least one word (punctuation and whitespace are dropped)"
            )
        return torch.tensor(pad_sequences(ids), dtype=torch.long, device=_device(self))

    def encode_question(self, question: str) -> torch.Tensor:
        """Return one question's word ids [1, L] (see :meth:`encode_questions`).

        ValueError for a question without words, with more than `MAX_QUESTION_WORDS`, or
        whose every word is unknown to the vocabulary (nothing could be explained).
        """
        _, ids = explainable_ids(self.vocab, question, "question", MAX_QUESTION_WORDS, add_special=False)
        return torch.tensor([ids], dtype=torch.long, device=_device(self))

    def preprocess(self, images: torch.Tensor | ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Return a normalised [B, 3, S, S] batch from a preprocessed tensor or images."""
        return image_batch(images, lambda i: preprocess(i, self.image_size, self.mean, self.std)[0], _device(self))

    # --- Checkpoints ------------------------------------------------------------------------

    def save(self, ckpt_dir: str | Path) -> Path:
        """Return `ckpt_dir` after writing model.safetensors, config.json, vocab.json, answers.json."""
        return save_checkpoint(ckpt_dir, self.state_dict(), self.config,
                               {VOCAB_FILE: self.vocab.words, ANSWERS_FILE: self.answers})

    @classmethod
    def load(cls, ckpt_dir: str | Path, map_location: str | torch.device = "cpu") -> VQAModel:
        """Return the model saved by :meth:`save`, in eval mode, on `map_location`.

        Reads safetensors and JSON only; the backbone is built without pretrained weights,
        so loading never downloads anything. A file that is missing, corrupt or does not
        fit the others is a FileNotFoundError or ValueError naming it (see :mod:`vlcam.checkpoint`).
        """
        ckpt_dir = existing_dir(ckpt_dir)
        config = read_config(ckpt_dir, cls.config_schema)
        vocab = read_vocabulary(ckpt_dir / VOCAB_FILE, config.vocab_size)
        answers = read_answers(ckpt_dir / ANSWERS_FILE, config.num_answers)
        state = read_weights(ckpt_dir, map_location)
        # The concrete models (VQALSTMCNN, HieCoAtt) take the backbone by name and `pretrained`.
        build: Callable[..., VQAModel] = cls
        model = build_with_weights(lambda: build(vocab, answers, pretrained=False, **config.arguments()), state,
                                   ckpt_dir)
        return model.to(map_location).eval()


def read_answers(path: Path, size: int) -> list[str]:
    """Return the answer vocabulary in `path` (answers.json: a list of distinct non-empty strings).

    ValueError naming the file if it holds anything else, or not `size` answers (the
    config's num_answers).
    """
    answers = read_json(path)
    if not isinstance(answers, list):
        raise ValueError(f"{path} must hold a JSON list of answers, got a {type(answers).__name__}")
    bad = next((i for i, a in enumerate(answers) if not isinstance(a, str) or not a), None)
    if bad is not None:
        raise ValueError(f"{path}: answer {bad} is {answers[bad]!r:.80}; every answer must be a non-empty string")
    twice = [a for a, n in Counter(answers).items() if n > 1]
    if twice:
        raise ValueError(f"{path}: the answer {twice[0]!r:.80} appears twice; each answer is one logit")
    if len(answers) != size:
        raise ValueError(
            f"{path} holds {len(answers)} answers but {path.with_name(CONFIG_FILE)} says num_answers is {size}: "
            "the answers belong to another checkpoint"
        )
    return answers


def tile(features: torch.Tensor, batch: int) -> torch.Tensor:
    """Return question `features` [B, ...] repeated to `batch` rows (the broadcasting rule)."""
    return tiled(features, batch, "questions")


def question_lengths(questions: torch.Tensor) -> torch.Tensor:
    if not isinstance(questions, torch.Tensor) or questions.dtype != torch.long:
        what = f"dtype {questions.dtype}" if isinstance(questions, torch.Tensor) else type(questions).__name__
        raise TypeError(f"questions must be word ids, a LongTensor [B, L] from encode_questions, got {what}")
    if questions.dim() != 2:
        raise ValueError(
            f"questions must be word ids, a LongTensor [B, L] from encode_questions, got shape {tuple(questions.shape)}"
        )
    lengths = (questions != PAD).sum(dim=1)
    if questions.shape[0] == 0 or bool((lengths == 0).any()):
        raise ValueError("every question needs at least one word id that is not <pad>")
    return lengths


def check_positive(**values: Any) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")


def check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
