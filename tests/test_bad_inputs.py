"""Every bad input a clear error, the model never changed.

Each call below, raising or not, must give its model back bit for bit: the state dict
(parameters and buffers), every submodule's train/eval mode, `requires_grad`, no hook left,
and the caller's Python, NumPy and torch random streams where they were. The errors must
be ValueError or TypeError and name the bad value (its shape, dtype, position, layer, id).
"""

from __future__ import annotations

import copy
import functools
import os
import random
import subprocess
import sys
import textwrap
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import vlcam
from vlcam import ClassLogit, WordLogProb
from vlcam.adapters.hiecoatt import HieCoAtt
from vlcam.adapters.show_and_tell import ShowAndTell
from vlcam.adapters.vqa_lstm_cnn import VQALSTMCNN
from vlcam.explain.caption import CaptionScorer
from vlcam.targets import AnswerLogit
from vlcam.text import Vocabulary

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:all-zero gradients")]

WORDS = "a red blue green ball box star what color is the how many".split()
ANSWERS = ["red", "blue", "green", "1", "2"]
CAPTION = "a red ball beside a blue box"
QUESTION = "what color is the ball?"
SIZE = 32
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KINDS = {"NaN": float("nan"), "+inf": float("inf"), "-inf": float("-inf")}


# --- Models, left in an odd state that every call must give back ---------------------------

class BNDropNet(nn.Module):
    """conv, BatchNorm, Dropout2d, conv, BatchNorm, pool, Dropout, linear; an optional
    per-item float scale as a second input."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout2d(0.5),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        if scale is not None:
            h = h * scale[:, None, None, None]
        return self.head(self.drop(self.flatten(self.pool(h))))


def odd(model: nn.Module, frozen: nn.Parameter, evaluated: nn.Module) -> nn.Module:
    """Train mode with one submodule in eval mode and one parameter frozen: a caller's model
    mid-training, whose modes an explanation must not flatten."""
    model.train()
    evaluated.eval()
    frozen.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def engine_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    net = BNDropNet()
    resnet = torchvision.models.resnet18(weights=None, num_classes=5)
    return {"bn_drop": odd(net, net.features[0].weight, net.features[1]),
            "resnet18": odd(resnet, resnet.conv1.weight, resnet.layer2)}


@functools.lru_cache(maxsize=1)
def native_models() -> dict[str, nn.Module]:
    """The three native adapters, tiny, with batch norm and dropout (built once: the
    non-spatial layer tests are parametrised over their modules)."""
    torch.manual_seed(0)
    vocab = Vocabulary(WORDS)
    show = ShowAndTell(vocab, "compact", embed_dim=8, hidden_dim=8, image_size=SIZE, dropout=0.5,
                       image_norm="batchnorm")
    lstm = VQALSTMCNN(vocab, ANSWERS, "compact", embed_dim=8, hidden_dim=8, common_dim=8, mlp_dim=8,
                      image_size=SIZE, dropout=0.5)
    hie = HieCoAtt(vocab, ANSWERS, hidden_dim=8, attention_dim=8, image_size=SIZE, dropout=0.5)
    return {"show_and_tell": odd(show, show.classifier.weight, show.encoder.body.block2),
            "vqa_lstm_cnn": odd(lstm, lstm.question_proj.weight, lstm.cnn.body.block1),
            "hiecoatt": odd(hie, hie.classifier.bias, hie.cnn.body.layer1)}


@pytest.fixture(scope="module")
def native() -> dict[str, nn.Module]:
    return native_models()


# --- What must come back unchanged ------------------------------------------------------------

def bits(t: torch.Tensor) -> tuple[torch.dtype, tuple[int, ...], bytes]:
    return t.dtype, tuple(t.shape), t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()


def rng_states() -> tuple[object, ...]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return random.getstate(), (name, keys.tobytes(), pos, has_gauss, gauss), bits(torch.get_rng_state())


def snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "state": {k: bits(v) for k, v in model.state_dict().items()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "hooks": {n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                      len(m._backward_pre_hooks)) for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {n: p.grad is None for n, p in model.named_parameters()},
        "rng": rng_states(),
        "grad_enabled": torch.is_grad_enabled(),
    }


@contextmanager
def unchanged(model: nn.Module):
    """Assert that the block, raising or not, leaves `model` and the random streams as they were."""
    before = snapshot(model)
    try:
        yield
    finally:
        after = snapshot(model)
        for key in before:
            assert after[key] == before[key], f"{key} changed"


def raises(model: nn.Module, error: type[Exception], *fragments: str):
    """Expect `error` whose message holds every fragment literally, with `model` unchanged."""
    @contextmanager
    def block():
        with unchanged(model), pytest.raises(error) as info:
            yield info
        for fragment in fragments:
            assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"
    return block()


def image_batch(batch: int = 1, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return noise((batch, 3, size, size), seed)


def noise(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Standard normal values from their own generator: the global streams are under test."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def caption_ids(model: ShowAndTell, batch: int = 1) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.encode_captions([CAPTION] * batch)


def question_ids(model: nn.Module, batch: int = 1) -> torch.Tensor:
    return model.encode_questions([QUESTION] * batch, warn=False)


def explain(model: nn.Module, img: object, **kwargs: object) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(model, ShowAndTell):
            return vlcam.explain_caption(model, img, CAPTION, **kwargs)
        return vlcam.explain_answer(model, img, QUESTION, kwargs.pop("answer", ["red", "blue"]), **kwargs)


ENGINE_CALLS = ("grad_cam", "guided_backprop", "guided_grad_cam")
ENGINE_LAYERS = {"bn_drop": "features", "resnet18": "layer4"}


def engine_call(name: str, model: nn.Module, inputs: object, targets: object, layer: str) -> torch.Tensor:
    fn = getattr(vlcam, name)
    return fn(model, inputs, targets) if name == "guided_backprop" else fn(model, inputs, targets, layer)


# --- 1. Bad tensors ------------------------------------------------------------------------------

@st.composite
def poisoned(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[torch.Tensor, list[int], list[str]]:
    """A random tensor of `shape` with 1-4 NaN/+inf/-inf at random positions."""
    x = torch.from_numpy(np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(shape)).float()
    count = draw(st.integers(1, min(4, x.numel())))
    positions = draw(st.lists(st.integers(0, x.numel() - 1), min_size=count, max_size=count, unique=True))
    kinds = draw(st.lists(st.sampled_from(list(KINDS)), min_size=count, max_size=count))
    flat = x.view(-1)
    for p, k in zip(positions, kinds):
        flat[p] = KINDS[k]
    return x, positions, kinds


@FUZZ
@given(data=st.data(), call=st.sampled_from(ENGINE_CALLS), name=st.sampled_from(sorted(ENGINE_LAYERS)),
       batch=st.integers(1, 2), second=st.booleans())
def test_engine_refuses_non_finite_inputs_naming_the_position(engine_models, data, call, name, batch, second):
    model = engine_models[name]
    second = second and name == "bn_drop"  # its optional second input: a per-item scale [B]
    bad, positions, kinds = data.draw(poisoned((batch,) if second else (batch, 3, 16, 16)))
    inputs = (image_batch(batch, 16), bad) if second else (bad,)
    first = tuple(int(i) for i in np.unravel_index(min(positions), bad.shape))
    fragments = [f"input {int(second)} ", str(tuple(bad.shape)), "float32", f"first at index {first}",
                 *(f"{kinds.count(k)} {k}" for k in set(kinds))]
    with raises(model, ValueError, *fragments):
        engine_call(call, model, inputs, ClassLogit(1), ENGINE_LAYERS[name])


@pytest.mark.parametrize("call", ENGINE_CALLS)
def test_engine_needs_a_floating_point_image_for_guided_backprop_and_a_batch(engine_models, call):
    model = engine_models["bn_drop"]
    if call != "grad_cam":
        with raises(model, TypeError, "no floating-point tensor"):
            engine_call(call, model, (torch.zeros(1, 3, 8, 8, dtype=torch.long),), ClassLogit(0), "features")
    with raises(model, ValueError, "empty batch", "(0, 3, 8, 8)"):
        engine_call(call, model, torch.zeros(0, 3, 8, 8), ClassLogit(0), "features")


NATIVE_IMAGE_MODELS = ("show_and_tell", "vqa_lstm_cnn", "hiecoatt")


@FUZZ
@given(name=st.sampled_from(NATIVE_IMAGE_MODELS),
       dtype=st.sampled_from([torch.uint8, torch.int8, torch.int32, torch.int64, torch.bool]),
       layout=st.sampled_from(["chw", "bchw", "hwc"]))
def test_integer_tensor_images_are_refused_naming_the_dtype(native, name, dtype, layout):
    shape = {"chw": (3, 12, 10), "bchw": (1, 3, 12, 10), "hwc": (12, 10, 3)}[layout]
    img = torch.randint(0, 2 if dtype == torch.bool else 100, shape, generator=torch.Generator()).to(dtype)
    model = native[name]
    with raises(model, TypeError, str(dtype), str(shape), "PIL image"):
        explain(model, img)


@FUZZ
@given(name=st.sampled_from(NATIVE_IMAGE_MODELS), channels=st.sampled_from([1, 2, 4, 5]), batched=st.booleans())
def test_tensor_images_need_three_channels(native, name, channels, batched):
    shape = (1, channels, 12, 10) if batched else (channels, 12, 10)
    model = native[name]
    with raises(model, ValueError, str(shape), f"{channels} channels", "3 (RGB)"):
        explain(model, noise(shape))


@pytest.mark.parametrize("name", NATIVE_IMAGE_MODELS)
@pytest.mark.parametrize("shape", [(2, 3, 12, 10), (12, 10), (1, 1, 3, 12, 10), (3, 0, 10)])
def test_other_tensor_image_shapes_are_refused_naming_the_shape(native, name, shape):
    model = native[name]
    with raises(model, ValueError, str(shape)):
        explain(model, noise(shape))


@FUZZ
@given(data=st.data(), name=st.sampled_from(NATIVE_IMAGE_MODELS), batched=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.float64]))
def test_non_finite_tensor_images_are_refused(native, data, name, batched, dtype):
    img, positions, kinds = data.draw(poisoned((1, 3, 12, 10) if batched else (3, 12, 10)))
    model = native[name]
    first = tuple(int(i) for i in np.unravel_index(min(positions), img.shape))
    fragments = [str(tuple(img.shape)), "non-finite", f"first at index {first}",
                 *(f"{kinds.count(k)} {k}" for k in set(kinds))]
    with raises(model, ValueError, *fragments):
        explain(model, img.to(dtype))


@pytest.mark.parametrize("name", NATIVE_IMAGE_MODELS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_precisions_are_cast_to_float32(native, name, dtype):
    model = native[name]
    img = image_batch(1, 12).to(dtype)
    with unchanged(model):
        cast = explain(model, img)
    same = explain(model, img.float())
    assert cast.images.dtype == torch.float32
    assert torch.equal(cast.maps, same.maps)


# --- 2. Non-spatial layers ------------------------------------------------------------------

def non_spatial_layers(model: nn.Module) -> list[str]:
    """Every module outside the CNN that its forward calls: linear, LSTM, embedding,
    Conv1d, BatchNorm1d, dropout, co-attention, MLP."""
    cnn = "encoder" if isinstance(model, ShowAndTell) else "cnn"
    return [n for n, m in model.named_modules()
            if n and n.split(".")[0] != cnn and not isinstance(m, (nn.ModuleList, nn.ModuleDict))]


NON_SPATIAL = [(name, layer) for name, model in native_models().items() for layer in non_spatial_layers(model)]


def test_the_native_models_have_every_kind_of_non_spatial_layer(native):
    kinds = {type(dict(native[name].named_modules())[layer]) for name, layer in NON_SPATIAL}
    assert {nn.Linear, nn.LSTM, nn.Embedding, nn.Conv1d, nn.BatchNorm1d, nn.Dropout, nn.Sequential} <= kinds


_OUTPUTS: dict[tuple[int, int], dict[str, str]] = {}


def layer_outputs(model: nn.Module, batch: int) -> dict[str, str]:
    """Return what each module of `model` outputs on `batch` images, probed on a copy in eval
    mode: the shape of its (first) output tensor, or the type of its first output."""
    key = (id(model), batch)
    if key not in _OUTPUTS:
        probe = copy.deepcopy(model).eval()
        seen: dict[str, str] = {}
        for n, m in probe.named_modules():
            def record(module, inputs, out, n=n):
                first = out[0] if isinstance(out, tuple) else out
                seen.setdefault(n, str(tuple(first.shape)) if isinstance(first, torch.Tensor)
                                else type(first).__name__)
            m.register_forward_hook(record)
        x = image_batch(batch, 16)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(probe, ShowAndTell):
                probe.word_logprobs(x, caption_ids(probe, batch))
            else:
                probe(x, question_ids(probe, batch))
        _OUTPUTS[key] = seen
    return _OUTPUTS[key]


def spatial_fragments(model: nn.Module, layer: str, batch: int = 1) -> list[str]:
    """What the error must say: the layer, what it outputs (its shape, or PackedSequence for
    an LSTM over packed words), and what Grad-CAM needs instead."""
    return [layer, layer_outputs(model, batch)[layer], "spatial layer of the image encoder"]


FEW = settings(FUZZ, max_examples=4)


@pytest.mark.parametrize("name,layer", NON_SPATIAL)
@FEW
@given(method=st.sampled_from(["gradcam", "guided-gradcam", "counterfactual"]), k=st.integers(1, 3))
def test_explaining_at_a_non_spatial_layer_names_the_layer(native, name, layer, method, k):
    model = native[name]
    kwargs: dict[str, object] = {"layer": layer, "method": method}
    kwargs.update({"words": list(range(k))} if isinstance(model, ShowAndTell) else {"answer": ANSWERS[:k]})
    with raises(model, ValueError, *spatial_fragments(model, layer)):
        explain(model, image_batch(1, 16), **kwargs)


@pytest.mark.parametrize("name,layer", NON_SPATIAL)
@FEW
@given(call=st.sampled_from(["grad_cam", "guided_grad_cam"]), batch_targets=st.sampled_from([False, True, "vmap"]),
       use_reshape=st.booleans(), k=st.integers(1, 3), batch=st.integers(1, 2))
def test_the_engine_at_a_non_spatial_layer_names_the_layer(native, name, layer, call, batch_targets, use_reshape,
                                                           k, batch):
    model = native[name]
    x = image_batch(batch, 16)
    if isinstance(model, ShowAndTell):
        scorer, inputs, targets = CaptionScorer(model), (x, caption_ids(model, batch)), [WordLogProb(i) for i in range(k)]
        named = f"captioner.{layer}"
    else:
        scorer, inputs, targets = model, (x, question_ids(model, batch)), [AnswerLogit(i) for i in range(k)]
        named = layer
    kwargs: dict[str, object] = {}
    if use_reshape:
        kwargs["reshape"] = lambda a: model.gradcam_reshape(a, x)
    if call == "grad_cam":
        kwargs["batch_targets"] = batch_targets
    with raises(scorer, ValueError, named, *spatial_fragments(model, layer, batch)[1:]):
        getattr(vlcam, call)(scorer, inputs, targets, named, **kwargs)


@pytest.mark.parametrize("call", ["grad_cam", "guided_grad_cam"])
@pytest.mark.parametrize("layer", ["flatten", "drop", "head", "fc"])
def test_engine_classifier_layers_are_refused_like_grad_cam_does(engine_models, call, layer):
    model = engine_models["resnet18" if layer == "fc" else "bn_drop"]
    with raises(model, ValueError, repr(layer), "(2, ", "spatial layer of the image encoder", "reshape="):
        getattr(vlcam, call)(model, image_batch(2, 16), [ClassLogit(0), ClassLogit(1)], layer)


# --- 3. The model comes back unchanged, and the forward runs in eval mode ---------------------

@pytest.mark.parametrize("name", sorted(ENGINE_LAYERS))
@pytest.mark.parametrize("call", ENGINE_CALLS)
def test_engine_explains_a_training_model_in_eval_mode_and_gives_it_back(engine_models, name, call):
    model = engine_models[name]
    x = image_batch(2, 16)
    with unchanged(model):
        first = engine_call(call, model, x, ClassLogit(2), ENGINE_LAYERS[name])
        again = engine_call(call, model, x, ClassLogit(2), ENGINE_LAYERS[name])
    twin = type(model)() if name == "bn_drop" else torchvision.models.resnet18(weights=None, num_classes=5)
    twin.load_state_dict(model.state_dict())
    twin.eval()
    assert torch.equal(first, again)  # no dropout mask drawn
    torch.testing.assert_close(first, engine_call(call, twin, x, ClassLogit(2), ENGINE_LAYERS[name]),
                               rtol=1e-5, atol=1e-7)


class Restless(nn.Module):
    """Writes into one buffer and replaces another on every forward, and draws from every
    generator even in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("last", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        random.random()
        np.random.rand()
        h = self.conv(x) + 0.0 * torch.rand(1)
        self.last = h.detach().mean(dim=(0, 2, 3))
        return self.head(h.mean(dim=(2, 3)))


def failing_target(output: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("boom inside the target")


@pytest.mark.parametrize("call", ENGINE_CALLS)
def test_buffers_and_random_streams_come_back_also_when_the_call_raises(call):
    torch.manual_seed(0)
    model = Restless().train()
    x = image_batch(2, 8)
    with unchanged(model):
        engine_call(call, model, x, ClassLogit(1), "conv")
    with raises(model, RuntimeError, "boom"):
        engine_call(call, model, x, failing_target, "conv")
    model(x)  # the model itself does write and draw: the guarantee is the engine's
    assert int(model.calls) == 1


@pytest.mark.parametrize("name", NATIVE_IMAGE_MODELS)
def test_explanations_of_a_training_model_leave_it_as_it_was(native, name):
    model = native[name]
    with unchanged(model):
        e = explain(model, image_batch(1, 20), method="guided-gradcam")
        explain(model, np.zeros((20, 24, 3), np.uint8), layer=None)
        e.guided_backprop(0)
        e.scores()
    assert torch.isfinite(e.maps).all()


def test_the_first_explanation_in_a_process_leaves_the_random_streams_alone(tmp_path):
    code = textwrap.dedent(f"""
        import random, warnings
        import numpy as np, torch
        import vlcam
        from vlcam.adapters.show_and_tell import ShowAndTell
        from vlcam.text import Vocabulary
        warnings.simplefilter("ignore")
        model = ShowAndTell(Vocabulary({WORDS!r}), "compact", embed_dim=8, hidden_dim=8, image_size=16).eval()
        random.seed(1); np.random.seed(1); torch.manual_seed(1)
        assert "spacy" not in __import__("sys").modules
        before = random.getstate(), np.random.get_state()[1].tobytes(), torch.get_rng_state()
        vlcam.explain_caption(model, np.zeros((16, 16, 3), np.uint8), {CAPTION!r})
        after = random.getstate(), np.random.get_state()[1].tobytes(), torch.get_rng_state()
        assert "spacy" in __import__("sys").modules
        print(before[0] == after[0], before[1] == after[1], torch.equal(before[2], after[2]))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "True", "True"]


# --- Word ids out of the vocabulary, and batch mismatches --------------------------------------

@FUZZ
@given(data=st.data(), name=st.sampled_from(NATIVE_IMAGE_MODELS), through_engine=st.booleans(),
       bad=st.one_of(st.integers(len(WORDS) + 4, 10**6), st.integers(-(10**6), -1)))
def test_word_ids_outside_the_vocabulary_name_the_id_and_the_vocabulary_size(native, data, name, through_engine,
                                                                             bad):
    model = native[name]
    x = image_batch(1, 16)
    ids = caption_ids(model) if isinstance(model, ShowAndTell) else question_ids(model)
    position = data.draw(st.integers(0, ids.shape[1] - 1))
    ids[0, position] = bad
    what = "caption" if isinstance(model, ShowAndTell) else "question"
    scorer = CaptionScorer(model) if isinstance(model, ShowAndTell) else model
    fragments = [f"{what} id {bad} ", f"position (0, {position})", f"{len(model.vocab)} words"]
    with raises(model, ValueError, *fragments):
        if through_engine:
            target = WordLogProb(0) if isinstance(model, ShowAndTell) else AnswerLogit(0)
            layer = ("captioner." if isinstance(model, ShowAndTell) else "") + model.default_layer
            vlcam.grad_cam(scorer, (x, ids), target, layer)
        else:
            scorer(x, ids)


@pytest.mark.parametrize("name", NATIVE_IMAGE_MODELS)
def test_float_word_ids_are_refused_naming_the_dtype(native, name):
    model = native[name]
    ids = (caption_ids(model) if isinstance(model, ShowAndTell) else question_ids(model)).float()
    with raises(model, TypeError, "torch.float32"):
        (model.word_logprobs if isinstance(model, ShowAndTell) else model)(image_batch(1, 16), ids)


@FUZZ
@given(name=st.sampled_from(NATIVE_IMAGE_MODELS), images=st.integers(1, 4), texts=st.integers(2, 4),
       batch_targets=st.sampled_from([False, True, "vmap"]))
def test_image_and_text_batches_that_cannot_pair_are_named(native, name, images, texts, batch_targets):
    if images % texts == 0:
        images += 1
    model = native[name]
    x = image_batch(images, 16)
    if isinstance(model, ShowAndTell):
        scorer, inputs, target = CaptionScorer(model), (x, caption_ids(model, texts)), WordLogProb(0)
        layer, what = "captioner." + model.default_layer, "captions"
    else:
        scorer, inputs, target = model, (x, question_ids(model, texts)), AnswerLogit(0)
        layer, what = model.default_layer, "questions"
    with raises(model, ValueError, f"a batch of {images} images cannot pair with {texts} {what}"):
        vlcam.grad_cam(scorer, inputs, [target, target], layer, batch_targets=batch_targets)


@FUZZ
@given(call=st.sampled_from(ENGINE_CALLS), batch=st.integers(1, 3), indices=st.integers(2, 4))
def test_per_item_targets_must_match_the_batch(engine_models, call, batch, indices):
    if indices == batch:
        indices += 1
    model = engine_models["bn_drop"]
    target = ClassLogit(torch.arange(indices) % 5)
    with raises(model, ValueError, f"got {indices} class indices for a batch of {batch}"):
        engine_call(call, model, image_batch(batch, 8), target, "features")


# --- Caption word choices ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_a_numpy_array_of_word_indices_works_like_a_list(native, dtype):
    model = native["show_and_tell"]
    img = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    with unchanged(model):
        from_array = explain(model, img, words=np.array([0, 1], dtype=dtype))
    from_list = explain(model, img, words=[0, 1])
    assert from_array.word_indices == from_list.word_indices == [0, 1]
    assert all(type(i) is int for i in from_array.word_indices)
    assert torch.equal(from_array.maps, from_list.maps)


@pytest.mark.parametrize("words", ["visual", "all", [0]])
@pytest.mark.parametrize("word_map", ["coco", Path("coco.json"), {"ball": ["ball"]}])
def test_a_word_map_that_is_not_a_word_map_is_named(native, words, word_map):
    model = native["show_and_tell"]
    with raises(model, TypeError, "word_map must be a vlcam WordMap", type(word_map).__name__,
                repr(word_map)[:20]):
        explain(model, image_batch(1, 16), words=words, word_map=word_map)

