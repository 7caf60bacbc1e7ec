"""Propose caption words for the COCO categories, scored by image-level PMI, for review.

Example:
    python scripts/build_word_map.py --captions captions_train2017.json \\
        --instances instances_train2017.json --out proposals.json --min-support 20

Writes a JSON with, per category, the top words by pointwise mutual information between a
caption word (its noun lemma) and the category being annotated in the same image, with
their support, p(category | word) and whether the shipped COCO map already lists them.
The curated map (vlcam/data/coco_word_map.json) is not changed; edit it by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vlcam.eval.wordmap import DEFAULT_MIN_PMI, DEFAULT_MIN_SUPPORT, DEFAULT_TOP, propose_words


def main(argv: list[str] | None = None) -> int:
    """Return the exit status after writing the proposals the command-line arguments `argv` ask for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", required=True, help="COCO captions JSON")
    parser.add_argument("--instances", required=True, help="COCO instances JSON of the same images")
    parser.add_argument("--out", required=True, help="proposals JSON to write")
    parser.add_argument("--min-support", type=int, default=DEFAULT_MIN_SUPPORT,
                        help="least number of images with both the word and the category")
    parser.add_argument("--min-pmi", type=float, default=DEFAULT_MIN_PMI, help="least PMI, in bits")
    parser.add_argument("--top", type=int, default=DEFAULT_TOP, help="words kept per category")
    args = parser.parse_args(argv)
    proposals = propose_words(args.captions, args.instances, min_support=args.min_support,
                              min_pmi=args.min_pmi, top=args.top)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(proposals, indent=2) + "\n", encoding="utf-8")
    new = sum(not p["in_map"] for c in proposals["categories"] for p in c["proposals"])
    print(f"{out}: {new} words proposed that the map does not list for their category, "
          f"from {proposals['images']} images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
