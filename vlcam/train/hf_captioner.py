"""Training a small ViT + GPT-2 `VisionEncoderDecoderModel` captioner from scratch.

No pretrained weights can be fetched here, so this is how the Hugging Face captioning path
is evaluated end to end: build a small encoder-decoder, train a byte-level BPE tokenizer and
the model on COCO-format captions (the built-in world), and save a transformers folder that
``vlcam.load`` wraps in its adapter. Each epoch sees every training image once, with one of
its captions drawn at random (seeded), and the folder keeps the best-validation weights.
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from vlcam.train._runstate import seed_epoch
from vlcam.train.captioner import _hold_out, _read_pairs, _validation_source

BOS = "<|endoftext|>"  # GPT-2's one special token: start, end and padding
IGNORE = -100  # labels the loss skips


def build_vit_gpt2(
    captions: list[str],
    *,
    image_size: int = 128,
    patch_size: int = 8,
    width: int = 128,
    layers: int = 4,
    heads: int = 4,
    vocab_size: int = 500,
    seed: int = 0,
) -> tuple[Any, Any, Any]:
    """Return (a random VisionEncoderDecoderModel, its BPE tokenizer, its image processor).

    The tokenizer is a GPT-2-style byte-level BPE trained on `captions`; the encoder is a
    ViT of `layers` blocks on `patch_size` patches, the decoder a GPT-2 of the same width
    that cross-attends to every patch token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GPT2Config,
        PreTrainedTokenizerFast,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(captions, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[BOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BOS, eos_token=BOS, pad_token=BOS)
    encoder = ViTConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * width, image_size=image_size, patch_size=patch_size)
    decoder = GPT2Config(vocab_size=len(tokenizer), n_embd=width, n_layer=layers, n_head=heads, n_positions=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = tokenizer.bos_token_id
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=config)
    image_processor = ViTImageProcessor(size={"height": image_size, "width": image_size})
    return model, tokenizer, image_processor


def train_hf_captioner(
    captions: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    image_size: int = 128,
    patch_size: int = 8,
    width: int = 128,
    layers: int = 4,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 5e-4,
    device: str = "cpu",
    val_captions: str | Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Return the run's metrics after training a ViT + GPT-2 captioner and saving it in `out`.

    The metrics (also in `out/metrics.json`): ``train_loss`` and ``val_loss`` per epoch
    (mean cross-entropy per token, nats), ``best_val_loss``, ``best_epoch``, the pair
    counts. Validation follows :func:`vlcam.train.captioner.train_captioner`'s rule;
    `out` is a transformers folder (model, tokenizer, image processor) with the
    best-validation weights.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    captions, images, out = Path(captions), Path(images), Path(out)
    val_source = _validation_source(captions, val_captions)
    train_pairs = _read_pairs(captions, images, limit)
    if val_source is not None:
        val_pairs = _read_pairs(val_source, images, limit)
    else:
        train_pairs, val_pairs = _hold_out(train_pairs, seed, captions)
    model, tokenizer, image_processor = build_vit_gpt2(
        [p.caption for p in train_pairs], image_size=image_size, patch_size=patch_size, width=width,
        layers=layers, seed=seed)
    model.to(device)
    pixels = _pixel_cache(image_processor, {p.image for p in train_pairs + val_pairs})
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    by_image: dict[Path, list[str]] = {}
    for p in train_pairs:
        by_image.setdefault(p.image, []).append(p.caption)
    metrics: dict[str, Any] = {"train_loss": [], "val_loss": [], "train_images": len(by_image),
                               "val_pairs": len(val_pairs), "best_val_loss": math.inf, "best_epoch": 0}
    for epoch in range(1, epochs + 1):
        rng = random.Random(seed_epoch(seed, epoch).initial_seed())
        batch = [(image, rng.choice(texts)) for image, texts in by_image.items()]
        rng.shuffle(batch)
        model.train()
        losses = []
        steps = range(0, len(batch), batch_size)
        for start in tqdm(steps, desc=f"epoch {epoch}/{epochs}", disable=not progress, file=sys.stderr):
            loss = _loss(model, tokenizer, pixels, batch[start:start + batch_size], device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
        model.eval()
        with torch.no_grad():
            val = [float(_loss(model, tokenizer, pixels, [(p.image, p.caption) for p in val_pairs[i:i + batch_size]],
                               device)) for i in range(0, len(val_pairs), batch_size)]
        metrics["train_loss"].append(sum(losses) / len(losses))
        metrics["val_loss"].append(sum(val) / len(val))
        if metrics["val_loss"][-1] < metrics["best_val_loss"]:
            metrics["best_val_loss"], metrics["best_epoch"] = metrics["val_loss"][-1], epoch
            for part in (model, tokenizer, image_processor):
                part.save_pretrained(out)
        if progress:
            print(f"epoch {epoch}: train {metrics['train_loss'][-1]:.4f}  val {metrics['val_loss'][-1]:.4f}",
                  file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def _pixel_cache(image_processor: Any, paths: set[Path]) -> dict[Path, torch.Tensor]:
    """Return each image's pixel values [3, S, S], computed once (the world is small)."""
    cache = {}
    for path in sorted(paths):
        with Image.open(path) as im:
            cache[path] = image_processor(images=im.convert("RGB"), return_tensors="pt")["pixel_values"][0]
    return cache


def _loss(model: Any, tokenizer: Any, pixels: dict[Path, torch.Tensor], pairs: list[tuple[Path, str]],
          device: str) -> torch.Tensor:
    """Mean cross-entropy per token of `pairs`' captions, each followed by <eos>."""
    rows = [tokenizer(caption)["input_ids"] + [tokenizer.eos_token_id] for _, caption in pairs]
    length = max(len(r) for r in rows)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        labels[i, : len(r)] = torch.tensor(r)
    images = torch.stack([pixels[image] for image, _ in pairs])
    loss: torch.Tensor = model(pixel_values=images.to(device), labels=labels.to(device)).loss
    return loss
