"""Which word maps of a Show-and-Tell checkpoint peak at the image border, and how widely its features fire.

    python benchmarks/border_peaks_check.py CHECKPOINT WORLD_DIR SCENES

Prints, over the reference captions of the first SCENES held-out scenes, the word maps whose
peak lies within `vlcam.eval.pointing.BORDER_PX` (4 px) of the border (word, caption, peak,
the map's maximum, its maximum on the word's object) and how many maps are all zero; then,
per scene, each conv feature's mean activation over the map divided by its peak, averaged
over features (0: fires at one place, 1: everywhere; `vlcam.train._spread.spread_loss`).
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import torch

from vlcam.data.coco import category_masks, load_coco
from vlcam.data.wordmap import WordMap
from vlcam.eval.pointing import border_fields
from vlcam.explain.caption import caption_words, explain_caption
from vlcam.image import to_pil
from vlcam.loading import load
from vlcam.train._spread import spread_loss


def main() -> None:
    checkpoint, world, scenes = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    model = load(checkpoint)
    captions, instances = load_coco(world / "captions_val.json"), load_coco(world / "instances_val.json")
    word_map = WordMap.builtin()
    counts: collections.Counter[str] = collections.Counter()
    spreads = []
    for image_id in sorted(captions.getImgIds())[:scenes]:
        path = world / "images" / captions.loadImgs([image_id])[0]["file_name"]
        masks = category_masks(instances, image_id)
        with torch.no_grad():
            spreads.append(float(spread_loss(model.encode(model.preprocess(to_pil(path))))))
        for ann in captions.loadAnns(captions.getAnnIds(imgIds=[image_id])):
            words = caption_words(model, ann["caption"])
            present = [m for m in word_map.match(words) if m.category_id in masks]
            if not present:
                continue
            explanation = explain_caption(model, path, ann["caption"], words=[m.head for m in present])
            for match, peak, heat in zip(present, explanation.word_peaks(), explanation.word_maps):
                mask, top = masks[match.category_id], float(heat.max())
                counts["maps"] += 1
                counts["all zero"] += top <= 0
                if border_fields(mask, peak)["peak_at_border"]:
                    counts["border"] += 1
                    print(f"{words[match.head]!r} in {ann['caption']!r}: peak {peak}, "
                          f"map max {top:.2e}, max on the object {float(heat.numpy()[mask].max()):.2e}")
    print(dict(counts))
    print(f"feature spread (mean / peak), mean over {len(spreads)} scenes: {sum(spreads) / len(spreads):.3f}")


if __name__ == "__main__":
    main()
