"""Two-object captions drawn one object at a time (unclip.pipelines.dalle2.compose, issue 47)."""

import numpy as np
import pytest
import torch

from unclip.data import shapes
from unclip.pipelines.dalle2 import DalleTwoPipeline
from unclip.pipelines.dalle2.compose import combine, moved, split_caption
from unclip.tasks.evaluate.detector import Detector, parse_prompt, score


def test_two_object_captions_split_into_objects_drawn_in_the_center():
    center = "a large {} in the center on a {} background"
    assert split_caption("a yellow star above a blue triangle on a black background") == (
        (center.format("yellow star", "black"), "top"), (center.format("blue triangle", "black"), "bottom"))
    assert [p for _, p in split_caption("a red circle to the left of a green square on a white background")] == \
        ["left", "right"]
    assert [p for _, p in split_caption("a red circle to the right of a green square on a white background")] == \
        ["right", "left"]
    assert split_caption("a large red circle on the left on a white background") is None  # one object: as is
    assert split_caption("a picture of two things") is None
    assert split_caption("An orange star  below a red square on a white background.") == (
        (center.format("orange star", "white"), "bottom"), (center.format("red square", "white"), "top"))


def test_an_object_drawn_in_the_center_moves_to_its_place():
    star = ("star", shapes.COLOURS["yellow"], shapes.SIZES["large"])
    for place, (x, y) in shapes.PLACES.items():
        drawn = as_tensor(shapes.draw_objects(shapes.BACKGROUNDS["black"], [(*star, 0.5, 0.5)], 64))
        want = shapes.draw_objects(shapes.BACKGROUNDS["black"], [(*star, x, y)], 64)
        got = as_image(moved(drawn, place))
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 2, place  # within a fraction of a pixel's shift
        det = Detector()(got)
        assert len(det.objects) == 1 and score(det, parse_prompt(
            f"a large yellow star {shapes.PLACE_PHRASES[place]} on a black background"))["all"], place


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def as_image(x: torch.Tensor) -> np.ndarray:
    return ((x[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()


@pytest.mark.parametrize("bg", ["white", "black"])
def test_combine_keeps_both_objects_whole_and_drops_strays(bg):
    """The union of two single-object images: a large star that crosses the middle is not cut,
    a stray blob on the other object's side is dropped, and the scorer finds the scene."""
    star = ("star", shapes.COLOURS["yellow"], shapes.SIZES["large"], 0.31, 0.5)  # reaches past x = 0.5
    stray = ("circle", shapes.COLOURS["yellow"], 0.05, 0.8, 0.3)
    square = ("square", shapes.COLOURS["blue"], shapes.SIZES["large"], 0.73, 0.5)
    background = shapes.BACKGROUNDS[bg]
    first = shapes.draw_objects(background, [star, stray], 64)
    second = shapes.draw_objects(background, [square], 64)
    both = as_image(combine(as_tensor(first), as_tensor(second), "right"))
    want = shapes.draw_objects(background, [star, square], 64)
    assert np.abs(both.astype(int) - want.astype(int)).max() <= 3  # star whole, stray gone, square there
    det = Detector()(both)
    assert len(det.objects) == 2
    assert score(det, parse_prompt(f"a yellow star to the left of a blue square on a {bg} background"))["all"]
    # turned: the second object above the first
    t = lambda im: np.ascontiguousarray(im.transpose(1, 0, 2))  # noqa: E731
    turned = as_image(combine(as_tensor(t(first)), as_tensor(t(second)), "bottom"))
    assert np.abs(turned.astype(int) - t(want).astype(int)).max() <= 3


def test_combine_takes_each_side_from_its_object_exactly():
    a, b = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    out = combine(a, b, "left")
    assert torch.equal(out[..., :, 11:], a[..., :, 11:])  # past 0.65 of the side: the first object's alone
    assert torch.equal(out[..., :, :5], b[..., :, :5])  # before 0.35 (second at left): its pixels win where it has any
    assert out.shape == a.shape and out.dtype == a.dtype


def draw(pipe, prompts, seeds, **kw):
    return pipe(prompts, generator=[torch.Generator().manual_seed(i) for i in seeds], output_type="uint8",
                rerank=1, **kw).images


def test_compose_draws_each_object_from_its_own_caption(tiny_model, tmp_path, monkeypatch):
    """With compose, the decoder sees each object's caption alone; other captions are drawn as
    without it; each image depends on its own seed alone; the setting saves with the folder."""
    pipe = DalleTwoPipeline.from_pretrained(tiny_model, torch_dtype=torch.float32)  # exact comparisons: never bf16
    two, one = "a red circle above a blue square on a white background", "a large red circle on the left on a white background"
    seen = []
    decode = pipe.decode
    monkeypatch.setattr(pipe, "decode", lambda z, rows=None, **kw: seen.append(list(rows)) or decode(z, rows, **kw))
    composed = draw(pipe, [one, two], [0, 1], compose=True)
    assert seen == [[one, "a large red circle in the center on a white background",
                     "a large blue square in the center on a white background"]]
    close = lambda a, b: np.abs(a.astype(int) - b.astype(int)).max() <= 2  # noqa: E731 (batch sizes round apart)
    assert close(composed[0], draw(pipe, [one], [0])[0])  # not a two-object caption: drawn as always
    assert close(composed[1], draw(pipe, [two], [1], compose=True)[0])  # its own seed alone
    assert close(composed[1], draw(pipe, [two, one], [1, 5], compose=True)[0])
    assert not close(composed[1], draw(pipe, [two], [1])[0])
    out = pipe([two], generator=torch.Generator().manual_seed(3), output_type="pt", rerank=2, compose=True)
    assert out.images.shape[0] == 1 and out.image_embeds.shape[0] == 1  # one image per caption, reranked too
    assert torch.allclose(out.image_embeds.norm(dim=-1), torch.ones(1))
    pipe.compose = True
    pipe.save_pretrained(tmp_path / "m")
    again = DalleTwoPipeline.from_pretrained(tmp_path / "m")
    assert again.compose and again.sampling_defaults()["compose"] is True
    with pytest.raises(ValueError, match="compose"):
        pipe(two, compose="yes")
