"""The model-randomisation sanity check (Adebayo et al. 2018) on tiny models of a tiny world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vlcam
from tiny_adapters import build
from vlcam.eval.occlusion import rank_correlation
from vlcam.eval.sanity import METHODS, RandomisedModel, model_blocks, run_sanity

pytestmark = pytest.mark.usefixtures("one_thread")
PATTERN = "synth_{image_id:06d}.png"
LIMIT = 3


@pytest.fixture(scope="module")
def world(tiny_world: Path) -> Path:
    return tiny_world


@pytest.fixture(scope="module")
def models(world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.nn.Module]:
    tmp = tmp_path_factory.mktemp("models")
    return {name: build(name, world, tmp) for name in ("show_and_tell", "vqa_lstm_cnn", "vit_gpt2")}


@pytest.fixture(scope="module")
def whole(models, world, tmp_path_factory):
    """An uninterrupted run of the tiny Show-and-Tell over the first three captions."""
    return caption_run(models["show_and_tell"], world, tmp_path_factory.mktemp("whole"), limit=LIMIT)


def without_speed(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "items_per_second"}


def caption_run(model, world, out, **kw):
    return run_sanity(out, model, world / "captions_val.json", world / "images", num_workers=0, **kw)


def test_show_and_tell_blocks_run_from_the_output_down_to_the_first_encoder_block(models, world):
    model = models["show_and_tell"]
    caption = json.loads((world / "captions_val.json").read_text())["annotations"][0]["caption"]
    inputs = model.encode_caption(caption)[1]
    x = torch.zeros(1, 3, 64, 64)
    blocks = model_blocks(model, lambda: model.word_logprobs(x, *inputs), model.default_layer)
    encoder = [n for n, _ in model.encoder.body.named_children() if n]
    top, explained = ["classifier", "lstm", "word_embed", "image_embed"], model.default_layer
    assert blocks[:4] == top and blocks[4] == explained
    assert set(blocks[4:]) <= {f"encoder.body.{n}" for n in encoder} and len(blocks) > 5


def test_every_method_agrees_exactly_with_itself_before_any_block_is_randomised(models, world, whole, tmp_path):
    for name, run in (("show_and_tell", lambda m, out: whole),
                      ("vit_gpt2", lambda m, out: caption_run(m, world, out, limit=2)),
                      ("vqa_lstm_cnn", lambda m, out: run_sanity(
                          out, m, questions_json=world / "vqa_questions_val.json", images_dir=world / "images",
                          image_pattern=PATTERN, limit=2, num_workers=0))):
        summary = run(models[name], tmp_path / name)
        assert summary["targets"] > 0 and summary["methods"] == list(METHODS), name
        for method in METHODS:
            first = summary["cascading"][method][0]
            assert first["randomised"] == "none"
            assert first["spearman"]["mean"] == pytest.approx(1.0, abs=1e-9), (name, method)
            assert first["ssim"]["mean"] == pytest.approx(1.0, abs=1e-9), (name, method)
            assert len(summary["cascading"][method]) == len(summary["blocks"]) + 1
            assert [p["randomised"] for p in summary["independent"][method]] == summary["blocks"]
            for point in summary["cascading"][method] + summary["independent"][method]:
                assert -1.0 <= point["spearman"]["mean"] <= 1.0 + 1e-9 and point["ssim"]["mean"] <= 1.0 + 1e-9
    for folder in (tmp_path / "vit_gpt2", tmp_path / "vqa_lstm_cnn"):
        assert (folder / "sanity.png").stat().st_size > 10_000


def test_randomising_the_top_block_changes_the_gradcam_map(models, world):
    model = models["show_and_tell"]
    caption = json.loads((world / "captions_val.json").read_text())["annotations"][0]["caption"]
    x = model.preprocess(sorted((world / "images").glob("*.png"))[0])
    trained = vlcam.explain_caption(model, x, caption).word_maps
    randomised = RandomisedModel(model, ["classifier"], seed=0)
    after = vlcam.explain_caption(randomised.set(["classifier"]), x, caption).word_maps
    assert max(rank_correlation(a, b) for a, b in zip(trained, after)) < 0.99
    # Back to trained weights, the copy explains exactly as the model does.
    torch.testing.assert_close(vlcam.explain_caption(randomised.set([]), x, caption).word_maps, trained,
                               rtol=0, atol=0)


def test_the_callers_model_is_unchanged_and_an_interrupted_run_resumes_to_the_same_summary(
        models, world, whole, tmp_path):
    model = models["show_and_tell"].train()
    model.word_embed.weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    try:
        caption_run(model, world, tmp_path / "resumed", limit=1, plot=False)
        resumed = caption_run(model, world, tmp_path / "resumed", limit=LIMIT, plot=False)
        state_after = model.state_dict()
        assert state_after.keys() == state.keys()
        assert all(torch.equal(state[k], v) and state[k].dtype == v.dtype for k, v in state_after.items())
        assert [m.training for m in model.modules()] == modes
        assert [p.requires_grad for p in model.parameters()] == grads
        assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    finally:
        model.eval()
        model.word_embed.weight.requires_grad_(True)
    assert without_speed(resumed) == without_speed(whole) and whole["captions"] == LIMIT
    # Cascading randomisation makes Grad-CAM forget the trained map, on average.
    assert whole["cascading"]["gradcam"][-1]["spearman"]["mean"] < 0.9
