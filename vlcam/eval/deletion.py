"""Deletion and insertion curves (Petsiuk et al., RISE, BMVC 2018) of caption-word and answer maps.

For an explained target, the pixels of the model input are taken in the order of a map,
highest first, in `steps` equal steps. Deletion replaces them by a baseline image, starting
from the image; insertion puts them back, starting from the baseline. A faithful map makes
the score fall fast (low deletion AUC) and rise fast (high insertion AUC). Each curve is
scored in batches through the explanation's own :meth:`~vlcam.explain._common.Explanation.scores`,
so exactly the explained target is measured.

The baseline is a Gaussian blur of the input (:func:`blurred`): it removes the shapes and
edges that make an object recognisable while keeping the image's colours and layout in the
large, so the curves do not end on an image unlike any the model was trained on (a black
or grey canvas). A random pixel order, seeded per target, is the reference every method is
compared with; a map's ties are broken in that same random order rather than in raster order.

Scores are normalised before the area is taken: a caption word's log-probability becomes
its probability exp(log p), so curves lie in [0, 1]; an answer's score is kept as the
model gives it (a logit over a fixed vocabulary, a sequence score for an open one), since
its probability needs every column of the output, so answer AUCs are in score units and
only comparable between methods on the same run. The AUC is the trapezoid rule over the
fraction of pixels changed, from 0 to 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlcam.adapters.protocol import AnswerModel, Captioner
from vlcam.data.wordmap import WordMap
from vlcam.eval.occlusion import ScoreFn, _positive_int, _scores, occlusion_map
from vlcam.eval.runner import Run, caption_units, mean_and_error, question_units, resumable_run, skip_counts
from vlcam.explain._common import Explanation

#: The maps compared, in the order reports list them; RANDOM is the reference order.
METHODS = ("gradcam", "guided_gradcam", "occlusion")
RANDOM = "random"
MODES = ("deletion", "insertion")
Normalise = Callable[[torch.Tensor], torch.Tensor]


def default_sigma(size: int) -> float:
    """Return the blur's default standard deviation for an S x S input: S / 16 pixels.

    8 pixels at 128 x 128, 14 at 224 x 224: an object a few tens of pixels across loses its
    outline, and the image keeps its colours and rough layout.
    """
    return size / 16


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Return a Gaussian blur (standard deviation `sigma` pixels, reflected borders) of
    preprocessed `images` [B, 3, S, S].

    The blur is per channel and the normalisation affine per channel, so blurring the
    normalised tensor equals normalising the blurred image. The kernel spans 3 sigma either
    side, cut to what reflection allows (less than twice the image side).
    """
    from torchvision.transforms.functional import gaussian_blur

    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not sigma > 0:
        raise ValueError(f"sigma must be a positive number of pixels, got {sigma!r}")
    side = min(images.shape[-2:])
    kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * side - 1)
    result: torch.Tensor = gaussian_blur(images, [kernel, kernel], [float(sigma), float(sigma)])
    return result


def random_order(pixels: int, seed: Sequence[int]) -> torch.Tensor:
    """Return a permutation of range(`pixels`) drawn from NumPy's generator seeded with `seed`."""
    return torch.from_numpy(np.random.default_rng(list(seed)).permutation(pixels))


def pixel_order(saliency: torch.Tensor, tie_break: torch.Tensor) -> torch.Tensor:
    """Return the flat indices of the pixels of `saliency` [H, W], highest first, equal values
    in the order they have in the permutation `tie_break`."""
    tie_break = tie_break.to(saliency.device)
    values = saliency.flatten()[tie_break]
    return tie_break[torch.argsort(values, descending=True, stable=True)]


def step_counts(pixels: int, steps: int) -> torch.Tensor:
    """Return how many pixels are changed at each of the `steps` + 1 points: round(i * pixels / steps)."""
    return (torch.arange(steps + 1, dtype=torch.int64) * pixels + steps // 2) // steps


def curve(
    score_fn: ScoreFn,
    image: torch.Tensor,
    baseline: torch.Tensor,
    order: torch.Tensor,
    *,
    steps: int = 20,
    batch_size: int = 64,
    insertion: bool = False,
) -> torch.Tensor:
    """Return the scores [steps + 1] of a deletion (or, with `insertion`, insertion) curve.

    `image` and `baseline` are [1, C, H, W]; `order` holds the H * W flat pixel indices,
    first changed first. Point i changes the first ``step_counts(H * W, steps)[i]`` pixels
    (all channels): deletion sets them to the baseline in the image, insertion to the image
    in the baseline. The steps + 1 images are scored `batch_size` at a time under
    ``torch.no_grad()``: ceil((steps + 1) / batch_size) calls of `score_fn`.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"image must have shape [1, C, H, W], got {tuple(image.shape)}")
    if baseline.shape != image.shape:
        raise ValueError(f"baseline must have the image's shape {tuple(image.shape)}, got {tuple(baseline.shape)}")
    steps = _positive_int("steps", steps)
    batch_size = _positive_int("batch_size", batch_size)
    height, width = image.shape[-2:]
    pixels = height * width
    if order.shape != (pixels,):
        raise ValueError(f"order must hold the {pixels} pixel indices of a {height}x{width} image, "
                         f"got shape {tuple(order.shape)}")
    rank = torch.empty(pixels, dtype=torch.int64, device=image.device)
    rank[order.to(image.device)] = torch.arange(pixels, device=image.device)
    rank = rank.view(1, 1, height, width)
    start, end = (baseline, image) if insertion else (image, baseline)
    counts = step_counts(pixels, steps).to(image.device)
    scores = []
    with torch.no_grad():
        for first in range(0, steps + 1, batch_size):
            changed = rank < counts[first:first + batch_size].view(-1, 1, 1, 1)
            scores.append(_scores(score_fn, torch.where(changed, end, start)))
    return torch.cat(scores)


def auc(values: Sequence[float] | torch.Tensor, pixels: int) -> float:
    """Return the trapezoid-rule area under `values` (one per point of :func:`step_counts`)
    over the fraction of `pixels` changed."""
    y = np.asarray(values.tolist() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    x = step_counts(pixels, len(y) - 1).numpy() / pixels
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))


def target_curves(
    explanation: Explanation,
    k: int,
    maps: Mapping[str, torch.Tensor],
    *,
    seed: Sequence[int],
    normalise: Normalise = torch.exp,
    steps: int = 20,
    batch_size: int = 64,
    sigma: float | None = None,
) -> dict[str, Any]:
    """Return the deletion and insertion curves of explained target `k` for each map, and for
    a random order seeded with `seed`: {"score", "baseline_score", "pixels", "curves":
    {method: {"deletion": [...], "insertion": [...]}}, "auc": {method: {mode: area}}}.

    `maps` are [S, S] maps at the resolution of ``explanation.images`` [1, 3, S, S]; scores
    are ``normalise(explanation.scores(batch)[:, k])``; the baseline is :func:`blurred` with
    `sigma` (default :func:`default_sigma`).
    """
    image = explanation.images
    side = int(image.shape[-1])
    baseline = blurred(image, default_sigma(side) if sigma is None else sigma)
    pixels = int(image.shape[-2] * image.shape[-1])
    tie_break = random_order(pixels, seed)

    def score_fn(images: torch.Tensor) -> torch.Tensor:
        return explanation.scores(images)[:, k]

    orders = {}
    for name, saliency in maps.items():
        if tuple(saliency.shape) != tuple(image.shape[-2:]):
            raise ValueError(f"the {name} map has shape {tuple(saliency.shape)}, not the input's "
                             f"{tuple(image.shape[-2:])}: explain the preprocessed tensor")
        orders[name] = pixel_order(saliency, tie_break)
    orders[RANDOM] = tie_break
    result: dict[str, Any] = {"pixels": pixels, "curves": {}, "auc": {}}
    for name, order in orders.items():
        result["curves"][name], result["auc"][name] = {}, {}
        for mode in MODES:
            values = normalise(curve(score_fn, image, baseline, order, steps=steps, batch_size=batch_size,
                                     insertion=mode == "insertion")).double().cpu()
            result["curves"][name][mode] = values.tolist()
            result["auc"][name][mode] = auc(values, pixels)
    deletion = result["curves"][RANDOM]["deletion"]
    result["score"], result["baseline_score"] = deletion[0], deletion[-1]
    return result


def _method_maps(explanation: Explanation, guided: Explanation, k: int, *, patch: int, stride: int,
                 fill: float, batch_size: int) -> dict[str, torch.Tensor]:
    """Return target `k`'s Grad-CAM, Guided Grad-CAM and occlusion maps at the input resolution."""

    def score_fn(images: torch.Tensor) -> torch.Tensor:
        return explanation.scores(images)[:, k]

    return {
        "gradcam": explanation.maps[k],
        "guided_gradcam": guided.maps[k],
        "occlusion": occlusion_map(score_fn, explanation.images, patch=patch, stride=stride, fill=fill,
                                   batch_size=batch_size),
    }


def _summary(records: list[dict[str, Any]], settings: dict[str, Any], unit: str, explained: str
             ) -> dict[str, Any]:
    targets = [t for r in records for t in r.get("targets", [])]
    summary: dict[str, Any] = {
        unit: len(records), explained: len(targets), **settings,
        "mean_score": mean_and_error(t["score"] for t in targets)["mean"],
        "mean_baseline_score": mean_and_error(t["baseline_score"] for t in targets)["mean"],
        "skipped": skip_counts(records),
    }
    for method in (*METHODS, RANDOM):
        summary[method] = {mode: mean_and_error((t["auc"][method][mode] for t in targets), "mean_auc")
                           for mode in MODES}
    return summary


def plot_curves(records: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Return `path` after drawing the mean deletion and insertion curves of every method
    (AUCs of the mean curves in the legend); None, with nothing drawn, without any curve."""
    targets = [t for r in records for t in r.get("targets", [])]
    if not targets:
        return None
    from matplotlib.figure import Figure  # lazy: matplotlib is slow to import

    from vlcam.explain.figures import save_figure

    pixels = targets[0]["pixels"]
    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, mode in zip(axes, MODES):
        for method in (*METHODS, RANDOM):
            mean = np.mean([t["curves"][method][mode] for t in targets], axis=0)
            x = step_counts(pixels, len(mean) - 1).numpy() / pixels
            ax.plot(x, mean, label=f"{method} (AUC {auc(mean.tolist(), pixels):.3f})",
                    linestyle="--" if method == RANDOM else "-")
        ax.set_title(f"{mode} ({'lower' if mode == 'deletion' else 'higher'} is better)")
        ax.set_xlabel("fraction of pixels " + ("removed" if mode == "deletion" else "inserted"))
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mean normalised score")
    fig.suptitle(f"{title} ({len(targets)} targets)" if title else f"{len(targets)} targets")
    fig.tight_layout()
    return save_figure(fig, path)


def run_deletion(
    out_dir: str | Path,
    model: Captioner | AnswerModel,
    annotations: str | Path,
    images_dir: str | Path,
    word_map: WordMap | None = None,
    *,
    image_pattern: str = "COCO_{split}2014_{image_id:012d}.jpg",
    steps: int = 20,
    batch_size: int = 64,
    sigma: float | None = None,
    patch: int = 32,
    stride: int = 16,
    fill: float = 0.0,
    seed: int = 0,
    limit: int | None = None,
    num_workers: int = 2,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Return (on rank 0) the mean deletion and insertion AUC ± standard error of Grad-CAM,
    Guided Grad-CAM, occlusion and a random order, after a resumable run.

    A captioner reads COCO captions `annotations` and explains the visual words (in
    `word_map`, default the built-in world's) of the first `limit` captions by id, scored as
    probabilities; a VQA model reads VQA questions `annotations` (image files named by
    `image_pattern`) and explains each question's top answer, scored raw. Maps are taken at
    the model's input resolution; occlusion squares are `patch` wide on a `stride` grid,
    set to `fill`; the blur's `sigma` defaults to :func:`default_sigma` of the model's input
    side, and the random orders are seeded with `seed` and the target. Writes items.jsonl,
    summary.json and deletion.png (the mean curves).
    """
    settings: dict[str, Any] = {
        "steps": _positive_int("steps", steps), "batch_size": batch_size,
        "sigma": default_sigma(model.image_size) if sigma is None else sigma,
        "patch": patch, "stride": stride, "fill": fill, "seed": seed,
    }
    if isinstance(model, Captioner):
        return _run_captions(out_dir, model, annotations, images_dir, word_map or WordMap.builtin("synthetic"),
                             settings, limit=limit, num_workers=num_workers, progress=progress)
    if isinstance(model, AnswerModel):
        return _run_answers(out_dir, model, annotations, images_dir, image_pattern, settings, limit=limit,
                            num_workers=num_workers, progress=progress)
    raise TypeError(f"run_deletion needs a vlcam Captioner or AnswerModel, got {type(model).__name__}")


def _curve_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {"steps": settings["steps"], "batch_size": settings["batch_size"], "sigma": settings["sigma"]}


def _map_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: settings[k] for k in ("patch", "stride", "fill", "batch_size")}


def _run_captions(out_dir: str | Path, model: Captioner, captions_json: str | Path, images_dir: str | Path,
                  word_map: WordMap, settings: dict[str, Any], *, limit: int | None, num_workers: int,
                  progress: bool) -> dict[str, Any] | None:
    from vlcam.explain.caption import caption_words, explain_caption

    anns, path_of = caption_units(captions_json, images_dir, limit)

    def unit_record(ann: dict[str, Any]) -> dict[str, Any]:
        return {"key": ann["id"], "image_id": ann["image_id"], "targets": []}

    def process(run: Run, ann: dict[str, Any], pixels: np.ndarray) -> list[dict[str, Any]]:
        record = unit_record(ann)
        try:
            tokens = caption_words(model, ann["caption"])
            heads = [m.head for m in word_map.match(tokens)]
            if not heads:
                return [record]
            x = model.preprocess(pixels)
            explanation = explain_caption(model, x, ann["caption"], words=heads)
        except ValueError as err:  # a caption the model cannot score
            return [{**record, "skipped": str(err).split(":")[0][:80]}]
        guided = explain_caption(model, x, ann["caption"], words=heads, method="guided-gradcam")
        # Column 0 is the whole caption; the words follow in the order of `heads`.
        for k, t in enumerate(heads, start=1):
            maps = _method_maps(explanation, guided, k, **_map_settings(settings))
            record["targets"].append({
                "word_index": t, "word": tokens[t],
                **target_curves(explanation, k, maps, seed=(settings["seed"], ann["id"], t), normalise=torch.exp,
                                **_curve_settings(settings)),
            })
            run.computed += 1
        return [record]

    def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
        summary = _summary(records, {**settings, "score": "the word's probability exp(log p)"},
                           "captions", "words")
        plot_curves(records, Path(out_dir) / "deletion.png", "caption words")
        return summary

    return resumable_run(
        out_dir, anns, unit_record=unit_record,
        path_of=path_of,
        process=process, order=lambda r: r["key"], summarize=summarize, desc="caption deletion",
        num_workers=num_workers, progress=progress)


def _run_answers(out_dir: str | Path, model: AnswerModel, questions_json: str | Path, images_dir: str | Path,
                 image_pattern: str, settings: dict[str, Any], *, limit: int | None, num_workers: int,
                 progress: bool) -> dict[str, Any] | None:
    from vlcam.explain.answer import explain_answer

    questions, path_of = question_units(questions_json, images_dir, image_pattern, limit)

    def unit_record(q: dict[str, Any]) -> dict[str, Any]:
        return {"key": q["question_id"], "image_id": q["image_id"], "targets": []}

    def process(run: Run, q: dict[str, Any], pixels: np.ndarray) -> list[dict[str, Any]]:
        record = unit_record(q)
        x = model.preprocess(pixels)
        try:
            explanation = explain_answer(model, x, q["question"])
        except ValueError as err:
            return [{**record, "skipped": str(err).split(":")[0][:80]}]
        guided = explain_answer(model, x, q["question"], explanation.answers[0], method="guided-gradcam")
        maps = _method_maps(explanation, guided, 0, **_map_settings(settings))
        record["targets"].append({
            "answer": explanation.answers[0],
            **target_curves(explanation, 0, maps, seed=(settings["seed"], q["question_id"]),
                            normalise=_identity, **_curve_settings(settings)),
        })
        run.computed += 1
        return [record]

    def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
        summary = _summary(records, {**settings, "score": "the answer's score as the model gives it (answer_scores)"},
                           "questions", "answers")
        plot_curves(records, Path(out_dir) / "deletion.png", "top answers")
        return summary

    return resumable_run(
        out_dir, questions, unit_record=unit_record, path_of=path_of, process=process,
        order=lambda r: r["key"], summarize=summarize, desc="answer deletion", num_workers=num_workers,
        progress=progress)


def _identity(scores: torch.Tensor) -> torch.Tensor:
    return scores


__all__ = ["METHODS", "RANDOM", "auc", "blurred", "curve", "default_sigma", "pixel_order", "plot_curves",
           "random_order", "run_deletion", "step_counts", "target_curves"]
