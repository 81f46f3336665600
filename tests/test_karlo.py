"""Karlo's diffusers folders: loading, sampling equal to diffusers' own pipelines, manipulations,
clear errors. Tiny random models built here from diffusers' and transformers' classes.

Equality is the issue's contract, a mean absolute difference of at most 1 on the 0-255 scale:
unclip runs the super-resolution UNets in channels-last layout, which changes float rounding, and
these random networks are chaotic enough to turn that into a few large single-pixel differences."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from unclip import load_pipeline
from unclip.cli import main
from unclip.data import shapes
from unclip.pipelines.karlo import KarloPipeline
from unclip.pipelines.karlo.synthetic import random_components, write_folder
from unclip.tasks import manipulate as m

from .conftest import randomize  # noqa: F401  (keeps conftest's thread setting)

PROMPT = "a red horse"


@pytest.fixture(scope="session")
def karlo(tmp_path_factory):
    """(folder, diffusers UnCLIPPipeline on the same in-memory components) for text to image."""
    from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline

    parts = random_components(seed=0)
    path = write_folder(parts, tmp_path_factory.mktemp("karlo"))
    ref = UnCLIPPipeline(**parts)
    ref.set_progress_bar_config(disable=True)
    return path, ref


@pytest.fixture(scope="session")
def karlo_variations(tmp_path_factory):
    from diffusers.pipelines.deprecated.unclip import UnCLIPImageVariationPipeline

    parts = random_components(seed=1, variations=True)
    path = write_folder(parts, tmp_path_factory.mktemp("karlo_var"))
    ref = UnCLIPImageVariationPipeline(**parts)
    ref.set_progress_bar_config(disable=True)
    return path, ref


def image(seed=0, size=40):
    return shapes.render(shapes.eval_split(seed + 1)[seed].scene, size)


def test_the_layout_is_karlos_and_names_a_library_diffusers_no_longer_has(karlo):
    path, _ = karlo
    index = json.loads((path / "model_index.json").read_text())
    assert index["text_proj"] == ["unclip", "UnCLIPTextProjModel"] and index["_class_name"] == "UnCLIPPipeline"
    assert (path / "tokenizer" / "vocab.json").is_file() and (path / "tokenizer" / "merges.txt").is_file()
    assert (path / "decoder" / "diffusion_pytorch_model.safetensors").is_file() and (path / "text_proj").is_dir()


def test_generate_cli_writes_diffusers_image_for_the_seed(karlo, tmp_path):
    """The contract: `unclip generate --model DIR --seed S --dtype float32` == diffusers' pipeline
    at its defaults (in fp32; `auto` may pick bf16 on a CPU that runs it fast)."""
    path, ref = karlo
    expected = ref(PROMPT, generator=torch.Generator().manual_seed(7)).images[0]
    assert main(["generate", PROMPT, "--model", str(path), "--seed", "7", "--dtype", "float32",
                 "--out", str(tmp_path)]) == 0
    line = json.loads((tmp_path / "manifest.jsonl").read_text())
    got = np.asarray(Image.open(tmp_path / line["file"])).astype(int)
    assert got.shape == (32, 32, 3)
    assert np.abs(got - np.asarray(expected).astype(int)).mean() <= 1  # the contract: mean |diff| <= 1 of 255


@pytest.mark.parametrize("kw", [
    dict(prompt=PROMPT),
    dict(prompt=PROMPT, prior_num_inference_steps=4, decoder_num_inference_steps=6,
         super_res_num_inference_steps=3, prior_guidance_scale=2.0, decoder_guidance_scale=3.5),
    dict(prompt=PROMPT, prior_num_inference_steps=3, decoder_num_inference_steps=3,
         super_res_num_inference_steps=2, prior_guidance_scale=1.0, decoder_guidance_scale=1.0),  # no guidance
    dict(prompt=[PROMPT, "a blue circle", "the photo"], num_images_per_prompt=2, decoder_num_inference_steps=5),
])
def test_api_equals_diffusers(karlo, kw):
    path, ref = karlo
    pipe = KarloPipeline.from_pretrained(path)
    a = ref(**kw, generator=torch.Generator().manual_seed(3), output_type="np").images
    out = pipe(**kw, generator=torch.Generator().manual_seed(3), output_type="np")
    assert out.images.shape == a.shape and out.images.dtype == np.float32
    assert np.abs(out.images - a).mean() * 255 <= 1
    assert out.image_embeds.shape == (a.shape[0], 32)


def test_sampling_steps_show_as_bars_only_where_asked(karlo, capsys):
    """The web app asks (STEP_BARS) so that a request's progress follows its sampling steps; the
    command line and the API stay quiet."""
    import contextvars

    from unclip.diffusion.sampling import STEP_BARS

    pipe = load_pipeline(karlo[0], torch_dtype="float32")
    kw = {"prior_num_inference_steps": 2, "decoder_num_inference_steps": 3, "super_res_num_inference_steps": 2}
    pipe(PROMPT, **kw)
    assert "sampling" not in capsys.readouterr().err

    def asked():
        STEP_BARS.set(True)
        pipe(PROMPT, **kw)

    contextvars.copy_context().run(asked)
    err = capsys.readouterr().err
    assert all(f"/{n} " in err for n in (2, 3)), err[-500:]  # the prior's 2 steps, the decoder's 3


def test_one_generator_per_image_maps_image_i_to_its_own_seed(karlo):
    path, ref = karlo
    pipe = KarloPipeline.from_pretrained(path)
    kw = dict(prompt=[PROMPT, "a blue circle"], num_images_per_prompt=2, decoder_num_inference_steps=4,
              output_type="np")
    gens = [torch.Generator().manual_seed(10 + i) for i in range(4)]
    together = pipe(**kw, generator=gens).images
    expected = ref(**kw, generator=[torch.Generator().manual_seed(10 + i) for i in range(4)]).images
    assert np.abs(together - expected).mean() * 255 <= 1
    alone = pipe(prompt="a blue circle", decoder_num_inference_steps=4, output_type="np",
                 generator=torch.Generator().manual_seed(12)).images
    # image 2 is "a blue circle" with seed 12, whatever its batch, up to float rounding (which
    # this random network amplifies); another seed is far away
    other = pipe(prompt="a blue circle", decoder_num_inference_steps=4, output_type="np",
                 generator=torch.Generator().manual_seed(13)).images
    assert np.abs(alone[0] - together[2]).mean() * 255 < 5 < np.abs(other[0] - together[2]).mean() * 255 / 4


def test_image_embeddings_in_and_out(karlo):
    path, _ = karlo
    pipe = KarloPipeline.from_pretrained(path)
    kw = dict(decoder_num_inference_steps=3, super_res_num_inference_steps=2, output_type="np")
    out = pipe(PROMPT, prior_num_inference_steps=3, generator=torch.Generator().manual_seed(0), **kw)
    again = pipe(PROMPT, image_embeddings=out.image_embeds, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(again.image_embeds, out.image_embeds)
    other = pipe(PROMPT, image_embeddings=out.image_embeds * 2, generator=torch.Generator().manual_seed(0), **kw)
    assert not np.array_equal(other.images, again.images)  # the embedding conditions the decoder


def test_pil_output_and_api_errors(karlo):
    pipe = KarloPipeline.from_pretrained(karlo[0])
    out = pipe(PROMPT, prior_num_inference_steps=2, decoder_num_inference_steps=2, super_res_num_inference_steps=2)
    assert isinstance(out.images[0], Image.Image) and out.images[0].size == (32, 32)
    for bad in ("", "   ", [], [PROMPT, ""]):
        with pytest.raises(ValueError, match="non-empty"):
            pipe(bad)
    with pytest.raises(ValueError, match="output_type"):
        pipe(PROMPT, prior_num_inference_steps=2, decoder_num_inference_steps=2, output_type="jpeg")


def test_variations_folder_equals_diffusers_image_variation_pipeline(karlo_variations):
    path, ref = karlo_variations
    pipe = KarloPipeline.from_pretrained(path)
    img = Image.fromarray(image(0, 48))
    for kw in (dict(), dict(num_images_per_prompt=2, decoder_guidance_scale=2.0, decoder_num_inference_steps=5)):
        a = ref(image=[img], generator=torch.Generator().manual_seed(2), output_type="np", **kw).images
        b = pipe(image=[img], generator=torch.Generator().manual_seed(2), output_type="np", **kw).images
        assert a.shape == b.shape and np.abs(a - b).mean() * 255 <= 1


def test_fp16_variant_loads_and_bf16_compute_runs(karlo, tmp_path):
    parts = random_components(seed=0)
    write_folder(parts, tmp_path / "fp16", dtype=torch.float16, variant="fp16")
    assert not (tmp_path / "fp16" / "decoder" / "diffusion_pytorch_model.safetensors").exists()
    kw = dict(prior_num_inference_steps=3, decoder_num_inference_steps=3, super_res_num_inference_steps=2,
              output_type="np")
    full = KarloPipeline.from_pretrained(karlo[0])(PROMPT, generator=torch.Generator().manual_seed(0), **kw).images
    half = KarloPipeline.from_pretrained(tmp_path / "fp16")  # fp16 weights, computed in fp32
    assert half.dtype == torch.float32
    a = half(PROMPT, generator=torch.Generator().manual_seed(0), **kw).images
    assert np.abs(a - full).mean() < 0.02
    bf16 = KarloPipeline.from_pretrained(karlo[0], torch_dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    b = bf16(PROMPT, generator=torch.Generator().manual_seed(0), **kw).images
    assert b.dtype == np.float32 and np.isfinite(b).all() and np.abs(b - full).mean() < 0.1


def oracle_decoder(pipe, x_star):
    """The Karlo decoder replaced by the exact epsilon of a data set holding one image (and
    arbitrary variance channels), as a perfectly trained decoder would predict."""
    abar = pipe.ddim.alphas_cumprod

    def decoder(sample, timestep, **_):
        a = abar[int(timestep)].float()
        x = sample.float()
        eps = (x - a.sqrt() * x_star) / (1 - a).sqrt()
        return type("Out", (), {"sample": torch.cat([eps, torch.zeros_like(eps)], dim=1)})

    decoder.dtype, decoder.config, decoder.device = torch.float32, pipe.decoder.config, torch.device("cpu")
    return decoder


def test_inversion_of_an_epsilon_learned_variance_decoder_reconstructs(karlo_variations):
    pipe = KarloPipeline.from_pretrained(karlo_variations[0])
    img = image(0, 48)
    pipe.decoder = oracle_decoder(pipe, pipe.decoder_input(img))
    rec, db = m.reconstruct(pipe, img, steps=20)
    assert rec.shape == (16, 16, 3) and db > 40


def test_manipulations_run_on_the_variations_folder(karlo_variations, tmp_path):
    path = karlo_variations[0]
    pipe = KarloPipeline.from_pretrained(path)
    a, b = image(0, 48), image(1, 48)
    frames = m.vary(pipe, a, 2, eta=1.0, steps=3)
    assert frames.shape == (2, 32, 32, 3) and not np.array_equal(frames[0], frames[1])
    frames, _ = m.interpolate(pipe, a, b, 3, steps=3)
    assert frames.shape == (3, 32, 32, 3)
    frames, _ = m.text_diff(pipe, a, "a blue circle", "a red horse", 3, steps=3)
    assert frames.shape == (3, 32, 32, 3) and not np.array_equal(frames[0], frames[-1])
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    common = ["--model", str(path), "--steps", "3"]
    assert main(["invert", str(tmp_path / "a.png"), *common, "--out", str(tmp_path / "inv")]) == 0
    assert main(["vary", str(tmp_path / "a.png"), *common, "--num-images", "2", "--out", str(tmp_path / "v")]) == 0
    assert main(["interpolate", str(tmp_path / "a.png"), str(tmp_path / "b.png"), *common, "--frames", "3",
                 "--out", str(tmp_path / "i")]) == 0
    assert main(["edit", str(tmp_path / "a.png"), *common, "--to", "a blue circle", "--frames", "2",
                 "--out", str(tmp_path / "e")]) == 0
    assert Image.open(tmp_path / "v" / "00001.png").size == (32, 32)


def test_text_folder_edits_with_an_added_image_tower(karlo, karlo_variations, tmp_path, capsys):
    Image.fromarray(image(0)).save(tmp_path / "a.png")
    args = ["vary", str(tmp_path / "a.png"), "--model", str(karlo[0]), "--steps", "2", "--num-images", "1"]
    assert main(args + ["--out", str(tmp_path / "no")]) == 2
    assert "image tower" in capsys.readouterr().err
    assert main(args + ["--image-encoder", str(karlo_variations[0]), "--out", str(tmp_path / "yes")]) == 0
    assert (tmp_path / "yes" / "00000.png").is_file()


def test_samplers_are_a_setting_of_our_models_only(karlo, tmp_path, capsys):
    assert main(["generate", PROMPT, "--model", str(karlo[0]), "--sampler", "decoder=dpm++", "--out", str(tmp_path)]) == 2
    assert "--sampler decoder=NAME is not a setting of this Karlo model" in capsys.readouterr().err
    # eval prior asks the pipeline whether its prior samples alone against its own CLIP
    assert main(["eval", "prior", "--model", str(karlo[0]), "--num", "2"]) == 2
    assert "this Karlo model does not sample its prior apart" in capsys.readouterr().err


def test_generate_needs_the_prior(karlo_variations, tmp_path, capsys):
    assert main(["generate", PROMPT, "--model", str(karlo_variations[0]), "--out", str(tmp_path)]) == 2
    assert "has no prior" in capsys.readouterr().err


def test_eval_shapes_runs_on_a_karlo_folder(karlo, tmp_path, capsys):
    assert main(["eval", "shapes", "--model", str(karlo[0]), "--num", "2", "--out", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (tmp_path / "grid.png").is_file()
    assert main(["eval", "shapes", "--model", str(karlo[0]), "--num", "2", "--rerank", "2",
                 "--out", str(tmp_path / "r")]) == 2
    assert "--rerank is not a setting of this Karlo model" in capsys.readouterr().err


def damage(path, tmp_path, how):
    bad = tmp_path / how
    shutil.copytree(path, bad)
    if how == "missing":
        shutil.rmtree(bad / "super_res_last")
    elif how == "shape":
        f = bad / "decoder" / "diffusion_pytorch_model.safetensors"
        sd = load_file(f)
        sd["conv_in.weight"] = torch.zeros(8, 3, 3, 3)
        save_file(sd, f)
    elif how == "missing_weight":
        f = bad / "text_encoder" / "model.safetensors"
        sd = load_file(f)
        del sd["text_projection.weight"]
        save_file(sd, f, metadata={"format": "pt"})
    elif how == "scheduler":
        f = bad / "decoder_scheduler" / "scheduler_config.json"
        f.write_text(json.dumps({**json.loads(f.read_text()), "variance_type": "fixed_large"}))
    elif how == "pickle":
        f = bad / "prior" / "diffusion_pytorch_model.safetensors"
        torch.save(load_file(f), bad / "prior" / "diffusion_pytorch_model.bin")
        f.unlink()
    elif how == "truncated":
        f = bad / "super_res_first" / "diffusion_pytorch_model.safetensors"
        f.write_bytes(f.read_bytes()[:100])
    return bad


@pytest.mark.parametrize("how, words", [
    ("missing", ["super_res_last", "missing"]),
    ("shape", ["decoder", "conv_in.weight", "[8, 3, 3, 3]"]),
    ("missing_weight", ["text_encoder", "text_projection.weight"]),
    ("scheduler", ["decoder_scheduler", "fixed_large"]),
    ("pickle", ["prior", ".bin", "safetensors"]),
    ("truncated", ["super_res_first"]),
])
def test_damaged_folders_get_errors_naming_the_component(karlo, tmp_path, capsys, how, words):
    bad = damage(karlo[0], tmp_path, how)
    assert main(["generate", PROMPT, "--model", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(w in err for w in words), err


def test_loading_never_runs_code_from_the_folder(karlo, tmp_path):
    bad = tmp_path / "code"
    shutil.copytree(karlo[0], bad)
    marker = tmp_path / "ran"
    for name in ("text_proj", "decoder"):
        (bad / name / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    index = json.loads((bad / "model_index.json").read_text())
    index["text_proj"] = ["text_proj", "UnCLIPTextProjModel"]  # a module name that is a file in the folder
    (bad / "model_index.json").write_text(json.dumps(index))
    cfg = json.loads((bad / "decoder" / "config.json").read_text())
    (bad / "decoder" / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "decoder.Net"}}))
    load_pipeline(bad)
    assert not marker.exists()


def test_karlo_hub_ids_resolve_through_the_cache_offline(karlo, karlo_variations, tmp_path, monkeypatch):
    """`--model kakaobrain/karlo-v1-alpha --image-encoder kakaobrain/karlo-v1-alpha-image-variations`
    from huggingface_hub's cache (laid out here), the same images as the folders."""
    from .test_kandinsky import lay_out_hub_cache

    cache = tmp_path / "hub"
    lay_out_hub_cache(cache, "kakaobrain/karlo-v1-alpha", karlo[0])
    lay_out_hub_cache(cache, "kakaobrain/karlo-v1-alpha-image-variations", karlo_variations[0])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    by_id = load_pipeline("kakaobrain/karlo-v1-alpha", image_encoder="kakaobrain/karlo-v1-alpha-image-variations")
    assert by_id.capabilities.reads_images
    kw = dict(prior_num_inference_steps=2, decoder_num_inference_steps=2, super_res_num_inference_steps=2,
              output_type="np")
    a = by_id(PROMPT, generator=torch.Generator().manual_seed(0), **kw).images
    b = load_pipeline(karlo[0])(PROMPT, generator=torch.Generator().manual_seed(0), **kw).images
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="revision v9"):
        load_pipeline("kakaobrain/karlo-v1-alpha@v9")
