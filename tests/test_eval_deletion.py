"""Deletion and insertion curves: a map that finds the evidence beats a random order, the curves
end where they should, each is a few batched forwards, and runs resume and leave models as given."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import vlcam
from tiny_adapters import build
from vlcam.adapters.protocol import CaptionerBase
from vlcam.data.wordmap import WordMap
from vlcam.eval.deletion import (
    METHODS,
    RANDOM,
    auc,
    blurred,
    curve,
    random_order,
    run_deletion,
    target_curves,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 32


class Region(nn.Module):
    """Two channels: the squared image inside the top-left quarter, and outside it."""

    def __init__(self) -> None:
        super().__init__()
        inside = torch.zeros(1, 1, SIDE, SIDE)
        inside[..., : SIDE // 2, : SIDE // 2] = 1
        self.register_buffer("inside", inside)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = x.pow(2).mean(dim=1, keepdim=True)
        return torch.cat([energy * self.inside, energy * (1 - self.inside)], dim=1)


class RegionCaptioner(CaptionerBase):
    """Every word's log-probability grows with the fine texture of the top-left quarter only."""

    default_layer = "region"
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)
    image_size = SIDE

    def __init__(self) -> None:
        super().__init__()
        self.region = Region()

    def preprocess(self, images: object) -> torch.Tensor:
        assert isinstance(images, torch.Tensor)
        return images if images.dim() == 4 else images[None]

    def encode_caption(self, caption: str) -> tuple[list[str], tuple[torch.Tensor, ...]]:
        return caption.split(), ()

    def word_logprobs(self, images: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        evidence = self.region(images)[:, 0].sum(dim=(1, 2)) / (SIDE // 2) ** 2
        return nn.functional.logsigmoid(8 * evidence - 4)[:, None].expand(-1, 4)  # 3 words, then <end>

    def caption(self, images: object, *, beam_size: int = 1) -> list[str]:
        return ["a red ball"]

    def known_words(self) -> Sequence[str]:
        return ["a", "red", "ball"]


def checkerboard() -> torch.Tensor:
    """A +-1 checkerboard: fine texture everywhere, which the blurred baseline wipes out."""
    rows, cols = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    return (((rows + cols) % 2) * 2 - 1).float().expand(1, 3, SIDE, SIDE).clone()


@pytest.fixture(scope="module")
def region_explanation():
    model = RegionCaptioner().eval()
    return vlcam.explain_caption(model, checkerboard(), "a red ball", words=[1])


def test_gradcam_deletes_faster_and_inserts_faster_than_a_random_order(region_explanation):
    e = region_explanation
    assert e.maps[1][: SIDE // 2, : SIDE // 2].min() > 0 and e.maps[1][SIDE // 2:].max() == 0  # the region found
    result = target_curves(e, 1, {"gradcam": e.maps[1]}, seed=(0,), steps=16, batch_size=8, sigma=2.0)
    gradcam, chance = result["auc"]["gradcam"], result["auc"][RANDOM]
    assert result["score"] > 0.9 and result["baseline_score"] < 0.1
    # Removing the quarter first leaves the word near its baseline after a quarter of the pixels.
    assert gradcam["deletion"] < 0.35 < chance["deletion"]
    assert gradcam["insertion"] > 0.8 > chance["insertion"]
    curves = result["curves"]["gradcam"]
    assert curves["deletion"][4] < 0.1 and curves["insertion"][4] > 0.9  # 4 of 16 steps = the quarter


def test_curves_start_at_the_explained_score_and_end_at_the_baseline_score(region_explanation):
    e = region_explanation
    baseline = blurred(e.images, 2.0)
    order = random_order(SIDE * SIDE, (3,))
    own, base = e.scores()[0, 1], e.scores(baseline)[0, 1]
    assert float(own) > float(base) + 1  # a log-probability far from its baseline's

    def word(images: torch.Tensor) -> torch.Tensor:
        return e.scores(images)[:, 1]

    deletion = curve(word, e.images, baseline, order, steps=7, batch_size=3)
    insertion = curve(word, e.images, baseline, order, steps=7, batch_size=3, insertion=True)
    torch.testing.assert_close(deletion[0], own, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(deletion[-1], base, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(insertion[0], base, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(insertion[-1], own, rtol=1e-5, atol=1e-6)
    # Normalised: probabilities, whose trapezoid area over [0, 1] is what auc gives.
    result = target_curves(e, 1, {}, seed=(3,), steps=7, batch_size=3, sigma=2.0)
    assert result["curves"][RANDOM]["deletion"][0] == pytest.approx(float(own.exp()), rel=1e-5)
    assert result["baseline_score"] == pytest.approx(float(base.exp()), rel=1e-5)
    assert auc([1.0] * 8, SIDE * SIDE) == pytest.approx(1.0) and auc([0.0, 1.0], 4) == pytest.approx(0.5)


@pytest.mark.parametrize(("steps", "batch_size"), [(10, 4), (10, 11), (10, 64), (20, 7)])
def test_each_curve_is_ceil_of_steps_plus_one_over_batch_size_forwards(region_explanation, steps, batch_size):
    e = region_explanation
    calls: list[int] = []

    def word(images: torch.Tensor) -> torch.Tensor:
        calls.append(images.shape[0])
        return e.scores(images)[:, 1]

    curve(word, e.images, blurred(e.images, 2.0), random_order(SIDE * SIDE, (0,)), steps=steps,
          batch_size=batch_size)
    assert len(calls) == math.ceil((steps + 1) / batch_size) and sum(calls) == steps + 1
    # Through an explanation: 2 curves per map and for the random order, nothing else.
    forwards: list[int] = []
    scores = e.scores

    def counted(images: torch.Tensor | None = None) -> torch.Tensor:
        forwards.append(0 if images is None else images.shape[0])
        return scores(images)

    e.scores = counted  # type: ignore[method-assign]
    try:
        target_curves(e, 1, {"gradcam": e.maps[1]}, seed=(0,), steps=steps, batch_size=batch_size, sigma=2.0)
    finally:
        del e.scores
    assert len(forwards) == 4 * math.ceil((steps + 1) / batch_size)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlcam.data.synthetic import generate

    out = tmp_path_factory.mktemp("deletion") / "world"
    generate(out, num_images=3, image_size=64, seed=5, val_fraction=1.0, workers=1)
    return out


def snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[bool]]:
    return copy.deepcopy(model.state_dict()), [m.training for m in model.modules()]


def assert_unchanged(model: nn.Module, before: tuple[dict[str, torch.Tensor], list[bool]]) -> None:
    state, modes = before
    after = model.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], state[k]) for k in state)
    assert [m.training for m in model.modules()] == modes


SETTINGS = {"steps": 6, "batch_size": 16, "patch": 32, "stride": 32, "num_workers": 0, "progress": False}


def without_speed(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "items_per_second"}


def test_caption_run_resumes_to_the_same_summary_and_leaves_the_model_as_given(world, tmp_path):
    model = build("show_and_tell", world, tmp_path)
    model.train()  # given in train mode: comes back in train mode
    before = snapshot(model)
    captions, images, words = world / "captions_val.json", world / "images", WordMap.from_file(world / "word_map.json")
    full = run_deletion(tmp_path / "full", model, captions, images, words, limit=3, **SETTINGS)
    assert_unchanged(model, before)
    assert full["words"] > 0 and full["captions"] == 3
    for method in (*METHODS, RANDOM):
        for mode in ("deletion", "insertion"):
            assert 0 <= full[method][mode]["mean_auc"] <= 1  # probabilities over [0, 1]
    assert full["score"].startswith("the word's probability") and (tmp_path / "full" / "deletion.png").is_file()
    run_deletion(tmp_path / "part", model, captions, images, words, limit=1, **SETTINGS)
    resumed = run_deletion(tmp_path / "part", model, captions, images, words, limit=3, **SETTINGS)
    assert without_speed(resumed) == without_speed(full)


def test_answer_run_on_a_hugging_face_vqa_model_leaves_it_as_given(world, tmp_path):
    model = build("vilt_vqa", world, tmp_path)
    before = snapshot(model)
    questions = world / "vqa_questions_val.json"
    data = json.loads(questions.read_text())
    data["questions"] = sorted(data["questions"], key=lambda q: q["question_id"])[:2]
    questions = tmp_path / "questions.json"
    questions.write_text(json.dumps(data))
    summary = run_deletion(tmp_path / "vqa", model, questions, world / "images",
                           image_pattern="synth_{image_id:06d}.png", **SETTINGS)
    assert_unchanged(model, before)
    assert summary["questions"] == 2 and summary["answers"] == 2 and summary["skipped"] == {}
    record = json.loads((tmp_path / "vqa" / "items.jsonl").read_text().splitlines()[0])["targets"][0]
    assert set(record["auc"]) == {*METHODS, RANDOM} and len(record["curves"]["gradcam"]["deletion"]) == 7
    assert np.isfinite([summary[m][mode]["mean_auc"] for m in (*METHODS, RANDOM)
                        for mode in ("deletion", "insertion")]).all()
