"""The word-level pointing game (paper Sec. 8.1.1, after Zhang et al.).

For each visual word of a caption whose category is annotated in the image, the word's
map (`WordLogProb` at its time step) is reduced to its maximum point; a hit is a point on
the union of that category's instance masks (or within `tolerance` pixels of it).
Baselines from the same items: the image centre, and a uniformly random point, whose
expected hit rate is the share of the image the (tolerance-grown) mask covers.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from vlcam.data.wordmap import WordMap
from vlcam.text import tokenize


@dataclass
class PointingItem:
    """One visual word of one caption, and how its map and the baselines fared."""

    image_id: int
    caption_id: int
    word_index: int
    word: str
    category_id: int
    category: str
    peak: tuple[int, int]
    hit: bool
    center_hit: bool
    random_hit_rate: float


def disc_grown(mask: np.ndarray, tolerance: int) -> np.ndarray:
    """Return `mask` grown by a disc of radius `tolerance` pixels (TorchRay's tolerance)."""
    if tolerance <= 0:
        return mask
    from scipy import ndimage

    r = int(tolerance)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return ndimage.binary_dilation(mask, structure=(yy**2 + xx**2) <= r * r)


def load_coco(path: str | Path) -> Any:
    """Return a pycocotools COCO index of `path`, without its progress prints."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def category_masks(coco: Any, image_id: int) -> dict[int, np.ndarray]:
    """Return, per category id, the union of its instance masks in one image (bool H x W)."""
    masks: dict[int, np.ndarray] = {}
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None)):
        mask = coco.annToMask(ann).astype(bool)
        cat = ann["category_id"]
        masks[cat] = masks[cat] | mask if cat in masks else mask
    return masks


def iter_caption_pointing(
    model: nn.Module,
    captions_json: str | Path,
    instances_json: str | Path,
    images_dir: str | Path,
    word_map: WordMap,
    *,
    tolerance: int = 0,
    method: str = "gradcam",
    limit: int | None = None,
    counts: dict[str, int] | None = None,
) -> Iterator[PointingItem]:
    """Yield one :class:`PointingItem` per visual word with an annotated category.

    `counts` (if given) is filled with 'not_annotated' (visual words whose category has
    no instance in the image) and 'captions'.
    """
    from vlcam.explain.caption import explain_caption

    captions = load_coco(captions_json)
    instances = load_coco(instances_json)
    counts = counts if counts is not None else {}
    counts.setdefault("not_annotated", 0)
    counts.setdefault("captions", 0)
    image_ids = sorted(captions.getImgIds())[:limit]
    for image_id in image_ids:
        info = captions.loadImgs([image_id])[0]
        masks = category_masks(instances, image_id)
        grown = {c: disc_grown(m, tolerance) for c, m in masks.items()}
        path = Path(images_dir) / info["file_name"]
        h, w = info["height"], info["width"]
        center = (h // 2, w // 2)
        for ann in captions.loadAnns(captions.getAnnIds(imgIds=[image_id])):
            tokens = tokenize(ann["caption"])
            matches = word_map.match(tokens)
            present = [m for m in matches if m.category_id in masks]
            counts["not_annotated"] += len(matches) - len(present)
            counts["captions"] += 1
            if not present:
                continue
            explanation = explain_caption(model, path, ann["caption"], words=[m.head for m in present],
                                          method=method)
            for match, (row, col) in zip(present, explanation.word_peaks()):
                region = grown[match.category_id]
                yield PointingItem(
                    image_id=image_id,
                    caption_id=ann["id"],
                    word_index=match.head,
                    word=tokens[match.head],
                    category_id=match.category_id,
                    category=match.category,
                    peak=(row, col),
                    hit=bool(region[row, col]),
                    center_hit=bool(region[center]),
                    random_hit_rate=float(region.mean()),
                )


def summarize(items: list[PointingItem], counts: dict[str, int] | None = None,
              seconds: float | None = None) -> dict[str, Any]:
    """Return pooled and per-category accuracy with the centre and random baselines."""
    hits = sum(i.hit for i in items)
    per_cat: dict[str, list[bool]] = defaultdict(list)
    for i in items:
        per_cat[i.category].append(i.hit)
    n = len(items)
    summary: dict[str, Any] = {
        "accuracy": hits / n if n else None,
        "hits": hits,
        "misses": n - hits,
        "mean_category_accuracy": float(np.mean([np.mean(v) for v in per_cat.values()])) if per_cat else None,
        "per_category": {c: float(np.mean(v)) for c, v in sorted(per_cat.items())},
        "baselines": {
            "center": sum(i.center_hit for i in items) / n if n else None,
            "random": float(np.mean([i.random_hit_rate for i in items])) if n else None,
        },
    }
    if counts:
        summary.update({k: v for k, v in counts.items()})
    if seconds:
        summary["items_per_second"] = n / seconds
    return summary


def caption_pointing_game(model: nn.Module, captions_json: str | Path, instances_json: str | Path,
                          images_dir: str | Path, word_map: WordMap, **kwargs: Any) -> dict[str, Any]:
    """Return the pointing-game summary over every caption of `captions_json` (see module doc)."""
    counts: dict[str, int] = {}
    start = time.perf_counter()
    items = list(iter_caption_pointing(model, captions_json, instances_json, images_dir, word_map,
                                       counts=counts, **kwargs))
    summary = summarize(items, counts, time.perf_counter() - start)
    summary["items"] = [asdict(i) for i in items]
    return summary
