"""The CLIP adapter: HF-format round trip, user-brought folders, embeddings."""

import json

import pytest
import torch
from transformers import AutoTokenizer, CLIPConfig, CLIPModel

from unclip.data.stream import ShapesSource
from unclip.models.clip import OPENAI_MEAN, ClipConfig, ClipEncoder
from unclip.models.tokenizer import train_tokenizer
from unclip.tasks.evaluate.clip_retrieval import retrieval_accuracy


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(ShapesSource(16).captions(300), vocab_size=150, max_length=24)


@pytest.fixture
def encoder(tokenizer):
    torch.manual_seed(0)
    cfg = ClipConfig(image_size=16, patch_size=4, vision_width=32, vision_layers=1, vision_heads=2,
                     text_width=32, text_layers=1, text_heads=2, max_length=24, embed_dim=16)
    return ClipEncoder.from_config(cfg, tokenizer).eval()


CAPTIONS = ["a red circle", "a large blue square on the left on a black background"]


def test_embeddings_have_the_documented_shapes(encoder):
    text = encoder.embed_text(CAPTIONS)
    assert text.text_embed.shape == (2, 16) and text.text_encodings.shape == (2, 24, 32)
    assert text.mask.dtype == torch.bool and text.mask[0].sum() < text.mask[1].sum()
    image = encoder.embed_image(torch.rand(3, 3, 16, 16) * 2 - 1)
    assert image.shape == (3, 16) and image.dtype == torch.float32
    bigger = encoder.embed_image(torch.rand(1, 3, 40, 40) * 2 - 1)  # any size is resized
    assert bigger.shape == (1, 16)


@torch.no_grad()
def test_text_embedding_pools_at_the_end_token_and_ignores_padding(encoder):
    alone = encoder.embed_text(CAPTIONS[:1]).text_embed
    batched = encoder.embed_text(CAPTIONS).text_embed
    assert torch.allclose(alone[0], batched[0], atol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-3)
    other = encoder.embed_text(["a red square"]).text_embed
    assert not torch.allclose(alone, other, atol=1e-3)


@torch.no_grad()
def test_saved_folder_is_a_plain_hf_clip_and_round_trips(encoder, tmp_path):
    encoder.save_pretrained(tmp_path)
    assert isinstance(CLIPModel.from_pretrained(tmp_path), CLIPModel)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok(CAPTIONS[0]).input_ids == encoder.tokenizer(CAPTIONS[0]).input_ids
    loaded = ClipEncoder.from_pretrained(tmp_path)
    pixels = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(loaded.embed_image(pixels), encoder.embed_image(pixels))
    assert torch.equal(loaded.embed_text(CAPTIONS).text_embed, encoder.embed_text(CAPTIONS).text_embed)


@torch.no_grad()
def test_loads_a_user_brought_hf_folder(tmp_path, tokenizer):
    """Like a downloaded openai/clip-vit-*: written by transformers, OpenAI pixel statistics."""
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=24, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=30, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=12,
    )
    CLIPModel(cfg).save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    plain = ClipEncoder.from_pretrained(tmp_path / "clip")  # no preprocessor config: OpenAI's
    assert torch.allclose(plain.image_mean.flatten(), torch.tensor(OPENAI_MEAN))
    (tmp_path / "clip" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.5, 0.5]}))
    enc = ClipEncoder.from_pretrained(tmp_path / "clip")
    assert torch.allclose(enc.image_mean.flatten(), torch.tensor([0.1, 0.2, 0.3]))
    assert enc.image_size == 32 and enc.embed_dim == 12 and enc.max_length == 24
    assert enc.embed_image(torch.zeros(2, 3, 64, 64)).shape == (2, 12)
    assert enc.embed_text(CAPTIONS).text_encodings.shape == (2, 24, 24)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ClipEncoder.from_pretrained(tmp_path / "nothing")


def test_retrieval_eval_reports_both_subsets(encoder):
    res = retrieval_accuracy(encoder, num=40, group=10)
    assert set(res) == {"in_distribution", "novel"}
    assert res["in_distribution"]["captions"] == 32 and res["novel"]["captions"] == 8
    assert all(r["top1"] <= 0.5 for r in res.values())  # a random CLIP: near chance (0.1 in groups of 10)


def test_retrieval_counts_a_caption_only_when_its_own_image_is_nearest():
    from unclip.tasks.evaluate.clip_retrieval import retrieval_hits

    keys = torch.nn.functional.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert retrieval_hits(keys, keys, group=10) == 20
    swapped = torch.cat([keys[:10].roll(1, 0), keys[10:]])  # the first group's captions point at a neighbour
    assert retrieval_hits(swapped, keys, group=10) == 10


def test_the_shipped_clip_retrieves_its_captions_images():
    from unclip.pipelines.locate import default_model_dir

    res = retrieval_accuracy(ClipEncoder.from_pretrained(default_model_dir() / "clip"), num=40, group=10)
    assert res["in_distribution"]["top1"] >= 0.8
