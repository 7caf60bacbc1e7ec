"""Word maps: the shipped COCO map, matching with spaCy lemmas, and PMI word proposals."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import vlcam.data.wordmap as data_wordmap
from vlcam.data.wordmap import WordMap, noun_lemma
from vlcam.eval import wordmap
from vlcam.eval.wordmap import coco_word_map, propose_words
from vlcam.text import tokenize

ROOT = Path(__file__).resolve().parents[1]
COCO_JSON = ROOT / "vlcam" / "data" / "coco_word_map.json"

# The official COCO 2014/2017 ids and names, written out independently of the shipped map.
COCO_CATEGORIES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
    8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign",
    14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep",
    21: "cow", 22: "elephant", 23: "bear", 24: "zebra", 25: "giraffe", 27: "backpack",
    28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee", 35: "skis",
    36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove",
    41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass",
    47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza",
    60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed",
    67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse", 75: "remote",
    76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster", 81: "sink",
    82: "refrigerator", 84: "book", 85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear",
    89: "hair drier", 90: "toothbrush",
}
# Just under the 867 words curated (the paper maps 830); a drop means words were lost.
WORD_FLOOR = 860


@pytest.fixture(scope="module")
def coco_json() -> dict:
    return json.loads(COCO_JSON.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def coco() -> WordMap:
    return coco_word_map()


def names(word_map: WordMap, text: str) -> list[tuple[str, str]]:
    tokens = tokenize(text)
    return [(" ".join(tokens[m.start:m.stop]), m.category) for m in word_map.match(tokens)]


# --- the shipped COCO map --------------------------------------------------------------------


def test_coco_map_has_the_80_official_categories(coco_json):
    assert coco_json["version"] == 1
    assert {c["id"]: c["name"] for c in coco_json["categories"]} == COCO_CATEGORIES
    assert len(coco_json["categories"]) == 80
    supercategory = {c["name"]: c["supercategory"] for c in coco_json["categories"]}
    assert (supercategory["person"], supercategory["tv"], supercategory["hair drier"]) == (
        "person", "electronic", "indoor")


def test_coco_words_name_one_category_each_and_every_category_its_own_name(coco_json, coco):
    listed = [w for c in coco_json["categories"] for w in c["words"]]
    assert len(listed) == len(set(listed)) == len(coco.words())
    assert len(listed) >= WORD_FLOOR, f"the COCO map holds {len(listed)} words"
    assert not set(listed) & set(coco_json["ambiguous_left_out"])
    for category in coco_json["categories"]:
        assert category["name"] in category["words"]
        assert [m.category_id for m in coco.match(category["name"].split())] == [category["id"]]


def test_coco_words_are_spelt_as_the_tokenizer_splits_captions(coco_json):
    entries = [w for c in coco_json["categories"] for w in c["words"]] + list(coco_json["ambiguous_left_out"])
    assert [w for w in entries if tokenize(w) != w.split()] == []


def test_each_word_left_out_has_a_reason_and_is_named_in_the_module_docstring(coco_json):
    left_out = coco_json["ambiguous_left_out"]
    assert {"glass", "glasses", "ski", "glove", "trunk", "jet ski"} <= set(left_out)
    assert all(isinstance(reason, str) and reason.strip() for reason in left_out.values())
    assert [w for w in left_out if f'"{w}"' not in wordmap.__doc__] == []
    kept = coco_json["ambiguous_kept"]
    assert set(kept) <= {w for c in coco_json["categories"] for w in c["words"]}


# --- matching --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("a teddy bear on a bed", [("teddy bear", "teddy bear"), ("bed", "bed")]),
    ("a brown bear in the woods", [("bear", "bear")]),
    ("a hot dog with mustard next to a dog", [("hot dog", "hot dog"), ("dog", "dog")]),
    ("people skiing down a slope", [("people", "person")]),
    ("a pair of skis in the snow", [("skis", "skis")]),
    ("two puppies", [("puppies", "dog")]),
    ("an airliner at the gate", [("airliner", "airplane")]),
    ("knives and forks", [("knives", "knife"), ("forks", "fork")]),
    ("three geese and two oxen", [("geese", "bird"), ("oxen", "cow")]),
    ("men women and children", [("men", "person"), ("women", "person"), ("children", "person")]),
    ("a woman in glasses on her cell phone", [("woman", "person"), ("cell phone", "cell phone")]),
    ("two wine glasses and a glass of wine",
     [("wine glasses", "wine glass"), ("glass of wine", "wine glass")]),
    ("a fire hydrant by a stop sign", [("fire hydrant", "fire hydrant"), ("stop sign", "stop sign")]),
    ("a tennis player holds tennis rackets", [("player", "person"), ("tennis rackets", "tennis racket")]),
    ("a boy with a baseball glove", [("boy", "person"), ("baseball glove", "baseball glove")]),
    ("a man on a jet ski", [("man", "person")]),
    ("a microwave oven above the stove", [("microwave oven", "microwave"), ("stove", "oven")]),
    ("a train car at the train station", [("train car", "train")]),
])
def test_coco_matches_longest_names_first_and_skips_what_is_left_out(coco, text, expected):
    assert names(coco, text) == expected


def test_heads_are_the_last_token_of_a_name(coco):
    tokens = tokenize("A teddy bear on a bed")
    teddy, bed = coco.match(tokens)
    assert (teddy.start, teddy.stop, teddy.head, teddy.category_id) == (1, 3, 2, 88)
    assert (bed.start, bed.stop, bed.head, bed.category_id) == (5, 6, 5, 65)
    glass = coco.match(tokenize("a glass of wine"))[0]
    assert (glass.start, glass.head, glass.category_id) == (1, 3, 46)


def test_matching_ignores_case(coco):
    assert names(coco, "A TEDDY Bear, A Hot Dog AND PEOPLE") == [
        ("teddy bear", "teddy bear"), ("hot dog", "hot dog"), ("people", "person")]
    assert coco.match(["Two", "PUPPIES"]) == coco.match(["two", "puppies"])


@pytest.mark.parametrize("word, category", [
    ("people", "person"), ("skis", "skis"), ("puppies", "dog"), ("knives", "knife"),
    ("mice", "mouse"), ("buses", "bus"), ("geese", "bird"), ("oxen", "cow"), ("men", "person"),
    ("women", "person"), ("children", "person"), ("doughnuts", "donut"), ("wives", "person"),
    ("calves", "cow"), ("teddy bears", "teddy bear"), ("hot dogs", "hot dog"),
])
def test_curated_plurals_match_without_the_lemmatizer(word, category):
    plain = coco_word_map(lemmatize=False)
    assert [m.category for m in plain.match(word.split())] == [category]


def test_the_lemmatizer_reads_tokens_as_nouns():
    pairs = {"leaves": "leaf", "doughnuts": "doughnut", "knives": "knife", "mice": "mouse",
             "buses": "bus", "teeth": "tooth", "geese": "goose", "oxen": "ox", "men": "man",
             "women": "woman", "children": "child", "glasses": "glass", "skis": "ski",
             "skiing": "skiing", "boating": "boating", "people": "people"}
    assert {w: noun_lemma(w) for w in pairs} == pairs


def test_lemmas_catch_forms_the_map_does_not_list():
    small = WordMap([{"id": 1, "name": "tennis racket", "words": ["tennis racket", "knife", "goose"]}])
    text = "two tennis rackets knives and geese"
    assert names(small, text) == [("tennis rackets", "tennis racket"), ("knives", "tennis racket"),
                                  ("geese", "tennis racket")]
    assert names(WordMap(small.categories, lemmatize=False), text) == []


def test_lemma_traps_name_nothing(coco):
    assert names(coco, "a man skiing") == [("man", "person")]  # "skiing" is no pair of skis
    assert names(coco, "a woman wearing glasses") == [("woman", "person")]  # eyewear, not a wine glass
    assert names(coco, "people boating on a lake") == [("people", "person")]


def test_an_installed_tagger_decides_which_tokens_get_a_lemma(monkeypatch):
    import spacy

    # A stand-in for a trained pipeline: the attribute ruler tags "leaves" as a trained
    # tagger would, and the rule lemmatizer then lemmatizes by that tag.
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("attribute_ruler")
    nlp.add_pipe("lemmatizer", config={"mode": "rule"})
    nlp.initialize()  # loads the lemmatizer's tables and empties the ruler, so patterns follow
    ruler.add([[{"LOWER": {"IN": ["the", "he"]}}]], {"POS": "PRON"})
    ruler.add([[{"LOWER": "the"}, {"LOWER": "leaves"}]], {"POS": "NOUN"}, index=1)
    ruler.add([[{"LOWER": "he"}, {"LOWER": "leaves"}]], {"POS": "VERB"}, index=1)
    monkeypatch.setattr(data_wordmap, "_trained_pipeline", lambda: nlp)
    leaf = WordMap([{"id": 1, "name": "leaf", "words": ["leaf"]}])
    assert [m.category for m in leaf.match(["the", "leaves"])] == ["leaf"]
    assert leaf.match(["he", "leaves"]) == []


def test_a_word_for_two_categories_is_refused():
    with pytest.raises(ValueError, match="'bat'.*'baseball bat'.*'bird'"):
        WordMap([{"id": 39, "name": "baseball bat", "words": ["bat"]},
                 {"id": 16, "name": "bird", "words": ["Bat"]}])
    with pytest.raises(ValueError, match="'glass'.*left out"):
        WordMap([{"id": 46, "name": "wine glass", "words": ["glass"]}],
                ambiguous_left_out={"glass": "eyewear"})
    with pytest.raises(ValueError, match="unknown built-in word map 'cocoa'.*'coco'"):
        WordMap.builtin("cocoa")


def test_the_synthetic_map_still_loads_and_matches():
    synthetic = WordMap.builtin("synthetic")
    assert [(m.category, m.head) for m in synthetic.match(tokenize("two red balls beside a crate"))] == [
        ("ball", 2), ("box", 5)]


def test_importing_the_module_does_not_import_spacy():
    code = "import sys, vlcam.eval.wordmap; assert 'spacy' not in sys.modules, 'spacy imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- proposals -------------------------------------------------------------------------------

# Images 1-4 show a dog, 5-10 a person; 11 has captions but no instances entry and 12 an
# instances entry but no caption, so neither counts: N = 10.
CAPTIONS = {
    1: ["a puppy in a kennel on the grass", "a small puppy"],
    2: ["two puppies near a kennel and grass"],
    3: ["a puppy sleeping"],
    4: ["a dog with a leash"],
    5: ["a man with glasses on the grass"],
    6: ["a man wearing glasses on grass"],
    7: ["a man on grass"],
    8: ["a man standing"],
    9: ["a man sitting"],
    10: ["a woman"],
    11: ["a puppy and a kennel"],
}
DOG_IMAGES, PERSON_IMAGES = [1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 12]


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny_coco")
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 10, "width": 10} for i in range(1, 13)]
    captions = {
        "images": [im for im in images if im["id"] in CAPTIONS],
        "annotations": [{"id": 100 * i + k, "image_id": i, "caption": c}
                        for i, caps in CAPTIONS.items() for k, c in enumerate(caps)],
    }
    labels = [(i, 18) for i in DOG_IMAGES] + [(i, 1) for i in PERSON_IMAGES] + [(1, 18)]
    instances = {
        "images": [im for im in images if im["id"] != 11],
        "annotations": [{"id": n, "image_id": i, "category_id": c, "bbox": [0, 0, 5, 5], "area": 25,
                         "iscrowd": 0} for n, (i, c) in enumerate(labels)],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }
    (root / "captions.json").write_text(json.dumps(captions), encoding="utf-8")
    (root / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    return root / "captions.json", root / "instances.json"


def test_a_word_seen_only_with_one_category_is_proposed_first_with_its_pmi(tiny_coco):
    result = propose_words(*tiny_coco, min_support=2, min_pmi=0.5, top=10)
    assert result["images"] == 10
    dog, person = sorted(result["categories"], key=lambda c: c["name"])
    assert (dog["name"], dog["images"], person["images"]) == ("dog", 4, 6)
    # "puppy"/"puppies" are in 3 of the 10 images, all 3 with a dog (4 of 10 images)
    puppy = dog["proposals"][0]
    assert puppy["word"] == "puppy"
    assert puppy["pmi"] == pytest.approx(math.log2((3 / 10) / ((3 / 10) * (4 / 10))))
    assert (puppy["support"], puppy["word_images"], puppy["p_category_given_word"]) == (3, 3, 1.0)
    assert (puppy["in_map"], puppy["mapped_to"], puppy["left_out"]) == (True, "dog", None)
    # "kennel" scores the same PMI with less support; "leash" (1 image) is below support
    # and "grass" (2 of its 5 images show the dog, as chance predicts) below the PMI floor
    assert [p["word"] for p in dog["proposals"]] == ["puppy", "kennel"]
    assert dog["proposals"][1]["pmi"] == pytest.approx(math.log2(2.5))
    assert (dog["proposals"][1]["in_map"], dog["proposals"][1]["mapped_to"]) == (False, None)
    man, glass = person["proposals"]
    assert (man["word"], man["support"], man["in_map"]) == ("man", 5, True)
    assert man["pmi"] == pytest.approx(math.log2(5 / 3))
    assert (glass["word"], glass["support"], glass["mapped_to"]) == ("glass", 2, None)
    assert "window glass" in glass["left_out"]


def test_support_pmi_and_top_thresholds(tiny_coco):
    strict = propose_words(*tiny_coco, min_support=4, min_pmi=0.5, top=10)
    assert {c["name"]: [p["word"] for p in c["proposals"]] for c in strict["categories"]} == {
        "person": ["man"], "dog": []}
    loose = propose_words(*tiny_coco, min_support=2, min_pmi=1.0, top=10)
    assert {c["name"]: [p["word"] for p in c["proposals"]] for c in loose["categories"]} == {
        "person": [], "dog": ["puppy", "kennel"]}  # "man" and "glass" score log2(5/3) < 1
    top1 = propose_words(*tiny_coco, min_support=2, min_pmi=0.5, top=1)
    assert {c["name"]: [p["word"] for p in c["proposals"]] for c in top1["categories"]} == {
        "person": ["man"], "dog": ["puppy"]}
    with pytest.raises(ValueError, match="min_support must be an int >= 1.*0"):
        propose_words(*tiny_coco, min_support=0, min_pmi=0.5, top=1)
    with pytest.raises(ValueError, match="not a COCO instances file"):
        propose_words(tiny_coco[0], tiny_coco[0], min_support=2, min_pmi=0.5, top=1)


def test_the_script_writes_the_proposals(tiny_coco, tmp_path):
    out = tmp_path / "sub" / "proposals.json"
    args = ["--captions", str(tiny_coco[0]), "--instances", str(tiny_coco[1]), "--out", str(out),
            "--min-support", "2", "--min-pmi", "0.5", "--top", "5"]
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_word_map.py"), *args],
                         capture_output=True, text=True, check=True)
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == propose_words(*tiny_coco, min_support=2, min_pmi=0.5, top=5)
    assert "2 words proposed" in run.stderr  # "kennel" and "glass"
