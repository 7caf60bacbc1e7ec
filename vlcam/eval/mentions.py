"""What a captioner's own captions say about the objects: are they there, and is their colour right?

Object words are the word map's category names (as the pointing game reads them). Over a
set of images with instance annotations:

- ``precision``: the share of object mentions whose category is in the image; one minus it
  is CHAIR_i, the object-hallucination rate of Rohrbach et al. (EMNLP 2018), and
  ``chair_s`` is the share of captions with at least one hallucinated object;
- ``recall``: the share of the categories present that the caption names, per image pooled;
- ``color_accuracy``: of the mentions of a category that is there and that say a colour
  ("a red ball", "two large blue boxes"), the share where an instance of that category in
  the image has that colour (a hallucinated object has no colour to get right).
  It needs a ``color`` field on the instances (the built-in world writes one); without it,
  None. The colour is the word right before the name, past size and number words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vlcam.data.wordmap import WordMap

# Skipped between a colour and its noun: "a red large ball" is not said, "two red balls" and
# "a large red ball" are, and neither "large" nor "two" is a colour.
_MODIFIERS = frozenset({"small", "large", "big", "little", "one", "two", "three", "four", "five"})


@dataclass(frozen=True)
class ImageObjects:
    """What is in one image: category id -> the colours of its instances (empty if unknown)."""

    colors: Mapping[int, frozenset[str]]


def object_mentions(
    captions: Sequence[Sequence[str]], images: Sequence[ImageObjects], word_map: WordMap,
    color_words: frozenset[str],
) -> dict[str, Any]:
    """Return precision, recall, CHAIR_s and colour accuracy of tokenised `captions` (module doc).

    ``captions[i]`` describes ``images[i]``. `color_words` are the words read as colours; an
    empty set leaves ``color_accuracy`` None. Also returned: ``mentions``,
    ``hallucinated``, ``categories_present``, ``categories_named``, ``colored_mentions``,
    ``color_correct`` and ``images``.
    """
    if len(captions) != len(images) or not captions:
        raise ValueError(f"need one caption per image, got {len(captions)} captions for {len(images)} images")
    mentions = hallucinated = present_total = named_total = colored = color_right = 0
    captions_with_hallucination = 0
    for tokens, image in zip(captions, images):
        matches = word_map.match(tokens)
        wrong = [m for m in matches if m.category_id not in image.colors]
        mentions += len(matches)
        hallucinated += len(wrong)
        captions_with_hallucination += bool(wrong)
        present_total += len(image.colors)
        named_total += len({m.category_id for m in matches} & set(image.colors))
        for m in matches:
            said = _color_before(tokens, m.start, color_words)
            if said is not None and m.category_id in image.colors:
                colored += 1
                color_right += said in image.colors.get(m.category_id, frozenset())
    return {
        "images": len(captions),
        "mentions": mentions,
        "hallucinated": hallucinated,
        "precision": (mentions - hallucinated) / mentions if mentions else None,
        "chair_i": hallucinated / mentions if mentions else None,
        "chair_s": captions_with_hallucination / len(captions),
        "categories_present": present_total,
        "categories_named": named_total,
        "recall": named_total / present_total if present_total else None,
        "colored_mentions": colored,
        "color_correct": color_right,
        "color_accuracy": color_right / colored if colored and color_words else None,
    }


def _color_before(tokens: Sequence[str], start: int, color_words: frozenset[str]) -> str | None:
    i = start - 1
    while i >= 0 and tokens[i] in _MODIFIERS:
        i -= 1
    return tokens[i] if i >= 0 and tokens[i] in color_words else None


def image_objects(instances: Any, image_id: int) -> ImageObjects:
    """Return the categories of one image of a COCO instances object and their instances' colours."""
    colors: dict[int, set[str]] = {}
    for ann in instances.loadAnns(instances.getAnnIds(imgIds=[image_id])):
        found = colors.setdefault(int(ann["category_id"]), set())
        if isinstance(ann.get("color"), str):
            found.add(ann["color"])
    return ImageObjects({c: frozenset(v) for c, v in colors.items()})


def color_vocabulary(instances: Any) -> frozenset[str]:
    """Return every instance ``color`` of a COCO instances object (empty for plain COCO)."""
    return frozenset(a["color"] for a in instances.dataset.get("annotations", []) if isinstance(a.get("color"), str))
