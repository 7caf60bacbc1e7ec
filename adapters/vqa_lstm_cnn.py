"""VQA "deeper LSTM Q + norm I" (Antol et al., 2015; the model of the paper's Fig. 12a).

The question goes through a tanh word embedding and a two-layer LSTM; the last hidden and
cell states of both layers, concatenated, are projected (linear + tanh) to a common size.
The image's average-pooled last-conv features are L2-normalised and projected the same
way. The two vectors are multiplied elementwise and an MLP (two tanh hidden layers) scores
the answers. Grad-CAM explains the CNN's last conv block (`default_layer`).

This module also holds :class:`VQAModel`, the interface both VQA adapters share
(vocabularies, question encoding, the broadcasting rule, checkpoints).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from vlcam._state import preserved
from vlcam.adapters._broadcast import tiled
from vlcam.adapters.backbones import Backbone, build_backbone
from vlcam.checkpoint import load_state, save_checkpoint
from vlcam.image import ImageLike, image_batch, preprocess
from vlcam.text import PAD, Vocabulary, pad_sequences

KIND = "vqa_lstm_cnn"
VOCAB_FILE = "vocab.json"
ANSWERS_FILE = "answers.json"


class VQAModel(nn.Module):
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

    def __init__(self, vocab: Vocabulary, answers: Sequence[str], backbone: Backbone, image_size: int) -> None:
        super().__init__()
        if not isinstance(vocab, Vocabulary):
            raise TypeError(f"vocab must be a vlcam.text.Vocabulary, got {type(vocab).__name__}")
        if isinstance(answers, str) or not answers or not all(isinstance(a, str) and a for a in answers):
            raise ValueError(f"answers must be a non-empty list of non-empty strings, got {answers!r:.80}")
        if len(set(answers)) != len(answers):
            raise ValueError("answers must be distinct: each answer is one logit")
        _check_positive(image_size=image_size)
        self.vocab = vocab
        self.answers = list(answers)
        self.image_size = image_size
        self.cnn = backbone
        self.mean = backbone.mean
        self.std = backbone.std
        self.default_layer = "cnn." + backbone.gradcam_layer
        self.config: dict[str, Any] = {}

    # --- The model (subclasses define encode_images and answer_logits) ---------------------

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Return the image representation the answer head consumes, batch first."""
        raise NotImplementedError

    def answer_logits(self, image_features: torch.Tensor, questions: torch.Tensor) -> torch.Tensor:
        """Return answer logits [B', A] from :meth:`encode_images` output and questions [B, L]."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, questions: torch.Tensor) -> torch.Tensor:
        """Return answer logits [B', num_answers] (pre-softmax) for normalised images and
        question ids [B, L] from :meth:`encode_questions` (see the class doc for B')."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a normalised batch [B, 3, H, W], got {shape}")
        return self.answer_logits(self.encode_images(images), questions)

    # --- Inputs and outputs -----------------------------------------------------------------

    def encode_questions(self, questions: Sequence[str], *, warn: bool = True) -> torch.LongTensor:
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

    def prepare(self, images: torch.Tensor | ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Return a normalised [B, 3, S, S] batch from a preprocessed tensor or images."""
        return image_batch(images, lambda i: preprocess(i, self.image_size, self.mean, self.std)[0], _device(self))

    def predict(
        self, images: torch.Tensor | ImageLike | Sequence[ImageLike], questions: Sequence[str]
    ) -> list[str]:
        """Return the top answer for each (image, question) pair, in eval mode without grad."""
        batch = self.prepare(images)
        tokens = self.encode_questions(questions)
        with preserved(self, eval_mode=True), torch.no_grad():
            top = self(batch, tokens).argmax(dim=1)
        return [self.answers[i] for i in top.tolist()]

    # --- Checkpoints ------------------------------------------------------------------------

    def save(self, ckpt_dir: str | Path) -> Path:
        """Return `ckpt_dir` after writing model.safetensors, config.json, vocab.json, answers.json."""
        return save_checkpoint(ckpt_dir, self.state_dict(), self.config,
                               {VOCAB_FILE: self.vocab.words, ANSWERS_FILE: self.answers})

    @classmethod
    def load(cls, ckpt_dir: str | Path, map_location: str | torch.device = "cpu") -> VQAModel:
        """Return the model saved by :meth:`save`, in eval mode, on `map_location`.

        Reads safetensors and JSON only; the backbone is built without pretrained weights,
        so loading never downloads anything.
        """
        state, config = load_state(ckpt_dir, map_location=map_location)
        if config.get("kind") != cls.kind:
            raise ValueError(f"{ckpt_dir} holds a {config.get('kind')!r} checkpoint, not {cls.kind!r}")
        vocab = Vocabulary.from_json(_read_text(Path(ckpt_dir) / VOCAB_FILE))
        answers = json.loads(_read_text(Path(ckpt_dir) / ANSWERS_FILE))
        kwargs = {k: v for k, v in config.items() if k not in ("kind", "vocab_size", "num_answers")}
        model = cls(vocab, answers, pretrained=False, **kwargs)
        model.load_state_dict(state)
        return model.to(map_location).eval()


class VQALSTMCNN(VQAModel):
    """Deeper LSTM Q + norm I (Antol et al.) over any :func:`build_backbone` CNN."""

    kind = KIND

    def __init__(
        self,
        vocab: Vocabulary,
        answers: Sequence[str],
        backbone: str = "compact",
        *,
        pretrained: bool = False,
        embed_dim: int = 300,
        hidden_dim: int = 512,
        common_dim: int = 1024,
        mlp_dim: int = 1000,
        image_size: int = 128,
        dropout: float = 0.5,
    ) -> None:
        _check_positive(embed_dim=embed_dim, hidden_dim=hidden_dim, common_dim=common_dim, mlp_dim=mlp_dim)
        _check_dropout(dropout)
        super().__init__(vocab, answers, build_backbone(backbone, pretrained=pretrained), image_size)
        self.word_embed = nn.Embedding(len(vocab), embed_dim, padding_idx=PAD)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers=2, batch_first=True)
        # (h, c) of both layers: 4 * hidden_dim, as in Antol et al.'s 2048 = 4 * 512.
        self.question_proj = nn.Linear(4 * hidden_dim, common_dim)
        self.image_proj = nn.Linear(self.cnn.out_channels, common_dim)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(common_dim, mlp_dim), nn.Tanh(),
            nn.Dropout(dropout), nn.Linear(mlp_dim, mlp_dim), nn.Tanh(),
            nn.Dropout(dropout), nn.Linear(mlp_dim, len(self.answers)),
        )
        self.config = {
            "kind": KIND, "backbone": backbone, "embed_dim": embed_dim, "hidden_dim": hidden_dim,
            "common_dim": common_dim, "mlp_dim": mlp_dim, "image_size": image_size, "dropout": dropout,
            "vocab_size": len(vocab), "num_answers": len(self.answers),
        }

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Return the image vectors [B, common_dim]: pooled conv map, L2-normalised, linear, tanh."""
        pooled = self.cnn(images).mean(dim=(2, 3))
        return torch.tanh(self.image_proj(F.normalize(pooled, dim=1)))

    def encode_question_vectors(self, questions: torch.Tensor) -> torch.Tensor:
        """Return the question vectors [B, common_dim] of word ids [B, L]."""
        lengths = _lengths(questions)
        words = torch.tanh(self.word_embed(questions))
        packed = pack_padded_sequence(words, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, c) = self.lstm(packed)
        layers = [t for layer in range(h.shape[0]) for t in (h[layer], c[layer])]
        return torch.tanh(self.question_proj(torch.cat(layers, dim=1)))

    def answer_logits(self, image_features: torch.Tensor, questions: torch.Tensor) -> torch.Tensor:
        """Return logits [B', A] from image vectors [B', common_dim] and word ids [B, L]."""
        question = tile(self.encode_question_vectors(questions), image_features.shape[0])
        return self.classifier(image_features * question)


def tile(features: torch.Tensor, batch: int) -> torch.Tensor:
    """Return question `features` [B, ...] repeated to `batch` rows (the broadcasting rule)."""
    return tiled(features, batch, "questions")


def _lengths(questions: torch.Tensor) -> torch.Tensor:
    if not isinstance(questions, torch.Tensor) or questions.dim() != 2 or questions.dtype != torch.long:
        shape = (f"{tuple(questions.shape)} {questions.dtype}" if isinstance(questions, torch.Tensor)
                 else type(questions).__name__)
        raise ValueError(f"questions must be word ids, a LongTensor [B, L] from encode_questions, got {shape}")
    lengths = (questions != PAD).sum(dim=1)
    if questions.shape[0] == 0 or bool((lengths == 0).any()):
        raise ValueError("every question needs at least one word id that is not <pad>")
    return lengths


def _check_positive(**values: Any) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"missing checkpoint file: {path}")
    return path.read_text(encoding="utf-8")
