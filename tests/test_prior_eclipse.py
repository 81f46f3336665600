"""The ECLIPSE prior: its published layout loads and computes what a forward written out here
by hand computes; it trains (the loss falls) and samples in one pass; it plugs into unclip's
own models (`--prior eclipse`) and into Karlo's folders (`--prior-model DIR`)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from unclip import KarloPipeline, load_pipeline
from unclip.cli import main
from unclip.models.prior import EclipseConfig, EclipsePrior
from unclip.pipelines.karlo.synthetic import random_components, write_folder

from .conftest import TINY

LAYERS, HEADS, HEAD_DIM = 2, 2, 8


def published_folder(path, dim: int, tokens: int, seed: int = 0):
    """A random prior folder written as ECLIPSE publishes its Karlo prior: their config keys,
    their class name, their parameter names; nothing here comes from unclip's class."""
    g = torch.Generator().manual_seed(seed)
    inner = HEADS * HEAD_DIM
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.2
    sd = {"proj_in.weight": r(inner, dim), "proj_in.bias": r(inner), "embedding_proj.weight": r(inner, dim),
          "embedding_proj.bias": r(inner), "encoder_hidden_states_proj.weight": r(inner, dim),
          "encoder_hidden_states_proj.bias": r(inner), "positional_embedding": r(1, tokens + 3, inner),
          "prd_embedding": r(1, 1, inner), "norm_out.weight": 1 + r(inner), "norm_out.bias": r(inner),
          "proj_to_clip_embeddings.weight": r(dim, inner), "proj_to_clip_embeddings.bias": r(dim),
          "clip_mean": torch.zeros(1, dim), "clip_std": torch.zeros(1, dim)}
    for i in range(LAYERS):
        p = f"transformer_blocks.{i}."
        for name, shape in (("norm1", (inner,)), ("norm3", (inner,))):
            sd[p + name + ".weight"], sd[p + name + ".bias"] = 1 + r(*shape), r(*shape)
        for name in ("to_q", "to_k", "to_v", "to_out.0"):
            sd[f"{p}attn1.{name}.weight"], sd[f"{p}attn1.{name}.bias"] = r(inner, inner), r(inner)
        sd[p + "ff.net.0.proj.weight"], sd[p + "ff.net.0.proj.bias"] = r(4 * inner, inner), r(4 * inner)
        sd[p + "ff.net.2.weight"], sd[p + "ff.net.2.bias"] = r(inner, 4 * inner), r(inner)
    path.mkdir(parents=True)
    config = {"_class_name": "PriorTransformer", "_diffusers_version": "0.24.0", "num_attention_heads": HEADS,
              "attention_head_dim": HEAD_DIM, "num_layers": LAYERS, "embedding_dim": dim, "num_embeddings": tokens,
              "additional_embeddings": 3, "dropout": 0.0, "norm_in_type": None, "embedding_proj_norm_type": None,
              "encoder_hid_proj_type": "linear", "added_emb_type": "prd", "embedding_proj_dim": None,
              "clip_embed_dim": None}
    (path / "config.json").write_text(json.dumps(config))
    save_file(sd, path / "diffusion_pytorch_model.safetensors")
    return sd


def reference_forward(sd, noise, text_embed, encodings, mask):
    """ECLIPSE's forward written out: [encodings; text embedding; input; prediction token],
    positions, causal pre-norm blocks (attention, GELU MLP), the last token's output."""
    lin = lambda x, n: x @ sd[n + ".weight"].T + sd[n + ".bias"]
    norm = lambda x, n: F.layer_norm(x, x.shape[-1:], sd[n + ".weight"], sd[n + ".bias"], 1e-5)
    b = noise.shape[0]
    x = torch.cat([lin(encodings, "encoder_hidden_states_proj"), lin(text_embed, "embedding_proj")[:, None],
                   lin(noise, "proj_in")[:, None], sd["prd_embedding"].expand(b, -1, -1)], 1)
    x = x + sd["positional_embedding"]
    n = x.shape[1]
    keys = torch.cat([torch.where(mask, 0.0, -10000.0), torch.zeros(b, 3)], 1)
    bias = keys[:, None, :] + torch.full((n, n), -10000.0).triu(1)
    for i in range(LAYERS):
        p = f"transformer_blocks.{i}."
        h = norm(x, p + "norm1")
        q, k, v = (lin(h, f"{p}attn1.to_{w}").view(b, n, HEADS, HEAD_DIM).transpose(1, 2) for w in "qkv")
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(HEAD_DIM) + bias[:, None], -1)
        x = x + lin((att @ v).transpose(1, 2).reshape(b, n, -1), p + "attn1.to_out.0")
        x = x + lin(F.gelu(lin(norm(x, p + "norm3"), p + "ff.net.0.proj")), p + "ff.net.2")
    return lin(norm(x, "norm_out")[:, -1], "proj_to_clip_embeddings")


def test_the_published_layout_loads_and_matches_the_written_out_forward(tmp_path):
    sd = published_folder(tmp_path / "eclipse", dim=16, tokens=6)
    prior = EclipsePrior.from_pretrained(tmp_path / "eclipse", EclipseConfig(standardized=False, normalize=False))
    g = torch.Generator().manual_seed(1)
    noise, text, enc = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g), torch.randn(3, 6, 16, generator=g)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] * 5 + [0]], dtype=torch.bool)
    cond = {"text_embed": text, "text_encodings": enc, "mask": mask}
    got = prior.predict(noise, cond)
    assert torch.allclose(got, reference_forward(sd, noise, text, enc, mask), atol=1e-5)
    sampled = prior.sample(cond, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(sampled, reference_forward(sd, torch.randn(3, 16, generator=torch.Generator().manual_seed(2)),
                                                     text, enc, mask), atol=1e-5)


def test_a_karlo_folder_takes_the_published_eclipse_prior(tmp_path, capsys):
    karlo = write_folder(random_components(seed=0), tmp_path / "karlo")
    base = KarloPipeline.from_pretrained(karlo)
    sd = published_folder(tmp_path / "eclipse", dim=32, tokens=base.tokenizer.model_max_length)
    pipe = load_pipeline(karlo, prior_model=tmp_path / "eclipse")
    assert pipe.capabilities.priors == ("eclipse",) and pipe.sampling_defaults()["prior_num_inference_steps"] is None
    kw = {"decoder_num_inference_steps": 3, "super_res_num_inference_steps": 2, "output_type": "np"}
    out = pipe("a red horse", generator=torch.Generator().manual_seed(5), **kw)
    cond = pipe.encode_prompt(["a red horse"])
    want = reference_forward(sd, torch.randn(1, 32, generator=torch.Generator().manual_seed(5)), cond["text_embed"],
                             cond["text_encodings"], cond["mask"])
    assert torch.allclose(out.image_embeds, want, atol=1e-4)  # Karlo's embedding straight from one pass
    again = base("a red horse", image_embeddings=want, generator=None, **kw)  # the decoder gets exactly that
    assert out.images.shape == again.images.shape == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="only the eclipse prior"):
        pipe("a red horse", prior="diffusion", **kw)
    published_folder(tmp_path / "wrong", dim=16, tokens=6)
    assert main(["generate", "a red horse", "--model", str(karlo), "--prior-model", str(tmp_path / "wrong"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "made for 16-d CLIP embeddings" in capsys.readouterr().err
    assert main(["generate", "a red horse", "--model", str(karlo), "--prior-model", str(tmp_path / "eclipse"),
                 "--steps", "decoder=3", "upsampler=2", "--out", str(tmp_path / "g")]) == 0
    assert main(["generate", "a red horse", "--prior-model", str(tmp_path / "eclipse"),
                 "--out", str(tmp_path / "h")]) == 2
    assert "--prior-model gives a Karlo folder an ECLIPSE prior" in capsys.readouterr().err


def test_training_lowers_the_loss_and_the_contrastive_term_binds_captions():
    torch.manual_seed(0)
    prior = EclipsePrior.from_config(EclipseConfig(num_layers=1, num_heads=2, head_dim=8), embed_dim=8, text_len=4)
    text = F.normalize(torch.randn(32, 8), dim=-1)
    image = F.normalize(text @ torch.randn(8, 8) + 0.05 * torch.randn(32, 8), dim=-1)  # a mapping to learn
    cond = {"text_embed": text, "text_encodings": text[:, None].expand(-1, 4, -1).contiguous(),
            "mask": torch.ones(32, 4, dtype=torch.bool)}
    before = (prior.sample(cond, generator=torch.Generator().manual_seed(0)) * image).sum(-1).mean()
    opt = torch.optim.Adam(prior.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = prior.loss(image, cond)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    z = prior.eval().sample(cond, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z.norm(dim=-1), torch.ones(32), atol=1e-5)
    after = (z * image).sum(-1).mean()
    assert after > 0.5 and after > before + 0.3  # nearer the true embeddings after training


def test_train_prior_eclipse_then_generate_with_it(tiny_clip, tiny_model, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "prior_eclipse", "--config", str(TINY / "prior_eclipse.yaml"), f"--clip={tiny_clip}",
            f"--cache={tmp_path / 'cache'}", f"--train.out_dir={run}"]
    assert main(args) == 0
    assert (run / "model" / "eclipse_prior" / "config.json").is_file()
    capsys.readouterr()
    assert main(["eval", "prior", "--model", str(run / "model"), "--prior", "eclipse", "--num", "20"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(figures["in_distribution"]) >= {"prior", "text_embedding_baseline"}
    # into a whole model beside the other priors (the tiny model is on the same CLIP), then generate with it
    model = tmp_path / "model"
    assert main(["assemble", str(tiny_model), str(run / "model"), "--out", str(model)]) == 0
    assert load_pipeline(model).capabilities.priors == ("diffusion", "ar", "eclipse", "text", "none")
    out = tmp_path / "g"
    assert main(["generate", "a red circle", "--model", str(model), "--prior", "eclipse", "--rerank", "1",
                 "--out", str(out)]) == 0
    assert main(["generate", "a red circle", "--model", str(model), "--prior", "eclipse", "--steps", "prior=3",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "diffusion prior" in capsys.readouterr().err
    a = load_pipeline(model)("a red circle", prior="eclipse", rerank=1, generator=torch.Generator().manual_seed(0),
                             output_type="np")
    b = load_pipeline(model)("a red circle", prior="eclipse", rerank=1, generator=torch.Generator().manual_seed(0),
                             output_type="np")
    assert np.array_equal(a.images, b.images) and torch.equal(a.image_embeds, b.image_embeds)


@pytest.mark.shipped
def test_the_shipped_model_draws_with_its_eclipse_prior():
    from unclip.tasks.evaluate.detector import Detector, parse_prompt, score

    pipe = load_pipeline()
    assert "eclipse" in pipe.capabilities.priors
    prompts = ["a large red circle on the left on a white background", "a small blue square at the top on a black background"]
    out = pipe(prompts, prior="eclipse", rerank=1, output_type="uint8",
               generator=[torch.Generator().manual_seed(i) for i in range(2)])
    detector = Detector()
    assert all(score(detector(image), parse_prompt(p))["all"] for image, p in zip(out.images, prompts))
