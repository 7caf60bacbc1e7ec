"""explain_answer: Grad-CAM for the answers of a VQA model (Sec. 8.2, Fig. 12).

The VQA model is any :class:`vlcam.adapters.AnswerModel`: it encodes the question and the
answers itself and returns one differentiable score per answer column
(``answer_scores``). Several answers are explained with one forward and one batched
backward through the layers above the explained one. A fixed-vocabulary model's columns
are its answers; an open-vocabulary one (BLIP) scores any answer strings it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vlcam._state import preserved
from vlcam.adapters.protocol import AnswerModel, check_conforms
from vlcam.explain._common import Explanation, check_method, explained_maps, prepare_image
from vlcam.layers import layer_name, resolve_layer
from vlcam.targets import AnswerLogit, Target, TopAnswer

MAX_ANSWERS = 64


class AnswerScorer(nn.Module):
    """scorer(images, questions, *answer_inputs) -> the answer scores [B', columns]."""

    def __init__(self, model: AnswerModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, questions: torch.Tensor, *answer_inputs: torch.Tensor) -> torch.Tensor:
        return self.model.answer_scores(images, questions, *answer_inputs)


@dataclass
class AnswerExplanation(Explanation):
    """Grad-CAM maps for answers to a question about an image, one map per answer.

    ``targets[k]`` is ``AnswerLogit(answer_indices[k])``; `inputs` are the encoded question
    and the answers' inputs.
    """

    question: str
    answers: list[str]
    answer_indices: list[int]  # the answers' score columns (fixed vocabulary: into the model's `answers`)
    probs: torch.Tensor  # [K]: each answer's probability under the model (softmax, sigmoid or sequence)

    def panels(self) -> tuple[list[torch.Tensor], list[str], str]:
        """Return one map per answer, titled with its probability (the paper's Fig. 12)."""
        titles = [f"{a!r}: p = {float(p):.2f}" for a, p in zip(self.answers, self.probs)]
        return list(self.maps), titles, f"Q: {self.question} ({self.method})"

    def plot(self, columns: int = 4) -> object:
        """Return a matplotlib Figure like the paper's Fig. 12: the image, then one map per answer."""
        return super().plot(columns=columns)


def explain_answer(
    model: AnswerModel,
    img: object,
    question: str,
    answer: str | Sequence[str] | None = None,
    *,
    method: str = "gradcam",
    layer: nn.Module | str | None = None,
) -> AnswerExplanation:
    """Return Grad-CAM maps that explain answers to `question` about `img`.

    `img` is a PIL image, an H x W x 3 (or grayscale, RGBA) array, a file path, or an
    already preprocessed [3, S, S] / [1, 3, S, S] float tensor (float16, bfloat16 and
    float64 are cast to float32; integer pixels are refused: pass them as an image or an
    array). `answer` is one answer, a list of answers (the paper's "red", "yellow",
    "yellow and red": all from one pass), or None for the model's top answer. A
    fixed-vocabulary model's answers must be in its vocabulary (compared after VQA
    normalisation). `method` is "gradcam", "guided-gradcam"
    or "counterfactual" (Eq. 12). `layer` defaults to the model's `default_layer`; any
    layer that runs once works (for HieCoAtt, ``cnn.body.layer1`` .. ``cnn.body.layer4``).
    The model is explained in eval mode and comes back as given, buffers included;
    the caller's random generators (Python, NumPy, torch) are left where they were.
    """
    torch_model = check_conforms(model, AnswerModel, "explain_answer needs a VQA model")
    method = check_method(method)
    module = resolve_layer(torch_model, model.default_layer if layer is None else layer)
    requested = _requested_answers(answer)
    prepared = prepare_image(model, img)
    scorer = AnswerScorer(model)
    with preserved(torch_model, eval_mode=True, rng=True):
        questions = model.encode_question(question)
        if requested is None and model.open_vocabulary:
            requested = model.top_answers(prepared.tensor, questions)[:1]
        columns: list[int] = []
        inputs: tuple[torch.Tensor, ...] = ()
        if requested is not None:
            inputs, columns = model.answer_inputs(requested)
        # Without requested answers, a fixed vocabulary's top answer is found and explained in one pass.
        targets: list[Target] = [AnswerLogit(c) for c in columns] if columns else [TopAnswer()]
        maps, output = explained_maps(model, scorer, prepared.tensor, (questions, *inputs), targets, module,
                                      method, prepared)
    scores = output[0].detach()
    if not columns:
        columns = [int(scores.argmax())]
        targets = [AnswerLogit(columns[0])]
    probs = model.answer_probabilities(scores)[columns]
    if not torch.isfinite(probs).all():
        raise ValueError("the answer scores are NaN or infinite: the image or the model produced NaN/inf")
    names = list(requested) if model.open_vocabulary and requested is not None else \
        [model.answers[c] for c in columns]
    return AnswerExplanation(
        maps=maps,
        targets=targets,
        method=method,
        layer=layer_name(torch_model, module),
        scorer=scorer,
        inputs=(questions, *inputs),
        images=prepared.tensor,
        image=prepared.display,
        question=question,
        answers=names,
        answer_indices=columns,
        probs=probs,
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


__all__ = ["AnswerExplanation", "AnswerScorer", "explain_answer"]
