"""Evaluations beyond pointing: box ratio (Sec. 8.1), occlusion faithfulness (Sec. 5.3) and
correlation with human attention (Sec. 8.2).

All are resumable runs over JSON-lines items (see :func:`vlcam.eval.runner.resumable_run`),
sharded by rank under torchrun, each with a `summary.json` and a few example overlays.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlcam.adapters.protocol import AnswerModel, Captioner
from vlcam.data.wordmap import WordMap
from vlcam.eval.localization import box_ratio
from vlcam.eval.occlusion import occlusion_map, rank_correlation
from vlcam.eval.runner import Run, caption_units, mean_and_error, question_units, resumable_run, skip_counts
from vlcam.explain._common import Explanation

EXAMPLES = 4


def _example(run: Run, name: str, image: np.ndarray, maps: list[Any], titles: list[str], title: str,
             box: list[float] | None = None) -> None:
    """Save one of the first EXAMPLES overlay figures of a run (rank 0 only)."""
    if not run.shard.is_main or run.computed >= EXAMPLES:
        return
    from matplotlib.patches import Rectangle

    from vlcam.explain.figures import overlay_figure, save_figure

    fig = overlay_figure(image, [m.detach().cpu() for m in maps], titles, suptitle=title)
    if box is not None:
        for ax in fig.axes[: 1 + len(maps)]:
            ax.add_patch(Rectangle((box[0], box[1]), box[2], box[3], fill=False, color="white", linewidth=1.5))
    save_figure(fig, run.out / f"example_{name}.png")


def _correlations(records: list[dict[str, Any]], methods: tuple[str, ...]) -> dict[str, Any]:
    return {m: mean_and_error((r[m] for r in records), "mean_rank_correlation") for m in methods}


def _question_record(q: dict[str, Any]) -> dict[str, Any]:
    return {"key": q["question_id"], "image_id": q["image_id"]}


def _question_summary(records: list[dict[str, Any]], other: str, **settings: int) -> dict[str, Any]:
    """Return the summary of a run over VQA questions: Grad-CAM's and `other`'s correlations."""
    scored = [r for r in records if "gradcam" in r]
    return {
        "questions": len(records), "scored": len(scored), **settings,
        **_correlations(scored, ("gradcam", other)),
        "skipped": skip_counts(records),
    }


def run_box_ratio(
    out_dir: str | Path,
    model: Captioner,
    regions_json: str | Path,
    images_dir: str | Path,
    *,
    image_pattern: str = "synth_{image_id:06d}.png",
    limit: int | None = None,
    num_workers: int = 2,
) -> dict[str, Any] | None:
    """Return (on rank 0) the mean inside/outside ratio of region-phrase caption maps.

    `regions_json` holds ``{"regions": [{"image_id", "bbox": [x, y, w, h], "phrase"}]}``
    (DenseCap / Visual Genome style). A uniform map scores 1.0; the paper reports 3.27 for
    Grad-CAM on DenseCap regions.
    """
    from vlcam.explain.caption import explain_caption

    regions = json.loads(Path(regions_json).read_text(encoding="utf-8"))["regions"][:limit]

    def unit_record(unit: tuple[int, dict[str, Any]]) -> dict[str, Any]:
        index, region = unit
        return {"key": index, "image_id": region["image_id"], "phrase": region["phrase"]}

    def process(run: Run, unit: tuple[int, dict[str, Any]], pixels: np.ndarray) -> list[dict[str, Any]]:
        index, region = unit
        record = unit_record(unit)
        try:
            heat = explain_caption(model, pixels, region["phrase"], words=[]).caption_map
            record["ratio"] = box_ratio(heat, region["bbox"])
            _example(run, f"box_{index}", pixels, [heat], [f"ratio {record['ratio']:.2f}"],
                     region["phrase"], box=region["bbox"])
            run.computed += 1
        except ValueError as err:
            record["skipped"] = str(err).split(":")[0][:80]
        return [record]

    def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
        ratios = [r["ratio"] for r in records if "ratio" in r]
        return {
            "regions": len(records),
            **mean_and_error((x for x in ratios if np.isfinite(x)), "mean_ratio"),
            "uniform_map_ratio": 1.0,
            "infinite_ratios": sum(1 for x in ratios if not np.isfinite(x)),
            "skipped": skip_counts(records),
        }

    return resumable_run(
        out_dir, list(enumerate(regions)), unit_record=unit_record,
        path_of=lambda u: Path(images_dir) / image_pattern.format(image_id=u[1]["image_id"]),
        process=process, order=lambda r: r["key"], summarize=summarize, desc="box ratio", num_workers=num_workers)


def run_caption_occlusion(
    out_dir: str | Path,
    model: Captioner,
    captions_json: str | Path,
    images_dir: str | Path,
    word_map: WordMap,
    *,
    patch: int = 16,
    stride: int = 8,
    fill: float = 0.0,
    batch_size: int = 64,
    limit: int | None = None,
    num_workers: int = 2,
) -> dict[str, Any] | None:
    """Return (on rank 0) the mean rank correlation of Grad-CAM and of guided backprop with
    occlusion maps, over the visual words of the first `limit` captions (Sec. 5.3).

    Each word's occlusion map is the drop of its log-probability when a `patch` square of
    the preprocessed image is set to `fill`; all occluded copies go through the model in
    batches of `batch_size` on the model's device.
    """
    from vlcam.explain.caption import caption_words, explain_caption

    anns, path_of = caption_units(captions_json, images_dir, limit)

    def unit_record(ann: dict[str, Any]) -> dict[str, Any]:
        return {"key": ann["id"], "image_id": ann["image_id"], "words": []}

    def process(run: Run, ann: dict[str, Any], pixels: np.ndarray) -> list[dict[str, Any]]:
        record = unit_record(ann)
        tokens_text = caption_words(model, ann["caption"])
        heads = [m.head for m in word_map.match(tokens_text)]
        if heads:
            # Explained at the model's input resolution, where the occlusion maps are.
            explanation = explain_caption(model, model.preprocess(pixels), ann["caption"], words=heads)
            # Column 0 is the whole caption; the words follow in the order of `heads`.
            for k, (t, cam) in enumerate(zip(heads, explanation.word_maps), start=1):
                occlusion = occlusion_map(partial(_column, explanation, k), explanation.images, patch=patch,
                                          stride=stride, fill=fill, batch_size=batch_size)
                guided = explanation.guided_backprop(k).abs().amax(dim=0)
                record["words"].append({
                    "word_index": t,
                    "gradcam": rank_correlation(cam, occlusion),
                    "guided_backprop": rank_correlation(guided, occlusion),
                })
                _example(run, f"occlusion_{ann['id']}_{t}", explanation.image,
                         [cam, occlusion.clamp(min=0), guided], ["Grad-CAM", "occlusion", "guided backprop"],
                         f"{ann['caption']} [{tokens_text[t]}]")
                run.computed += 1
        return [record]

    def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
        words = [w for r in records for w in r["words"]]
        return {
            "captions": len(records), "words": len(words), "patch": patch, "stride": stride,
            **_correlations(words, ("gradcam", "guided_backprop")),
            "skipped": skip_counts(records),
        }

    return resumable_run(
        out_dir, anns, unit_record=unit_record,
        path_of=path_of,
        process=process, order=lambda r: r["key"], summarize=summarize, desc="caption occlusion",
        num_workers=num_workers)


def _column(explanation: Explanation, k: int, images: torch.Tensor) -> torch.Tensor:
    """Return explained target `k`'s score [B] on `images` (what occlusion varies)."""
    return explanation.scores(images)[:, k]


def _on_grid(heat: torch.Tensor, grid: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(heat[None, None].float(), size=(grid, grid), mode="area")[0, 0]


def run_human_attention(
    out_dir: str | Path,
    model: AnswerModel,
    questions_json: str | Path,
    images_dir: str | Path,
    attention_dir: str | Path,
    *,
    image_pattern: str = "COCO_{split}2014_{image_id:012d}.jpg",
    grid: int = 14,
    seed: int = 0,
    limit: int | None = None,
    num_workers: int = 2,
) -> dict[str, Any] | None:
    """Return (on rank 0) the mean rank correlation of answer maps with human attention (Sec. 8.2).

    Human attention maps are grayscale images named ``<question_id>.png`` in
    `attention_dir` (VQA-HAT style). Both maps are averaged onto a `grid` x `grid` grid
    before Spearman's rho; the model's top answer is explained. A random map, seeded per
    question, gives the chance baseline (about 0).
    """
    from PIL import Image

    from vlcam.explain._common import resize_maps
    from vlcam.explain.answer import explain_answer

    questions, path_of = question_units(questions_json, images_dir, image_pattern, limit)

    def hat_of(q: dict[str, Any]) -> Path:
        return Path(attention_dir) / f"{q['question_id']}.png"

    def process(run: Run, q: dict[str, Any], pixels: np.ndarray) -> list[dict[str, Any]]:
        record = _question_record(q)
        hat = hat_of(q)
        with Image.open(hat) as im:
            human = torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32))
        explanation = explain_answer(model, model.preprocess(pixels), q["question"])
        chance = torch.from_numpy(np.random.default_rng([seed, q["question_id"]]).random((grid, grid)))
        human_grid = _on_grid(human, grid)
        record.update(
            answer=explanation.answers[0],
            gradcam=rank_correlation(_on_grid(explanation.maps[0].cpu(), grid), human_grid),
            random=rank_correlation(chance, human_grid),
        )
        size = (int(explanation.maps.shape[-2]), int(explanation.maps.shape[-1]))
        _example(run, f"attention_{q['question_id']}", pixels, [explanation.maps[0], resize_maps(human[None], size)[0]],
                 [f"Grad-CAM '{explanation.answers[0]}'", "human attention"], q["question"])
        run.computed += 1
        return [record]

    return resumable_run(
        out_dir, questions, unit_record=_question_record, path_of=path_of, process=process,
        order=lambda r: r["key"], summarize=lambda records: _question_summary(records, "random", grid=grid),
        desc="human attention", num_workers=num_workers,
        skip_reason=lambda q: None if hat_of(q).is_file() else "no human attention map")


def run_answer_occlusion(
    out_dir: str | Path,
    model: AnswerModel,
    questions_json: str | Path,
    images_dir: str | Path,
    *,
    image_pattern: str = "COCO_{split}2014_{image_id:012d}.jpg",
    patch: int = 16,
    stride: int = 8,
    fill: float = 0.0,
    batch_size: int = 64,
    limit: int | None = None,
    num_workers: int = 2,
) -> dict[str, Any] | None:
    """Return (on rank 0) the mean rank correlation with occlusion maps of the Grad-CAM and
    guided-backprop maps of each question's top answer (paper Sec. 8.2: 0.60 against 0.42)."""
    from vlcam.explain.answer import explain_answer

    questions, path_of = question_units(questions_json, images_dir, image_pattern, limit)

    def process(run: Run, q: dict[str, Any], pixels: np.ndarray) -> list[dict[str, Any]]:
        record = _question_record(q)
        explanation = explain_answer(model, model.preprocess(pixels), q["question"])
        occlusion = occlusion_map(partial(_column, explanation, 0), explanation.images, patch=patch,
                                  stride=stride, fill=fill, batch_size=batch_size)
        cam = explanation.maps[0]
        guided = explanation.guided_backprop(0).abs().amax(dim=0)
        record.update(answer=explanation.answers[0],
                      gradcam=rank_correlation(cam, occlusion),
                      guided_backprop=rank_correlation(guided, occlusion))
        _example(run, f"occlusion_{q['question_id']}", explanation.image,
                 [cam, occlusion.clamp(min=0), guided],
                 [f"Grad-CAM '{explanation.answers[0]}'", "occlusion", "guided backprop"], q["question"])
        run.computed += 1
        return [record]

    return resumable_run(
        out_dir, questions, unit_record=_question_record, path_of=path_of, process=process,
        order=lambda r: r["key"],
        summarize=lambda records: _question_summary(records, "guided_backprop", patch=patch, stride=stride),
        desc="answer occlusion", num_workers=num_workers)


__all__ = ["run_answer_occlusion", "run_box_ratio", "run_caption_occlusion", "run_human_attention"]
