"""Word localisation of a model's own responses, after TAM (Li et al., ICCV 2025): Obj-IoU,
Func-IoU and F1-IoU.

A generative model writes object words, whose maps should cover their object, and function
words ("a", "of", "the", "and"), which name no object, so their maps should stay off the
objects. As in TAM, each word's map is min-max normalised on its own and binarised at
`threshold` (0.5):

- Obj-IoU: IoU of an object word's binarised map with its category's mask. Object words that
  name a category the image does not hold are hallucinations: counted apart, not scored.
- Func-IoU: IoU of a function word's binarised map with the background (the image less every
  object): 1 when it lights exactly the background, low when it lights objects.
- F1-IoU: their harmonic mean, which rewards maps that are on the object for object words
  and off it for the others.

The map-free baseline lights the whole image: Obj-IoU is then the object's share of the
image, Func-IoU the background's. Because every map is normalised on its own, these scores
say where a word's map points, not how strong it is; ``function_map_strength`` (a function
word's map maximum over the largest of its response) says that. Function words are spaCy's
English stop words (its list ships with spaCy: no trained pipeline needed) that name no
category. TAM's paper defines the metrics in words; this is our reading of them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vlcam.adapters.protocol import Captioner
from vlcam.data.coco import category_masks, load_coco
from vlcam.data.wordmap import WordMap
from vlcam.eval.runner import Run, resumable_run, skip_counts

THRESHOLD = 0.5


def function_words() -> frozenset[str]:
    """Return the closed-class English words treated as function words (spaCy's stop words)."""
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(w.lower() for w in STOP_WORDS)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Return |a & b| / |a | b| of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    """Return 2ab / (a + b), None when either is undefined, 0 when both are 0."""
    if a is None or b is None:
        return None
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def response_word_ious(
    tokens: list[str], maps: np.ndarray, masks: dict[int, np.ndarray], word_map: WordMap, *,
    functions: frozenset[str], threshold: float = THRESHOLD,
) -> Iterator[dict[str, Any]]:
    """Yield one record per object word and per function word of one response.

    `maps` [len(tokens), H, W] are the words' maps; `masks` the image's category masks.
    Records: word_index, word, kind ("object", "function" or "hallucinated"), category,
    iou (None for a hallucinated object), the full-map baseline's iou, peak, hit (the peak on
    the object for an object word, on the background for a function word) and, for function
    words, strength (the map's maximum over the largest of the response's maps).
    """
    h, w = maps.shape[-2:]
    objects = np.zeros((h, w), dtype=bool)
    for mask in masks.values():
        objects |= mask
    background = ~objects
    flat = maps.reshape(len(maps), -1)
    low, high = flat.min(axis=1), flat.max(axis=1)
    top = float(high.max())
    peaks = [tuple(int(v) for v in np.unravel_index(int(i), (h, w))) for i in flat.argmax(axis=1)]
    # A constant map (all zero: no evidence) lights nothing.
    lit = (maps - low[:, None, None]) >= threshold * (high - low)[:, None, None]
    lit &= (high > low)[:, None, None]
    named: set[int] = set()
    for match in word_map.match(tokens):
        named.update(range(match.start, match.stop))
        i = match.head
        peak = peaks[i]
        base = {"word_index": i, "word": tokens[i], "category": match.category, "peak": list(peak)}
        if match.category_id not in masks:
            yield {**base, "kind": "hallucinated", "iou": None, "baseline_iou": None, "hit": False}
            continue
        mask = masks[match.category_id]
        yield {**base, "kind": "object", "iou": mask_iou(lit[i], mask), "baseline_iou": float(mask.mean()),
               "hit": bool(mask[peak])}
    for i, token in enumerate(tokens):
        if i in named or token.lower() not in functions:
            continue
        peak = peaks[i]
        yield {"word_index": i, "word": token, "category": None, "peak": list(peak),
               "kind": "function", "iou": mask_iou(lit[i], background), "baseline_iou": float(background.mean()),
               "hit": bool(background[peak]), "strength": float(high[i]) / top if top > 0 else 0.0}


def summarize_word_ious(words: list[dict[str, Any]]) -> dict[str, Any]:
    """Return Obj-IoU, Func-IoU and F1-IoU of word records, with their map-free baselines and
    Obj-IoU per category."""

    def mean(kind: str, field: str) -> float | None:
        values = [r[field] for r in words if r["kind"] == kind]
        return float(np.mean(values)) if values else None

    obj, func = mean("object", "iou"), mean("function", "iou")
    obj_base, func_base = mean("object", "baseline_iou"), mean("function", "baseline_iou")
    per_category: dict[str, list[float]] = defaultdict(list)
    for r in words:
        if r["kind"] == "object":
            per_category[r["category"]].append(r["iou"])
    return {
        "obj_iou": obj, "func_iou": func, "f1_iou": harmonic_mean(obj, func),
        "object_words": sum(r["kind"] == "object" for r in words),
        "function_words": sum(r["kind"] == "function" for r in words),
        "hallucinated_object_words": sum(r["kind"] == "hallucinated" for r in words),
        "object_peak_on_object": mean("object", "hit"),
        "function_peak_on_background": mean("function", "hit"),
        "function_map_strength": mean("function", "strength"),
        "baselines": {"full_map_obj_iou": obj_base, "full_map_func_iou": func_base,
                      "full_map_f1_iou": harmonic_mean(obj_base, func_base)},
        "per_category_obj_iou": {c: float(np.mean(v)) for c, v in sorted(per_category.items())},
    }


def run_word_iou(
    out_dir: str | Path,
    model: Captioner,
    instances_json: str | Path,
    images_dir: str | Path,
    word_map: WordMap,
    *,
    prompt: str | None = None,
    layer: str | None = None,
    threshold: float = THRESHOLD,
    limit: int | None = None,
    num_workers: int = 2,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Return the summary (on rank 0; None on other ranks) of a resumable Obj-/Func-/F1-IoU run.

    Each image of `instances_json` is explained with the model's own greedy response (to
    `prompt` for a generative VLM; its own caption for a captioner), every word's Grad-CAM map
    at `layer` from one call. Writes items.jsonl (one line per scored word and per image) and
    summary.json in `out_dir`; resumes and shards like the other runs.
    """
    from vlcam.explain.caption import explain_caption

    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), a fraction of each map's range; got {threshold!r}")
    instances = load_coco(instances_json)
    image_ids = sorted(instances.getImgIds())[:limit]
    functions = function_words()

    def unit_record(image_id: int) -> dict[str, Any]:
        return {"type": "image", "key": ["image", image_id], "image_id": image_id, "skipped": None}

    def process(run: Run, image_id: int, pixels: np.ndarray) -> Iterator[dict[str, Any]]:
        record = unit_record(image_id)
        explanation = explain_caption(model, pixels, None, words="all", layer=layer, prompt=prompt)
        maps = explanation.word_maps.float().cpu().numpy()
        record["response"] = explanation.caption
        for word in response_word_ious(explanation.tokens, maps, category_masks(instances, image_id), word_map,
                                       functions=functions, threshold=threshold):
            yield {"type": "word", "key": ["word", image_id, word["word_index"]], "image_id": image_id, **word}
        run.computed += 1
        yield record

    def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
        images = [r for r in records if r["type"] == "image"]
        return {
            "images": len(images), "threshold": threshold,
            **summarize_word_ious([r for r in records if r["type"] == "word"]),
            "skipped": skip_counts(images),
        }

    def path_of(image_id: int) -> Path:
        return Path(images_dir) / str(instances.imgs[image_id]["file_name"])

    return resumable_run(out_dir, image_ids, unit_record=unit_record, path_of=path_of, process=process,
                         order=lambda r: r["key"], summarize=summarize, desc="word IoU",
                         num_workers=num_workers, progress=progress)
