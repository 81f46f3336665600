"""The shapes scorer: find the background and the objects of an image, then check them
against the scene a canonical prompt describes (`shared/specs/shapes.md`, "Scoring").

Images are analysed at 64 px. The background is the nearest spec colour to the median of
the border; foreground pixels are those far from that median colour; objects are the
8-connected components of the foreground above a minimum area. Each object's colour is the
nearest palette colour to its median pixel, its centre the mask's centroid, its shape the
classifier's answer (shape_classifier.py), and its size follows from its area and shape.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from unclip.data import shapes
from unclip.tasks.evaluate.masks import SIDE, components, crop_mask, foreground  # noqa: F401 (also this module's API)
from unclip.tasks.evaluate.shape_classifier import ShapeNet, load_classifier

_NAMES, _RGB = list(shapes.COLOURS), np.array(list(shapes.COLOURS.values()), dtype=np.float32)


def _polygon_area(points) -> float:
    x, y = np.array(points).T
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


# Area of each shape at base radius r = 1 (canvas fractions squared).
UNIT_AREA = {"circle": math.pi, **{s: _polygon_area(shapes.shape_outline(s, 0, 0, 1))
                                   for s in ("square", "triangle", "star")}}
SIZE_SPLIT = math.sqrt(shapes.SIZES["small"] * shapes.SIZES["large"])  # geometric midpoint of r


@dataclass
class Found:
    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    area: float  # of the canvas


@dataclass
class Detection:
    background: str
    objects: list[Found]  # largest first


class Detector:
    def __init__(self, classifier: ShapeNet | None = None):
        self.net = classifier if classifier is not None else load_classifier()

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Detection:
        mask, background, x = foreground(image)
        found = components(mask)
        if not found:
            return Detection(background, [])
        logits = self.net(torch.stack([crop_mask(m) for m in found])[:, None])
        objects = []
        for m, shape_idx in zip(found, logits.argmax(1).tolist()):
            shape = shapes.SHAPES[shape_idx]
            rgb = np.median(x[m], axis=0)
            colour = _NAMES[int(np.argmin(np.linalg.norm(_RGB - rgb, axis=1)))]
            ys, xs = np.nonzero(m)
            area = m.sum() / m.size
            size = "small" if math.sqrt(area / UNIT_AREA[shape]) < SIZE_SPLIT else "large"
            objects.append(Found(shape, colour, size, (xs.mean() + 0.5) / SIDE, (ys.mean() + 0.5) / SIDE, area))
        return Detection(background, objects)


def nearest_place(cx: float, cy: float) -> str:
    return min(shapes.PLACES, key=lambda p: (shapes.PLACES[p][0] - cx) ** 2 + (shapes.PLACES[p][1] - cy) ** 2)


def in_relation(a: Found, b: Found, relation: str) -> bool:
    return {"left of": a.cx < b.cx, "right of": a.cx > b.cx, "above": a.cy < b.cy, "below": a.cy > b.cy}[relation]


def score(det: Detection, scene: shapes.Scene) -> dict[str, bool]:
    """Per-attribute verdicts and "all". Single object: exactly one object found and its shape,
    colour, size, place and the background right. Two objects: both named (colour, shape)
    objects found, their centres in the named relation, and the background right."""
    out = {"background": det.background == scene.background}
    if len(scene.objects) == 1:
        want, got = scene.objects[0], det.objects[0] if det.objects else None
        out.update({
            "shape": got is not None and got.shape == want.shape,
            "colour": got is not None and got.colour == want.colour,
            "size": got is not None and got.size == want.size,
            "place": got is not None and nearest_place(got.cx, got.cy) == scene.place,
        })
        out["all"] = len(det.objects) == 1 and all(out.values())
        return out
    a, b = (next((o for o in det.objects if (o.colour, o.shape) == (w.colour, w.shape)), None)
            for w in scene.objects)
    out["objects"] = a is not None and b is not None
    out["relation"] = out["objects"] and in_relation(a, b, scene.relation)
    out["all"] = out["background"] and out["relation"]
    return out


_SINGLE = re.compile(r"^a (small|large) (\w+) (\w+) (on the left|on the right|at the top|at the bottom|in the center)"
                     r" on a (white|black) background$")
_TWO = re.compile(r"^a (\w+) (\w+) (to the left of|to the right of|above|below) a (\w+) (\w+) on a (white|black) "
                  r"background$")


def parse_prompt(prompt: str) -> shapes.Scene:
    """The scene a canonical prompt describes (object centres at the nominal positions)."""
    p = prompt.strip().lower()
    if m := _SINGLE.match(p):
        size, colour, shape, phrase, bg = m.groups()
        place = {v: k for k, v in shapes.PLACE_PHRASES.items()}[phrase]
        _check(colour, shape, prompt)
        return shapes.Scene(bg, (shapes.Obj(shape, colour, size, *shapes.PLACES[place]),), place=place)
    if m := _TWO.match(p):
        ca, sa, phrase, cb, sb, bg = m.groups()
        _check(ca, sa, prompt)
        _check(cb, sb, prompt)
        relation = {v: k for k, v in shapes.RELATION_PHRASES.items()}[phrase]
        objs = (shapes.Obj(sa, ca, "large", 0.27, 0.5), shapes.Obj(sb, cb, "large", 0.73, 0.5))
        return shapes.Scene(bg, objs, relation=relation)
    raise ValueError(f"not a canonical shapes prompt: {prompt!r}")


def _check(colour: str, shape: str, prompt: str) -> None:
    if colour not in shapes.COLOURS or shape not in shapes.SHAPES:
        raise ValueError(f"unknown colour or shape in prompt {prompt!r}")
