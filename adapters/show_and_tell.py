"""Show and Tell (Vinyals et al., 2015): a CNN encoder and an LSTM that writes the caption.

The image's globally pooled conv features (average pooling as in the paper, or max
pooling), projected to the word-embedding size (and optionally batch-normalised, as in
the widely used PyTorch tutorial whose checkpoints :mod:`show_and_tell_tutorial` imports),
are the LSTM's input at t = 0; the words follow. Grad-CAM explains the encoder's last conv
map (`default_layer`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlcam._state import preserved
from vlcam.adapters._broadcast import tiled
from vlcam.adapters._word_ids import check_word_ids
from vlcam.adapters.backbones import Backbone, build_backbone
from vlcam.adapters.protocol import CaptionerBase
from vlcam.checkpoint import (
    FRACTION,
    NAME,
    POSITIVE_INT,
    CheckpointConfig,
    build_with_weights,
    existing_dir,
    one_of,
    read_config,
    read_vocabulary,
    read_weights,
    save_checkpoint,
    setting,
)
from vlcam.image import ImageLike, image_batch, preprocess
from vlcam.text import END, PAD, START, Vocabulary, explainable_ids, pad_sequences

KIND = "show_and_tell"
# Global pooling of the last conv map into the image vector. "avg" is Vinyals et al.'s
# (Inception's pooled features); "max" keeps where a feature fired most, so features of
# the background, present in every image, carry no information and cannot dominate;
# "avgmax" concatenates the two (2C values), so that how much of a feature there is (how
# many balls) survives beside whether it is anywhere.
def _avg(conv_map: torch.Tensor) -> torch.Tensor:
    return conv_map.mean(dim=(2, 3))


def _max(conv_map: torch.Tensor) -> torch.Tensor:
    return conv_map.amax(dim=(2, 3))


def _avgmax(conv_map: torch.Tensor) -> torch.Tensor:
    return torch.cat([_avg(conv_map), _max(conv_map)], dim=1)


POOLS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"avg": _avg, "max": _max, "avgmax": _avgmax}
# How many values per channel each pooling gives.
POOL_WIDTH = {"avg": 1, "max": 1, "avgmax": 2}
# The captioner's poolings: `POOLS`, and "projmax", which projects each position's features
# to the embedding first (the projection is linear: a 1 x 1 convolution) and then takes each
# component's maximum over positions. A component then says what is at one place - a colour
# and a shape together - where max pooling each channel on its own can take a colour from one
# object and a shape from another; and a word's Grad-CAM map is the projected features'
# contribution at each place, since the projection is applied there.
PROJECTED_MAX = "projmax"
IMAGE_POOLS = (*POOLS, PROJECTED_MAX)
# What follows the projection of the pooled features. "batchnorm" is the tutorial encoder's
# BatchNorm1d(momentum=0.01); "none" is the paper's plain projection.
IMAGE_NORMS = ("none", "batchnorm")
# How the image vector enters the LSTM. "first": as its input at t = 0, before the words
# (Vinyals et al.); "every": beside each word's embedding at every step (as in Donahue et
# al.'s LRCN and Mao et al.'s m-RNN), so the LSTM need not carry the image in its state
# and every word's loss reaches the CNN directly; "gated": beside each word, and also
# multiplied with it (the LSTM's input is [word, image, word * image], as the image gates the
# word representation in Kiros et al.'s multiplicative model, ICML 2014). The product lets the
# word just said pick out the image's features that go with it: after "red", the features of
# whatever is red. The pooled features say which colour goes with which shape (a linear probe
# on an "every" captioner's image vector gives each present shape's colour 0.98 of the time),
# but an additive LSTM input leaves that conditional read-out to the gates: that decoder names
# the red object after "a red" 0.74 of the time, the "gated" one trained the same way 0.86
# and 0.84 on a world it never saw (benchmarks/RESULTS.md).
IMAGE_INPUTS = ("first", "every", "gated")
VOCAB_FILE = "vocab.json"
# The most words of one caption explained at once (one backward each, stacked).
MAX_WORDS = 64


@dataclass(frozen=True)
class ShowAndTellConfig(CheckpointConfig):
    """The config.json of a :class:`ShowAndTell` checkpoint.

    `pool`, `image_norm`, `lstm_layers` and `image_input` came later: checkpoints without
    them load with the values they were trained with.
    """

    KIND = KIND
    DESCRIBES_FILES = ("vocab_size",)

    backbone: str = setting(NAME)
    embed_dim: int = setting(POSITIVE_INT)
    hidden_dim: int = setting(POSITIVE_INT)
    image_size: int = setting(POSITIVE_INT)
    dropout: float = setting(FRACTION)
    vocab_size: int = setting(POSITIVE_INT)
    pool: str = setting(one_of(*IMAGE_POOLS), "avg")
    image_norm: str = setting(one_of(*IMAGE_NORMS), "none")
    lstm_layers: int = setting(POSITIVE_INT, 1)
    image_input: str = setting(one_of(*IMAGE_INPUTS), "first")


class ShowAndTell(CaptionerBase):
    """The Show-and-Tell captioner over any :func:`build_backbone` backbone.

    `pool` ("avg", "max", "avgmax" or "projmax", see `POOLS` and `IMAGE_POOLS`) pools the last
    conv map; ``image_norm="batchnorm"`` adds the tutorial's BatchNorm1d after the projection
    (in train mode it needs batches of two or more images); `lstm_layers` stacks LSTMs, as the
    tutorial's ``num_layers`` does; `image_input` ("first" or "every", see `IMAGE_INPUTS`) says where the image enters.
    """

    kind = KIND

    def __init__(
        self,
        vocab: Vocabulary,
        backbone: str = "compact",
        *,
        pretrained: bool = False,
        embed_dim: int = 256,
        hidden_dim: int = 512,
        image_size: int = 128,
        dropout: float = 0.0,
        pool: str = "avg",
        image_norm: str = "none",
        lstm_layers: int = 1,
        image_input: str = "first",
    ) -> None:
        super().__init__()
        if not isinstance(vocab, Vocabulary):
            raise TypeError(f"vocab must be a vlcam.text.Vocabulary, got {type(vocab).__name__}")
        for key, value in (("embed_dim", embed_dim), ("hidden_dim", hidden_dim), ("image_size", image_size),
                           ("lstm_layers", lstm_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive int, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if pool not in IMAGE_POOLS:
            raise ValueError(f"pool must be one of {list(IMAGE_POOLS)}, got {pool!r}")
        if image_norm not in IMAGE_NORMS:
            raise ValueError(f"image_norm must be one of {list(IMAGE_NORMS)}, got {image_norm!r}")
        if image_input not in IMAGE_INPUTS:
            raise ValueError(f"image_input must be one of {list(IMAGE_INPUTS)}, got {image_input!r}")
        self.pool = pool
        self.image_input = image_input
        self.vocab = vocab
        self.image_size = image_size
        self.encoder: Backbone = build_backbone(backbone, pretrained=pretrained)
        self.mean = self.encoder.mean
        self.std = self.encoder.std
        self.default_layer = "encoder." + self.encoder.gradcam_layer
        self.image_embed = nn.Linear(POOL_WIDTH.get(pool, 1) * self.encoder.out_channels, embed_dim)
        # nn.Identity has no state, so checkpoints saved before image_norm existed still load.
        self.image_norm: nn.Module = (
            nn.BatchNorm1d(embed_dim, momentum=0.01) if image_norm == "batchnorm" else nn.Identity()
        )
        self.word_embed = nn.Embedding(len(vocab), embed_dim, padding_idx=PAD)
        lstm_input = {"every": 2 * embed_dim, "gated": 3 * embed_dim}.get(image_input, embed_dim)
        self.lstm = nn.LSTM(lstm_input, hidden_dim, lstm_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_dim, len(vocab))
        self.config: dict[str, Any] = {
            "kind": KIND,
            "backbone": backbone,
            "embed_dim": embed_dim,
            "hidden_dim": hidden_dim,
            "image_size": image_size,
            "dropout": dropout,
            "pool": pool,
            "image_norm": image_norm,
            "lstm_layers": lstm_layers,
            "image_input": image_input,
            "vocab_size": len(vocab),
        }

    # --- The model ------------------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Return the encoder's last conv map [B, C, h, w] of a normalised image batch."""
        _check_images(images)
        conv_map: torch.Tensor = self.encoder(images)
        return conv_map

    def image_vector(self, conv_map: torch.Tensor) -> torch.Tensor:
        """Return the LSTM's image input [B, E]: the pooled, projected (and normalised) map."""
        if self.pool == PROJECTED_MAX:
            projected = self.image_embed(conv_map.flatten(2).transpose(1, 2))  # [B, h*w, E]
            vector: torch.Tensor = self.image_norm(projected.amax(dim=1))
        else:
            vector = self.image_norm(self.image_embed(POOLS[self.pool](conv_map)))
        return vector

    def decode(self, conv_map: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Return next-word logits [B, L-1, V]: ``logits[:, t]`` scores ``tokens[:, t+1]``.

        `tokens` is [B, L] = <start> w1 .. wn <end> <pad>...; the teacher-forced inputs
        are ``tokens[:, :-1]``; an id outside the vocabulary is a ValueError. Broadcasting:
        when ``conv_map.shape[0]`` is r > 1 times ``tokens.shape[0]``, the tokens are tiled
        r times (``tokens.repeat(r, 1)``), so copy j of the features (rows
        ``j*B .. j*B+B-1``) pairs with the same captions; the Grad-CAM engine relies on this
        to explain several targets in one backward.
        """
        self._check_tokens(tokens, conv_map.shape[0])
        if conv_map.dim() != 4:
            raise ValueError(f"decode expects a conv map [B, C, h, w], got {tuple(conv_map.shape)}")
        return self._logits(conv_map, tokens)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Return next-word logits [B', L-1, V] (see :meth:`decode` for B' and alignment).

        The captions are checked before the encoder runs, so a bad one leaves the batch-norm
        statistics of a model in train mode alone.
        """
        _check_images(images)
        self._check_tokens(tokens, images.shape[0])
        return self._logits(self.encode(images), tokens)

    def _check_tokens(self, tokens: torch.Tensor, batch: int) -> None:
        """Raise for captions that are not [B, L] ids of the vocabulary pairing with `batch` images."""
        _tiled(tokens, batch)
        check_word_ids(tokens, len(self.vocab), "caption")

    def _logits(self, conv_map: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        # The conv map may hold K stacked copies of the images (batched targets): tile to it.
        tokens = _tiled(tokens, conv_map.shape[0])
        return self.vector_logits(self.image_vector(conv_map), tokens)

    def vector_logits(self, image_vectors: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Return next-word logits [N, L-1, V] of captions `tokens` [N, L] after image vectors [N, E].

        Row n of the captions follows row n of the vectors (:meth:`image_vector`); a trainer
        that encodes each image once indexes its vectors by the image of each caption.
        """
        if image_vectors.shape[0] != tokens.shape[0]:
            raise ValueError(f"{image_vectors.shape[0]} image vectors for {tokens.shape[0]} captions")
        image = image_vectors.unsqueeze(1)
        words = self.word_embed(tokens[:, :-1])
        if self.image_input != "first":
            hidden, _ = self.lstm(self.dropout(self._beside(words, image.expand_as(words))))
        else:
            hidden, _ = self.lstm(self.dropout(torch.cat([image, words], dim=1)))
            # hidden[:, 0] has seen the image alone; Vinyals et al. predict nothing from it.
            hidden = hidden[:, 1:]
        logits: torch.Tensor = self.classifier(self.dropout(hidden))
        return logits

    def word_logprobs(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Return log p(tokens[:, t+1] | image, tokens[:, :t+1]) as [B', L-1], 0 at <pad>.

        For one caption <start> w1 .. wn <end>: log p of each word, then of <end>.
        """
        return token_logprobs_from_logits(self(images, tokens), tokens)

    # --- Inputs ---------------------------------------------------------------------------

    def encode_caption(self, caption: str) -> tuple[list[str], tuple[torch.Tensor, ...]]:
        """Return (the caption's words, (its ids [1, n+2] = <start> w1 .. wn <end>,)).

        Words are vlcam's tokens (lowercased, without punctuation); unknown words become
        <unk> (with a warning). ValueError for a caption without words, with more than
        `MAX_WORDS`, or with no word in the vocabulary.
        """
        words, ids = explainable_ids(self.vocab, caption, "caption", MAX_WORDS, add_special=True)
        return words, (torch.tensor([ids], dtype=torch.long, device=next(self.parameters()).device),)

    def known_words(self) -> list[str]:
        """Return the vocabulary's words (special tokens included)."""
        return self.vocab.words

    def preprocess(self, images: torch.Tensor | ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Return a normalised [B, 3, S, S] batch from a tensor or one or more images.

        A tensor [3, H, W] or [B, 3, H, W] is taken as already preprocessed; a PIL image,
        path or array (or a list of them) is preprocessed at `image_size` with the
        backbone's mean/std, on the model's device.
        """
        return image_batch(images, lambda i: preprocess(i, self.image_size, self.mean, self.std)[0],
                           next(self.parameters()).device)

    def encode_captions(self, captions: Sequence[str]) -> torch.Tensor:
        """Return the captions as a <pad>-padded LongTensor [B, L] of <start> ... <end> ids.

        Unknown words become <unk>, with one warning naming them.
        """
        if isinstance(captions, str) or not captions:
            raise ValueError(f"captions must be a non-empty list of strings, got {captions!r:.80}")
        ids = self.vocab.encode_many(captions, add_special=True, warn=True)
        device = next(self.parameters()).device
        return torch.tensor(pad_sequences(ids), dtype=torch.long, device=device)

    # --- Generation -----------------------------------------------------------------------

    def generate(
        self, images: torch.Tensor | ImageLike | Sequence[ImageLike], *, max_len: int = 20, beam_size: int = 1
    ) -> list[list[int]]:
        """Return one caption per image as word ids, without <start>/<end>/<pad>.

        ``beam_size=1`` is greedy decoding. Beam search ranks captions by their plain
        (not length-normalised) log-probability, log p(w1..wn, <end> | image); a caption
        cut at `max_len` words is scored without <end>. <pad> and <start> are never
        generated. Runs in eval mode; the model's mode is restored afterwards.
        """
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"max_len must be a positive int, got {max_len!r}")
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
        batch = self.preprocess(images)
        with preserved(self, eval_mode=True), torch.no_grad():
            image = self.image_vector(self.encode(batch))
            if beam_size == 1:
                return self._greedy(image, max_len)
            return [self._beam(image[i:i + 1], max_len, beam_size) for i in range(image.shape[0])]

    def caption(self, images: torch.Tensor | ImageLike | Sequence[ImageLike], **kwargs: Any) -> list[str]:
        """Return one caption string per image (words joined by spaces); see :meth:`generate`."""
        return [" ".join(self.vocab.decode(ids)) for ids in self.generate(images, **kwargs)]

    def _step(
        self, embedded: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Return (next-word log-probs [N, V], the new LSTM state) after one input [N, E]."""
        hidden, state = self.lstm(embedded.unsqueeze(1), state)
        logprobs = F.log_softmax(self.classifier(hidden[:, 0]), dim=-1)
        return logprobs, state

    def _start(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Return the LSTM state before the first word: after the image with "first", else none."""
        if self.image_input != "first":
            return None
        return self._step(image, None)[1]

    def _word_step(
        self, words: torch.Tensor, image: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Return (next-word log-probs, state) after word ids [N] of images [N, E] (see `image_input`)."""
        embedded = self.word_embed(words)
        if self.image_input != "first":
            embedded = self._beside(embedded, image)
        return self._step(embedded, state)

    def _beside(self, words: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Return the LSTM input [..., 2E or 3E] of word embeddings and image vectors [..., E] (see `IMAGE_INPUTS`)."""
        parts = [words, image, words * image] if self.image_input == "gated" else [words, image]
        return torch.cat(parts, dim=-1)

    def _allowed(self, logprobs: torch.Tensor) -> torch.Tensor:
        blocked = logprobs.clone()
        blocked[:, [PAD, START]] = float("-inf")
        return blocked

    def _greedy(self, image: torch.Tensor, max_len: int) -> list[list[int]]:
        state = self._start(image)
        current = torch.full((image.shape[0],), START, dtype=torch.long, device=image.device)
        words: list[list[int]] = [[] for _ in range(image.shape[0])]
        done = [False] * image.shape[0]
        for _ in range(max_len):
            logprobs, state = self._word_step(current, image, state)
            current = self._allowed(logprobs).argmax(dim=-1)
            for i, w in enumerate(current.tolist()):
                if not done[i]:
                    if w == END:
                        done[i] = True
                    else:
                        words[i].append(w)
            if all(done):
                break
        return words

    def _beam(self, image: torch.Tensor, max_len: int, k: int) -> list[int]:
        state = self._start(image)
        beams: list[list[int]] = [[]]
        scores = torch.zeros(1, device=image.device)
        current = torch.tensor([START], device=image.device)
        finished: list[tuple[float, list[int]]] = []
        for _ in range(max_len):
            logprobs, (h, c) = self._word_step(current, image.expand(len(beams), -1), state)
            total = scores.unsqueeze(1) + self._allowed(logprobs)
            vocab_size = total.shape[1]
            # 2k candidates always hold k that do not end: each beam has one <end>.
            top_scores, top_ids = total.flatten().topk(min(2 * k, total.numel()))
            parents: list[int] = []
            new_beams: list[list[int]] = []
            new_scores: list[float] = []
            for rank, (score, flat) in enumerate(zip(top_scores.tolist(), top_ids.tolist())):
                parent, word = divmod(flat, vocab_size)
                if score == float("-inf") or len(parents) == k:
                    break
                if word != END:
                    parents.append(parent)
                    new_beams.append(beams[parent] + [word])
                    new_scores.append(score)
                elif rank < k:
                    # An ending enters only from the top k, so beam_size=1 is greedy.
                    finished.append((score, beams[parent]))
            if not parents:
                break
            index = torch.tensor(parents, device=image.device)
            state = (h[:, index], c[:, index])
            beams, scores = new_beams, torch.tensor(new_scores, device=image.device)
            current = torch.tensor([b[-1] for b in beams], device=image.device)
            # Scores only fall as words are added: no live beam can beat a finished caption
            # that already scores at least as high.
            if finished and max(s for s, _ in finished) >= float(scores.max()):
                break
        else:
            finished.extend(zip(scores.tolist(), beams))
        return max(finished, key=lambda f: f[0])[1]

    # --- Checkpoints ----------------------------------------------------------------------

    def save(self, ckpt_dir: str | Path) -> Path:
        """Return `ckpt_dir` after writing model.safetensors, config.json and vocab.json."""
        return save_checkpoint(ckpt_dir, self.state_dict(), self.config, {VOCAB_FILE: self.vocab.words})

    @classmethod
    def load(cls, ckpt_dir: str | Path, map_location: str | torch.device = "cpu") -> ShowAndTell:
        """Return the model saved by :meth:`save`, in eval mode, on `map_location`.

        Reads safetensors and JSON only (nothing is unpickled); the backbone is built
        without pretrained weights, so loading never downloads anything. A file that is
        missing, corrupt or does not fit the others is a FileNotFoundError or ValueError
        naming it (see :mod:`vlcam.checkpoint`).
        """
        ckpt_dir = existing_dir(ckpt_dir)
        config = read_config(ckpt_dir, ShowAndTellConfig)
        vocab = read_vocabulary(ckpt_dir / VOCAB_FILE, config.vocab_size)
        state = read_weights(ckpt_dir, map_location)
        model = build_with_weights(lambda: cls(vocab, pretrained=False, **config.arguments()), state, ckpt_dir)
        return model.to(map_location).eval()


def token_logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Return log p(tokens[:, t+1] | ...) [B', L-1] from `logits` [B', L-1, V], 0 at <pad>.

    `tokens` [B, L] is tiled when B' is a multiple of B, as in :meth:`ShowAndTell.decode`.
    """
    tokens = _tiled(tokens, logits.shape[0])
    targets = tokens[:, 1:]
    if logits.shape[:2] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} do not match tokens {tuple(tokens.shape)}: expected "
            f"logits [B, L-1, V] = [{targets.shape[0]}, {targets.shape[1]}, V]"
        )
    picked = F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(targets == PAD, 0.0)


def _check_images(images: object) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"encode expects a normalised image batch [B, 3, H, W], got {shape}")


def _tiled(tokens: torch.Tensor, batch: int) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[1] < 2:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a LongTensor [B, L] with L >= 2 (<start> ... <end>), got {shape}")
    return tiled(tokens, batch, "captions")
