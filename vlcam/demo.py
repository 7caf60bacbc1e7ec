"""The main job: explain the shipped captioner and VQA model on held-out scenes of the built-in world."""

from __future__ import annotations

import json
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

SHIPPED_CAPTIONER = "show_and_tell_synthetic"
SHIPPED_VQA = "vqa_lstm_cnn_synthetic"
# The questions the demo explains: those about one object, whose map should sit on it.
DEMO_QUESTION_TYPES = ("what color is the", "what shape is the")


def shipped_checkpoint(name: str = SHIPPED_CAPTIONER) -> Path:
    """Return the folder of a checkpoint shipped inside the package."""
    path = Path(str(resources.files("vlcam").joinpath("assets", name)))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the shipped checkpoint {name!r} is missing at {path}; reinstall vlcam or rebuild "
            "it with `vlcam train shipped`"
        )
    return path


def run_demo(
    out_dir: Path,
    *,
    checkpoint: str | Path | None = None,
    vqa_checkpoint: str | Path | None = None,
    num_images: int = 6,
    seed: int = 20261127,
    device: str = "cpu",
    stream: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Return a summary after writing figures for `num_images` held-out scenes to `out_dir`.

    The scenes are rendered fresh with a seed the shipped models never trained on. For each
    scene it prints the captioner's own caption, then explains the scene's first reference
    caption (whose words name objects that are there) and prints, for each visual word,
    where the word's map peaks and whether that point lies on an object of its category.
    Then the VQA model answers the scene's questions about one object (its colour, its
    shape), and the map of its answer is checked the same way against that object.
    """
    import vlcam
    from vlcam.adapters import AnswerModel, Captioner
    from vlcam.data.coco import category_masks, load_coco
    from vlcam.data.synthetic import generate
    from vlcam.data.wordmap import WordMap

    start = time.perf_counter()
    out_dir = Path(out_dir)
    world = out_dir / "world"
    model = vlcam.load(checkpoint or shipped_checkpoint(), map_location=device)
    if not isinstance(model, Captioner):
        raise TypeError(f"the demo explains a captioner; {checkpoint} holds a {type(model).__name__}")
    vqa = vlcam.load(vqa_checkpoint or shipped_checkpoint(SHIPPED_VQA), map_location=device)
    if not isinstance(vqa, AnswerModel):
        raise TypeError(f"the demo's VQA model must answer questions; {vqa_checkpoint} holds a "
                        f"{type(vqa).__name__}")
    generate(world, num_images=num_images, image_size=model.image_size, seed=seed,
             val_fraction=1.0, workers=1)
    coco = load_coco(world / "instances_val.json")
    references = load_coco(world / "captions_val.json")
    word_map = WordMap.from_file(world / "word_map.json")
    rows, figures = [], []
    print("Captions: each visual word's map, and whether its peak is on an object it names", file=stream)
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs([image_id])[0]
        path = world / "images" / info["file_name"]
        reference = references.loadAnns(references.getAnnIds(imgIds=[image_id]))[0]["caption"]
        explanation = vlcam.explain_caption(model, path, reference, words="visual", word_map=word_map)
        figure = explanation.save(out_dir / f"explained_{image_id:04d}.png")
        figures.append(str(figure))
        masks = category_masks(coco, image_id)
        print(f"\n{info['file_name']}\n  model's caption:   \"{model.caption(path)[0]}\"\n"
              f"  explained caption: \"{reference}\"  -> {figure}", file=stream)
        heads = {m.head: m for m in word_map.match(explanation.tokens)}
        for index, (row, col) in zip(explanation.word_indices, explanation.word_peaks()):
            match = heads[index]
            mask = masks.get(match.category_id)
            verdict = "not in image" if mask is None else ("on the object" if mask[row, col] else "off the object")
            rows.append({"image_id": image_id, "word": explanation.tokens[index], "category": match.category,
                         "peak": [row, col], "present": mask is not None,
                         "hit": bool(mask is not None and mask[row, col])})
            print(f"  {explanation.tokens[index]:>10} ({match.category}): peak at (row {row}, col {col}) "
                  f"-> {verdict}", file=stream)
    answers = _explain_answers(vqa, world, out_dir, figures, stream)
    present = [r for r in rows if r["present"]]
    hits = sum(r["hit"] for r in present)
    answer_hits = sum(a["hit"] for a in answers)
    summary = {
        "images": num_images,
        "words": len(rows),
        "words_with_object": len(present),
        "hits": hits,
        "pointing_accuracy": hits / len(present) if present else None,
        "questions": len(answers),
        "answers_correct": sum(a["correct"] == 1.0 for a in answers),
        "answer_hits": answer_hits,
        "answer_pointing_accuracy": answer_hits / len(answers) if answers else None,
        "figures": figures,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out_dir / "summary.json").write_text(json.dumps({**summary, "items": rows, "answers": answers}, indent=2)
                                          + "\n")
    accuracy = "n/a" if summary["pointing_accuracy"] is None else f"{summary['pointing_accuracy']:.0%}"
    answer_accuracy = "n/a" if not answers else f"{summary['answer_pointing_accuracy']:.0%}"
    print(f"\n{hits}/{len(present)} visual-word maps peak on their object ({accuracy}); "
          f"{len(rows) - len(present)} words name objects not in the image.\n"
          f"{summary['answers_correct']}/{len(answers)} answers right; {answer_hits}/{len(answers)} answer maps "
          f"peak on the object asked about ({answer_accuracy}). Figures and summary.json in {out_dir} "
          f"({summary['seconds']} s).", file=stream)
    return summary


def _explain_answers(vqa: Any, world: Path, out_dir: Path, figures: list[str], stream: TextIO) -> list[dict[str, Any]]:
    """Return one record per single-object question of `world`, after printing and drawing each answer's map."""
    from vlcam.data.vqa import read_vqa
    from vlcam.eval.vqa_pointing import iter_answer_pointing

    items = read_vqa(world / "vqa_questions_val.json", world / "vqa_annotations_val.json", world / "images",
                     image_pattern="synth_{image_id:06d}.png")
    print("\nAnswers: the map of the model's answer, and whether its peak is on the object asked about",
          file=stream)
    records = []
    for item in iter_answer_pointing(vqa, items, world / "instances_val.json", question_types=DEMO_QUESTION_TYPES):
        record = {"image_id": item.image_id, "question": item.question, "answer": item.answer,
                  "truth": next(i.multiple_choice_answer for i in items if i.question_id == item.question_id),
                  "correct": item.correct, "peak": list(item.peak), "hit": item.hit}
        records.append(record)
        verdict = "on the object" if item.hit else "off the object"
        print(f"  synth_{item.image_id:06d}.png  {item.question!r:34} -> {item.answer!r:10} "
              f"({'right' if item.correct == 1.0 else 'wrong, truth ' + repr(record['truth'])}); "
              f"peak at (row {item.peak[0]}, col {item.peak[1]}) -> {verdict}", file=stream)
    if records:
        import vlcam

        first = records[0]
        image = world / "images" / f"synth_{first['image_id']:06d}.png"
        said = list(dict.fromkeys([first["answer"], first["truth"]]))
        figure = vlcam.explain_answer(vqa, image, first["question"], said).save(
            out_dir / f"answers_{first['image_id']:04d}.png")
        figures.append(str(figure))
    return records
