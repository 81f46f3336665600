"""The diffusion prior: standardisation, CFG dropout, guidance, best-of-n, round trips."""

import pytest
import torch
import torch.nn.functional as F

from unclip.data.embeddings import EmbeddingCache, build_cache, encode_text
from unclip.data.stream import ShapesSource
from unclip.models.clip import ClipEncoder
from unclip.models.prior import DiffusionPrior, PriorConfig
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline

from .conftest import D, L


def tiny_prior(**kw):
    torch.manual_seed(0)
    cfg = PriorConfig(num_layers=2, num_heads=2, head_dim=8, timesteps=100, sample_steps=10, **kw)
    return DiffusionPrior.from_config(cfg, embed_dim=D, text_len=L)


def text_cond(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, L, dtype=torch.bool)
    mask[:, 4:] = False
    return {"text_embed": F.normalize(torch.randn(b, D, generator=g), dim=-1),
            "text_encodings": torch.randn(b, L, D, generator=g), "mask": mask}


def test_standardisation_round_trip_and_stats_saved_inside(tmp_path):
    prior = tiny_prior()
    z = F.normalize(torch.randn(50, D), dim=-1)
    prior.set_statistics(z.mean(0), z.std(0))
    x = prior.standardize(z)
    assert torch.allclose(x.mean(0), torch.zeros(D), atol=1e-5)
    assert torch.allclose(x.std(0), torch.ones(D), atol=1e-4)
    assert torch.allclose(prior.unstandardize(x), z, atol=1e-6)
    prior.save_pretrained(tmp_path)
    loaded = DiffusionPrior.from_pretrained(tmp_path, prior.cfg)
    assert torch.equal(loaded.transformer.clip_mean, prior.transformer.clip_mean)
    assert torch.equal(loaded.transformer.clip_std, prior.transformer.clip_std)
    assert not any(p.requires_grad for p in (loaded.transformer.clip_mean, loaded.transformer.clip_std))


def record_denoise(prior):
    seen = []
    real = prior.denoise

    def spy(x_t, t, cond):
        seen.append((x_t.clone(), t.clone(), {k: v.clone() for k, v in cond.items()}))
        return real(x_t, t, cond)

    prior.denoise = spy
    return seen


def test_dropout_replaces_the_text_condition_only():
    prior = tiny_prior(text_drop_prob=0.5)
    seen = record_denoise(prior)
    cond, null = text_cond(400), text_cond(1, seed=9)
    z = F.normalize(torch.randn(400, D), dim=-1)
    torch.manual_seed(1)
    prior.loss(z, cond, null)
    x_t, t, got = seen[-1]
    dropped = torch.isclose(got["text_embed"], null["text_embed"]).all(-1)
    assert 0.4 < dropped.float().mean() < 0.6
    for k in cond:  # the null pass sees exactly the empty caption's condition, every key of it
        assert torch.equal(got[k][dropped], null[k].expand_as(cond[k])[dropped])
        assert torch.equal(got[k][~dropped], cond[k][~dropped])
    # the noised embedding and the timestep do not depend on dropping: same draws with p = 0
    prior.cfg.text_drop_prob = 0.0
    torch.manual_seed(1)
    prior.loss(z, cond, null)
    x_t0, t0, _ = seen[-1]
    assert torch.equal(t, t0) and torch.equal(x_t[dropped], x_t0[dropped]) and torch.equal(x_t, x_t0)


def test_measured_drop_rate_is_ten_percent_by_default():
    prior = tiny_prior()
    seen = record_denoise(prior)
    null = text_cond(1, seed=9)
    rates = []
    for i in range(20):
        prior.loss(F.normalize(torch.randn(500, D), dim=-1), text_cond(500, seed=i), null)
        got = seen[-1][2]["text_embed"]
        rates.append(torch.isclose(got, null["text_embed"]).all(-1).float().mean())
    assert torch.stack(rates).mean().item() == pytest.approx(0.1, abs=0.01)


@pytest.fixture(scope="module")
def trained_prior():
    """A tiny prior fit to a toy world where a caption's image embedding lies near its text
    embedding; enough for guidance and best-of-n to act."""
    prior = tiny_prior()
    captions = text_cond(8, seed=3)
    null = text_cond(1, seed=4)
    opt = torch.optim.Adam(prior.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(5)
    for step in range(250):
        idx = torch.randint(0, 8, (64,), generator=g)
        cond = {k: v[idx] for k, v in captions.items()}
        z = F.normalize(cond["text_embed"] + 0.6 * torch.randn(64, D, generator=g), dim=-1)
        if step == 0:
            prior.set_statistics(z.mean(0), z.std(0))
        loss = prior.loss(z, cond, null)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return prior.eval(), captions, null


def similarity(prior, captions, null, **kw):
    g = torch.Generator().manual_seed(0)
    cond = {k: v.repeat(8, *([1] * (v.dim() - 1))) for k, v in captions.items()}
    z = prior.sample(cond, null, generator=g, **kw)
    assert z.shape == (64, D) and torch.allclose(z.norm(dim=-1), torch.ones(64), atol=1e-5)
    return (z * cond["text_embed"]).sum(-1).mean().item()


def test_guidance_and_best_of_n_raise_similarity_to_the_caption(trained_prior):
    prior, captions, null = trained_prior
    plain = similarity(prior, captions, null, guidance_scale=1.0, best_of=1)
    guided = similarity(prior, captions, null, guidance_scale=4.0, best_of=1)
    best = similarity(prior, captions, null, guidance_scale=1.0, best_of=4)
    assert guided > plain + 0.01 and best > plain + 0.01


def test_best_of_n_keeps_the_highest_dot_product(trained_prior):
    prior, captions, null = trained_prior
    g = torch.Generator().manual_seed(1)
    picked = prior.sample(captions, null, best_of=3, generator=g)
    g = torch.Generator().manual_seed(1)
    cands = prior.sample({k: v.repeat_interleave(3, 0) for k, v in captions.items()}, null, best_of=1, generator=g)
    cands = cands.view(8, 3, D)
    best = cands[torch.arange(8), (cands * captions["text_embed"][:, None]).sum(-1).argmax(1)]
    assert torch.allclose(picked, best, atol=1e-5)


def test_cache_round_trip_and_refuses_another_clip(tiny_clip, tmp_path):
    clip = ClipEncoder.from_pretrained(tiny_clip)
    build_cache(clip, ShapesSource(16), 40, tmp_path / "cache", batch=16, shard_size=16)
    cache = EmbeddingCache(tmp_path / "cache", clip)
    assert len(cache) == 40 and len(cache.manifest["shards"]) == 3
    s = cache.get(3)
    assert s["image_embed"].shape == (D,) and s["text_encodings"].shape == (L + 2, D)
    assert s["mask"].dtype == torch.bool and isinstance(s["caption"], str)
    expect = encode_text(clip, [s["caption"]])["text_embed"][0]
    assert torch.allclose(s["text_embed"], expect, atol=1e-5)
    other = ClipEncoder.from_pretrained(tiny_clip)
    with torch.no_grad():
        other.model.logit_scale.add_(1.0)
    with pytest.raises(ValueError, match="another CLIP"):
        EmbeddingCache(tmp_path / "cache", other)


def test_pipeline_folder_round_trip_reproduces_samples(tiny_clip, tmp_path):
    clip = ClipEncoder.from_pretrained(tiny_clip)
    prior = DiffusionPrior.from_config(PriorConfig(num_layers=1, num_heads=2, head_dim=8, sample_steps=5),
                                       D, clip.max_length)
    pipe = DalleTwoPipeline(clip, prior)
    pipe.save_pretrained(tmp_path / "m")
    loaded = DalleTwoPipeline.from_pretrained(tmp_path / "m")
    assert loaded.prior.cfg == prior.cfg
    prompts = ["a red circle", "a blue square above a red star"]
    a = pipe.image_embeds(prompts, generator=torch.Generator().manual_seed(0))
    b = loaded.image_embeds(prompts, generator=torch.Generator().manual_seed(0))
    c = loaded.image_embeds(prompts, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="non-empty"):
        loaded.image_embeds(["  "])


def test_train_and_eval_prior_from_the_cli(tiny_clip, tmp_path, capsys):
    import json

    from unclip.cli import main

    from .conftest import TINY

    run = tmp_path / "run"
    args = ["train", "prior", "--config", str(TINY / "prior.yaml"), f"--clip={tiny_clip}",
            f"--cache={tmp_path / 'cache'}", f"--train.out_dir={run}"]
    assert main(args) == 0
    assert (tmp_path / "cache" / "manifest.json").is_file()
    assert main(args + ["--resume", "--train.steps=6"]) == 2  # other settings than the run's
    assert main(args + ["--resume-with-changes", "--train.steps=6"]) == 0  # from step 4, reusing the cache
    assert (run / "model" / "prior" / "config.json").is_file() and (run / "model" / "clip").is_dir()
    capsys.readouterr()
    assert main(["eval", "prior", "--model", str(run / "model"), "--num", "20"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(figures) == {"in_distribution", "novel"}
    for subset in figures.values():
        assert set(subset) == {"prior", "text_embedding_baseline", "no_guidance", "another_render"}
        assert all(set(m) == {"cosine", "retrieval"} for m in subset.values())
