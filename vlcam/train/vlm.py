"""Training a small LLaVA-architecture VLM from scratch: the generative path end to end.

No pretrained weights can be fetched here, so the generative adapters are checked on a
model trained here: a CLIP-style ViT of a few blocks, LLaVA's two-layer projector reading
the second-to-last block (``vision_feature_layer=-2``, class token dropped), and a small
Llama decoder, with a byte-level BPE tokenizer trained on the data's own text and a ChatML
chat template. Captions are answers to "Describe the image." and VQA questions are user
turns answered with the most common human answer; the loss is the response's tokens only.
Each epoch sees every training image once with one of its captions and one of its
questions, drawn with (seed, epoch). The output is a transformers folder (safetensors,
processor, chat template) that ``vlcam.load`` wraps as a :class:`LlavaVLM`.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from vlcam.train._runstate import seed_epoch
from vlcam.train.captioner import _read_pairs, _validation_source

PROMPT = "Describe the image."
VAL_IMAGES = 200
IGNORE = -100
SPECIALS = ("<pad>", "<s>", "<image>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_llava(
    texts: Sequence[str],
    *,
    image_size: int = 128,
    patch_size: int = 16,
    vision_width: int = 128,
    vision_blocks: int = 5,
    text_width: int = 192,
    text_layers: int = 3,
    heads: int = 4,
    vocab_size: int = 600,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Return (a randomly initialised `LlavaForConditionalGeneration`, its `LlavaProcessor`).

    The tokenizer is a byte-level BPE of `vocab_size` trained on `texts`; the image processor
    resizes to `image_size` (shortest edge, then a centre crop: the built-in world is square).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(list(texts), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="<|im_end|>",
                                        pad_token="<pad>", extra_special_tokens={"image_token": "<image>"},
                                        chat_template=CHAT_TEMPLATE)
    vision = CLIPVisionConfig(hidden_size=vision_width, intermediate_size=4 * vision_width,
                              num_hidden_layers=vision_blocks, num_attention_heads=heads, image_size=image_size,
                              patch_size=patch_size)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=text_width, intermediate_size=4 * text_width,
                       num_hidden_layers=text_layers, num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    # transformers 5 names it image_token_id (its type stubs still say image_token_index).
    config = LlavaConfig(vision_config=vision, text_config=text,  # type: ignore[call-arg]
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                               vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                               num_additional_image_tokens=1)
    return model, processor


def train_vlm(
    captions: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    questions: str | Path | None = None,
    annotations: str | Path | None = None,
    image_pattern: str = "synth_{image_id:06d}.png",
    val_captions: str | Path | None = None,
    image_size: int = 128,
    patch_size: int = 16,
    epochs: int = 12,
    batch_size: int = 32,
    lr: float = 1e-3,
    device: str = "cpu",
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Return the run's metrics after training a small LLaVA on captions (and VQA) and saving it.

    `captions` is a COCO captions file whose ``file_name`` entries are relative to `images`;
    `questions` and `annotations` (VQA v2 format, images found with `image_pattern`) add VQA
    turns. Validation uses the first 200 images of `val_captions`, or of the sibling
    ``captions_val.json`` (and its VQA files). The metrics (also in ``out/metrics.json``):
    ``train_loss`` / ``val_loss`` per epoch (mean cross-entropy per response token),
    ``best_val_loss``, ``best_epoch``, ``minutes``.
    `out` keeps the best-validation weights. The learning rate warms up for one epoch and
    then follows a cosine to 0.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    started = time.monotonic()
    captions, images, out = Path(captions), Path(images), Path(out)
    val_source = _validation_source(captions, val_captions)
    if val_source is None:
        raise ValueError(f"no validation captions for {captions}: pass val_captions= (a COCO captions file)")
    train = _turns(captions, images, questions, annotations, image_pattern, limit)
    # Validation only picks the best epoch: the first VAL_IMAGES held-out images are enough.
    val = _turns(val_source, images, *_sibling_vqa(questions, annotations), image_pattern,
                 min(limit, VAL_IMAGES) if limit is not None else VAL_IMAGES)
    texts = [PROMPT] + [t for turns in train.values() for pair in turns.values() for q, a in pair for t in (q, a)]
    model, processor = build_llava(texts, image_size=image_size, patch_size=patch_size, seed=seed)
    model.to(device)
    pixels = _pixel_cache(processor, set(train) | set(val))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = steps_per_epoch * epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / steps_per_epoch) * 0.5 * (1 + math.cos(math.pi * step / total)))
    metrics: dict[str, Any] = {"train_loss": [], "val_loss": [], "train_images": len(train), "val_images": len(val),
                               "best_val_loss": math.inf, "best_epoch": 0}
    val_batch = _draw(val, random.Random(seed))
    for epoch in range(1, epochs + 1):
        rng = random.Random(seed_epoch(seed, epoch).initial_seed())
        batch = _draw(train, rng)
        rng.shuffle(batch)
        model.train()
        losses = []
        for start in tqdm(range(0, len(batch), 2 * batch_size), desc=f"epoch {epoch}/{epochs}",
                          disable=not progress, file=sys.stderr):
            loss = _loss(model, processor, pixels, batch[start:start + 2 * batch_size], device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        model.eval()
        with torch.no_grad():
            val_losses = [float(_loss(model, processor, pixels, val_batch[i:i + 2 * batch_size], device))
                          for i in range(0, len(val_batch), 2 * batch_size)]
        metrics["train_loss"].append(sum(losses) / len(losses))
        metrics["val_loss"].append(sum(val_losses) / len(val_losses))
        if metrics["val_loss"][-1] < metrics["best_val_loss"]:
            metrics["best_val_loss"], metrics["best_epoch"] = metrics["val_loss"][-1], epoch
            model.save_pretrained(out)
            processor.save_pretrained(out)
        if progress:
            print(f"epoch {epoch}: train {metrics['train_loss'][-1]:.4f}  val {metrics['val_loss'][-1]:.4f}",
                  file=sys.stderr)
    metrics["minutes"] = round((time.monotonic() - started) / 60, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


# Image -> {"caption": [(prompt, caption), ...], "vqa": [(question, answer), ...]}.
_Turns = dict[Path, dict[str, list[tuple[str, str]]]]


def _turns(captions: Path, images: Path, questions: str | Path | None, annotations: str | Path | None,
           image_pattern: str, limit: int | None) -> _Turns:
    turns: _Turns = {}
    for p in _read_pairs(captions, images, limit):
        turns.setdefault(p.image, {"caption": [], "vqa": []})["caption"].append((PROMPT, p.caption))
    if questions is not None and annotations is not None:
        from vlcam.data.vqa import read_vqa

        for item in read_vqa(questions, annotations, images, image_pattern=image_pattern, limit=limit):
            if item.image in turns:
                turns[item.image]["vqa"].append((item.question, item.multiple_choice_answer))
    return turns


def _sibling_vqa(questions: str | Path | None, annotations: str | Path | None) -> tuple[Path | None, Path | None]:
    """Return the validation VQA files beside the training ones (``*_train.json`` -> ``*_val.json``)."""
    if questions is None or annotations is None:
        return None, None
    q = Path(questions).with_name(Path(questions).name.replace("_train", "_val"))
    a = Path(annotations).with_name(Path(annotations).name.replace("_train", "_val"))
    return (q, a) if q.is_file() and a.is_file() and q != Path(questions) else (None, None)


def _draw(turns: _Turns, rng: random.Random) -> list[tuple[Path, str, str]]:
    """Return one caption turn and one VQA turn (when it has any) per image."""
    drawn = []
    for image in sorted(turns):
        for kind in ("caption", "vqa"):
            if turns[image][kind]:
                prompt, response = rng.choice(turns[image][kind])
                drawn.append((image, prompt, response))
    return drawn


def _pixel_cache(processor: Any, paths: set[Path]) -> dict[Path, torch.Tensor]:
    cache = {}
    for path in sorted(paths):
        with Image.open(path) as im:
            cache[path] = processor.image_processor(images=im.convert("RGB"), return_tensors="pt")["pixel_values"][0]
    return cache


def _loss(model: Any, processor: Any, pixels: dict[Path, torch.Tensor], batch: list[tuple[Path, str, str]],
          device: str) -> torch.Tensor:
    """Mean cross-entropy per response token (and the end of the turn) of `batch`'s turns."""
    tokenizer = processor.tokenizer
    image_tokens = model.config.image_token_id
    grid = (processor.image_processor.crop_size["height"] // processor.patch_size) ** 2
    rows, labels = [], []
    for _, prompt, response in batch:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        head = list(tokenizer(processor.apply_chat_template(messages, add_generation_prompt=True))["input_ids"])
        at = head.index(image_tokens)
        head = head[:at] + [image_tokens] * grid + head[at + 1:]
        tail = [*list(tokenizer(response, add_special_tokens=False)["input_ids"]), tokenizer.eos_token_id]
        rows.append(head + tail)
        labels.append([IGNORE] * len(head) + tail)
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    target = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        ids[i, :len(r)], target[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), torch.tensor(lab), 1
    images = torch.stack([pixels[image] for image, _, _ in batch])
    loss: torch.Tensor = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                               pixel_values=images.to(device), labels=target.to(device)).loss
    return loss
