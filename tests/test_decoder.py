"""The decoder: conditioning, CFG dropout rates, the null pass, guidance, round trips."""

import pytest
import torch
import torch.nn.functional as F

from unclip.diffusion.guidance import cfg as guided_denoiser
from unclip.models.decoder import Decoder, DecoderConfig

from .conftest import D, L

TEXT_KEYS = ("text_embed", "text_encodings", "mask")


def tiny_decoder(**kw):
    torch.manual_seed(0)
    cfg = DecoderConfig(image_size=8, block_out_channels=(32, 32), layers_per_block=1, attention_head_dim=8,
                        cross_attention_dim=32, timesteps=100, sample_steps=4, **kw)
    dec = Decoder.from_config(cfg, embed_dim=D)
    with torch.no_grad():  # a non-zero learned null, so that it is told apart from a zero vector
        dec.text_proj.learned_classifier_free_guidance_embeddings.normal_()
    return dec


def condition(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, L, dtype=torch.bool)
    mask[:, 4:] = False
    return {"image_embed": F.normalize(torch.randn(b, D, generator=g), dim=-1),
            "text_embed": F.normalize(torch.randn(b, D, generator=g), dim=-1),
            "text_encodings": torch.randn(b, L, D, generator=g), "mask": mask}


def text_null():
    return {k: v for k, v in condition(1, seed=99).items() if k in TEXT_KEYS}


def spy_on(dec):
    seen = []
    real = dec.denoise

    def spy(x_t, t, cond):
        seen.append((x_t.clone(), t.clone(), {k: v.detach().clone() for k, v in cond.items()}))
        return real(x_t, t, cond)

    dec.denoise = spy
    return seen


def test_measured_drop_rates_are_the_papers_and_independent():
    dec = tiny_decoder()
    seen = spy_on(dec)
    null_img = dec.text_proj.null_image_embed().detach()
    img, txt = [], []
    for i in range(10):
        dec.loss(torch.zeros(400, 3, 8, 8), condition(400, seed=i), text_null())
        got = seen[-1][2]
        img.append(torch.isclose(got["image_embed"], null_img).all(-1))
        txt.append(torch.isclose(got["text_embed"], text_null()["text_embed"]).all(-1))
    img, txt = torch.cat(img).float(), torch.cat(txt).float()
    assert img.mean().item() == pytest.approx(0.1, abs=0.015)
    assert txt.mean().item() == pytest.approx(0.5, abs=0.03)
    assert (img * txt).mean().item() == pytest.approx(0.05, abs=0.012)  # independent: 0.1 x 0.5


def test_dropped_examples_see_exactly_the_nulls_and_nothing_else_changes():
    dec = tiny_decoder(image_drop_prob=0.5)
    seen = spy_on(dec)
    cond, null = condition(300), text_null()
    torch.manual_seed(3)
    dec.loss(torch.zeros(300, 3, 8, 8), cond, null)
    got = seen[-1][2]
    img = torch.isclose(got["image_embed"], dec.text_proj.null_image_embed().detach()).all(-1)
    txt = torch.isclose(got["text_embed"], null["text_embed"]).all(-1)
    assert torch.equal(got["image_embed"][~img], cond["image_embed"][~img])
    for k in TEXT_KEYS:  # every key of the caption is replaced together, and only when dropped
        assert torch.equal(got[k][txt], null[k].expand_as(cond[k])[txt])
        assert torch.equal(got[k][~txt], cond[k][~txt])
    assert img.any() and txt.any()


def test_null_pass_of_guidance_sees_both_nulls_in_one_batched_call():
    dec = tiny_decoder()
    seen = spy_on(dec)
    cond, null = condition(3), text_null()
    dec.sample(cond, null, guidance_scale=5.0, steps=2, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 2  # one network call per step, conditional and null batched together
    x_t, t, got = seen[0]
    assert x_t.shape[0] == 6 and torch.equal(x_t[:3], x_t[3:]) and torch.equal(t[:3], t[3:])
    for k in cond:
        assert torch.equal(got[k][:3], cond[k])
    assert torch.equal(got["image_embed"][3:], dec.text_proj.null_image_embed().detach().expand(3, D))
    for k in TEXT_KEYS:
        assert torch.equal(got[k][3:], null[k].expand_as(cond[k]))


def test_text_only_guidance_keeps_the_image_embedding_in_the_null_pass():
    dec = tiny_decoder(guidance_null="text")
    seen = spy_on(dec)
    cond, null = condition(3), text_null()
    out = dec.sample(cond, null, guidance_scale=5.0, steps=2, generator=torch.Generator().manual_seed(0))
    _, _, got = seen[0]
    assert torch.equal(got["image_embed"][3:], cond["image_embed"])
    for k in TEXT_KEYS:
        assert torch.equal(got[k][3:], null[k].expand_as(cond[k]))
    both = tiny_decoder().sample(cond, null, guidance_scale=5.0, steps=2, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(out, both)


def test_text_only_guidance_needs_the_text_path():
    with pytest.raises(ValueError, match="guidance_null"):
        DecoderConfig(use_text=False, guidance_null="text")


def test_guidance_formula():
    dec = tiny_decoder()
    cond, null = condition(2), text_null()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([50, 20])
    with torch.no_grad():
        both = guided_denoiser(dec.denoise, cond, dec.null(null), 3.0)(x, t)
        c = dec.denoise(x, t, cond)
        u = dec.denoise(x, t, {k: v.expand_as(cond[k]) for k, v in dec.null(null).items()})
    assert torch.allclose(both, u + 3.0 * (c - u), atol=1e-5)


def test_each_input_and_guidance_change_the_output():
    dec = tiny_decoder().eval()
    for p in dec.parameters():  # random but not zero-initialised output layers, so inputs matter
        torch.nn.init.normal_(p, std=0.05) if p.dim() > 1 else None
    cond, null = condition(2), text_null()

    def draw(c, **kw):
        return dec.sample(c, null, generator=torch.Generator().manual_seed(0), **kw)

    base = draw(cond)
    assert base.shape == (2, 3, 8, 8) and base.dtype == torch.float32 and base.abs().max() <= 1
    assert torch.equal(base, draw(cond))  # the same seed, the same images
    other_image = dict(cond, image_embed=condition(2, seed=5)["image_embed"])
    other_text = {**cond, **{k: v for k, v in condition(2, seed=6).items() if k in TEXT_KEYS}}
    for changed in (draw(other_image), draw(other_text), draw(cond, guidance_scale=1.0)):
        assert (changed - base).abs().max() > 1e-3
    no_text = tiny_decoder(use_text=False).eval()
    a = no_text.sample(cond, null, generator=torch.Generator().manual_seed(0))
    b = no_text.sample(other_text, null, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)  # with the text path off, the caption is ignored


def test_training_lowers_the_loss():
    dec = tiny_decoder(image_drop_prob=0.0, text_drop_prob=0.0)
    cond = condition(16)
    x0 = torch.tanh(torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1)))
    opt = torch.optim.Adam(dec.parameters(), lr=3e-3)

    def mean_loss():
        torch.manual_seed(123)  # the same timesteps and noise each time
        with torch.no_grad():
            return sum(dec.loss(x0, cond, text_null()).item() for _ in range(4)) / 4

    before = mean_loss()
    for _ in range(60):
        loss = dec.loss(x0, cond, text_null())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert mean_loss() < 0.7 * before
