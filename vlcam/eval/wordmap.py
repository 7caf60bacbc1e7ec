"""The COCO word map (paper Sec. 8.1.1) and proposals for extending it from co-occurrence.

The paper maps 830 caption words to the 80 COCO categories ("child", "man", "woman" ->
person) and scores a word's Grad-CAM map against its category's masks. vlcam ships such a
map, ``vlcam/data/coco_word_map.json`` (:func:`coco_word_map`), curated by hand: the
official 2014/2017 category ids and names, singular and plural forms, synonyms and kinds
("skier" -> person, "puppy" -> dog, "airliner" -> airplane) and multi-word names ("hot
dog", "teddy bear", "cell phone"), which are matched before their words.

Ambiguous words are resolved as follows (the JSON's ``ambiguous_left_out`` and
``ambiguous_kept`` give each reason). Left out, naming nothing; a multi-word entry also
keeps its words from matching alone:

- "glass", "glasses": wine glass, drinking glass, window glass or eyewear; only "wine
  glass(es)", "wineglass(es)", "champagne glass(es)" and "glass(es) of wine" are kept.
- "ski": a verb or a modifier ("ski slope"); the category's own "skis" is kept.
- "board", "boards", "bag", "bags", "glove", "gloves", "seat", "seats", "trunk", "screen",
  "pot", "dish", "dishes", "utensil", "utensils", "silverware", "dessert", "pastry",
  "pastries", "flower", "flowers": each names several categories (or none).
- "light", "lights", "street light", "street lights", "sign", "signs": lamps and any
  sign; "traffic light", "stoplight", "stop sign" are kept.
- "computer", "computers", "notebook", "van", "vehicle", "cab", "coach", "trolley",
  "engine", "chopper", "cycle", "gondola", "dryer", "desk": split between categories, or
  between a category and something COCO does not annotate.
- "chicken", "turkey" (bird or food), "crane" (bird or machine), "dove" (bird or "dived"),
  "chick", "cub", "cubs" (bear or the Chicago Cubs), "lab", "boxer", "ram".
- "baseball", "football", "basketball", "volleyball", "softball", "tennis",
  "table tennis": the game more often than the ball; the plurals ("baseballs") are kept.
- "disc", "disk", "skate", "skates", "longboard", "sausage", "sausages", "sub", "pie".
- "fan", "fans", "cook", "groom", "camper", "diner": a person, or a thing or a verb.
- "couple", "group": quantities ("a group of zebras").
- phrases whose category word does not name the object: "jet ski", "jet skis",
  "jet skiing" (not airplanes), "cable car", "cable cars" (not cars), "toaster oven",
  "toaster ovens" (one object, annotated inconsistently), "flower bed", "flower beds",
  "chair lift", "chair lifts", "toilet paper", "bus stop", "bus stops", "train station",
  "train stations", "train track", "train tracks".

Kept with one sense: "orange" (the fruit; it is the category's name), "mouse" and
"remote" (the devices), "tie" (necktie), "bat" (baseball bat), "kite" (the toy), "table"
(dining table, as COCO annotates most tables), "plant" (potted plant), "chair", "sink",
"pitcher" (the player; the jug is no category), "keyboard", "bike" (bicycle), "bear"
(after "teddy bear", "stuffed bear"), "dog" (after "hot dog"), "jet" (after "jet ski").

Lemma traps (see :mod:`vlcam.data.wordmap` for the lemmatizer): "people" and "men",
"women", "children" are listed (spaCy gives "people" no lemma "person"); "skis" is listed,
and "skiing" keeps its form when read as a noun (the plain lookup table would give "ski");
"glasses" lemmatizes to "glass", which is left out, so it names nothing; irregular plurals
("knives", "mice", "geese", "oxen", "teeth", "calves", "wives", "leaves") come from the
lemmatizer's exception table, and the map lists its own plurals too, so matching works
with ``lemmatize=False``.

:func:`propose_words` scores, for a COCO captions/instances pair, every caption word
against every category by pointwise mutual information over images, for a person to
review before adding words to the map; the curated map stays the default.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from vlcam.data.coco import read_coco_file, read_coco_json
from vlcam.data.wordmap import WordMap, noun_lemma
from vlcam.text import tokenize

__all__ = [
    "coco_word_map",
    "propose_words",
    "DEFAULT_MIN_SUPPORT",
    "DEFAULT_MIN_PMI",
    "DEFAULT_TOP",
]

DEFAULT_MIN_SUPPORT = 10
DEFAULT_MIN_PMI = 1.0
DEFAULT_TOP = 30


def coco_word_map(*, lemmatize: bool = True) -> WordMap:
    """Return the shipped map from caption words to the 80 COCO categories."""
    return WordMap.builtin("coco", lemmatize=lemmatize)


def propose_words(
    captions_json: str | Path,
    instances_json: str | Path,
    *,
    min_support: int = DEFAULT_MIN_SUPPORT,
    min_pmi: float = DEFAULT_MIN_PMI,
    top: int = DEFAULT_TOP,
    word_map: WordMap | None = None,
) -> dict[str, Any]:
    """Return, per category, the caption words most associated with it, scored for review.

    Counted over the images listed in `instances_json` that have a caption: a word (its
    noun lemma, :func:`noun_lemma`) occurs in an image if any caption of the image holds
    it; a category occurs if the image has an instance of it. For word w and category c,
    ``pmi = log2(n(w, c) * N / (n(w) * n(c)))`` and ``support = n(w, c)``, the number of
    images with both. Pairs with support below `min_support` or PMI below `min_pmi` are
    dropped; each category keeps its `top` words by PMI (ties: support, then the word).
    Each proposal says whether `word_map` (the COCO map by default) already maps the word
    to this category, to which category it maps it otherwise, and why it was left out if
    it was.
    """
    if isinstance(min_support, bool) or not isinstance(min_support, int) or min_support < 1:
        raise ValueError(f"min_support must be an int >= 1 (images), got {min_support!r}")
    if isinstance(min_pmi, bool) or not isinstance(min_pmi, (int, float)) or not math.isfinite(min_pmi):
        raise ValueError(f"min_pmi must be a finite number (bits), got {min_pmi!r}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be an int >= 1 (words per category), got {top!r}")
    word_map = word_map if word_map is not None else coco_word_map()
    captions = read_coco_json(captions_json)
    instances = _read_instances(instances_json)

    listed = {int(image["id"]) for image in instances["images"]}
    words_in: dict[int, set[str]] = defaultdict(set)
    for ann in captions["annotations"]:
        image_id = int(ann["image_id"])
        if image_id in listed:
            words_in[image_id].update(noun_lemma(t) for t in tokenize(ann["caption"]))
    if not words_in:
        raise ValueError(
            f"no image of {instances_json} has a caption in {captions_json}: "
            "the two files must describe the same images"
        )
    categories_in: dict[int, set[int]] = defaultdict(set)
    for ann in instances["annotations"]:
        categories_in[int(ann["image_id"])].add(int(ann["category_id"]))

    n_word: Counter[str] = Counter()
    n_category: Counter[int] = Counter()
    n_both: Counter[tuple[str, int]] = Counter()
    for image_id, words in words_in.items():
        present = categories_in.get(image_id, set())
        n_word.update(words)
        n_category.update(present)
        n_both.update((w, c) for w in words for c in present)
    n_images = len(words_in)

    proposals: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for (word, category_id), support in n_both.items():
        if support < min_support:
            continue
        pmi = math.log2(support * n_images / (n_word[word] * n_category[category_id]))
        if pmi >= min_pmi:
            proposals[category_id].append({
                "word": word,
                "pmi": pmi,
                "support": support,
                "word_images": n_word[word],
                "p_category_given_word": support / n_word[word],
            })
    categories = []
    for cat in sorted(instances["categories"], key=lambda c: int(c["id"])):
        category_id = int(cat["id"])
        ranked = sorted(proposals[category_id], key=lambda p: (-p["pmi"], -p["support"], p["word"]))[:top]
        for proposal in ranked:
            mapped = word_map.match([proposal["word"]])
            proposal["in_map"] = bool(mapped) and mapped[0].category_id == category_id
            proposal["mapped_to"] = mapped[0].category if mapped else None
            proposal["left_out"] = word_map.ambiguous_left_out.get(proposal["word"])
        categories.append({
            "id": category_id,
            "name": cat["name"],
            "images": n_category[category_id],
            "proposals": ranked,
        })
    return {
        "version": 1,
        "captions": str(captions_json),
        "instances": str(instances_json),
        "images": n_images,
        "min_support": min_support,
        "min_pmi": min_pmi,
        "top": top,
        "score": "pmi = log2(n(word, category) * images / (n(word) * n(category))), counted over images",
        "categories": categories,
    }


def _read_instances(path: str | Path) -> dict[str, Any]:
    return read_coco_file(path, "instances", ("images", "annotations", "categories"),
                          "'images', 'annotations' (each with 'image_id' and 'category_id') and 'categories'")
