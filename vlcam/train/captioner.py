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
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vlcam.adapters.show_and_tell import POOL_WIDTH, POOLS, PROJECTED_MAX, ShowAndTell
from vlcam.data.coco import read_coco_file, read_coco_json
from vlcam.image import preprocess
from vlcam.text import PAD, Vocabulary, pad_sequences
from vlcam.train._augment import augment_images, mirror_ids
from vlcam.train._concepts import (
    HEAD_POOLS,
    Categories,
    Concepts,
    caption_codes,
    category_loss,
    concept_loss,
    frequent_codes,
    head_logits,
    sibling_instances,
)
from vlcam.train._runstate import plateau_lr, resume, save_training, seed_epoch
from vlcam.train._settings import check_positive, check_weight
from vlcam.train._spread import spread_loss

# LSTMs occasionally take huge gradient steps early on; clipping the norm is the usual cure.
_MAX_GRAD_NORM = 5.0
# Share of images held out for validation when there is no validation file.
_HOLDOUT_FRACTION = 0.05
# The trainers' CNN for data like the built-in world: see COMPACT_LAYOUTS and benchmarks/RESULTS.md.
DEFAULT_BACKBONE = "compact_deep"


@dataclass(frozen=True)
class _Pair:
    image: Path
    caption: str
    image_id: int


# Item i: (a normalised [3, S, S] image, the token ids of each of its captions, its image id).
_Item = tuple[torch.Tensor, list[list[int]], int]
# A loader over CaptionDataset; collate turns its items into (images, tokens, owner) batches.
_Batches = DataLoader[_Item]


class CaptionDataset(Dataset[_Item]):
    """Images with all their captions: item i is (a normalised [3, S, S] image, its captions' ids).

    One item per image, so a batch runs the CNN once per image however many captions it has.
    """

    def __init__(
        self,
        pairs: Sequence[_Pair],
        vocab: Vocabulary,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        # Rare words were cut from the vocabulary on purpose: no warning for them.
        tokens = vocab.encode_many((p.caption for p in pairs), warn=False)
        groups: dict[Path, list[list[int]]] = {}
        image_ids: dict[Path, int] = {}
        for pair, ids in zip(pairs, tokens):
            groups.setdefault(pair.image, []).append(ids)
            image_ids[pair.image] = pair.image_id
        self.images = list(groups)
        self.tokens = [groups[image] for image in self.images]
        self.image_ids = [image_ids[image] for image in self.images]
        self.image_size, self.mean, self.std = image_size, mean, std

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> _Item:
        image, _ = preprocess(self.images[i], self.image_size, self.mean, self.std)
        return image[0], self.tokens[i], self.image_ids[i]


def collate(batch: list[_Item]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (images [B, 3, S, S], <pad>-padded tokens [M, L], image of each caption [M], image ids [B])."""
    images = torch.stack([image for image, _, _ in batch])
    owner = torch.tensor([n for n, (_, captions, _) in enumerate(batch) for _ in captions])
    tokens = [ids for _, captions, _ in batch for ids in captions]
    image_ids = torch.tensor([image_id for _, _, image_id in batch])
    return images, torch.tensor(pad_sequences(tokens), dtype=torch.long), owner, image_ids


def train_captioner(
    captions: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    backbone: str = DEFAULT_BACKBONE,
    pretrained: bool = False,
    image_size: int = 128,
    embed_dim: int = 128,
    hidden_dim: int = 384,
    dropout: float = 0.0,
    pool: str = "max",
    image_input: str = "gated",
    concept_weight: float = 1.0,
    concept_pool: str = "pooled",
    spread_weight: float = 10.0,
    augment: bool = True,
    epochs: int = 40,
    patience: int = 6,
    batch_size: int = 16,
    lr: float = 1e-3,
    device: str = "cpu",
    val_captions: str | Path | None = None,
    instances: str | Path | None = None,
    min_count: int = 5,
    num_workers: int = 0,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Return the run's metrics after training (or resuming) a Show-and-Tell captioner.

    The metrics: ``train_loss``, ``val_loss`` and ``lr`` per epoch (loss: mean cross-entropy
    per word, nats), ``initial_val_loss`` (before any step), ``best_val_loss``,
    ``best_epoch``, ``epochs`` (trained), ``stopped_early``, ``vocab_size``,
    ``train_pairs``, ``val_pairs``.

    `images` is the folder the captions file's ``file_name`` entries are relative to.
    Validation uses `val_captions`; when it is None and `captions` is named
    ``captions_train.json``, the sibling ``captions_val.json`` if it exists; otherwise
    5% of the training images (at least one), drawn with `seed`. `limit` caps the number
    of images of each split (the first ones by id). The vocabulary holds the training
    words seen at least `min_count` times. A batch is `batch_size` images with all their
    captions. `concept_weight` weighs the auxiliary concept and category loss
    (:mod:`vlcam.train._concepts`), `spread_weight` the features' spread
    (:func:`vlcam.train._spread.spread_loss`: each conv feature's mean activation over its
    peak, which keeps word maps on the objects rather than the background); 0 turns either off.
    With `augment`, each training image is mirrored (and "left"/"right" swapped
    in its captions) half the time and shifted by up to 4% of its side (see
    :mod:`vlcam.train._augment`). The learning rate halves after every
    `patience` // 2 epochs without a better validation loss, and training stops after
    `patience` of them (or at `epochs`). When `out` already holds a run with the same
    settings, training resumes after its last completed epoch (and trains nothing if it
    has finished); on the CPU the result equals an uninterrupted run bit for bit.
    """
    check_positive(epochs=epochs, batch_size=batch_size, image_size=image_size, min_count=min_count,
                    patience=patience)
    if limit is not None:
        check_positive(limit=limit)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    check_weight("concept_weight", concept_weight, "no concept loss")
    if concept_pool not in HEAD_POOLS:
        raise ValueError(f"concept_pool must be one of {list(HEAD_POOLS)}, got {concept_pool!r}")
    check_weight("spread_weight", spread_weight, "no spread loss")
    captions, images, out = Path(captions), Path(images), Path(out)
    val_source = _validation_source(captions, val_captions)
    instances_source = sibling_instances(captions, "captions_train.json", instances)
    settings = {
        "captions": str(captions.resolve()),
        "images": str(images.resolve()),
        "val_captions": str(val_source.resolve()) if val_source else None,
        "instances": str(instances_source.resolve()) if instances_source else None,
        "backbone": backbone, "pretrained": pretrained, "image_size": image_size,
        "embed_dim": embed_dim, "hidden_dim": hidden_dim, "dropout": dropout, "pool": pool,
        "image_input": image_input, "concept_weight": concept_weight, "concept_pool": concept_pool,
        **({"spread_weight": spread_weight} if spread_weight else {}),
        "augment": augment, "patience": patience,
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
                        hidden_dim=hidden_dim, image_size=image_size, dropout=dropout, pool=pool,
                        image_input=image_input).to(device)
    train_tokens = vocab.encode_many((p.caption for p in train_pairs), warn=False)
    codes = frequent_codes((caption_codes(torch.tensor([ids]), len(vocab)) for ids in train_tokens), min_count)
    features = POOL_WIDTH.get(pool, 1) * model.encoder.out_channels if concept_pool == "pooled" \
        else model.encoder.out_channels
    concepts = Concepts(codes, features).to(device)
    categories = Categories(read_coco_file(instances_source, "instances", ("annotations",), "'annotations'")) \
        if instances_source else None
    category_head = nn.Linear(features, len(categories)).to(device) if categories else None
    # The concept heads train (and resume) with the captioner but are not saved with it.
    trained = nn.ModuleDict({"captioner": model, "concepts": concepts,
                             **({"categories": category_head} if category_head else {})})
    optimizer = torch.optim.Adam(trained.parameters(), lr=lr)
    state = resume(out, settings, trained, optimizer)
    mirror = mirror_ids(vocab).to(device) if augment else None

    def loader(pairs: list[_Pair], shuffle: bool, generator: torch.Generator | None = None) -> _Batches:
        dataset = CaptionDataset(pairs, vocab, image_size, model.mean, model.std)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                          num_workers=num_workers, collate_fn=collate,
                          pin_memory=torch.device(device).type == "cuda")

    val_loader = loader(val_pairs, shuffle=False)
    if state is None:
        out.mkdir(parents=True, exist_ok=True)
        state = {"epoch": 0, "settings": settings, "train_loss": [], "val_loss": [], "lr": [],
                 "initial_val_loss": _evaluate(model, val_loader, device),
                 "best_val_loss": math.inf, "best_epoch": 0, "stopped_early": False,
                 "rng": {"model_init_seed": seed, "epoch_seed": f"{seed} * 1000003 + epoch"}}

    for epoch in range(state["epoch"] + 1, epochs + 1):
        if state["stopped_early"]:
            break
        epoch_lr = plateau_lr(lr, state["val_loss"], patience)
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr
        shuffler = seed_epoch(seed, epoch)
        bar = tqdm(loader(train_pairs, shuffle=True, generator=shuffler), disable=not progress,
                   desc=f"epoch {epoch}/{epochs}", leave=False)
        setup = (concepts, category_head, categories, concept_weight, concept_pool, spread_weight)
        train_loss = _train_epoch(model, setup, optimizer, bar, device, epoch, mirror, shuffler)
        val_loss = _evaluate(model, val_loader, device)
        state["epoch"] = epoch
        state["train_loss"].append(train_loss)
        state["val_loss"].append(val_loss)
        state["lr"].append(epoch_lr)
        if val_loss < state["best_val_loss"]:
            state["best_val_loss"], state["best_epoch"] = val_loss, epoch
            model.save(out)
        state["stopped_early"] = epoch - state["best_epoch"] >= patience
        save_training(out, trained, optimizer, state)
        if progress:
            tqdm.write(f"epoch {epoch}/{epochs}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                       f"lr {epoch_lr:.2g}", file=sys.stderr)

    return {
        "epochs": state["epoch"],
        "train_loss": state["train_loss"],
        "val_loss": state["val_loss"],
        "lr": state["lr"],
        "initial_val_loss": state["initial_val_loss"],
        "best_val_loss": state["best_val_loss"],
        "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped_early"],
        "vocab_size": len(vocab),
        "train_pairs": len(train_pairs),
        "val_pairs": len(val_pairs),
    }


def caption_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Return the mean cross-entropy of `logits` [B, L-1, V] against tokens[:, 1:], <pad> ignored."""
    return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=PAD)


_LossSetup = tuple[Concepts, "nn.Linear | None", "Categories | None", float, str, float]


def _train_epoch(model: ShowAndTell, setup: _LossSetup, optimizer: torch.optim.Optimizer,
                 batches: tqdm, device: str, epoch: int, mirror: torch.Tensor | None,
                 generator: torch.Generator) -> float:
    concepts, category_head, categories, concept_weight, concept_pool, spread_weight = setup
    model.train()
    concepts.train()
    total, count = 0.0, 0
    for images, tokens, owner, image_ids in batches:
        images, tokens, owner = (t.to(device, non_blocking=True) for t in (images, tokens, owner))
        if mirror is not None:
            images, mirrored = augment_images(images, generator)
            tokens = torch.where(mirrored.to(device)[owner, None], mirror[tokens], tokens)
        conv_map = model.encode(images)
        vectors = model.image_vector(conv_map)[owner]
        words = caption_loss(model.vector_logits(vectors, tokens), tokens)
        loss = words
        if concept_weight > 0:
            targets = concepts.targets(caption_codes(tokens, len(model.vocab)), owner, images.shape[0])
            # A projected max has no pooled features of its own: its heads read the max-pooled map.
            pooled = POOLS["max" if model.pool == PROJECTED_MAX else model.pool](conv_map) \
                if concept_pool == "pooled" else None
            loss = loss + concept_weight * concept_loss(head_logits(concepts, conv_map, pooled, concept_pool),
                                                        targets)
            if category_head is not None and categories is not None:
                present = categories.targets(image_ids).to(device)
                loss = loss + concept_weight * category_loss(
                    head_logits(category_head, conv_map, pooled, concept_pool), present)
        if spread_weight > 0:
            loss = loss + spread_weight * spread_loss(conv_map)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {loss.item()} in epoch {epoch}; lower the learning rate"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), _MAX_GRAD_NORM)
        optimizer.step()
        counted = int((tokens[:, 1:] != PAD).sum())
        total, count = total + words.item() * counted, count + counted
        batches.set_postfix(loss=f"{words.item():.3f}")
    return total / max(count, 1)


def _evaluate(model: ShowAndTell, batches: _Batches, device: str) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for images, tokens, owner, _ in batches:
                images, tokens, owner = images.to(device), tokens.to(device), owner.to(device)
                logits = model.vector_logits(model.image_vector(model.encode(images))[owner], tokens)
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
    pairs = [_Pair(images / files[a["image_id"]], a["caption"], int(a["image_id"]))
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

