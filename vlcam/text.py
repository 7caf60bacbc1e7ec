"""Tokenising captions and mapping words to ids.

spaCy is imported on the first call to :func:`tokenize`, never at ``import vlcam``: it is
slow to import and the Grad-CAM engine does not need it.
"""

from __future__ import annotations

import json
import random
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from vlcam.data.coco import read_coco_captions

PAD, START, END, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<start>", "<end>", "<unk>")


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    # Importing spaCy imports rich, whose rich.style draws random.getrandbits at import time:
    # the caller's `random` stream must not move because a caption was tokenised.
    state = random.getstate()
    try:
        import spacy
        from spacy.symbols import ORTH
    finally:
        random.setstate(state)

    tokenizer: Any = spacy.blank("en").tokenizer
    # A decoded caption shows unknown words as "<unk>"; encoding it again must give <unk>,
    # not the three tokens "<", "unk", ">".
    tokenizer.add_special_case(SPECIALS[UNK], [{ORTH: SPECIALS[UNK]}])
    return tokenizer


def tokenize(text: str) -> list[str]:
    """Return the lowercased spaCy tokens of `text`, without whitespace or punctuation.

    "<unk>" stays one token. Any ``str`` is accepted; lone surrogates (which cannot be
    encoded as UTF-8 and would crash spaCy) become '?' and are then dropped as punctuation.
    """
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects a str, got {type(text).__name__}: {text!r:.80}")
    text = text.encode("utf-8", "replace").decode("utf-8")
    # Calling the tokenizer directly skips spaCy's max_length guard, which exists for the
    # memory of the (here absent) parser, not the tokenizer.
    return [t.lower_ for t in _tokenizer()(text) if not (t.is_space or t.is_punct)]


def explainable_ids(vocab: Vocabulary, text: object, what: str, limit: int, *, add_special: bool
                    ) -> tuple[list[str], list[int]]:
    """Return (the tokens of `text`, their ids in `vocab`) for a text a model is to be explained on.

    Unknown words become <unk> (with a warning). TypeError for a non-str; ValueError, naming
    the `what` ("caption", "question"), for a text without words, with more than `limit`, or
    with no word in the vocabulary (nothing could be explained).
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    words = tokenize(text)
    if not words:
        raise ValueError(f"the {what} {text!r:.80} has no words to explain")
    if len(words) > limit:
        raise ValueError(f"the {what} has {len(words)} words; at most {limit} are explained at once")
    ids = vocab.encode(text, add_special=add_special, warn=True)
    if all(i == UNK for i in ids if i not in (START, END)):
        raise ValueError(
            f"every word of the {what} {text!r:.80} is unknown to the model's vocabulary; nothing could be explained"
        )
    return words, ids


class Vocabulary:
    """A word <-> id mapping with ``<pad>``=0, ``<start>``=1, ``<end>``=2, ``<unk>``=3."""

    PAD, START, END, UNK = PAD, START, END, UNK

    def __init__(self, words: Iterable[str] = ()) -> None:
        """Build a vocabulary of the special tokens followed by `words` (in that order)."""
        self._words: list[str] = list(SPECIALS)
        self._index: dict[str, int] = {w: i for i, w in enumerate(SPECIALS)}
        for word in words:
            if not isinstance(word, str) or not word:
                raise ValueError(f"vocabulary words must be non-empty strings, got {word!r}")
            if word in self._index:
                raise ValueError(f"word {word!r} appears twice in the vocabulary (or is a special token)")
            self._index[word] = len(self._words)
            self._words.append(word)

    @classmethod
    def from_captions(cls, captions: Iterable[str], min_count: int = 5) -> Vocabulary:
        """Return the vocabulary of the words seen at least `min_count` times in `captions`.

        Words are ordered by decreasing count, ties alphabetically, so the same captions
        always give the same ids.
        """
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
        counts = Counter(w for caption in captions for w in tokenize(caption))
        kept = [w for w, c in counts.items() if c >= min_count and w not in SPECIALS]
        return cls(sorted(kept, key=lambda w: (-counts[w], w)))

    @classmethod
    def from_coco(cls, captions_json_path: str | Path, min_count: int = 5) -> Vocabulary:
        """Return the vocabulary of a COCO captions file (its ``annotations[*].caption``)."""
        return cls.from_captions(read_coco_captions(captions_json_path), min_count=min_count)

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._words == other._words

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"

    @property
    def words(self) -> list[str]:
        """Return all words in id order, special tokens first."""
        return list(self._words)

    def index(self, word: str) -> int:
        """Return the id of `word`; KeyError if it is not in the vocabulary."""
        try:
            return self._index[word]
        except KeyError:
            raise KeyError(
                f"word {word!r} is not in the vocabulary ({len(self)} words); "
                f"encode() maps unknown words to <unk>"
            ) from None

    def word(self, i: int) -> str:
        """Return the word with id `i`; IndexError outside 0..len-1."""
        if not 0 <= int(i) < len(self._words):
            raise IndexError(f"word id {i} out of range for a vocabulary of {len(self)} words")
        return self._words[int(i)]

    def encode(self, text: str, *, add_special: bool = True, warn: bool = True) -> list[int]:
        """Return the ids of `text`'s tokens, wrapped in <start> ... <end> if `add_special`.

        Unknown words become <unk>; with `warn` one warning lists them all.
        """
        return self.encode_many([text], add_special=add_special, warn=warn)[0]

    def encode_many(
        self, texts: Iterable[str], *, add_special: bool = True, warn: bool = True
    ) -> list[list[int]]:
        """Return :meth:`encode` of each text, with at most one warning for the whole batch."""
        unknown: dict[str, None] = {}
        encoded = []
        for text in texts:
            ids = []
            for w in tokenize(text):
                i = self._index.get(w)
                if i is None:
                    unknown[w] = None
                ids.append(UNK if i is None else i)
            encoded.append([START, *ids, END] if add_special else ids)
        if warn and unknown:
            warnings.warn(
                "unknown words mapped to <unk>: " + ", ".join(repr(w) for w in unknown),
                UserWarning,
                stacklevel=3,
            )
        return encoded

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Return the words of `ids` up to the first <end>, without <pad> and <start>.

        <unk> is kept as the word '<unk>' so that the i-th word still lines up with the
        i-th generated token (a caption explanation indexes words by position).
        """
        words = []
        for i in ids:
            i = int(i)
            if i == END:
                break
            if i in (PAD, START):
                continue
            words.append(self.word(i))
        return words

    def to_json(self) -> str:
        """Return the vocabulary as a JSON list of all words in id order."""
        return json.dumps(self._words, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Vocabulary:
        """Return the vocabulary stored by :meth:`to_json`."""
        words = json.loads(text)
        if not isinstance(words, list) or tuple(words[: len(SPECIALS)]) != SPECIALS:
            head = words[: len(SPECIALS)] if isinstance(words, list) else type(words).__name__
            raise ValueError(
                f"a vocabulary JSON must be a list of words starting with {list(SPECIALS)}, "
                f"got one starting with {head!r}"
            )
        return cls(words[len(SPECIALS):])


def pad_sequences(sequences: Sequence[Sequence[int]], pad: int = PAD) -> list[list[int]]:
    """Return `sequences` right-padded with `pad` to the length of the longest one."""
    length = max((len(s) for s in sequences), default=0)
    return [list(s) + [pad] * (length - len(s)) for s in sequences]
