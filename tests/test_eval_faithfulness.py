"""Box ratio and occlusion-faithfulness runs of the shipped captioner on fresh scenes."""

from __future__ import annotations

import json

import pytest

import vlcam
from vlcam.data.synthetic import generate
from vlcam.data.wordmap import WordMap
from vlcam.demo import shipped_checkpoint
from vlcam.eval.faithfulness import run_box_ratio, run_caption_occlusion


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate(out, num_images=8, image_size=128, seed=55, val_fraction=1.0, workers=1)
    return out


@pytest.fixture(scope="module")
def model():
    return vlcam.load(shipped_checkpoint())


def test_region_phrases_light_up_their_boxes_and_runs_resume(model, world, tmp_path):
    summary = run_box_ratio(tmp_path / "a", model, world / "regions_val.json", world / "images")
    assert summary["regions"] == len(json.loads((world / "regions_val.json").read_text())["regions"])
    assert summary["mean_ratio"] > 1.5  # a uniform map scores 1.0
    run_box_ratio(tmp_path / "b", model, world / "regions_val.json", world / "images", limit=5)
    resumed = run_box_ratio(tmp_path / "b", model, world / "regions_val.json", world / "images")
    assert {k: v for k, v in resumed.items() if k != "items_per_second"} == \
        {k: v for k, v in summary.items() if k != "items_per_second"}


def test_occlusion_correlation_is_reported_for_gradcam_and_guided_backprop(model, world, tmp_path):
    summary = run_caption_occlusion(tmp_path / "occ", model, world / "captions_val.json", world / "images",
                                    WordMap.builtin("synthetic"), limit=12, patch=32, stride=16)
    assert summary["words"] > 0
    for method in ("gradcam", "guided_backprop"):
        assert -1.0 <= summary[method]["mean_rank_correlation"] <= 1.0
    assert summary["gradcam"]["mean_rank_correlation"] > 0  # Grad-CAM agrees with occlusion
