"""explain_answer: several answers from one pass, equal to single calls, clear errors, an untouched model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

import vlcam
from image_strategies import images
from vlcam.adapters.hiecoatt import HieCoAtt
from vlcam.adapters.vqa_lstm_cnn import VQALSTMCNN
from vlcam.image import preprocess
from vlcam.text import Vocabulary

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = "what color is the ball box star fire hydrant how many are there".split()
ANSWERS = ["red", "yellow", "yellow and red", "blue", "1", "2", "yes", "no"]
QUESTION = "what color is the fire hydrant?"


@pytest.fixture(scope="module")
def lstm() -> VQALSTMCNN:
    torch.manual_seed(0)
    return VQALSTMCNN(Vocabulary(WORDS), ANSWERS, "compact", embed_dim=16, hidden_dim=16, common_dim=32,
                      mlp_dim=32, image_size=64, dropout=0.2).eval()


@pytest.fixture(scope="module")
def hie() -> HieCoAtt:
    torch.manual_seed(0)
    return HieCoAtt(Vocabulary(WORDS), ANSWERS, hidden_dim=16, attention_dim=16, image_size=64, dropout=0.2).eval()


@pytest.fixture(scope="module", params=["lstm", "hie"])
def model(request: pytest.FixtureRequest, lstm: VQALSTMCNN, hie: HieCoAtt) -> nn.Module:
    return lstm if request.param == "lstm" else hie


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(48, 72, 3), dtype=np.uint8)


def manual_maps(model: nn.Module, image: np.ndarray, question: str, answers: list[int],
                layer: str | None = None, counterfactual: bool = False) -> torch.Tensor:
    """Grad-CAM by hand: hook the layer's output, autograd per answer, Eq. 1 and 2, resize."""
    x, _ = preprocess(image, model.image_size, model.mean, model.std)
    q = model.encode_questions([question])
    module = dict(model.named_modules())[layer or model.default_layer]
    kept = {}
    handle = module.register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    try:
        logits = model(x, q)
    finally:
        handle.remove()
    maps = []
    for k in answers:
        (grad,) = torch.autograd.grad(logits[0, k], kept["a"], retain_graph=True)
        alpha = grad.mean(dim=(2, 3), keepdim=True)
        alpha = -alpha if counterfactual else alpha
        maps.append(torch.relu((alpha * kept["a"].detach()).sum(1)))
    maps = torch.cat(maps)[None]
    return torch.nn.functional.interpolate(maps, size=image.shape[:2], mode="bilinear", align_corners=False)[0]


def test_fields_maps_and_probabilities_match_a_hand_computation(model: nn.Module, image: np.ndarray) -> None:
    e = vlcam.explain_answer(model, image, QUESTION, ["red", "yellow", "yellow and red"])
    assert e.answers == ["red", "yellow", "yellow and red"] and e.answer_indices == [0, 1, 2]
    assert e.question == QUESTION and e.layer == model.default_layer and e.method == "gradcam"
    assert e.maps.shape == (3, 48, 72) and e.image.shape == (48, 72, 3) and e.image.dtype == np.uint8
    torch.testing.assert_close(e.maps, manual_maps(model, image, QUESTION, [0, 1, 2]), rtol=1e-4, atol=1e-6)
    x, _ = preprocess(image, model.image_size, model.mean, model.std)
    with torch.no_grad():
        probs = torch.softmax(model(x, model.encode_questions([QUESTION]))[0], 0)
    torch.testing.assert_close(e.probs, probs[:3])
    counter = vlcam.explain_answer(model, image, QUESTION, "yellow", method="counterfactual")
    torch.testing.assert_close(counter.maps, manual_maps(model, image, QUESTION, [1], counterfactual=True),
                               rtol=1e-4, atol=1e-6)


def test_k_answers_in_one_pass_equal_k_single_calls(model: nn.Module, image: np.ndarray) -> None:
    answers = ["red", "yellow", "yellow and red", "no"]
    together = vlcam.explain_answer(model, image, QUESTION, answers)
    for k, answer in enumerate(answers):
        alone = vlcam.explain_answer(model, image, QUESTION, answer)
        assert (alone.maps[0] - together.maps[k]).abs().max() <= 1e-5
        assert abs(float(alone.probs[0] - together.probs[k])) <= 1e-6
    assert together.maps.abs().sum() > 0


def test_the_cnn_runs_once_for_all_answers(model: nn.Module, image: np.ndarray) -> None:
    calls = []
    handle = model.cnn.register_forward_hook(lambda *a: calls.append(1))
    try:
        vlcam.explain_answer(model, image, QUESTION, ANSWERS)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_no_answer_explains_the_top_prediction(model: nn.Module, image: np.ndarray) -> None:
    e = vlcam.explain_answer(model, image, QUESTION)
    assert e.answers == model.top_answers(model.preprocess(image), model.encode_questions([QUESTION]))
    same = vlcam.explain_answer(model, image, QUESTION, e.answers[0])
    torch.testing.assert_close(e.maps, same.maps)
    guided = vlcam.explain_answer(model, image, QUESTION, method="guided-gradcam")
    assert guided.answers == e.answers and guided.maps.shape == (1, 48, 72)
    assert torch.isfinite(guided.maps).all() and guided.maps.abs().sum() > 0


def test_the_layer_sets_the_native_resolution(hie: HieCoAtt, image: np.ndarray) -> None:
    x, _ = preprocess(image, 128, hie.mean, hie.std)
    q = hie.encode_questions([QUESTION])
    target = vlcam.AnswerLogit(1)
    native = {layer: vlcam.grad_cam(hie, (x, q), target, f"cnn.body.{layer}", upsample=False)
              for layer in ("layer3", "layer4")}
    assert native["layer3"].shape == (1, 16, 16) and native["layer4"].shape == (1, 8, 8)
    e3 = vlcam.explain_answer(hie, x, QUESTION, "yellow", layer="cnn.body.layer3")
    e4 = vlcam.explain_answer(hie, x, QUESTION, "yellow")
    assert e3.layer == "cnn.body.layer3" and e4.layer == "cnn.body.layer4"
    up = {k: torch.nn.functional.interpolate(v[None], size=(128, 128), mode="bilinear", align_corners=False)[0]
          for k, v in native.items()}
    torch.testing.assert_close(e3.maps, up["layer3"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(e4.maps, up["layer4"], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(e3.maps, e4.maps)


def test_image_kinds_give_the_same_maps(lstm: VQALSTMCNN, image: np.ndarray, tmp_path) -> None:
    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    reference = vlcam.explain_answer(lstm, image, QUESTION, "red")
    for img in (Image.fromarray(image), path, str(path)):
        torch.testing.assert_close(vlcam.explain_answer(lstm, img, QUESTION, "red").maps, reference.maps)
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    torch.testing.assert_close(vlcam.explain_answer(lstm, rgba, QUESTION, "red").maps, reference.maps)


@pytest.mark.parametrize(
    ("question", "answer", "kwargs", "error", "message"),
    [
        (QUESTION, "rde", {}, ValueError, r"'rde' is not in the model's vocabulary .* closest answers: 'red'"),
        (QUESTION, ["red", "yelow"], {}, ValueError, r"'yelow' .*closest answers: 'yellow'"),
        (QUESTION, [], {}, ValueError, "empty list"),
        (QUESTION, ["red", 3], {}, TypeError, "each answer must be a str"),
        (QUESTION, 3, {}, TypeError, "answer must be a str, a list of str, or None"),
        ("", None, {}, ValueError, "has no words"),
        ("?! ...", "red", {}, ValueError, "has no words"),
        ("zebra giraffe", "red", {}, ValueError, "every word .* is unknown"),
        (42, "red", {}, TypeError, "question must be a str"),
        (QUESTION, "red", {"method": "gradcam++"}, ValueError, "method must be one of"),
        (QUESTION, "red", {"layer": "cnn.nope"}, ValueError, "closest names"),
    ],
)
def test_bad_input_gets_a_clear_error(lstm: VQALSTMCNN, image: np.ndarray, question, answer, kwargs, error,
                                      message) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=message):
            vlcam.explain_answer(lstm, image, question, answer, **kwargs)


def test_unknown_words_warn_and_become_unk(lstm: VQALSTMCNN, image: np.ndarray) -> None:
    with pytest.warns(UserWarning, match="zebra"):
        e = vlcam.explain_answer(lstm, image, "what color is the zebra?", "red")
    assert e.answers == ["red"] and torch.isfinite(e.maps).all()


def test_answers_are_matched_after_normalisation(lstm: VQALSTMCNN, image: np.ndarray) -> None:
    e = vlcam.explain_answer(lstm, image, QUESTION, ["Yellow and Red.", " RED "])
    assert e.answers == ["yellow and red", "red"]


def test_model_comes_back_as_given(model: nn.Module, image: np.ndarray) -> None:
    model.train()
    model.cnn.eval()
    frozen = next(model.classifier.parameters())
    frozen.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    try:
        first = vlcam.explain_answer(model, image, QUESTION, ["red", "blue"])
        with pytest.raises(ValueError):
            vlcam.explain_answer(model, image, QUESTION, "purple")
        assert [m.training for m in model.modules()] == modes
        assert not frozen.requires_grad
        assert all(p.grad is None for p in model.parameters())
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
        # Explained in eval mode: dropout (0.2) is off, so a second call is identical.
        torch.testing.assert_close(vlcam.explain_answer(model, image, QUESTION, ["red", "blue"]).maps, first.maps)
    finally:
        frozen.requires_grad_(True)
        model.eval()


def test_figure_is_written(lstm: VQALSTMCNN, image: np.ndarray, tmp_path) -> None:
    e = vlcam.explain_answer(lstm, image, QUESTION, ["red", "yellow", "yellow and red"])
    path = e.save(tmp_path / "fig.png")
    with Image.open(path) as fig:
        assert fig.size[0] > 400 and fig.size[1] > 100


def word_lists(min_size: int) -> st.SearchStrategy[str]:
    junk = ["zebra", ",", "?", "ünïcødé", "🙂"]
    return st.lists(st.sampled_from(WORDS + junk), min_size=min_size, max_size=80).map(" ".join)


# Mostly questions and answers the model knows, so that most examples reach the image and
# the maps; the rest probe the errors.
questions = st.one_of(st.text(max_size=40), word_lists(0), word_lists(1), word_lists(1))
known_answers = st.one_of(
    st.none(), st.sampled_from(ANSWERS), st.lists(st.sampled_from(ANSWERS), min_size=1, max_size=4)
)
bad_answers = st.one_of(
    st.lists(st.sampled_from([*ANSWERS, "purple", "", "🙂", "YELLOW"]), max_size=4), st.text(max_size=10)
)
answers = st.one_of(known_answers, known_answers, known_answers, bad_answers)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(question=questions, answer=answers, img=images(), which=st.sampled_from(["lstm", "hie"]))
def test_any_input_gives_a_valid_explanation_or_a_clear_error(lstm, hie, question, answer, img, which) -> None:
    model = lstm if which == "lstm" else hie
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = vlcam.explain_answer(model, img, question, answer)
    except (ValueError, TypeError) as err:
        assert str(err)
        event(f"{type(err).__name__}: {str(err)[:30]}")
        return
    event("explained")
    size = tuple(img.shape[-2:]) if isinstance(img, torch.Tensor) else img.shape[:2]
    k = 1 if answer is None or isinstance(answer, str) else len(answer)
    assert e.maps.shape == (k, *size) and len(e.answers) == k and e.probs.shape == (k,)
    assert all(a in model.answers for a in e.answers)
    assert torch.isfinite(e.maps).all() and (e.maps >= 0).all()
    assert torch.isfinite(e.probs).all() and ((e.probs > 0) & (e.probs <= 1)).all()
