"""The built-in world: a synthetic, COCO-format dataset of simple shapes on cluttered backgrounds.

`generate(out_dir)` renders scenes of 1-4 flat-coloured objects (10 categories, 7 colours,
2 sizes) on textured backgrounds with thin distractor lines and dots, and writes, for the
splits ``train`` and ``val``:

- ``images/synth_000001.png`` ... (RGB PNG, no antialiasing, so pixels and masks agree exactly)
- ``instances_{split}.json``: COCO instances; the RLE segmentation is the *visible* part of
  each object, plus the non-standard fields ``color`` and ``size``
- ``captions_{split}.json``: COCO captions, 3-5 (nearly always 5) varied sentences per image
- ``vqa_questions_{split}.json`` / ``vqa_annotations_{split}.json``: VQA-v2 format, with the
  non-standard field ``object_ids`` (instance ids the question is about)
- ``regions_{split}.json``: one phrase and box per object
- ``word_map.json``: which caption words name which category

Every image is drawn from its own generator ``np.random.default_rng([seed, index])``, so the
output is identical whether it is rendered in one process or many.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

__all__ = [
    "CATEGORIES",
    "COLORS",
    "SIZES",
    "Category",
    "SceneObject",
    "Scene",
    "category_words",
    "coco_categories",
    "generate",
    "render_scene",
    "word_map",
    "write_word_map",
]


@dataclass(frozen=True)
class Category:
    """One object category: its COCO id, name, drawn shape and the caption words naming it."""

    id: int
    name: str
    shape: str
    """The answer to "what shape is the ... object?"."""
    nouns: tuple[tuple[str, str], ...]
    """(singular, plural) pairs; the first singular is the category name."""
    max_rotation_deg: float
    """Random rotation range; small for shapes that would turn into another one (box -> diamond)."""


CATEGORIES: tuple[Category, ...] = (
    Category(1, "ball", "circle", (("ball", "balls"), ("sphere", "spheres")), 0.0),
    Category(2, "box", "square", (("box", "boxes"), ("crate", "crates"), ("cube", "cubes")), 10.0),
    Category(3, "triangle", "triangle", (("triangle", "triangles"), ("pyramid", "pyramids")), 10.0),
    Category(4, "star", "star", (("star", "stars"), ("starfish", "starfish")), 15.0),
    Category(5, "ring", "ring", (("ring", "rings"), ("hoop", "hoops"), ("donut", "donuts")), 0.0),
    Category(6, "cross", "cross", (("cross", "crosses"), ("plus", "pluses")), 10.0),
    Category(7, "diamond", "diamond", (("diamond", "diamonds"), ("gem", "gems")), 10.0),
    Category(8, "moon", "crescent", (("moon", "moons"), ("crescent", "crescents")), 180.0),
    Category(9, "heart", "heart", (("heart", "hearts"), ("valentine", "valentines")), 12.0),
    Category(10, "hexagon", "hexagon", (("hexagon", "hexagons"), ("hex", "hexes")), 10.0),
)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 225),
    "yellow": (245, 220, 30),
    "purple": (145, 45, 195),
    "orange": (250, 140, 20),
    "white": (250, 250, 250),
}

# Radius as a fraction of the image side; at 128 px small objects are ~20-28 px across (any
# smaller and a hexagon reads as a ball) and large ones ~38-52 px.
SIZES: dict[str, tuple[float, float]] = {"small": (0.08, 0.11), "large": (0.15, 0.20)}

MIN_VISIBLE_FRACTION = 0.6
"""Occlusion cap: every object keeps at least this share of its own pixels visible."""

MIN_IMAGE_SIZE = 32
_MIN_RADIUS_PX = 4.0
_PLACEMENT_TRIES = 40
_NUMBER_WORDS = ("zero", "one", "two", "three", "four")
_CAPTIONS_PER_IMAGE = 5
_SUPERCATEGORY = "shape"
_CATEGORY_BY_ID = {c.id: c for c in CATEGORIES}


def category_words() -> dict[str, list[str]]:
    """Return category name -> every caption word naming it (singulars and plurals, no repeats)."""
    words: dict[str, list[str]] = {}
    for category in CATEGORIES:
        forms = [form for pair in category.nouns for form in pair]
        words[category.name] = list(dict.fromkeys(forms))
    return words


def word_map() -> dict[str, Any]:
    """Return the built-in world's word map: ``{"version": 1, "categories": [{id, name, words}]}``."""
    words = category_words()
    return {
        "version": 1,
        "categories": [{"id": c.id, "name": c.name, "words": words[c.name]} for c in CATEGORIES],
    }


def write_word_map(path: str | os.PathLike[str]) -> Path:
    """Return the path written after saving `word_map()` there as indented JSON.

    The committed copy ``vlcam/data/synthetic_word_map.json`` is written by this function.
    """
    path = Path(path)
    path.write_text(json.dumps(word_map(), indent=2) + "\n", encoding="utf-8")
    return path


def coco_categories() -> list[dict[str, Any]]:
    """Return the COCO ``categories`` list: ``[{"id", "name", "supercategory"}]``."""
    return [{"id": c.id, "name": c.name, "supercategory": _SUPERCATEGORY} for c in CATEGORIES]


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class SceneObject:
    """One painted object: what it is, and where it is visible in the final image."""

    category: Category
    color: str
    size: str
    visible: np.ndarray
    """bool [H, W]: exactly the pixels where this object's colour was painted last."""
    center: tuple[float, float]
    """(x, y) centroid of the whole (unoccluded) shape, in pixels; relations use it."""
    full_area: int
    """Pixel count of the whole shape; ``visible.sum() / full_area`` is how much is not covered."""


@dataclass(frozen=True)
class Scene:
    """A rendered image and its objects in painting order (later ones are on top)."""

    image: np.ndarray
    """uint8 [H, W, 3]."""
    objects: tuple[SceneObject, ...]


_Floats = npt.NDArray[np.float64]
_Mask = npt.NDArray[np.bool_]


def _inside_convex(u: _Floats, v: _Floats, vertices: _Floats) -> _Mask:
    """Return a bool mask of the points (u, v) inside the convex polygon `vertices` [N, 2]."""
    a = vertices
    b = np.roll(vertices, -1, axis=0)
    cross = (b[:, 0, None, None] - a[:, 0, None, None]) * (v[None] - a[:, 1, None, None]) - (
        b[:, 1, None, None] - a[:, 1, None, None]
    ) * (u[None] - a[:, 0, None, None])
    # Either winding order counts, so the vertex lists need not agree on one. (The cast: numpy's
    # stubs cannot tell that all(axis=0) of a 3-d array is an array rather than a scalar.)
    return cast(_Mask, (cross >= 0).all(axis=0) | (cross <= 0).all(axis=0))


def _polar_vertices(radius: float, angles_deg: npt.ArrayLike) -> _Floats:
    angles = np.deg2rad(angles_deg)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _shape_mask(shape: str, u: _Floats, v: _Floats, r: float) -> _Mask:
    """Return a bool mask of `shape` with radius `r` at offsets (u right, v down) from its centre."""
    rho2 = u * u + v * v
    if shape == "circle":
        return rho2 <= r * r
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8 * r
    if shape == "triangle":
        # Centroid-centred equilateral triangle, apex up, shifted so its box is centred.
        vertices = _polar_vertices(1.15 * r, np.array([-90.0, 30.0, 150.0]))
        return _inside_convex(u, v + 0.29 * r, vertices)
    if shape == "star":
        outer = _polar_vertices(r, -90.0 + 72.0 * np.arange(5))
        inner = _polar_vertices(0.45 * r, -54.0 + 72.0 * np.arange(5))
        mask = _inside_convex(u, v, inner)
        for k in range(5):
            mask |= _inside_convex(u, v, np.stack([inner[k - 1], outer[k], inner[k]]))
        return mask
    if shape == "ring":
        return (rho2 <= r * r) & (rho2 >= (0.55 * r) ** 2)
    if shape == "cross":
        arm = 0.32 * r
        return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))
    if shape == "diamond":
        return np.abs(u) / (0.7 * r) + np.abs(v) / r <= 1.0
    if shape == "crescent":
        return (rho2 <= r * r) & ((u - 0.5 * r) ** 2 + v * v > (0.85 * r) ** 2)
    if shape == "heart":
        x = 1.15 * u / r
        y = -1.15 * v / r + 0.12
        return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0
    if shape == "hexagon":
        au, av = np.abs(u), np.abs(v)
        big = 0.95 * r
        return (av <= big * math.sqrt(3) / 2) & (math.sqrt(3) * au + av <= math.sqrt(3) * big)
    raise ValueError(f"unknown shape {shape!r}; expected one of {[c.shape for c in CATEGORIES]}")


def _muted_color(rng: np.random.Generator) -> _Floats:
    """Return a low-saturation colour, so the background never looks like a palette object."""
    grey = rng.uniform(55, 175)
    return np.clip(grey + rng.uniform(-22, 22, size=3), 0, 255)


def _background(rng: np.random.Generator, size: int) -> _Floats:
    """Return a float [S, S, 3] texture: a gradient, stripes or blotchy noise, plus pixel noise."""
    kind = rng.integers(3)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) / size
    c0, c1 = _muted_color(rng), _muted_color(rng)
    angle = rng.uniform(0, 2 * math.pi)
    along = xs * math.cos(angle) + ys * math.sin(angle)
    if kind == 0:
        t = (along - along.min()) / max(float(np.ptp(along)), 1e-9)
    elif kind == 1:
        period = rng.uniform(0.05, 0.16)
        t = (np.floor(along / period) % 2) * rng.uniform(0.5, 1.0)
    else:
        cells = int(rng.integers(3, 9))
        coarse = rng.uniform(0, 255, size=(cells, cells)).astype(np.uint8)
        t = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR)) / 255.0
    base: _Floats = c0 + (c1 - c0) * t[..., None]
    return base + rng.normal(0.0, 7.0, size=(size, size, 3))


def _draw_distractors(rng: np.random.Generator, image: Image.Image) -> None:
    """Draw thin lines and dots that belong to no object (they are painted under the objects)."""
    size = image.width
    draw = ImageDraw.Draw(image)
    scale = size / 128.0
    palette = list(COLORS.values())

    def colour() -> tuple[int, int, int]:
        # A few distractors share the objects' palette, so colour alone does not find an object.
        if rng.random() < 0.2:
            return palette[int(rng.integers(len(palette)))]
        shifted = np.clip(_muted_color(rng) + rng.choice([-45.0, 45.0]), 0, 255)
        red, green, blue = (int(c) for c in shifted)
        return red, green, blue

    for _ in range(int(rng.integers(2, 7))):
        x0, y0, x1, y1 = (float(p) for p in rng.uniform(0, size, size=4))
        draw.line([(x0, y0), (x1, y1)], fill=colour(), width=max(1, round(scale)))
    for _ in range(int(rng.integers(5, 21))):
        x, y = (float(p) for p in rng.uniform(0, size, size=2))
        radius = rng.uniform(0.5, 1.5) * scale
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour())


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Return `mask` grown by one pixel in the 8-neighbourhood."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


@dataclass
class _Placed:
    category: Category
    color: str
    size: str
    full_area: int
    center: tuple[float, float]


def _try_place(
    rng: np.random.Generator,
    owner: np.ndarray,
    placed: list[_Placed],
    category: Category,
    color: str,
    radius: float,
) -> tuple[tuple[slice, slice], np.ndarray, tuple[float, float]] | None:
    """Return (window, local mask, centroid) of an allowed placement, or None after all tries.

    Allowed: inside the image, not touching a visible object of the same colour (they would
    merge into one blob), and leaving every earlier object >= MIN_VISIBLE_FRACTION visible.
    """
    size = owner.shape[0]
    half = math.ceil(radius) + 2
    # Indexed by owner id; the trailing False is what background pixels (owner -1) read.
    same_color = np.array([p.color == color for p in placed] + [False], dtype=bool)
    visible_now = np.bincount(owner[owner >= 0], minlength=len(placed))
    for _ in range(_PLACEMENT_TRIES):
        cx, cy = rng.uniform(radius + 2, size - radius - 2, size=2)
        rotation = np.deg2rad(rng.uniform(-category.max_rotation_deg, category.max_rotation_deg))
        x0, y0 = max(0, int(cx) - half), max(0, int(cy) - half)
        x1, y1 = min(size, int(cx) + half + 1), min(size, int(cy) + half + 1)
        dx = np.arange(x0, x1) + 0.5 - cx
        dy = np.arange(y0, y1) + 0.5 - cy
        ddx, ddy = np.meshgrid(dx, dy)
        u = ddx * math.cos(rotation) + ddy * math.sin(rotation)
        v = -ddx * math.sin(rotation) + ddy * math.cos(rotation)
        local = _shape_mask(category.shape, u, v, radius)
        if not local.any():
            continue
        window = owner[y0:y1, x0:x1]
        if same_color[window[_dilate(local)]].any():
            continue
        covered = np.bincount(window[local & (window >= 0)], minlength=len(placed))
        full = np.array([p.full_area for p in placed], dtype=np.int64)
        if placed and ((visible_now - covered) < MIN_VISIBLE_FRACTION * full).any():
            continue
        ys, xs = np.nonzero(local)
        centroid = (float(xs.mean() + x0 + 0.5), float(ys.mean() + y0 + 0.5))
        return (slice(y0, y1), slice(x0, x1)), local, centroid
    return None


def render_scene(seed: int, index: int, image_size: int = 128) -> Scene:
    """Return the scene number `index` of the world with `seed`: the image and its objects.

    The scene depends only on (seed, index, image_size), never on other scenes.
    """
    _check_image_size(image_size)
    rng = np.random.default_rng([seed, index])
    canvas = Image.fromarray(np.clip(_background(rng, image_size), 0, 255).astype(np.uint8))
    _draw_distractors(rng, canvas)
    image = np.array(canvas)
    owner = np.full((image_size, image_size), -1, dtype=np.int64)

    placed: list[_Placed] = []
    color_names = list(COLORS)
    for _ in range(int(rng.integers(1, 5))):
        # Repeating an earlier category now and then gives counts above one ("two red balls").
        if placed and rng.random() < 0.3:
            previous = placed[int(rng.integers(len(placed)))]
            category = previous.category
            color = previous.color if rng.random() < 0.5 else color_names[int(rng.integers(len(COLORS)))]
        else:
            category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            color = color_names[int(rng.integers(len(COLORS)))]
        size_name = ("small", "large")[int(rng.integers(2))]
        low, high = SIZES[size_name]
        radius = max(_MIN_RADIUS_PX, rng.uniform(low, high) * image_size)
        placement = _try_place(rng, owner, placed, category, color, radius)
        if placement is None:
            continue
        window, local, centroid = placement
        owner[window][local] = len(placed)
        image[window][local] = COLORS[color]
        placed.append(_Placed(category, color, size_name, int(local.sum()), centroid))

    objects = tuple(
        SceneObject(p.category, p.color, p.size, owner == i, p.center, p.full_area)
        for i, p in enumerate(placed)
    )
    return Scene(image=image, objects=objects)


# --------------------------------------------------------------------------- language


def _relation(a: SceneObject, b: SceneObject) -> str:
    """Return where `a` is relative to `b`: left of, right of, above, below or next to."""
    dx = a.center[0] - b.center[0]
    dy = a.center[1] - b.center[1]
    if abs(dx) >= 1.5 * abs(dy):
        return "left of" if dx < 0 else "right of"
    if abs(dy) >= 1.5 * abs(dx):
        return "above" if dy < 0 else "below"
    return "next to"


def _leans(a: SceneObject, b: SceneObject, relation: str) -> bool:
    """Return whether `a` is even loosely `relation` of `b` (a reader might say so)."""
    dx = a.center[0] - b.center[0]
    dy = a.center[1] - b.center[1]
    if relation in ("left of", "right of"):
        return (dx < 0) == (relation == "left of") and abs(dx) > 0.5 * abs(dy)
    return (dy < 0) == (relation == "above") and abs(dy) > 0.5 * abs(dx)


def _position(obj: SceneObject, image_size: int) -> str:
    """Return the image third the object's centre is in: on the left, at the top, in the middle..."""
    x, y = (c / image_size - 0.5 for c in obj.center)
    if max(abs(x), abs(y)) < 1 / 6:
        return "in the middle"
    if abs(x) >= abs(y):
        return "on the left" if x < 0 else "on the right"
    return "at the top" if y < 0 else "at the bottom"


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


class _Describer:
    """Noun phrases for one caption: one synonym per category, so a caption stays consistent."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._choice: dict[int, tuple[str, str]] = {}

    def noun(self, category: Category) -> tuple[str, str]:
        if category.id not in self._choice:
            self._choice[category.id] = category.nouns[int(self._rng.integers(len(category.nouns)))]
        return self._choice[category.id]

    def one(self, obj: SceneObject, colour: bool = True, size_p: float = 0.3) -> str:
        words = []
        if colour and self._rng.random() < size_p:
            words.append(obj.size)
        if colour:
            words.append(obj.color)
        words.append(self.noun(obj.category)[0])
        return " ".join([_article(words[0]), *words])

    def group(self, objs: list[SceneObject], colour: bool = True) -> str:
        """A phrase for objects of one category (and one colour if `colour`): "two red balls"."""
        if len(objs) == 1:
            return self.one(objs[0], colour)
        words = [_NUMBER_WORDS[len(objs)]] + ([objs[0].color] if colour else [])
        return " ".join([*words, self.noun(objs[0].category)[1]])

    def listing(self, objects: tuple[SceneObject, ...], colour: bool = True) -> str:
        """Every object once, grouped: "two red balls, a blue box and a star"."""
        groups: dict[tuple[int, str], list[SceneObject]] = {}
        for obj in objects:
            groups.setdefault((obj.category.id, obj.color if colour else ""), []).append(obj)
        return _join([self.group(g, colour) for g in groups.values()])


def _relation_caption(rng: np.random.Generator, objects: tuple[SceneObject, ...]) -> str | None:
    """Return "<a> <relation> <b>." for a random pair, or a group of one category versus one object."""
    # Two objects that the words tell apart; "a red ball next to a red ball" says nothing.
    pairs = [(a, b) for a in objects for b in objects
             if (a.category.id, a.color) != (b.category.id, b.color)]
    if not pairs:
        return None
    describe = _Describer(rng)
    a, b = pairs[int(rng.integers(len(pairs)))]
    relation = _relation(a, b)
    subject = describe.one(a)
    # "two red balls above a box" when every ball of that colour is above it.
    peers = [o for o in objects if (o.category.id, o.color) == (a.category.id, a.color)]
    if len(peers) > 1 and all(_relation(p, b) == relation for p in peers):
        subject = describe.group(peers)
    words = {
        "left of": ("left of", "to the left of"),
        "right of": ("right of", "to the right of"),
        "above": ("above",),
        "below": ("below", "under"),
        "next to": ("next to", "beside"),
    }[relation]
    plural = not subject.startswith(("a ", "an "))
    verb = (" are " if plural else " is ") if rng.random() < 0.5 else " "
    return f"{subject}{verb}{words[int(rng.integers(len(words)))]} {describe.one(b)}."


def _captions(rng: np.random.Generator, scene: Scene, image_size: int) -> list[str]:
    """Return 5 distinct captions (at least 3): full listings, counts, relations, single objects."""
    objects = scene.objects
    n = len(objects)
    noun_for_objects = ("object", "objects") if rng.random() < 0.5 else ("shape", "shapes")
    count = (
        f"there is one {noun_for_objects[0]}: "
        if n == 1
        else f"there are {_NUMBER_WORDS[n]} {noun_for_objects[1]}: "
    )
    single = objects[int(rng.integers(n))]
    single_caption = f"{_Describer(rng).one(single)} {_position(single, image_size)}."
    if rng.random() < 0.5:
        single_caption = "there is " + single_caption
    candidates = [
        f"{_Describer(rng).listing(objects)}.",
        _relation_caption(rng, objects),
        single_caption,
        count + f"{_Describer(rng).listing(objects)}.",
        f"a picture of {_Describer(rng).listing(objects, colour=rng.random() < 0.5)}.",
        _relation_caption(rng, objects),
        f"{_Describer(rng).listing(objects, colour=False)}.",
    ]
    captions = list(dict.fromkeys(c for c in candidates if c is not None))[:_CAPTIONS_PER_IMAGE]
    return [captions[int(k)] for k in rng.permutation(len(captions))]


@dataclass(frozen=True)
class _Question:
    question: str
    answer: str
    question_type: str
    answer_type: str
    objects: tuple[int, ...]
    """Indices into the scene's objects; for relation questions the answer object comes first."""


def _questions(rng: np.random.Generator, scene: Scene) -> list[_Question]:
    """Return 2-5 questions about the scene, each of a different kind, all unambiguous."""
    objects = scene.objects
    present = sorted({o.category.id for o in objects})
    absent = [c.id for c in CATEGORIES if c.id not in present]
    by_category = {cid: [i for i, o in enumerate(objects) if o.category.id == cid] for cid in present}
    by_color: dict[str, list[int]] = {}
    for i, obj in enumerate(objects):
        by_color.setdefault(obj.color, []).append(i)

    def noun(category: Category) -> tuple[str, str]:
        return category.nouns[int(rng.integers(len(category.nouns)))]

    kinds: dict[str, list[_Question]] = {}
    kinds["color"] = [
        _Question(f"what color is the {noun(_CATEGORY_BY_ID[cid])[0]}?", objects[idx[0]].color,
                  "what color is the", "other", (idx[0],))
        for cid, idx in by_category.items() if len(idx) == 1
    ]
    kinds["shape"] = [
        _Question(f"what shape is the {color} object?", objects[idx[0]].category.shape,
                  "what shape is the", "other", (idx[0],))
        for color, idx in by_color.items() if len(idx) == 1
    ]
    # Mostly categories that are there; now and then one that is not, so "0" is an answer too.
    pool = present if rng.random() < 0.85 or not absent else absent
    count_id = pool[int(rng.integers(len(pool)))]
    count_idx = tuple(by_category.get(count_id, ()))
    kinds["count"] = [
        _Question(f"how many {noun(_CATEGORY_BY_ID[count_id])[1]} are there?", str(len(count_idx)),
                  "how many", "number", count_idx)
    ]
    # A fair coin per image keeps yes and no balanced over the dataset.
    answer_yes = rng.random() < 0.5 or not absent
    pool = present if answer_yes else absent
    yes_no_id = pool[int(rng.integers(len(pool)))]
    singular, plural = noun(_CATEGORY_BY_ID[yes_no_id])
    text = f"is there a {singular}?" if rng.random() < 0.6 else f"are there any {plural}?"
    question_type = "is there a" if text.startswith("is") else "are there any"
    kinds["yes/no"] = [
        _Question(text, "yes" if answer_yes else "no", question_type, "yes/no",
                  tuple(by_category.get(yes_no_id, ())))
    ]
    relation_questions = []
    for ref_idx in by_category.values():
        if len(ref_idx) != 1:
            continue
        ref = objects[ref_idx[0]]
        for relation in ("left of", "right of", "above", "below"):
            others = [i for i, o in enumerate(objects) if i != ref_idx[0] and _leans(o, ref, relation)]
            if len(others) == 1 and _relation(objects[others[0]], ref) == relation:
                relation_questions.append(
                    _Question(f"what is {relation} the {noun(ref.category)[0]}?",
                              objects[others[0]].category.name, "what is", "other",
                              (others[0], ref_idx[0]))
                )
    kinds["relation"] = relation_questions

    available = [k for k in ("color", "shape", "count", "yes/no", "relation") if kinds[k]]
    wanted = min(int(rng.integers(2, 6)), len(available))
    chosen = [available[int(k)] for k in sorted(rng.permutation(len(available))[:wanted])]
    return [kinds[k][int(rng.integers(len(kinds[k])))] for k in chosen]


# --------------------------------------------------------------------------- writing


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an int >= {MIN_IMAGE_SIZE}, got {image_size!r}")


def _file_name(image_id: int) -> str:
    return f"synth_{image_id:06d}.png"


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _render_record(job: tuple[str, int, int, int]) -> dict[str, Any]:
    """Return the JSON-ready record of one image after saving its PNG (runs in a worker process)."""
    images_dir, seed, index, image_size = job
    scene = render_scene(seed, index, image_size)
    image_id = index + 1
    Image.fromarray(scene.image).save(Path(images_dir) / _file_name(image_id))
    # Phrases, captions and questions draw from a generator of their own, so changing the
    # language never changes the pixels.
    rng = np.random.default_rng([seed, index, 1])
    objects = []
    for obj in scene.objects:
        rle = mask_utils.encode(np.asfortranarray(obj.visible.astype(np.uint8)))
        objects.append({
            "category_id": obj.category.id,
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": int(obj.visible.sum()),
            "bbox": _bbox(obj.visible),
            "iscrowd": 0,
            "color": obj.color,
            "size": obj.size,
            "phrase": f"a {obj.size} {obj.color} {obj.category.name}",
        })
    return {
        "image_id": image_id,
        "objects": objects,
        "captions": _captions(rng, scene, image_size),
        "questions": _questions(rng, scene),
    }


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")


_INFO = {"description": "vlcam built-in synthetic world", "version": "1.0", "year": 2024,
         "contributor": "vlcam", "url": "", "date_created": ""}
_LICENSES = [{"id": 1, "name": "generated", "url": ""}]


def _write_split(out: Path, split: str, records: list[dict[str, Any]], image_size: int,
                 first_ids: dict[str, int]) -> dict[str, int]:
    """Write the five JSON files of one split; return its counts. `first_ids` is advanced."""
    images = [{"id": r["image_id"], "file_name": _file_name(r["image_id"]), "width": image_size,
               "height": image_size, "license": 1} for r in records]
    instances, captions, regions, questions, answers = [], [], [], [], []
    for record in records:
        image_id = record["image_id"]
        ann_ids = []
        for obj in record["objects"]:
            ann_id = first_ids["instance"]
            first_ids["instance"] += 1
            ann_ids.append(ann_id)
            fields = {k: v for k, v in obj.items() if k != "phrase"}
            instances.append({"id": ann_id, "image_id": image_id, **fields})
            regions.append({"image_id": image_id, "bbox": obj["bbox"], "phrase": obj["phrase"],
                            "object_id": ann_id, "category_id": obj["category_id"]})
        for caption in record["captions"]:
            captions.append({"id": first_ids["caption"], "image_id": image_id, "caption": caption})
            first_ids["caption"] += 1
        for j, q in enumerate(record["questions"]):
            question_id = image_id * 10 + j
            questions.append({"question_id": question_id, "image_id": image_id, "question": q.question})
            answers.append({
                "question_id": question_id,
                "image_id": image_id,
                "question_type": q.question_type,
                "answer_type": q.answer_type,
                "multiple_choice_answer": q.answer,
                "answers": [{"answer": q.answer, "answer_confidence": "yes", "answer_id": k}
                            for k in range(1, 11)],
                "object_ids": [ann_ids[i] for i in q.objects],
            })

    _write_json(out / f"instances_{split}.json", {"info": _INFO, "licenses": _LICENSES, "images": images,
                                                  "annotations": instances, "categories": coco_categories()})
    _write_json(out / f"captions_{split}.json", {"info": _INFO, "licenses": _LICENSES, "images": images,
                                                 "annotations": captions})
    _write_json(out / f"regions_{split}.json", {"regions": regions})
    vqa_head = {"info": _INFO, "license": _LICENSES[0], "data_type": "synthetic", "data_subtype": split}
    _write_json(out / f"vqa_questions_{split}.json",
                {**vqa_head, "task_type": "Open-Ended", "questions": questions})
    _write_json(out / f"vqa_annotations_{split}.json", {**vqa_head, "annotations": answers})
    return {"images": len(images), "instances": len(instances), "captions": len(captions),
            "questions": len(questions)}


def generate(
    out_dir: str | os.PathLike[str],
    num_images: int = 2000,
    image_size: int = 128,
    seed: int = 0,
    val_fraction: float = 0.2,
    workers: int | None = None,
) -> dict[str, Any]:
    """Return a summary (counts per split, categories, colours) after writing the dataset to `out_dir`.

    The first ``num_images - round(num_images * val_fraction)`` images are ``train``, the rest
    ``val``; image ids run from 1 to `num_images` across both splits. Files already in
    `out_dir` with the same names are overwritten; nothing else is removed. `workers`
    processes render in parallel (default: ``os.cpu_count()``); the output does not depend on it.
    The workers are spawned, so a script that calls this must do so under
    ``if __name__ == "__main__":``. Question ids are ``image_id * 10 + k`` for the k-th question.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive int, got {num_images!r}")
    _check_image_size(image_size)
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction!r}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int or None, got {workers!r}")

    out = Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(str(images_dir), seed, index, image_size) for index in range(num_images)]
    workers = min(workers, num_images)
    if workers == 1:
        records = [_render_record(job) for job in jobs]
    else:
        # spawn, not fork: callers often have torch loaded, and forking its thread pools can hang.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            records = pool.map(_render_record, jobs, chunksize=max(1, num_images // (workers * 8)))

    num_val = round(num_images * val_fraction)
    num_train = num_images - num_val
    first_ids = {"instance": 1, "caption": 1}
    splits = {
        "train": _write_split(out, "train", records[:num_train], image_size, first_ids),
        "val": _write_split(out, "val", records[num_train:], image_size, first_ids),
    }
    write_word_map(out / "word_map.json")
    return {
        "out_dir": str(out),
        "image_size": image_size,
        "seed": seed,
        "splits": splits,
        "categories": [c.name for c in CATEGORIES],
        "colors": list(COLORS),
    }
