"""Per-word maps of a generative VLM's response: one pass against a forward and per-word loops.

In one process, on a LLaVA architecture with random weights (nothing downloaded), batch 1, a
response of `--words` words to a prompt: the adapter's teacher-forced scoring forward (no
grad), all word maps through vlcam (one vision forward, one vectorised backward), one
backward per word from one forward with a retained graph (lvlm-interpret's method, written
here), and Captum's LayerGradientXActivation at the same layer called once per word (what
Captum's LLMGradientAttribution does: one attribution per target token).

Peak memory above the model (``--memory``): each implementation runs once in a fresh
subprocess; on CUDA ``max_memory_allocated`` minus the model's, on the CPU the peak resident
set (VmHWM) minus the resident set after the model is built.

    python benchmarks/bench_vlm.py [--device cuda] [--size tiny|small|1b] [--words 24] [--memory]

``--size 1b`` (for the GPU machine) is a ~1B-parameter LLaVA (ViT-L/14 at 336², a 16-layer
2048-wide Llama) in bf16.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import torch

from _timing import machine, print_ratios, timed

SIZES: dict[str, dict[str, Any]] = {
    # vision: width, blocks, heads, image, patch; text: width, layers, heads, vocab
    "tiny": dict(vw=64, vb=3, vh=4, image=112, patch=14, tw=128, tl=2, th=4, vocab=1000, dtype="float32"),
    "small": dict(vw=384, vb=8, vh=6, image=224, patch=14, tw=768, tl=8, th=12, vocab=8000, dtype="float32"),
    "1b": dict(vw=1024, vb=24, vh=16, image=336, patch=14, tw=2048, tl=16, th=16, vocab=32000, dtype="bfloat16"),
}


def build(size: str, device: torch.device) -> Any:
    """Return the vlcam adapter of a randomly initialised LLaVA of `size`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    from vlcam.adapters.hf import wrap
    from vlcam.train.vlm import CHAT_TEMPLATE

    s = SIZES[size]
    words = [f"w{i}" for i in range(s["vocab"] - 8)]
    specials = ["<pad>", "<s>", "<image>", "<|im_start|>", "<|im_end|>", "<unk>"]
    vocab = {t: i for i, t in enumerate([*specials, "\n", "user", "assistant", "Describe", "the", "image.", *words])}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, bos_token="<s>", eos_token="<|im_end|>",
                                        pad_token="<pad>", unk_token="<unk>",
                                        extra_special_tokens={"image_token": "<image>"}, chat_template=CHAT_TEMPLATE)
    vision = CLIPVisionConfig(hidden_size=s["vw"], intermediate_size=4 * s["vw"], num_hidden_layers=s["vb"],
                              num_attention_heads=s["vh"], image_size=s["image"], patch_size=s["patch"])
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=s["tw"], intermediate_size=4 * s["tw"],
                       num_hidden_layers=s["tl"], num_attention_heads=s["th"], num_key_value_heads=s["th"],
                       max_position_embeddings=2048, pad_token_id=0, bos_token_id=1,
                       eos_token_id=tokenizer.eos_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=vocab["<image>"],
                         vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).to(device=device, dtype=getattr(torch, s["dtype"])).eval()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": s["image"]},
                                           crop_size={"height": s["image"], "width": s["image"]}),
        tokenizer=tokenizer, patch_size=s["patch"], vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE, num_additional_image_tokens=1)
    return wrap(model, processor)


def implementations(adapter: Any, words: int, device: torch.device, peers: bool = True) -> dict[str, Any]:
    from vlcam.explain.caption import CaptionScorer
    from vlcam.gradcam import cam_from_gradients, layer_gradients
    from vlcam.targets import WordLogProb

    response = " ".join(f"w{i}" for i in range(words))
    _, inputs = adapter.encode_response(response)
    scorer = CaptionScorer(adapter)
    layer = adapter.get_submodule(adapter.default_layer)
    size = adapter.image_size
    x = torch.randn(1, 3, size, size, device=device)
    targets = [WordLogProb(t) for t in range(words)]

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        return adapter.gradcam_reshape(tokens, x)

    def forward() -> Any:
        with torch.no_grad():
            return scorer(x, *inputs)

    def forward_with_grad() -> Any:
        with torch.enable_grad():
            return scorer(x.requires_grad_(False), *inputs).sum()

    def ours() -> Any:
        return cam_from_gradients(layer_gradients(scorer, (x, *inputs), targets, layer, reshape=reshape,
                                                  batch_targets="vmap"))

    def per_word() -> Any:
        # lvlm-interpret's way: keep the layer's output, then one backward per generated token.
        store: dict[str, torch.Tensor] = {}

        def keep(module: Any, args: Any, out: Any) -> None:
            store["a"] = out[0] if isinstance(out, tuple) else out

        handle = layer.register_forward_hook(keep)
        try:
            with torch.enable_grad():
                output = scorer(x, *inputs)
                maps = []
                for t in range(words):
                    (g,) = torch.autograd.grad(output[0, t], store["a"], retain_graph=t < words - 1)
                    a, grad = reshape(store["a"].detach()), reshape(g)
                    maps.append(torch.relu((grad.mean(dim=(2, 3), keepdim=True) * a).sum(1)))
        finally:
            handle.remove()
        return maps

    impls: dict[str, Any] = {"scoring forward (no grad)": forward, "forward with grad": forward_with_grad,
                             "vlcam, all words, vmap": ours, "one backward per word (lvlm-interpret)": per_word}
    if peers:
        try:
            from captum.attr import LayerGradientXActivation

            def captum_per_word() -> Any:
                method = LayerGradientXActivation(lambda images, t: scorer(images, *inputs)[:, t], layer)
                return [method.attribute(x, additional_forward_args=(t,)) for t in range(words)]

            impls["Captum LayerGradientXActivation, per word"] = captum_per_word
        except ImportError:
            pass
    return impls


def peak_memory(size: str, device: str, words: int, label: str) -> float:
    """Return the peak memory (MiB) above the model of one run of `label`, in a fresh process."""
    code = (
        "import json, sys, torch; sys.argv = ['bench_vlm']; sys.path.insert(0, 'benchmarks');"
        f"import bench_vlm as b; d = torch.device({device!r}); a = b.build({size!r}, d);"
        f"impls = b.implementations(a, {words}, d); base = b._resident(d); impls[{label!r}]();"
        "print(json.dumps(b._peak(d) - base))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def _resident(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    return _status("VmRSS")


def _peak(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return _status("VmHWM")


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--words", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="also measure peak memory (fresh processes)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    adapter = build(args.size, device)
    params = sum(p.numel() for p in adapter.model.parameters()) / 1e6
    impls = implementations(adapter, args.words, device)
    s = SIZES[args.size]
    print(f"LLaVA architecture '{args.size}' ({params:.0f}M parameters, {s['dtype']}; ViT {s['vb']} blocks at "
          f"{s['image']}², Llama {s['tl']} layers x {s['tw']}), batch 1, a {args.words}-word response, on "
          f"{machine(device)}; torch {torch.__version__}; median of {args.repeats}")
    times = timed(impls, device, args.repeats, warmup=1)
    print_ratios(times, "scoring forward (no grad)", peer="one backward per word (lvlm-interpret)",
                 ours="vlcam, all words, vmap")
    captum = "Captum LayerGradientXActivation, per word"
    if captum in times:
        print(f"vlcam, all words, vmap is {times[captum] / times['vlcam, all words, vmap']:.1f}x faster than {captum}")
    if args.memory:
        labels = ["forward with grad", "vlcam, all words, vmap", "one backward per word (lvlm-interpret)"]
        peaks = {label: peak_memory(args.size, args.device, args.words, label) for label in labels}
        for label, mib in peaks.items():
            print(f"peak memory above the model, {label}: {mib:.0f} MiB")
        print(f"vlcam all words / forward with grad: {peaks[labels[1]] / peaks[labels[0]]:.2f}x memory")


if __name__ == "__main__":
    main()
