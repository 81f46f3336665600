"""Kandinsky 2.2's diffusers folders: loading, sampling equal to diffusers' own pipelines, Hub ids
from a cache laid out here, unclip's edits, clear errors. Tiny random folders written here in the
published layouts (nothing downloads)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from unclip import load_pipeline
from unclip.cli import main
from unclip.data import shapes
from unclip.pipelines.kandinsky import KandinskyPipeline, stages
from unclip.pipelines.kandinsky.synthetic import (
    random_decoder,
    random_prior,
    write_decoder,
    write_prior,
)
from unclip.tasks import manipulate as m

from .conftest import randomize  # noqa: F401  (keeps conftest's thread setting)

PROMPT = "a red horse"
SMALL = dict(height=32, width=32, num_inference_steps=5, prior_num_inference_steps=3)


@pytest.fixture(scope="session")
def kandinsky(tmp_path_factory):
    """(decoder folder, prior folder, diffusers' KandinskyV22CombinedPipeline on the same components)."""
    from diffusers import KandinskyV22CombinedPipeline

    prior, dec = random_prior(seed=0), random_decoder(seed=1)
    root = tmp_path_factory.mktemp("kandinsky")
    ref = KandinskyV22CombinedPipeline(
        unet=dec["unet"], scheduler=dec["scheduler"], movq=dec["movq"], prior_prior=prior["prior"],
        prior_image_encoder=prior["image_encoder"], prior_text_encoder=prior["text_encoder"],
        prior_tokenizer=prior["tokenizer"], prior_scheduler=prior["scheduler"],
        prior_image_processor=prior["image_processor"])
    ref.set_progress_bar_config(disable=True)
    return write_decoder(dec, root / "decoder"), write_prior(prior, root / "prior"), ref


@pytest.fixture(scope="session")
def inpaint_decoder(tmp_path_factory, kandinsky):
    """(inpaint decoder folder with a learned-variance scheduler, diffusers' prior and inpaint pipelines)."""
    from diffusers import KandinskyV22InpaintPipeline, KandinskyV22PriorPipeline

    dec = random_decoder(seed=2, inpaint=True, variance_type="learned_range")
    prior = kandinsky[2].prior_pipe
    ref = KandinskyV22InpaintPipeline(unet=dec["unet"], scheduler=dec["scheduler"], movq=dec["movq"])
    ref.set_progress_bar_config(disable=True)
    assert isinstance(prior, KandinskyV22PriorPipeline)
    return write_decoder(dec, tmp_path_factory.mktemp("kandinsky_inpaint")), prior, ref


@pytest.fixture(scope="session")
def pipe(kandinsky):
    return load_pipeline(kandinsky[0], prior_model=kandinsky[1])


def image(seed=0, size=40):
    return shapes.render(shapes.eval_split(seed + 1)[seed].scene, size)


def ref_images(ref, **kw):
    return ref(PROMPT, generator=torch.Generator().manual_seed(0), output_type="np", **{**SMALL, **kw}).images


def test_folders_are_in_the_published_layouts(kandinsky):
    decoder, prior, _ = kandinsky
    index = json.loads((decoder / "model_index.json").read_text())
    assert index["_class_name"] == "KandinskyV22Pipeline" and index["movq"] == ["diffusers", "VQModel"]
    assert sorted(p.name for p in decoder.iterdir() if p.is_dir()) == ["movq", "scheduler", "unet"]
    assert sorted(p.name for p in prior.iterdir() if p.is_dir()) == [
        "image_encoder", "image_processor", "prior", "scheduler", "text_encoder", "tokenizer"]
    assert (prior / "tokenizer" / "vocab.json").is_file() and (prior / "tokenizer" / "merges.txt").is_file()


@pytest.mark.parametrize("kw", [{}, {"num_images_per_prompt": 2}, {"negative_prompt": "blue square"},
                                {"guidance_scale": 1.0, "prior_guidance_scale": 1.0}])
def test_text_to_image_equals_diffusers_combined_pipeline(kandinsky, pipe, kw):
    want = ref_images(kandinsky[2], **kw)
    got = pipe(PROMPT, generator=torch.Generator().manual_seed(0), output_type="np", **{**SMALL, **kw})
    assert got.images.shape == want.shape and got.images.dtype == np.float32
    assert np.abs(got.images - want).max() * 255 <= 1.0
    assert got.image_embeds.shape == (want.shape[0], 32)
    assert want.std() > 0.02  # the images are not flat: equality means something


def test_generate_cli_writes_diffusers_image_for_the_seed(kandinsky, tmp_path):
    decoder, prior, ref = kandinsky
    rc = main(["generate", PROMPT, "--model", str(decoder), "--prior-model", str(prior), "--height", "32",
               "--width", "32", "--steps", "prior=3", "decoder=5", "--seed", "3", "--dtype", "float32",
               "--out", str(tmp_path), "--device", "cpu"])
    assert rc == 0
    got = np.asarray(Image.open(tmp_path / "00000.png")).astype(float)
    want = ref(PROMPT, generator=torch.Generator().manual_seed(3), output_type="np", **SMALL).images[0] * 255
    assert np.abs(got - want).mean() <= 1.0


def test_prompts_and_guidance_change_the_image(pipe):
    def draw(prompt, **kw):
        return pipe(prompt, generator=torch.Generator().manual_seed(0), output_type="np", **{**SMALL, **kw}).images
    a = draw(PROMPT)
    assert np.abs(a - draw("a blue square")).max() > 1e-3
    assert np.abs(a - draw(PROMPT, guidance_scale=8.0)).max() > 1e-3
    assert np.array_equal(a, draw(PROMPT))  # the seed decides


def test_inpaint_decoder_equals_diffusers_inpaint_pipeline(inpaint_decoder, kandinsky):
    path, prior, ref = inpaint_decoder
    pipe = load_pipeline(path, prior_model=kandinsky[1])
    caps = pipe.capabilities
    assert caps.inpainting and not caps.text_to_image
    img = Image.fromarray(image(0, 40))
    mask = np.zeros((40, 40), np.uint8)
    mask[8:24, 10:30] = 255
    g = torch.Generator().manual_seed(0)
    z, neg = prior(PROMPT, num_inference_steps=3, generator=g).to_tuple()
    want = ref(image=img, mask_image=Image.fromarray(mask), image_embeds=z, negative_image_embeds=neg, height=32,
               width=32, num_inference_steps=5, generator=g, output_type="np").images
    got = pipe.inpaint(img, Image.fromarray(mask), PROMPT, generator=torch.Generator().manual_seed(0),
                       output_type="np", **SMALL).images
    assert np.abs(got - want).max() * 255 <= 1.0
    with pytest.raises(ValueError, match="inpaint decoder"):
        pipe(PROMPT, **SMALL)


def test_repaint_with_the_base_decoder_keeps_the_input_outside_the_mask(pipe):
    img = image(1, 32)
    mask = np.zeros((32, 32), np.uint8)
    mask[:16] = 255
    out = pipe.inpaint(img, mask, PROMPT, generator=torch.Generator().manual_seed(0), output_type="uint8",
                       resample=2, **SMALL).images
    assert out.shape == (1, 32, 32, 3)
    assert np.array_equal(out[0, 16:], img[16:])
    assert np.abs(out[0, :16].astype(int) - img[:16]).mean() > 1


def oracle_unet(pipe, x_star):
    """The UNet replaced by the exact epsilon of a data set holding one latent (and zero variance
    channels), as a perfectly trained decoder would predict."""
    abar = pipe.scheduler.alphas_cumprod

    def unet(sample, timestep, **_):
        a = abar[int(timestep)].float()
        x = sample.float()
        eps = (x - a.sqrt() * x_star) / (1 - a).sqrt()
        return (torch.cat([eps, torch.zeros_like(eps)], dim=1),)

    unet.dtype, unet.config, unet.device = torch.float32, pipe.unet.config, torch.device("cpu")
    return unet


def test_ddim_inversion_of_the_movq_latent_keeps_the_embedding_and_reconstructs(kandinsky):
    pipe = load_pipeline(kandinsky[0], prior_model=kandinsky[1])
    img = image(0, 32)
    latent = pipe.encode_latents(pipe.decoder_input(img))
    pipe.unet = oracle_unet(pipe, latent)
    z = pipe.embed_images([img])
    x_T = stages.invert(pipe, z, latent, 20)
    back = stages.ddim_decode(pipe, z, x_T, 20, 0.0, 1.0, None)
    assert (back - latent).abs().max() < 1e-3 and (x_T - latent).abs().max() > 0.1  # to x_T, and back
    rec, _ = m.reconstruct(pipe, img, steps=20)
    assert np.array_equal(rec, stages.to_pixels(pipe, latent).mul(127.5).add(127.5).round().clamp(0, 255)
                          .byte().permute(0, 2, 3, 1).numpy()[0])


@pytest.mark.parametrize("command,extra", [
    ("vary", ["--num-images", "2"]), ("interpolate", []), ("edit", ["--to", "a blue square"]), ("probe", [])])
def test_edits_run_from_the_command_line(kandinsky, tmp_path, command, extra):
    decoder, prior, _ = kandinsky
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(image(0, 40)).save(a)
    Image.fromarray(image(1, 40)).save(b)
    images = {"interpolate": [str(a), str(b)], "probe": ["pca", str(a)]}.get(command, [str(a)])
    if command == "probe":
        fit = tmp_path / "fit"
        fit.mkdir()
        for i in range(4):
            Image.fromarray(image(i, 40)).save(fit / f"{i}.png")
        extra = ["--fit-images", str(fit), "--dims", "1", "2"]
    rc = main([command, *images, "--model", str(decoder), "--prior-model", str(prior), "--steps", "4",
               "--out", str(tmp_path / "out"), "--dtype", "float32", "--device", "cpu", *extra])
    assert rc == 0
    lines = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) >= 2 and Image.open(tmp_path / "out" / "00000.png").size == (32, 32)


def test_reranking_by_the_prior_folders_towers(pipe):
    gens = [torch.Generator().manual_seed(5)]
    one = pipe(PROMPT, generator=gens, output_type="np", **SMALL).images
    best = pipe(PROMPT, rerank=3, generator=[torch.Generator().manual_seed(5)], output_type="np", **SMALL).images
    assert best.shape == one.shape
    assert pipe.capabilities.reranking and pipe.judge.image_size == 32


def lay_out_hub_cache(cache, repo, folder, commit="0123456789abcdef0123456789abcdef01234567"):
    """huggingface_hub's cache layout for one repository at `main`, as a download leaves it."""
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)


def test_hub_ids_resolve_through_the_cache_offline(kandinsky, tmp_path, monkeypatch, capsys):
    decoder, prior, _ = kandinsky
    cache = tmp_path / "hub"
    lay_out_hub_cache(cache, "kandinsky-community/kandinsky-2-2-decoder", decoder)
    lay_out_hub_cache(cache, "kandinsky-community/kandinsky-2-2-prior", prior)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    by_id = load_pipeline("kandinsky-community/kandinsky-2-2-decoder",
                          prior_model="kandinsky-community/kandinsky-2-2-prior")
    assert isinstance(by_id, KandinskyPipeline)
    a = by_id(PROMPT, generator=torch.Generator().manual_seed(0), output_type="np", **SMALL).images
    b = load_pipeline(decoder, prior_model=prior)(PROMPT, generator=torch.Generator().manual_seed(0),
                                                   output_type="np", **SMALL).images
    assert np.array_equal(a, b)
    rc = main(["generate", PROMPT, "--model", "kakaobrain/karlo-v1-alpha", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "kakaobrain/karlo-v1-alpha" in err and "HF_HUB_OFFLINE" in err and "hf download" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,words", [
    (["--prior-model", "{decoder}"], "expected a KandinskyV22PriorPipeline"),
    ([], "prior"),
    (["--prior-model", "{prior}", "--height", "30000"], "height"),
])
def test_clear_errors(kandinsky, tmp_path, capsys, args, words):
    decoder, prior, _ = kandinsky
    args = [a.format(decoder=decoder, prior=prior) for a in args]
    rc = main(["generate", PROMPT, "--model", str(decoder), *args, "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and "Traceback" not in err


def test_a_prior_folder_as_the_model_says_what_to_do(kandinsky, capsys, tmp_path):
    rc = main(["generate", PROMPT, "--model", str(kandinsky[1]), "--out", str(tmp_path / "o")])
    assert rc == 2 and "--prior-model" in capsys.readouterr().err


def test_height_is_not_a_setting_of_the_shapes_model(tmp_path, capsys):
    rc = main(["generate", PROMPT, "--height", "64", "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 2 and "--height is not a setting" in capsys.readouterr().err


def eclipse_folder(path, width=32):
    """A random ECLIPSE prior folder as published (one network) for `width`-d embeddings."""
    from unclip.models.prior.eclipse import EclipseTransformer
    from unclip.pipelines.synthetic import randomize as random_weights

    net = EclipseTransformer(num_attention_heads=2, attention_head_dim=16, num_layers=1, embedding_dim=width)
    random_weights(net, torch.Generator().manual_seed(0))
    net.save_pretrained(path)
    return path


def test_eclipse_prior_replaces_the_diffusion_prior(kandinsky, tmp_path):
    pipe = load_pipeline(kandinsky[0], prior_model=[kandinsky[1], eclipse_folder(tmp_path / "eclipse")])
    assert pipe.capabilities.priors == ("eclipse",) and pipe.sampling_defaults()["prior_num_inference_steps"] is None
    out = pipe(PROMPT, generator=torch.Generator().manual_seed(0), output_type="np", **SMALL)
    again = pipe(PROMPT, generator=torch.Generator().manual_seed(0), output_type="np", **SMALL)
    assert np.array_equal(out.images, again.images) and out.image_embeds.shape == (1, 32)


def test_bf16_compute_runs_and_stays_close(kandinsky):
    decoder, prior, _ = kandinsky
    f32 = load_pipeline(decoder, prior_model=prior)
    b16 = load_pipeline(decoder, prior_model=prior, torch_dtype=torch.bfloat16)
    assert b16.dtype == torch.bfloat16
    a = f32(PROMPT, generator=torch.Generator().manual_seed(0), output_type="np", **SMALL).images
    b = b16(PROMPT, generator=torch.Generator().manual_seed(0), output_type="np", **SMALL).images
    assert b.shape == a.shape and np.isfinite(b).all() and np.abs(a - b).mean() < 0.1


def test_zero_image_embedding_is_kept_until_the_tower_changes(kandinsky):
    """The zero image's embedding runs the image tower once, not on every call; a changed weight,
    dtype or device computes it again. float32 pinned: the dtype change below must be a change."""
    decoder, prior, _ = kandinsky
    p = load_pipeline(decoder, prior_model=prior, torch_dtype=torch.float32)
    calls = []
    hook = p.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    first = p.zero_embed(2)
    assert torch.equal(p.zero_embed(3)[:2], first) and len(calls) == 1
    with torch.no_grad():
        next(p.image_encoder.parameters()).mul_(1.5)  # an in-place change: a new weights version
    changed = p.zero_embed(1)
    assert len(calls) == 2 and not torch.equal(changed[0], first[0])
    p.to(dtype=torch.bfloat16)
    assert p.zero_embed(1).shape == changed.shape and len(calls) == 3
    hook.remove()


def test_save_pretrained_writes_folders_diffusers_loads(pipe, tmp_path):
    from diffusers import KandinskyV22Pipeline

    pipe.save_pretrained(tmp_path / "saved")
    ref = KandinskyV22Pipeline.from_pretrained(tmp_path / "saved", local_files_only=True)
    ref.set_progress_bar_config(disable=True)
    z = pipe.embed_images([image(0, 32)])
    neg = pipe.zero_embed(1)
    want = ref(image_embeds=z, negative_image_embeds=neg, height=32, width=32, num_inference_steps=5,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    again = load_pipeline(tmp_path / "saved", prior_model=tmp_path / "saved" / "prior")
    got = again(image_embeddings=z, height=32, width=32, num_inference_steps=5,
                generator=torch.Generator().manual_seed(0), output_type="np").images
    assert np.abs(got - want).max() * 255 <= 1.0


def test_eval_shapes_runs_on_kandinsky_folders(kandinsky, tmp_path, capsys):
    decoder, prior, _ = kandinsky
    assert main(["eval", "shapes", "--model", str(decoder), "--prior-model", str(prior), "--num", "2",
                 "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (tmp_path / "grid.png").is_file()


def test_every_web_job_runs_on_kandinsky(pipe, tmp_path):
    pytest.importorskip("gradio")
    from unclip.web.app import build_app
    from unclip.web.jobs import Jobs

    build_app(pipe, "kandinsky")  # the page builds with this family's settings
    jobs = Jobs(pipe, tmp_path)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(image(0, 32)).save(a)
    Image.fromarray(image(1, 32)).save(b)
    out = jobs.generate(PROMPT, num_images=2, seed=3, decoder_steps=3, prior_steps=2)
    assert [c for _, c in out] == [f"{PROMPT} (seed 3)", f"{PROMPT} (seed 4)"]
    assert len(jobs.vary(str(a), num_images=2, steps=3)[2]) == 2
    assert len(jobs.interpolate(str(a), str(b), frames=3, steps=3)[2]) == 3
    assert len(jobs.edit(str(a), "a blue square", frames=3, steps=3)[2]) == 3
    mask = np.zeros((32, 32, 3), np.uint8)
    mask[:16] = 255
    strip, results = jobs.inpaint(str(a), mask, PROMPT, num_images=1)
    assert len(results) == 1 and Image.open(strip).size[1] >= 32


@pytest.mark.slow
def test_accelerate_launch_splits_kandinsky_prompts_over_two_processes(kandinsky, tmp_path):
    from .test_distributed import one_and_two_processes

    decoder, prior, _ = kandinsky
    args = ["generate", PROMPT, "a blue square", "--num-images", "2", "--batch-size", "2", "--model", str(decoder),
            "--prior-model", str(prior), "--height", "32", "--width", "32", "--steps", "prior=2", "decoder=3",
            "--dtype", "float32"]
    runs = one_and_two_processes(args, tmp_path)
    assert len(runs["one"]) == 4


def test_interpolation_takes_captions_at_either_end(kandinsky, tmp_path):
    decoder, prior, _ = kandinsky
    Image.fromarray(image(0)).save(tmp_path / "a.png")
    for ends in (["--caption", "a blue square"], ["--caption", PROMPT, "--caption", "a blue square"]):
        extra = [str(tmp_path / "a.png")] if len(ends) == 2 else []
        out = tmp_path / f"out{len(ends)}"
        assert main(["interpolate", *extra, *ends, "--model", str(decoder), "--prior-model", str(prior), "--steps",
                     "3", "--frames", "3", "--out", str(out), "--device", "cpu"]) == 0
        frames = [np.asarray(Image.open(out / f"0000{i}.png")).astype(int) for i in range(3)]
        assert np.abs(frames[0] - frames[2]).max() > 0  # the ends differ
    assert main(["interpolate", "--caption", PROMPT, "--model", str(decoder), "--prior-model", str(prior),
                 "--out", str(tmp_path / "one")]) == 2
