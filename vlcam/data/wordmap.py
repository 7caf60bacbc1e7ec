"""Word -> category maps: which caption words name an object category.

A map file is ``{"version": 1, "categories": [{"id": 1, "name": "ball", "words": [...]}]}``.
Words may hold several tokens ("teddy bear"); matching takes the longest name first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

BUILTIN = {"synthetic": "synthetic_word_map.json"}


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

    def __init__(self, categories: Sequence[dict]) -> None:
        self.categories = list(categories)
        self._phrases: dict[tuple[str, ...], tuple[int, str]] = {}
        for cat in self.categories:
            if not {"id", "name", "words"} <= set(cat):
                raise ValueError(f"a word-map category needs 'id', 'name' and 'words', got keys {sorted(cat)}")
            for word in cat["words"]:
                self._phrases[tuple(word.lower().split())] = (int(cat["id"]), cat["name"])
        self._longest = max((len(p) for p in self._phrases), default=1)

    @classmethod
    def from_file(cls, path: str | Path) -> WordMap:
        """Return the map stored in a word-map JSON file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"word map {path} does not exist")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
            raise ValueError(f"{path} is not a word map: expected {{'categories': [...]}}")
        return cls(data["categories"])

    @classmethod
    def builtin(cls, name: str = "synthetic") -> WordMap:
        """Return a map shipped with vlcam: 'synthetic' (the built-in world)."""
        if name not in BUILTIN:
            raise ValueError(f"unknown built-in word map {name!r}; known: {sorted(BUILTIN)}")
        text = resources.files("vlcam.data").joinpath(BUILTIN[name]).read_text(encoding="utf-8")
        return cls(json.loads(text)["categories"])

    def words(self) -> set[str]:
        """Return every word and multi-word name in the map."""
        return {" ".join(p) for p in self._phrases}

    def match(self, tokens: Sequence[str]) -> list[WordMatch]:
        """Return the category names in `tokens`, longest names first, left to right."""
        lowered = [t.lower() for t in tokens]
        found, i = [], 0
        while i < len(lowered):
            for n in range(min(self._longest, len(lowered) - i), 0, -1):
                hit = self._phrases.get(tuple(lowered[i:i + n]))
                if hit is not None:
                    found.append(WordMatch(i, i + n, hit[0], hit[1]))
                    i += n
                    break
            else:
                i += 1
        return found
