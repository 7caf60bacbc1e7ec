"""The COCO caption metrics and the pointing game's bookkeeping, against hand computations."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from vlcam.eval.captions import METEOR_WITHOUT_JAVA, VLCAM_TOKENIZER, caption_quality, caption_scores, exact_match
from vlcam.eval.pointing import PointingItem, disc_grown, summarize

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and the PTB tokenizer need java")


def test_bleu4_matches_a_hand_computation():
    scores = caption_scores(["a b c d e"], [["a b c d f g"]])
    # precisions 4/5, 3/4, 2/3, 1/2; brevity penalty exp(1 - 6/5)
    expected = math.exp(1 - 6 / 5) * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert scores["bleu4"] == pytest.approx(expected, rel=1e-6)
    assert scores["bleu1"] == pytest.approx(math.exp(1 - 6 / 5) * 4 / 5, rel=1e-6)


def test_cider_d_matches_a_hand_computation():
    # Two images, one reference each. Every n-gram occurs in the references of one image of
    # two, so its idf is log(2 / 1) and cancels in the cosines. The n-gram vectors weigh each
    # n-gram by its count (tf) times the idf, as the reference implementation does.
    scores = caption_scores(["a a b b", "d e"], [["a b c"], ["d e"]])
    # Image 1, unigrams: hyp (a: 2, b: 2), ref (a: 1, b: 1, c: 1); clipped dot min(2, 1) * 1 * 2 = 2
    # (4 unclipped), norms sqrt(8) and sqrt(3). Bigrams: hyp {aa, ab, bb}, ref {ab, bc}: 1 / (sqrt(3) sqrt(2)).
    # No shared 3- or 4-grams. Lengths 4 and 3: Gaussian penalty exp(-1 / (2 * 6^2)).
    image1 = 10 * math.exp(-1 / 72) * (2 / math.sqrt(24) + 1 / math.sqrt(6) + 0 + 0) / 4
    image2 = 10 * (1 + 1 + 0 + 0) / 4  # identical: unigram and bigram cosines 1, no 3- or 4-grams
    assert scores["cider"] == pytest.approx((image1 + image2) / 2, rel=1e-9)


def test_rouge_l_matches_a_hand_lcs():
    scores = caption_scores(["a b c d"], [["a c d e f", "b d"]])
    # LCS "a c d" (3) with the first reference, "b d" (2) with the second. The best precision
    # (3/4) and the best recall (2/2) are taken over the references separately; beta = 1.2.
    precision, recall, beta2 = 3 / 4, 1.0, 1.2**2
    expected = (1 + beta2) * precision * recall / (recall + beta2 * precision)
    assert scores["rouge_l"] == pytest.approx(expected, rel=1e-12)


def test_without_java_meteor_is_skipped_with_a_reason_and_vlcam_tokenizes(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd == "java" else real_which(cmd, *a, **k))
    scores = caption_scores(["A red ball.", "a blue box"], [["a red ball"], ["the blue box", "a box"]])
    assert scores["meteor"] is None and scores["meteor_skipped"] == METEOR_WITHOUT_JAVA
    assert scores["tokenizer"] == VLCAM_TOKENIZER
    assert scores["exact_match"] == 0.5  # "A red ball." is "a red ball" once lowercased and without the stop
    assert scores["rouge_l"] == pytest.approx((1 + (1 + 1.44) * (2 / 3) / (1 + 1.44 * 2 / 3)) / 2)


@needs_java
def test_meteor_rewards_the_right_caption():
    right = caption_scores(["a red ball on the left"], [["a red ball on the left", "a ball"]])
    wrong = caption_scores(["two green stars"], [["a red ball on the left", "a ball"]])
    assert right["meteor_skipped"] is None and wrong["meteor"] == 0.0
    assert 0.9 < right["meteor"] <= 1.0


class _FixedCaptioner:
    """Captions image i with the i-th of `captions`; records the protocol calls it gets."""

    def __init__(self, captions):
        self.captions, self.calls = list(captions), []

    def preprocess(self, images):
        self.calls.append(("preprocess", [p.name for p in images]))
        return list(images)

    def caption(self, images, *, beam_size=1):
        self.calls.append(("caption", beam_size))
        return [self.captions[int(p.stem)] for p in images]


def test_caption_quality_scores_the_models_captions_and_the_most_frequent_caption(tmp_path):
    refs = [["a red ball", "a ball"], ["a blue box"], ["two green stars", "green stars"]]
    coco = {"images": [{"id": i, "file_name": f"{i}.png"} for i in range(3)],
            "annotations": [{"id": 10 * i + j, "image_id": i, "caption": c}
                            for i, rs in enumerate(refs) for j, c in enumerate(rs)]}
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    model = _FixedCaptioner(["a red ball", "a red box", "green stars"])
    report = caption_quality(model, tmp_path / "captions.json", tmp_path, batch_size=2, beam_size=3,
                             baseline_captions=["A blue box.", "a ball", "a blue box"])
    assert model.calls == [("preprocess", ["0.png", "1.png"]), ("caption", 3), ("preprocess", ["2.png"]),
                           ("caption", 3)]
    assert report["images"] == 3 and report["most_frequent_caption"] == "a blue box"
    assert report["model"] == caption_scores(model.captions, refs)
    assert report["baseline_most_frequent"] == caption_scores(["a blue box"] * 3, refs)
    assert next(iter(report["model"])) == "cider"


def test_exact_match_and_errors():
    assert exact_match([["a", "b"], ["c"]], [[["a", "b"]], [["d"], ["e"]]]) == 0.5
    with pytest.raises(ValueError, match="reference"):
        caption_scores(["a"], [])
    with pytest.raises(ValueError, match="image 1 has none"):
        caption_scores(["a", "b"], [["a"], []])


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
                            difficult=cat == "box", peak_at_border=False, mask_border_share=0.0)

    items = [item("ball", True, False, 0.1), item("ball", False, True, 0.3), item("box", True, False, 0.2)]
    s = summarize(items, {"not_annotated": 4})
    assert (s["hits"], s["misses"]) == (2, 1)
    assert s["accuracy"] == pytest.approx(2 / 3)
    assert s["per_category"] == {"ball": 0.5, "box": 1.0}
    assert s["mean_category_accuracy"] == pytest.approx(0.75)
    assert s["baselines"] == {"center": pytest.approx(1 / 3), "random": pytest.approx(0.2)}
    assert s["not_annotated"] == 4
    assert s["difficult"] == {"words": 1, "accuracy": 1.0, "mean_category_accuracy": 1.0, "center": 0.0}
