"""Stable unCLIP's diffusers folder: image variations equal to StableUnCLIPImg2ImgPipeline, text to
image through Karlo's prior equal to StableUnCLIPPipeline built as diffusers' docs build it, Hub
ids, unclip's edits, clear errors. Tiny random folders written here in the published layout."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from unclip import load_pipeline
from unclip.cli import main
from unclip.data import shapes
from unclip.pipelines.karlo.synthetic import KarloSizes
from unclip.pipelines.karlo.synthetic import random_components as karlo_components
from unclip.pipelines.karlo.synthetic import write_folder as write_karlo
from unclip.pipelines.stable_unclip import StableUnclipPipeline, stages
from unclip.pipelines.stable_unclip.synthetic import random_components, write_folder
from unclip.tasks import manipulate as m

from .conftest import randomize  # noqa: F401  (keeps conftest's thread setting)
from .test_kandinsky import eclipse_folder, lay_out_hub_cache

PROMPT = "a red horse"


@pytest.fixture(scope="session")
def stable(tmp_path_factory):
    """(Stable unCLIP folder, Karlo folder, diffusers' img2img and text-to-image pipelines on them)."""
    from diffusers import DDPMScheduler, StableUnCLIPImg2ImgPipeline, StableUnCLIPPipeline

    root = tmp_path_factory.mktemp("stable_unclip")
    parts, karlo = random_components(seed=0), karlo_components(seed=3)
    img2img = StableUnCLIPImg2ImgPipeline(**parts)
    text = StableUnCLIPPipeline(
        prior_tokenizer=karlo["tokenizer"], prior_text_encoder=karlo["text_encoder"], prior=karlo["prior"],
        prior_scheduler=DDPMScheduler.from_config(karlo["prior_scheduler"].config),
        **{k: parts[k] for k in ("image_normalizer", "image_noising_scheduler", "tokenizer", "text_encoder", "unet",
                                 "scheduler", "vae")})
    for ref in (img2img, text):
        ref.set_progress_bar_config(disable=True)
    return write_folder(parts, root / "su"), write_karlo(karlo, root / "karlo"), img2img, text


@pytest.fixture(scope="session")
def pipe(stable):
    return load_pipeline(stable[0], prior_model=stable[1])


def image(seed=0, size=40):
    return shapes.render(shapes.eval_split(seed + 1)[seed].scene, size)


def test_the_folder_is_in_the_published_layout(stable):
    index = json.loads((stable[0] / "model_index.json").read_text())
    assert index["_class_name"] == "StableUnCLIPImg2ImgPipeline"
    assert sorted(p.name for p in stable[0].iterdir() if p.is_dir()) == [
        "feature_extractor", "image_encoder", "image_noising_scheduler", "image_normalizer", "scheduler",
        "text_encoder", "tokenizer", "unet", "vae"]


@pytest.mark.parametrize("kw", [{}, {"noise_level": 100, "prompt": PROMPT},
                                {"num_images_per_prompt": 2, "guidance_scale": 1.0}])
def test_variations_equal_diffusers_img2img_pipeline(stable, pipe, kw):
    img = Image.fromarray(image(0))
    want = stable[2](image=img, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np",
                     **kw).images
    got = pipe(image=img, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np", **kw)
    assert got.images.shape == want.shape and np.abs(got.images - want).max() * 255 <= 1.0
    assert want.std() > 0.02 and got.image_embeds.shape == (1, 32)


@pytest.mark.parametrize("kw", [{}, {"noise_level": 50, "num_images_per_prompt": 2}])
def test_text_to_image_through_karlos_prior_equals_diffusers(stable, pipe, kw):
    want = stable[3](PROMPT, num_inference_steps=5, prior_num_inference_steps=3,
                     generator=torch.Generator().manual_seed(0), output_type="np", **kw).images
    got = pipe(PROMPT, num_inference_steps=5, prior_num_inference_steps=3, generator=torch.Generator().manual_seed(0),
               output_type="np", **kw).images
    assert np.abs(got - want).max() * 255 <= 1.0


def test_generate_cli_with_noise_level_writes_diffusers_image(stable, tmp_path):
    rc = main(["generate", PROMPT, "--model", str(stable[0]), "--prior-model", str(stable[1]), "--steps", "prior=3",
               "decoder=5", "--noise-level", "20", "--seed", "4", "--dtype", "float32", "--device", "cpu",
               "--out", str(tmp_path)])
    assert rc == 0
    got = np.asarray(Image.open(tmp_path / "00000.png")).astype(float)
    want = stable[3](PROMPT, num_inference_steps=5, prior_num_inference_steps=3, noise_level=20,
                     generator=torch.Generator().manual_seed(4), output_type="np").images[0] * 255
    assert np.abs(got - want).mean() <= 1.0


def test_noise_level_and_the_image_change_the_output(pipe):
    def draw(img, **kw):
        return pipe(image=img, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np",
                    **kw).images
    a = draw(image(0))
    assert np.abs(a - draw(image(0), noise_level=500)).max() > 1e-3
    assert np.abs(a - draw(image(1))).max() > 1e-5  # a random UNet's class input moves little, but it moves


def oracle_unet(pipe, x_star):
    """The UNet replaced by the exact v-prediction of a data set holding one latent."""
    abar = pipe.scheduler.alphas_cumprod

    def unet(sample, timestep, **_):
        a = abar[int(timestep)].float()
        x = sample.float()
        eps = (x - a.sqrt() * x_star) / (1 - a).sqrt()
        return (a.sqrt() * eps - (1 - a).sqrt() * x_star,)

    unet.dtype, unet.config, unet.device = torch.float32, pipe.unet.config, torch.device("cpu")
    return unet


def test_ddim_inversion_of_the_vae_latent_reconstructs(stable):
    pipe = load_pipeline(stable[0])
    img = image(0, 32)
    latent = stages.to_latents(pipe, pipe.decoder_input(img))
    pipe.unet = oracle_unet(pipe, latent)
    z = pipe.embed_images([img])
    x_T = stages.invert(pipe, z, latent, 20)
    back = stages.ddim_decode(pipe, z, x_T, 20, 0.0, 1.0, None)
    assert (back - latent).abs().max() < 1e-3 * latent.abs().max()
    assert (x_T - latent).abs().max() > 0.5 * latent.abs().max()  # to x_T, and back
    rec, _ = m.reconstruct(pipe, img, steps=20)
    assert rec.shape == (32, 32, 3)


@pytest.mark.parametrize("command,extra", [
    ("vary", ["--num-images", "2"]), ("interpolate", []), ("edit", ["--to", "a blue square"]), ("probe", [])])
def test_edits_run_from_the_command_line(stable, tmp_path, command, extra):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(image(0)).save(a)
    Image.fromarray(image(1)).save(b)
    images = {"interpolate": [str(a), str(b)], "probe": ["pca", str(a)]}.get(command, [str(a)])
    if command == "probe":
        fit = tmp_path / "fit"
        fit.mkdir()
        for i in range(4):
            Image.fromarray(image(i)).save(fit / f"{i}.png")
        extra = ["--fit-images", str(fit), "--dims", "1", "2"]
    rc = main([command, *images, "--model", str(stable[0]), "--prior-model", str(stable[1]), "--steps", "4",
               "--out", str(tmp_path / "out"), "--dtype", "float32", "--device", "cpu", *extra])
    assert rc == 0
    assert len((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()) >= 2


def test_text_diffs_without_a_prior_say_what_is_missing(stable, tmp_path, capsys):
    Image.fromarray(image(0)).save(tmp_path / "a.png")
    rc = main(["edit", str(tmp_path / "a.png"), "--to", "a cat", "--model", str(stable[0]), "--steps", "3",
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "projected CLIP text tower" in capsys.readouterr().err


def test_repaint_keeps_the_input_outside_the_mask(pipe):
    img = image(1, 32)
    mask = np.zeros((32, 32), np.uint8)
    mask[:16] = 255
    out = pipe.inpaint(img, mask, PROMPT, num_inference_steps=5, prior_num_inference_steps=3, resample=2,
                       generator=torch.Generator().manual_seed(0), output_type="uint8").images
    assert np.array_equal(out[0, 16:], img[16:]) and np.abs(out[0, :16].astype(int) - img[:16]).mean() > 1


def test_a_prior_of_another_width_is_a_clear_error(stable, tmp_path, capsys):
    other = write_karlo(karlo_components(KarloSizes(embed_dim=16, cross_attention_dim=16), seed=5), tmp_path / "k16")
    rc = main(["generate", PROMPT, "--model", str(stable[0]), "--prior-model", str(other), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "16-d" in err and "32-d" in err and "Traceback" not in err


def test_text_to_image_without_a_prior_is_refused(stable, tmp_path, capsys):
    rc = main(["generate", PROMPT, "--model", str(stable[0]), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 2 and "--prior-model" in capsys.readouterr().err


def test_hub_id_offline_and_eval_and_web_jobs(stable, tmp_path, monkeypatch, capsys):
    pytest.importorskip("gradio")
    from unclip.web.jobs import Jobs

    cache = tmp_path / "hub"
    lay_out_hub_cache(cache, "stabilityai/stable-diffusion-2-1-unclip-small", stable[0])
    lay_out_hub_cache(cache, "kakaobrain/karlo-v1-alpha", stable[1])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    pipe = load_pipeline("stabilityai/stable-diffusion-2-1-unclip-small", prior_model="kakaobrain/karlo-v1-alpha")
    assert isinstance(pipe, StableUnclipPipeline)
    assert main(["eval", "shapes", "--model", "stabilityai/stable-diffusion-2-1-unclip-small", "--prior-model",
                 "kakaobrain/karlo-v1-alpha", "--num", "2", "--out", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from unclip.web.app import build_app

    build_app(pipe, "stable unclip")  # the page builds with this family's settings
    jobs = Jobs(pipe, tmp_path / "web")
    Image.fromarray(image(0, 32)).save(tmp_path / "a.png")
    assert len(jobs.generate(PROMPT, num_images=2, decoder_steps=3, prior_steps=2)) == 2
    assert len(jobs.vary(str(tmp_path / "a.png"), num_images=2, steps=3)[2]) == 2


def test_bf16_runs_and_save_pretrained_round_trips(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    again = load_pipeline(tmp_path / "saved")
    kw = dict(image=image(0), num_inference_steps=4, output_type="np")
    a = pipe(generator=torch.Generator().manual_seed(0), **kw).images
    assert np.array_equal(a, again(generator=torch.Generator().manual_seed(0), **kw).images)
    b16 = load_pipeline(tmp_path / "saved", torch_dtype=torch.bfloat16)
    b = b16(generator=torch.Generator().manual_seed(0), **kw).images
    assert b16.dtype == torch.bfloat16 and np.isfinite(b).all() and np.abs(a - b).mean() < 0.1


def test_eclipses_karlo_prior_draws_the_embedding_in_one_pass(stable, tmp_path):
    pipe = load_pipeline(stable[0], prior_model=[stable[1], eclipse_folder(tmp_path / "eclipse")])
    assert pipe.capabilities.priors == ("eclipse",) and pipe.sampling_defaults()["prior_num_inference_steps"] is None
    a = pipe(PROMPT, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    b = pipe(PROMPT, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    assert np.array_equal(a.images, b.images) and a.image_embeds.shape == (1, 32)


@pytest.mark.slow
def test_accelerate_launch_splits_prompts_over_two_processes(stable, tmp_path):
    from .test_distributed import one_and_two_processes

    args = ["generate", PROMPT, "a blue square", "--num-images", "2", "--batch-size", "2", "--model", str(stable[0]),
            "--prior-model", str(stable[1]), "--steps", "prior=2", "decoder=3", "--noise-level", "10",
            "--dtype", "float32"]
    runs = one_and_two_processes(args, tmp_path)
    assert len(runs["one"]) == 4 and all(r["noise_level"] == 10 for r in runs["two"])
