"""explain_caption: exact per-word maps from one pass, clear errors, an untouched model."""

from __future__ import annotations

import html
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import vlcam
from image_strategies import images
from vlcam.adapters.show_and_tell import ShowAndTell
from vlcam.text import Vocabulary

CAPTIONS = [
    "a red ball beside a blue box",
    "two green stars above a yellow crate",
    "a small purple ring left of a large orange triangle",
    "there is a white heart next to a cross",
]
CAPTION = "a red ball beside a blue box"


@pytest.fixture(scope="module", params=["first", "every", "gated"])
def model(request):
    """The image enters the LSTM before the first word, beside every word, or beside and times
    every word: all are exact."""
    torch.manual_seed(0)
    vocab = Vocabulary.from_captions(CAPTIONS * 3, min_count=1)
    return ShowAndTell(vocab, "compact", embed_dim=32, hidden_dim=48, image_size=64, image_input=request.param).eval()


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(48, 72, 3), dtype=np.uint8)


def manual_maps(model, image, caption, word_indices, counterfactual=False):
    """Grad-CAM by hand: encoder map, autograd to it, Eq. 1 and 2, resize to the image."""
    x, _ = vlcam.image.preprocess(image, model.image_size, model.mean, model.std)
    tokens = model.encode_captions([caption])
    with torch.no_grad():
        conv = model.encode(x)
    conv.requires_grad_(True)
    logprobs = model.token_logprobs_from_conv(conv, tokens) if hasattr(model, "token_logprobs_from_conv") \
        else _logprobs(model, conv, tokens)
    scores = [logprobs[0].sum()] + [logprobs[0, i] for i in word_indices]
    maps = []
    for score in scores:
        (grad,) = torch.autograd.grad(score, conv, retain_graph=True)
        alpha = grad.mean(dim=(2, 3), keepdim=True)
        alpha = -alpha if counterfactual else alpha
        maps.append(torch.relu((alpha * conv.detach()).sum(1)))
    maps = torch.cat(maps)[None]
    return torch.nn.functional.interpolate(maps, size=image.shape[:2], mode="bilinear", align_corners=False)[0]


def _logprobs(model, conv, tokens):
    logits = model.decode(conv, tokens)
    picked = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None])[..., 0]
    return picked.masked_fill(tokens[:, 1:] == 0, 0.0)


def test_fields_and_values_match_a_hand_computation(model, image):
    e = vlcam.explain_caption(model, image, CAPTION)
    assert e.tokens == CAPTION.split()
    assert e.word_indices == list(range(7))
    assert e.caption_map.shape == (48, 72) and e.word_maps.shape == (7, 48, 72)
    expected = manual_maps(model, image, CAPTION, range(7))
    torch.testing.assert_close(e.caption_map, expected[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(e.word_maps, expected[1:], rtol=1e-4, atol=1e-6)
    x, _ = vlcam.image.preprocess(image, model.image_size, model.mean, model.std)
    with torch.no_grad():
        reference = model.word_logprobs(x, model.encode_captions([CAPTION]))[0]
    torch.testing.assert_close(e.token_logprobs, reference[:7])
    assert e.caption_logprob == pytest.approx(float(reference.sum()), abs=1e-4)
    counter = vlcam.explain_caption(model, image, CAPTION, words=[2], method="counterfactual")
    expected_counter = manual_maps(model, image, CAPTION, [2], counterfactual=True)
    torch.testing.assert_close(counter.word_maps[0], expected_counter[1], rtol=1e-4, atol=1e-6)


def test_per_word_maps_from_one_pass_equal_single_word_explanations(model, image):
    together = vlcam.explain_caption(model, image, CAPTION, words="all")
    for i in range(len(together.tokens)):
        alone = vlcam.explain_caption(model, image, CAPTION, words=[i])
        assert (alone.word_maps[0] - together.word_maps[i]).abs().max() <= 1e-5
        assert (alone.caption_map - together.caption_map).abs().max() <= 1e-5


def test_encoder_runs_once_for_all_words(model, image):
    calls = []
    handle = model.encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        vlcam.explain_caption(model, image, CAPTION, words="all")
    finally:
        handle.remove()
    assert len(calls) == 1


def test_visual_words_and_guided_maps(model, image):
    e = vlcam.explain_caption(model, image, CAPTION, words="visual")
    assert [e.tokens[i] for i in e.word_indices] == ["ball", "box"]
    g = vlcam.explain_caption(model, image, CAPTION, words=[2], method="guided-gradcam")
    assert g.word_maps.shape == (1, 48, 72) and torch.isfinite(g.word_maps).all()
    assert g.word_maps.abs().sum() > 0


def test_generated_caption_is_explained_when_none_is_given(model, image):
    e = vlcam.explain_caption(model, image)
    assert e.caption == model.caption(vlcam.image.preprocess(image, 64, model.mean, model.std)[0])[0]


def test_image_kinds_give_the_same_maps(model, image, tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    from_array = vlcam.explain_caption(model, image, CAPTION, words=[2])
    for img in (Image.fromarray(image), path, str(path)):
        other = vlcam.explain_caption(model, img, CAPTION, words=[2])
        torch.testing.assert_close(other.word_maps, from_array.word_maps)
    x, _ = vlcam.image.preprocess(image, 64, model.mean, model.std)
    from_tensor = vlcam.explain_caption(model, x, CAPTION, words=[2])
    assert from_tensor.word_maps.shape == (1, 64, 64)  # a tensor's own size is the image size
    gray = vlcam.explain_caption(model, image[..., 0], CAPTION, words=[2])
    rgba = vlcam.explain_caption(model, np.dstack([image, np.full(image.shape[:2], 255, np.uint8)]), CAPTION,
                                 words=[2])
    torch.testing.assert_close(rgba.word_maps, from_array.word_maps)
    assert gray.word_maps.shape == (1, 48, 72)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"caption": ""}, ValueError, "no words"),
        ({"caption": "?!  ..."}, ValueError, "no words"),
        ({"caption": "zebra giraffe"}, ValueError, "unknown"),
        ({"caption": CAPTION, "words": [7]}, ValueError, "word index 7 is out of range"),
        ({"caption": CAPTION, "words": [-1]}, ValueError, "word index -1 is out of range"),
        ({"caption": CAPTION, "words": "some"}, TypeError, "words must be"),
        ({"caption": CAPTION, "method": "gradcam++"}, ValueError, "method must be one of"),
        ({"caption": 42}, TypeError, "caption must be a str"),
        ({"caption": CAPTION, "layer": "encoder.nope"}, ValueError, "closest names"),
    ],
)
def test_bad_input_gets_a_clear_error(model, image, kwargs, error, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=message):
            vlcam.explain_caption(model, image, **kwargs)


@pytest.mark.parametrize(
    "bad,error,message",
    [
        (np.zeros((4, 4, 5), np.uint8), ValueError, r"\(4, 4, 5\)"),
        (np.zeros((4, 4, 3), np.complex64), TypeError, "complex64"),
        (np.full((4, 4, 3), 2.5, np.float32), ValueError, r"\[0, 1\]"),
        (torch.zeros(2, 3, 8, 8), ValueError, r"\(2, 3, 8, 8\)"),
        (torch.full((3, 8, 8), float("nan")), ValueError, "NaN"),
        ("/no/such/image.png", FileNotFoundError, "/no/such/image.png"),
    ],
)
def test_bad_images_get_a_clear_error(model, bad, error, message):
    with pytest.raises(error, match=message):
        vlcam.explain_caption(model, bad, CAPTION)


def test_unknown_words_warn_and_become_unk(model, image):
    with pytest.warns(UserWarning, match="zebra"):
        e = vlcam.explain_caption(model, image, "a zebra beside a box")
    assert e.tokens == ["a", "zebra", "beside", "a", "box"]


def test_model_comes_back_as_given(model, image):
    model.train()
    model.encoder.eval()
    model.classifier.weight.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    try:
        vlcam.explain_caption(model, image, CAPTION)
        with pytest.raises(ValueError):
            vlcam.explain_caption(model, image, CAPTION, words=[99])
        assert [m.training for m in model.modules()] == modes
        assert not model.classifier.weight.requires_grad
        assert all(p.grad is None for p in model.parameters())
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    finally:
        model.classifier.weight.requires_grad_(True)
        model.eval()


def test_figure_is_written(model, image, tmp_path):
    e = vlcam.explain_caption(model, image, CAPTION, words="visual")
    path = e.save(tmp_path / "fig.png")
    with Image.open(path) as fig:
        assert fig.size[0] > 300 and fig.size[1] > 100


captions = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from([*CAPTION.split(), "zebra", ",", "!", "ünïcødé", "🙂"]), max_size=80).map(" ".join),
)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(caption=captions, img=images())
def test_any_input_gives_a_valid_explanation_or_a_clear_error(model, caption, img):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = vlcam.explain_caption(model, img, caption)
    except (ValueError, TypeError) as err:
        assert str(err)
        return
    size = tuple(img.shape[-2:]) if isinstance(img, torch.Tensor) else img.shape[:2]
    assert e.caption_map.shape == size
    assert e.word_maps.shape == (len(e.tokens), *size)
    assert torch.isfinite(e.caption_map).all() and torch.isfinite(e.word_maps).all()
    assert torch.isfinite(e.token_logprobs).all()


def test_an_explanation_shows_itself_in_a_notebook(model):
    e = vlcam.explain_caption(model, np.zeros((40, 60, 3), dtype=np.uint8) + 128, CAPTION, words=[1])
    png = e._repr_png_()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    page = e._repr_html_()
    assert page.count("<img") == 1 and "data:image/png;base64," in page
    assert "WordLogProb(1)" in page and html.escape(f"'{e.tokens[1]}' (word 1)") in page and e.layer in page
