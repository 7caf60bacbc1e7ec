"""The adapter contract: what `explain_caption`, `explain_answer`, the evaluations and the CLI
may call on a model, and nothing else.

Three protocols, checkable at run time (``isinstance(model, Captioner)``):

- :class:`ImageModel`: image intake and where Grad-CAM looks (shared by both kinds);
- :class:`Captioner`: scores a caption word by word, writes captions;
- :class:`AnswerModel`: scores answers to a question, gives its own answers.

An adapter owns its encoding: it turns a caption, a question or answers into the tensors
its scoring forward takes, with its own vocabulary or tokenizer, and says which words it
scores. The explain functions never tokenise.

:class:`CaptionerBase` and :class:`AnswerModelBase` supply the defaults (a CNN layer needs
no reshape; K targets are explained by stacking K copies of the layer's activations).
Subclassing them is optional: any object with these members conforms.

Broadcasting rule, relied on by ``batch_targets=True``: when the scoring forward gets an
image batch r times larger than its text inputs, it pairs copy j of the images (rows
``j*B .. j*B+B-1``) with the same B text inputs (:func:`vlcam.adapters._broadcast.tiled`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from vlcam._state import preserved
from vlcam.data.vqa import normalize_answer
from vlcam.gradcam import BatchTargets

Triple = tuple[float, float, float]
# What `preprocess` takes: a preprocessed tensor [3, H, W] / [B, 3, H, W], or one or more
# images (PIL images, arrays, paths).
Images = Any


@runtime_checkable
class ImageModel(Protocol):
    """A model explained at one of its layers, from images it preprocesses itself."""

    #: The dotted name of the layer Grad-CAM explains by default.
    default_layer: str
    #: How the engine batches the backwards of K targets: True (K stacked copies of the
    #: layer's activations, which the scoring forward must broadcast to), "vmap" (one
    #: vectorised backward; better when the part above the layer is heavy) or False.
    batch_targets: BatchTargets
    #: The input normalisation, to show a preprocessed tensor as an image.
    mean: Triple
    std: Triple
    #: The side of the square input the model is trained at (rendered worlds use it).
    image_size: int

    def preprocess(self, images: Images) -> torch.Tensor:
        """Return a normalised batch [B, 3, H, W] on the model's device.

        A tensor [3, H, W] or [B, 3, H, W] is taken as already preprocessed.
        """
        ...

    def gradcam_reshape(self, activations: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Return a layer's output laid out as [B, C, h, w], from it and the forward's images.

        A pure function of its arguments: nothing recorded during a forward. ValueError when
        the layer's output cannot be laid out on the image grid.
        """
        ...

    def image_maps(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Return maps [K, h, w] laid over the preprocessed image as maps [K, H, W] on the
        original image of `size` (H, W): undo the preprocessing's resize, padding or crop."""
        ...


@runtime_checkable
class Captioner(ImageModel, Protocol):
    """An image captioner: caption log-probabilities, word by word (paper Sec. 8.1)."""

    def encode_caption(self, caption: str) -> tuple[list[str], tuple[torch.Tensor, ...]]:
        """Return (the caption's words, the inputs that follow the images in `word_logprobs`).

        The words are what gets one map each. ValueError for a caption the model cannot
        score: no words, or no word the model knows.
        """
        ...

    def word_logprobs(self, images: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """Return [B', n + 1]: log p(word i | earlier words, image), then log p(<end> | ...).

        Differentiable; follows the broadcasting rule when `batch_targets` is True.
        """
        ...

    def caption(self, images: Images, *, beam_size: int = 1) -> list[str]:
        """Return one generated caption per image."""
        ...

    def known_words(self) -> Sequence[str]:
        """Return the words the model can write (its vocabulary, or its tokenizer's)."""
        ...


@runtime_checkable
class AnswerModel(ImageModel, Protocol):
    """A VQA model: one differentiable score per (image, answer) (paper Sec. 8.2)."""

    #: True when any answer string can be scored (the answers are generated); False when
    #: the model scores a fixed answer vocabulary, `answers`.
    open_vocabulary: bool
    #: The answer vocabulary, index = score column (empty for an open vocabulary).
    answers: Sequence[str]

    def encode_question(self, question: str) -> torch.Tensor:
        """Return the question as the model's input ids [1, L] on its device.

        ValueError for a question without words, with no word the model knows, or longer
        than the model reads.
        """
        ...

    def answer_inputs(self, answers: Sequence[str]) -> tuple[tuple[torch.Tensor, ...], list[int]]:
        """Return (the inputs that follow the question in `answer_scores`, each answer's column).

        A fixed vocabulary needs no inputs and gives each answer's index (ValueError for an
        answer not in it); an open vocabulary encodes the answers, column k for answer k.
        """
        ...

    def answer_scores(self, images: torch.Tensor, questions: torch.Tensor, *answer_inputs: torch.Tensor
                      ) -> torch.Tensor:
        """Return the differentiable answer scores [B', columns] that Grad-CAM explains.

        Follows the broadcasting rule when `batch_targets` is True.
        """
        ...

    def answer_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Return the model's probability of each column of `scores` [..., columns]."""
        ...

    def top_answers(self, images: torch.Tensor, questions: torch.Tensor) -> list[str]:
        """Return the model's own answer for each image (row of `questions`), without grad."""
        ...


@runtime_checkable
class TextMatcher(ImageModel, Protocol):
    """A contrastive image-text model (CLIP, SigLIP): one similarity per (image, text)."""

    def encode_texts(self, texts: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """Return the texts as the inputs that follow the images in `text_scores`.

        ValueError for an empty list, a text without words or longer than the model reads.
        """
        ...

    def text_scores(self, images: torch.Tensor, *text_inputs: torch.Tensor) -> torch.Tensor:
        """Return the differentiable image-text logits [B, K] that Grad-CAM explains."""
        ...

    def text_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Return the model's probability of each text [..., K] from `scores` (softmax over the
        texts for CLIP, a sigmoid per text for SigLIP)."""
        ...


@runtime_checkable
class Responder(Captioner, Protocol):
    """A generative vision-language model: a captioner whose responses follow a prompt."""

    #: The prompt `caption` and `encode_caption` use.
    default_prompt: str

    def encode_response(self, response: str, prompt: str | None = None
                        ) -> tuple[list[str], tuple[torch.Tensor, ...]]:
        """Return (the response's words, the inputs that follow the images in `word_logprobs`);
        `prompt` None is the default prompt. ValueError for an empty prompt, a response without
        words, or one longer than the model's context."""
        ...

    def respond(self, images: Images, prompt: str | None = None, *, beam_size: int = 1) -> list[str]:
        """Return the model's own response (greedy, or beam search) to `prompt` for each image."""
        ...


def missing_members(model: object, protocol: type) -> list[str]:
    """Return the members of `protocol` that `model` lacks, in declaration order."""
    members: list[str] = []
    for klass in reversed(protocol.__mro__):
        if klass is object or klass is Protocol or not getattr(klass, "_is_protocol", False):
            continue
        names = [*getattr(klass, "__annotations__", {}),
                 *(n for n, v in vars(klass).items() if callable(v) and not n.startswith("_"))]
        members += [n for n in names if n not in members]
    return [name for name in members if not hasattr(model, name)]


def check_conforms(model: object, protocol: type, role: str) -> nn.Module:
    """Return `model` as the nn.Module it must be; TypeError naming what it lacks to be a
    `protocol` (`role` says who needs it, for the message)."""
    missing = missing_members(model, protocol)
    if missing:
        raise TypeError(
            f"{type(model).__name__} is not a vlcam {protocol.__name__}: it lacks {', '.join(missing)}"
            f" (see 'Write your own adapter' in the README; {role})"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{type(model).__name__} is not an nn.Module: Grad-CAM hooks a layer of the model, so an "
            f"adapter is a torch module ({role})"
        )
    return model


class ImageModelBase(nn.Module):
    """Defaults of :class:`ImageModel` for convolutional models."""

    batch_targets: BatchTargets = True

    def gradcam_reshape(self, activations: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Return a conv layer's [B, C, h, w] output as it is; ValueError for any other shape."""
        if activations.dim() != 4:
            raise ValueError(
                f"the layer outputs shape {tuple(activations.shape)}, not a spatial map (B, C, h, w): "
                "Grad-CAM needs a spatial layer of the image encoder (a conv layer or block)"
            )
        return activations

    def image_maps(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Return `maps` [K, h, w] resized bilinearly (align_corners=False) to `size`: the
        preprocessing resized the whole image."""
        if tuple(maps.shape[-2:]) == tuple(size):
            return maps
        return F.interpolate(maps.unsqueeze(0), size=size, mode="bilinear", align_corners=False)[0]


class CaptionerBase(ImageModelBase):
    """Defaults of :class:`Captioner`."""


class AnswerModelBase(ImageModelBase):
    """Defaults of :class:`AnswerModel` for a fixed answer vocabulary: answers are looked up
    (after VQA normalisation), probabilities are a softmax over the vocabulary."""

    open_vocabulary = False
    answers: Sequence[str]

    def answer_inputs(self, answers: Sequence[str]) -> tuple[tuple[torch.Tensor, ...], list[int]]:
        """Return ((), each answer's index in `answers`); ValueError naming an unknown answer."""
        return (), answer_indices(self.answers, answers)

    def answer_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Return the softmax of `scores` over the answer vocabulary (the last dimension)."""
        return torch.softmax(scores.float(), dim=-1)

    def top_answers(self, images: torch.Tensor, questions: torch.Tensor) -> list[str]:
        """Return the highest-scoring answer per image, in eval mode without grad."""
        with preserved(self, eval_mode=True), torch.no_grad():
            top = self.answer_scores(images, questions).argmax(dim=1)
        return [self.answers[i] for i in top.tolist()]

    def answer_scores(self, images: torch.Tensor, questions: torch.Tensor, *answer_inputs: torch.Tensor
                      ) -> torch.Tensor:
        """Return answer logits [B', len(answers)]: the model's forward."""
        result: torch.Tensor = self(images, questions, *answer_inputs)
        return result


def answer_indices(vocabulary: Sequence[str], requested: Sequence[str]) -> list[int]:
    """Return the index in `vocabulary` of each requested answer, matched exactly or after VQA
    normalisation; ValueError naming the first unknown answer and the closest known ones."""
    exact = {a: i for i, a in enumerate(vocabulary)}
    normalised = {normalize_answer(a): i for i, a in reversed(list(enumerate(vocabulary)))}
    indices = []
    for a in requested:
        index = exact.get(a, normalised.get(normalize_answer(a)))
        if index is None:
            close = difflib.get_close_matches(normalize_answer(a), list(vocabulary), n=5, cutoff=0.5)
            hint = f"closest answers: {', '.join(map(repr, close))}" if close else \
                f"e.g. {', '.join(map(repr, vocabulary[:5]))}"
            raise ValueError(
                f"answer {a!r:.80} is not in the model's vocabulary of {len(vocabulary)} answers; {hint}"
            )
        indices.append(index)
    return indices


__all__ = ["AnswerModel", "AnswerModelBase", "BatchTargets", "Captioner", "CaptionerBase", "ImageModel",
           "ImageModelBase", "Responder", "TextMatcher", "answer_indices", "check_conforms", "missing_members"]
