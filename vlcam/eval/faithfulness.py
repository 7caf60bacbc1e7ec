"""Evaluations beyond pointing: box ratio (Sec. 8.1), occlusion faithfulness (Sec. 5.3) and
correlation with human attention (Sec. 8.2).

All three are resumable runs over JSON-lines items (see :mod:`vlcam.eval.runner`), sharded by
rank under torchrun, each with a `summary.json`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlcam.data.wordmap import WordMap
from vlcam.eval.localization import box_ratio
from vlcam.eval.occlusion import occlusion_map, rank_correlation
from vlcam.eval.runner import Appender, barrier, existing_records, image_loader, init_shard, merge, shard_file
from vlcam.text import tokenize


EXAMPLES = 4


def _example(out: Path, shard: Any, done_so_far: int, name: str, image: np.ndarray, maps: list[Any],
             titles: list[str], title: str, box: list[float] | None = None) -> None:
    """Save one of the first EXAMPLES overlay figures of a run (rank 0 only)."""
    if not shard.is_main or done_so_far >= EXAMPLES:
        return
    from matplotlib.patches import Rectangle

    from vlcam.explain.figures import overlay_figure, save_figure

    fig = overlay_figure(image, [m.detach().cpu() for m in maps], titles, suptitle=title)
    if box is not None:
        for ax in fig.axes[: 1 + len(maps)]:
            ax.add_patch(Rectangle((box[0], box[1]), box[2], box[3], fill=False, color="white", linewidth=1.5))
    save_figure(fig, out / f"example_{name}.png")


def _resized(heat: Any, size: Any) -> Any:
    import torch.nn.functional as F

    return F.interpolate(heat[None, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0, 0]


def _pending(
    units: list[Any], key: Any, path_of: Any, shard: Any, done: set[Any], num_workers: int, desc: str
) -> Any:
    """Yield (unit, pixels or None, reason) for this rank's units not done yet.

    Images are decoded in DataLoader workers; rank 0 shows a progress bar.
    """
    from tqdm.auto import tqdm

    mine = [u for u in units[shard.rank::shard.world_size] if key(u) not in done]
    loader = image_loader(list(range(len(mine))), [path_of(u) for u in mine], num_workers)
    for i, pixels, reason in tqdm(loader, total=len(mine), disable=not shard.is_main, desc=desc):
        yield mine[i], pixels, reason


def run_box_ratio(
    out_dir: str | Path,
    model: nn.Module,
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

    out, shard = Path(out_dir), init_shard()
    out.mkdir(parents=True, exist_ok=True)
    regions = json.loads(Path(regions_json).read_text(encoding="utf-8"))["regions"][:limit]
    done = {r["key"] for r in existing_records(out)}
    writer = Appender(shard_file(out, shard))
    start, computed = time.perf_counter(), 0
    try:
        units = list(enumerate(regions))
        for (index, region), pixels, reason in _pending(
                units, lambda u: u[0], lambda u: Path(images_dir) / image_pattern.format(image_id=u[1]["image_id"]),
                shard, done, num_workers, "box ratio"):
            record: dict[str, Any] = {"key": index, "image_id": region["image_id"], "phrase": region["phrase"]}
            if reason:
                record["skipped"] = reason
            else:
                try:
                    heat = explain_caption(model, pixels, region["phrase"], words=[]).caption_map
                    record["ratio"] = box_ratio(heat, region["bbox"])
                    _example(out, shard, computed, f"box_{index}", pixels, [heat],
                             [f"ratio {record['ratio']:.2f}"], region["phrase"], box=region["bbox"])
                    computed += 1
                except ValueError as err:
                    record["skipped"] = str(err).split(":")[0][:80]
            writer.write(record)
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    barrier(shard)
    if not shard.is_main:
        return None
    records = merge(out, key="key", order=lambda r: r["key"])
    ratios = np.array([r["ratio"] for r in records if "ratio" in r and np.isfinite(r["ratio"])])
    skipped: dict[str, int] = {}
    for r in records:
        if "skipped" in r:
            skipped[r["skipped"]] = skipped.get(r["skipped"], 0) + 1
    summary = {
        "regions": len(records),
        "mean_ratio": float(ratios.mean()) if ratios.size else None,
        "standard_error": float(ratios.std(ddof=1) / np.sqrt(ratios.size)) if ratios.size > 1 else None,
        "uniform_map_ratio": 1.0,
        "infinite_ratios": sum(1 for r in records if "ratio" in r and not np.isfinite(r["ratio"])),
        "skipped": skipped,
        "items_per_second": computed * shard.world_size / seconds if computed and seconds > 0 else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return summary


def run_caption_occlusion(
    out_dir: str | Path,
    model: nn.Module,
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
    from vlcam.eval.pointing import load_coco
    from vlcam.explain.caption import CaptionScorer, explain_caption
    from vlcam.guided import guided_backprop
    from vlcam.image import preprocess
    from vlcam.targets import WordLogProb

    out, shard = Path(out_dir), init_shard()
    out.mkdir(parents=True, exist_ok=True)
    captions = load_coco(captions_json)
    anns = sorted(captions.loadAnns(captions.getAnnIds()), key=lambda a: a["id"])[:limit]
    done = {r["key"] for r in existing_records(out)}
    scorer = CaptionScorer(model).eval()
    device = next(model.parameters()).device
    writer = Appender(shard_file(out, shard))
    start, computed = time.perf_counter(), 0
    try:
        for ann, pixels, reason in _pending(
                anns, lambda a: a["id"],
                lambda a: Path(images_dir) / captions.loadImgs([a["image_id"]])[0]["file_name"],
                shard, done, num_workers, "caption occlusion"):
            record: dict[str, Any] = {"key": ann["id"], "image_id": ann["image_id"], "words": []}
            heads = [m.head for m in word_map.match(tokenize(ann["caption"]))]
            if reason:
                record["skipped"] = reason
            elif heads:
                x, _ = preprocess(pixels, model.image_size, tuple(model.mean), tuple(model.std))
                x = x.to(device)
                explanation = explain_caption(model, x, ann["caption"], words=heads)
                tokens = model.encode_captions([ann["caption"]])
                for t, cam in zip(heads, explanation.word_maps):
                    occlusion = occlusion_map(lambda images, t=t: scorer(images, tokens)[:, t], x, patch=patch,
                                              stride=stride, fill=fill, batch_size=batch_size)
                    guided = guided_backprop(scorer, (x, tokens), WordLogProb(t))[0].abs().amax(dim=0)
                    record["words"].append({
                        "word_index": t,
                        "gradcam": rank_correlation(cam, occlusion),
                        "guided_backprop": rank_correlation(guided, occlusion),
                    })
                    _example(out, shard, computed, f"occlusion_{ann['id']}_{t}", explanation.image,
                             [cam, occlusion.clamp(min=0), guided], ["Grad-CAM", "occlusion", "guided backprop"],
                             f"{ann['caption']} [{tokenize(ann['caption'])[t]}]")
                    computed += 1
            writer.write(record)
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    barrier(shard)
    if not shard.is_main:
        return None
    records = merge(out, key="key", order=lambda r: r["key"])
    words = [w for r in records for w in r["words"]]
    summary: dict[str, Any] = {"captions": len(records), "words": len(words), "patch": patch, "stride": stride}
    for method in ("gradcam", "guided_backprop"):
        values = np.array([w[method] for w in words])
        summary[method] = {
            "mean_rank_correlation": float(values.mean()) if values.size else None,
            "standard_error": float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else None,
        }
    summary["skipped"] = sum(1 for r in records if "skipped" in r)
    summary["items_per_second"] = computed * shard.world_size / seconds if computed and seconds > 0 else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return summary




def _on_grid(heat: Any, grid: int) -> Any:
    import torch.nn.functional as F

    return F.interpolate(heat[None, None].float(), size=(grid, grid), mode="area")[0, 0]


def run_human_attention(
    out_dir: str | Path,
    model: nn.Module,
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

    from vlcam.data.vqa import format_image_name
    from vlcam.explain.answer import explain_answer

    out, shard = Path(out_dir), init_shard()
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads(Path(questions_json).read_text(encoding="utf-8"))
    subtype = str(data.get("data_subtype", ""))
    split = subtype.rstrip("0123456789")
    questions = sorted(data["questions"], key=lambda q: q["question_id"])[:limit]
    done = {r["key"] for r in existing_records(out)}
    writer = Appender(shard_file(out, shard))
    start, computed = time.perf_counter(), 0
    try:
        for q, pixels, reason in _pending(
                questions, lambda q: q["question_id"],
                lambda q: Path(images_dir) / format_image_name(image_pattern, q["image_id"], split, subtype),
                shard, done, num_workers, "human attention"):
            record: dict[str, Any] = {"key": q["question_id"], "image_id": q["image_id"]}
            hat = Path(attention_dir) / f"{q['question_id']}.png"
            if not hat.is_file():
                record["skipped"] = "no human attention map"
            elif reason:
                record["skipped"] = reason
            else:
                with Image.open(hat) as im:
                    human = torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32))
                explanation = explain_answer(model, pixels, q["question"])
                chance = torch.from_numpy(np.random.default_rng([seed, q["question_id"]]).random((grid, grid)))
                human_grid = _on_grid(human, grid)
                record.update(
                    answer=explanation.answers[0],
                    gradcam=rank_correlation(_on_grid(explanation.maps[0].cpu(), grid), human_grid),
                    random=rank_correlation(chance, human_grid),
                )
                _example(out, shard, computed, f"attention_{q['question_id']}", pixels,
                         [explanation.maps[0], _resized(human, explanation.maps[0].shape)],
                         [f"Grad-CAM '{explanation.answers[0]}'", "human attention"], q["question"])
                computed += 1
            writer.write(record)
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    barrier(shard)
    if not shard.is_main:
        return None
    records = merge(out, key="key", order=lambda r: r["key"])
    scored = [r for r in records if "gradcam" in r]
    summary: dict[str, Any] = {"questions": len(records), "scored": len(scored), "grid": grid}
    for method in ("gradcam", "random"):
        values = np.array([r[method] for r in scored])
        summary[method] = {
            "mean_rank_correlation": float(values.mean()) if values.size else None,
            "standard_error": float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else None,
        }
    skipped: dict[str, int] = {}
    for r in records:
        if "skipped" in r:
            skipped[r["skipped"]] = skipped.get(r["skipped"], 0) + 1
    summary["skipped"] = skipped
    summary["items_per_second"] = computed * shard.world_size / seconds if computed and seconds > 0 else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return summary


def run_answer_occlusion(
    out_dir: str | Path,
    model: nn.Module,
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
    from vlcam.data.vqa import format_image_name
    from vlcam.explain.answer import explain_answer
    from vlcam.guided import guided_backprop
    from vlcam.image import preprocess
    from vlcam.targets import AnswerLogit

    out, shard = Path(out_dir), init_shard()
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads(Path(questions_json).read_text(encoding="utf-8"))
    subtype = str(data.get("data_subtype", ""))
    questions = sorted(data["questions"], key=lambda q: q["question_id"])[:limit]
    done = {r["key"] for r in existing_records(out)}
    device = next(model.parameters()).device
    writer = Appender(shard_file(out, shard))
    start, computed = time.perf_counter(), 0
    try:
        split = subtype.rstrip("0123456789")
        for q, pixels, reason in _pending(
                questions, lambda q: q["question_id"],
                lambda q: Path(images_dir) / format_image_name(image_pattern, q["image_id"], split, subtype),
                shard, done, num_workers, "answer occlusion"):
            record: dict[str, Any] = {"key": q["question_id"], "image_id": q["image_id"]}
            if reason:
                record["skipped"] = reason
            else:
                x, _ = preprocess(pixels, model.image_size, tuple(model.mean), tuple(model.std))
                x = x.to(device)
                explanation = explain_answer(model, x, q["question"])
                index = explanation.answer_indices[0]
                tokens = model.encode_questions([q["question"]])
                with torch.no_grad():
                    occlusion = occlusion_map(lambda images: model(images, tokens)[:, index], x, patch=patch,
                                              stride=stride, fill=fill, batch_size=batch_size)
                guided = guided_backprop(model, (x, tokens), AnswerLogit(index))[0].abs().amax(dim=0)
                record.update(answer=explanation.answers[0],
                              gradcam=rank_correlation(explanation.maps[0], occlusion),
                              guided_backprop=rank_correlation(guided, occlusion))
                _example(out, shard, computed, f"occlusion_{q['question_id']}", explanation.image,
                         [explanation.maps[0], occlusion.clamp(min=0), guided],
                         [f"Grad-CAM '{explanation.answers[0]}'", "occlusion", "guided backprop"], q["question"])
                computed += 1
            writer.write(record)
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    barrier(shard)
    if not shard.is_main:
        return None
    records = merge(out, key="key", order=lambda r: r["key"])
    scored = [r for r in records if "gradcam" in r]
    summary: dict[str, Any] = {"questions": len(records), "scored": len(scored), "patch": patch, "stride": stride}
    for method in ("gradcam", "guided_backprop"):
        values = np.array([r[method] for r in scored])
        summary[method] = {
            "mean_rank_correlation": float(values.mean()) if values.size else None,
            "standard_error": float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else None,
        }
    summary["skipped"] = len(records) - len(scored)
    summary["items_per_second"] = computed * shard.world_size / seconds if computed and seconds > 0 else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return summary


__all__ = ["run_answer_occlusion", "run_box_ratio", "run_caption_occlusion", "run_human_attention"]
