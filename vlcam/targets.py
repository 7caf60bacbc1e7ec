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


class ClassLogit:
    """The pre-softmax score of a class, y^c, from a classifier's logits [B, num_classes].

    `index` is one class for the whole batch (int) or one class per item (LongTensor[B]).
    """

    def __init__(self, index: int | torch.Tensor) -> None:
        if isinstance(index, bool) or not isinstance(index, (int, torch.Tensor)):
            raise TypeError(f"ClassLogit index must be an int or a LongTensor[B], got {index!r}")
        if isinstance(index, torch.Tensor) and (index.dtype.is_floating_point or index.dim() > 1):
            raise TypeError(
                f"ClassLogit index tensor must be integer with shape [B], got dtype "
                f"{index.dtype} and shape {tuple(index.shape)}"
            )
        self.index = index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() != 2:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(f"ClassLogit expects logits of shape [B, num_classes], got {shape}")
        num_classes = output.shape[1]
        index = self.index
        if isinstance(index, int):
            if not -num_classes <= index < num_classes:
                raise ValueError(f"class index {index} is out of range for {num_classes} classes")
            return output[:, index]
        index = index.to(output.device).reshape(-1)
        if index.numel() not in (1, output.shape[0]):
            raise ValueError(
                f"ClassLogit got {index.numel()} class indices for a batch of {output.shape[0]}"
            )
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_classes):
            raise ValueError(f"class indices {index.tolist()} out of range for {num_classes} classes")
        return output.gather(1, index.expand(output.shape[0]).unsqueeze(1)).squeeze(1)

    def __repr__(self) -> str:
        return f"ClassLogit({self.index!r})"


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


class AnswerLogit:
    """The pre-softmax score of an answer, from a VQA model's logits [B, num_answers] (Sec. 8.2).

    `answer` is one answer index for the whole batch (int) or one per item (LongTensor[B]);
    ``vlcam.explain_answer`` resolves answer strings to indices.
    """

    def __init__(self, answer: int | torch.Tensor) -> None:
        if isinstance(answer, bool) or not isinstance(answer, (int, torch.Tensor)):
            raise TypeError(f"AnswerLogit answer must be an int index or a LongTensor[B], got {answer!r}")
        if isinstance(answer, torch.Tensor) and (answer.dtype.is_floating_point or answer.dim() > 1):
            raise TypeError(
                f"AnswerLogit answer tensor must be integer with shape [B], got dtype "
                f"{answer.dtype} and shape {tuple(answer.shape)}"
            )
        self.answer = answer

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() != 2:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(f"AnswerLogit expects answer logits of shape [B, num_answers], got {shape}")
        num_answers = output.shape[1]
        answer = self.answer
        if isinstance(answer, int):
            if not -num_answers <= answer < num_answers:
                raise ValueError(f"answer index {answer} is out of range for {num_answers} answers")
            return output[:, answer]
        answer = answer.to(output.device).reshape(-1)
        if answer.numel() not in (1, output.shape[0]):
            raise ValueError(f"AnswerLogit got {answer.numel()} answer indices for a batch of {output.shape[0]}")
        if answer.numel() and (int(answer.min()) < 0 or int(answer.max()) >= num_answers):
            raise ValueError(f"answer indices {answer.tolist()} out of range for {num_answers} answers")
        return output.gather(1, answer.expand(output.shape[0]).unsqueeze(1)).squeeze(1)

    def __repr__(self) -> str:
        return f"AnswerLogit({self.answer!r})"
