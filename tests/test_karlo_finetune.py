"""Fine-tuning Karlo's decoder and prior (configs/karlo/*.yaml) on tiny random folders in
Karlo's layout: the loss falls, the export loads in unclip and equals diffusers' image, LoRA
trains only its adapters and its export loads (adapters apart or merged), resume is exact."""

import json

import numpy as np
import pytest
import torch

from unclip import KarloPipeline
from unclip.cli import main
from unclip.pipelines.karlo.synthetic import random_components, write_folder

from .conftest import ROOT, Interrupt, assert_exports_use_the_copy, die_during_step

PRESETS = ROOT / "configs" / "karlo"
PROMPT = "a red circle on a white background"
FAST = {"prior_num_inference_steps": 3, "decoder_num_inference_steps": 4, "super_res_num_inference_steps": 2}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("karlo-ft")
    return (write_folder(random_components(seed=0), root / "karlo"),
            write_folder(random_components(seed=1, variations=True), root / "variations"))


def train(folders, out, component="decoder", steps=24, *extra):
    karlo, variations = folders
    args = ["train", component, "--config", str(PRESETS / f"{component}_finetune.yaml"), "--init", str(karlo),
            "--image-encoder", str(variations), f"--train.out_dir={out}", f"--train.steps={steps}",
            "--train.batch_size=8", "--train.lr=1e-3", "--train.warmup_steps=1", "--train.log_every=1",
            "--train.checkpoint_every=12", "--train.sample_every=0", "--train.mixed_precision=fp32",
            "--data.num_workers=0", *extra]
    assert main(args) == 0
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def losses(log):
    return [r["loss"] for r in log if "loss" in r]


def diffusers_pipeline(path):
    """diffusers' own UnCLIPPipeline from a Karlo folder, each component by its diffusers class."""
    from diffusers import PriorTransformer, UnCLIPScheduler, UNet2DConditionModel, UNet2DModel
    from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline, UnCLIPTextProjModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    pipe = UnCLIPPipeline(
        prior=PriorTransformer.from_pretrained(path / "prior"), decoder=UNet2DConditionModel.from_pretrained(path / "decoder"),
        text_proj=UnCLIPTextProjModel.from_pretrained(path / "text_proj"),
        text_encoder=CLIPTextModelWithProjection.from_pretrained(path / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(path / "tokenizer"),
        super_res_first=UNet2DModel.from_pretrained(path / "super_res_first"),
        super_res_last=UNet2DModel.from_pretrained(path / "super_res_last"),
        prior_scheduler=UnCLIPScheduler.from_pretrained(path / "prior_scheduler"),
        decoder_scheduler=UnCLIPScheduler.from_pretrained(path / "decoder_scheduler"),
        super_res_scheduler=UnCLIPScheduler.from_pretrained(path / "super_res_scheduler"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def draw(pipe, **kw):
    return pipe(PROMPT, generator=torch.Generator().manual_seed(0), output_type="np", **FAST, **kw).images


@pytest.mark.slow
def test_decoder_fine_tuning_lowers_the_loss_and_exports_a_karlo_folder(folders, tmp_path):
    log = train(folders, tmp_path / "run")
    ls = losses(log)
    assert np.mean(ls[-5:]) < 0.8 * np.mean(ls[:5])
    model = tmp_path / "run" / "model"
    tuned, base = KarloPipeline.from_pretrained(model), KarloPipeline.from_pretrained(folders[0])
    a = draw(tuned)
    assert not np.array_equal(a, draw(base))  # the decoder changed
    assert np.abs(a - draw(diffusers_pipeline(model))).mean() * 255 <= 1  # the contract, at float32
    kept = {k: v for k, v in base.prior.state_dict().items()}
    assert all(torch.equal(v, tuned.prior.state_dict()[k]) for k, v in kept.items())  # the prior untouched
    assert main(["generate", PROMPT, "--model", str(model), "--dtype", "float32", "--steps", "prior=3", "decoder=4",
                 "upsampler=2", "--out", str(tmp_path / "g")]) == 0


@pytest.mark.slow
def test_prior_fine_tuning_lowers_the_loss_and_changes_only_the_prior(folders, tmp_path):
    ls = losses(train(folders, tmp_path / "run", "prior"))
    assert np.mean(ls[-5:]) < np.mean(ls[:5])
    tuned, base = KarloPipeline.from_pretrained(tmp_path / "run" / "model"), KarloPipeline.from_pretrained(folders[0])
    assert all(torch.equal(v, tuned.decoder.state_dict()[k]) for k, v in base.decoder.state_dict().items())
    assert not all(torch.equal(v, tuned.prior.state_dict()[k]) for k, v in base.prior.state_dict().items())


@pytest.mark.slow
def test_lora_trains_only_adapters_and_its_export_loads_apart_or_merged(folders, tmp_path, capsys):
    log = train(folders, tmp_path / "lora", "decoder", 24, "--lora.rank=4")
    out = capsys.readouterr().out
    trainable = int(out.split("fine-tuning Karlo's decoder: ")[1].split(" trainable")[0].replace(",", ""))
    assert 0 < trainable < 100_000  # adapters only (the decoder and text_proj: 859,078)
    ls = losses(log)
    assert np.mean(ls[-5:]) < np.mean(ls[:5])
    model = tmp_path / "lora" / "model"
    assert (model / "decoder_lora").is_dir() and (model / "text_proj_lora").is_dir()
    base = KarloPipeline.from_pretrained(folders[0])
    assert torch.equal(base.decoder.conv_in.weight,
                       KarloPipeline.from_pretrained(model).decoder.conv_in.weight)  # base weights kept as they were
    with_adapters = draw(KarloPipeline.from_pretrained(model))
    assert not np.array_equal(with_adapters, draw(base))
    train(folders, tmp_path / "merged", "decoder", 24, "--lora.rank=4", "--lora.merge=true")
    merged = tmp_path / "merged" / "model"
    assert not (merged / "decoder_lora").exists()
    assert np.abs(draw(KarloPipeline.from_pretrained(merged)) - with_adapters).mean() * 255 <= 1
    assert np.abs(draw(diffusers_pipeline(merged)) - with_adapters).mean() * 255 <= 1


@pytest.mark.slow
def test_resume_repeats_an_unbroken_run_exactly(folders, tmp_path):
    from unclip.config import load
    from unclip.train.karlo import KarloDecoderStage, KarloFinetuneConfig
    from unclip.train.loop import train as run

    def config(out):
        return load(KarloFinetuneConfig, PRESETS / "decoder_finetune.yaml", [
            f"init={folders[0]}", f"image_encoder={folders[1]}", f"train.out_dir={out}", "train.steps=6",
            "train.batch_size=4", "train.warmup_steps=1", "train.log_every=1", "train.checkpoint_every=3",
            "train.sample_every=0", "train.mixed_precision=fp32", "data.num_workers=0"])

    full = config(tmp_path / "full")
    run(KarloDecoderStage(full), full.train)
    cut = config(tmp_path / "cut")
    stage = KarloDecoderStage(cut)
    die_during_step(stage, 5)  # after the checkpoint at step 3
    with pytest.raises(Interrupt):
        run(stage, cut.train)
    run(KarloDecoderStage(cut), cut.train, resume=True)
    read = lambda d: {r["step"]: r["loss"] for r in map(json.loads, (d / "log.jsonl").read_text().splitlines())
                      if "loss" in r}
    a, b = read(tmp_path / "full"), read(tmp_path / "cut")
    assert list(b) == list(range(1, 7)) and all(a[k] == b[k] for k in a)


def test_bad_settings_are_clear_errors(folders, tmp_path, capsys):
    args = ["train", "decoder", "--config", str(PRESETS / "decoder_finetune.yaml"), f"--train.out_dir={tmp_path}"]
    assert main(args) == 2
    assert "init" in capsys.readouterr().err
    assert main([*args, "--init", str(folders[0])]) == 2  # no image tower in a text-to-image folder
    assert "image_encoder" in capsys.readouterr().err
    assert main(["train", "upsampler", "--config", str(PRESETS / "decoder_finetune.yaml")]) == 2
    assert "decoder or the prior" in capsys.readouterr().err


def test_previews_and_exports_use_the_copys_towers_too(folders):
    from unclip.train.karlo import KarloDecoderStage, KarloFinetuneConfig

    text, variations = folders
    stage = KarloDecoderStage(KarloFinetuneConfig(init=str(text), image_encoder=str(variations)))
    assert_exports_use_the_copy(stage, ("decoder", "text_proj", "prior", "text_encoder", "image_encoder"))
