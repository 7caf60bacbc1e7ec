"""Hierarchical question-image co-attention (Lu et al., 2016, parallel co-attention; Fig. 12b).

The image is a ResNet's last spatial grid (14 x 14 at 448², 8 x 8 at 128² for the built-in
ResNet), each region projected to d (linear + tanh). The question is read at three levels:
words (a tanh embedding), phrases (1-, 2- and 3-gram convolutions, the max over n-gram
sizes at each word) and the whole question (an LSTM over the phrase features). At each
level a parallel co-attention weighs image regions and question words from their affinity
matrix C = tanh(Q^T W_b V); the attended vectors are fused from the word level up:

    h_w = tanh(W_w (q_w + v_w))
    h_p = tanh(W_p [q_p + v_p, h_w])
    h_s = tanh(W_s [q_s + v_s, h_p])
    logits = W_h h_s                    (p = softmax(logits))

Grad-CAM works at any ResNet block, ``cnn.body.layer1`` to ``cnn.body.layer4`` (the
default): each runs once per forward, and the blocks above the explained one are part of
the network the gradient flows through.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torchvision.models.resnet import BasicBlock

from vlcam.adapters.backbones import Backbone, build_backbone
from vlcam.adapters.vqa_base import (
    VQAConfig,
    VQAModel,
    check_dropout,
    check_positive,
    question_lengths,
    tile,
)
from vlcam.checkpoint import POSITIVE_INT, setting
from vlcam.text import PAD, Vocabulary

KIND = "hiecoatt"
SMALL_RESNET = "small_resnet"
RESNET_BLOCKS = ("layer1", "layer2", "layer3", "layer4")
# The built-in ResNet: strides 2 (stem), 2, 2, 1, 2 give layer3 a 16 x 16 and layer4 an 8 x 8
# map at 128², fine enough for the built-in world's objects (20-50 px) and cheap enough
# (about 0.17 GMAC per 128² image) to train on a few CPU cores.
_SMALL_WIDTHS = (32, 48, 96, 128, 192)
_SMALL_STRIDES = (2, 2, 2, 1, 2)


def small_resnet() -> Backbone:
    """Return the built-in ResNet: a stem and four BasicBlocks named like torchvision's
    (``conv1``, ``bn1``, ``relu``, ``layer1`` .. ``layer4``), 192 channels out."""
    stem_width, *widths = _SMALL_WIDTHS
    stem_stride, *strides = _SMALL_STRIDES
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Conv2d(3, stem_width, 3, stride=stem_stride, padding=1, bias=False),
        bn1=nn.BatchNorm2d(stem_width),
        relu=nn.ReLU(inplace=True),
    )
    c_in = stem_width
    for name, width, stride in zip(RESNET_BLOCKS, widths, strides):
        downsample = None
        if stride != 1 or c_in != width:
            downsample = nn.Sequential(nn.Conv2d(c_in, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))
        layers[name] = nn.Sequential(BasicBlock(c_in, width, stride=stride, downsample=downsample))
        c_in = width
    return Backbone(SMALL_RESNET, nn.Sequential(layers), out_channels=c_in, gradcam_layer="body.layer4")


def resnet_backbone(name: str, *, pretrained: bool = False) -> Backbone:
    """Return `name` ("small_resnet" or a torchvision ResNet such as "resnet18") as a backbone
    whose blocks are ``body.layer1`` .. ``body.layer4``."""
    if name == SMALL_RESNET:
        if pretrained:
            raise ValueError(f"{SMALL_RESNET!r} has no pretrained weights; pass pretrained=False")
        return small_resnet()
    if not isinstance(name, str) or not name.startswith(("resnet", "resnext", "wide_resnet")):
        raise ValueError(
            f"HieCoAtt needs a ResNet backbone with blocks layer1..layer4, got {name!r}; accepted: "
            f"{SMALL_RESNET!r} (built in, for the built-in world) or a torchvision resnet*, "
            "resnext*, wide_resnet* name (e.g. 'resnet18', 'resnet152')"
        )
    backbone = build_backbone(name, pretrained=pretrained)
    names = dict(backbone.named_modules())
    missing = [b for b in RESNET_BLOCKS if f"body.{b}" not in names]
    if missing:
        raise ValueError(f"backbone {name!r} has no blocks {missing}; pick a torchvision ResNet")
    return backbone


class ParallelCoAttention(nn.Module):
    """Lu et al.'s parallel co-attention: attended question and image vectors from their affinity.

    C = tanh(Q^T W_b V); H^v = tanh(W_v V + (W_q Q) C); H^q = tanh(W_q Q + (W_v V) C^T);
    a^v = softmax(w_hv^T H^v); a^q = softmax(w_hq^T H^q); q^ = sum_t a^q_t q_t,
    v^ = sum_n a^v_n v_n. Padded words (zero features, masked) take no part.
    """

    def __init__(self, dim: int, attention_dim: int) -> None:
        super().__init__()
        # No biases in W_b, W_v, W_q: a zeroed (padded) word then adds exactly nothing.
        self.w_b = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, attention_dim, bias=False)
        self.w_q = nn.Linear(dim, attention_dim, bias=False)
        self.w_hv = nn.Linear(attention_dim, 1)
        self.w_hq = nn.Linear(attention_dim, 1)

    def forward(
        self, words: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (q^ [B, d], v^ [B, d]) from words Q [B, T, d] (zero where `mask` [B, T] is
        False) and regions V [B, N, d]."""
        affinity = torch.tanh(words @ self.w_b(regions).transpose(1, 2))  # C, [B, T, N]
        wv, wq = self.w_v(regions), self.w_q(words)  # [B, N, k], [B, T, k]
        h_v = torch.tanh(wv + affinity.transpose(1, 2) @ wq)  # [B, N, k]
        h_q = torch.tanh(wq + affinity @ wv)  # [B, T, k]
        a_v = torch.softmax(self.w_hv(h_v).squeeze(-1), dim=1)
        a_q = torch.softmax(self.w_hq(h_q).squeeze(-1).masked_fill(~mask, float("-inf")), dim=1)
        return (a_q.unsqueeze(-1) * words).sum(dim=1), (a_v.unsqueeze(-1) * regions).sum(dim=1)


@dataclass(frozen=True)
class HieCoAttConfig(VQAConfig):
    """The config.json of a :class:`HieCoAtt` checkpoint."""

    KIND = KIND

    hidden_dim: int = setting(POSITIVE_INT)
    attention_dim: int = setting(POSITIVE_INT)


class HieCoAtt(VQAModel):
    """The hierarchical co-attention VQA model over a ResNet grid (see the module doc)."""

    kind = KIND
    config_schema = HieCoAttConfig

    def __init__(
        self,
        vocab: Vocabulary,
        answers: Sequence[str],
        backbone: str = SMALL_RESNET,
        *,
        pretrained: bool = False,
        hidden_dim: int = 512,
        attention_dim: int = 512,
        image_size: int = 128,
        dropout: float = 0.5,
    ) -> None:
        check_positive(hidden_dim=hidden_dim, attention_dim=attention_dim)
        check_dropout(dropout)
        super().__init__(vocab, answers, resnet_backbone(backbone, pretrained=pretrained), image_size)
        d = hidden_dim
        self.image_proj = nn.Linear(self.cnn.out_channels, d)
        self.word_embed = nn.Embedding(len(vocab), d, padding_idx=PAD)
        self.ngrams = nn.ModuleList(nn.Conv1d(d, d, n) for n in (1, 2, 3))
        self.lstm = nn.LSTM(d, d, batch_first=True)
        self.coattention = nn.ModuleDict(
            {level: ParallelCoAttention(d, attention_dim) for level in ("word", "phrase", "question")}
        )
        self.fuse_word = nn.Linear(d, d)
        self.fuse_phrase = nn.Linear(2 * d, d)
        self.fuse_question = nn.Linear(2 * d, d)
        self.classifier = nn.Linear(d, len(self.answers))
        self.dropout = nn.Dropout(dropout)
        self.config = {
            "kind": KIND, "backbone": backbone, "hidden_dim": hidden_dim, "attention_dim": attention_dim,
            "image_size": image_size, "dropout": dropout, "vocab_size": len(vocab),
            "num_answers": len(self.answers),
        }

    def encode_conv_map(self, conv_map: torch.Tensor) -> torch.Tensor:
        """Return the image regions [B, N, d]: the conv map's N = h*w cells, projected, tanh."""
        grid = conv_map.flatten(2).transpose(1, 2)  # [B, N, C]
        regions: torch.Tensor = self.dropout(torch.tanh(self.image_proj(grid)))
        return regions

    def encode_question_levels(self, questions: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Return ([word, phrase, question] features, each [B, T, d], zero at <pad>; the
        mask [B, T], True at words) of word ids [B, T]."""
        lengths = question_lengths(questions)
        mask = questions != PAD
        keep = mask.unsqueeze(-1).to(self.word_embed.weight.dtype)
        words = self.dropout(torch.tanh(self.word_embed(questions))) * keep
        # The n-gram starting at word t covers t..t+n-1; zeros past the end, as for padding.
        channels = words.transpose(1, 2)
        grams = [torch.tanh(conv(nn.functional.pad(channels, (0, conv.kernel_size[0] - 1))))
                 for conv in cast("Iterable[nn.Conv1d]", self.ngrams)]
        phrases = torch.stack(grams).amax(dim=0).transpose(1, 2) * keep
        packed = pack_padded_sequence(phrases, lengths.cpu(), batch_first=True, enforce_sorted=False)
        hidden, _ = self.lstm(packed)
        sentence, _ = pad_packed_sequence(hidden, batch_first=True, total_length=questions.shape[1])
        return [words, phrases, self.dropout(sentence) * keep], mask

    def answer_logits(self, image_features: torch.Tensor, questions: torch.Tensor) -> torch.Tensor:
        """Return logits [B', A] from image regions [B', N, d] and word ids [B, T]."""
        batch = image_features.shape[0]
        levels, mask = self.encode_question_levels(questions)
        mask = tile(mask, batch)
        fused = []
        for attend, features in zip(self.coattention.values(), levels):
            q, v = attend(tile(features, batch), image_features, mask)
            fused.append(self.dropout(q + v))
        h = torch.tanh(self.fuse_word(fused[0]))
        h = torch.tanh(self.fuse_phrase(torch.cat([fused[1], h], dim=1)))
        h = torch.tanh(self.fuse_question(torch.cat([fused[2], h], dim=1)))
        logits: torch.Tensor = self.classifier(self.dropout(h))
        return logits
