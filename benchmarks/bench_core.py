"""Time and memory of one Grad-CAM map, as multiples of a plain no-grad forward.

Runs in one process on the same model and inputs: a no-grad forward, vlcam.grad_cam,
pytorch-grad-cam's GradCAM and Captum's LayerGradCam (the last two when installed).
Defaults: torchvision resnet50 (weights=None) at 224², batch 64 on a GPU; resnet18,
batch 8 on the CPU.

    python benchmarks/bench_core.py [--device cuda] [--model resnet50] [--batch 64] [--repeats 10]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torchvision

import vlcam
from _timing import machine, timed


def peak_memory(fn: Callable[[], object], device: torch.device) -> float | None:
    """Return the peak GPU memory above what was allocated before `fn`, in MiB."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def implementations(model, x, layer_name: str, cls: int) -> dict[str, Callable[[], object]]:
    layer = dict(model.named_modules())[layer_name]

    def forward():
        with torch.no_grad():
            return model(x)

    impls = {
        "no-grad forward": forward,
        "vlcam.grad_cam": lambda: vlcam.grad_cam(model, x, vlcam.ClassLogit(cls), layer_name),
    }
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = GradCAM(model=model, target_layers=[layer])
        impls["pytorch-grad-cam GradCAM"] = lambda: cam(
            input_tensor=x, targets=[ClassifierOutputTarget(cls)] * x.shape[0])
    except ImportError:
        pass
    try:
        from captum.attr import LayerAttribution, LayerGradCam

        lgc = LayerGradCam(model, layer)

        def captum():
            attr = lgc.attribute(x, target=cls, relu_attributions=True)
            return LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")

        impls["Captum LayerGradCam"] = captum
    except ImportError:
        pass
    return impls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default=None, help="torchvision model name")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = args.model or ("resnet50" if device.type == "cuda" else "resnet18")
    batch = args.batch or (64 if device.type == "cuda" else 8)

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval().to(device)
    x = torch.randn(batch, 3, args.size, args.size, device=device)
    impls = implementations(model, x, args.layer, cls=243)

    where = machine(device)
    print(f"{name} at {args.size}², batch {batch}, layer {args.layer}, on {where}; "
          f"torch {torch.__version__}; median of {args.repeats}")
    times = timed(impls, device, args.repeats)
    memory = {label: peak_memory(fn, device) for label, fn in impls.items()}
    base_t, base_m = times["no-grad forward"], memory["no-grad forward"]
    print(f"{'implementation':<28}{'ms':>10}{'x forward':>11}" +
          (f"{'peak MiB':>11}{'x forward':>11}" if base_m else ""))
    for label in impls:
        row = f"{label:<28}{times[label] * 1e3:>10.1f}{times[label] / base_t:>10.2f}x"
        if base_m:
            row += f"{memory[label]:>11.0f}{memory[label] / base_m:>10.2f}x"
        print(row)


if __name__ == "__main__":
    main()
