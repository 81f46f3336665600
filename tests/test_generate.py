"""The whole pipeline: folder round trip, `unclip generate`, `unclip assemble`."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from unclip.cli import main
from unclip.models.clip import ClipEncoder
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline

from .conftest import TINY, D

PROMPTS = ["a large red circle on the left on a white background", "a blue square above a green star on a black background"]


def test_folder_round_trip_is_exact_and_self_describing(tiny_model, tmp_path):
    pipe = DalleTwoPipeline.from_pretrained(tiny_model)
    settings = json.loads((tiny_model / "unclip.json").read_text())
    assert settings["components"] == ["clip", "prior", "ar_prior", "decoder", "upsampler1", "upsampler2"]
    assert "unclip_version" in settings and settings["upsamplers"][1]["degradation"] == "bsr"
    assert not list(tiny_model.rglob("*.bin")) and not list(tiny_model.rglob("*.pt"))  # safetensors only
    pipe.save_pretrained(tmp_path / "again")
    again = DalleTwoPipeline.from_pretrained(tmp_path / "again")
    for a, b in ((pipe.decoder, again.decoder), (pipe.upsamplers[1], again.upsamplers[1]), (pipe.prior, again.prior),
                 (pipe.ar_prior, again.ar_prior)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    def gens():
        return [torch.Generator().manual_seed(i) for i in range(2)]

    out = pipe(PROMPTS, generator=gens(), output_type="uint8").images
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    assert np.array_equal(out, again(PROMPTS, generator=gens(), output_type="uint8").images)


def test_an_image_depends_on_its_own_seed_not_its_batch(tiny_model):
    pipe = DalleTwoPipeline.from_pretrained(tiny_model)
    together = pipe(PROMPTS, generator=[torch.Generator().manual_seed(s) for s in (5, 6)], output_type="uint8").images
    alone = pipe(PROMPTS[1:], generator=[torch.Generator().manual_seed(6)], output_type="uint8").images
    assert np.abs(together[1].astype(int) - alone[0].astype(int)).max() <= 1
    other = pipe(PROMPTS[1:], generator=[torch.Generator().manual_seed(7)], output_type="uint8").images
    assert not np.array_equal(alone, other)


def test_guidance_changes_the_images(tiny_model):
    pipe = DalleTwoPipeline.from_pretrained(tiny_model)
    def gens():
        return [torch.Generator().manual_seed(0)]

    def run(**kw):
        return pipe(PROMPTS[:1], generator=gens(), output_type="np", **kw).images

    base = run()
    assert not np.array_equal(base, run(decoder_guidance_scale=1.0))
    assert not np.array_equal(base, run(prior_guidance_scale=1.0))


def test_generate_cli_writes_images_and_manifest_reproducibly(tiny_model, tmp_path, capsys):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("a red circle\n\na blue star\n")
    args = ["generate", PROMPTS[0], "--prompts-file", str(prompts_file), "--model", str(tiny_model),
            "--num-images", "2", "--seed", "10", "--steps", "prior=2", "decoder=2"]
    assert main(args + ["--batch-size", "4", "--out", str(tmp_path / "a")]) == 0
    lines = [json.loads(x) for x in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert [x["prompt"] for x in lines] == [PROMPTS[0]] * 2 + ["a red circle"] * 2 + ["a blue star"] * 2
    assert [x["seed"] for x in lines] == list(range(10, 16))
    for x in lines:
        assert Image.open(tmp_path / "a" / x["file"]).size == (32, 32)
    assert main(args + ["--batch-size", "3", "--out", str(tmp_path / "b")]) == 0
    for x in lines:  # the same seeds give the same images, in batches of another size too
        a = np.asarray(Image.open(tmp_path / "a" / x["file"])).astype(int)
        b = np.asarray(Image.open(tmp_path / "b" / x["file"])).astype(int)
        assert np.abs(a - b).max() <= 1


def test_each_stage_samples_with_another_sampler_when_asked(tiny_model, tmp_path):
    pipe = DalleTwoPipeline.from_pretrained(tiny_model)

    def run(**kw):
        return pipe(PROMPTS[:1], generator=[torch.Generator().manual_seed(0)], output_type="np",
                    prior_num_inference_steps=3, decoder_num_inference_steps=3, super_res_num_inference_steps=2,
                    **kw).images

    base = run()
    assert np.array_equal(base, run(decoder_sampler=pipe.decoder.cfg.sampler))  # the stage's own: the same
    for key in ("prior_sampler", "decoder_sampler", "super_res_sampler"):
        assert not np.array_equal(base, run(**{key: "unipc"})), key
    assert pipe.decoder.scheduler.__class__.__name__ == "DDIMScheduler"  # a per-call choice, not kept
    with pytest.raises(ValueError, match="decoder_sampler .--sampler decoder=NAME. must be one of"):
        run(decoder_sampler="euler")
    args = ["generate", PROMPTS[0], "--model", str(tiny_model), "--steps", "prior=2", "decoder=2", "upsampler=1",
            "--sampler", "decoder=dpm++", "--out", str(tmp_path / "a")]
    assert main(args) == 0
    record = json.loads((tmp_path / "a" / "manifest.jsonl").read_text())
    assert record["decoder_sampler"] == "dpm++"  # the manifest says how an image was made


@pytest.mark.parametrize("bad, message", [
    (["   "], "empty prompt"),
    ([], "give a prompt"),
    (["--prompts-file", "EMPTY"], "has no prompts"),
    (["--prompts-file", "MISSING"], "not found"),
    (["a cat", "--steps", "prior=0"], "bad --steps"),
    (["a cat", "--sampler", "decoder=euler"], "bad --sampler"),
    (["a cat", "--sampler", "vae=ddim"], "bad --sampler"),
])
def test_generate_rejects_bad_input_clearly(tiny_model, tmp_path, capsys, bad, message):
    (tmp_path / "EMPTY").write_text("\n  \n")
    bad = [str(tmp_path / b) if b in ("EMPTY", "MISSING") else b for b in bad]
    assert main(["generate", *bad, "--model", str(tiny_model), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_train_decoder_and_upsampler_then_assemble_and_generate(tiny_clip, tmp_path):
    dec, up = tmp_path / "dec", tmp_path / "up"
    assert main(["train", "decoder", "--config", str(TINY / "decoder.yaml"), f"--clip={tiny_clip}",
                 f"--train.out_dir={dec}"]) == 0
    assert main(["train", "upsampler", "--stage", "1", "--config", str(TINY / "upsampler.yaml"),
                 f"--train.out_dir={up}"]) == 0
    assert (dec / "loss.png").is_file() and list((dec / "samples").glob("*.png"))
    assert list((up / "samples").glob("*.png"))
    # the stage number must agree with the config file's
    assert main(["train", "upsampler", "--stage", "2", "--config", str(TINY / "upsampler.yaml")]) == 2
    assert main(["assemble", str(dec / "model"), str(up / "model"), "--out", str(tmp_path / "m")]) == 0
    pipe = DalleTwoPipeline.from_pretrained(tmp_path / "m")
    assert pipe.prior is None and len(pipe.upsamplers) == 1
    images = pipe.decode(torch.randn(2, D), ["a red circle", "a blue star"],
                         generator=torch.Generator().manual_seed(0))
    assert pipe.upsample(images).shape == (2, 3, 32, 32)
    # a new run may start from a trained model's weights
    from unclip.config import load
    from unclip.train.decoder import DecoderStage, DecoderStageConfig
    from unclip.train.upsampler import UpsamplerStage, UpsamplerStageConfig

    cfg = load(DecoderStageConfig, TINY / "decoder.yaml", [f"clip={tiny_clip}", f"init={tmp_path / 'm'}"])
    start = DecoderStage(cfg).module.decoder.state_dict()
    assert all(torch.equal(v, pipe.decoder.state_dict()[k]) for k, v in start.items())
    cfg = load(UpsamplerStageConfig, TINY / "upsampler.yaml", [f"init={tmp_path / 'm'}"])
    start = UpsamplerStage(cfg).module.upsampler.state_dict()
    assert all(torch.equal(v, pipe.upsamplers[0].state_dict()[k]) for k, v in start.items())


def test_assemble_refuses_parts_trained_on_different_clips(tiny_clip, tmp_path):
    a = DalleTwoPipeline(ClipEncoder.from_pretrained(tiny_clip))
    a.save_pretrained(tmp_path / "a")
    with torch.no_grad():
        a.clip.model.logit_scale.add_(1.0)
    a.save_pretrained(tmp_path / "b")
    assert main(["assemble", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 2


def test_fp16_folder_is_half_the_size_and_loads_as_fp32(tiny_model, tmp_path):
    assert main(["assemble", str(tiny_model), "--out", str(tmp_path / "half"), "--fp16"]) == 0

    def weight_bytes(folder):
        return sum(f.stat().st_size for f in folder.rglob("*.safetensors"))

    assert weight_bytes(tmp_path / "half") < 0.6 * weight_bytes(tiny_model)
    full, half = DalleTwoPipeline.from_pretrained(tiny_model), DalleTwoPipeline.from_pretrained(tmp_path / "half")
    assert half.clip.model.dtype == torch.float32 and next(half.decoder.parameters()).dtype == torch.float32
    z = torch.nn.functional.normalize(torch.randn(1, D), dim=-1)
    a = full.decode(z, ["a red circle"], generator=torch.Generator().manual_seed(0))
    b = half.decode(z, ["a red circle"], generator=torch.Generator().manual_seed(0))
    assert (a - b).abs().mean() < 0.05


def test_demo_draws_a_grid(tiny_model, tmp_path):
    assert main(["demo", "--model", str(tiny_model), "--out", str(tmp_path / "demo")]) == 0
    assert Image.open(tmp_path / "demo" / "grid.png").size[0] > 4 * 32
    assert len((tmp_path / "demo" / "manifest.jsonl").read_text().splitlines()) == 8


def test_demo_train_trains_every_stage_and_scores_it(tmp_path, capsys):
    out = tmp_path / "demo-train"
    args = ["demo", "--train", "--configs", str(TINY), "--out", str(out), "--eval-num", "4"]
    assert main(args) == 0
    pipe = DalleTwoPipeline.from_pretrained(out / "model")
    assert pipe.prior is not None and pipe.decoder is not None and len(pipe.upsamplers) == 1
    assert Image.open(out / "grid" / "grid.png").size[0] > 4 * 32
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["in_distribution"]["single"]["images"] + report["in_distribution"]["two"]["images"] == 4
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-2]) == report  # printed as JSON too
    assert main(["demo", "--train", "--model", str(out / "model")]) == 2  # --train makes its own model


@pytest.mark.shipped
def test_the_shipped_model_at_its_default_steps_reproduces_under_a_seed():
    """Issue 16: the fewer-step defaults are deterministic: a seed gives the same 128 px image
    again, another seed another image."""
    pipe = DalleTwoPipeline.from_pretrained(None)

    def draw(seed):
        return pipe(PROMPTS[:1], generator=[torch.Generator().manual_seed(seed)], output_type="uint8").images[0]

    first = draw(3)
    assert first.shape == (128, 128, 3)
    assert np.array_equal(first, draw(3)) and not np.array_equal(first, draw(4))


@pytest.fixture(scope="module")
def reranked(tiny_model, tiny_clip, tmp_path_factory):
    """The tiny model with a reranking CLIP of its own (another random CLIP) and 3 candidates."""
    other = ClipEncoder.from_pretrained(tiny_clip)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path_factory.mktemp("reranker")
    other.save_pretrained(path / "clip")
    out = path / "model"
    assert main(["assemble", str(tiny_model), "--out", str(out), "--reranker", str(path / "clip"),
                 "--rerank", "3"]) == 0
    return out


def test_rerank_keeps_the_candidate_the_reranker_scores_highest(reranked):
    from unclip.diffusion.sampling import repeat_generators
    from unclip.pipelines.rerank import best_of

    settings = json.loads((reranked / "unclip.json").read_text())
    assert settings["components"][-1] == "reranker" and settings["rerank"] == 3
    pipe = DalleTwoPipeline.from_pretrained(reranked)
    assert pipe.rerank == 3 and pipe.reranker is not None

    def gens():
        return [torch.Generator().manual_seed(s) for s in (5, 6)]

    out = pipe(PROMPTS, generator=gens(), output_type="np")
    # the same candidates drawn by hand: each image's generator draws its 3 in turn, through
    # prior, decoder (8 px) and the first upsampler (16 px, the judge's size); then the best
    # goes on through the second upsampler alone
    assert pipe.judged_after(3) == 1 and pipe.judge is pipe.reranker
    per_image = gens()
    rows, g = [p for p in PROMPTS for _ in range(3)], repeat_generators(per_image, 3)
    z = pipe.image_embeds(rows, g)
    candidates = pipe.upsamplers[0].sample(pipe.decode(z, rows, generator=g), generator=g)
    best, scores = best_of(pipe.reranker, candidates, PROMPTS, 3)
    assert torch.equal(out.image_embeds, z[best])
    assert scores.shape == (2, 3) and len({tuple(r.tolist()) for r in z[:3]}) == 3  # three distinct candidates
    final = ((pipe.upsamplers[1].sample(candidates[best], generator=per_image) + 1) / 2).clamp(0, 1)
    assert np.abs(out.images - final.permute(0, 2, 3, 1).numpy()).max() < 1e-5
    # rerank=1 draws one candidate, exactly what a model without a reranker draws
    one = pipe(PROMPTS, generator=gens(), rerank=1, output_type="uint8").images
    assert np.array_equal(one, DalleTwoPipeline(pipe.clip, pipe.prior, pipe.decoder, pipe.upsamplers)(
        PROMPTS, generator=gens(), output_type="uint8").images)


def test_the_judge_averages_views_shifted_with_their_edges_repeated(reranked):
    from unclip.data.embeddings import encode_image, encode_text
    from unclip.pipelines.rerank import best_of, judge_embedding, shifted

    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 2] = 1.0
    moved = shifted(x, 1, 0)[0, 0]  # one pixel right: the dot moves, the left column repeats the edge
    assert moved[1, 3] == 1 and moved.sum() == 1
    edge = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    assert torch.equal(shifted(edge, 0, 1), edge) and shifted(edge, 1, 0)[0, 0, 0].tolist() == [0, 0, 1, 2]

    judge = DalleTwoPipeline.from_pretrained(reranked).judge
    flat = torch.full((2, 3, 16, 16), 0.3)  # shifting a flat image changes nothing
    views, one = judge_embedding(judge, flat), judge_embedding(judge, flat, views=False)
    assert torch.allclose(views, one, atol=1e-5) and torch.allclose(one, encode_image(judge, flat))
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    views = judge_embedding(judge, images)
    assert views.shape == (6, one.shape[1]) and torch.allclose(views.norm(dim=-1), torch.ones(6))
    assert (views - judge_embedding(judge, images, views=False)).abs().max() > 1e-3
    _, scores = best_of(judge, images, PROMPTS, 3)  # reranking scores by the views
    text = torch.nn.functional.normalize(encode_text(judge, PROMPTS)["text_embed"].float(), dim=-1)
    text = text.repeat_interleave(3, dim=0)
    assert torch.allclose(scores.flatten(), (views * text).sum(-1), atol=1e-5)


def test_candidates_are_judged_at_the_judges_own_size(reranked):
    pipe = DalleTwoPipeline.from_pretrained(reranked)  # 8 px decoder, 8 -> 16 -> 32 upsamplers
    assert pipe.judge.image_size == 16 and pipe.judged_after(1) == 0  # one candidate: nothing to judge
    for size, after in ((8, 0), (12, 1), (16, 1), (32, 2), (224, 2)):
        pipe.reranker.model.config.vision_config.image_size = size
        assert pipe.judged_after(3) == after, size


def test_images_are_the_same_however_many_the_decoder_takes_at_once(reranked, monkeypatch):
    import unclip.pipelines.rerank

    pipe = DalleTwoPipeline.from_pretrained(reranked)
    prompts = PROMPTS + ["a green star"]

    def draw():
        return pipe(prompts, generator=[torch.Generator().manual_seed(s) for s in (1, 2, 3)], rerank=2,
                    output_type="np").images

    together = draw()
    monkeypatch.setattr(unclip.pipelines.rerank, "CPU_CANDIDATES", 2)  # one image of 2 candidates per call
    assert np.abs(draw() - together).max() < 1e-4


def test_reranked_images_depend_on_their_own_seed_and_need_a_prompt(reranked):
    pipe = DalleTwoPipeline.from_pretrained(reranked)
    together = pipe(PROMPTS, generator=[torch.Generator().manual_seed(s) for s in (5, 6)], output_type="uint8").images
    alone = pipe(PROMPTS[1:], generator=[torch.Generator().manual_seed(6)], output_type="uint8").images
    assert np.abs(together[1].astype(int) - alone[0].astype(int)).max() <= 1
    z = torch.randn(1, D)
    assert pipe(image_embeddings=z, output_type="uint8").images.shape == (1, 32, 32, 3)  # nothing to score: 1
    with pytest.raises(ValueError, match="give a prompt"):
        pipe(image_embeddings=z, rerank=2)
    with pytest.raises(ValueError, match="rerank .* must be at least 1"):
        pipe(PROMPTS, rerank=0)


def test_reranking_with_a_threshold_stops_drawing_once_a_candidate_scores_it(reranked, monkeypatch):
    pipe = DalleTwoPipeline.from_pretrained(reranked)  # 3 candidates by default: rounds of 1, then 2
    prompts = ["a red circle on the left", PROMPTS[1]]  # no contrasts: the threshold alone decides
    drawn = []
    embeds = pipe.image_embeds
    monkeypatch.setattr(pipe, "image_embeds", lambda rows, *a, **kw: drawn.extend(rows) or embeds(rows, *a, **kw))

    def gens():
        return [torch.Generator().manual_seed(s) for s in (5, 6)]

    every = pipe(prompts, generator=gens(), rerank_threshold=1.0, output_type="uint8").images
    assert sorted(drawn) == sorted(prompts * 3)  # nothing scores 1: all 3 candidates each, in rounds
    drawn.clear()
    first = pipe(prompts, generator=gens(), rerank_threshold=-1.0, output_type="uint8").images
    assert sorted(drawn) == sorted(prompts)  # anything passes: the first candidate each
    assert np.array_equal(first, pipe(prompts, generator=gens(), rerank=1, output_type="uint8").images)
    assert not np.array_equal(first, every)
    # in between, each image stops on its own scores, so it still depends on its own seed alone
    together = pipe(prompts, generator=gens(), rerank_threshold=0.0, output_type="uint8").images
    alone = pipe(prompts[1:], generator=gens()[1:], rerank_threshold=0.0, output_type="uint8").images
    assert np.abs(together[1].astype(int) - alone[0].astype(int)).max() <= 1


def test_a_single_object_caption_stops_only_on_a_candidate_that_beats_its_contrasts(reranked, monkeypatch):
    """A shapes caption's candidate must score the threshold and be closer to its caption than to
    the same caption with another colour or shape (rerank.verdicts) before drawing stops."""
    from unclip.data.shapes import contrast_captions
    from unclip.pipelines import rerank

    pipe = DalleTwoPipeline.from_pretrained(reranked, torch_dtype=torch.float32)
    one = PROMPTS[0]
    assert len(contrast_captions(one)) == 8 and "a large blue circle on the left on a white background" in \
        contrast_captions(one) and contrast_captions(PROMPTS[1]) == []
    candidates = pipe(PROMPTS * 3, generator=torch.Generator().manual_seed(0), rerank=1, output_type="pt").images * 2 - 1
    scores, margins = rerank.verdicts(pipe.judge, candidates, PROMPTS, 3)
    image = rerank.judge_embedding(pipe.judge, candidates).view(2, 3, -1)
    others = rerank.unit_text(pipe.judge, contrast_captions(one))
    assert torch.allclose(margins[0], scores[0] - (image[0] @ others.T).amax(-1), atol=1e-5)
    assert torch.isinf(margins[1]).all()  # no contrasts for a two-object caption
    drawn = []
    embeds = pipe.image_embeds
    monkeypatch.setattr(pipe, "image_embeds", lambda rows, *a, **kw: drawn.extend(rows) or embeds(rows, *a, **kw))
    for margin, rounds_drawn in ((-0.5, 3), (0.5, 1)):  # every score passes; the contrasts decide
        monkeypatch.setattr(rerank, "verdicts", lambda clip, c, prompts, n, **kw: (  # noqa: B023
            torch.ones(len(prompts), n), torch.full((len(prompts), n), margin)))  # noqa: B023
        drawn.clear()
        pipe([one], generator=torch.Generator().manual_seed(1), rerank_threshold=0.5, output_type="pt")
        assert len(drawn) == rounds_drawn


def test_the_rerank_threshold_is_a_model_setting(reranked, tmp_path):
    from unclip.pipelines.rerank import rounds

    assert rounds(8) == [1, 3, 4] and rounds(3) == [1, 2] and rounds(12) == [1, 3, 4, 4] and rounds(1) == [1]
    pipe = DalleTwoPipeline.from_pretrained(reranked)
    assert pipe.rerank_threshold is None and pipe.sampling_defaults()["rerank_threshold"] is None
    assert main(["assemble", str(reranked), "--out", str(tmp_path / "m"), "--rerank-threshold", "0.25"]) == 0
    again = DalleTwoPipeline.from_pretrained(tmp_path / "m")
    assert (again.rerank, again.rerank_threshold) == (3, 0.25)
    assert json.loads((tmp_path / "m" / "unclip.json").read_text())["rerank_threshold"] == 0.25
    with pytest.raises(ValueError, match=r"rerank_threshold \(--rerank-threshold\) must be in \[-1.0, 1.0\]"):
        pipe(PROMPTS, rerank_threshold=2.0)
