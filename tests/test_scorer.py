"""The shapes scorer is trusted only because these hold: near-perfect on clean renders, still
high on noisy, blurred and low-resolution ones, near zero on blank and noise images and on
shuffled prompt/image pairs."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from unclip.data import shapes
from unclip.tasks.evaluate.detector import Detector, parse_prompt, score

ITEMS = shapes.eval_split(100)


@pytest.fixture(scope="module")
def detector():
    return Detector()


def share_right(detector, make_image, prompts=None) -> float:
    prompts = prompts or [it.prompt for it in ITEMS]
    verdicts = [score(detector(make_image(it, i)), parse_prompt(p))["all"]
                for i, (it, p) in enumerate(zip(ITEMS, prompts))]
    return float(np.mean(verdicts))


def test_prompts_parse_back_to_their_scenes():
    for it in ITEMS:
        scene = parse_prompt(it.prompt)
        assert shapes.canonical_caption(scene) == it.prompt
    with pytest.raises(ValueError, match="canonical"):
        parse_prompt("a photo of a cat")
    with pytest.raises(ValueError, match="unknown colour"):
        parse_prompt("a large pink circle on the left on a white background")


def test_near_perfect_on_clean_renders(detector):
    assert share_right(detector, lambda it, i: shapes.render(it.scene, 128)) >= 0.98
    assert share_right(detector, lambda it, i: shapes.render(it.scene, 64)) >= 0.98


def test_still_high_on_noisy_blurred_and_low_resolution_renders(detector):
    rng = np.random.default_rng(0)

    def noisy(it, i):
        x = shapes.render(it.scene, 128).astype(float) + rng.normal(0, 25, (128, 128, 3))
        return x.clip(0, 255).astype(np.uint8)

    def blurred(it, i):
        return np.asarray(Image.fromarray(shapes.render(it.scene, 128)).filter(ImageFilter.GaussianBlur(2)))

    def low_res(it, i):
        small = Image.fromarray(shapes.render(it.scene, 32))
        return np.asarray(small.resize((128, 128), Image.BICUBIC))

    for make in (noisy, blurred, low_res):
        assert share_right(detector, make) >= 0.9, make.__name__


def test_near_zero_on_blank_noise_and_shuffled_pairs(detector):
    rng = np.random.default_rng(1)
    assert share_right(detector, lambda it, i: np.full((128, 128, 3), 245, np.uint8)) == 0
    assert share_right(detector, lambda it, i: rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)) <= 0.02
    shuffled = [ITEMS[j].prompt for j in rng.permutation(len(ITEMS))]
    assert share_right(detector, lambda it, i: shapes.render(it.scene, 128), shuffled) <= 0.05


def test_reads_each_attribute(detector):
    scene = shapes.Scene("black", (shapes.Obj("star", "purple", "large", 0.73, 0.5),), place="right")
    found = detector(shapes.render(scene, 128))
    assert found.background == "black" and len(found.objects) == 1
    o = found.objects[0]
    assert (o.shape, o.colour, o.size) == ("star", "purple", "large")
    assert abs(o.cx - 0.73) < 0.02 and abs(o.cy - 0.5) < 0.02


def test_eval_shapes_scores_a_manifest_and_writes_a_report(tmp_path, capsys):
    import json

    from unclip.cli import main
    from unclip.data.export import write_shapes

    manifest = write_shapes(tmp_path / "imgs", "eval", 20, 128, None)
    assert main(["eval", "shapes", "--manifest", str(manifest), "--out", str(tmp_path / "rep")]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["in_distribution"]["single"]["all"] == 1.0 and figures["novel"]["two"]["relation"] == 1.0
    assert json.loads((tmp_path / "rep" / "report.json").read_text()) == figures
    assert (tmp_path / "rep" / "grid.png").is_file()
    assert main(["eval", "shapes", "--manifest", str(tmp_path / "none.jsonl")]) == 2


def test_speckle_is_zero_on_clean_renders_and_high_with_salt_and_pepper():
    import numpy as np

    from unclip.data import shapes
    from unclip.tasks.evaluate.masks import speckle_share

    rng = np.random.default_rng(0)
    for item in shapes.eval_split(12):
        clean = shapes.render(item.scene, 128)
        assert speckle_share(clean) == 0.0
        dots = rng.random(clean.shape[:2]) < 0.02
        noisy = np.where(dots[..., None], rng.integers(0, 256, clean.shape), clean).astype(np.uint8)
        assert speckle_share(noisy) > 0.01  # most of the 2% salt-and-pepper pixels counted


def test_eval_counts_stray_objects_that_two_object_verdicts_ignore(tmp_path):
    from unclip.tasks.evaluate.shapes_eval import score_images

    items = [it for it in shapes.eval_split(40) if len(it.scene.objects) == 2][:6]
    clean = np.stack([shapes.render(it.scene, 128) for it in items])
    prompts = [it.prompt for it in items]
    figures = score_images(clean, prompts, tmp_path / "clean", None)
    assert figures["extra_objects"] == 0.0
    stray = clean.copy()
    for img in stray:  # a 10 px fragment in whichever corner is empty
        corner = next((y, x) for y, x in [(2, 2), (2, 116), (116, 2), (116, 116)]
                      if (img[y:y + 10, x:x + 10] == img[0, 0]).all())
        img[corner[0]:corner[0] + 10, corner[1]:corner[1] + 10] = (200, 60, 200)
    fragments = score_images(stray, prompts, tmp_path / "stray", None)
    assert fragments["extra_objects"] == 1.0
    assert fragments["in_distribution"]["two"]["all"] == figures["in_distribution"]["two"]["all"]
