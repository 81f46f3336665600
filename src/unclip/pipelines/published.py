"""The published unCLIP families at their real size, with seeded random weights, written in the
published folder layouts (benchmarks/published_sizes.py measures memory and speed on them; nothing
here downloads).

Each network is built on the meta device from the published configuration values (diffusers'
conversion scripts and the folders' config.json files state them), then its state dict is written
tensor by tensor in the dtype asked: no float32 model is ever made, and the weights exist once, as
the file's tensors. Random values keep activations in range (matrices ~ N(0, 1/fan_in), norms 1,
biases 0), so every stage's arithmetic is what the trained model's would cost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

CLIP_VOCAB = 49408  # every family's CLIP BPE vocabulary (the token table's size)
FAMILIES = ("kandinsky", "karlo", "stable_unclip")


def clip_text(width: int, layers: int, heads: int, projection: int | None, act: str = "quick_gelu") -> dict:
    return dict(vocab_size=CLIP_VOCAB, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                num_attention_heads=heads, max_position_embeddings=77, hidden_act=act,
                **({"projection_dim": projection} if projection else {}))


def clip_vision(width: int, layers: int, heads: int, mlp: int, projection: int, act: str = "quick_gelu") -> dict:
    return dict(hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers, num_attention_heads=heads,
                image_size=224, patch_size=14, projection_dim=projection, hidden_act=act)


SIMPLE_ATTN = dict(down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
                   up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
                   mid_block_type="UNetMidBlock2DSimpleCrossAttn", layers_per_block=3, attention_head_dim=64,
                   resnet_time_scale_shift="scale_shift")
SUPER_RES = dict(layers_per_block=3, down_block_types=("ResnetDownsampleBlock2D",) * 4,
                 up_block_types=("ResnetUpsampleBlock2D",) * 4, block_out_channels=(320, 640, 960, 1280),
                 in_channels=6, out_channels=3, add_attention=False)
SD21_UNET = dict(sample_size=96, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=1024,
                 use_linear_projection=True, class_embed_type="projection")
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
              layers_per_block=2, sample_size=768)
KANDINSKY_UNET = dict(SIMPLE_ATTN, sample_size=64, in_channels=4, out_channels=8, block_out_channels=(384, 768, 1152, 1536),
                      cross_attention_dim=768, encoder_hid_dim=1280, encoder_hid_dim_type="image_proj",
                      addition_embed_type="image", addition_embed_type_num_heads=64)
VIT_L_TEXT = clip_text(768, 12, 12, 768)
VIT_L_VISION = clip_vision(1024, 24, 16, 4096, 768)

# (library, class, config) of each network; the published parameter count it must match (3%).
NETWORKS = {
    "kandinsky": {
        "prior/prior": ("diffusers", "PriorTransformer", dict(num_attention_heads=32, attention_head_dim=64,
                        num_layers=20, embedding_dim=1280, num_embeddings=77, additional_embeddings=4), 1.0e9),
        "prior/text_encoder": ("transformers", "CLIPTextModelWithProjection", clip_text(1280, 32, 20, 1280, "gelu"),
                               0.695e9),
        "prior/image_encoder": ("transformers", "CLIPVisionModelWithProjection",
                                clip_vision(1664, 48, 16, 8192, 1280, "gelu"), 1.8e9),
        "decoder/unet": ("diffusers", "UNet2DConditionModel", KANDINSKY_UNET, 1.22e9),
        "decoder/movq": ("diffusers", "VQModel", dict(in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 3 + ("AttnDownEncoderBlock2D",),
                         up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 3,
                         num_vq_embeddings=16384, block_out_channels=(128, 256, 256, 512), vq_embed_dim=4,
                         layers_per_block=2, norm_type="spatial"), 67e6),
        "decoder-inpaint/unet": ("diffusers", "UNet2DConditionModel", dict(KANDINSKY_UNET, in_channels=9), 1.22e9),
    },
    "karlo": {
        "karlo/text_encoder": ("transformers", "CLIPTextModelWithProjection", VIT_L_TEXT, 123.7e6),
        "karlo/prior": ("diffusers", "PriorTransformer", dict(embedding_dim=768), 1.0e9),
        "karlo/text_proj": ("unclip", "UnCLIPTextProjModel", dict(clip_extra_context_tokens=4, clip_embeddings_dim=768,
                            time_embed_dim=1280, cross_attention_dim=1536), None),
        "karlo/decoder": ("diffusers", "UNet2DConditionModel", dict(SIMPLE_ATTN, sample_size=64, in_channels=3,
                          out_channels=6, block_out_channels=(320, 640, 960, 1280), cross_attention_dim=1536,
                          class_embed_type="identity"), 0.9e9),
        "karlo/super_res_first": ("diffusers", "UNet2DModel", dict(SUPER_RES, sample_size=256), 0.7e9),
        "karlo/super_res_last": ("diffusers", "UNet2DModel", SUPER_RES, 0.7e9),
        "karlo-image-variations/image_encoder": ("transformers", "CLIPVisionModelWithProjection", VIT_L_VISION,
                                                 304.0e6),
    },
    "stable_unclip": {
        "stable-diffusion-2-1-unclip/text_encoder": ("transformers", "CLIPTextModel", clip_text(1024, 23, 16, None,
                                                     "gelu"), 340.4e6),
        "stable-diffusion-2-1-unclip/image_encoder": ("transformers", "CLIPVisionModelWithProjection",
                                                      clip_vision(1280, 32, 16, 5120, 1024, "gelu"), 632.1e6),
        "stable-diffusion-2-1-unclip/unet": ("diffusers", "UNet2DConditionModel",
                                             dict(SD21_UNET, projection_class_embeddings_input_dim=2048), 870e6),
        "stable-diffusion-2-1-unclip/vae": ("diffusers", "AutoencoderKL", SD_VAE, 83.7e6),
        "stable-diffusion-2-1-unclip-small/image_encoder": ("transformers", "CLIPVisionModelWithProjection",
                                                            VIT_L_VISION, 304.0e6),
        "stable-diffusion-2-1-unclip-small/unet": ("diffusers", "UNet2DConditionModel",
                                                   dict(SD21_UNET, projection_class_embeddings_input_dim=1536), 869e6),
    },
}
# Folders whose networks are the same as another folder's (the same file written again).
SHARED = {"decoder-inpaint": ("decoder", ("movq",)),
          "karlo-image-variations": ("karlo", ("text_encoder", "text_proj", "decoder", "super_res_first",
                                                "super_res_last")),
          "stable-diffusion-2-1-unclip-small": ("stable-diffusion-2-1-unclip", ("text_encoder", "vae"))}


def network_class(library: str, name: str):
    if library == "unclip":
        from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

        return UnCLIPTextProjModel
    import importlib

    return getattr(importlib.import_module(library), name)


def empty_network(library: str, name: str, config: dict) -> torch.nn.Module:
    """The network on the meta device: its shapes and config, no memory."""
    cls = network_class(library, name)
    with torch.device("meta"):
        if library == "transformers":
            return cls(cls.config_class(**config))
        return cls(**config)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def counts(family: str) -> list[tuple[str, int, float | None]]:
    """(component, parameters built here, parameters published) of each network of a family."""
    return [(key, parameter_count(empty_network(lib, cls, cfg)), published)
            for key, (lib, cls, cfg, published) in NETWORKS[family].items()]


def random_tensor(name: str, shape: torch.Size, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """A trained-looking value for one weight, by its name and shape."""
    if name.endswith("bias") or name.endswith("clip_mean") or name.endswith("mean"):
        return torch.zeros(shape, dtype=dtype)
    if len(shape) <= 1 or name.endswith("clip_std") or name.endswith("std"):
        return torch.ones(shape, dtype=dtype)
    fan_in = shape[1:].numel() if name.endswith("weight") else shape[-1]
    values = torch.randn(shape, generator=generator, device=generator.device) * fan_in ** -0.5
    return values.to("cpu", dtype)


def write_network(library: str, name: str, config: dict, folder: Path, dtype: torch.dtype, seed: int,
                  device: str = "cpu") -> int:
    """config.json and one safetensors file of random weights in `dtype`, as `save_pretrained` writes
    them (the random numbers drawn on `device`: a GPU draws them in a blink); returns the bytes of
    weights written."""
    from safetensors.torch import save_file

    net = empty_network(library, name, config)
    folder.mkdir(parents=True, exist_ok=True)
    if library == "transformers":
        net.config.save_pretrained(folder)
        stem = "model"
    else:
        net.save_config(folder)
        stem = "diffusion_pytorch_model"
    g = torch.Generator(device).manual_seed(seed)
    state = {k: random_tensor(k, v.shape, dtype if v.is_floating_point() else v.dtype, g)
             for k, v in net.state_dict().items()}
    save_file(state, str(folder / f"{stem}.safetensors"), metadata={"format": "pt"})
    return sum(t.numel() * t.element_size() for t in state.values())


@dataclass
class Written:
    folders: dict[str, Path] = field(default_factory=dict)  # what each folder is: prior, decoder, ...
    weight_bytes: dict[str, int] = field(default_factory=dict)  # per network


def _index(folder: Path, kind: str, libraries: dict, names: tuple[str, ...], schedulers: dict) -> None:
    index = {"_class_name": kind, "_diffusers_version": "0.42.1"}
    for name in names:
        index[name] = ["diffusers", type(schedulers[name]).__name__] if name in schedulers else list(libraries[name])
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def write_family(family: str, root: str | Path, dtype: torch.dtype = torch.bfloat16, seed: int = 0,
                 device: str = "cpu") -> Written:
    """Every folder of a family under `root`, one network at a time (the largest alone in memory)."""
    if family not in NETWORKS:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    root, out = Path(root), Written()
    for i, (key, (lib, cls, cfg, _)) in enumerate(NETWORKS[family].items()):
        out.weight_bytes[key] = write_network(lib, cls, cfg, root / key, dtype, seed + i, device)
    for folder, (source, names) in SHARED.items():
        if (root / source).is_dir():
            for name in names:
                _copy(root / source / name, root / folder / name)
    _small_parts(family, root, out)
    return out


def _copy(src: Path, dst: Path) -> None:
    import shutil

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


def _small_parts(family: str, root: Path, out: Written) -> None:
    """Tokenizers, schedulers, processors and the model_index.json of each folder."""
    from unclip.pipelines.synthetic import make_tokenizer, write_component, write_tokenizer

    tokenizer = make_tokenizer()
    if family == "kandinsky":
        from unclip.pipelines.kandinsky import synthetic as k
        from unclip.pipelines.kandinsky.folder import DECODER, INPAINT, LAYOUT, PRIOR

        small = k.random_prior()
        write_tokenizer(tokenizer, root / "prior" / "tokenizer")
        for name in ("scheduler", "image_processor"):
            part = small[name] if name == "scheduler" else _processor(224)
            write_component(part, root / "prior" / name)
        _index(root / "prior", PRIOR, k.LIBRARIES, LAYOUT[PRIOR], {"scheduler": small["scheduler"]})
        scheduler = k.random_decoder()["scheduler"]
        for folder, kind in (("decoder", DECODER), ("decoder-inpaint", INPAINT)):
            write_component(scheduler, root / folder / "scheduler")
            _index(root / folder, kind, k.LIBRARIES, LAYOUT[kind], {"scheduler": scheduler})
        out.folders.update(prior=root / "prior", decoder=root / "decoder", inpaint=root / "decoder-inpaint")
    elif family == "karlo":
        from unclip.pipelines.karlo import synthetic as k
        from unclip.pipelines.karlo.folder import LAYOUT, TEXT_TO_IMAGE, VARIATIONS

        small = k.random_components()
        for folder, kind in (("karlo", TEXT_TO_IMAGE), ("karlo-image-variations", VARIATIONS)):
            write_tokenizer(tokenizer, root / folder / "tokenizer")
            schedulers = {n: small[n] for n in ("prior_scheduler", "decoder_scheduler", "super_res_scheduler")
                          if n in LAYOUT[kind]}
            for name, part in schedulers.items():
                write_component(part, root / folder / name)
            if kind == VARIATIONS:
                write_component(_processor(224), root / folder / "feature_extractor")
            _index(root / folder, kind, k.LIBRARIES, LAYOUT[kind], schedulers)
        out.folders.update(karlo=root / "karlo", variations=root / "karlo-image-variations")
    else:
        from unclip.pipelines.stable_unclip import synthetic as s
        from unclip.pipelines.stable_unclip.folder import IMG2IMG, LAYOUT

        small = s.random_components()
        for folder, width in (("stable-diffusion-2-1-unclip", 1024), ("stable-diffusion-2-1-unclip-small", 768)):
            from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
                StableUnCLIPImageNormalizer,
            )

            write_tokenizer(tokenizer, root / folder / "tokenizer")
            write_component(_processor(224), root / folder / "feature_extractor")
            write_component(StableUnCLIPImageNormalizer(embedding_dim=width), root / folder / "image_normalizer")
            for name in ("image_noising_scheduler", "scheduler"):
                write_component(small[name], root / folder / name)
            _index(root / folder, IMG2IMG, s.LIBRARIES, LAYOUT, {"scheduler": small["scheduler"]})
        out.folders.update(vit_h=root / "stable-diffusion-2-1-unclip",
                           vit_l=root / "stable-diffusion-2-1-unclip-small")
    _fix_token_ids(root, tokenizer)


def _processor(side: int):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(crop_size={"height": side, "width": side}, size={"shortest_edge": side})


def _fix_token_ids(root: Path, tokenizer) -> None:
    """The text towers' special token ids are the tokenizer's (the vocabulary is the published size;
    the tokenizer made here knows fewer words, which changes nothing of the arithmetic)."""
    for config in root.glob("**/text_encoder/config.json"):
        cfg = json.loads(config.read_text())
        cfg.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
        config.write_text(json.dumps(cfg, indent=2))
