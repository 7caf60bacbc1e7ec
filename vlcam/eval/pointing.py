"""The word-level pointing game (paper Sec. 8.1.1, after Zhang et al.).

For each visual word of a caption whose category is annotated in the image, the word's
map (`WordLogProb` at its time step) is reduced to its maximum point; a hit is a point on
the union of that category's instance masks (or within `tolerance` pixels of it).
Baselines from the same items: the image centre, and a uniformly random point, whose
expected hit rate is the share of the image the (tolerance-grown) mask covers.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vlcam.adapters.protocol import Captioner
from vlcam.data.coco import category_boxes, category_masks, load_coco
from vlcam.data.wordmap import WordMap
from vlcam.eval.localization import box_from_map, box_iou
from vlcam.eval.runner import SIZE_DIFFERS, Run, count_skip, image_file_size, resumable_run, skip_counts


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
    difficult: bool  # Zhang et al.'s difficult set: see is_difficult
    peak_at_border: bool  # within BORDER_PX of the image border
    mask_border_share: float  # the share of the category's pixels that are


# Zhang et al. (2016) and TorchRay: the target covers less than a quarter of the image, and
# another category is present.
DIFFICULT_AREA = 0.25


# A map whose peaks crowd the border more than the objects do shows a padding artefact; this
# is how far from the border a peak counts as "at" it.
BORDER_PX = 4


def border_fields(mask: np.ndarray, peak: tuple[int, int]) -> dict[str, Any]:
    """Return whether `peak` is within `BORDER_PX` of the border, and the share of `mask` that is."""
    h, w = mask.shape
    band = np.ones_like(mask, dtype=bool)
    band[BORDER_PX:h - BORDER_PX, BORDER_PX:w - BORDER_PX] = False
    row, col = peak
    total = int(mask.sum())
    return {"peak_at_border": bool(band[row, col]),
            "mask_border_share": float((mask & band).sum() / total) if total else 0.0}


def is_difficult(masks: Mapping[int, np.ndarray], category_id: int) -> bool:
    """Whether a word of `category_id` is in the pointing game's difficult set for an image with
    these category `masks`: the category covers under DIFFICULT_AREA of the image and another
    category is present (Zhang et al., "Top-down neural attention by excitation backprop")."""
    return len(masks) > 1 and float(masks[category_id].mean()) < DIFFICULT_AREA


def disc_grown(mask: np.ndarray, tolerance: int) -> np.ndarray:
    """Return `mask` grown by a disc of radius `tolerance` pixels (TorchRay's tolerance)."""
    if tolerance <= 0:
        return mask
    from scipy import ndimage

    r = int(tolerance)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    grown: np.ndarray = ndimage.binary_dilation(mask, structure=(yy**2 + xx**2) <= r * r)
    return grown


def _explained_words(
    model: Captioner, image: Any, anns: list[dict[str, Any]], word_map: WordMap, masks: dict[int, np.ndarray],
    method: str, counts: dict[str, Any], on_explanation: Any = None, layer: str | None = None,
) -> Iterator[tuple[dict[str, Any], list[str], Any, tuple[int, int], Any]]:
    """Yield (caption, its tokens, word match, map peak, word map) for every visual word of
    `anns` whose category is annotated (in `masks`), one explanation per caption.

    Adds to counts['captions'] and counts['not_annotated'] (visual words without an instance).
    """
    from vlcam.explain.caption import caption_words, explain_caption

    for ann in anns:
        tokens = caption_words(model, ann["caption"])
        matches = word_map.match(tokens)
        present = [m for m in matches if m.category_id in masks]
        counts["not_annotated"] += len(matches) - len(present)
        counts["captions"] += 1
        if not present:
            continue
        explanation = explain_caption(model, image, ann["caption"], words=[m.head for m in present], method=method,
                                      layer=layer)
        if on_explanation is not None:
            on_explanation(ann, explanation)
        for match, peak, heat in zip(present, explanation.word_peaks(), explanation.word_maps):
            yield ann, tokens, match, peak, heat


def annotated_size(captions: Any, instances: Any, image_id: int) -> tuple[int, int]:
    """Return the (height, width) the annotations give an image: the instances file's, whose
    masks are drawn at that size, else the captions file's."""
    info = instances.imgs.get(image_id) or captions.imgs[image_id]
    return int(info["height"]), int(info["width"])


def check_same_images(captions: Any, instances: Any, captions_json: str | Path, instances_json: str | Path) -> None:
    """Raise ValueError naming both files if no image of `captions` is in `instances`."""
    captioned = captions.getImgIds()
    if captioned and not set(captioned) & set(instances.getImgIds()):
        raise ValueError(
            f"none of the {len(captioned)} images of {captions_json} is in {instances_json}: the captions "
            "and instances files are of different splits or datasets, so no word could be scored"
        )


def iter_caption_pointing(
    model: Captioner,
    captions_json: str | Path,
    instances_json: str | Path,
    images_dir: str | Path,
    word_map: WordMap,
    *,
    tolerance: int = 0,
    method: str = "gradcam",
    limit: int | None = None,
    counts: dict[str, Any] | None = None,
) -> Iterator[PointingItem]:
    """Yield one :class:`PointingItem` per visual word with an annotated category.

    `counts` (if given) is filled with 'not_annotated' (visual words whose category has
    no instance in the image) and 'captions'; images of another size than their
    annotation are skipped and counted in `counts['skipped']` (a dict by reason, present
    only when an image was skipped). ValueError if no captioned image is in the
    instances file.
    """
    for items in _pointing_items(model, captions_json, instances_json, images_dir, word_map, (tolerance,),
                                 method, limit, counts):
        yield items[tolerance]


def _pointing_items(
    model: Captioner, captions_json: str | Path, instances_json: str | Path, images_dir: str | Path,
    word_map: WordMap, tolerances: Sequence[int], method: str, limit: int | None,
    counts: dict[str, Any] | None,
) -> Iterator[dict[int, PointingItem]]:
    """Yield, per visual word, its item at each tolerance: one explanation serves them all."""
    captions = load_coco(captions_json)
    instances = load_coco(instances_json)
    check_same_images(captions, instances, captions_json, instances_json)
    counts = counts if counts is not None else {}
    counts.setdefault("not_annotated", 0)
    counts.setdefault("captions", 0)
    for image_id in sorted(captions.getImgIds())[:limit]:
        path = Path(images_dir) / captions.loadImgs([image_id])[0]["file_name"]
        height, width = annotated_size(captions, instances, image_id)
        if image_file_size(path) not in (None, (height, width)):
            count_skip(counts, SIZE_DIFFERS)
            continue
        masks = category_masks(instances, image_id)
        grown = {t: {c: disc_grown(m, t) for c, m in masks.items()} for t in tolerances}
        center = (height // 2, width // 2)
        anns = captions.loadAnns(captions.getAnnIds(imgIds=[image_id]))
        for ann, tokens, match, (row, col), _ in _explained_words(
                model, path, anns, word_map, masks, method, counts):
            border = border_fields(masks[match.category_id], (row, col))
            items = {}
            for t in tolerances:
                region = grown[t][match.category_id]
                items[t] = PointingItem(
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
                    difficult=is_difficult(masks, match.category_id),
                    **border,
                )
            yield items


RANDOM_BASELINES = ("expected", "seeded")


def pointing_scores(words: Sequence[Mapping[str, Any]], *,
                    random_baseline: Literal["expected", "seeded"] = "expected") -> dict[str, Any]:
    """Return pooled and per-category accuracy of word results, with the centre and random baselines.

    Each word holds 'category', 'hit', 'center_hit' and 'random_hit_rate' (the share of the
    image its grown mask covers). With `random_baseline` "expected", baselines['random'] is
    the mean of those shares: the expected hit rate of a uniformly random point. With
    "seeded", it is the share of the words' seeded random points ('random_hit') that hit,
    and the expectation is kept as baselines['random_expected'].
    """
    if random_baseline not in RANDOM_BASELINES:
        raise ValueError(f"random_baseline must be one of {', '.join(map(repr, RANDOM_BASELINES))}, "
                         f"got {random_baseline!r}")
    n = len(words)
    hits = sum(w["hit"] for w in words)
    per_cat: dict[str, list[bool]] = defaultdict(list)
    for w in words:
        per_cat[w["category"]].append(w["hit"])
    expected = float(np.mean([w["random_hit_rate"] for w in words])) if n else None
    baselines: dict[str, float | None] = {
        "center": sum(w["center_hit"] for w in words) / n if n else None,
        "random": expected,
    }
    if random_baseline == "seeded":
        baselines.update(random=sum(w["random_hit"] for w in words) / n if n else None, random_expected=expected)
    scores = {
        "accuracy": hits / n if n else None,
        "hits": hits,
        "misses": n - hits,
        "mean_category_accuracy": _category_mean(per_cat),
        "per_category": {c: float(np.mean(v)) for c, v in sorted(per_cat.items())},
        "baselines": baselines,
    }
    if words and all("peak_at_border" in w for w in words):
        # A border artefact shows as more peaks near the border than object pixels there.
        peaks = sum(w["peak_at_border"] for w in words) / n
        pixels = float(np.mean([w["mask_border_share"] for w in words]))
        scores["border"] = {"px": BORDER_PX, "peaks": peaks, "object_pixels": pixels,
                            "ratio": peaks / pixels if pixels else None}
    if all("difficult" in w for w in words):
        # TorchRay reports the per-category mean on all words and on the difficult set.
        hard = [w for w in words if w["difficult"]]
        hard_cat: dict[str, list[bool]] = defaultdict(list)
        for w in hard:
            hard_cat[w["category"]].append(w["hit"])
        scores["difficult"] = {
            "words": len(hard),
            "accuracy": sum(w["hit"] for w in hard) / len(hard) if hard else None,
            "mean_category_accuracy": _category_mean(hard_cat),
            "center": sum(w["center_hit"] for w in hard) / len(hard) if hard else None,
        }
    return scores


def _category_mean(per_category: Mapping[str, list[bool]]) -> float | None:
    """Return the mean over categories of each category's hit rate (TorchRay's convention)."""
    return float(np.mean([np.mean(v) for v in per_category.values()])) if per_category else None


def summarize(items: list[PointingItem], counts: dict[str, Any] | None = None,
              seconds: float | None = None) -> dict[str, Any]:
    """Return pooled and per-category accuracy with the centre and random (expected) baselines."""
    n = len(items)
    summary = pointing_scores([asdict(i) for i in items])
    if counts:
        summary.update({k: v for k, v in counts.items()})
    if seconds:
        summary["items_per_second"] = n / seconds
    return summary


def caption_pointing_game(model: Captioner, captions_json: str | Path, instances_json: str | Path,
                          images_dir: str | Path, word_map: WordMap, **kwargs: Any) -> dict[str, Any]:
    """Return the pointing-game summary over every caption of `captions_json` (see module doc)."""
    tolerance = kwargs.pop("tolerance", 0)
    return caption_pointing_games(model, captions_json, instances_json, images_dir, word_map,
                                  tolerances=(tolerance,), **kwargs)[tolerance]


def caption_pointing_games(model: Captioner, captions_json: str | Path, instances_json: str | Path,
                           images_dir: str | Path, word_map: WordMap, *, tolerances: Sequence[int] = (0, 15),
                           method: str = "gradcam", limit: int | None = None) -> dict[int, dict[str, Any]]:
    """Return {tolerance: the pointing-game summary} from one explanation of each caption."""
    counts: dict[str, Any] = {}
    start = time.perf_counter()
    per_tolerance: dict[int, list[PointingItem]] = {t: [] for t in tolerances}
    for items in _pointing_items(model, captions_json, instances_json, images_dir, word_map, tolerances,
                                 method, limit, counts):
        for t, item in items.items():
            per_tolerance[t].append(item)
    seconds = time.perf_counter() - start
    summaries = {}
    for t, found in per_tolerance.items():
        summaries[t] = summarize(found, dict(counts), seconds)
        summaries[t]["items"] = [asdict(i) for i in found]
    return summaries


# --- Resumable, shardable runs (scripts/eval_pointing.py) ---------------------------------

def _random_point_hit(region: np.ndarray, seed: int, key: tuple[int, int, int]) -> bool:
    # Seeded per item, not per process, so any sharding draws the same points.
    rng = np.random.default_rng([seed, *key])
    return bool(region[rng.integers(region.shape[0]), rng.integers(region.shape[1])])


def run_pointing_game(
    out_dir: str | Path,
    model: Captioner,
    captions_json: str | Path,
    instances_json: str | Path,
    images_dir: str | Path,
    word_map: WordMap,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    tolerance: int = 0,
    limit: int | None = None,
    seed: int = 0,
    num_workers: int = 2,
    examples: int = 4,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Return the summary (on rank 0; None on other ranks) after a resumable pointing-game run.

    Writes `out_dir/items.jsonl` (one line per visual word, one per finished image), then
    `summary.json`, `per_category.png` and a few example figures. Images already finished
    in `out_dir` are skipped; under torchrun the images are sharded by rank. `layer` is the
    explained layer's dotted name (default: the model's `default_layer`). Images that are
    missing, unreadable, too large to decode or of another size than their annotation are
    recorded as skipped, with the reason. ValueError if no captioned image is in the
    instances file.
    """
    captions, instances = load_coco(captions_json), load_coco(instances_json)
    check_same_images(captions, instances, captions_json, instances_json)
    image_ids = sorted(captions.getImgIds())[:limit]
    figures: list[Path] = []

    def unit_record(image_id: int) -> dict[str, Any]:
        return {"type": "image", "key": ["image", image_id], "image_id": image_id,
                "skipped": None, "not_annotated": 0, "captions": 0}

    def process(run: Run, image_id: int, pixels: np.ndarray) -> Iterator[dict[str, Any]]:

        def save_example(ann: dict[str, Any], explanation: Any) -> None:
            if run.shard.is_main and len(figures) < examples:
                figures.append(explanation.save(run.out / f"example_{ann['image_id']}_{ann['id']}.png"))

        record = unit_record(image_id)
        masks = category_masks(instances, image_id)
        boxes = category_boxes(instances, image_id)
        grown = {c: disc_grown(m, tolerance) for c, m in masks.items()}
        h, w = pixels.shape[:2]
        anns = captions.loadAnns(captions.getAnnIds(imgIds=[image_id]))
        for ann, tokens, match, (row, col), heat in _explained_words(
                model, pixels, anns, word_map, masks, method, record, save_example, layer):
            region = grown[match.category_id]
            key = (image_id, ann["id"], match.head)
            box = box_from_map(heat)
            yield {
                "type": "word", "key": ["word", *key], "image_id": image_id, "caption_id": ann["id"],
                "word_index": match.head, "word": tokens[match.head],
                "category_id": match.category_id, "category": match.category,
                "peak": [row, col], "hit": bool(region[row, col]),
                "center_hit": bool(region[h // 2, w // 2]),
                "random_hit": _random_point_hit(region, seed, key),
                "random_hit_rate": float(region.mean()),
                "difficult": is_difficult(masks, match.category_id),
                **border_fields(masks[match.category_id], (row, col)),
                "box": None if box is None else list(box),
                "box_iou": max((box_iou(box, b) for b in boxes[match.category_id]), default=0.0)
                if box is not None else 0.0,
            }
            run.computed += 1
        yield record

    summary = resumable_run(
        out_dir, image_ids, unit_record=unit_record,
        path_of=lambda i: Path(images_dir) / captions.loadImgs([i])[0]["file_name"], process=process,
        order=lambda r: (r["image_id"], r["type"] == "image", r["key"][2:]),
        summarize=lambda records: {**_run_summary(records, method, tolerance, seed),
                                   "layer": layer or model.default_layer},
        desc="pointing", num_workers=num_workers, progress=progress,
        annotated_size=lambda i: annotated_size(captions, instances, i))
    if summary is not None:
        plot_per_category(summary, Path(out_dir) / "per_category.png")
    return summary


def _run_summary(records: list[dict[str, Any]], method: str, tolerance: int, seed: int) -> dict[str, Any]:
    words = [r for r in records if r["type"] == "word"]
    images = [r for r in records if r["type"] == "image"]
    n = len(words)
    return {
        "method": method,
        "tolerance": tolerance,
        "seed": seed,
        "images": len(images),
        "captions": sum(r["captions"] for r in images),
        **pointing_scores(words, random_baseline="seeded"),
        "skipped": skip_counts(images),
        "not_annotated": sum(r["not_annotated"] for r in images),
        # Sec. 4.1: the box around the largest segment above 15% of the map's maximum,
        # against the best-matching ground-truth box of the word's category.
        "localization": {
            "mean_iou": float(np.mean([r["box_iou"] for r in words])) if n else None,
            "share_iou_at_least_0.5": sum(r["box_iou"] >= 0.5 for r in words) / n if n else None,
        },
    }


def plot_per_category(summary: Mapping[str, Any], path: Path) -> Path:
    """Return `path` after saving the per-category bar plot of a pointing summary, with its
    centre and random baselines."""
    from matplotlib.figure import Figure

    cats = list(summary["per_category"])
    fig = Figure(figsize=(max(4.0, 0.5 * len(cats) + 2), 3.2))
    ax = fig.subplots()
    ax.bar(range(len(cats)), [summary["per_category"][c] for c in cats], color="tab:blue", label="Grad-CAM")
    for name, style in (("center", "--"), ("random", ":")):
        value = summary["baselines"][name]
        if value is not None:
            ax.axhline(value, linestyle=style, color="k", label=f"{name} baseline")
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels(cats, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("pointing accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"pointing game, tolerance {summary['tolerance']} px: {summary['accuracy'] or 0:.1%} overall",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
