"""The shapes world: scenes, captions and the renderer, per `shared/specs/shapes.md`.

A scene is a small description (background, one or two objects, a place or a relation);
its canonical caption says exactly what is in it, so generated images can be scored.
Coordinates are fractions of the canvas side (x right, y down). Everything here is pure
and seeded: the same (seed, index) always gives the same scene, caption and pixels.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

BACKGROUNDS = {"white": (245, 245, 245), "black": (20, 20, 20)}
COLOURS = {
    "red": (230, 40, 40),
    "orange": (250, 140, 20),
    "yellow": (240, 210, 30),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "purple": (150, 60, 200),
}
SIZES = {"small": 0.10, "large": 0.18}
SHAPES = ("circle", "square", "triangle", "star")
PLACES = {
    "left": (0.27, 0.50),
    "right": (0.73, 0.50),
    "top": (0.50, 0.27),
    "bottom": (0.50, 0.73),
    "center": (0.50, 0.50),
}
PLACE_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
RELATIONS = ("left of", "right of", "above", "below")
RELATION_PHRASES = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# Never drawn by the default training split, in any scene; the eval's `novel` subset uses them.
HELD_OUT = (("blue", "triangle"), ("yellow", "star"), ("green", "circle"))

PLACE_JITTER = 0.04
RELATION_MAIN, RELATION_CROSS_JITTER = (0.27, 0.73), 0.10
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    cx: float
    cy: float


@dataclass(frozen=True)
class Scene:
    """One or two objects on a uniform background; `place` for one, `relation` for two."""

    background: str
    objects: tuple[Obj, ...]
    place: str | None = None
    relation: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["objects"] = [asdict(o) for o in self.objects]
        return d

    @staticmethod
    def from_dict(d: dict) -> Scene:
        objs = tuple(Obj(**o) for o in d["objects"])
        return Scene(d["background"], objs, d.get("place"), d.get("relation"))


def colour_shape_pairs(include_held_out: bool) -> list[tuple[str, str]]:
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    return pairs if include_held_out else [p for p in pairs if p not in HELD_OUT]


# ---------------------------------------------------------------------------- geometry


def shape_outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices (canvas fractions) for square, triangle and star, per the spec's table."""
    if shape == "square":
        h = 0.8 * r  # side 1.6 r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        R = 1.1 * r  # circumradius; first vertex straight up (y grows downwards)
        return [(cx + R * math.sin(a), cy - R * math.cos(a)) for a in _angles(3)]
    if shape == "star":
        outer = 1.2 * r
        radii = [outer if i % 2 == 0 else 0.5 * outer for i in range(10)]
        return [(cx + q * math.sin(a), cy - q * math.cos(a)) for q, a in zip(radii, _angles(10))]
    raise ValueError(f"no polygon for shape {shape!r}; shapes are {SHAPES}")


def _angles(n: int) -> list[float]:
    return [2 * math.pi * i / n for i in range(n)]


def render(scene: Scene, size: int) -> np.ndarray:
    """Draw a scene as a (size, size, 3) uint8 array, anti-aliased by 4x box supersampling."""
    objects = [(o.shape, COLOURS[o.colour], SIZES[o.size], o.cx, o.cy) for o in scene.objects]
    return draw_objects(BACKGROUNDS[scene.background], objects, size)


def draw_objects(background: tuple[int, int, int], objects: list[tuple], size: int) -> np.ndarray:
    """(shape, rgb, r, cx, cy) objects of any radius and colour on a uniform background, drawn
    as the spec says (`render` for scenes; the scorer's classifier trains on other sizes too)."""
    side = size * SUPERSAMPLE
    img = Image.new("RGB", (side, side), tuple(background))
    draw = ImageDraw.Draw(img)
    for shape, fill, r, cx, cy in objects:
        fill = tuple(fill)
        # PIL addresses pixel centres by integer coordinates, the spec pixel edges: shift by 0.5.
        if shape == "circle":
            draw.ellipse([(cx - r) * side, (cy - r) * side, (cx + r) * side - 1, (cy + r) * side - 1], fill=fill)
        else:
            draw.polygon([(x * side - 0.5, y * side - 0.5) for x, y in shape_outline(shape, cx, cy, r)], fill=fill)
    return np.asarray(img.reduce(SUPERSAMPLE))


# ---------------------------------------------------------------------------- sampling


def scene_rng(seed: int, index: int, *salt: int) -> np.random.Generator:
    """The generator for one item of a seeded stream: independent of workers and processes."""
    return np.random.default_rng([seed, index, *salt])


def sample_single(rng: np.random.Generator, pairs: list[tuple[str, str]], background=None) -> Scene:
    colour, shape = pairs[rng.integers(len(pairs))]
    place = list(PLACES)[rng.integers(len(PLACES))]
    px, py = PLACES[place]
    cx, cy = px + rng.uniform(-PLACE_JITTER, PLACE_JITTER), py + rng.uniform(-PLACE_JITTER, PLACE_JITTER)
    obj = Obj(shape, colour, list(SIZES)[rng.integers(2)], float(cx), float(cy))
    bg = background or list(BACKGROUNDS)[rng.integers(2)]
    return Scene(bg, (obj,), place=place)


def sample_two(rng: np.random.Generator, pairs_a, pairs_b, background=None) -> Scene:
    while True:
        a, b = pairs_a[rng.integers(len(pairs_a))], pairs_b[rng.integers(len(pairs_b))]
        if a != b:  # never both of the same colour and shape
            break
    relation = RELATIONS[rng.integers(len(RELATIONS))]
    main = {"left of": (0.27, 0.73), "right of": (0.73, 0.27), "above": (0.27, 0.73), "below": (0.73, 0.27)}
    objs = []
    for (colour, shape), m in zip((a, b), main[relation]):
        along = m + rng.uniform(-PLACE_JITTER, PLACE_JITTER)
        cross = 0.5 + rng.uniform(-RELATION_CROSS_JITTER, RELATION_CROSS_JITTER)
        cx, cy = (along, cross) if relation in ("left of", "right of") else (cross, along)
        objs.append(Obj(shape, colour, list(SIZES)[rng.integers(2)], float(cx), float(cy)))
    bg = background or list(BACKGROUNDS)[rng.integers(2)]
    return Scene(bg, tuple(objs), relation=relation)


def sample_scene(rng: np.random.Generator, two_prob: float = 0.5, include_held_out=False) -> Scene:
    """A training scene: one object or, with probability `two_prob`, two in a relation."""
    pairs = colour_shape_pairs(include_held_out)
    if rng.random() < two_prob:
        return sample_two(rng, pairs, pairs)
    return sample_single(rng, pairs)


# ---------------------------------------------------------------------------- captions


def canonical_caption(scene: Scene) -> str:
    """The exact caption form the evaluation uses (see the spec's "Canonical captions")."""
    if scene.relation is None:
        (o,) = scene.objects
        place = PLACE_PHRASES[scene.place]
        return f"a {o.size} {o.colour} {o.shape} {place} on a {scene.background} background"
    a, b = scene.objects
    rel = RELATION_PHRASES[scene.relation]
    return f"a {a.colour} {a.shape} {rel} a {b.colour} {b.shape} on a {scene.background} background"


_SINGLE = re.compile(r"^a (small|large) (\w+) (\w+) (.+) on a (\w+) background$")


def contrast_captions(caption: str) -> list[str]:
    """A canonical single-object caption with another colour, or another shape (8 captions);
    [] for any other caption. A judge that tells an image apart from these binds its colour to
    its shape (unclip.pipelines.rerank)."""
    m = _SINGLE.match(caption.strip())
    if m is None or m[2] not in COLOURS or m[3] not in SHAPES or m[4] not in PLACE_PHRASES.values():
        return []
    size, colour, shape, place, bg = m.groups()
    return [f"a {size} {c} {shape} {place} on a {bg} background" for c in COLOURS if c != colour] + \
        [f"a {size} {colour} {s} {place} on a {bg} background" for s in SHAPES if s != shape]


_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_PLACE_WORDS = {
    "left": ("on the left", "on the left side", "at the left"),
    "right": ("on the right", "on the right side", "at the right"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "center": ("in the center", "in the middle"),
}
_RELATION_WORDS = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
_BG_FORMS = (" on a {} background", " against a {} background", ", {} background")
_PREFIXES = ("", "", "a picture of ", "an image of ", "there is ")


def training_caption(scene: Scene, rng: np.random.Generator, paraphrase_prob: float) -> str:
    """The canonical caption, or with `paraphrase_prob` a true paraphrase that may leave
    attributes out ("a red circle"): any value of a missing attribute is then correct."""
    if rng.random() >= paraphrase_prob:
        return canonical_caption(scene)

    def pick(options):
        return options[rng.integers(len(options))]

    def noun(o: Obj, keep_size: bool) -> str:
        words = [pick(_SIZE_WORDS[o.size])] if keep_size and rng.random() < 0.7 else []
        if rng.random() < 0.85:
            words.append(o.colour)
        words.append(o.shape if rng.random() < 0.9 else "shape")
        return " ".join(words)

    def article(phrase: str) -> str:
        return ("an " if phrase[0] in "aeiou" else "a ") + phrase

    if scene.relation is None:
        (o,) = scene.objects
        text = article(noun(o, keep_size=True))
        if rng.random() < 0.7:
            text += " " + pick(_PLACE_WORDS[scene.place])
    else:
        a, b, rel = *scene.objects, scene.relation
        if rng.random() < 0.5:  # "B right of A" says the same as "A left of B"
            a, b, rel = b, a, INVERSE_RELATION[rel]
        text = f"{article(noun(a, False))} {pick(_RELATION_WORDS[rel])} {article(noun(b, False))}"
    if rng.random() < 0.7:
        text += pick(_BG_FORMS).format(scene.background)
    return pick(_PREFIXES) + text


def resample_scene(scene: Scene, rng: np.random.Generator) -> Scene:
    """Another scene with the same canonical caption: what the caption leaves open (positions
    within their jitter, and the sizes of two objects) drawn afresh."""
    key = canonical_caption(scene)
    for _ in range(1000):  # a two-object scene keeps its relation one time in four
        if scene.relation is None:
            (o,) = scene.objects
            new = sample_single(rng, [(o.colour, o.shape)], scene.background)
        else:
            a, b = scene.objects
            new = sample_two(rng, [(a.colour, a.shape)], [(b.colour, b.shape)], scene.background)
        if canonical_caption(new) == key:
            return new
    raise RuntimeError(f"could not resample {key!r}")


def hard_negative(scene: Scene, rng: np.random.Generator) -> Scene:
    """A valid scene that differs from `scene` in one detail a caption states: for two objects
    most often a swap of colours, shapes or places between them (attribute binding), else one
    changed attribute. Training batches pair scenes with these hard negatives, so CLIP must
    bind attributes to the right object (NegCLIP's idea, applied to images and captions)."""
    key, original = scene_key(scene), {(o.colour, o.shape) for o in scene.objects}
    for _ in range(50):
        objs = list(scene.objects)
        bg, place, relation = scene.background, scene.place, scene.relation
        if relation is not None and rng.random() < 0.6:
            a, b = objs
            how = rng.integers(3)
            if how == 0:  # swap colours
                objs = [replace(a, colour=b.colour), replace(b, colour=a.colour)]
            elif how == 1:  # swap shapes
                objs = [replace(a, shape=b.shape), replace(b, shape=a.shape)]
            else:  # swap places: "A left of B" becomes "A right of B"
                objs = [replace(a, cx=b.cx, cy=b.cy), replace(b, cx=a.cx, cy=a.cy)]
                relation = INVERSE_RELATION[relation]
        else:
            i = int(rng.integers(len(objs)))
            o = objs[i]
            what = rng.integers(4 if relation is None else 3)
            if what == 0:
                objs[i] = replace(o, shape=SHAPES[rng.integers(len(SHAPES))])
            elif what == 1:
                objs[i] = replace(o, colour=list(COLOURS)[rng.integers(len(COLOURS))])
            elif what == 2:
                bg = "black" if bg == "white" else "white"
            elif rng.random() < 0.5:
                objs[i] = replace(o, size="small" if o.size == "large" else "large")
            else:
                place = list(PLACES)[rng.integers(len(PLACES))]
                px, py = PLACES[place]
                objs[i] = replace(o, cx=px + (o.cx - PLACES[scene.place][0]), cy=py + (o.cy - PLACES[scene.place][1]))
        neg = Scene(bg, tuple(objs), place, relation)
        pairs = [(o.colour, o.shape) for o in objs]
        # held-out pairs stay out of training entirely, negatives included
        if len(set(pairs)) == len(pairs) and scene_key(neg) != key and not set(pairs) & (set(HELD_OUT) - original):
            return neg
    raise RuntimeError(f"no hard negative found for {scene}")  # each try changes the key often


# ---------------------------------------------------------------------------- evaluation split

EVAL_SEED = 20220413  # the paper's arXiv date; the split is fixed unless a user asks otherwise
# Repeating pattern of the eval split: 40% single and 40% two-object in-distribution prompts,
# 10% single and 10% two-object `novel` prompts (which use a held-out colour-shape pair).
_EVAL_PATTERN = [("in_distribution", "single"), ("in_distribution", "two")] * 4 + [
    ("novel", "single"),
    ("novel", "two"),
]


@dataclass(frozen=True)
class EvalItem:
    index: int
    subset: str  # "in_distribution" or "novel"
    kind: str  # "single" or "two"
    scene: Scene
    prompt: str


def scene_key(scene: Scene) -> str:
    """Identifies scenes that a caption cannot tell apart ("A left of B" == "B right of A")."""
    if scene.relation in ("right of", "below"):
        a, b = scene.objects
        scene = Scene(scene.background, (b, a), relation=INVERSE_RELATION[scene.relation])
    parts = [scene.background, scene.place or scene.relation]
    parts += [f"{o.colour} {o.shape}" + ("" if scene.relation else f" {o.size}") for o in scene.objects]
    return "|".join(parts)


def eval_split(num: int, seed: int = EVAL_SEED) -> list[EvalItem]:
    """The fixed evaluation split: `num` items with distinct canonical prompts while the
    subset allows it (60 novel single-object prompts exist), a prefix of any longer split."""
    allowed, held = colour_shape_pairs(False), list(HELD_OUT)
    every = colour_shape_pairs(True)
    seen: set[str] = set()
    items = []
    for i in range(num):
        subset, kind = _EVAL_PATTERN[i % len(_EVAL_PATTERN)]
        for attempt in range(200):
            rng = scene_rng(seed, i, attempt)
            if kind == "single":
                scene = sample_single(rng, held if subset == "novel" else allowed)
            elif subset == "novel":  # at least one held-out pair, on either side
                a, b = (held, every) if rng.random() < 0.5 else (every, held)
                scene = sample_two(rng, a, b)
            else:
                scene = sample_two(rng, allowed, allowed)
            if scene_key(scene) not in seen:
                break
        seen.add(scene_key(scene))
        items.append(EvalItem(i, subset, kind, scene, canonical_caption(scene)))
    return items
