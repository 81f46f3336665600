"""The renderer, scene sampler and captions against shared/specs/shapes.md."""

import math
import re

import numpy as np
import pytest

from unclip.data import shapes
from unclip.data.shapes import BACKGROUNDS, COLOURS, Obj, Scene, render

SIZE = 256


def coverage(img: np.ndarray, colour: str, bg: str) -> np.ndarray:
    """Per-pixel share of the object colour (exact for anti-aliased edges on one channel)."""
    c, b = np.array(COLOURS[colour], float), np.array(BACKGROUNDS[bg], float)
    ch = int(np.argmax(np.abs(c - b)))
    return (img[..., ch].astype(float) - b[ch]) / (c[ch] - b[ch])


def single(shape, colour="red", size="large", cx=0.5, cy=0.5, bg="black", place="center"):
    return Scene(bg, (Obj(shape, colour, size, cx, cy),), place=place)


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize(
    "shape,area",
    [
        ("circle", lambda r: math.pi * r * r),
        ("square", lambda r: (1.6 * r) ** 2),
        ("triangle", lambda r: 3 * math.sqrt(3) / 4 * (1.1 * r) ** 2),
        # ten triangles between centre, an outer point (1.2 r) and an inner one (0.6 r)
        ("star", lambda r: 10 * 0.5 * (1.2 * r) * (0.6 * r) * math.sin(math.pi / 5)),
    ],
)
def test_each_shape_has_the_spec_area_and_centre(shape, area, size):
    r = shapes.SIZES[size]
    img = render(single(shape, size=size, cx=0.4, cy=0.55), SIZE)
    cov = coverage(img, "red", "black")
    assert cov.sum() / SIZE**2 == pytest.approx(area(r), rel=0.03)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    cx, cy = (cov * xs).sum() / cov.sum() / SIZE, (cov * ys).sum() / cov.sum() / SIZE
    assert cx == pytest.approx(0.4, abs=0.004)
    if shape in ("circle", "square"):  # triangle and star are not symmetric about y
        assert cy == pytest.approx(0.55, abs=0.004)


def test_triangle_and_star_point_straight_up():
    for shape, reach in (("triangle", 1.1), ("star", 1.2)):
        cov = coverage(render(single(shape), SIZE), "red", "black") > 0.5
        rows = np.where(cov.any(axis=1))[0]
        top_cols = np.where(cov[rows[0]])[0]
        assert rows[0] / SIZE == pytest.approx(0.5 - reach * 0.18, abs=2 / SIZE)
        assert top_cols.mean() / SIZE == pytest.approx(0.5, abs=2 / SIZE)


def test_square_is_axis_aligned_with_side_1_6_r():
    cov = coverage(render(single("square"), SIZE), "red", "black") > 0.5
    rows, cols = np.where(cov.any(axis=1))[0], np.where(cov.any(axis=0))[0]
    assert (rows[-1] - rows[0] + 1) / SIZE == pytest.approx(1.6 * 0.18, abs=1.5 / SIZE)
    assert (cols[-1] - cols[0] + 1) / SIZE == pytest.approx(1.6 * 0.18, abs=1.5 / SIZE)


@pytest.mark.parametrize("colour", list(COLOURS))
@pytest.mark.parametrize("bg", list(BACKGROUNDS))
def test_colours_and_backgrounds_are_exact(colour, bg):
    img = render(single("circle", colour=colour, bg=bg), 64)
    assert tuple(img[32, 32]) == COLOURS[colour]
    assert tuple(img[0, 0]) == BACKGROUNDS[bg] == tuple(img[-1, -1])


def test_edges_are_antialiased():
    cov = coverage(render(single("circle"), 64), "red", "black")
    partial = (cov > 0.05) & (cov < 0.95)
    assert partial.sum() > 20  # a hard-edged circle would have none


def test_same_scene_renders_at_any_resolution():
    s = single("star", cx=0.3, cy=0.7)
    small = render(s, 32).astype(float)
    big = render(s, 128).astype(float).reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))
    assert np.abs(small - big).mean() < 3


def test_places_and_jitter():
    for i in range(300):
        s = shapes.sample_single(shapes.scene_rng(1, i), shapes.colour_shape_pairs(False))
        (o,) = s.objects
        px, py = shapes.PLACES[s.place]
        assert abs(o.cx - px) <= 0.04 and abs(o.cy - py) <= 0.04


def test_two_object_layout_follows_the_relation():
    pairs = shapes.colour_shape_pairs(False)
    for i in range(400):
        s = shapes.sample_two(shapes.scene_rng(2, i), pairs, pairs)
        a, b = s.objects
        assert (a.colour, a.shape) != (b.colour, b.shape)
        along = {"left of": (a.cx, b.cx), "right of": (b.cx, a.cx), "above": (a.cy, b.cy), "below": (b.cy, a.cy)}
        first, second = along[s.relation]
        assert abs(first - 0.27) <= 0.04 and abs(second - 0.73) <= 0.04
        cross = (a.cy, b.cy) if s.relation in ("left of", "right of") else (a.cx, b.cx)
        assert all(abs(c - 0.5) <= 0.10 for c in cross)


SINGLE = re.compile(
    r"^a (small|large) (red|orange|yellow|green|blue|purple) (circle|square|triangle|star) "
    r"(on the left|on the right|at the top|at the bottom|in the center) on a (white|black) background$"
)
TWO = re.compile(
    r"^a (red|orange|yellow|green|blue|purple) (circle|square|triangle|star) "
    r"(to the left of|to the right of|above|below) a (red|orange|yellow|green|blue|purple) "
    r"(circle|square|triangle|star) on a (white|black) background$"
)


def test_canonical_captions_match_the_spec_forms():
    for item in shapes.eval_split(300):
        pattern = SINGLE if item.kind == "single" else TWO
        m = pattern.match(item.prompt)
        assert m, item.prompt
        objs = item.scene.objects
        if item.kind == "single":
            o = objs[0]
            assert m.groups() == (o.size, o.colour, o.shape, shapes.PLACE_PHRASES[item.scene.place],
                                  item.scene.background)
        else:
            assert (m[1], m[2], m[4], m[5]) == (objs[0].colour, objs[0].shape, objs[1].colour, objs[1].shape)


def test_training_captions_never_state_a_wrong_attribute():
    words = {**{c: "colour" for c in COLOURS}, **{s: "shape" for s in shapes.SHAPES}}
    seen = set()
    for i in range(2000):
        rng = shapes.scene_rng(3, i)
        s = shapes.sample_scene(rng)
        cap = shapes.training_caption(s, rng, paraphrase_prob=1.0)
        seen.add(cap)
        assert s.background in cap or not any(bg in cap for bg in BACKGROUNDS)
        for w, kind in words.items():
            if re.search(rf"\b{w}\b", cap):
                assert any(getattr(o, kind) == w for o in s.objects), (cap, s)
        if s.relation is None:
            o = s.objects[0]
            wrong_size = {"small": ("large", "big"), "large": ("small", "little")}[o.size]
            assert not any(re.search(rf"\b{w}\b", cap) for w in wrong_size), cap
    short = [c for c in seen if len(c.split()) <= 3]
    assert len(seen) > 1000 and short  # varied, and some leave attributes out ("a red circle")


def test_training_split_never_draws_held_out_pairs():
    for i in range(3000):
        s = shapes.sample_scene(shapes.scene_rng(4, i))
        assert all((o.colour, o.shape) not in shapes.HELD_OUT for o in s.objects)


def test_training_streams_never_show_or_name_a_held_out_pair():
    """What any stage trains on (the stream's scenes and captions, hard negatives too) never has
    a held-out colour-shape pair, as an object or in words (issue 47: composition samples only)."""
    from unclip.data.stream import ShapesSource

    for hard in (False, True):
        source = ShapesSource(16, seed=3, paraphrase_prob=0.5, hard_negatives=hard)
        for i in range(2000):
            scene, caption = source.draw(i)
            assert all((o.colour, o.shape) not in shapes.HELD_OUT for o in scene.objects), caption
            assert not any(f"{c} {s}" in caption for c, s in shapes.HELD_OUT), caption


def test_eval_split_is_fixed_distinct_and_has_both_subsets():
    a, b = shapes.eval_split(500), shapes.eval_split(500)
    assert [x.prompt for x in a] == [x.prompt for x in b]
    assert [x.prompt for x in shapes.eval_split(100)] == [x.prompt for x in a[:100]]
    assert len({shapes.scene_key(x.scene) for x in a}) == 500
    novel = [x for x in a if x.subset == "novel"]
    assert len(novel) == 100 and {x.kind for x in novel} == {"single", "two"}
    for x in a:
        held = [(o.colour, o.shape) in shapes.HELD_OUT for o in x.scene.objects]
        assert any(held) == (x.subset == "novel"), x.prompt


def test_scene_key_treats_mirrored_relations_as_the_same_scene():
    a, b = Obj("circle", "red", "small", 0.27, 0.5), Obj("square", "blue", "large", 0.73, 0.5)
    left = Scene("white", (a, b), relation="left of")
    right = Scene("white", (b, a), relation="right of")
    assert shapes.scene_key(left) == shapes.scene_key(right)


def test_sampling_is_deterministic_under_a_seed():
    s1 = [shapes.sample_scene(shapes.scene_rng(7, i)) for i in range(50)]
    s2 = [shapes.sample_scene(shapes.scene_rng(7, i)) for i in range(50)]
    s3 = [shapes.sample_scene(shapes.scene_rng(8, i)) for i in range(50)]
    assert s1 == s2 and s1 != s3


def test_scene_dict_round_trip():
    s = shapes.eval_split(2)[1].scene
    assert Scene.from_dict(s.to_dict()) == s


def test_hard_negatives_differ_in_one_stated_detail_and_avoid_held_out_pairs():
    kinds = set()
    for i in range(1000):
        s = shapes.sample_scene(shapes.scene_rng(5, i))
        neg = shapes.hard_negative(s, shapes.scene_rng(5, i, 1))
        assert shapes.scene_key(neg) != shapes.scene_key(s)
        assert shapes.canonical_caption(neg) != shapes.canonical_caption(s)
        assert all((o.colour, o.shape) not in shapes.HELD_OUT for o in neg.objects)
        pairs = [(o.colour, o.shape) for o in neg.objects]
        assert len(set(pairs)) == len(pairs)
        if s.relation and neg.relation == s.relation and neg.background == s.background:
            a, b = s.objects
            na, nb = neg.objects
            if {na.colour, nb.colour} == {a.colour, b.colour} and {na.shape, nb.shape} == {a.shape, b.shape}:
                kinds.add("binding swap")
    assert "binding swap" in kinds


def test_resample_scene_keeps_the_caption_and_redraws_what_it_leaves_open():
    """eval prior's `another_render` reference: same canonical caption, another scene."""
    items = shapes.eval_split(40)
    rng = np.random.default_rng(0)
    sizes_changed = 0
    for it in items:
        other = shapes.resample_scene(it.scene, rng)
        assert shapes.canonical_caption(other) == it.prompt
        assert other != it.scene  # positions are jittered afresh
        if it.scene.relation is not None:
            sizes_changed += [o.size for o in other.objects] != [o.size for o in it.scene.objects]
    assert sizes_changed > 0  # two-object captions leave sizes open
