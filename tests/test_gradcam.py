"""The Grad-CAM engine against independent references: CAM (Sec. 3.1), Captum, hand checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import vlcam
from vlcam import ClassLogit

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def seeded(builder, seed=0, **kw):
    torch.manual_seed(seed)
    return builder(weights=None, **kw).eval()


class GapClassifier(nn.Module):
    """conv features -> global average pooling -> linear: the architecture CAM needs."""

    def __init__(self, channels=8, classes=5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, channels, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_grad_cam_equals_cam_up_to_one_over_z():
    torch.manual_seed(1)
    model = GapClassifier().eval()
    x = torch.randn(3, 3, 20, 20)
    classes = [0, 2, 4]
    maps = vlcam.grad_cam(model, x, [ClassLogit(c) for c in classes], "features", upsample=False)
    with torch.no_grad():
        acts = model.features(x)
    z = acts.shape[-1] * acts.shape[-2]
    for k, c in enumerate(classes):
        cam = torch.relu(torch.einsum("c,bcuv->buv", model.fc.weight[c], acts))
        torch.testing.assert_close(maps[:, k] * z, cam, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "builder,layer",
    [
        (torchvision.models.resnet18, "layer4"),
        (torchvision.models.resnet18, "layer3.1.conv2"),
        # features.18 is vgg11's last conv; an in-place ReLU follows it directly.
        (torchvision.models.vgg11, "features.18"),
        (torchvision.models.vgg11, "features.19"),
    ],
)
def test_equals_captum_layer_grad_cam(builder, layer):
    captum_attr = pytest.importorskip("captum.attr")
    model = seeded(builder)
    torch.manual_seed(2)
    x = torch.randn(2, 3, 64, 64)
    classes = [1, 17, 503]
    ours = vlcam.grad_cam(model, x, [ClassLogit(c) for c in classes], layer)
    module = dict(model.named_modules())[layer]
    reference = captum_attr.LayerGradCam(model, module)
    for k, c in enumerate(classes):
        theirs = reference.attribute(x, target=c, relu_attributions=True)
        theirs = captum_attr.LayerAttribution.interpolate(theirs, (64, 64), interpolate_mode="bilinear")
        theirs = theirs[:, 0].detach()
        rel = (ours[:, k] - theirs).abs().max() / theirs.abs().max()
        assert theirs.abs().max() > 0
        assert rel <= 1e-5, f"class {c}: max relative difference {rel:.2e}"


def test_per_item_class_index_and_output_contract():
    model = seeded(torchvision.models.resnet18)
    x = torch.randn(3, 3, 48, 40)
    per_item = vlcam.grad_cam(model, x, ClassLogit(torch.tensor([5, 6, 7])), "layer4")
    assert per_item.shape == (3, 48, 40) and per_item.dtype == torch.float32
    singles = torch.stack([vlcam.grad_cam(model, x, ClassLogit(c), "layer4")[i]
                           for i, c in enumerate([5, 6, 7])])
    torch.testing.assert_close(per_item, singles)
    native = vlcam.grad_cam(model, x, [ClassLogit(5), ClassLogit(6)], "layer4", upsample=False)
    assert native.shape == (3, 2, 2, 2)
    sized = vlcam.grad_cam(model, x, ClassLogit(5), "layer4", upsample=(10, 12))
    assert sized.shape == (3, 10, 12)
    assert (per_item >= 0).all()


def test_batched_targets_equal_one_backward_per_target():
    model = seeded(torchvision.models.resnet18)
    x = torch.randn(2, 3, 64, 64)
    targets = [ClassLogit(c) for c in (3, 9, 27, 81)]
    looped = vlcam.grad_cam(model, x, targets, "layer3")
    batched = vlcam.grad_cam(model, x, targets, "layer3", batch_targets=True)
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-7)
    vectorised = vlcam.grad_cam(model, x, targets, "layer3", batch_targets="vmap")
    torch.testing.assert_close(vectorised, looped, rtol=1e-5, atol=1e-7)
    assert looped.abs().sum() > 0
    with pytest.raises(ValueError, match="batch_targets must be False, True or 'vmap'"):
        vlcam.grad_cam(model, x, targets, "layer3", batch_targets="fast")


def test_vectorised_targets_include_one_that_ignores_the_layer():
    model = GapClassifier().eval()
    x = torch.randn(2, 3, 16, 16)

    def constant(output):
        return torch.zeros(output.shape[0])

    with pytest.warns(RuntimeWarning, match="all-zero gradients"):
        maps = vlcam.grad_cam(model, x, [ClassLogit(1), constant, ClassLogit(2)], "features",
                              batch_targets="vmap")
    expected = vlcam.grad_cam(model, x, [ClassLogit(1), ClassLogit(2)], "features")
    torch.testing.assert_close(maps[:, [0, 2]], expected)
    assert torch.count_nonzero(maps[:, 1]) == 0


class TwoDetectors(nn.Module):
    """Channel 0 responds to red pixels, channel 1 to blue ones; the score reads channel 0."""

    def __init__(self, sign=1.0):
        super().__init__()
        self.detect = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.detect.weight.zero_()
            self.detect.weight[0, 0] = 1.0
            self.detect.weight[1, 2] = 1.0
        self.sign = sign

    def forward(self, x):
        a = torch.relu(self.detect(x))
        return self.sign * a[:, 0].mean(dim=(1, 2), keepdim=False).unsqueeze(1)


def red_and_blue_image():
    x = torch.zeros(1, 3, 32, 32)
    x[0, 0, 2:10, 3:12] = 1.0  # red square, top left
    x[0, 2, 20:30, 18:30] = 1.0  # blue square, bottom right
    return x


def test_map_peaks_in_the_region_the_score_depends_on():
    x = red_and_blue_image()
    cam = vlcam.grad_cam(TwoDetectors(), x, ClassLogit(0), "detect")[0]
    row, col = divmod(int(cam.argmax()), cam.shape[1])
    assert 2 <= row < 10 and 3 <= col < 12
    assert cam[20:30, 18:30].max() == 0


def test_counterfactual_lights_up_what_lowers_the_score():
    x = red_and_blue_image()
    model = TwoDetectors(sign=-1.0)  # the score falls as the red region grows
    # Eq. 2 keeps only positive evidence, and the red square only lowers the score.
    plain = vlcam.grad_cam(model, x, ClassLogit(0), "detect")[0]
    counter = vlcam.grad_cam(model, x, ClassLogit(0), "detect", counterfactual=True)[0]
    assert plain.max() == 0
    row, col = divmod(int(counter.argmax()), counter.shape[1])
    assert 2 <= row < 10 and 3 <= col < 12
    assert counter[20:30, 18:30].max() == 0


class Probe(nn.Module):
    """Identity that records whether autograd was recording when it ran, and how often."""

    def __init__(self):
        super().__init__()
        self.grad_modes: list[bool] = []

    def forward(self, x):
        self.grad_modes.append(torch.is_grad_enabled())
        return x


class Probed(nn.Module):
    def __init__(self):
        super().__init__()
        self.below = Probe()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.above = Probe()
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        a = self.body(self.below(x))
        return self.head(self.above(torch.relu(a)).mean(dim=(2, 3)))


@pytest.mark.parametrize("no_grad", [False, True])
def test_partial_backward_one_forward_no_graph_below_no_parameter_grads(no_grad):
    torch.manual_seed(0)
    model = Probed()
    x = torch.randn(2, 3, 12, 12)
    ctx = torch.no_grad() if no_grad else torch.enable_grad()
    with ctx:
        maps = vlcam.grad_cam(model, x, [ClassLogit(c) for c in range(4)], "body.2")
        assert torch.is_grad_enabled() is (not no_grad)
    assert maps.shape == (2, 4, 12, 12) and maps.abs().sum() > 0
    assert model.below.grad_modes == [False], "below the layer: one forward, no graph"
    assert model.above.grad_modes == [True], "above the layer: one forward, with a graph"
    assert all(p.grad is None for p in model.parameters())


def test_frozen_model_and_inplace_relu_after_layer():
    model = seeded(torchvision.models.vgg11)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, 64, 64)
    maps = vlcam.grad_cam(model, x, ClassLogit(7), "features.18")
    assert maps.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())


def test_inference_mode_caller():
    model = seeded(torchvision.models.resnet18)
    x = torch.randn(1, 3, 64, 64)
    expected = vlcam.grad_cam(model, x, ClassLogit(3), "layer4")
    with torch.inference_mode():
        got = vlcam.grad_cam(model, x, ClassLogit(3), "layer4")
    torch.testing.assert_close(got, expected)


class TokenModel(nn.Module):
    """A patch-embedding 'ViT' stand-in: tokens (B, 1 + N, C) with a class token."""

    def __init__(self, grid=4, channels=6, classes=3):
        super().__init__()
        self.grid = grid
        self.patch = nn.Conv2d(3, channels, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, channels))
        self.mix = nn.Linear(channels, channels)
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = self.mix(tokens)
        return self.head(torch.tanh(tokens).mean(dim=1))


def test_token_layer_with_reshape_matches_manual_computation():
    torch.manual_seed(3)
    model = TokenModel()
    x = torch.randn(2, 3, 32, 32)

    def to_grid(t):
        return t[:, 1:].transpose(1, 2).reshape(t.shape[0], t.shape[2], 4, 4)

    maps = vlcam.grad_cam(model, x, ClassLogit(1), "mix", reshape=to_grid, upsample=False)
    tokens = model.mix(torch.cat([model.cls.expand(2, -1, -1),
                                  model.patch(x).flatten(2).transpose(1, 2)], dim=1)).detach()
    tokens.requires_grad_(True)
    score = model.head(torch.tanh(tokens).mean(dim=1))[:, 1].sum()
    (grad,) = torch.autograd.grad(score, tokens)
    acts, grads = to_grid(tokens.detach()), to_grid(grad)
    expected = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1))
    torch.testing.assert_close(maps, expected)
    with pytest.raises(ValueError, match="reshape="):
        vlcam.grad_cam(model, x, ClassLogit(1), "mix")


class TupleBlock(nn.Module):
    """A block returning (hidden_states, extra) as Hugging Face transformer layers do."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        out = self.conv(x)
        return out, out.mean()


class UsesFirstOfTuple(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.block = TupleBlock(model.features)

    def forward(self, x):
        hidden, _ = self.block(x)
        return self.model.fc(hidden.mean(dim=(2, 3)))


def test_layer_returning_a_tuple_explains_its_first_item():
    torch.manual_seed(0)
    plain = GapClassifier().eval()
    x = torch.randn(2, 3, 16, 16)
    expected = vlcam.grad_cam(plain, x, [ClassLogit(1), ClassLogit(3)], "features")
    wrapped = UsesFirstOfTuple(plain).eval()
    got = vlcam.grad_cam(wrapped, x, [ClassLogit(1), ClassLogit(3)], "block", batch_targets=True)
    torch.testing.assert_close(got, expected)
    assert expected.abs().sum() > 0


def test_autocast_bfloat16_rank_agrees_with_float32():
    stats = pytest.importorskip("scipy.stats")
    model = seeded(torchvision.models.resnet18)
    torch.manual_seed(4)
    x = torch.randn(4, 3, 96, 96)
    targets = [ClassLogit(c) for c in (0, 10, 100)]
    reference = vlcam.grad_cam(model, x, targets, "layer3", upsample=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = vlcam.grad_cam(model, x, targets, "layer3", upsample=False)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()

    def rho(a, b):
        if a.std() == 0 or b.std() == 0:  # an all-zero map agrees only with an all-zero map
            return float(torch.equal(a.bool(), b.bool()))
        return stats.spearmanr(a.flatten().numpy(), b.flatten().numpy())[0]

    rhos = [rho(a, b) for a, b in zip(reference.flatten(0, 1), low.flatten(0, 1))]
    assert float(torch.tensor(rhos).median()) >= 0.99


@pytest.mark.parametrize("device", DEVICES)
def test_results_stay_on_the_inputs_device(device):
    model = seeded(torchvision.models.resnet18).to(device)
    x = torch.randn(2, 3, 64, 64, device=device)
    maps = vlcam.grad_cam(model, x, [ClassLogit(1), ClassLogit(2)], "layer4")
    assert maps.device.type == device
    guided = vlcam.guided_grad_cam(model, x, ClassLogit(1), "layer4")
    assert guided.device.type == device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lstm_model_in_eval_mode_on_cuda_is_exact():
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.lstm = nn.LSTM(8, 16, batch_first=True, dropout=0.0)
            self.out = nn.Linear(16, 5)

        def forward(self, x):
            seq = self.conv(x).mean(dim=2).transpose(1, 2)  # columns as time steps
            return self.out(self.lstm(seq)[0][:, -1])

    torch.manual_seed(0)
    model = Recurrent().eval()
    x = torch.randn(2, 3, 16, 16)
    cpu = vlcam.grad_cam(model, x, ClassLogit(2), "conv")
    cuda = vlcam.grad_cam(model.cuda(), x.cuda(), ClassLogit(2), "conv")
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-4, atol=1e-6)
    assert not model.training and torch.backends.cudnn.enabled


# --- Errors ------------------------------------------------------------------------------

def test_unknown_layer_lists_closest_names():
    model = seeded(torchvision.models.resnet18)
    with pytest.raises(ValueError, match=r"'layer5'.*closest names:.*'layer[1-4]'"):
        vlcam.grad_cam(model, torch.randn(1, 3, 32, 32), ClassLogit(0), "layer5")


def test_layer_never_reached():
    model = seeded(torchvision.models.resnet18)
    model.spare = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="never reached"):
        vlcam.grad_cam(model, torch.randn(1, 3, 32, 32), ClassLogit(0), "spare")


def test_target_with_wrong_shape():
    model = seeded(torchvision.models.resnet18)
    with pytest.raises(ValueError, match=r"shape \(2, 1000\).*\(2,\)"):
        vlcam.grad_cam(model, torch.randn(2, 3, 32, 32), lambda out: out, "layer4")


def test_non_finite_gradients():
    model = GapClassifier()
    with pytest.raises(ValueError, match="non-finite gradients"):
        vlcam.grad_cam(model, torch.randn(1, 3, 8, 8), lambda out: out[:, 0] * float("inf"),
                       "features")


def test_empty_batch():
    model = GapClassifier()
    with pytest.raises(ValueError, match="empty batch"):
        vlcam.grad_cam(model, torch.randn(0, 3, 8, 8), ClassLogit(0), "features")


def test_all_zero_gradients_give_zero_map_and_warning():
    model = GapClassifier()
    with pytest.warns(RuntimeWarning, match="all-zero gradients"):
        maps = vlcam.grad_cam(model, torch.randn(2, 3, 8, 8), lambda out: out[:, 0] * 0.0, "features")
    assert torch.equal(maps, torch.zeros_like(maps))


def test_bad_arguments_are_named():
    model = GapClassifier()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(TypeError, match="targets must be"):
        vlcam.grad_cam(model, x, 3, "features")
    with pytest.raises(TypeError, match="inputs must be"):
        vlcam.grad_cam(model, "image.png", ClassLogit(0), "features")
    with pytest.raises(TypeError, match="upsample must be"):
        vlcam.grad_cam(model, x, ClassLogit(0), "features", upsample="yes")
    with pytest.raises(ValueError, match="class index 9 is out of range for 5 classes"):
        vlcam.grad_cam(model, x, ClassLogit(9), "features")
    with pytest.raises(ValueError, match="more than once"):
        shared = nn.Sequential(nn.Conv2d(3, 3, 1))
        twice = nn.Sequential(shared, shared, nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
        vlcam.grad_cam(twice, x, ClassLogit(0), shared)


# --- The model comes back as given ------------------------------------------------------

def snapshot(model):
    return {
        "modes": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(getattr(m, "_backward_pre_hooks", {}))) for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "relu": (torch.relu, torch.relu_, F.relu, torch.Tensor.relu, torch.Tensor.relu_),
        "grad_enabled": torch.is_grad_enabled(),
        "cudnn": torch.backends.cudnn.enabled,
    }


def assert_same(before, after):
    assert before["modes"] == after["modes"]
    assert before["hooks"] == after["hooks"]
    assert before["requires_grad"] == after["requires_grad"]
    for a, b in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    assert all(x is y for x, y in zip(before["relu"], after["relu"]))
    assert before["grad_enabled"] == after["grad_enabled"]
    assert before["cudnn"] == after["cudnn"]


def odd_state_resnet():
    model = seeded(torchvision.models.resnet18).train()
    model.layer2.eval()
    model.layer1[0].conv1.weight.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.5)
    model.layer3.register_forward_hook(lambda *a: None)  # the user's own hook stays
    return model


def failing_target(output):
    raise RuntimeError("boom inside the target")


@pytest.mark.parametrize("call", ["grad_cam", "guided_backprop", "guided_grad_cam"])
def test_model_state_restored_after_success_and_after_a_raising_target(call):
    model = odd_state_resnet()
    x = torch.randn(2, 3, 32, 32)
    fn = getattr(vlcam, call)
    args = (model, x, ClassLogit(1)) + (("layer4",) if call != "guided_backprop" else ())
    before = snapshot(model)
    fn(*args)
    assert_same(before, snapshot(model))
    bad_args = (model, x, failing_target, *args[3:])
    with pytest.raises(RuntimeError, match="boom"):
        fn(*bad_args)
    assert_same(before, snapshot(model))


def test_state_restored_when_the_layer_is_not_found():
    model = odd_state_resnet()
    before = snapshot(model)
    with pytest.raises(ValueError):
        vlcam.grad_cam(model, torch.randn(1, 3, 32, 32), ClassLogit(1), "layer9")
    assert_same(before, snapshot(model))
