"""Training a Show-and-Tell captioner on a COCO-format captions file.

Teacher forcing with cross-entropy over the caption words and <end> (<pad> ignored).
Every epoch writes `out/training.safetensors` (the last weights and the optimizer state,
with the training state as safetensors metadata, so one atomic rename commits all three)
and a readable copy of that state in `out/train_state.json`; the best-validation weights
are the checkpoint proper (model.safetensors, config.json, vocab.json). Calling again
with the same settings and more epochs resumes where the last completed epoch ended.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vlcam.adapters.show_and_tell import ShowAndTell
from vlcam.data.coco import read_coco_json
from vlcam.image import preprocess
from vlcam.text import PAD, Vocabulary, pad_sequences
from vlcam.train._runstate import resume, save_training, seed_epoch

# LSTMs occasionally take huge gradient steps early on; clipping the norm is the usual cure.
_MAX_GRAD_NORM = 5.0
# Share of images held out for validation when there is no validation file.
_HOLDOUT_FRACTION = 0.05
# A loader over CaptionDataset; its collate_fn turns the items into (images, tokens) batches.
_Batches = DataLoader[tuple[torch.Tensor, list[int]]]


@dataclass(frozen=True)
class _Pair:
    image: Path
    caption: str


class CaptionDataset(Dataset[tuple[torch.Tensor, list[int]]]):
    """(image, caption) pairs: item i is (a normalised [3, S, S] image, its token ids)."""

    def __init__(
        self,
        pairs: Sequence[_Pair],
        vocab: Vocabulary,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.pairs = list(pairs)
        # Rare words were cut from the vocabulary on purpose: no warning for them.
        self.tokens = vocab.encode_many((p.caption for p in self.pairs), warn=False)
        self.image_size, self.mean, self.std = image_size, mean, std

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[int]]:
        image, _ = preprocess(self.pairs[i].image, self.image_size, self.mean, self.std)
        return image[0], self.tokens[i]


def collate(batch: list[tuple[torch.Tensor, list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images [B, 3, S, S], <pad>-padded tokens [B, L]) from dataset items."""
    images, tokens = zip(*batch)
    return torch.stack(images), torch.tensor(pad_sequences(tokens), dtype=torch.long)


def train_captioner(
    captions: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    backbone: str = "compact",
    pretrained: bool = False,
    image_size: int = 128,
    embed_dim: int = 256,
    hidden_dim: int = 512,
    dropout: float = 0.0,
    pool: str = "avg",
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    device: str = "cpu",
    val_captions: str | Path | None = None,
    min_count: int = 5,
    num_workers: int = 0,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Return the run's metrics after training (or resuming) a Show-and-Tell captioner.

    The metrics: ``train_loss`` and ``val_loss`` per epoch (mean cross-entropy per word,
    nats), ``initial_val_loss`` (before any step), ``best_val_loss``, ``best_epoch``,
    ``epochs``, ``vocab_size``, ``train_pairs``, ``val_pairs``.

    `images` is the folder the captions file's ``file_name`` entries are relative to.
    Validation uses `val_captions`; when it is None and `captions` is named
    ``captions_train.json``, the sibling ``captions_val.json`` if it exists; otherwise
    5% of the training images (at least one), drawn with `seed`. `limit` caps the number
    of images of each split (the first ones by id). The vocabulary holds the training
    words seen at least `min_count` times. There is no augmentation, and in particular no
    horizontal flip: captions say "left" and "right". When `out` already holds a run with
    the same settings, training resumes after its last completed epoch (and trains nothing
    if `epochs` are done); the result matches an uninterrupted run up to the determinism
    of the device's kernels.
    """
    _check_positive(epochs=epochs, batch_size=batch_size, image_size=image_size, min_count=min_count)
    if limit is not None:
        _check_positive(limit=limit)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    captions, images, out = Path(captions), Path(images), Path(out)
    val_source = _validation_source(captions, val_captions)
    settings = {
        "captions": str(captions.resolve()),
        "images": str(images.resolve()),
        "val_captions": str(val_source.resolve()) if val_source else None,
        "backbone": backbone, "pretrained": pretrained, "image_size": image_size,
        "embed_dim": embed_dim, "hidden_dim": hidden_dim, "dropout": dropout, "pool": pool,
        "batch_size": batch_size, "lr": lr, "min_count": min_count, "seed": seed, "limit": limit,
    }
    train_pairs = _read_pairs(captions, images, limit)
    if val_source is not None:
        val_pairs = _read_pairs(val_source, images, limit)
    else:
        train_pairs, val_pairs = _hold_out(train_pairs, seed, captions)
    vocab = Vocabulary.from_captions((p.caption for p in train_pairs), min_count=min_count)

    torch.manual_seed(seed)
    model = ShowAndTell(vocab, backbone, pretrained=pretrained, embed_dim=embed_dim,
                        hidden_dim=hidden_dim, image_size=image_size, dropout=dropout, pool=pool).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    state = resume(out, settings, model, optimizer)

    def loader(pairs: list[_Pair], shuffle: bool, generator: torch.Generator | None = None) -> _Batches:
        dataset = CaptionDataset(pairs, vocab, image_size, model.mean, model.std)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                          num_workers=num_workers, collate_fn=collate,
                          pin_memory=torch.device(device).type == "cuda")

    val_loader = loader(val_pairs, shuffle=False)
    if state is None:
        out.mkdir(parents=True, exist_ok=True)
        state = {"epoch": 0, "settings": settings, "train_loss": [], "val_loss": [],
                 "initial_val_loss": _evaluate(model, val_loader, device),
                 "best_val_loss": math.inf, "best_epoch": 0,
                 "rng": {"model_init_seed": seed, "epoch_seed": f"{seed} * 1000003 + epoch"}}

    for epoch in range(state["epoch"] + 1, epochs + 1):
        shuffler = seed_epoch(seed, epoch)
        bar = tqdm(loader(train_pairs, shuffle=True, generator=shuffler), disable=not progress,
                   desc=f"epoch {epoch}/{epochs}", leave=False)
        train_loss = _train_epoch(model, optimizer, bar, device, epoch)
        val_loss = _evaluate(model, val_loader, device)
        state["epoch"] = epoch
        state["train_loss"].append(train_loss)
        state["val_loss"].append(val_loss)
        if val_loss < state["best_val_loss"]:
            state["best_val_loss"], state["best_epoch"] = val_loss, epoch
            model.save(out)
        save_training(out, model, optimizer, state)
        if progress:
            tqdm.write(f"epoch {epoch}/{epochs}: train loss {train_loss:.4f}, val loss {val_loss:.4f}",
                       file=sys.stderr)

    return {
        "epochs": state["epoch"],
        "train_loss": state["train_loss"],
        "val_loss": state["val_loss"],
        "initial_val_loss": state["initial_val_loss"],
        "best_val_loss": state["best_val_loss"],
        "best_epoch": state["best_epoch"],
        "vocab_size": len(vocab),
        "train_pairs": len(train_pairs),
        "val_pairs": len(val_pairs),
    }


def caption_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Return the mean cross-entropy of `logits` [B, L-1, V] against tokens[:, 1:], <pad> ignored."""
    return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=PAD)


def _train_epoch(model: ShowAndTell, optimizer: torch.optim.Optimizer, batches: tqdm,
                 device: str, epoch: int) -> float:
    model.train()
    total, count = 0.0, 0
    for images, tokens in batches:
        images, tokens = images.to(device, non_blocking=True), tokens.to(device, non_blocking=True)
        loss = caption_loss(model(images, tokens), tokens)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {loss.item()} in epoch {epoch}; lower the learning rate"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), _MAX_GRAD_NORM)
        optimizer.step()
        words = int((tokens[:, 1:] != PAD).sum())
        total, count = total + loss.item() * words, count + words
        batches.set_postfix(loss=f"{loss.item():.3f}")
    return total / max(count, 1)


def _evaluate(model: ShowAndTell, batches: _Batches, device: str) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for images, tokens in batches:
                images, tokens = images.to(device), tokens.to(device)
                logits = model(images, tokens)
                total += F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(),
                                         ignore_index=PAD, reduction="sum").item()
                count += int((tokens[:, 1:] != PAD).sum())
    finally:
        model.train(was_training)
    return total / max(count, 1)


def _validation_source(captions: Path, val_captions: str | Path | None) -> Path | None:
    if val_captions is not None:
        return Path(val_captions)
    sibling = captions.with_name("captions_val.json")
    if captions.name == "captions_train.json" and sibling.is_file():
        return sibling
    return None


def _read_pairs(captions: Path, images: Path, limit: int | None) -> list[_Pair]:
    data = read_coco_json(captions)
    files = {im["id"]: im["file_name"] for im in data["images"]}
    kept = sorted(files)[:limit] if limit is not None else sorted(files)
    keep = set(kept)
    pairs = [_Pair(images / files[a["image_id"]], a["caption"])
             for a in data["annotations"] if a["image_id"] in keep]
    if not pairs:
        raise ValueError(f"{captions} holds no captions (limit={limit!r})")
    missing = sorted({str(p.image) for p in pairs if not p.image.is_file()})
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} images named in {captions} are not in {images}, e.g. {missing[0]}"
        )
    return pairs


def _hold_out(pairs: list[_Pair], seed: int, captions: Path) -> tuple[list[_Pair], list[_Pair]]:
    """Return (train, validation) pairs, holding out a few images with all their captions."""
    images = sorted({str(p.image) for p in pairs})
    if len(images) < 2:
        raise ValueError(
            f"{captions} has {len(images)} image(s) and no validation file: holding images out "
            "needs at least 2; pass val_captions"
        )
    count = max(1, round(_HOLDOUT_FRACTION * len(images)))
    held = {images[i] for i in np.random.default_rng(seed).permutation(len(images))[:count]}
    return [p for p in pairs if str(p.image) not in held], [p for p in pairs if str(p.image) in held]


def _check_positive(**values: Any) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")
