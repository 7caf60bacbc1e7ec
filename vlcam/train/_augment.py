"""Training-time augmentation that keeps the words true: mirror images, with left and right
swapped in their captions and questions, and shift them by a few pixels.

Nothing changes a colour (colours are words), and nothing flips upside down (captions say
"above" and "at the top", and some shapes have an up). A batch is augmented on the tensors
with a generator the trainer seeds from (seed, epoch), so the same run augments the same
way whatever the number of loader workers, and a resumed epoch as it would have uninterrupted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlcam.text import Vocabulary

MIRRORED_WORDS = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost"}
# Shifts of up to this share of the image side: 5 px at 128^2, a fifth of a small object.
MAX_SHIFT_FRACTION = 0.04


def mirror_ids(vocab: Vocabulary) -> torch.Tensor:
    """Return a LongTensor [V] taking each word id to its mirror image's (left <-> right), else itself."""
    table = torch.arange(len(vocab))
    index = {word: i for i, word in enumerate(vocab.words)}
    for word, mirrored in MIRRORED_WORDS.items():
        if word in index and mirrored in index:
            table[index[word]] = index[mirrored]
    return table


def augment_images(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (augmented images [B, 3, S, S], which were mirrored: bool [B]).

    Each image is mirrored left-right with probability 1/2 and shifted by a random whole
    number of pixels in each direction, up to `MAX_SHIFT_FRACTION` of its side, the edge
    pixels filling what the shift uncovers.
    """
    batch, _, height, width = images.shape
    mirrored = torch.rand(batch, generator=generator) < 0.5
    out = torch.where(mirrored[:, None, None, None], images.flip(-1), images)
    pad = max(1, round(MAX_SHIFT_FRACTION * min(height, width)))
    offsets = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator).tolist()
    padded = F.pad(out, (pad, pad, pad, pad), mode="replicate")
    out = torch.stack([padded[i, :, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(offsets)])
    return out, mirrored
