"""The ViT + GPT-2 captioner trainer: it learns, and what it saves loads and explains."""

from __future__ import annotations

import json

import pytest
import torch

import vlcam
from vlcam.adapters.hf import VisionEncoderDecoderCaptioner
from vlcam.data.synthetic import generate

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]


def test_training_lowers_the_loss_and_saves_a_folder_vlcam_loads(tmp_path):
    import runpy

    world = tmp_path / "world"
    generate(world, num_images=40, image_size=32, seed=3, val_fraction=0.2, workers=1)
    out = tmp_path / "vit_gpt2"
    argv = ["--captions", str(world / "captions_train.json"), "--images", str(world / "images"),
            "--out", str(out), "--image-size", "32", "--width", "32", "--layers", "1", "--epochs", "4",
            "--batch-size", "8", "--lr", "3e-3", "--no-progress"]
    module = runpy.run_path("scripts/train_hf_captioner.py")
    assert module["main"](argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_loss"][-1] < metrics["val_loss"][0] and metrics["train_loss"][-1] < metrics["train_loss"][0]
    assert metrics["train_images"] == 32 and metrics["best_val_loss"] == min(metrics["val_loss"])
    model = vlcam.load(out)
    assert isinstance(model, VisionEncoderDecoderCaptioner)
    image = sorted((world / "images").iterdir())[0]
    e = vlcam.explain_caption(model, image, "a red circle")
    assert e.tokens == ["a", "red", "circle"] and e.word_maps.shape == (3, 32, 32)
    assert torch.isfinite(e.token_logprobs).all()
