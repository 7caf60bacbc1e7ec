"""Guided backpropagation and Guided Grad-CAM against Captum and a hand-written backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import vlcam
from vlcam import ClassLogit


class ModuleReLUNet(nn.Module):
    """Every ReLU is an nn.ReLU module: Captum's module hooks see them all."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(inplace=True), nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


class RefGuidedReLU(torch.autograd.Function):
    """The guided ReLU written out by hand: pass positive gradients where the input was positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


class FunctionalNet(nn.Module):
    """ReLUs through F.relu, torch.relu_ and Tensor.relu: no module hook can see them."""

    def __init__(self, reference: bool = False):
        super().__init__()
        self.reference = reference
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        if self.reference:
            a = RefGuidedReLU.apply(self.c1(x))
            b = RefGuidedReLU.apply(self.c2(a))
            c = RefGuidedReLU.apply(self.c3(b))
        else:
            a = F.relu(self.c1(x))
            b = self.c2(a)
            torch.relu_(b)
            c = self.c3(b).relu()
        return self.fc(c.mean(dim=(2, 3)))


def test_equals_captum_on_relu_modules():
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    for model in (ModuleReLUNet().eval(), torchvision.models.vgg11(weights=None).eval()):
        x = torch.randn(2, 3, 32, 32)
        ours = vlcam.guided_backprop(model, x, [ClassLogit(1), ClassLogit(3)])
        for k, c in enumerate((1, 3)):
            theirs = captum_attr.GuidedBackprop(model).attribute(x, target=c).detach()
            torch.testing.assert_close(ours[:, k], theirs, rtol=1e-5, atol=1e-7)


def test_rectifies_functional_relus_where_captum_does_not():
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(1)
    model = FunctionalNet().eval()
    reference = FunctionalNet(reference=True).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 16, 16)

    ours = vlcam.guided_backprop(model, x, ClassLogit(2))
    xr = x.clone().requires_grad_(True)
    (hand,) = torch.autograd.grad(reference(xr)[:, 2].sum(), xr)
    torch.testing.assert_close(ours, hand, rtol=1e-5, atol=1e-7)

    captum = captum_attr.GuidedBackprop(model).attribute(x, target=2).detach()
    plain_x = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(plain_x)[:, 2].sum(), plain_x)
    torch.testing.assert_close(captum, plain)  # Captum saw no ReLU module: a plain gradient
    assert (ours - captum).abs().max() > 0.1 * captum.abs().max()


def test_guided_grad_cam_is_upsampled_grad_cam_times_guided_backprop():
    torch.manual_seed(2)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    targets = [ClassLogit(5), ClassLogit(50)]
    fused = vlcam.guided_grad_cam(model, x, targets, "layer4")
    cam = vlcam.grad_cam(model, x, targets, "layer4")
    guided = vlcam.guided_backprop(model, x, targets)
    assert fused.shape == (2, 2, 3, 64, 64)
    torch.testing.assert_close(fused, cam.unsqueeze(2) * guided, rtol=1e-5, atol=1e-8)
    single = vlcam.guided_grad_cam(model, x, ClassLogit(5), "layer4", counterfactual=True)
    counter = vlcam.grad_cam(model, x, ClassLogit(5), "layer4", counterfactual=True)
    torch.testing.assert_close(single, counter.unsqueeze(1) * guided[:, 0], rtol=1e-5, atol=1e-8)


def test_guided_backprop_leaves_no_parameter_gradient_and_frozen_models_work():
    model = ModuleReLUNet().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    grads = vlcam.guided_backprop(model, torch.randn(1, 3, 8, 8), ClassLogit(0))
    assert grads.shape == (1, 3, 8, 8) and grads.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
