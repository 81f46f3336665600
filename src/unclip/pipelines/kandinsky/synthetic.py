"""Random Kandinsky 2.2 models written in the published folders' layouts, for tests and
benchmarks (nothing here downloads): a prior folder (prior/ image_encoder/ text_encoder/
tokenizer/ scheduler/ image_processor/) and a decoder folder (unet/ scheduler/ movq/), the
inpaint decoder's 9-channel UNet too, each with the model_index.json diffusers writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from unclip.pipelines.kandinsky.folder import DECODER, INPAINT, LAYOUT, PRIOR
from unclip.pipelines.synthetic import (
    image_tower,
    make_tokenizer,
    randomize,
    text_tower,
    write_component,
)

LIBRARIES = {
    "prior": ("diffusers", "PriorTransformer"), "image_encoder": ("transformers", "CLIPVisionModelWithProjection"),
    "text_encoder": ("transformers", "CLIPTextModelWithProjection"), "tokenizer": ("transformers", "CLIPTokenizer"),
    "image_processor": ("transformers", "CLIPImageProcessor"), "unet": ("diffusers", "UNet2DConditionModel"),
    "movq": ("diffusers", "VQModel"),
}


@dataclass
class KandinskySizes:
    """Kandinsky 2.2's architecture at any width. The published one: CLIP ViT-bigG towers
    (embed_dim 1280), prior 20 layers x 32 heads x 64, UNet widths 384/768/1152/1536 on 4-channel
    MoVQ latents (factor 8: 512 px from 64 x 64 latents)."""

    embed_dim: int = 32
    text_layers: int = 2
    heads: int = 4
    vision_width: int = 32
    clip_image_size: int = 32
    patch_size: int = 8
    prior_layers: int = 1
    prior_heads: int = 2
    prior_head_dim: int = 16
    unet_channels: tuple[int, ...] = (32, 64)
    movq_channels: tuple[int, ...] = (32, 64)  # factor 2 ** (len - 1)
    latent_channels: int = 4
    sample_size: int = 16  # the UNet's latent side: images of sample_size * factor px


def random_prior(sizes: KandinskySizes | None = None, seed: int = 0) -> dict:
    """Every component of a prior folder, random and seeded."""
    from diffusers import PriorTransformer, UnCLIPScheduler

    s, g = sizes or KandinskySizes(), torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    text_encoder = text_tower(tokenizer, s.embed_dim, s.text_layers, s.heads, projection=s.embed_dim)
    image_encoder, processor = image_tower(s.vision_width, s.text_layers, s.heads, s.clip_image_size, s.patch_size,
                                           s.embed_dim)
    parts = {
        "tokenizer": tokenizer, "text_encoder": text_encoder, "image_encoder": image_encoder,
        "image_processor": processor,
        "prior": PriorTransformer(num_attention_heads=s.prior_heads, attention_head_dim=s.prior_head_dim,
                                  num_layers=s.prior_layers, embedding_dim=s.embed_dim, num_embeddings=77),
        # the published prior scheduler's settings
        "scheduler": UnCLIPScheduler(variance_type="fixed_small_log", clip_sample=True, clip_sample_range=10.0,
                                     prediction_type="sample", num_train_timesteps=1000),
    }
    for name in ("text_encoder", "image_encoder", "prior"):
        randomize(parts[name], g)
        parts[name].eval()
    with torch.no_grad():  # statistics as a trained prior has them
        parts["prior"].clip_mean.copy_(torch.randn(1, s.embed_dim, generator=g) * 0.1)
        parts["prior"].clip_std.copy_(torch.rand(1, s.embed_dim, generator=g) + 0.5)
    return parts


def random_decoder(sizes: KandinskySizes | None = None, seed: int = 0, inpaint: bool = False,
                   variance_type: str = "fixed_small") -> dict:
    """unet, scheduler and movq of a decoder folder (the inpaint decoder's with `inpaint`);
    `variance_type` "learned_range" makes the scheduler use the UNet's variance channels."""
    from diffusers import DDPMScheduler, UNet2DConditionModel, VQModel

    s, g = sizes or KandinskySizes(), torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    levels, c = len(s.unet_channels), s.latent_channels
    unet = UNet2DConditionModel(
        sample_size=s.sample_size, in_channels=2 * c + 1 if inpaint else c, out_channels=2 * c,
        down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("SimpleCrossAttnUpBlock2D",) * (levels - 1) + ("ResnetUpsampleBlock2D",),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=s.unet_channels, layers_per_block=1,
        encoder_hid_dim=s.embed_dim, encoder_hid_dim_type="image_proj", cross_attention_dim=s.unet_channels[0],
        attention_head_dim=8, addition_embed_type="image", addition_embed_type_num_heads=8,
        resnet_time_scale_shift="scale_shift")
    n = len(s.movq_channels)
    movq = VQModel(in_channels=3, out_channels=3, latent_channels=c, vq_embed_dim=c, num_vq_embeddings=12,
                   block_out_channels=s.movq_channels, layers_per_block=1, norm_num_groups=8, norm_type="spatial",
                   down_block_types=("DownEncoderBlock2D",) * (n - 1) + ("AttnDownEncoderBlock2D",),
                   up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * (n - 1))
    for net in (unet, movq):
        randomize(net, g, scale=0.05 if net is unet else 0.02)
        net.eval()
    # the published decoder scheduler's settings
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, steps_offset=1, prediction_type="epsilon",
                              variance_type=variance_type)
    return {"unet": unet, "scheduler": scheduler, "movq": movq}


def _write(parts: dict, path: str | Path, kind: str, dtype: torch.dtype | None = None) -> Path:
    path = Path(path)
    index = {"_class_name": kind, "_diffusers_version": "0.42.1"}
    for name in LAYOUT[kind]:
        part, folder = parts[name], path / name
        index[name] = list(LIBRARIES.get(name, ("diffusers", type(part).__name__)))
        write_component(part, folder, dtype)
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path


def write_prior(parts: dict, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    return _write(parts, path, PRIOR, dtype)


def write_decoder(parts: dict, path: str | Path, kind: str | None = None, dtype: torch.dtype | None = None) -> Path:
    if kind is None:
        kind = INPAINT if parts["unet"].config.in_channels > parts["movq"].config.latent_channels else DECODER
    return _write(parts, path, kind, dtype)
