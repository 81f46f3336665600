"""Stable unCLIP's diffusers folders, read component by component.

Stable unCLIP is the unCLIP decoder idea on a latent diffusion model: Stable Diffusion 2.1's UNet
conditioned, beside the caption, on a noise-augmented CLIP image embedding (`noise_level`).
Stability AI published it as `StableUnCLIPImg2ImgPipeline` folders: `stabilityai/stable-diffusion-
2-1-unclip` (OpenCLIP ViT-H image tower, 1024-d) and `-unclip-small` (CLIP ViT-L/14, 768-d: the
space of Karlo's prior), each with feature_extractor/ image_encoder/ image_normalizer/
image_noising_scheduler/ tokenizer/ text_encoder/ unet/ scheduler/ vae/. Text to image takes an
unCLIP prior from elsewhere (`--prior-model`: Karlo's folder, optionally with ECLIPSE's Karlo prior).
Every component is loaded by the class assigned here (pipelines.components).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from unclip.pipelines.components import INDEX, load_component, read_index

IMG2IMG = "StableUnCLIPImg2ImgPipeline"
LAYOUT = ("feature_extractor", "image_encoder", "image_normalizer", "image_noising_scheduler", "tokenizer",
          "text_encoder", "unet", "scheduler", "vae")
# The samplers its scheduler/ may name (diffusers' generic step); RePaint needs DDIM or DDPM.
SCHEDULERS = ("DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "EulerDiscreteScheduler",
              "DPMSolverMultistepScheduler", "UniPCMultistepScheduler")


def _scheduler_class(root: Path, name: str, allowed: tuple[str, ...]):
    import diffusers

    config = root / name / "scheduler_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{root}: {name}/scheduler_config.json is missing")
    cls = json.loads(config.read_text()).get("_class_name")
    if cls not in allowed:
        raise ValueError(f"{root}: {name} {cls!r} is not one unclip samples with here ({', '.join(allowed)})")
    return getattr(diffusers, cls)


def _class(root: Path, name: str):
    """The class of each component: nothing here comes from the folder's index."""
    import diffusers
    import transformers

    if name == "scheduler":
        return _scheduler_class(root, name, SCHEDULERS)
    if name == "image_noising_scheduler":
        return _scheduler_class(root, name, ("DDPMScheduler",))
    if name == "feature_extractor":
        # The PIL processor: the default one needs torchvision, which this project never installs.
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
        return CLIPImageProcessorPil
    if name == "image_normalizer":
        from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
            StableUnCLIPImageNormalizer,
        )
        return StableUnCLIPImageNormalizer
    return {"image_encoder": transformers.CLIPVisionModelWithProjection, "tokenizer": transformers.CLIPTokenizer,
            "text_encoder": transformers.CLIPTextModel, "unet": diffusers.UNet2DConditionModel,
            "vae": diffusers.AutoencoderKL}[name]


def load_folder(path: str | Path, dtype: torch.dtype = torch.float32) -> dict:
    """{component: loaded object} of a Stable unCLIP folder (StableUnCLIPImg2ImgPipeline's layout)."""
    root = Path(path)
    index = read_index(root)
    if index is None or index.get("_class_name") != IMG2IMG:
        raise ValueError(f"{root / INDEX}: not a {IMG2IMG} folder")
    parts = {name: load_component(root, name, _class(root, name), dtype) for name in LAYOUT}
    parts["image_normalizer"] = parts["image_normalizer"].float()  # its statistics stay float32
    return parts
