"""The answer pointing game: does an answer's Grad-CAM map peak on the object the question is about?

For each question about exactly one object (the built-in world's colour and shape
questions: ``object_ids`` of length 1), the map of one answer (the model's own top
answer, or the ground-truth answer) is reduced to its maximum point; a hit is a point on
that object's visible mask (or within `tolerance` pixels of it). An all-zero map (no
positive evidence anywhere, so no maximum) is a miss. The random baseline is
the expected hit rate of a uniformly random point: the share of the image the
(tolerance-grown) mask covers. The centre of the image is a second baseline.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from vlcam.adapters.protocol import AnswerModel
from vlcam.data.coco import load_coco
from vlcam.data.vqa import COCO_IMAGE_PATTERN, VQAItem, read_vqa, vqa_accuracy
from vlcam.eval.pointing import disc_grown
from vlcam.eval.runner import SIZE_DIFFERS, count_skip, image_file_size

ANSWER_CHOICES = ("predicted", "ground_truth")


@dataclass
class AnswerPointingItem:
    """One single-object question, the answer explained, and how its map and the baselines fared."""

    question_id: int
    image_id: int
    question: str
    question_type: str
    object_id: int
    answer: str  # the answer whose map was tested
    predicted: str  # the model's top answer
    correct: float  # VQA accuracy of the model's top answer
    peak: tuple[int, int]
    empty_map: bool  # all zero: no point, counted as a miss
    hit: bool
    center_hit: bool
    random_hit_rate: float


def iter_answer_pointing(
    model: AnswerModel,
    items: Sequence[VQAItem],
    instances_json: str | Path,
    *,
    answer: str = "predicted",
    method: str = "gradcam",
    layer: nn.Module | str | None = None,
    tolerance: int = 0,
    question_types: Sequence[str] | None = None,
    counts: dict[str, Any] | None = None,
) -> Iterator[AnswerPointingItem]:
    """Yield one :class:`AnswerPointingItem` per question of `items` about exactly one object.

    `question_types` (e.g. the built-in world's "what color is the", "what shape is the")
    keeps only questions of those types; questions of other types are counted in
    `counts['other_question_type']`.

    `answer` is "predicted" (the model's top answer) or "ground_truth" (the most common
    human answer; questions whose answer is not in the model's vocabulary are skipped and
    counted in `counts['answer_not_in_vocabulary']`). `counts` (if given) also receives
    'not_single_object', the questions skipped for being about zero or several objects,
    and, only when there are any, `counts['skipped']`: per reason, the questions skipped
    because their image is of another size than the instances file says.
    """
    from vlcam.explain.answer import explain_answer

    if answer not in ANSWER_CHOICES:
        raise ValueError(f"answer must be one of {', '.join(map(repr, ANSWER_CHOICES))}, got {answer!r}")
    instances = load_coco(instances_json)
    counts = counts if counts is not None else {}
    counts.setdefault("not_single_object", 0)
    counts.setdefault("other_question_type", 0)
    counts.setdefault("answer_not_in_vocabulary", 0)
    for item in items:
        if question_types is not None and item.question_type not in question_types:
            counts["other_question_type"] += 1
            continue
        if len(item.object_ids) != 1:
            counts["not_single_object"] += 1
            continue
        if answer == "ground_truth" and not _scorable(model, item.multiple_choice_answer):
            counts["answer_not_in_vocabulary"] += 1
            continue
        object_id = item.object_ids[0]
        if object_id not in instances.anns:
            raise ValueError(
                f"question {item.question_id} is about object {object_id}, which {instances_json} lacks"
            )
        region = disc_grown(instances.annToMask(instances.anns[object_id]).astype(bool), tolerance)
        if image_file_size(Path(item.image)) not in (None, region.shape):
            count_skip(counts, SIZE_DIFFERS)
            continue
        wanted = item.multiple_choice_answer if answer == "ground_truth" else None
        explanation = explain_answer(model, item.image, item.question, wanted, method=method, layer=layer)
        predicted = explanation.answers[0] if answer == "predicted" else \
            model.top_answers(explanation.images, explanation.inputs[0])[0]
        row, col = explanation.peaks()[0]
        empty = not bool(explanation.maps[0].max() > 0)
        h, w = region.shape
        yield AnswerPointingItem(
            question_id=item.question_id,
            image_id=item.image_id,
            question=item.question,
            question_type=item.question_type,
            object_id=object_id,
            answer=explanation.answers[0],
            predicted=predicted,
            correct=vqa_accuracy(predicted, item.answers),
            peak=(row, col),
            empty_map=empty,
            hit=not empty and bool(region[row, col]),
            center_hit=bool(region[h // 2, w // 2]),
            random_hit_rate=float(region.mean()),
        )


def summarize_answer_pointing(items: Sequence[AnswerPointingItem], counts: dict[str, Any] | None = None,
                              seconds: float | None = None) -> dict[str, Any]:
    """Return the hit rate overall, per question type and by answer correctness, with baselines."""
    n = len(items)

    def rate(group: Sequence[AnswerPointingItem]) -> float | None:
        return float(np.mean([i.hit for i in group])) if group else None

    by_type: dict[str, list[AnswerPointingItem]] = defaultdict(list)
    for i in items:
        by_type[i.question_type].append(i)
    random = float(np.mean([i.random_hit_rate for i in items])) if n else None
    accuracy = rate(items)
    summary: dict[str, Any] = {
        "questions": n,
        "accuracy": accuracy,
        "hits": sum(i.hit for i in items),
        "empty_maps": sum(i.empty_map for i in items),
        "per_question_type": {t: rate(g) for t, g in sorted(by_type.items())},
        "when_answer_correct": rate([i for i in items if i.correct >= 1.0]),
        "when_answer_wrong": rate([i for i in items if i.correct < 1.0]),
        "baselines": {
            "random": random,
            "center": float(np.mean([i.center_hit for i in items])) if n else None,
        },
        "times_random": accuracy / random if accuracy is not None and random else None,
    }
    summary.update(counts or {})
    if seconds:
        summary["questions_per_second"] = n / seconds
    return summary


def answer_pointing_game(
    model: AnswerModel,
    questions_json: str | Path,
    annotations_json: str | Path,
    instances_json: str | Path,
    images_dir: str | Path,
    *,
    image_pattern: str = COCO_IMAGE_PATTERN,
    limit: int | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Return the pointing-game summary (see the module doc) with every item under "items".

    `limit` keeps the questions of the first `limit` images; the other keyword arguments
    go to :func:`iter_answer_pointing`.
    """
    items = read_vqa(questions_json, annotations_json, images_dir, image_pattern=image_pattern, limit=limit)
    counts: dict[str, Any] = {}
    start = time.perf_counter()
    results = list(iter_answer_pointing(model, items, instances_json, counts=counts, **kwargs))
    summary = summarize_answer_pointing(results, counts, time.perf_counter() - start)
    summary["items"] = [asdict(i) for i in results]
    return summary


def _scorable(model: AnswerModel, answer: str) -> bool:
    """Whether `model` can score `answer` (always, for an open vocabulary)."""
    try:
        model.answer_inputs([answer])
    except ValueError:
        return False
    return True


__all__ = ["AnswerPointingItem", "answer_pointing_game", "iter_answer_pointing", "summarize_answer_pointing"]
