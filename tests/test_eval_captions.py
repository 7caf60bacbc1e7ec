"""Caption metrics and the pointing game's bookkeeping, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlcam.eval.captions import corpus_bleu, exact_match
from vlcam.eval.pointing import PointingItem, disc_grown, summarize


def test_bleu4_matches_a_hand_computation():
    hyp = ["a b c d e".split()]
    refs = [["a b c d f g".split()]]
    # precisions 4/5, 3/4, 2/3, 1/2; brevity penalty exp(1 - 6/5)
    expected = math.exp(1 - 6 / 5) * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert corpus_bleu(hyp, refs) == pytest.approx(expected, rel=1e-12)
    assert corpus_bleu([["x", "y"]], [[["x", "y"]]], max_n=2) == pytest.approx(1.0)


def test_bleu_clips_repeated_words_and_uses_the_closest_reference_length():
    hyp = [["the"] * 7]
    refs = [["the cat is on the mat".split(), "there is a cat on the mat".split()]]
    assert corpus_bleu(hyp, refs, max_n=1) == pytest.approx(2 / 7)  # "the" counts twice at most
    # closest reference length to 3 words is 4 (not 6): brevity exp(1 - 4/3)
    assert corpus_bleu([["a", "b", "c"]], [[["a", "b", "c", "d"], list("abcdef")]], max_n=1) == \
        pytest.approx(math.exp(1 - 4 / 3))


def test_exact_match_and_errors():
    assert exact_match([["a", "b"], ["c"]], [[["a", "b"]], [["d"], ["e"]]]) == 0.5
    with pytest.raises(ValueError, match="reference"):
        corpus_bleu([["a"]], [])


def test_tolerance_grows_the_mask_by_a_disc():
    mask = np.zeros((21, 21), bool)
    mask[10, 10] = True
    grown = disc_grown(mask, 3)
    assert grown[10, 13] and grown[13, 10] and not grown[13, 13]  # a disc, not a square
    assert grown.sum() == sum(1 for y in range(-3, 4) for x in range(-3, 4) if x * x + y * y <= 9)
    assert disc_grown(mask, 0) is mask


def test_summary_pools_hits_and_reports_baselines_per_category():
    def item(cat, hit, center, rate):
        return PointingItem(1, 1, 0, cat, 1 if cat == "ball" else 2, cat, (0, 0), hit, center, rate,
                            difficult=cat == "box")

    items = [item("ball", True, False, 0.1), item("ball", False, True, 0.3), item("box", True, False, 0.2)]
    s = summarize(items, {"not_annotated": 4})
    assert (s["hits"], s["misses"]) == (2, 1)
    assert s["accuracy"] == pytest.approx(2 / 3)
    assert s["per_category"] == {"ball": 0.5, "box": 1.0}
    assert s["mean_category_accuracy"] == pytest.approx(0.75)
    assert s["baselines"] == {"center": pytest.approx(1 / 3), "random": pytest.approx(0.2)}
    assert s["not_annotated"] == 4
    assert s["difficult"] == {"words": 1, "accuracy": 1.0, "mean_category_accuracy": 1.0, "center": 0.0}
