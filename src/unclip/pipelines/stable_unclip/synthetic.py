"""Random Stable unCLIP models written in the published folder's layout (StableUnCLIPImg2ImgPipeline:
feature_extractor/ image_encoder/ image_normalizer/ image_noising_scheduler/ tokenizer/
text_encoder/ unet/ scheduler/ vae/), for tests and benchmarks; nothing here downloads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from unclip.pipelines.stable_unclip.folder import IMG2IMG, LAYOUT
from unclip.pipelines.synthetic import (
    image_tower,
    make_tokenizer,
    randomize,
    text_tower,
    write_component,
)

LIBRARIES = {
    "feature_extractor": ("transformers", "CLIPImageProcessor"),
    "image_encoder": ("transformers", "CLIPVisionModelWithProjection"),
    "image_normalizer": ("stable_diffusion", "StableUnCLIPImageNormalizer"),
    "image_noising_scheduler": ("diffusers", "DDPMScheduler"), "tokenizer": ("transformers", "CLIPTokenizer"),
    "text_encoder": ("transformers", "CLIPTextModel"), "unet": ("diffusers", "UNet2DConditionModel"),
    "scheduler": ("diffusers", "DDIMScheduler"), "vae": ("diffusers", "AutoencoderKL"),
}


@dataclass
class StableUnclipSizes:
    """The published architecture at any width. stable-diffusion-2-1-unclip: ViT-H image tower
    (embed_dim 1024), SD 2.1's UNet (320/640/1280/1280, 865 M) on 4-channel latents of an 8x VAE,
    768 px; -unclip-small: ViT-L/14 (768-d), the same UNet and VAE."""

    embed_dim: int = 32
    text_width: int = 32
    layers: int = 2
    heads: int = 4
    clip_image_size: int = 32
    patch_size: int = 8
    unet_channels: tuple[int, ...] = (32, 64)
    vae_channels: tuple[int, ...] = (32, 64)  # factor 2 ** (len - 1)
    sample_size: int = 16  # the UNet's latent side: images of sample_size * factor px


def random_components(sizes: StableUnclipSizes | None = None, seed: int = 0) -> dict:
    """Every component of a Stable unCLIP folder, random and seeded; the normaliser's statistics
    and the schedulers as the published folder's."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )

    s, g = sizes or StableUnclipSizes(), torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    n = len(s.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=s.sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=s.unet_channels, down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1), cross_attention_dim=s.text_width,
        attention_head_dim=4, use_linear_projection=True, class_embed_type="projection",
        projection_class_embeddings_input_dim=2 * s.embed_dim)
    m = len(s.vae_channels)
    image_encoder, processor = image_tower(s.embed_dim, s.layers, s.heads, s.clip_image_size, s.patch_size, s.embed_dim)
    parts = {
        "feature_extractor": processor, "image_encoder": image_encoder,
        "image_normalizer": StableUnCLIPImageNormalizer(embedding_dim=s.embed_dim),
        "image_noising_scheduler": DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        "tokenizer": tokenizer,
        "text_encoder": text_tower(tokenizer, s.text_width, s.layers, s.heads),
        "unet": unet,
        "scheduler": DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1,
                                   clip_sample=False),
        "vae": AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=s.vae_channels,
                             down_block_types=("DownEncoderBlock2D",) * m, up_block_types=("UpDecoderBlock2D",) * m,
                             layers_per_block=1, norm_num_groups=8),
    }
    for name in ("image_encoder", "text_encoder", "unet", "vae"):
        randomize(parts[name], g, scale=0.05 if name == "unet" else 0.02)
        parts[name].eval()
    with torch.no_grad():  # statistics as the published normaliser has them
        parts["image_normalizer"].mean.copy_(torch.randn(1, s.embed_dim, generator=g) * 0.1)
        parts["image_normalizer"].std.copy_(torch.rand(1, s.embed_dim, generator=g) + 0.5)
    return parts


def write_folder(parts: dict, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """The components in the published layout, with the model_index.json diffusers writes."""
    path = Path(path)
    index = {"_class_name": IMG2IMG, "_diffusers_version": "0.42.1"}
    for name in LAYOUT:
        part, folder = parts[name], path / name
        index[name] = list(LIBRARIES[name][:1]) + [type(part).__name__ if name == "scheduler" else LIBRARIES[name][1]]
        write_component(part, folder, None if name == "image_normalizer" else dtype)  # its statistics stay float32
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path
