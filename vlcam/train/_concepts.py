"""Visual concepts read off an image's captions or questions: an auxiliary training target.

A Show-and-Tell decoder (or an LSTM+CNN VQA model) trained from scratch learns the text's
regularities long before it learns to look: on the built-in world, after 10 epochs, the
objects the captioner names are in the image about as often as chance has it
(benchmarks/RESULTS.md). Predicting from the pooled image features which concepts the
image's text holds gives the CNN a direct signal from the first step (after Fang et al.,
CVPR 2015, who detect caption words with a CNN, and Yao et al., ICCV 2017, who feed such
attributes to an LSTM). A caption's concepts are its words and pairs of adjacent words
("red", "ball", "red ball"); a question's are its answer and each (question word, answer)
pair (("ball", "red") for "what color is the ball?" - "red"). Word pairs carry what single
words cannot: which colour goes with which shape.

Text concepts are noisy (an image with a ball may have no caption that says "ball": they say
"sphere", or talk about other objects), and hundreds of them teach a CNN shapes slowly: on
the built-in world, after 9 epochs, a head over about 800 caption concepts ranked images
with and without a shape at an AUC of 0.6-0.7, where a head over the 10 categories alone,
read off the instance annotations, reached 0.82 after 100 steps. So where the data has
instance annotations (COCO does), the categories present are a second, clean target
(`Categories`). The text concepts' binary cross-entropy is averaged over concepts and images
(`concept_loss`), the categories' summed over categories (`category_loss`), so that the clean
target leads what the CNN learns first.

The head belongs to the trainer, not the model: a checkpoint is the plain model, and its
maps explain its captions and answers, nothing else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlcam.text import END, PAD, START, UNK

_SPECIAL = torch.tensor([PAD, START, END, UNK])
# Where the concept and category heads read the image. "pooled": a linear head over the
# globally pooled features; "spatial": the head scores every position of the conv map and an
# image's score is its best position's (multiple-instance learning, as in Oquab et al., CVPR
# 2015, "Is object localization for free?"). A label such as "red ball" must then be found at
# one place, which teaches features that bind a colour to its shape where the object is,
# rather than a colour channel from one object and a shape channel from another.
HEAD_POOLS = ("pooled", "spatial")


def head_logits(head: nn.Module, conv_map: torch.Tensor, pooled: torch.Tensor | None, head_pool: str) -> torch.Tensor:
    """Return a head's logits [B, K]: over `pooled` [B, F], or the best position of `conv_map` [B, C, h, w]."""
    if head_pool == "spatial":
        scores: torch.Tensor = head(conv_map.flatten(2).transpose(1, 2))  # [B, h*w, K]
        return scores.amax(dim=1)
    if head_pool != "pooled" or pooled is None:
        raise ValueError(f"head_pool must be one of {list(HEAD_POOLS)}, got {head_pool!r}")
    logits: torch.Tensor = head(pooled)
    return logits


def caption_codes(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Return concept codes [M, 2L-1] of captions [M, L]: word ids, then adjacent pairs (-1: none)."""
    special = torch.isin(tokens, _SPECIAL.to(tokens.device))
    words = torch.where(special, -1, tokens)
    pairs = vocab_size + tokens[:, :-1] * vocab_size + tokens[:, 1:]
    pairs = torch.where(special[:, :-1] | special[:, 1:], -1, pairs)
    return torch.cat([words, pairs], dim=1)


def answer_codes(questions: torch.Tensor, answers: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Return concept codes [M, L+1] of questions [M, L] (word ids) and their answers [M]
    (answer ids, -1 for none): the answer, then each (word, answer) pair (-1: none)."""
    answers = answers[:, None]
    special = torch.isin(questions, _SPECIAL.to(questions.device)) | (answers < 0)
    # Pair codes start past every answer id (fewer than 2**20 answers in any VQA data).
    pairs = torch.where(special, -1, 2**20 + answers * vocab_size + questions)
    return torch.cat([answers, pairs], dim=1)


def frequent_codes(batches: Iterable[torch.Tensor], min_count: int) -> list[int]:
    """Return the codes seen at least `min_count` times (counting each row once) in code tensors."""
    counts: Counter[int] = Counter()
    for codes in batches:
        for row in codes.tolist():
            counts.update({c for c in row if c >= 0})
    return sorted(c for c, n in counts.items() if n >= min_count)


class Concepts(nn.Module):
    """A linear head over pooled image features [B, F] that scores each known concept code."""

    codes: torch.Tensor

    def __init__(self, codes: list[int], features: int) -> None:
        super().__init__()
        if not codes:
            raise ValueError("no concept is frequent enough to train on; lower min_count or disable concepts")
        self.register_buffer("codes", torch.tensor(sorted(codes), dtype=torch.long), persistent=False)
        self.head = nn.Linear(features, len(codes))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Return concept logits [B, K]."""
        logits: torch.Tensor = self.head(pooled)
        return logits

    def targets(self, codes: torch.Tensor, owner: torch.Tensor, images: int) -> torch.Tensor:
        """Return multi-hot targets [images, K]: the known concepts of any text of each image.

        `codes` [M, C] are the texts' concept codes (-1: none); `owner` [M] each text's image.
        """
        index = torch.searchsorted(self.codes, codes.clamp_min(0)).clamp_max(len(self.codes) - 1)
        known = (self.codes[index] == codes) & (codes >= 0)
        hits = torch.zeros(codes.shape[0], len(self.codes), device=codes.device)
        hits.scatter_add_(1, torch.where(known, index, 0), known.float()).clamp_(max=1.0)
        per_image = torch.zeros(images, len(self.codes), device=codes.device)
        return per_image.index_add_(0, owner, hits).clamp_(max=1.0)


def concept_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return the binary cross-entropy of text-concept logits [B, K], averaged over concepts and images."""
    return F.binary_cross_entropy_with_logits(logits, targets)


def category_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return the binary cross-entropy of category logits [B, C], summed over categories, mean over images."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / max(1, logits.shape[0])


class Categories:
    """Which object categories each image holds, from a COCO instances file: the clean target.

    Where instances carry string attributes (the built-in world's ``color`` and ``size``, as
    COCO-Attributes or Visual Genome annotate them), each (category, attribute, value) is a
    label too: "a red ball" is a different label from "a red box", which teaches the CNN
    features that tell which colour goes with which shape. `targets(image_ids)` is the
    multi-hot [B, C] of each image (see the module doc).
    """

    def __init__(self, instances: dict[str, Any]) -> None:
        labels: dict[int, set[tuple[Any, ...]]] = {}
        for ann in instances["annotations"]:
            labels.setdefault(int(ann["image_id"]), set()).update(_instance_labels(ann))
        names = sorted({label for found in labels.values() for label in found}, key=repr)
        self.column = {label: k for k, label in enumerate(names)}
        self.present = {image_id: [self.column[label] for label in found] for image_id, found in labels.items()}

    def __len__(self) -> int:
        return len(self.column)

    def targets(self, image_ids: torch.Tensor) -> torch.Tensor:
        """Return the multi-hot categories [B, C] of images `image_ids` [B] (all zero if unannotated)."""
        out = torch.zeros(len(image_ids), len(self.column))
        for row, image_id in enumerate(image_ids.tolist()):
            out[row, self.present.get(int(image_id), [])] = 1.0
        return out


def sibling_instances(text_file: Path, train_name: str, instances: str | Path | None) -> Path | None:
    """Return the instances file to take categories from: `instances` if given, else the
    ``instances_train.json`` beside a `text_file` named `train_name` (the COCO and built-in
    layout) if there is one, else None (no category loss)."""
    if instances is not None:
        return Path(instances)
    sibling = text_file.with_name("instances_train.json")
    return sibling if text_file.name == train_name and sibling.is_file() else None


# Instance fields that are not attributes of the object's look.
_NOT_ATTRIBUTES = frozenset({"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"})


def _instance_labels(ann: dict[str, Any]) -> list[tuple[Any, ...]]:
    category = int(ann["category_id"])
    attributes = [(category, key, value) for key, value in sorted(ann.items())
                  if key not in _NOT_ATTRIBUTES and isinstance(value, str)]
    return [(category,), *attributes]
