"""explain_answer: Grad-CAM for the answers of a VQA model (Sec. 8.2, Fig. 12).

The VQA model is any module with the VQA adapter interface (`VQALSTMCNN` and `HieCoAtt`
are two): ``model(images, questions) -> answer logits [B', A]`` that broadcasts its
question batch to a larger image batch, ``encode_questions``, a question `vocab`, the
answer list `answers`, `image_size`, `mean`, `std` and `default_layer`. Several answers
are explained with one CNN forward and one batched backward through the layers above the
explained one.

An open-vocabulary model (``open_vocabulary = True``, e.g. the BLIP adapter) generates
its answers instead: ``model(images, questions, *encode_answers(answers))`` returns the
log-probability of each given answer [B', K], ``answer(images, questions)`` generates
one, and any answer string can be explained. Adapters may define `gradcam_reshape` (token
layers onto the patch grid), ``preprocess_image`` and `gradcam_batch_targets` (how the
engine batches the answers' backwards; default True).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlcam._state import preserved
from vlcam.data.vqa import normalize_answer
from vlcam.explain._common import check_method, prepare_image, resize_maps
from vlcam.explain.figures import overlay_figure, peak, save_figure
from vlcam.gradcam import cam_from_gradients, layer_gradients
from vlcam.guided import guided_grad_cam
from vlcam.layers import layer_name, resolve_layer
from vlcam.targets import AnswerLogit
from vlcam.text import UNK, tokenize

MAX_WORDS = 64
MAX_ANSWERS = 64


class TopAnswer:
    """The pre-softmax score of each item's highest-scoring answer: explains the model's own
    answer in the same pass that finds it."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output.gather(1, output.argmax(dim=1, keepdim=True)).squeeze(1)

    def __repr__(self) -> str:
        return "TopAnswer()"


@dataclass
class AnswerExplanation:
    """Grad-CAM maps for answers to a question about an image, one map per answer.

    Maps are at the original image's resolution, raw (not normalised). For
    ``method="guided-gradcam"`` they are the per-pixel L2 norm over colour channels.
    """

    question: str
    answers: list[str]
    answer_indices: list[int]  # into the model's `answers` (open vocabulary: into `answers`)
    probs: torch.Tensor  # [K]: each answer's probability under the model (softmax, sigmoid or sequence)
    maps: torch.Tensor  # [K, H, W]
    method: str
    layer: str
    image: np.ndarray = field(repr=False)  # H x W x 3 uint8

    def peaks(self) -> list[tuple[int, int]]:
        """Return each map's maximum as (row, col) in the original image."""
        return [peak(m) for m in self.maps]

    def plot(self, columns: int = 4) -> Any:
        """Return a matplotlib Figure like the paper's Fig. 12: the image, then one map per answer."""
        titles = [f"{a!r}: p = {float(p):.2f}" for a, p in zip(self.answers, self.probs)]
        return overlay_figure(self.image, list(self.maps), titles,
                              suptitle=f"Q: {self.question} ({self.method})", columns=columns)

    def save(self, path: str | Path, dpi: int = 100) -> Path:
        """Return `path` after drawing :meth:`plot` into it."""
        return save_figure(self.plot(), path, dpi=dpi)


def explain_answer(
    model: nn.Module,
    img: Any,
    question: str,
    answer: str | Sequence[str] | None = None,
    *,
    method: str = "gradcam",
    layer: nn.Module | str | None = None,
) -> AnswerExplanation:
    """Return Grad-CAM maps that explain answers to `question` about `img`.

    `img` is a PIL image, an H x W x 3 (or grayscale, RGBA) array, a file path, or an
    already preprocessed [3, S, S] / [1, 3, S, S] tensor. `answer` is one answer, a list
    of answers (the paper's "red", "yellow", "yellow and red": all from one pass), or None
    for the model's top answer. Answers must be in the model's answer vocabulary (compared
    after VQA normalisation). `method` is "gradcam", "guided-gradcam" or "counterfactual"
    (Eq. 12). `layer` defaults to the model's `default_layer`; any conv block that runs
    once works (for HieCoAtt, ``cnn.body.layer1`` .. ``cnn.body.layer4``). The model is
    explained in eval mode and comes back as given.
    """
    method = check_method(method)
    module = resolve_layer(model, model.default_layer if layer is None else layer)
    requested = _requested_answers(answer)
    open_vocabulary = bool(getattr(model, "open_vocabulary", False))
    indices = [] if open_vocabulary or requested is None else _answer_indices(model, requested)
    prepared = prepare_image(model, img)
    reshape = getattr(model, "gradcam_reshape", None)
    with preserved(model, eval_mode=True):
        tokens = _encode(model, question)
        args: tuple[Any, ...] = (prepared.tensor, tokens)
        if open_vocabulary:
            # The answers are the output's columns: log p(answer k | image, question).
            names = requested or model.answer(prepared.tensor, tokens)
            args = (*args, *model.encode_answers(names))
            indices = list(range(len(names)))
        if method == "guided-gradcam":
            with torch.no_grad():
                logits = model(*args)[0]
            indices = indices or [int(logits.argmax())]
            fused = guided_grad_cam(model, args, [AnswerLogit(i) for i in indices], module, reshape=reshape)[0]
            maps = fused.norm(dim=1)
        else:
            targets = [AnswerLogit(i) for i in indices] if indices else [TopAnswer()]
            result = layer_gradients(model, args, targets, module, reshape=reshape,
                                     batch_targets=getattr(model, "gradcam_batch_targets", True))
            maps = cam_from_gradients(result, counterfactual=method == "counterfactual")[0]
            logits = result.output[0].detach()
            indices = indices or [int(logits.argmax())]
    maps = resize_maps(maps, prepared.size)
    if open_vocabulary:
        probs, answers = logits.float().exp(), list(names)
    elif getattr(model, "answer_probability", "softmax") == "sigmoid":
        probs, answers = torch.sigmoid(logits.float())[indices], [model.answers[i] for i in indices]
    else:
        probs, answers = torch.softmax(logits.float(), dim=0)[indices], [model.answers[i] for i in indices]
    if not (torch.isfinite(maps).all() and torch.isfinite(probs).all()):
        raise ValueError("the maps hold non-finite values: the image or the model produced NaN/inf")
    return AnswerExplanation(
        question=question,
        answers=answers,
        answer_indices=indices,
        probs=probs,
        maps=maps,
        method=method,
        layer=layer_name(model, module),
        image=prepared.display,
    )


def _requested_answers(answer: object) -> list[str] | None:
    """Return the requested answers as a checked list (None for the top answer)."""
    if answer is None:
        return None
    if isinstance(answer, str):
        requested = [answer]
    elif isinstance(answer, Sequence):
        requested = list(answer)
        if not requested:
            raise ValueError(
                "answer is an empty list: pass an answer, a non-empty list, or None for the top answer"
            )
        if len(requested) > MAX_ANSWERS:
            raise ValueError(f"{len(requested)} answers requested; at most {MAX_ANSWERS} are explained at once")
    else:
        raise TypeError(f"answer must be a str, a list of str, or None; got {type(answer).__name__}")
    for a in requested:
        if not isinstance(a, str):
            raise TypeError(f"each answer must be a str, got {type(a).__name__}: {a!r:.80}")
    return requested


def _answer_indices(model: nn.Module, requested: list[str]) -> list[int]:
    """Return the indices of the requested answers in the model's answer vocabulary."""
    exact = {a: i for i, a in enumerate(model.answers)}
    normalised = {normalize_answer(a): i for i, a in reversed(list(enumerate(model.answers)))}
    indices = []
    for a in requested:
        index = exact.get(a, normalised.get(normalize_answer(a)))
        if index is None:
            close = difflib.get_close_matches(normalize_answer(a), model.answers, n=5, cutoff=0.5)
            hint = f"closest answers: {', '.join(map(repr, close))}" if close else \
                f"e.g. {', '.join(map(repr, model.answers[:5]))}"
            raise ValueError(
                f"answer {a!r:.80} is not in the model's vocabulary of {len(model.answers)} answers; {hint}"
            )
        indices.append(index)
    return indices


def _encode(model: nn.Module, question: object) -> torch.Tensor:
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    words = tokenize(question)
    if not words:
        raise ValueError(f"the question {question!r:.80} has no words")
    if len(words) > MAX_WORDS:
        raise ValueError(f"the question has {len(words)} words; at most {MAX_WORDS} are accepted")
    tokens = model.encode_questions([question])
    if bool((tokens[0] == UNK).all()):
        raise ValueError(
            f"every word of the question {question!r:.80} is unknown to the model's vocabulary; "
            "nothing could be explained"
        )
    return tokens


__all__ = ["AnswerExplanation", "TopAnswer", "explain_answer"]
