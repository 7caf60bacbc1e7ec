"""Object mentions in a captioner's own captions: hallucination (CHAIR), recall and colour,
counted by hand on captions written for the test."""

from __future__ import annotations

import pytest

from vlcam.data.coco import load_coco
from vlcam.data.synthetic import generate
from vlcam.data.wordmap import WordMap
from vlcam.eval.mentions import ImageObjects, color_vocabulary, image_objects, object_mentions
from vlcam.text import tokenize

COLORS = frozenset({"red", "blue", "yellow"})
# Image 0: a red ball and a blue box; image 1: a yellow moon.
IMAGES = [ImageObjects({1: frozenset({"red"}), 2: frozenset({"blue"})}), ImageObjects({8: frozenset({"yellow"})})]


def _score(captions: list[str]) -> dict:
    return object_mentions([tokenize(c) for c in captions], IMAGES, WordMap.builtin("synthetic"), COLORS)


def test_a_caption_that_names_what_is_there_in_its_colours_scores_one() -> None:
    result = _score(["a red ball and a blue box.", "a yellow moon at the top."])
    assert result["precision"] == 1.0 and result["recall"] == 1.0 and result["color_accuracy"] == 1.0
    assert result["chair_i"] == 0.0 and result["chair_s"] == 0.0


def test_hallucinated_objects_missed_objects_and_wrong_colours_are_counted() -> None:
    # The example: three moons, two of them said yellow, for an image without a moon.
    result = _score(["a yellow moon a red moon and a yellow moon", "two large yellow crescents and a star"])
    assert result["mentions"] == 5 and result["hallucinated"] == 4
    assert result["precision"] == pytest.approx(1 / 5)
    assert result["chair_s"] == 1.0
    assert (result["categories_present"], result["categories_named"]) == (3, 1)
    assert result["recall"] == pytest.approx(1 / 3)
    # Colours count for objects that are there: "two large yellow" crescents in image 1, right.
    assert (result["colored_mentions"], result["color_correct"]) == (1, 1)
    wrong = _score(["a blue ball and a red box.", "a moon."])
    assert (wrong["colored_mentions"], wrong["color_correct"], wrong["precision"]) == (2, 0, 1.0)


def test_a_mention_without_a_colour_is_not_a_colour_mention() -> None:
    result = _score(["a ball and a box.", "a picture of a moon."])
    assert result["colored_mentions"] == 0 and result["color_accuracy"] is None
    assert result["precision"] == 1.0


def test_one_caption_per_image_is_required() -> None:
    with pytest.raises(ValueError, match="one caption per image"):
        _score(["a ball"])


def test_the_built_in_worlds_instances_give_categories_and_colours(tmp_path) -> None:
    generate(tmp_path, 4, image_size=64, seed=2, workers=1, val_fraction=0.5)
    instances = load_coco(tmp_path / "instances_train.json")
    for image_id in instances.getImgIds():
        objects = image_objects(instances, image_id)
        anns = instances.loadAnns(instances.getAnnIds(imgIds=[image_id]))
        assert set(objects.colors) == {a["category_id"] for a in anns}
        assert all(a["color"] in objects.colors[a["category_id"]] for a in anns)
    assert color_vocabulary(instances) <= {"red", "green", "blue", "yellow", "purple", "orange", "white"}


def test_border_share_of_peaks_and_of_object_pixels() -> None:
    import numpy as np

    from vlcam.eval.pointing import BORDER_PX, border_fields, pointing_scores

    mask = np.zeros((32, 32), dtype=bool)
    mask[0:8, 10:14] = True  # 32 pixels, the BORDER_PX top rows of it at the border
    corner = border_fields(mask, (31, 0))
    inside = border_fields(mask, (6, 12))
    assert corner == {"peak_at_border": True, "mask_border_share": BORDER_PX * 4 / 32}
    assert inside["peak_at_border"] is False
    words = [{"category": "ball", "hit": False, "center_hit": False, "random_hit_rate": 0.1, **corner},
             {"category": "ball", "hit": True, "center_hit": False, "random_hit_rate": 0.1, **inside}]
    border = pointing_scores(words)["border"]
    assert border["peaks"] == 0.5 and border["object_pixels"] == 0.5 and border["ratio"] == 1.0
