"""The published architectures (unclip.pipelines.published): parameter counts within 3% of the
published ones, counted on the meta device, and networks written tensor by tensor that diffusers
and transformers load as they load the published folders."""

import json

import pytest
import torch

from unclip.pipelines.published import FAMILIES, NETWORKS, counts, random_tensor, write_network


@pytest.mark.parametrize("family", FAMILIES)
def test_parameter_counts_match_the_published_ones(family):
    rows = counts(family)
    assert len(rows) == len(NETWORKS[family])
    for key, built, published in rows:
        if published:
            assert abs(built / published - 1) <= 0.03, (key, built, published)


def test_kandinsky_is_about_4_8_billion_parameters():
    total = sum(n for key, n, _ in counts("kandinsky") if not key.startswith("decoder-inpaint"))
    assert 4.7e9 < total < 5.0e9


def test_weights_look_trained_and_keep_activations_in_range():
    g = torch.Generator().manual_seed(0)
    w = random_tensor("layer.weight", torch.Size([256, 1024]), torch.bfloat16, g)
    assert w.dtype == torch.bfloat16 and abs(float(w.float().std()) - 1024 ** -0.5) < 0.003
    assert random_tensor("layer.bias", torch.Size([8]), torch.float16, g).abs().sum() == 0
    assert (random_tensor("norm.weight", torch.Size([8]), torch.float16, g) == 1).all()


@pytest.mark.parametrize("library,cls,config", [
    ("diffusers", "PriorTransformer", dict(num_attention_heads=2, attention_head_dim=8, num_layers=1, embedding_dim=16,
                                           num_embeddings=7)),
    ("transformers", "CLIPTextModelWithProjection", dict(vocab_size=99, hidden_size=16, intermediate_size=32,
                                                         num_hidden_layers=1, num_attention_heads=2,
                                                         projection_dim=16)),
])
def test_written_networks_load_as_published_ones_do(tmp_path, library, cls, config):
    import importlib

    written = write_network(library, cls, config, tmp_path / "net", torch.bfloat16, seed=0)
    model_cls = getattr(importlib.import_module(library), cls)
    kw = {"dtype": torch.bfloat16} if library == "transformers" else {"torch_dtype": torch.bfloat16}
    net = model_cls.from_pretrained(tmp_path / "net", **kw)
    assert sum(p.numel() * p.element_size() for p in net.parameters()) <= written
    assert all(p.dtype == torch.bfloat16 for p in net.parameters())
    assert json.loads((tmp_path / "net" / "config.json").read_text())
    again = write_network(library, cls, config, tmp_path / "again", torch.bfloat16, seed=0)
    assert again == written
    a = (tmp_path / "net").glob("*.safetensors")
    b = (tmp_path / "again").glob("*.safetensors")
    assert [f.read_bytes() for f in a] == [f.read_bytes() for f in b]  # seeded: the same bytes
