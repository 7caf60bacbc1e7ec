"""Differentiable targets: what a Grad-CAM map explains.

A target is any callable ``target(output) -> Tensor[B]`` that returns one differentiable
scalar per batch item from the model's output, before any softmax for class scores (the
paper's y^c). The engine never looks inside a target, so captioning, VQA and
classification all use the same protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Target(Protocol):
    """The target protocol: one differentiable scalar per batch item."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor: ...


class _PickedLogit:
    """The score of one output column per batch item, from logits [B, N].

    Subclasses name what the columns are (classes, answers) for their error messages.
    """

    _what, _whats = "class", "classes"

    def __init__(self, index: int | torch.Tensor) -> None:
        who = type(self).__name__
        if isinstance(index, bool) or not isinstance(index, (int, torch.Tensor)):
            raise TypeError(f"{who} {self._what} must be an int index or a LongTensor[B], got {index!r}")
        if isinstance(index, torch.Tensor) and (index.dtype.is_floating_point or index.dim() > 1):
            raise TypeError(
                f"{who} {self._what} tensor must be integer with shape [B], got dtype "
                f"{index.dtype} and shape {tuple(index.shape)}"
            )
        self._index = index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        who = type(self).__name__
        if not isinstance(output, torch.Tensor) or output.dim() != 2:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(f"{who} expects logits of shape [B, number of {self._whats}], got {shape}")
        n = output.shape[1]
        index = self._index
        if isinstance(index, int):
            if not -n <= index < n:
                raise ValueError(f"{self._what} index {index} is out of range for {n} {self._whats}")
            return output[:, index]
        index = index.to(output.device).reshape(-1)
        if index.numel() not in (1, output.shape[0]):
            raise ValueError(
                f"{who} got {index.numel()} {self._what} indices for a batch of {output.shape[0]}"
            )
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
            raise ValueError(f"{self._what} indices {index.tolist()} out of range for {n} {self._whats}")
        return output.gather(1, index.expand(output.shape[0]).unsqueeze(1)).squeeze(1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._index!r})"


class ClassLogit(_PickedLogit):
    """The pre-softmax score of a class, y^c, from a classifier's logits [B, num_classes].

    `index` is one class for the whole batch (int) or one class per item (LongTensor[B]).
    """

    _what, _whats = "class", "classes"

    @property
    def index(self) -> int | torch.Tensor:
        return self._index


class AnswerLogit(_PickedLogit):
    """The pre-softmax score of an answer, from a VQA model's logits [B, num_answers] (Sec. 8.2).

    `answer` is one answer index for the whole batch (int) or one per item (LongTensor[B]);
    ``vlcam.explain_answer`` resolves answer strings to indices.
    """

    _what, _whats = "answer", "answers"

    @property
    def answer(self) -> int | torch.Tensor:
        return self._index


class TextLogit(_PickedLogit):
    """The logit of a text matched to an image, from a contrastive model's logits [B, K texts]."""

    _what, _whats = "text", "texts"


class TopAnswer:
    """The pre-softmax score of each item's highest-scoring column, from logits [B, N]: explains
    a model's own answer (or class) in the same pass that finds it."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() != 2:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(f"TopAnswer expects logits of shape [B, number of answers], got {shape}")
        return output.gather(1, output.argmax(dim=1, keepdim=True)).squeeze(1)

    def __repr__(self) -> str:
        return "TopAnswer()"


class CaptionLogProb:
    """The log-probability of a whole caption: the sum of its teacher-forced word log-probs.

    The model output must be the caption's per-word log-probabilities [B, T] (0 at padding),
    as a captioning adapter's scoring forward returns them (paper Sec. 8.1).
    """

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        _check_token_logprobs(output, "CaptionLogProb")
        return output.sum(dim=1)

    def __repr__(self) -> str:
        return "CaptionLogProb()"


class WordLogProb:
    """log p(w_t | w_<t, image): the t-th word of a caption (0-based), paper Sec. 8.1.1."""

    def __init__(self, t: int) -> None:
        if isinstance(t, bool) or not isinstance(t, int):
            raise TypeError(f"WordLogProb needs an int word index, got {t!r}")
        self.t = t

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        _check_token_logprobs(output, "WordLogProb")
        if not 0 <= self.t < output.shape[1]:
            raise ValueError(
                f"word index {self.t} out of range for a caption of {output.shape[1]} tokens"
            )
        return output[:, self.t]

    def __repr__(self) -> str:
        return f"WordLogProb({self.t})"


def _check_token_logprobs(output: object, who: str) -> None:
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"{who} expects per-word log-probabilities of shape [B, T], got {shape}")
