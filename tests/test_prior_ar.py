"""The AR prior: PCA and quantisation, the cached sampler, training, `--prior` choices."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unclip.models.autoregressive import draw, filter_logits
from unclip.models.prior import ARPrior, ARPriorConfig
from unclip.models.prior.codec import EmbeddingCodec, bucketize

from .conftest import TINY, D, L
from .test_prior import text_cond


def embeddings(n=600, rank=5, seed=0):
    """Unit image embeddings near a `rank`-dimensional subspace, and text embeddings near them."""
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, rank, generator=g) @ torch.randn(rank, D, generator=g)
                      + 0.02 * torch.randn(n, D, generator=g), dim=-1)
    txt = F.normalize(img + 0.5 * torch.randn(n, D, generator=g), dim=-1)
    return img, txt


def tiny_ar(**kw):
    torch.manual_seed(0)
    img, txt = embeddings()
    cfg = ARPriorConfig(width=32, num_layers=2, num_heads=4, buckets=64, **kw)
    return ARPrior.from_data(cfg, img, txt, text_len=L, text_width=D).eval()


def test_pca_keeps_the_fewest_components_under_the_error_bound():
    img, txt = embeddings()
    codec = EmbeddingCodec.fit(img, txt, max_rel_mse=0.01, buckets=64)
    err = lambda c: ((c.unproject(c.project(img)) - img) ** 2).sum(-1).mean() / ((img - img.mean(0)) ** 2).sum(-1).mean()
    assert codec.num_components <= 6  # the data is rank 5 plus a little noise
    assert err(codec) < 0.01
    fewer = EmbeddingCodec.fit(img, txt, max_rel_mse=0.5, buckets=64)
    assert fewer.num_components < codec.num_components and err(fewer) > 0.01


def test_quantise_round_trip():
    img, txt = embeddings()
    codec = EmbeddingCodec.fit(img, txt, max_rel_mse=0.01, buckets=256)
    codes = codec.encode(img)
    assert codes.shape == (len(img), codec.num_components) and codes.dtype == torch.int64
    assert 0 <= codes.min() and codes.max() < 256
    counts = torch.bincount(codes[:, 0], minlength=256)  # equal-count buckets
    assert counts.max() <= 2 * len(img) / 256 + 1
    z = codec.decode(codes)
    assert torch.allclose(z.norm(dim=-1), torch.ones(len(z)), atol=1e-5)
    assert (z * img).sum(-1).mean() > 0.99
    assert torch.equal(bucketize(codec.dequantize(codes), codec.edges), codes)  # centres lie in their buckets
    dots = codec.encode_dot(img, txt)
    assert dots.shape == (len(img),) and 0 <= dots.min() and dots.max() < 256


def test_cached_and_uncached_sampling_give_the_same_codes():
    prior = tiny_ar()
    cond, null = text_cond(3), text_cond(1, seed=9)
    for scale in (1.0, 3.0):
        gens = lambda: [torch.Generator().manual_seed(s) for s in (0, 1, 2)]
        a = prior.sample_codes(cond, null, guidance_scale=scale, generator=gens())
        b = prior.sample_codes(cond, null, guidance_scale=scale, generator=gens(), use_cache=False)
        assert a.shape == (3, prior.codec.num_components) and torch.equal(a, b)
    # one generator per caption: a caption's sample does not depend on its batch
    alone = prior.sample_codes({k: v[1:2] for k, v in cond.items()}, null, guidance_scale=3.0,
                               generator=[torch.Generator().manual_seed(1)])
    assert torch.equal(alone[0], a[1])


def test_the_dot_product_token_and_guidance_change_the_samples():
    prior = tiny_ar()
    cond, null = text_cond(4), text_cond(1, seed=9)
    dots = prior.sample_dot(1000, torch.Generator().manual_seed(0), "cpu", 75.0)
    assert dots.min() >= 48 and dots.max() <= 63  # the top quarter of 64 buckets
    codes = torch.zeros(4, 3, dtype=torch.long)
    low = prior.logits(cond, torch.zeros(4, dtype=torch.long), codes)
    high = prior.logits(cond, torch.full((4,), 63), codes)
    assert not torch.allclose(low, high)
    gen = lambda: torch.Generator().manual_seed(0)
    base = prior.sample_codes(cond, null, dot_percentile=0, generator=gen())
    assert not torch.equal(base, prior.sample_codes(cond, null, dot_percentile=95, generator=gen()))
    assert not torch.equal(base, prior.sample_codes(cond, null, guidance_scale=4.0, generator=gen()))
    assert torch.equal(base, prior.sample_codes(cond, null, dot_percentile=0, generator=gen()))


def test_top_k_top_p_and_draw():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    probs = logits.softmax(-1)[0]  # 0.64, 0.24, 0.09, 0.03
    kept = ~torch.isinf(filter_logits(logits, top_p=0.8))
    assert kept.tolist() == [[True, True, False, False]] and probs[0] < 0.8 < probs[:2].sum()
    u = torch.linspace(0.001, 0.999, 1000)
    drawn = draw(logits.expand(1000, -1), u)
    assert torch.allclose(torch.bincount(drawn, minlength=4) / 1000.0, probs, atol=0.01)


def test_text_dropout_uses_the_null_condition():
    prior = tiny_ar(text_drop_prob=0.5)
    img, _ = embeddings(8)
    seen = []
    original = prior.logits
    prior.logits = lambda cond, dot, codes: seen.append(dot) or original(cond, dot, codes)
    torch.manual_seed(0)
    prior.loss(img, text_cond(8), text_cond(1, seed=9))
    dropped = seen[0] == prior.no_dot
    assert 0 < dropped.sum() < 8  # some rows, not all


def test_loss_falls_and_the_model_round_trips(tmp_path):
    prior = tiny_ar().train()
    img, txt = embeddings(64)
    cond = {**text_cond(64), "text_embed": txt}
    null = text_cond(1, seed=9)
    opt = torch.optim.AdamW(prior.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(40):
        loss = prior.loss(img, cond, null)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    prior.eval().save_pretrained(tmp_path / "ar")
    loaded = ARPrior.from_pretrained(tmp_path / "ar", prior.cfg)
    gen = lambda: torch.Generator().manual_seed(3)
    assert torch.equal(prior.sample(cond, null, generator=gen()), loaded.sample(cond, null, generator=gen()))
    bf16 = ARPrior.from_pretrained(tmp_path / "ar", prior.cfg, torch_dtype=torch.bfloat16)
    assert bf16.codec.basis.dtype == torch.float32  # the codec stays exact
    assert bf16.sample(cond, null, generator=gen()).dtype == torch.float32


def test_train_prior_ar_from_the_cli(tiny_clip, tmp_path, capsys):
    from unclip.cli import main

    run = tmp_path / "run"
    args = ["train", "prior_ar", "--config", str(TINY / "prior_ar.yaml"), f"--clip={tiny_clip}",
            f"--cache={tmp_path / 'cache'}", f"--train.out_dir={run}"]
    assert main(args) == 0
    settings = json.loads((run / "model" / "unclip.json").read_text())
    assert settings["components"] == ["clip", "ar_prior"] and settings["ar_prior"]["buckets"] == 8
    capsys.readouterr()
    assert main(["eval", "prior", "--model", str(run / "model"), "--prior", "ar", "--num", "20"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(figures["novel"]) == {"prior", "text_embedding_baseline", "no_guidance", "another_render"}
    assert main(["train", "prior_ar", "--config", str(TINY / "prior_ar.yaml"), "--model.buckets=1"]) == 2


@pytest.mark.parametrize("prior", ["diffusion", "ar", "text", "none"])
def test_every_prior_choice_generates(tiny_model, tmp_path, prior):
    from unclip.cli import main

    out = tmp_path / prior
    assert main(["generate", "a red circle", "a blue square", "--model", str(tiny_model), "--out", str(out),
                 "--prior", prior, "--seed", "5"]) == 0
    records = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["prior"] for r in records] == [prior, prior]
    from PIL import Image

    assert Image.open(out / records[0]["file"]).size == (32, 32)


def test_the_priors_give_different_embeddings_and_bad_choices_are_clear(tiny_model, capsys):
    from unclip.cli import main
    from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline

    pipe = DalleTwoPipeline.from_pretrained(tiny_model)
    prompts = ["a red circle", "a green star"]
    z = {p: pipe.image_embeds(prompts, torch.Generator().manual_seed(0), prior=p) for p in
         ("diffusion", "ar", "text", "none")}
    assert all(v.shape == (2, D) for v in z.values())
    assert torch.equal(z["none"][0], z["none"][1])  # the caption-free null embedding
    assert torch.allclose(z["text"], pipe.embed_captions(prompts))
    for a in z:
        for b in z:
            assert a == b or not torch.allclose(z[a], z[b])
    with pytest.raises(ValueError, match="prior .*--prior.* must be one of diffusion, ar, eclipse, text, none"):
        pipe("a red circle", prior="clip")
    with pytest.raises(ValueError, match="for the diffusion prior"):
        pipe("a red circle", prior="ar", prior_num_inference_steps=5)
    with pytest.raises(SystemExit):
        main(["generate", "a red circle", "--model", str(tiny_model), "--out", "x", "--prior", "clip"])
    assert "invalid choice: 'clip'" in capsys.readouterr().err
    no_ar = DalleTwoPipeline(pipe.clip, pipe.prior, pipe.decoder, pipe.upsamplers)
    with pytest.raises(ValueError, match="has no ar_prior"):
        no_ar("a red circle", prior="ar")
