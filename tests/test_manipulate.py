"""Manipulations: slerp, DDIM inversion, variations, interpolations, text diffs, their CLI."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from unclip.cli import main
from unclip.data import shapes
from unclip.diffusion.sampling import ddim_invert, sample
from unclip.diffusion.schedules import make_scheduler
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline
from unclip.tasks import manipulate as m


def test_slerp_ends_and_stays_on_the_sphere():
    a, b = F.normalize(torch.randn(3, 8), dim=-1), F.normalize(torch.randn(3, 8), dim=-1)
    assert torch.allclose(m.slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(m.slerp(a, b, 1.0), b, atol=1e-6)
    mid = m.slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose((mid * a).sum(-1), (mid * b).sum(-1), atol=1e-5)  # halfway in angle


def oracle(x_star, scheduler):
    """The exact v-prediction denoiser of a data set holding the single image x_star."""
    abar = scheduler.alphas_cumprod

    def denoise(x, t, cond=None):
        a = abar[t].view(-1, 1, 1, 1).float()
        eps = (x - a.sqrt() * x_star) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * x_star

    return denoise


def test_ddim_inversion_then_ddim_reconstructs_exactly_for_an_exact_denoiser():
    s = make_scheduler("ddim", prediction_type="v_prediction", clip_sample_range=1.0)
    x_star = torch.rand(2, 3, 8, 8) * 2 - 1
    x_T = ddim_invert(oracle(x_star, s), x_star, s, steps=20)
    assert torch.allclose(sample(oracle(x_star, s), x_T, s, steps=20), x_star, atol=1e-4)


@pytest.fixture
def exact_pipe(tiny_model):
    """The tiny pipeline with its decoder replaced by the exact denoiser of one shapes image."""
    pipe = DalleTwoPipeline.from_pretrained(tiny_model)
    image = shapes.render(shapes.eval_split(1)[0].scene, 32)
    x_star = pipe.decoder_input(image)
    pipe.decoder.denoise = oracle(x_star, pipe.decoder.scheduler)
    return pipe, image


def test_reconstruct_through_the_pipeline_reports_psnr(exact_pipe):
    pipe, image = exact_pipe
    rec, db = m.reconstruct(pipe, image, steps=20)
    assert rec.shape == (8, 8, 3) and rec.dtype == np.uint8 and db > 40


def test_variations_differ_from_each_other_and_depend_on_eta(exact_pipe, tiny_model):
    pipe = DalleTwoPipeline.from_pretrained(tiny_model)  # a real (random) decoder, so eta matters
    image = exact_pipe[1]
    out = m.vary(pipe, image, 3, eta=1.0, steps=4)
    assert out.shape == (3, 32, 32, 3) and not np.array_equal(out[0], out[1])
    z_i, x_T, _ = m.invert(pipe, image, steps=4)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    for eta, same in ((0.0, True), (1.0, False)):  # at the base size, only eta > 0 varies
        base = pipe.decode_latents(z_i.expand(2, -1), x_T.expand(2, -1, -1, -1), eta=eta, steps=4, generator=gens)
        assert torch.equal(base[0], base[1]) == same


def test_interpolation_and_text_diff_frames(tiny_model):
    pipe = DalleTwoPipeline.from_pretrained(tiny_model)
    a, b = (shapes.render(it.scene, 32) for it in shapes.eval_split(2))
    for latent in ("inverted", "fixed"):
        frames, thetas = m.interpolate(pipe, a, b, 4, latent=latent, steps=3)
        assert frames.shape == (4, 32, 32, 3) and thetas == pytest.approx([0, 1 / 3, 2 / 3, 1])
    frames, thetas = m.text_diff(pipe, a, "a blue circle", "a red circle", 3, steps=3)
    assert frames.shape == (3, 32, 32, 3) and thetas == pytest.approx([0, 0.25, 0.5])
    assert not np.array_equal(frames[0], frames[-1])
    frames, _ = m.interpolate(pipe, a, "a blue circle on a white background", 3, steps=3)  # a caption at one end
    assert frames.shape == (3, 32, 32, 3) and not np.array_equal(frames[0], frames[-1])
    with pytest.raises(ValueError, match="latent"):
        m.interpolate(pipe, a, b, 3, latent="linear")
    with pytest.raises(ValueError, match="non-empty"):
        m.text_diff(pipe, a, "  ")


def test_cli_commands_accept_any_image_mode_and_write_manifests(tiny_model, tmp_path, capsys):
    render = shapes.render(shapes.eval_split(1)[0].scene, 40)
    rgba = tmp_path / "a.png"
    Image.fromarray(render).convert("RGBA").save(rgba)
    grey = tmp_path / "b.png"
    Image.fromarray(render).convert("L").resize((50, 30)).save(grey)
    palette = tmp_path / "c.gif"
    Image.fromarray(render).convert("P").save(palette)
    common = ["--model", str(tiny_model), "--steps", "3"]
    assert main(["invert", str(palette), *common, "--out", str(tmp_path / "inv")]) == 0
    assert "reconstruction PSNR" in capsys.readouterr().out
    assert main(["vary", str(rgba), *common, "--num-images", "2", "--out", str(tmp_path / "vary")]) == 0
    assert main(["interpolate", str(rgba), str(grey), *common, "--frames", "3", "--latent", "fixed",
                 "--out", str(tmp_path / "interp")]) == 0
    assert main(["edit", str(grey), *common, "--from", "a red circle", "--to", "a blue circle",
                 "--frames", "3", "--out", str(tmp_path / "edit")]) == 0
    for name, n, key in (("inv", 1, "psnr"), ("vary", 2, "eta"), ("interp", 3, "theta"), ("edit", 3, "theta")):
        lines = [json.loads(x) for x in (tmp_path / name / "manifest.jsonl").read_text().splitlines()]
        assert [x["index"] for x in lines] == list(range(n)) and all(key in x for x in lines)
        assert all((tmp_path / name / x["file"]).is_file() for x in lines)
    assert (tmp_path / "interp" / "strip.png").is_file() and (tmp_path / "edit" / "strip.png").is_file()


def test_cli_rejects_unreadable_and_missing_images(tiny_model, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["invert", str(bad), "--model", str(tiny_model), "--out", str(tmp_path / "o")]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert main(["vary", str(tmp_path / "none.png"), "--model", str(tiny_model), "--out", str(tmp_path / "o")]) == 2
