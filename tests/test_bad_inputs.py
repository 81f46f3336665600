"""Bad input gets a clear error (exit 2, a message naming the problem, no traceback), before any
work, and leaves earlier results alone; every image mode PIL reads is read right."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from unclip.cli import main
from unclip.data import shapes
from unclip.data.transforms import open_rgb

S = ["--steps", "prior=2", "decoder=2", "upsampler=1"]


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.is_dir() else None


def fails(args, capsys, *words, out=None):
    """Run the command; it must exit 2 with all `words` in its message, no traceback, and leave
    `out` exactly as it was (absent stays absent)."""
    before = snapshot(out) if out is not None else None
    capsys.readouterr()  # what earlier commands printed
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unclip: error:" in err, err
    for w in words:
        assert w in err, (w, err)
    if out is not None:
        assert snapshot(out) == before
    return err


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(shapes.render(shapes.eval_split(1)[0].scene, 32)).save(path)
    return path


def test_a_second_run_never_overwrites_the_first(tiny_model, tmp_path, capsys):
    out = tmp_path / "x"
    def base(prompt):
        return ["generate", prompt, "--model", str(tiny_model), "--out", str(out), *S]

    assert main(base("a red circle") + ["--num-images", "3"]) == 0
    first = snapshot(out)
    assert len(first) == 4
    fails(base("a blue square"), capsys, "already holds results", "--overwrite", out=out)
    assert main(base("a blue square") + ["--overwrite"]) == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["prompt"] == "a blue square"
    assert sorted(snapshot(out)) == ["00000.png", "manifest.jsonl"]  # no orphans of the first run


@pytest.mark.parametrize("extra, words", [
    (["--decoder-guidance", "nan"], ["--decoder-guidance", "finite"]),
    (["--prior-guidance", "inf"], ["--prior-guidance", "finite"]),
    (["--prior-guidance", "-1"], ["--prior-guidance", "at least 0"]),
    (["--seed", str(2 ** 70)], ["--seed"]),
    (["--seed", "-1"], ["--seed"]),
    (["--num-images", "0"], ["--num-images", "at least 1"]),
    (["--batch-size", "-2"], ["--batch-size"]),
    (["--steps", "prior=5000"], ["bad --steps", "1..1000"]),
    (["--steps", "decoder=-5"], ["bad --steps"]),
])
def test_generate_rejects_bad_settings_before_loading(tmp_path, capsys, extra, words):
    # the model folder does not exist: the settings are checked before any loading
    out = tmp_path / "out"
    fails(["generate", "a red circle", "--model", str(tmp_path / "nowhere"), "--out", str(out), *extra],
          capsys, *words)
    assert not out.exists()


def test_generate_rejects_bad_files(tiny_model, tmp_path, capsys):
    binary = tmp_path / "prompts.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    fails(["generate", "--prompts-file", str(binary), "--out", str(tmp_path / "o")], capsys, "prompts.txt", "UTF-8")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    fails(["generate", "a red circle", "--model", str(tiny_model), "--out", str(a_file)], capsys, "is a file")
    fails(["generate", "a red circle", "--model", str(tiny_model), "--out", str(a_file / "sub")], capsys,
          str(a_file / "sub"))
    fails(["generate", "a red circle", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o")], capsys,
          "model folder not found")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage, words", [
    (lambda m: (m / "unclip.json").write_text("{oops"), ["unclip.json", "not valid JSON"]),
    (lambda m: (m / "decoder" / "unet" / "config.json").write_text("{oops"), ["decoder"]),
    (lambda m: (m / "prior" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 64), ["prior"]),
    (lambda m: (m / "upsampler2" / "diffusion_pytorch_model.safetensors").unlink(), ["upsampler2", "no weights"]),
])
def test_damaged_model_folders_name_the_component(tiny_model, tmp_path, capsys, damage, words):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    damage(model)
    fails(["generate", "a red circle", "--model", str(model), "--out", str(tmp_path / "o"), *S], capsys, *words)
    assert not (tmp_path / "o").exists()  # a failed command leaves no empty folder


@pytest.mark.parametrize("command, extra, words", [
    ("vary", ["--eta", "nan"], ["--eta", "finite"]),
    ("vary", ["--eta", "2"], ["--eta", "in [0.0, 1.0]"]),
    ("vary", ["--steps", "-5"], ["--steps", "1..1000"]),
    ("vary", ["--steps", "0"], ["--steps"]),
    ("vary", ["--num-images", "0"], ["--num-images"]),
    ("vary", ["--seed", str(2 ** 70)], ["--seed"]),
    ("edit", ["--to", "a blue circle", "--max-theta", "50"], ["--max-theta", "in [0.0, 1.0]"]),
    ("edit", ["--to", "a blue circle", "--max-theta", "nan"], ["--max-theta", "finite"]),
    ("edit", ["--to", "a blue circle", "--frames", "1"], ["--frames", "at least 2"]),
    ("invert", ["--steps", "100000"], ["--steps"]),
])
def test_manipulations_reject_bad_settings_before_loading(tmp_path, capsys, image_file, command, extra, words):
    out = tmp_path / "out"
    fails([command, str(image_file), "--model", str(tmp_path / "nowhere"), "--out", str(out), *extra], capsys, *words)
    assert not out.exists()


def test_manipulation_outputs_are_never_overwritten(tiny_model, tmp_path, capsys, image_file):
    out = tmp_path / "v"
    args = ["vary", str(image_file), "--model", str(tiny_model), "--steps", "2", "--num-images", "1", "--out", str(out)]
    assert main(args) == 0
    fails(args, capsys, "already holds results", out=out)
    assert main(args + ["--overwrite"]) == 0


def test_api_rejects_the_same_values(tiny_model):
    import torch

    from unclip import load_pipeline
    from unclip.tasks import manipulate as m

    pipe = load_pipeline(tiny_model)
    for kw, word in ((dict(decoder_guidance_scale=float("nan")), "decoder_guidance_scale"),
                     (dict(prior_num_inference_steps=0), "prior_num_inference_steps"),
                     (dict(num_images_per_prompt=-1), "num_images_per_prompt")):
        with pytest.raises(ValueError, match=word):
            pipe("a red circle", generator=torch.Generator().manual_seed(0), **kw)
    img = shapes.render(shapes.eval_split(1)[0].scene, 32)
    with pytest.raises(ValueError, match="eta"):
        m.vary(pipe, img, 1, eta=float("nan"), steps=2)
    with pytest.raises(ValueError, match="max_theta"):
        m.text_diff(pipe, img, "a blue circle", max_theta=50, steps=2)


def encode(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_every_image_mode_reads_as_its_8bit_equivalent():
    rgb = shapes.render(shapes.eval_split(1)[0].scene, 48)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    grey_rgb = np.repeat(grey[..., None], 3, axis=-1)
    cases = {
        "I;16": (Image.fromarray(grey.astype(np.uint16) * 257), grey_rgb),
        "I (32-bit TIFF)": (Image.fromarray(grey.astype(np.int32) * 257), grey_rgb),
        "F in [0, 1]": (Image.fromarray(grey.astype(np.float32) / 255), grey_rgb),
        "L": (Image.fromarray(grey), grey_rgb),
        "CMYK": (Image.fromarray(rgb).convert("CMYK"), rgb),
        "P": (Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256), None),
    }
    for name, (img, expected) in cases.items():
        fmt = "TIFF" if img.mode in ("I", "F", "CMYK") else "PNG"
        got = np.asarray(open_rgb(encode(img, fmt))).astype(int)
        want = expected if expected is not None else np.asarray(img.convert("RGB"))
        assert got.shape == rgb.shape and np.abs(got - want).max() <= 1, name
    # a 16-bit image is not read as white (PIL's own convert clips it)
    assert np.asarray(open_rgb(encode(cases["I;16"][0]))).mean() < 250


def test_transparency_and_exif_orientation():
    rgb = shapes.render(shapes.eval_split(1)[0].scene, 48)
    rgba = np.concatenate([rgb, np.zeros((48, 48, 1), np.uint8)], axis=-1)  # fully transparent
    assert (np.asarray(open_rgb(encode(Image.fromarray(rgba)))) == 255).all()  # composited onto white
    pal = Image.fromarray(rgb).convert("P")
    pal.info["transparency"] = 0
    assert open_rgb(encode(pal)).mode == "RGB"
    img = Image.fromarray(rgb[:, :24])  # 48 x 24, stored rotated
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    shown = open_rgb(encode(img, "JPEG", exif=exif, quality=95))
    assert shown.size == (48, 24)  # width and height swapped by the orientation tag


def test_unreadable_images_are_named(tmp_path, capsys, tiny_model):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    fails(["vary", str(bad), "--model", str(tiny_model), "--out", str(tmp_path / "o")], capsys, "bad.png")
    fails(["vary", str(tmp_path), "--model", str(tiny_model), "--out", str(tmp_path / "o")], capsys, "folder")
    assert not (tmp_path / "o").exists()


def test_a_malformed_config_file_is_a_clear_error(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train: [unclosed\n")
    fails(["train", "clip", "--config", str(cfg)], capsys, "bad.yaml", "cannot be parsed")


def test_a_prompt_longer_than_the_text_tower_reads_is_a_warning(tiny_model, tmp_path, caplog):
    long = "a red circle " + "and a blue square " * 10
    with caplog.at_level("WARNING"):
        assert main(["generate", long, "--model", str(tiny_model), "--out", str(tmp_path / "o"), *S]) == 0
    assert "prompt cut" in caplog.text


def test_a_folder_of_unreadable_images_is_a_clear_error(tmp_path, capsys):
    from .conftest import TINY

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"{i}.png").write_bytes(b"not a png")
        (data / f"{i}.txt").write_text("a red circle")
    fails(["train", "upsampler", "--config", str(TINY / "upsampler.yaml"), "--data.source=folder",
           f"--data.path={data}", f"--train.out_dir={tmp_path / 'run'}"], capsys, "unreadable", ".png")
