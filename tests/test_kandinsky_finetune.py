"""Fine-tuning Kandinsky 2.2's decoder and prior (configs/kandinsky/*.yaml) on tiny random folders
in the published layouts: the loss falls, the export is a folder diffusers' own pipelines load and
draw unclip's image from, LoRA trains only its adapters and its exports load (apart or merged)."""

import json

import numpy as np
import pytest
import torch

from unclip import load_pipeline
from unclip.cli import main
from unclip.pipelines.kandinsky.synthetic import (
    random_decoder,
    random_prior,
    write_decoder,
    write_prior,
)

from .conftest import ROOT, assert_exports_use_the_copy

PRESETS = ROOT / "configs" / "kandinsky"
PROMPT = "a red circle on a white background"
FAST = dict(height=32, width=32, num_inference_steps=4, prior_num_inference_steps=3)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("kandinsky-ft")
    return write_decoder(random_decoder(seed=1), root / "decoder"), write_prior(random_prior(seed=0), root / "prior")


def train(folders, out, component="decoder", steps=24, *extra):
    decoder, prior = folders
    args = ["train", component, "--config", str(PRESETS / f"{component}_finetune.yaml"), "--init", str(decoder),
            "--prior-model", str(prior), f"--train.out_dir={out}", f"--train.steps={steps}",
            "--train.batch_size=8", "--train.lr=1e-3", "--train.warmup_steps=1", "--train.log_every=1",
            "--train.checkpoint_every=12", "--train.sample_every=0", "--train.mixed_precision=fp32",
            "--data.num_workers=0", *extra]
    assert main(args) == 0
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def falls(log):
    loss = [r["loss"] for r in log if "loss" in r]
    return np.mean(loss[-6:]) < 0.8 * np.mean(loss[:6])


def draw(pipe, **kw):
    return pipe(PROMPT, generator=torch.Generator().manual_seed(0), output_type="np", **{**FAST, **kw}).images


def test_decoder_fine_tuning_lowers_the_loss_and_exports_a_folder_diffusers_loads(folders, tmp_path):
    from diffusers import KandinskyV22Pipeline

    assert falls(train(folders, tmp_path / "run"))
    model = tmp_path / "run" / "model"
    assert json.loads((model / "model_index.json").read_text())["_class_name"] == "KandinskyV22Pipeline"
    ours = load_pipeline(model, prior_model=folders[1])
    before = load_pipeline(folders[0], prior_model=folders[1])
    z = ours.embed_images([np.full((32, 32, 3), 200, np.uint8)])
    kw = dict(height=32, width=32, num_inference_steps=4, output_type="np")
    got = ours(image_embeddings=z, generator=torch.Generator().manual_seed(0), **kw).images
    ref = KandinskyV22Pipeline.from_pretrained(model, local_files_only=True)
    ref.set_progress_bar_config(disable=True)
    want = ref(image_embeds=z, negative_image_embeds=ours.zero_embed(1), generator=torch.Generator().manual_seed(0),
               **kw).images
    assert np.abs(got - want).max() * 255 <= 1.0
    old = before(image_embeddings=z, generator=torch.Generator().manual_seed(0), **kw).images
    assert np.abs(got - old).max() > 1e-3  # the UNet changed


def test_prior_fine_tuning_lowers_the_loss_and_exports_a_prior_folder(folders, tmp_path):
    from diffusers import KandinskyV22PriorPipeline

    assert falls(train(folders, tmp_path / "run", "prior", 30))
    model = tmp_path / "run" / "model"
    assert json.loads((model / "model_index.json").read_text())["_class_name"] == "KandinskyV22PriorPipeline"
    ours = load_pipeline(folders[0], prior_model=model)
    ref = KandinskyV22PriorPipeline.from_pretrained(model, local_files_only=True)
    ref.set_progress_bar_config(disable=True)
    want = ref(PROMPT, num_inference_steps=3, generator=torch.Generator().manual_seed(0)).image_embeds
    got = ours(PROMPT, generator=torch.Generator().manual_seed(0), **FAST).image_embeds
    assert torch.allclose(got, want.float(), atol=1e-5)


@pytest.mark.parametrize("merge", [False, True])
def test_lora_trains_only_adapters_and_its_export_loads(folders, tmp_path, capsys, merge):
    log = train(folders, tmp_path / "run", "decoder", 12, "--lora.rank=4", f"--lora.merge={str(merge).lower()}")
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)  # adapters on attention alone barely move
    # a random UNet's loss (its output layers do); full fine-tuning's fall is tested above
    printed = capsys.readouterr().out
    trainable, total = (int(x.replace(",", "")) for x in
                        (printed.split("decoder: ")[1].split(" trainable")[0], printed.split("has ")[1].split(")")[0]))
    assert trainable < total / 5
    model = tmp_path / "run" / "model"
    assert (model / "unet_lora").is_dir() != merge
    tuned = load_pipeline(model, prior_model=folders[1])
    base = load_pipeline(folders[0], prior_model=folders[1])
    assert np.abs(draw(tuned) - draw(base)).max() > 1e-4  # the adapters trained and load with the folder


def test_prior_lora_adapters_are_saved_beside_the_prior_and_load(folders, tmp_path):
    train(folders, tmp_path / "run", "prior", 6, "--lora.rank=4")
    model = tmp_path / "run" / "model"
    assert (model / "prior_lora").is_dir()
    tuned = load_pipeline(folders[0], prior_model=model)
    base = load_pipeline(folders[0], prior_model=folders[1])
    assert not torch.equal(draw_embeds(tuned), draw_embeds(base))  # the adapters load with the folder


def draw_embeds(pipe):
    return pipe(PROMPT, generator=torch.Generator().manual_seed(0), **FAST).image_embeds


def test_previews_and_exports_draw_on_the_trained_modules_networks_alone(folders):
    from unclip.train.kandinsky import KandinskyDecoderStage, KandinskyFinetuneConfig

    decoder, prior = folders
    stage = KandinskyDecoderStage(KandinskyFinetuneConfig(init=str(decoder), prior_model=str(prior)))
    assert_exports_use_the_copy(stage, ("unet", "prior", "text_encoder", "image_encoder", "movq"))
