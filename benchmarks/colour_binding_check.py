"""Why a captioner's colour words are wrong: the colour of another object in the image, or one not there.

For each object word of the model's greedy captions whose category is in the image and that
is said with a colour (as `vlcam eval captions` counts them, :mod:`vlcam.eval.mentions`),
print whether the colour is right, belongs to another object of the same image (binding),
or is in no object of the image (seeing), with the counts by number of categories in the image.

    python benchmarks/colour_binding_check.py CHECKPOINT WORLD_DIR [--limit 200]
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import vlcam
from vlcam.data.coco import load_coco
from vlcam.data.wordmap import WordMap
from vlcam.eval.mentions import _color_before, color_vocabulary, image_objects
from vlcam.text import tokenize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("world", type=Path)
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    model = vlcam.load(args.checkpoint).eval()
    captions, instances = (load_coco(str(args.world / f"{kind}_val.json")) for kind in ("captions", "instances"))
    word_map = WordMap.from_file(args.world / "word_map.json")
    colours = color_vocabulary(instances)
    ids = sorted(captions.getImgIds())[:args.limit]
    paths = [args.world / "images" / captions.loadImgs([i])[0]["file_name"] for i in ids]
    said_captions = [c for start in range(0, len(paths), 20)
                     for c in model.caption(model.preprocess(paths[start:start + 20]))]
    kinds: collections.Counter[str] = collections.Counter()
    by_objects: collections.Counter[str] = collections.Counter()
    for image_id, caption in zip(ids, said_captions):
        tokens, objects = tokenize(caption), image_objects(instances, image_id)
        everywhere = set().union(*objects.colors.values()) if objects.colors else set()
        for match in word_map.match(tokens):
            said = _color_before(tokens, match.start, colours)
            if said is None or match.category_id not in objects.colors:
                continue
            kind = "right" if said in objects.colors[match.category_id] else \
                "another object's colour" if said in everywhere else "a colour not in the image"
            kinds[kind] += 1
            by_objects[f"{len(objects.colors)} categories: {'right' if kind == 'right' else 'wrong'}"] += 1
    print(json.dumps({"images": len(ids), "colour words": dict(kinds),
                      "by categories in the image": dict(sorted(by_objects.items()))}, indent=2))


if __name__ == "__main__":
    main()
