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


def test_answer_occlusion_run_scores_each_question_and_records_missing_images(tmp_path):
    import torch

    from vlcam.adapters.vqa_lstm_cnn import VQALSTMCNN
    from vlcam.eval.faithfulness import run_answer_occlusion
    from vlcam.text import Vocabulary

    world = tmp_path / "w"
    generate(world, num_images=3, image_size=64, seed=8, val_fraction=1.0, workers=1)
    (world / "images" / "synth_000003.png").unlink()
    data = json.loads((world / "vqa_questions_val.json").read_text())
    missing = sum(q["image_id"] == 3 for q in data["questions"])
    torch.manual_seed(0)
    vocab = Vocabulary.from_captions([q["question"] for q in data["questions"]], min_count=1)
    model = VQALSTMCNN(vocab, ["yes", "no", "red", "1"], image_size=64)
    summary = run_answer_occlusion(tmp_path / "occ", model, world / "vqa_questions_val.json", world / "images",
                                   image_pattern="synth_{image_id:06d}.png", patch=16, stride=16)
    assert summary["questions"] == len(data["questions"])
    assert summary["skipped"] == {"missing image": missing} and summary["scored"] == len(data["questions"]) - missing
    for method in ("gradcam", "guided_backprop"):
        assert -1.0 <= summary[method]["mean_rank_correlation"] <= 1.0
