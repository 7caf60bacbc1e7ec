"""Reading VQA v2 files, the answer vocabulary, and the official VQA accuracy.

VQA v2 (Goyal et al. 2017) comes as a questions JSON (``questions[]`` with
``question_id``, ``image_id``, ``question``), an annotations JSON (``annotations[]`` with
``question_id``, ``multiple_choice_answer`` and ten human ``answers``) and a folder of
images whose file names follow a pattern. The built-in world writes the same format, with
the extra field ``object_ids`` (the instance ids a question is about).
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COCO_IMAGE_PATTERN = "COCO_{split}2014_{image_id:012d}.jpg"
"""VQA v2's images are COCO 2014's: ``COCO_train2014_000000000009.jpg``."""
PATTERN_FIELDS = ("image_id", "split", "data_subtype")

_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))}
_ARTICLES = {"a", "an", "the"}
# Apostrophes stay: "man's" and "mans" are different answers in the official evaluation.
_PUNCTUATION = re.compile("[" + re.escape(string.punctuation.replace("'", "")) + "]")
# A period between digits is a decimal point ("2.5"), not punctuation.
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")


@dataclass(frozen=True)
class VQAItem:
    """One question about one image, with its human answers (normalised)."""

    question_id: int
    image_id: int
    question: str
    image: Path
    answers: tuple[str, ...]  # the human answers, usually ten
    multiple_choice_answer: str  # the most common human answer
    question_type: str  # "" when the annotations do not give one
    answer_type: str
    object_ids: tuple[int, ...]  # the built-in world's instance ids; () elsewhere


def normalize_answer(answer: str) -> str:
    """Return `answer` as the VQA evaluation compares it: lowercase, without punctuation
    (apostrophes and decimal points kept) and articles, number words as digits, single spaces.

    This is the core of the official normalisation (Antol et al.'s evaluation script),
    without its table of contractions.
    """
    if not isinstance(answer, str):
        raise TypeError(f"an answer must be a str, got {type(answer).__name__}: {answer!r:.80}")
    text = _DECIMAL_POINT.sub("\0", answer.lower())
    text = _PUNCTUATION.sub(" ", text).replace("\0", ".")
    words = [_NUMBER_WORDS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def vqa_accuracy(predicted: str, human_answers: Sequence[str]) -> float:
    """Return the official VQA accuracy of `predicted` against the human answers.

    For each of the n leave-one-out subsets of the n human answers (n = 10 in VQA), the
    accuracy is min(1, matches / 3), matches counted in that subset; the result is their
    mean. Answers are compared after :func:`normalize_answer`.
    """
    if isinstance(human_answers, str) or not human_answers:
        raise ValueError(f"human_answers must be a non-empty list of answers, got {human_answers!r:.80}")
    guess = normalize_answer(predicted)
    same = [normalize_answer(a) == guess for a in human_answers]
    total = sum(same)
    return sum(min(1.0, (total - s) / 3.0) for s in same) / len(same)


def answer_scores(human_answers: Sequence[str]) -> dict[str, float]:
    """Return the VQA accuracy of every answer a human gave (any other answer scores 0)."""
    return {a: vqa_accuracy(a, human_answers) for a in dict.fromkeys(human_answers)}


def format_image_name(pattern: str, image_id: int, split: str = "", data_subtype: str = "") -> str:
    """Return the image file name that `pattern` gives for `image_id`.

    The pattern is a ``str.format`` template over the fields ``image_id`` (int),
    ``split`` ("train", "val", ...: the data subtype without a trailing year) and
    ``data_subtype`` (as the questions file names it, e.g. "train2014"); e.g.
    ``COCO_{split}2014_{image_id:012d}.jpg``, ``{image_id}.png``, ``synth_{image_id:06d}.png``.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"image pattern must be a str, got {type(pattern).__name__}")
    try:
        name = pattern.format(image_id=image_id, split=split, data_subtype=data_subtype)
    except (KeyError, IndexError) as e:
        raise ValueError(
            f"image pattern {pattern!r} uses the unknown field {e}; accepted fields: "
            + ", ".join("{" + f + "}" for f in PATTERN_FIELDS)
        ) from None
    except ValueError as e:
        raise ValueError(f"image pattern {pattern!r} is not a valid format string: {e}") from None
    if name == pattern.format(image_id=image_id + 1, split=split, data_subtype=data_subtype):
        raise ValueError(f"image pattern {pattern!r} does not use {{image_id}}: every image would get one name")
    return name


def read_vqa(
    questions: str | Path,
    annotations: str | Path,
    images: str | Path,
    *,
    image_pattern: str = COCO_IMAGE_PATTERN,
    split: str | None = None,
    limit: int | None = None,
    check_images: bool = True,
) -> list[VQAItem]:
    """Return the questions of a VQA v2 split with their answers and image paths.

    `split` fills the pattern's ``{split}``; by default it is the questions file's
    ``data_subtype`` without a trailing year ("train2014" -> "train"). `limit` keeps the
    questions of the first `limit` images by id. With `check_images`, a missing image file
    is a FileNotFoundError naming it.
    """
    questions, annotations, images = Path(questions), Path(annotations), Path(images)
    q_data = _read_json(questions, "questions")
    a_data = _read_json(annotations, "annotations")
    subtype = str(q_data.get("data_subtype", ""))
    split = re.sub(r"\d{4}$", "", subtype) if split is None else split
    by_id = {}
    for a in a_data["annotations"]:
        _require(a, ("question_id", "multiple_choice_answer", "answers"), annotations, "annotation")
        by_id[a["question_id"]] = a
    kept_images = sorted({q["image_id"] for q in q_data["questions"]})
    if limit is not None:
        kept_images = kept_images[:limit]
    keep = set(kept_images)
    items = []
    for q in q_data["questions"]:
        _require(q, ("question_id", "image_id", "question"), questions, "question")
        if q["image_id"] not in keep:
            continue
        a = by_id.get(q["question_id"])
        if a is None:
            raise ValueError(f"question {q['question_id']} of {questions} has no annotation in {annotations}")
        human = tuple(normalize_answer(h["answer"]) for h in a["answers"])
        if not human:
            raise ValueError(f"annotation of question {q['question_id']} in {annotations} has no answers")
        name = format_image_name(image_pattern, q["image_id"], split, subtype)
        items.append(VQAItem(
            question_id=int(q["question_id"]),
            image_id=int(q["image_id"]),
            question=q["question"],
            image=images / name,
            answers=human,
            multiple_choice_answer=normalize_answer(a["multiple_choice_answer"]),
            question_type=str(a.get("question_type", "")),
            answer_type=str(a.get("answer_type", "")),
            object_ids=tuple(int(i) for i in a.get("object_ids", ())),
        ))
    if not items:
        raise ValueError(f"{questions} holds no questions (limit={limit!r})")
    if check_images:
        missing = sorted({str(i.image) for i in items if not i.image.is_file()})
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} images of {questions} are not in {images}, e.g. {missing[0]} "
                f"(image pattern {image_pattern!r}; pass the pattern the file names follow)"
            )
    return items


def answer_vocabulary(items: Iterable[VQAItem], top_k: int = 1000) -> list[str]:
    """Return the `top_k` most common multiple-choice answers, most common first (ties
    alphabetically), as VQA models usually fix their answer space."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    counts = Counter(i.multiple_choice_answer for i in items)
    return sorted(counts, key=lambda a: (-counts[a], a))[:top_k]


def prior_accuracy(train: Sequence[VQAItem], held_out: Sequence[VQAItem]) -> dict[str, Any]:
    """Return the VQA accuracy on `held_out` of two image-blind baselines fitted on `train`.

    ``most_common``: always the most common training answer. ``per_question_type``: the
    most common training answer of the question's ``question_type`` (the overall one for
    a type not seen in training).
    """
    if not train or not held_out:
        raise ValueError(f"need training and held-out questions, got {len(train)} and {len(held_out)}")
    overall = answer_vocabulary(train, 1)[0]
    by_type: dict[str, Counter[str]] = {}
    for item in train:
        by_type.setdefault(item.question_type, Counter())[item.multiple_choice_answer] += 1
    typed = {t: min(c, key=lambda a: (-c[a], a)) for t, c in by_type.items()}
    return {
        "most_common_answer": overall,
        "most_common": _mean(vqa_accuracy(overall, i.answers) for i in held_out),
        "per_question_type": _mean(vqa_accuracy(typed.get(i.question_type, overall), i.answers)
                                   for i in held_out),
    }


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def _read_json(path: Path, key: str) -> Mapping[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"VQA {key} file not found: {path}")
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ValueError(f"{path} is not a VQA {key} file: expected a JSON object with a list {key!r}")
    return data


def _require(record: Any, keys: Sequence[str], path: Path, what: str) -> None:
    if not isinstance(record, dict) or any(k not in record for k in keys):
        raise ValueError(f"{path}: every {what} needs the keys {', '.join(keys)}; got {record!r:.200}")


__all__ = [
    "COCO_IMAGE_PATTERN",
    "VQAItem",
    "answer_scores",
    "answer_vocabulary",
    "format_image_name",
    "normalize_answer",
    "prior_accuracy",
    "read_vqa",
    "vqa_accuracy",
]
