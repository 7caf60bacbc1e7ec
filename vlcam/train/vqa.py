"""Training a VQA model (deeper LSTM Q + norm I, or hierarchical co-attention) on VQA v2 files.

The loss is a soft-target softmax cross-entropy: each question's target distribution over
the answer vocabulary is the VQA accuracy of each candidate answer (min(1, matches/3),
averaged over the leave-one-out subsets of the ten human answers), normalised to sum to 1.
With ten identical human answers (the built-in world) it is the plain cross-entropy on
that answer; a question none of whose human answers is in the vocabulary adds nothing.
The softmax keeps the model's probabilities those of the paper's p = softmax(W_h h_s).

A batch holds `batch_size` images and all their questions: the CNN runs once per image.
Every epoch writes `out/training.safetensors` (last weights, optimizer state, and the
training state as metadata, committed by one atomic rename) and `out/train_state.json`;
the best-validation-accuracy weights are the checkpoint proper (model.safetensors,
config.json, vocab.json, answers.json), which ``vlcam.load(out)`` reads without pickle.
Calling again with the same settings and more epochs resumes after the last completed epoch.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vlcam._state import preserved
from vlcam.adapters.hiecoatt import HieCoAtt
from vlcam.adapters.protocol import AnswerModel
from vlcam.adapters.show_and_tell import POOL_WIDTH, POOLS, PROJECTED_MAX
from vlcam.adapters.vqa_base import VQAModel
from vlcam.adapters.vqa_lstm_cnn import VQALSTMCNN
from vlcam.data.coco import read_coco_file
from vlcam.data.vqa import (
    COCO_IMAGE_PATTERN,
    VQAItem,
    answer_scores,
    answer_vocabulary,
    prior_accuracy,
    read_vqa,
    vqa_accuracy,
)
from vlcam.image import preprocess
from vlcam.text import Vocabulary, pad_sequences
from vlcam.train._augment import MIRRORED_WORDS, augment_images, mirror_ids
from vlcam.train._concepts import (
    HEAD_POOLS,
    Categories,
    Concepts,
    answer_codes,
    category_loss,
    concept_loss,
    frequent_codes,
    head_logits,
    sibling_instances,
)
from vlcam.train._runstate import plateau_lr, resume, save_training, seed_epoch
from vlcam.train._settings import check_positive, check_weight
from vlcam.train._spread import spread_loss

# The constructors differ past (vocab, answers, backbone); train_vqa passes the rest by keyword.
MODELS: dict[str, Callable[..., VQAModel]] = {"lstm-cnn": VQALSTMCNN, "hiecoatt": HieCoAtt}
DEFAULT_BACKBONES = {"lstm-cnn": "compact_deep", "hiecoatt": "small_resnet"}
# Options the trainer sets unless model_options says otherwise (benchmarks/RESULTS.md, ablation).
# Antol et al.'s sizes (VQALSTMCNN's defaults) are for VQA v2's 1000 answers and make a 37 MB
# checkpoint; these keep a built-in-world model under 10 MB. Their dropout of 0.5 before each
# of the classifier's layers held this model at chance on yes/no questions after 17 epochs
# (0.44-0.53, overall 0.60; benchmarks/RESULTS.md).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "lstm-cnn": {"pool": "avgmax", "embed_dim": 128, "hidden_dim": 192, "common_dim": 384, "mlp_dim": 384,
                 "dropout": 0.1},
    "hiecoatt": {},
}
# LSTMs occasionally take huge gradient steps early on; clipping the norm is the usual cure.
_MAX_GRAD_NORM = 5.0
# Share of images held out for validation when there is no validation file.
_HOLDOUT_FRACTION = 0.1
# A loader over VQADataset; its collate_fn (_Batcher) turns the items into batches.
_Batches = DataLoader[tuple[torch.Tensor, tuple[int, ...]]]


@dataclass(frozen=True)
class _ImageQuestions:
    image: Path
    items: tuple[int, ...]  # indices into the split's item list


class VQADataset(Dataset[tuple[torch.Tensor, tuple[int, ...]]]):
    """Item i is image i with all its questions: (normalised [3, S, S] image, item indices)."""

    def __init__(
        self, items: Sequence[VQAItem], image_size: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        groups: dict[Path, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            groups[item.image].append(i)
        self.groups = [_ImageQuestions(path, tuple(idx)) for path, idx in groups.items()]
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, tuple[int, ...]]:
        image, _ = preprocess(self.groups[i].image, self.image_size, self.mean, self.std)
        return image[0], self.groups[i].items


class _Batcher:
    """collate_fn: (images [N, 3, S, S], questions [M, L], image of each question [M], item ids [M])."""

    def __init__(self, tokens: Sequence[Sequence[int]]) -> None:
        self.tokens = tokens

    def __call__(self, batch: list[tuple[torch.Tensor, tuple[int, ...]]]) -> tuple[torch.Tensor, ...]:
        images = torch.stack([image for image, _ in batch])
        owner = [n for n, (_, items) in enumerate(batch) for _ in items]
        items = [i for _, group in batch for i in group]
        questions = torch.tensor(pad_sequences([self.tokens[i] for i in items]), dtype=torch.long)
        return images, questions, torch.tensor(owner), torch.tensor(items)


def train_vqa(
    questions: str | Path,
    annotations: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    model: str = "lstm-cnn",
    backbone: str | None = None,
    pretrained: bool = False,
    image_pattern: str = COCO_IMAGE_PATTERN,
    image_size: int = 128,
    top_k: int = 1000,
    min_count: int = 1,
    model_options: Mapping[str, Any] | None = None,
    concept_weight: float = 1.0,
    concept_pool: str = "pooled",
    spread_weight: float = 10.0,
    augment: bool = True,
    epochs: int = 15,
    patience: int = 8,
    batch_size: int = 16,
    lr: float = 1e-3,
    device: str = "cpu",
    val_questions: str | Path | None = None,
    val_annotations: str | Path | None = None,
    instances: str | Path | None = None,
    num_workers: int = 0,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Return the run's metrics after training (or resuming) a VQA model.

    `model` is "lstm-cnn" (:class:`VQALSTMCNN`) or "hiecoatt" (:class:`HieCoAtt`);
    `backbone` defaults to "compact_deep" / "small_resnet" (the built-in world's CNNs);
    `model_options` are further constructor arguments (``hidden_dim``, ``dropout``, ``pool``,
    ...) over `DEFAULT_OPTIONS`. For "lstm-cnn", `concept_weight` weighs an auxiliary loss:
    predicting from the pooled image features each question's answer and (question word,
    answer) pairs, and which object categories the image holds, read from `instances` (a
    COCO instances file; by default the ``instances_train.json`` beside a
    ``vqa_questions_train.json``, none otherwise) (:mod:`vlcam.train._concepts`; 0 turns
    both off). `spread_weight` weighs the features' spread (:func:`vlcam.train._spread.spread_loss`,
    each conv feature's mean activation over its peak; 0 turns it off), for both models.
    `images` is the folder of the image files, named by
    `image_pattern` (see :func:`vlcam.data.vqa.format_image_name`). With `augment`, each
    training image is mirrored half the time, with "left" and "right" swapped in its
    questions (and answers), and shifted by up to 4% of its side
    (:mod:`vlcam.train._augment`). The learning rate halves after every `patience` // 2
    epochs without a better validation accuracy; training stops after `patience` of them
    (or at `epochs`). The answers are the `top_k` most common
    training answers; the question vocabulary the training words seen at least `min_count`
    times. `batch_size` counts images (each with all its questions). `limit` keeps the first
    `limit` images of each split.

    Validation uses `val_questions` and `val_annotations`; when both are None and the
    training files are the built-in world's ``vqa_*_train.json``, their ``_val`` siblings
    if they exist; otherwise 10% of the training images, drawn with `seed`.

    The metrics: ``train_loss``, ``val_accuracy`` (official VQA accuracy) and ``lr`` per
    epoch, ``initial_val_accuracy``, ``best_val_accuracy``, ``best_epoch``, ``epochs``,
    ``stopped_early``,
    ``prior`` (the image-blind baselines of :func:`vlcam.data.vqa.prior_accuracy` on the
    validation questions), ``num_answers``, ``vocab_size``, ``answer_coverage`` (share of
    training questions whose answer is in the vocabulary), ``train_questions``,
    ``val_questions``, ``train_images``, ``val_images``.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(map(repr, MODELS))}, got {model!r}")
    check_positive(epochs=epochs, batch_size=batch_size, image_size=image_size, top_k=top_k,
                    min_count=min_count, patience=patience)
    if limit is not None:
        check_positive(limit=limit)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    check_weight("concept_weight", concept_weight, "no concept loss")
    if concept_pool not in HEAD_POOLS:
        raise ValueError(f"concept_pool must be one of {list(HEAD_POOLS)}, got {concept_pool!r}")
    check_weight("spread_weight", spread_weight, "no spread loss")
    backbone = DEFAULT_BACKBONES[model] if backbone is None else backbone
    options = {**DEFAULT_OPTIONS[model], **(model_options or {})}
    questions, annotations, images, out = Path(questions), Path(annotations), Path(images), Path(out)
    val_files = _validation_files(questions, annotations, val_questions, val_annotations)
    instances_source = sibling_instances(questions, "vqa_questions_train.json", instances)
    settings = {
        "questions": str(questions.resolve()), "annotations": str(annotations.resolve()),
        "images": str(images.resolve()), "image_pattern": image_pattern,
        "val_files": [str(p.resolve()) for p in val_files] if val_files else None,
        "instances": str(instances_source.resolve()) if instances_source else None,
        "model": model, "backbone": backbone, "pretrained": pretrained, "image_size": image_size,
        "top_k": top_k, "min_count": min_count, "model_options": options, "concept_weight": concept_weight,
        "concept_pool": concept_pool, **({"spread_weight": spread_weight} if spread_weight else {}),
        "augment": augment, "patience": patience, "batch_size": batch_size,
        "lr": lr, "seed": seed, "limit": limit,
    }
    train_items = read_vqa(questions, annotations, images, image_pattern=image_pattern, limit=limit)
    if val_files is not None:
        val_items = read_vqa(*val_files, images, image_pattern=image_pattern, limit=limit)
    else:
        train_items, val_items = _hold_out(train_items, seed, questions)
    answers = answer_vocabulary(train_items, top_k)
    vocab = question_vocabulary((i.question for i in train_items), min_count)

    torch.manual_seed(seed)
    net = MODELS[model](vocab, answers, backbone, pretrained=pretrained, image_size=image_size,
                        **options).to(device)
    answer_ids = _answer_ids(train_items, answers)
    concepts = _concept_head(net, train_items, vocab, answer_ids, concept_pool) if concept_weight > 0 else None
    categories = Categories(read_coco_file(instances_source, "instances", ("annotations",), "'annotations'")) \
        if instances_source and concepts else None
    category_head = nn.Linear(concepts.head.in_features, len(categories)).to(device) \
        if concepts and categories else None
    # The concept heads train (and resume) with the model but are not saved with it.
    trained = nn.ModuleDict({"model": net, **({"concepts": concepts.to(device)} if concepts else {}),
                             **({"categories": category_head} if category_head else {})})
    optimizer = torch.optim.Adam(trained.parameters(), lr=lr)
    state = resume(out, settings, trained, optimizer)
    losses = _ExtraLosses(concepts, concept_weight, answer_ids, category_head, categories, concept_pool,
                          spread_weight)
    mirror = _Mirror(vocab, answers, device) if augment else None

    def loader(items: Sequence[VQAItem], shuffle: bool, generator: torch.Generator | None = None) -> _Batches:
        tokens = vocab.encode_many((i.question for i in items), add_special=False, warn=False)
        return DataLoader(VQADataset(items, image_size, net.mean, net.std), batch_size=batch_size,
                          shuffle=shuffle, generator=generator, num_workers=num_workers,
                          collate_fn=_Batcher(tokens), pin_memory=torch.device(device).type == "cuda")

    val_loader = loader(val_items, shuffle=False)
    if state is None:
        out.mkdir(parents=True, exist_ok=True)
        state = {"epoch": 0, "settings": settings, "train_loss": [], "val_accuracy": [], "lr": [],
                 "initial_val_accuracy": _accuracy(net, val_loader, val_items, device),
                 "best_val_accuracy": -1.0, "best_epoch": 0, "stopped_early": False,
                 "rng": {"model_init_seed": seed, "epoch_seed": f"{seed} * 1000003 + epoch"}}

    for epoch in range(state["epoch"] + 1, epochs + 1):
        if state["stopped_early"]:
            break
        # The plateau rule wants a quantity that falls: the accuracy's negative.
        epoch_lr = plateau_lr(lr, [-a for a in state["val_accuracy"]], patience)
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr
        shuffler = seed_epoch(seed, epoch)
        bar = tqdm(loader(train_items, shuffle=True, generator=shuffler), disable=not progress,
                   desc=f"epoch {epoch}/{epochs}", leave=False)
        train_loss = _train_epoch(net, optimizer, bar, train_items, device, epoch, mirror, shuffler, losses)
        accuracy = _accuracy(net, val_loader, val_items, device)
        state["epoch"] = epoch
        state["train_loss"].append(train_loss)
        state["val_accuracy"].append(accuracy)
        state["lr"].append(epoch_lr)
        if accuracy > state["best_val_accuracy"]:
            state["best_val_accuracy"], state["best_epoch"] = accuracy, epoch
            net.save(out)
        state["stopped_early"] = epoch - state["best_epoch"] >= patience
        save_training(out, trained, optimizer, state)
        if progress:
            # stderr, with the bar: stdout is the caller's (the script prints JSON there).
            tqdm.write(f"epoch {epoch}/{epochs}: train loss {train_loss:.4f}, val VQA accuracy {accuracy:.4f}",
                       file=sys.stderr)

    covered = set(answers)
    return {
        "epochs": state["epoch"],
        "train_loss": state["train_loss"],
        "val_accuracy": state["val_accuracy"],
        "lr": state["lr"],
        "initial_val_accuracy": state["initial_val_accuracy"],
        "best_val_accuracy": state["best_val_accuracy"],
        "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped_early"],
        "prior": prior_accuracy(train_items, val_items),
        "num_answers": len(answers),
        "vocab_size": len(vocab),
        "answer_coverage": sum(i.multiple_choice_answer in covered for i in train_items) / len(train_items),
        "train_questions": len(train_items),
        "val_questions": len(val_items),
        "train_images": len({i.image_id for i in train_items}),
        "val_images": len({i.image_id for i in val_items}),
    }


def question_vocabulary(questions: Iterable[str], min_count: int = 1) -> Vocabulary:
    """Return the vocabulary of the question words seen at least `min_count` times."""
    return Vocabulary.from_captions(questions, min_count=min_count)


def soft_targets(items: Sequence[VQAItem], answers: Sequence[str]) -> torch.Tensor:
    """Return [len(items), len(answers)]: each row the VQA accuracy of each answer, summing
    to 1 (all zero for a question none of whose human answers is in `answers`)."""
    index = {a: k for k, a in enumerate(answers)}
    targets = torch.zeros(len(items), len(answers))
    for row, item in enumerate(items):
        for answer, score in answer_scores(item.answers).items():
            if answer in index:
                targets[row, index[answer]] = score
    total = targets.sum(dim=1, keepdim=True)
    return torch.where(total > 0, targets / total.clamp_min(1e-12), targets)


def soft_target_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return the mean cross-entropy of `logits` [M, A] against target distributions [M, A],
    over the questions whose targets are not all zero (0 if there is none)."""
    per_question = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)
    counted = targets.sum(dim=1) > 0
    return per_question[counted].sum() / counted.sum().clamp_min(1)


def evaluate_vqa(
    model: VQAModel | AnswerModel, items: Sequence[VQAItem], *, batch_size: int = 32,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Return the official VQA accuracy of `model`'s top answers on `items`, overall and per
    answer type and question type, with the predictions (question id -> answer)."""
    if isinstance(model, VQAModel):
        device = next(model.parameters()).device if device is None else torch.device(device)
        tokens = model.vocab.encode_many((i.question for i in items), add_special=False, warn=False)
        batches = DataLoader(VQADataset(items, model.image_size, model.mean, model.std), batch_size=batch_size,
                             collate_fn=_Batcher(tokens))
        predicted = _predictions(model, batches, len(items), device)
        answers = [model.answers[k] for k in predicted]
    else:
        answers = _own_answers(model, items)
    scores = [vqa_accuracy(answers[n], item.answers) for n, item in enumerate(items)]
    by_answer_type: dict[str, list[float]] = defaultdict(list)
    by_question_type: dict[str, list[float]] = defaultdict(list)
    for item, score in zip(items, scores):
        by_answer_type[item.answer_type].append(score)
        by_question_type[item.question_type].append(score)
    return {
        "accuracy": float(np.mean(scores)),
        "questions": len(items),
        "per_answer_type": {t: float(np.mean(v)) for t, v in sorted(by_answer_type.items())},
        "per_question_type": {t: float(np.mean(v)) for t, v in sorted(by_question_type.items())},
        "predictions": {item.question_id: answers[n] for n, item in enumerate(items)},
    }


def _own_answers(model: AnswerModel, items: Sequence[VQAItem]) -> list[str]:
    """Return any AnswerModel's own answer to each item (a generative VLM writes it), one by one."""
    from vlcam.adapters.protocol import check_conforms

    torch_model = check_conforms(model, AnswerModel, "the VQA evaluation needs a VQA model")
    out = []
    with preserved(torch_model, eval_mode=True), torch.no_grad():
        for item in items:
            out.append(model.top_answers(model.preprocess(item.image), model.encode_question(item.question))[0])
    return out


def _predictions(model: VQAModel, batches: _Batches, count: int, device: torch.device) -> list[int]:
    """Return the top answer index of each of the `count` items, in item order."""
    predicted = [-1] * count
    with preserved(model, eval_mode=True), torch.no_grad():
        for images, questions, owner, items in batches:
            features = model.encode_images(images.to(device))
            logits = model.answer_logits(features[owner.to(device)], questions.to(device))
            for i, k in zip(items.tolist(), logits.argmax(dim=1).tolist()):
                predicted[i] = k
    return predicted


def _accuracy(model: VQAModel, batches: _Batches, items: Sequence[VQAItem], device: str) -> float:
    predicted = _predictions(model, batches, len(items), torch.device(device))
    return float(np.mean([vqa_accuracy(model.answers[k], item.answers) for k, item in zip(predicted, items)]))


class _Mirror:
    """What mirroring an image does to its questions' word ids and answers' columns."""

    def __init__(self, vocab: Vocabulary, answers: Sequence[str], device: str) -> None:
        self.words = mirror_ids(vocab).to(device)
        self.answers = _mirror_columns(answers).to(device)

    def __call__(self, images: torch.Tensor, questions: torch.Tensor, owner: torch.Tensor, targets: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (images, questions, targets, which questions' images were mirrored [M])."""
        images, mirrored = augment_images(images, generator)
        flipped = mirrored.to(images.device)[owner]
        questions = torch.where(flipped[:, None], self.words[questions], questions)
        targets = torch.where(flipped[:, None], targets[:, self.answers], targets)
        return images, questions, targets, flipped


# An answer's concepts count only if seen this often: rarer (word, answer) pairs are noise.
_CONCEPT_MIN_COUNT = 5


def _answer_ids(items: Sequence[VQAItem], answers: Sequence[str]) -> torch.Tensor:
    """Return each item's most common answer's column, -1 when it is not in `answers`."""
    index = {a: k for k, a in enumerate(answers)}
    return torch.tensor([index.get(i.multiple_choice_answer, -1) for i in items])


def _concept_head(model: VQAModel, items: Sequence[VQAItem], vocab: Vocabulary,
                  answer_ids: torch.Tensor, concept_pool: str) -> Concepts | None:
    """Return the concept head for `model` (None for a model without pooled features: hiecoatt)."""
    if not isinstance(model, VQALSTMCNN):
        return None
    tokens = vocab.encode_many((i.question for i in items), add_special=False, warn=False)
    codes = frequent_codes((answer_codes(torch.tensor([t]), answer_ids[n:n + 1], len(vocab))
                            for n, t in enumerate(tokens)), _CONCEPT_MIN_COUNT)
    width = POOL_WIDTH.get(model.pool, 1) if concept_pool == "pooled" else 1
    return Concepts(codes, width * model.cnn.out_channels)


def _mirror_columns(answers: Sequence[str]) -> torch.Tensor:
    """Return, per answer column, the column of its mirror image ("left" <-> "right"), else its own."""
    index = {a: k for k, a in enumerate(answers)}
    return torch.tensor([index.get(MIRRORED_WORDS.get(a, a), k) for k, a in enumerate(answers)])


@dataclass(frozen=True)
class _ExtraLosses:
    """What the epoch's auxiliary losses need (a weight of 0, or a head of None, turns one off)."""

    concepts: Concepts | None
    concept_weight: float
    answer_ids: torch.Tensor  # each training question's answer column, -1 for none
    category_head: nn.Linear | None
    categories: Categories | None
    concept_pool: str
    spread_weight: float


def _train_epoch(model: VQAModel, optimizer: torch.optim.Optimizer, batches: tqdm, items: Sequence[VQAItem],
                 device: str, epoch: int, mirror: _Mirror | None, generator: torch.Generator,
                 losses: _ExtraLosses) -> float:
    model.train()
    concepts, concept_weight, concept_pool = losses.concepts, losses.concept_weight, losses.concept_pool
    category_head, categories = losses.category_head, losses.categories
    total, count = 0.0, 0
    for images, questions, owner, indices in batches:
        images, questions, owner = images.to(device), questions.to(device), owner.to(device)
        # Targets per batch: a dense [questions, answers] table of all of VQA v2 would not fit.
        targets = soft_targets([items[i] for i in indices.tolist()], model.answers).to(device)
        answer_ids = losses.answer_ids[indices].to(device)
        if mirror is not None:
            images, questions, targets, flipped = mirror(images, questions, owner, targets, generator)
            mirrored_ids = mirror.answers[answer_ids.clamp_min(0)]
            answer_ids = torch.where(flipped & (answer_ids >= 0), mirrored_ids, answer_ids)
        # encode_images(images) is encode_conv_map(cnn(images)); the extra losses read the map.
        conv_map = model.cnn(images)
        features = model.encode_conv_map(conv_map)
        extra = torch.zeros((), device=images.device)
        if concepts is not None and isinstance(model, VQALSTMCNN):
            pooled = POOLS["max" if model.pool == PROJECTED_MAX else model.pool](conv_map) \
                if concept_pool == "pooled" else None
            codes = answer_codes(questions, answer_ids, len(model.vocab))
            extra = concept_weight * concept_loss(head_logits(concepts, conv_map, pooled, concept_pool),
                                                  concepts.targets(codes, owner, images.shape[0]))
            if category_head is not None and categories is not None:
                image_ids = torch.zeros(images.shape[0], dtype=torch.long)
                image_ids[owner.cpu()] = torch.tensor([items[i].image_id for i in indices.tolist()])
                present = categories.targets(image_ids).to(device)
                extra = extra + concept_weight * category_loss(
                    head_logits(category_head, conv_map, pooled, concept_pool), present)
        if losses.spread_weight > 0:
            extra = extra + losses.spread_weight * spread_loss(conv_map)
        logits = model.answer_logits(features[owner], questions)
        answer_loss = soft_target_loss(logits, targets)
        loss = answer_loss + extra
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {loss.item()} in epoch {epoch}; lower the learning rate"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), _MAX_GRAD_NORM)
        optimizer.step()
        total, count = total + answer_loss.item() * len(indices), count + len(indices)
        batches.set_postfix(loss=f"{answer_loss.item():.3f}")
    return total / max(count, 1)


def _validation_files(questions: Path, annotations: Path, val_questions: str | Path | None,
                      val_annotations: str | Path | None) -> tuple[Path, Path] | None:
    if (val_questions is None) != (val_annotations is None):
        raise ValueError(
            "pass both val_questions and val_annotations or neither, got "
            f"{val_questions!r} and {val_annotations!r}"
        )
    # After the check above, either both are given or neither.
    if val_questions is not None and val_annotations is not None:
        return Path(val_questions), Path(val_annotations)
    siblings = (questions.with_name("vqa_questions_val.json"), annotations.with_name("vqa_annotations_val.json"))
    if (questions.name, annotations.name) == ("vqa_questions_train.json", "vqa_annotations_train.json") \
            and all(p.is_file() for p in siblings):
        return siblings
    return None


def _hold_out(items: list[VQAItem], seed: int, questions: Path) -> tuple[list[VQAItem], list[VQAItem]]:
    """Return (train, validation) items, holding out a share of the images with all their questions."""
    image_ids = sorted({i.image_id for i in items})
    if len(image_ids) < 2:
        raise ValueError(
            f"{questions} has {len(image_ids)} image(s) and no validation files: holding images out "
            "needs at least 2; pass val_questions and val_annotations"
        )
    count = max(1, round(_HOLDOUT_FRACTION * len(image_ids)))
    held = {image_ids[k] for k in np.random.default_rng(seed).permutation(len(image_ids))[:count]}
    return [i for i in items if i.image_id not in held], [i for i in items if i.image_id in held]



__all__ = ["VQADataset", "evaluate_vqa", "question_vocabulary", "soft_target_loss", "soft_targets", "train_vqa"]
