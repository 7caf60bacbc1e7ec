"""The main job: explain the shipped captioner on held-out scenes of the built-in world."""

from __future__ import annotations

import json
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

SHIPPED_CAPTIONER = "show_and_tell_synthetic"


def shipped_checkpoint(name: str = SHIPPED_CAPTIONER) -> Path:
    """Return the folder of a checkpoint shipped inside the package."""
    path = Path(str(resources.files("vlcam").joinpath("assets", name)))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the shipped checkpoint {name!r} is missing at {path}; reinstall vlcam or rebuild "
            "it with scripts/reproduce_shipped_captioner.py"
        )
    return path


def run_demo(
    out_dir: Path,
    *,
    checkpoint: str | Path | None = None,
    num_images: int = 6,
    seed: int = 20261127,
    device: str = "cpu",
    stream: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Return a summary after writing figures for `num_images` held-out scenes to `out_dir`.

    The scenes are rendered fresh with a seed the shipped model never trained on. For each
    scene it prints the model's own caption, then explains the scene's first reference
    caption (whose words name objects that are there) and prints, for each visual word,
    where the word's map peaks and whether that point lies on an object of its category.
    """
    import vlcam
    from vlcam.adapters import Captioner
    from vlcam.data.coco import category_masks, load_coco
    from vlcam.data.synthetic import generate
    from vlcam.data.wordmap import WordMap

    start = time.perf_counter()
    out_dir = Path(out_dir)
    world = out_dir / "world"
    model = vlcam.load(checkpoint or shipped_checkpoint(), map_location=device)
    if not isinstance(model, Captioner):
        raise TypeError(f"the demo explains a captioner; {checkpoint} holds a {type(model).__name__}")
    generate(world, num_images=num_images, image_size=model.image_size, seed=seed,
             val_fraction=1.0, workers=1)
    coco = load_coco(world / "instances_val.json")
    references = load_coco(world / "captions_val.json")
    word_map = WordMap.from_file(world / "word_map.json")
    rows, figures = [], []
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
    present = [r for r in rows if r["present"]]
    hits = sum(r["hit"] for r in present)
    summary = {
        "images": num_images,
        "words": len(rows),
        "words_with_object": len(present),
        "hits": hits,
        "pointing_accuracy": hits / len(present) if present else None,
        "figures": figures,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out_dir / "summary.json").write_text(json.dumps({**summary, "items": rows}, indent=2) + "\n")
    accuracy = "n/a" if summary["pointing_accuracy"] is None else f"{summary['pointing_accuracy']:.0%}"
    print(f"\n{hits}/{len(present)} visual-word maps peak on their object ({accuracy}); "
          f"{len(rows) - len(present)} words name objects not in the image. Figures and "
          f"summary.json in {out_dir} ({summary['seconds']} s).", file=stream)
    return summary
