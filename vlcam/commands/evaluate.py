"""`vlcam eval pointing|box-ratio|occlusion|human-attention|deletion|sanity|word-iou|captions|vqa`: the paper's
evaluations as resumable runs (under torchrun too) and reports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vlcam.commands._options import finish, load_model, parent

VQA_IMAGE_PATTERN = "COCO_{split}2014_{image_id:012d}.jpg"


def add_commands(sub: Any) -> None:
    """Register the `eval` group's commands on the top-level subparsers `sub`."""
    group = sub.add_parser("eval", help="the paper's evaluations, resumable and sharded").add_subparsers(
        dest="what", required=True,
        metavar="{pointing,box-ratio,occlusion,human-attention,deletion,sanity,word-iou,captions,vqa}")
    run = parent("checkpoint", "images", "out", "limit", "device", "json", "html")

    p = group.add_parser("pointing", parents=[run, parent("method", "layer")],
                         help="the word-level pointing game (Sec. 8.1.1) as a resumable, shardable run",
                         description="The word-level pointing game: does each visual word's map peak on its "
                         "object? Writes items.jsonl as it goes (rerunning resumes), summary.json, a "
                         "per-category plot; shards over ranks under torchrun.")
    p.add_argument("--captions", required=True, help="COCO captions JSON")
    p.add_argument("--instances", required=True, help="COCO instances JSON of the same images")
    p.add_argument("--word-map", default=None, help="word map JSON (default: the built-in world's when the "
                   "categories are its own, else COCO's)")
    p.add_argument("--tolerance", type=int, default=0, help="pixels (0: the paper; 15: Zhang et al.)")
    p.add_argument("--seed", type=int, default=0, help="seeds the random-point baseline, per item")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding images")
    p.set_defaults(run=_pointing)

    b = group.add_parser("box-ratio", parents=[run], help="caption maps of region phrases: inside over outside",
                         description="Mean of each region phrase's caption map inside its box over outside "
                         "(Sec. 8.1; a uniform map scores 1.0).")
    b.add_argument("--regions", required=True, help='{"regions": [{"image_id", "bbox", "phrase"}]}')
    b.add_argument("--image-pattern", default="synth_{image_id:06d}.png")
    b.set_defaults(run=_box_ratio)

    # What the occlusion, deletion and sanity runs explain: caption words or top answers.
    sources = argparse.ArgumentParser(add_help=False)
    source = sources.add_mutually_exclusive_group(required=True)
    source.add_argument("--captions", help="COCO captions file: explain each visual word")
    source.add_argument("--questions", help="VQA questions file: explain each top answer")
    sources.add_argument("--image-pattern", default=VQA_IMAGE_PATTERN, help="image file names for --questions")
    sources.add_argument("--word-map", default=None, help="word map JSON (default: the shipped one that fits)")
    occluding = argparse.ArgumentParser(add_help=False)
    occluding.add_argument("--patch", type=int, default=32, help="occlusion square side")
    occluding.add_argument("--stride", type=int, default=16, help="occlusion grid step")
    occluding.add_argument("--fill", type=float, default=0.0, help="occlusion value (normalised input)")
    occluding.add_argument("--batch-size", type=int, default=64)

    o = group.add_parser("occlusion", parents=[run, sources, occluding],
                         help="rank correlation of Grad-CAM and guided backprop with occlusion maps",
                         description="Occlusion faithfulness (Sec. 5.3): per visual word (--captions) or "
                         "per top answer (--questions).")
    o.set_defaults(run=_occlusion)

    d = group.add_parser("deletion", parents=[run, sources, occluding],
                         help="deletion and insertion AUCs (RISE) of Grad-CAM, Guided Grad-CAM and occlusion",
                         description="Deletion and insertion curves: the word's (or answer's) score as the "
                         "input's pixels are replaced by a blurred copy (or restored from it) in map order, "
                         "for Grad-CAM, Guided Grad-CAM, occlusion and a random order; batched, resumable.")
    d.add_argument("--steps", type=int, default=20, help="points per curve, after the first")
    d.add_argument("--sigma", type=float, default=None, help="blur of the baseline in pixels (default: side / 16)")
    d.add_argument("--seed", type=int, default=0, help="seeds the random orders")
    d.set_defaults(run=_deletion)

    z = group.add_parser("sanity", parents=[run, sources, parent("layer")],
                         help="model-randomisation sanity check (Adebayo et al. 2018)",
                         description="Cascading and independent randomisation of the model's blocks (in a "
                         "copy): rank correlation and SSIM of Grad-CAM, guided backprop and Guided Grad-CAM "
                         "maps with the trained model's, per randomised block; sanity.png like Adebayo et "
                         "al.'s Fig. 2.")
    z.add_argument("--seed", type=int, default=0, help="seeds the random weights of every block")
    z.set_defaults(run=_sanity)

    w = group.add_parser("word-iou", parents=[run, parent("layer")],
                         help="Obj-IoU, Func-IoU and F1-IoU of a model's own responses (TAM's word localisation)",
                         description="Explain each image's own greedy response (to --prompt for a generative "
                         "VLM), every word from one call, and score where the maps point: object words' "
                         "binarised maps against their object's mask (Obj-IoU), function words' against the "
                         "background (Func-IoU), and their harmonic mean (F1-IoU), after TAM (ICCV 2025).")
    w.add_argument("--instances", required=True, help="COCO instances JSON (with masks) of the images")
    w.add_argument("--word-map", default=None, help="word map JSON (default: the built-in world's when the "
                   "categories are its own, else COCO's)")
    w.add_argument("--prompt", default=None, help="the prompt of a generative VLM (default: the model's own)")
    w.add_argument("--threshold", type=float, default=0.5, help="binarise each min-max normalised map here")
    w.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding images")
    w.set_defaults(run=_word_iou)

    h = group.add_parser("human-attention", parents=[run],
                         help="rank correlation of answer maps with human attention maps",
                         description="Rank correlation of answer maps with VQA-HAT-style human attention "
                         "maps on a common grid (Sec. 8.2).")
    h.add_argument("--questions", required=True)
    h.add_argument("--attention", required=True, help="folder of <question_id>.png maps")
    h.add_argument("--image-pattern", default=VQA_IMAGE_PATTERN)
    h.add_argument("--grid", type=int, default=14)
    h.add_argument("--seed", type=int, default=0)
    h.set_defaults(run=_human_attention)

    c = group.add_parser("captions", parents=[parent("checkpoint", "images", "limit", "device", "method", "json",
                                                      "html")],
                         help="the COCO caption metrics and the word-level pointing game with baselines",
                         description="Score a captioner on held-out images: CIDEr-D, BLEU-1..4, METEOR "
                         "(needs java) and ROUGE-L through pycocoevalcap, the official COCO caption "
                         "evaluation, and exact match (with --train-captions also for the most frequent "
                         "training caption); then the word-level pointing game with centre and random "
                         "baselines.")
    c.add_argument("--captions", required=True)
    c.add_argument("--instances", required=True)
    c.add_argument("--train-captions", default=None, help="for the most-frequent-caption baseline")
    c.add_argument("--word-map", default=None)
    c.add_argument("--tolerance", type=int, nargs="+", default=[0, 15])
    c.add_argument("--beam-size", type=int, default=1)
    c.add_argument("--out", required=True, help="report JSON path")
    c.set_defaults(run=_captions)

    from vlcam.data.vqa import COCO_IMAGE_PATTERN
    from vlcam.eval.vqa_pointing import ANSWER_CHOICES

    v = group.add_parser("vqa", parents=[parent("images", "limit", "device", "method", "layer", "json", "html")],
                         help="VQA accuracy against the answer priors, and answer pointing",
                         description="VQA accuracy against the answer priors, and whether answer maps point "
                         "at the object asked about.")
    v.add_argument("--checkpoint", required=True, help="a VQA model (checkpoint folder, transformers folder, ...)")
    v.add_argument("--questions", required=True, help="VQA v2 questions JSON of the evaluated split")
    v.add_argument("--annotations", required=True, help="VQA v2 annotations JSON of the evaluated split")
    v.add_argument("--instances", default=None, help="COCO instances JSON with the questions' objects "
                   "(object_ids); without it, no pointing game")
    v.add_argument("--image-pattern", default=COCO_IMAGE_PATTERN)
    v.add_argument("--train-questions", default=None, help="training questions, for the answer priors")
    v.add_argument("--train-annotations", default=None, help="training annotations, for the answer priors")
    v.add_argument("--answer", choices=ANSWER_CHOICES, default="predicted", help="which answer's map points")
    v.add_argument("--question-types", default=None, help="comma-separated question types to point with, e.g. "
                   "'what color is the,what shape is the' (default: all single-object questions)")
    v.add_argument("--tolerance", type=int, default=0, help="pixels a peak may miss the mask by")
    v.add_argument("--out", default=None, help="write the full report (with every item) here")
    v.add_argument("--items", action="store_true", help="also print every pointing item (with --json)")
    v.set_defaults(run=_vqa)


def _finish_run(summary: dict[str, Any] | None, args: argparse.Namespace, title: str) -> int:
    """Print a run's summary (None on ranks other than 0, which print nothing); with --html,
    write the run's report.html first."""
    if summary is None:
        return 0
    if args.html:
        from vlcam.eval.report import write_report

        title += f"\nreport: {write_report(args.out)}"
    return finish(summary, args, title)


def _word_map(path: str | None, instances: str | None = None) -> Any:
    from vlcam.data.wordmap import WordMap

    if path:
        return WordMap.from_file(path)
    synthetic = WordMap.builtin("synthetic")
    if instances is None:
        return synthetic
    names = {c["name"] for c in json.loads(Path(instances).read_text(encoding="utf-8"))["categories"]}
    return synthetic if names <= {c["name"] for c in synthetic.categories} else WordMap.builtin("coco")


def _pointing(args: argparse.Namespace) -> int:
    from vlcam.eval.pointing import run_pointing_game

    model = load_model(args.checkpoint, args.device)
    summary = run_pointing_game(
        args.out, model, args.captions, args.instances, args.images, _word_map(args.word_map, args.instances),
        method=args.method, layer=args.layer, tolerance=args.tolerance, limit=args.limit, seed=args.seed,
        num_workers=args.workers,
    )
    shown = None if summary is None else {k: v for k, v in summary.items() if k != "per_category"}
    return _finish_run(shown, args, f"pointing game: {args.out}/summary.json")


def _box_ratio(args: argparse.Namespace) -> int:
    from vlcam.eval.faithfulness import run_box_ratio

    model = load_model(args.checkpoint, args.device)
    summary = run_box_ratio(args.out, model, args.regions, args.images, image_pattern=args.image_pattern,
                            limit=args.limit)
    return _finish_run(summary, args, f"box ratio: {args.out}/summary.json")


def _occlusion(args: argparse.Namespace) -> int:
    from vlcam.eval.faithfulness import run_answer_occlusion, run_caption_occlusion

    model = load_model(args.checkpoint, args.device)
    if args.questions:
        summary = run_answer_occlusion(args.out, model, args.questions, args.images, image_pattern=args.image_pattern,
                                       patch=args.patch, stride=args.stride, fill=args.fill,
                                       batch_size=args.batch_size, limit=args.limit)
    else:
        summary = run_caption_occlusion(args.out, model, args.captions, args.images, _word_map(args.word_map),
                                        patch=args.patch, stride=args.stride, fill=args.fill,
                                        batch_size=args.batch_size, limit=args.limit)
    return _finish_run(summary, args, f"occlusion: {args.out}/summary.json")


def _deletion(args: argparse.Namespace) -> int:
    from vlcam.adapters import AnswerModel, Captioner
    from vlcam.data.wordmap import WordMap
    from vlcam.eval.deletion import run_deletion

    model = load_model(args.checkpoint, args.device)
    kind, needed = ("--questions", AnswerModel) if args.questions else ("--captions", Captioner)
    if not isinstance(model, needed):
        raise TypeError(f"{kind} needs a {needed.__name__}; {type(model).__name__} is not one")
    word_map = WordMap.from_file(args.word_map) if args.word_map else None
    summary = run_deletion(args.out, model, args.captions or args.questions, args.images, word_map,
                           image_pattern=args.image_pattern, steps=args.steps, batch_size=args.batch_size,
                           sigma=args.sigma, patch=args.patch, stride=args.stride, fill=args.fill,
                           seed=args.seed, limit=args.limit)
    return _finish_run(summary, args, f"deletion and insertion: {args.out}/summary.json")


def _sanity(args: argparse.Namespace) -> int:
    from vlcam.data.wordmap import WordMap
    from vlcam.eval.sanity import run_sanity

    model = load_model(args.checkpoint, args.device)
    word_map = WordMap.from_file(args.word_map) if args.word_map else None
    summary = run_sanity(args.out, model, args.captions, args.images, questions_json=args.questions,
                         image_pattern=args.image_pattern, word_map=word_map, layer=args.layer, seed=args.seed,
                         limit=args.limit)
    return _finish_run(summary, args, f"sanity check: {args.out}/summary.json")


def _word_iou(args: argparse.Namespace) -> int:
    from vlcam.eval.word_iou import run_word_iou

    model = load_model(args.checkpoint, args.device)
    summary = run_word_iou(args.out, model, args.instances, args.images, _word_map(args.word_map, args.instances),
                           prompt=args.prompt, layer=args.layer, threshold=args.threshold, limit=args.limit,
                           num_workers=args.workers)
    shown = None if summary is None else {k: v for k, v in summary.items() if k != "per_category_obj_iou"}
    return _finish_run(shown, args, f"word IoU: {args.out}/summary.json")


def _human_attention(args: argparse.Namespace) -> int:
    from vlcam.eval.faithfulness import run_human_attention

    model = load_model(args.checkpoint, args.device)
    summary = run_human_attention(args.out, model, args.questions, args.images, args.attention,
                                  image_pattern=args.image_pattern, grid=args.grid, seed=args.seed,
                                  limit=args.limit)
    return _finish_run(summary, args, f"human attention: {args.out}/summary.json")


def _captions(args: argparse.Namespace) -> int:
    from vlcam.data.coco import read_coco_captions
    from vlcam.eval.captions import caption_quality
    from vlcam.eval.pointing import caption_pointing_games

    model = load_model(args.checkpoint, args.device)
    word_map = _word_map(args.word_map)
    baseline = read_coco_captions(args.train_captions) if args.train_captions else ()
    report: dict[str, Any] = {"quality": caption_quality(model, args.captions, args.images,
                                                         baseline_captions=baseline, beam_size=args.beam_size,
                                                         limit=args.limit, instances_json=args.instances,
                                                         word_map=word_map)}
    games = caption_pointing_games(model, args.captions, args.instances, args.images, word_map,
                                   tolerances=args.tolerance, method=args.method, limit=args.limit)
    items = {tolerance: game.pop("items") for tolerance, game in games.items()}
    for tolerance, game in games.items():
        report[f"pointing_tolerance_{tolerance}"] = game
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    title = f"captioner evaluation: {args.out}"
    if args.html:
        title += f"\nreport: {_caption_page(args.out, report, games, items)}"
    return finish(report, args, title)


def _caption_page(out: str, report: dict[str, Any], games: dict[int, Any], items: dict[int, Any]) -> Path:
    """Return the path of the HTML page of a captioner evaluation: its summary, a per-category
    plot per tolerance and the words of the strictest game."""
    import tempfile

    from vlcam.eval.pointing import plot_per_category
    from vlcam.eval.report import write_summary_report

    with tempfile.TemporaryDirectory() as tmp:
        plots = [plot_per_category({**game, "tolerance": t}, Path(tmp) / f"per_category_{t}px.png")
                 for t, game in games.items()]
        return write_summary_report(out, report, items=items[min(items)] if items else [], plots=plots)


def _vqa(args: argparse.Namespace) -> int:
    from vlcam.data.vqa import prior_accuracy, read_vqa
    from vlcam.eval.vqa_pointing import answer_pointing_game
    from vlcam.train.vqa import evaluate_vqa

    if args.html and not args.out:
        raise ValueError("--html writes its page beside the report: give --out FILE.json too")
    model = load_model(args.checkpoint, args.device)
    items = read_vqa(args.questions, args.annotations, args.images, image_pattern=args.image_pattern,
                     limit=args.limit)
    accuracy = evaluate_vqa(model, items)
    report: dict[str, Any] = {"checkpoint": str(args.checkpoint), "model": type(model).__name__,
                              "accuracy": {k: v for k, v in accuracy.items() if k != "predictions"}}
    if args.train_questions and args.train_annotations:
        train = read_vqa(args.train_questions, args.train_annotations, args.images,
                         image_pattern=args.image_pattern, check_images=False)
        report["prior"] = prior_accuracy(train, items)
    if args.instances:
        report["pointing"] = answer_pointing_game(
            model, args.questions, args.annotations, args.instances, args.images,
            image_pattern=args.image_pattern, limit=args.limit, answer=args.answer, method=args.method,
            layer=args.layer, tolerance=args.tolerance,
            question_types=args.question_types.split(",") if args.question_types else None,
        )
        report["pointing"]["layer"] = args.layer or model.default_layer
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    pointing = report.get("pointing")
    without_items = {**report, "pointing": {k: v for k, v in pointing.items() if k != "items"}} if pointing else report
    title = "VQA evaluation" + (f": {args.out}" if args.out else "")
    if args.html:
        from vlcam.eval.report import write_summary_report

        title += f"\nreport: {write_summary_report(args.out, without_items, items=(pointing or {}).get('items', []))}"
    return finish(report if args.items else without_items, args, title)
