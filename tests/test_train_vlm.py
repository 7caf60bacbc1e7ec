"""The LLaVA-architecture VLM trainer: it learns, is reproducible, and what it saves loads and explains."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import vlcam
from vlcam.adapters.hf import LlavaVLM
from vlcam.cli import main
from vlcam.data.synthetic import generate

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]


def _train(world, out):
    argv = ["train", "vlm", "--captions", str(world / "captions_train.json"), "--questions",
            str(world / "vqa_questions_train.json"), "--annotations", str(world / "vqa_annotations_train.json"),
            "--images", str(world / "images"), "--out", str(out), "--image-size", "32", "--patch-size", "8",
            "--epochs", "3", "--batch-size", "8", "--lr", "2e-3", "--no-progress"]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def test_training_lowers_the_loss_and_saves_a_llava_folder_vlcam_loads(tmp_path):
    world = tmp_path / "world"
    generate(world, num_images=30, image_size=32, seed=3, val_fraction=0.2, workers=1)
    metrics = _train(world, tmp_path / "vlm")
    assert metrics["val_loss"][-1] < metrics["val_loss"][0] and metrics["train_loss"][-1] < metrics["train_loss"][0]
    assert metrics["train_images"] == 24 and metrics["best_val_loss"] == min(metrics["val_loss"])
    assert (tmp_path / "vlm" / "model.safetensors").is_file()
    model = vlcam.load(tmp_path / "vlm")
    assert isinstance(model, LlavaVLM)
    # The projector reads the second-to-last of the 5 vision blocks.
    assert model.default_layer == "model.model.vision_tower.encoder.layers.3"
    image = sorted((world / "images").iterdir())[0]
    e = vlcam.explain_caption(model, image, "a red circle")
    assert e.tokens == ["a", "red", "circle"] and e.word_maps.shape == (3, 32, 32)
    a = vlcam.explain_answer(model, image, "what color is the circle?", ["red", "blue"])
    assert a.maps.shape == (2, 32, 32) and float(a.probs.sum()) <= 1.0 + 1e-6
    # Same data, same seed, same machine: the same weights, bit for bit.
    _train(world, tmp_path / "again")
    first = load_file(tmp_path / "vlm" / "model.safetensors")
    second = load_file(tmp_path / "again" / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
