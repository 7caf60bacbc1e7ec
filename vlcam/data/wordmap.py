"""Word -> category maps: which caption words name an object category.

A map file is ``{"version": 1, "categories": [{"id": 1, "name": "ball", "words": [...]}],
"ambiguous_left_out": {"word": "why", ...}}``; ``ambiguous_left_out`` is optional.
Words may hold several tokens ("teddy bear"), written as :func:`vlcam.text.tokenize`
splits them.

Matching, at each token, takes the longest listed name first, so "teddy bear" wins over
"bear" and "hot dog" over "dog". A name in ``ambiguous_left_out`` is matched the same way
but names nothing: "jet ski" is no airplane although "jet" is, and "glasses" (read as
"glass") is no wine glass. A token listed in neither is tried again as its lemma (for a
multi-word name, the last token's: "tennis rackets" -> "tennis racket"), so inflections the
curated list does not spell out ("seagulls", "mattresses") still match. The lemmatizer is
spaCy's English rule lemmatizer with the tables of spacy-lookups-data, reading every token
as a noun: category words are nouns, and the plain lookup table would turn "skiing" into
"ski", "boating" into "boat" and "leaves" into "leave". Where a trained English pipeline is
installed (``en_core_web_sm``/``md``/``lg``), its tagger decides instead, and a token it
does not tag as a noun gets no lemma match. spaCy is imported on the first miss, never at
``import vlcam``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

BUILTIN = {"synthetic": "synthetic_word_map.json", "coco": "coco_word_map.json"}
# Tried in this order; the first one installed supplies part-of-speech tags for lemmas.
TRAINED_PIPELINES = ("en_core_web_sm", "en_core_web_md", "en_core_web_lg")
# Marks a name that is matched (so its words are not matched on their own) but names nothing;
# category ids are COCO-style positive ints, so -1 names no category.
_LEFT_OUT = (-1, "")


@dataclass(frozen=True)
class WordMatch:
    """A category named in a token list: tokens[start:stop] name category `category_id`."""

    start: int
    stop: int
    category_id: int
    category: str

    @property
    def head(self) -> int:
        """The index of the name's last token ("bear" in "teddy bear"), the word explained."""
        return self.stop - 1


class WordMap:
    """Maps caption tokens to object categories."""

    def __init__(
        self,
        categories: Sequence[Mapping[str, Any]],
        *,
        ambiguous_left_out: Mapping[str, str] | None = None,
        lemmatize: bool = True,
    ) -> None:
        """Build a map from ``[{"id", "name", "words"}]``; `ambiguous_left_out` names nothing.

        With `lemmatize` off only the listed spellings match. A word listed for two
        categories, or both for a category and as left out, is a ValueError.
        """
        self.categories = list(categories)
        self.ambiguous_left_out = dict(ambiguous_left_out or {})
        self.lemmatize = lemmatize
        self._phrases: dict[tuple[str, ...], tuple[int, str]] = {}
        for cat in self.categories:
            if not isinstance(cat, Mapping) or not {"id", "name", "words"} <= set(cat):
                keys = sorted(cat) if isinstance(cat, Mapping) else type(cat).__name__
                raise ValueError(f"a word-map category needs 'id', 'name' and 'words', got {keys}")
            if isinstance(cat["words"], str):
                raise ValueError(
                    f"category {cat['name']!r}: 'words' must be a list of words, got {cat['words']!r}"
                )
            for word in cat["words"]:
                self._add(word, (int(cat["id"]), str(cat["name"])))
        for word in self.ambiguous_left_out:
            self._add(word, _LEFT_OUT)
        self._longest = max((len(p) for p in self._phrases), default=1)

    def _add(self, word: object, entry: tuple[int, str]) -> None:
        if not isinstance(word, str) or not word.split():
            raise ValueError(f"word-map words must be non-empty strings, got {word!r}")
        phrase = tuple(word.lower().split())
        known = self._phrases.setdefault(phrase, entry)
        if known != entry:
            names = ["left out" if e == _LEFT_OUT else f"{e[1]!r} (id {e[0]})" for e in (known, entry)]
            raise ValueError(f"word {' '.join(phrase)!r} is listed twice: for {names[0]} and for {names[1]}")

    @classmethod
    def from_file(cls, path: str | Path, *, lemmatize: bool = True) -> WordMap:
        """Return the map stored in a word-map JSON file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"word map {path} does not exist")
        return cls._from_json(json.loads(path.read_text(encoding="utf-8")), str(path), lemmatize)

    @classmethod
    def builtin(cls, name: str = "synthetic", *, lemmatize: bool = True) -> WordMap:
        """Return a map shipped with vlcam: 'synthetic' (the built-in world) or 'coco' (80 categories)."""
        if name not in BUILTIN:
            raise ValueError(f"unknown built-in word map {name!r}; known: {sorted(BUILTIN)}")
        text = resources.files("vlcam.data").joinpath(BUILTIN[name]).read_text(encoding="utf-8")
        return cls._from_json(json.loads(text), BUILTIN[name], lemmatize)

    @classmethod
    def _from_json(cls, data: Any, source: str, lemmatize: bool) -> WordMap:
        if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
            raise ValueError(f"{source} is not a word map: expected {{'categories': [...]}}")
        left_out = data.get("ambiguous_left_out", {})
        if not isinstance(left_out, dict):
            raise ValueError(
                f"{source}: 'ambiguous_left_out' must map words to reasons, got {left_out!r:.80}"
            )
        return cls(data["categories"], ambiguous_left_out=left_out, lemmatize=lemmatize)

    def words(self) -> set[str]:
        """Return every word and multi-word name in the map (not the ones left out)."""
        return {" ".join(p) for p, entry in self._phrases.items() if entry != _LEFT_OUT}

    def match(self, tokens: Sequence[str]) -> list[WordMatch]:
        """Return the category names in `tokens`, longest names first, left to right."""
        lowered = [t.lower() for t in tokens]
        lemma_of = lemmas(lowered) if self.lemmatize and lowered else None
        found, i = [], 0
        while i < len(lowered):
            for n in range(min(self._longest, len(lowered) - i), 0, -1):
                phrase = tuple(lowered[i:i + n])
                entry = self._phrases.get(phrase)
                lemma = lemma_of[i + n - 1] if entry is None and lemma_of else None
                if lemma is not None and lemma != phrase[-1]:
                    entry = self._phrases.get((*phrase[:-1], lemma))
                if entry is not None:
                    if entry != _LEFT_OUT:
                        found.append(WordMatch(i, i + n, *entry))
                    i += n
                    break
            else:
                i += 1
        return found


def lemmas(tokens: Sequence[str]) -> list[str | None]:
    """Return each token's lemma as a noun; None where an installed tagger reads no noun."""
    pipeline = _trained_pipeline()
    if pipeline is None:
        return [noun_lemma(t) for t in tokens]
    from spacy.tokens import Doc

    doc = Doc(pipeline.vocab, words=list(tokens))
    for _, component in pipeline.pipeline:
        doc = component(doc)
    return [t.lemma_.lower() if t.pos_ in ("NOUN", "PROPN") else None for t in doc]


@lru_cache(maxsize=65536)
def noun_lemma(word: str) -> str:
    """Return `word`'s lemma read as a noun: "knives" -> "knife", "skiing" stays "skiing"."""
    if not word:
        return word
    from spacy.tokens import Doc

    lemmatizer = _noun_lemmatizer()
    token = Doc(lemmatizer.vocab, words=[word])[0]
    token.pos_ = "NOUN"
    lemma: str = lemmatizer.rule_lemmatize(token)[0]
    return lemma


@lru_cache(maxsize=1)
def _noun_lemmatizer() -> Any:
    import spacy

    nlp = spacy.blank("en")
    lemmatizer = nlp.add_pipe("lemmatizer", config={"mode": "rule"})
    nlp.initialize()  # loads the rule, exception and index tables of spacy-lookups-data
    return lemmatizer


@lru_cache(maxsize=1)
def _trained_pipeline() -> Any:
    import spacy

    for name in TRAINED_PIPELINES:
        if spacy.util.is_package(name):
            # The tagger and attribute ruler set the POS the lemmatizer needs; the rest is unused.
            return spacy.load(name, exclude=["parser", "ner", "senter"])
    return None
