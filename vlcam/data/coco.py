"""Reading COCO annotation files: checked JSON, captions, and pycocotools indexes with masks.

pycocotools is imported on the first call to :func:`load_coco`, never at ``import vlcam``.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def read_coco_file(path: str | Path, kind: str, keys: Sequence[str], expected: str) -> dict[str, Any]:
    """Return a COCO `kind` file's JSON ("captions", "instances"), checked to hold `keys`.

    `expected` describes the layout in the error for a file without them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO {kind} file not found: {path}")
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not set(keys) <= set(data):
        raise ValueError(f"{path} is not a COCO {kind} file: expected a JSON object with {expected}")
    return data


def read_coco_json(path: str | Path) -> dict[str, Any]:
    """Return a COCO captions file's JSON, checked to hold 'images' and 'annotations'."""
    data = read_coco_file(path, "captions", ("images", "annotations"),
                          "'images' and 'annotations' (each annotation with 'image_id' and 'caption')")
    bad = [a for a in data["annotations"] if not isinstance(a.get("caption"), str)]
    if bad:
        raise ValueError(f"{path}: {len(bad)} annotations have no string 'caption', e.g. {bad[0]!r:.200}")
    return data


def read_coco_captions(path: str | Path) -> list[str]:
    """Return the caption strings of a COCO captions file, in file order."""
    return [a["caption"] for a in read_coco_json(path)["annotations"]]


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


def category_boxes(coco: Any, image_id: int) -> dict[int, list[list[float]]]:
    """Return, per category id, the COCO boxes [x, y, w, h] of its instances in one image."""
    boxes: dict[int, list[list[float]]] = defaultdict(list)
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None)):
        boxes[ann["category_id"]].append(ann["bbox"])
    return boxes
