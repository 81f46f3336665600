"""Random Karlo-architecture models written in Karlo's folder layout, for tests and benchmarks
(nothing here downloads). `random_components` builds every component from diffusers' and
transformers' own classes with a tokenizer made in memory; `write_folder` writes them as Karlo's
repositories lay them out, component by component (`save_pretrained` of diffusers' pipeline
writes another layout)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from unclip.pipelines.karlo.folder import LAYOUT, TEXT_TO_IMAGE, VARIATIONS
from unclip.pipelines.synthetic import (
    image_tower,
    make_tokenizer,
    randomize,
    text_tower,
    write_component,
)


@dataclass
class KarloSizes:
    """Karlo's architecture at any width. Karlo itself: embed_dim 768 (ViT-L/14), prior 20 x 32
    heads x 64, decoder 64 px with widths 320/640/960/1280, super-res 64 -> 256."""

    embed_dim: int = 32  # CLIP projection = text width (the prior and text_proj need them equal)
    text_layers: int = 2
    text_heads: int = 4
    vision_width: int = 32
    vision_layers: int = 2
    clip_image_size: int = 32
    patch_size: int = 8
    prior_layers: int = 1
    prior_heads: int = 2
    prior_head_dim: int = 16
    base_size: int = 16
    decoder_channels: tuple[int, ...] = (32, 64)
    decoder_head_dim: int = 16
    cross_attention_dim: int = 32
    layers_per_block: int = 1
    super_res_size: int = 32
    super_res_channels: tuple[int, ...] = (32, 64)


def random_components(sizes: KarloSizes | None = None, seed: int = 0, variations: bool = False) -> dict:
    """Every component of a Karlo folder (text to image, or variations), random and seeded."""
    sizes = sizes or KarloSizes()
    from diffusers import PriorTransformer, UnCLIPScheduler, UNet2DConditionModel, UNet2DModel
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

    s, g = sizes, torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    text_encoder = text_tower(tokenizer, s.embed_dim, s.text_layers, s.text_heads, projection=s.embed_dim)
    levels = len(s.decoder_channels)
    decoder = UNet2DConditionModel(
        sample_size=s.base_size, in_channels=3, out_channels=6, layers_per_block=s.layers_per_block,
        down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("SimpleCrossAttnUpBlock2D",) * (levels - 1) + ("ResnetUpsampleBlock2D",),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=s.decoder_channels,
        attention_head_dim=s.decoder_head_dim, cross_attention_dim=s.cross_attention_dim,
        class_embed_type="identity", resnet_time_scale_shift="scale_shift")
    text_proj = UnCLIPTextProjModel(clip_extra_context_tokens=4, clip_embeddings_dim=s.embed_dim,
                                    time_embed_dim=4 * s.decoder_channels[0],
                                    cross_attention_dim=s.cross_attention_dim)

    def super_res():
        n = len(s.super_res_channels)
        return UNet2DModel(sample_size=s.super_res_size, in_channels=6, out_channels=3,
                           layers_per_block=s.layers_per_block, block_out_channels=s.super_res_channels,
                           down_block_types=("ResnetDownsampleBlock2D",) * n,
                           up_block_types=("ResnetUpsampleBlock2D",) * n, resnet_time_scale_shift="scale_shift")

    parts = {
        "tokenizer": tokenizer, "text_encoder": text_encoder, "text_proj": text_proj, "decoder": decoder,
        "super_res_first": super_res(), "super_res_last": super_res(),
        "decoder_scheduler": UnCLIPScheduler(variance_type="learned_range", clip_sample=True,
                                             clip_sample_range=1.0, prediction_type="epsilon"),
        "super_res_scheduler": UnCLIPScheduler(variance_type="fixed_small_log", clip_sample=True,
                                               clip_sample_range=1.0, prediction_type="epsilon"),
    }
    if variations:
        parts["image_encoder"], parts["feature_extractor"] = image_tower(
            s.vision_width, s.vision_layers, s.text_heads, s.clip_image_size, s.patch_size, s.embed_dim)
    else:
        parts["prior"] = PriorTransformer(num_attention_heads=s.prior_heads, attention_head_dim=s.prior_head_dim,
                                          num_layers=s.prior_layers, embedding_dim=s.embed_dim, num_embeddings=77)
        parts["prior_scheduler"] = UnCLIPScheduler(variance_type="fixed_small_log", clip_sample=True,
                                                   clip_sample_range=5.0, prediction_type="sample")
    for name in ("text_encoder", "decoder", "text_proj", "super_res_first", "super_res_last", "prior",
                 "image_encoder"):
        if name in parts:
            randomize(parts[name], g)
            parts[name].eval()
    if "prior" in parts:
        with torch.no_grad():  # statistics as a trained prior has them
            parts["prior"].clip_mean.copy_(torch.randn(1, s.embed_dim, generator=g) * 0.1)
            parts["prior"].clip_std.copy_(torch.rand(1, s.embed_dim, generator=g) + 0.5)
    return parts


# Karlo's model_index.json, library names included (text_proj's "unclip" is why diffusers
# itself cannot load these folders any more).
LIBRARIES = {
    "tokenizer": ("transformers", "CLIPTokenizer"), "text_encoder": ("transformers", "CLIPTextModelWithProjection"),
    "image_encoder": ("transformers", "CLIPVisionModelWithProjection"),
    "feature_extractor": ("transformers", "CLIPImageProcessor"), "prior": ("diffusers", "PriorTransformer"),
    "text_proj": ("unclip", "UnCLIPTextProjModel"), "decoder": ("diffusers", "UNet2DConditionModel"),
    "super_res_first": ("diffusers", "UNet2DModel"), "super_res_last": ("diffusers", "UNet2DModel"),
    "prior_scheduler": ("diffusers", "UnCLIPScheduler"), "decoder_scheduler": ("diffusers", "UnCLIPScheduler"),
    "super_res_scheduler": ("diffusers", "UnCLIPScheduler"),
}


def write_folder(parts: dict, path: str | Path, dtype: torch.dtype | None = None,
                 variant: str | None = None) -> Path:
    """Write components in Karlo's layout; `dtype`/`variant` store e.g. fp16 weights as
    `*.fp16.safetensors`, as Karlo's fp16 variant does."""
    path = Path(path)
    cls = VARIATIONS if "image_encoder" in parts else TEXT_TO_IMAGE
    index = {"_class_name": cls, "_diffusers_version": "0.12.0.dev0"}
    for name in LAYOUT[cls]:
        index[name] = list(LIBRARIES[name])
        part, folder = parts[name], path / name
        write_component(part, folder, dtype, variant)
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path
