"""What the trainers add around the models: augmentation that keeps the words true (a mirrored
image's captions and questions say right where they said left), the concept targets of the
auxiliary loss, and the learning-rate rule."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from vlcam.text import Vocabulary
from vlcam.train._augment import MAX_SHIFT_FRACTION, augment_images, mirror_ids
from vlcam.train._concepts import Concepts, answer_codes, caption_codes, frequent_codes
from vlcam.train._runstate import plateau_lr
from vlcam.train._spread import spread_loss
from vlcam.train.vqa import _Mirror


def test_mirroring_swaps_left_and_right_and_nothing_else() -> None:
    vocab = Vocabulary("a ball left of the box on right".split())
    table = mirror_ids(vocab)
    ids = vocab.encode("a ball left of the box on the right", add_special=True)
    mirrored = [vocab.words[i] for i in table[torch.tensor(ids)].tolist()]
    assert mirrored == ["<start>", *"a ball right of the box on the left".split(), "<end>"]


def test_each_image_is_a_shifted_crop_of_itself_or_of_its_mirror_image() -> None:
    images = torch.randn(16, 3, 40, 40)
    out, mirrored = augment_images(images, torch.Generator().manual_seed(3))
    pad = round(MAX_SHIFT_FRACTION * 40)
    assert out.shape == images.shape and 0 < int(mirrored.sum()) < 16
    for image, result, flip in zip(images, out, mirrored.tolist()):
        source = F.pad((image.flip(-1) if flip else image)[None], (pad,) * 4, mode="replicate")[0]
        crops = [source[:, dy:dy + 40, dx:dx + 40] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
        assert any(torch.equal(result, crop) for crop in crops)


def test_the_same_generator_seed_augments_the_same_way() -> None:
    images = torch.randn(8, 3, 24, 24)
    a = augment_images(images, torch.Generator().manual_seed(5))
    b = augment_images(images, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_vqa_mirroring_swaps_question_words_and_answer_columns_of_mirrored_images_only() -> None:
    vocab = Vocabulary("what is left of the ball right".split())
    answers = ["left", "box", "right"]
    mirror = _Mirror(vocab, answers, "cpu")
    questions = torch.tensor([vocab.encode("what is left of the ball", add_special=False)] * 8)
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]] * 4)
    images = torch.randn(8, 3, 16, 16)
    flips = augment_images(images, torch.Generator().manual_seed(0))[1]
    assert 0 < int(flips.sum()) < 8
    _, q, t, flipped = mirror(images, questions, torch.arange(8), targets, torch.Generator().manual_seed(0))
    assert torch.equal(flipped, flips)
    for row in range(8):
        assert vocab.words[int(q[row, 2])] == ("right" if flips[row] else "left")
        assert vocab.words[int(q[row, 5])] == "ball"
        assert torch.equal(t[row], targets[row, [2, 1, 0]] if flips[row] else targets[row])


def test_the_learning_rate_halves_per_half_patience_without_improvement() -> None:
    assert plateau_lr(1e-3, [], 6) == 1e-3
    assert plateau_lr(1e-3, [3.0, 2.0, 1.0], 6) == 1e-3
    assert plateau_lr(1e-3, [3.0, 2.0, 2.5, 2.1], 6) == 1e-3  # two without improvement: not yet three
    assert plateau_lr(1e-3, [3.0, 2.0, 2.5, 2.1, 2.2], 6) == 0.5e-3
    assert plateau_lr(1e-3, [3.0, 2.0, 2.5, 2.1, 2.2, 1.9, 2.0, 2.0, 2.0], 6) == 0.25e-3


def test_a_captions_concepts_are_its_words_and_adjacent_pairs_and_each_image_gets_its_captions() -> None:
    vocab = Vocabulary("a red ball blue box".split())
    captions = ["a red ball", "a blue box", "a red box"]
    tokens = torch.tensor([vocab.encode(c) for c in captions])
    codes = caption_codes(tokens, len(vocab))
    known = frequent_codes([codes[:2]], 1)  # the first two captions only: "red box" is unseen
    concepts = Concepts(known, features=3)

    def names(code: int) -> str:
        if code < len(vocab):
            return vocab.words[code]
        a, b = divmod(code - len(vocab), len(vocab))
        return f"{vocab.words[a]} {vocab.words[b]}"

    assert sorted(map(names, known)) == sorted(["a", "red", "ball", "blue", "box",
                                                "a red", "red ball", "a blue", "blue box"])
    targets = concepts.targets(codes, owner=torch.tensor([0, 1, 1]), images=2)
    on = [{names(int(c)) for c, t in zip(concepts.codes, row) if t} for row in targets]
    assert on[0] == {"a", "red", "ball", "a red", "red ball"}
    assert on[1] == {"a", "blue", "box", "red", "a blue", "blue box", "a red"}  # not "red box": unknown


def test_a_questions_concepts_are_its_answer_and_each_word_answer_pair() -> None:
    vocab = Vocabulary("what color is the ball".split())
    questions = torch.tensor([vocab.encode("what color is the ball", add_special=False)])
    codes = answer_codes(questions, torch.tensor([3]), len(vocab)).tolist()[0]
    assert codes[0] == 3
    pairs = [divmod(c - 2**20, len(vocab)) for c in codes[1:]]
    assert pairs == [(3, vocab.words.index(w)) for w in "what color is the ball".split()]
    none = answer_codes(questions, torch.tensor([-1]), len(vocab))
    assert (none == -1).all()  # an answer outside the vocabulary gives no concept


def test_categories_and_their_attributes_are_read_off_the_instances() -> None:
    from vlcam.train._concepts import Categories

    instances = {"annotations": [
        {"id": 1, "image_id": 7, "category_id": 2, "bbox": [0, 0, 1, 1], "color": "red", "size": "small"},
        {"id": 2, "image_id": 7, "category_id": 5, "bbox": [0, 0, 1, 1], "color": "blue"},
        {"id": 3, "image_id": 8, "category_id": 2, "bbox": [0, 0, 1, 1], "color": "blue"},
    ]}
    categories = Categories(instances)
    targets = categories.targets(torch.tensor([7, 8, 9]))

    def on(row: int) -> set:
        return {label for label, k in categories.column.items() if targets[row, k]}

    assert on(0) == {(2,), (2, "color", "red"), (2, "size", "small"), (5,), (5, "color", "blue")}
    assert on(1) == {(2,), (2, "color", "blue")}
    assert on(2) == set()  # an image without instances


def test_the_instances_beside_a_training_file_are_found_and_others_are_not_guessed(tmp_path) -> None:
    from vlcam.train._concepts import sibling_instances

    (tmp_path / "instances_train.json").write_text("{}")
    assert sibling_instances(tmp_path / "captions_train.json", "captions_train.json", None) == \
        tmp_path / "instances_train.json"
    assert sibling_instances(tmp_path / "my_captions.json", "captions_train.json", None) is None
    assert sibling_instances(tmp_path / "my_captions.json", "captions_train.json", "x.json") == Path("x.json")


def test_the_spread_loss_is_a_features_mean_over_its_peak_whatever_its_scale() -> None:
    one_place = torch.zeros(2, 3, 4, 4)
    one_place[:, :, 1, 2] = 5.0
    everywhere = torch.full((2, 3, 4, 4), 0.7)
    half = torch.zeros(1, 1, 4, 4)
    half[..., :2, :] = 2.0
    assert abs(spread_loss(one_place).item() - 1 / 16) < 1e-6
    assert abs(spread_loss(everywhere).item() - 1.0) < 1e-5
    assert abs(spread_loss(half).item() - 0.5) < 1e-6
    assert abs(spread_loss(half * 100).item() - spread_loss(half).item()) < 1e-6
    # Its gradient lowers the feature away from its peak and raises the peak.
    x = (half + 0.5).requires_grad_(True)
    spread_loss(x).backward()
    assert x.grad is not None and float(x.grad[0, 0, 3, 0]) > 0 > float(x.grad[0, 0, 0, 0])
