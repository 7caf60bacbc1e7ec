"""Per-word caption maps: vlcam's one pass against a plain forward and a per-word loop.

In one process, on the same Show-and-Tell model (resnet50 encoder, weights=None, 224²),
batch 16, captions of 16 words: a plain teacher-forced caption forward (no grad), all 16
per-word maps through vlcam (one encoder forward, one batched decoder backward), and
pytorch-grad-cam's GradCAM called once per word. Prints medians and ratios.

    python benchmarks/bench_caption.py [--device cuda] [--batch 16] [--words 16] [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from _timing import machine, print_ratios, timed
from vlcam.adapters.show_and_tell import ShowAndTell
from vlcam.explain.caption import CaptionScorer
from vlcam.gradcam import cam_from_gradients, layer_gradients
from vlcam.targets import WordLogProb
from vlcam.text import Vocabulary


class _FixedCaption(nn.Module):
    """images -> per-word log-probs of fixed captions: the single-input model peers need."""

    def __init__(self, scorer: nn.Module, tokens: torch.Tensor) -> None:
        super().__init__()
        self.scorer, self.tokens = scorer, tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.scorer(images, self.tokens)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--words", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-peer", action="store_true", help="do not time pytorch-grad-cam")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    torch.manual_seed(0)
    vocab = Vocabulary([f"w{i}" for i in range(1000)])
    model = ShowAndTell(vocab, args.backbone, image_size=args.size).to(device).eval()
    scorer = CaptionScorer(model)
    layer = dict(model.named_modules())[model.default_layer]
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    words = torch.randint(4, len(vocab), (args.batch, args.words), device=device)
    start = torch.full((args.batch, 1), 1, device=device)
    end = torch.full((args.batch, 1), 2, device=device)
    tokens = torch.cat([start, words, end], dim=1)
    targets = [WordLogProb(t) for t in range(args.words)]

    def forward():
        with torch.no_grad():
            return scorer(x, tokens)

    def ours():
        result = layer_gradients(scorer, (x, tokens), targets, layer, batch_targets=True)
        return cam_from_gradients(result)

    impls = {"caption forward (no grad)": forward, "vlcam, all words": ours}
    if not args.skip_peer:
        try:
            from pytorch_grad_cam import GradCAM

            fixed = _FixedCaption(scorer, tokens)
            cam = GradCAM(model=fixed, target_layers=[layer])

            def peer():
                return [cam(input_tensor=x, targets=[lambda out, t=t: out[t]] * args.batch)
                        for t in range(args.words)]

            impls["pytorch-grad-cam, per word"] = peer
        except ImportError:
            pass

    where = machine(device)
    print(f"Show-and-Tell ({args.backbone} at {args.size}²), batch {args.batch}, {args.words} words, "
          f"on {where}; torch {torch.__version__}; median of {args.repeats}")
    if device.type == "cuda" and "pytorch-grad-cam, per word" in impls:
        # pytorch-grad-cam back-propagates through the LSTM, which cuDNN refuses in eval mode.
        try:
            impls["pytorch-grad-cam, per word"]()
        except RuntimeError as err:
            print(f"pytorch-grad-cam, per word: failed: {str(err).splitlines()[0]}")
            del impls["pytorch-grad-cam, per word"]
    times = timed(impls, device, args.repeats, warmup=1)
    print_ratios(times, "caption forward (no grad)", peer="pytorch-grad-cam, per word", ours="vlcam, all words")


if __name__ == "__main__":
    main()
