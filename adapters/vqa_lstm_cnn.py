"""VQA "deeper LSTM Q + norm I" (Antol et al., 2015; the model of the paper's Fig. 12a).

The question goes through a tanh word embedding and a two-layer LSTM; the last hidden and
cell states of both layers, concatenated, are projected (linear + tanh) to a common size.
The image's globally pooled last-conv features (average pooling as in the paper, or max
pooling, see :data:`vlcam.adapters.show_and_tell.POOLS`) are L2-normalised and projected the
same way; with ``pool="projmax"`` each position's features are L2-normalised and projected,
and each component keeps its maximum over positions (see
:data:`vlcam.adapters.show_and_tell.IMAGE_POOLS`). The two vectors are multiplied
elementwise and an MLP (two tanh hidden layers) scores the answers. Grad-CAM explains the
CNN's last conv block (`default_layer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from vlcam.adapters.backbones import build_backbone
from vlcam.adapters.show_and_tell import IMAGE_POOLS, POOL_WIDTH, POOLS, PROJECTED_MAX
from vlcam.adapters.vqa_base import (
    VQAConfig,
    VQAModel,
    check_dropout,
    check_positive,
    question_lengths,
    tile,
)
from vlcam.checkpoint import BOOL, POSITIVE_INT, one_of, setting
from vlcam.text import PAD, Vocabulary

KIND = "vqa_lstm_cnn"


@dataclass(frozen=True)
class VQALSTMCNNConfig(VQAConfig):
    """The config.json of a :class:`VQALSTMCNN` checkpoint (`pool` and `attention` came later:
    "avg" and false without them)."""

    KIND = KIND

    embed_dim: int = setting(POSITIVE_INT)
    hidden_dim: int = setting(POSITIVE_INT)
    common_dim: int = setting(POSITIVE_INT)
    mlp_dim: int = setting(POSITIVE_INT)
    pool: str = setting(one_of(*IMAGE_POOLS), "avg")
    attention: bool = setting(BOOL, False)


class VQALSTMCNN(VQAModel):
    """Deeper LSTM Q + norm I (Antol et al.) over any :func:`build_backbone` CNN."""

    kind = KIND
    config_schema = VQALSTMCNNConfig

    def __init__(
        self,
        vocab: Vocabulary,
        answers: Sequence[str],
        backbone: str = "compact",
        *,
        pretrained: bool = False,
        embed_dim: int = 300,
        hidden_dim: int = 512,
        common_dim: int = 1024,
        mlp_dim: int = 1000,
        image_size: int = 128,
        dropout: float = 0.5,
        pool: str = "avg",
        attention: bool = False,
    ) -> None:
        check_positive(embed_dim=embed_dim, hidden_dim=hidden_dim, common_dim=common_dim, mlp_dim=mlp_dim)
        check_dropout(dropout)
        if pool not in IMAGE_POOLS:
            raise ValueError(f"pool must be one of {list(IMAGE_POOLS)}, got {pool!r}")
        super().__init__(vocab, answers, build_backbone(backbone, pretrained=pretrained), image_size)
        self.pool = pool
        self.word_embed = nn.Embedding(len(vocab), embed_dim, padding_idx=PAD)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers=2, batch_first=True)
        # (h, c) of both layers: 4 * hidden_dim, as in Antol et al.'s 2048 = 4 * 512.
        self.question_proj = nn.Linear(4 * hidden_dim, common_dim)
        self.image_proj = nn.Linear(POOL_WIDTH.get(pool, 1) * self.cnn.out_channels, common_dim)
        self.attention = attention
        if attention:
            self.position_proj = nn.Linear(self.cnn.out_channels, common_dim)
            self.attention_key = nn.Linear(common_dim, common_dim)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(common_dim, mlp_dim), nn.Tanh(),
            nn.Dropout(dropout), nn.Linear(mlp_dim, mlp_dim), nn.Tanh(),
            nn.Dropout(dropout), nn.Linear(mlp_dim, len(self.answers)),
        )
        self.config = {
            "kind": KIND, "backbone": backbone, "embed_dim": embed_dim, "hidden_dim": hidden_dim,
            "common_dim": common_dim, "mlp_dim": mlp_dim, "image_size": image_size, "dropout": dropout,
            "pool": pool, "attention": attention, "vocab_size": len(vocab),
            "num_answers": len(self.answers),
        }

    def encode_conv_map(self, conv_map: torch.Tensor) -> torch.Tensor:
        """Return the image vectors [B, common_dim]: pooled conv map, L2-normalised, linear, tanh
        (with `attention`, [B, 1 + h*w, common_dim]: that vector, then each position's)."""
        if self.attention:
            positions = torch.tanh(self.position_proj(F.normalize(conv_map.flatten(2).transpose(1, 2), dim=2)))
            return torch.cat([self.encode_pooled(conv_map)[:, None], positions], dim=1)
        return self.encode_pooled(conv_map)

    def encode_pooled(self, conv_map: torch.Tensor) -> torch.Tensor:
        if self.pool == PROJECTED_MAX:
            positions = F.normalize(conv_map.flatten(2).transpose(1, 2), dim=2)  # [B, h*w, C]
            return torch.tanh(self.image_proj(positions).amax(dim=1))
        return self.project_pooled(POOLS[self.pool](conv_map))

    def pooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """Return the globally pooled last conv map [B, POOL_WIDTH * C] of a normalised image batch
        (max pooling for "projmax", which pools after its projection)."""
        pooled: torch.Tensor = POOLS["max" if self.pool == PROJECTED_MAX else self.pool](self.cnn(images))
        return pooled

    def project_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Return the image vectors [B, common_dim] of pooled features: L2-normalised, linear, tanh."""
        return torch.tanh(self.image_proj(F.normalize(pooled, dim=1)))

    def encode_question_vectors(self, questions: torch.Tensor) -> torch.Tensor:
        """Return the question vectors [B, common_dim] of word ids [B, L]."""
        lengths = question_lengths(questions)
        words = torch.tanh(self.word_embed(questions))
        packed = pack_padded_sequence(words, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, c) = self.lstm(packed)
        layers = [t for layer in range(h.shape[0]) for t in (h[layer], c[layer])]
        return torch.tanh(self.question_proj(torch.cat(layers, dim=1)))

    def answer_logits(self, image_features: torch.Tensor, questions: torch.Tensor) -> torch.Tensor:
        """Return logits [B', A] from image vectors [B', common_dim] and word ids [B, L]."""
        question = tile(self.encode_question_vectors(questions), image_features.shape[0])
        if self.attention:
            image_features = self.attend(image_features, question)
        logits: torch.Tensor = self.classifier(image_features * question)
        return logits

    def attend(self, features: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """Return the pooled vector plus the question-weighted mean of the position vectors."""
        pooled, positions = features[:, 0], features[:, 1:]
        scores = (positions * self.attention_key(question)[:, None]).sum(dim=2) / positions.shape[2] ** 0.5
        return pooled + (torch.softmax(scores, dim=1)[:, :, None] * positions).sum(dim=1)
