"""VQA v2 intake: the official accuracy, answer normalisation, image names, the answer vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vlcam.data.synthetic import generate
from vlcam.data.vqa import (
    COCO_IMAGE_PATTERN,
    answer_scores,
    answer_vocabulary,
    format_image_name,
    normalize_answer,
    prior_accuracy,
    read_vqa,
    vqa_accuracy,
)
from vlcam.train.vqa import soft_target_loss, soft_targets


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate(out, 20, image_size=48, seed=1, workers=1)
    return out


def _write_vqa(
    folder: Path, questions: list[dict], annotations: list[dict], subtype: str = "train2014"
) -> tuple[Path, Path]:
    q, a = folder / "q.json", folder / "a.json"
    q.write_text(json.dumps({"data_subtype": subtype, "questions": questions}))
    a.write_text(json.dumps({"data_subtype": subtype, "annotations": annotations}))
    return q, a


def _humans(*answers: str) -> list[dict]:
    return [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(answers)]


# --- The official accuracy ----------------------------------------------------------------


def test_vqa_accuracy_matches_a_hand_computed_example() -> None:
    humans = ["red", "red"] + ["blue"] * 7 + ["Blue!"]
    # "red": leaving out one of the 2 reds leaves 1 match (1/3), in 2 of the 10 subsets;
    # leaving out a blue leaves 2 matches (2/3), in 8 subsets: (2 * 1/3 + 8 * 2/3) / 10 = 0.6.
    assert vqa_accuracy("red", humans) == pytest.approx(0.6, abs=1e-12)
    # 8 blues after normalisation: every subset keeps at least 7 of them.
    assert vqa_accuracy("BLUE", humans) == 1.0
    assert vqa_accuracy("green", humans) == 0.0
    # Three matching humans: 3 subsets keep 2 (2/3), 7 keep 3 (1): 0.9, the well-known value.
    assert vqa_accuracy("yes", ["yes"] * 3 + ["no"] * 7) == pytest.approx(0.9, abs=1e-12)
    assert vqa_accuracy("2", ["two"] + ["1"] * 9) == pytest.approx(0.3, abs=1e-12)
    assert answer_scores(humans) == {"red": pytest.approx(0.6), "blue": 1.0, "Blue!": 1.0}


def test_vqa_accuracy_rejects_missing_answers() -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        vqa_accuracy("red", [])
    with pytest.raises(ValueError, match="non-empty list"):
        vqa_accuracy("red", "red")
    with pytest.raises(TypeError, match="must be a str"):
        vqa_accuracy(3, ["3"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("  Yellow  and   Red ", "yellow and red"),
        ("The red one.", "red 1"),
        ("Two", "2"),
        ("2.5", "2.5"),
        ("man's", "man's"),
        ("yes!", "yes"),
        ("a", ""),
    ],
)
def test_answers_are_normalised_like_the_official_evaluation(raw: str, normalised: str) -> None:
    assert normalize_answer(raw) == normalised


# --- Image names, files, vocabulary ---------------------------------------------------------


def test_image_patterns_format_coco_and_custom_names() -> None:
    assert format_image_name(COCO_IMAGE_PATTERN, 9, "train") == "COCO_train2014_000000000009.jpg"
    assert format_image_name("{image_id}.png", 42) == "42.png"
    assert format_image_name("synth_{image_id:06d}.png", 7) == "synth_000007.png"
    assert format_image_name("{data_subtype}/{image_id}.jpg", 3, "val", "val2014") == "val2014/3.jpg"
    with pytest.raises(ValueError, match=r"unknown field 'id'.*\{image_id\}, \{split\}, \{data_subtype\}"):
        format_image_name("{id}.png", 1)
    with pytest.raises(ValueError, match="does not use"):
        format_image_name("image.png", 1)
    with pytest.raises(ValueError, match="not a valid format string"):
        format_image_name("{image_id", 1)


def test_read_vqa_pairs_questions_answers_and_coco_file_names(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for image_id in (9, 25):
        (images / f"COCO_train2014_{image_id:012d}.jpg").write_bytes(b"")
    q, a = _write_vqa(
        tmp_path,
        [{"question_id": 90, "image_id": 9, "question": "What color is it?"},
         {"question_id": 250, "image_id": 25, "question": "How many?"}],
        [{"question_id": 250, "multiple_choice_answer": "two", "answers": _humans(*["2"] * 10),
          "question_type": "how many", "answer_type": "number"},
         {"question_id": 90, "multiple_choice_answer": "Red", "answers": _humans(*["red"] * 6 + ["orange"] * 4)}],
    )
    items = read_vqa(q, a, images)
    assert [i.question_id for i in items] == [90, 250]
    assert items[0].image == images / "COCO_train2014_000000000009.jpg"
    assert items[0].multiple_choice_answer == "red" and items[0].answers.count("orange") == 4
    assert items[0].question_type == "" and items[0].object_ids == ()
    assert items[1].multiple_choice_answer == "2" and items[1].answer_type == "number"
    assert [i.question_id for i in read_vqa(q, a, images, limit=1)] == [90]

    with pytest.raises(FileNotFoundError, match=r"COCO_val2014_000000000009\.jpg"):
        read_vqa(q, a, images, split="val")
    q2, a2 = _write_vqa(tmp_path, [{"question_id": 1, "image_id": 9, "question": "?"}], [])
    with pytest.raises(ValueError, match="question 1 .* has no annotation"):
        read_vqa(q2, a2, images)


def test_read_vqa_reads_the_built_in_world(world: Path) -> None:
    items = read_vqa(world / "vqa_questions_train.json", world / "vqa_annotations_train.json",
                     world / "images", image_pattern="synth_{image_id:06d}.png")
    raw = json.loads((world / "vqa_annotations_train.json").read_text())["annotations"]
    assert len(items) == len(raw)
    assert all(i.image.name == f"synth_{i.image_id:06d}.png" and i.image.is_file() for i in items)
    assert all(len(i.answers) == 10 for i in items)
    colour = [i for i in items if i.question_type == "what color is the"]
    assert colour and all(len(i.object_ids) == 1 for i in colour)
    with pytest.raises(FileNotFoundError, match="image pattern"):
        read_vqa(world / "vqa_questions_train.json", world / "vqa_annotations_train.json", world / "images")


def test_answer_vocabulary_is_the_top_k_answers(world: Path) -> None:
    items = read_vqa(world / "vqa_questions_train.json", world / "vqa_annotations_train.json",
                     world / "images", image_pattern="synth_{image_id:06d}.png")
    counts: dict[str, int] = {}
    for i in items:
        counts[i.multiple_choice_answer] = counts.get(i.multiple_choice_answer, 0) + 1
    expected = sorted(counts, key=lambda a: (-counts[a], a))
    assert answer_vocabulary(items, 5) == expected[:5]
    assert answer_vocabulary(items, 10_000) == expected
    kept = answer_vocabulary(items, 3)
    assert min(counts[a] for a in kept) >= max(counts[a] for a in counts if a not in kept)
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        answer_vocabulary(items, 0)


def test_priors_and_soft_targets_by_hand(tmp_path: Path) -> None:
    images = tmp_path / "i"
    images.mkdir()
    (images / "1.png").write_bytes(b"")
    rows = [("how many", "2"), ("how many", "2"), ("how many", "1"), ("what color", "red"),
            ("what color", "red"), ("is there", "yes"), ("is there", "yes"), ("is there", "yes")]
    q, a = _write_vqa(
        tmp_path,
        [{"question_id": k, "image_id": 1, "question": t} for k, (t, _) in enumerate(rows)],
        [{"question_id": k, "multiple_choice_answer": ans, "answers": _humans(*[ans] * 10), "question_type": t}
         for k, (t, ans) in enumerate(rows)],
    )
    items = read_vqa(q, a, images, image_pattern="{image_id}.png")
    prior = prior_accuracy(items, items)
    assert prior["most_common_answer"] == "yes"
    assert prior["most_common"] == pytest.approx(3 / 8)
    assert prior["per_question_type"] == pytest.approx(7 / 8)  # all but the "1"

    mixed = read_vqa(*_write_vqa(tmp_path, [{"question_id": 1, "image_id": 1, "question": "q"}],
                                 [{"question_id": 1, "multiple_choice_answer": "blue",
                                   "answers": _humans("red", "red", *["blue"] * 8)}]),
                     images, image_pattern="{image_id}.png")
    targets = soft_targets(mixed + items[:1], ["blue", "red", "green"])
    torch.testing.assert_close(targets[0], torch.tensor([1.0, 0.6, 0.0]) / 1.6)
    assert targets[1].sum() == 0  # "2" is not among the answers: no target
    logits = torch.tensor([[2.0, 1.0, 0.0], [5.0, -1.0, 0.0]])
    expected = -(targets[0] * torch.log_softmax(logits[0], 0)).sum()
    torch.testing.assert_close(soft_target_loss(logits, targets), expected)
