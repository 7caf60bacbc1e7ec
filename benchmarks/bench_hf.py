"""Per-word maps of a Hugging Face BLIP captioner: one pass against a forward and a per-word loop.

In one process, on BLIP-base's architecture with random weights (ViT-B/16 at 384², a
12-layer BERT-base text decoder; `BlipConfig()` defaults, nothing downloaded), batch 1, a
caption of `--words` words: the adapter's teacher-forced scoring forward (no grad), all
per-word maps through vlcam three ways (the adapters' default: one forward and one
vectorised backward, `batch_targets="vmap"`; K stacked copies of the last vision block's
output through the text decoder, `batch_targets=True`; one forward and one backward per
word), and pytorch-grad-cam's GradCAM (with a ViT reshape_transform) called once per word.

    python benchmarks/bench_hf.py [--device cuda] [--words 12] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

from _timing import machine, print_ratios, timed
from vlcam.adapters.hf import wrap
from vlcam.explain.caption import CaptionScorer
from vlcam.gradcam import cam_from_gradients, layer_gradients
from vlcam.targets import WordLogProb


class _FixedCaption(nn.Module):
    """images -> per-word log-probs of a fixed caption: the single-input model peers need."""

    def __init__(self, scorer: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        self.scorer, self.inputs = scorer, inputs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.scorer(images, *self.inputs)


def build(device: torch.device, folder: Path) -> nn.Module:
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    config = BlipConfig()
    words = [f"w{i}" for i in range(config.text_config.vocab_size - 6)]
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(str(folder / "vocab.txt"))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config).to(device).eval()
    size = config.vision_config.image_size
    return wrap(model, tokenizer=tokenizer, image_processor=BlipImageProcessor(size={"height": size, "width": size}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--words", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-peer", action="store_true", help="do not time pytorch-grad-cam")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as folder:
        adapter = build(device, Path(folder))
    caption = " ".join(f"w{i}" for i in range(args.words))
    _, inputs = adapter.encode_caption(caption)
    scorer = CaptionScorer(adapter)
    layer = adapter.get_submodule(adapter.default_layer)
    size = adapter.image_size
    x = torch.randn(1, 3, size, size, device=device)
    targets = [WordLogProb(t) for t in range(args.words)]

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        return adapter.gradcam_reshape(tokens, x)

    def forward():
        with torch.no_grad():
            return scorer(x, *inputs)

    def ours(batch_targets: bool | str):
        result = layer_gradients(scorer, (x, *inputs), targets, layer, reshape=reshape,
                                 batch_targets=batch_targets)
        return cam_from_gradients(result)

    impls = {"caption forward (no grad)": forward,
             "vlcam, all words, vmap": lambda: ours("vmap"),
             "vlcam, K stacked copies": lambda: ours(True),
             "vlcam, one backward per word": lambda: ours(False)}
    if not args.skip_peer:
        try:
            from pytorch_grad_cam import GradCAM

            cam = GradCAM(model=_FixedCaption(scorer, inputs), target_layers=[layer],
                          reshape_transform=reshape)

            def peer():
                return [cam(input_tensor=x, targets=[lambda out, t=t: out[t]]) for t in range(args.words)]

            impls["pytorch-grad-cam, per word"] = peer
        except ImportError:
            pass

    print(f"BLIP-base architecture (random weights, ViT-B/16 at {size}²), batch 1, {args.words} words, "
          f"on {machine(device)}; torch {torch.__version__}; median of {args.repeats}")
    times = timed(impls, device, args.repeats, warmup=1)
    print_ratios(times, "caption forward (no grad)", peer="pytorch-grad-cam, per word", ours="vlcam, all words, vmap")


if __name__ == "__main__":
    main()
