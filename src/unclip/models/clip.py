"""CLIP behind a small adapter: `embed_text` and `embed_image`, backed by transformers' CLIPModel.

The same class trains from scratch (`from_config`, with `contrastive_loss`) and loads a
Hugging Face CLIP folder the user brings (`from_pretrained`, local files only). A saved
encoder is a plain HF folder: `CLIPModel.from_pretrained(dir)` and
`AutoTokenizer.from_pretrained(dir)` load it as it is.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, CLIPConfig, CLIPModel

from unclip.config import check
from unclip.runtime.offload import execution_device

# OpenAI CLIP's pixel statistics, used when a pretrained folder has no preprocessor config.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipConfig:
    """A small CLIP trained from scratch (ViT image tower, causal text transformer)."""

    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 192
    vision_layers: int = 4
    vision_heads: int = 4
    text_width: int = 192
    text_layers: int = 4
    text_heads: int = 4
    max_length: int = 32
    vocab_size: int = 1024
    embed_dim: int = 128

    def __post_init__(self):
        check(self.image_size % self.patch_size == 0, "image_size", "must be a multiple of patch_size")
        check(self.vision_width % self.vision_heads == 0, "vision_width", "must divide by vision_heads")
        check(self.text_width % self.text_heads == 0, "text_width", "must divide by text_heads")
        check(self.max_length >= 4, "max_length", "must be at least 4")

    def to_hf(self, tokenizer) -> CLIPConfig:
        text = dict(
            vocab_size=len(tokenizer), hidden_size=self.text_width, intermediate_size=4 * self.text_width,
            num_hidden_layers=self.text_layers, num_attention_heads=self.text_heads,
            max_position_embeddings=self.max_length, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        vision = dict(
            hidden_size=self.vision_width, intermediate_size=4 * self.vision_width,
            num_hidden_layers=self.vision_layers, num_attention_heads=self.vision_heads,
            image_size=self.image_size, patch_size=self.patch_size,
        )
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=self.embed_dim)


class TextEmbedding(NamedTuple):
    text_embed: torch.Tensor  # (B, D) pooled and projected, not normalised
    text_encodings: torch.Tensor  # (B, L, W) per-token final hidden states
    mask: torch.Tensor  # (B, L) bool, True for real tokens


class ClipEncoder(nn.Module):
    """transformers.CLIPModel plus its tokenizer and pixel statistics.

    Pixels come in as (B, 3, H, W) floats in [-1, 1] (the diffusion models' range) and are
    resized and normalised here, so no caller converts ranges itself."""

    def __init__(self, model: CLIPModel, tokenizer, image_mean=(0.5,) * 3, image_std=(0.5,) * 3):
        super().__init__()
        # Plain matmul attention, always (so a saved and reloaded encoder computes exactly the
        # same): on the CPU, SDPA's backward is several times slower for short sequences
        # (measured: whole CLIP training steps 1.5x faster with "eager").
        model.set_attn_implementation("eager")
        self.model, self.tokenizer = model, tokenizer
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg: ClipConfig, tokenizer) -> ClipEncoder:
        return cls(CLIPModel(cfg.to_hf(tokenizer)), tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | Path, torch_dtype=torch.float32) -> ClipEncoder:
        """Load a local Hugging Face CLIP folder (ours, or e.g. openai/clip-vit-large-patch14)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"not a CLIP model folder (no config.json): {path}")
        from unclip.runtime.weights import check_weights, meta_model

        check_weights(path.name, path, None, meta_model(CLIPModel, path))
        model = CLIPModel.from_pretrained(path, local_files_only=True, use_safetensors=True, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        mean, std = OPENAI_MEAN, OPENAI_STD
        if (path / "preprocessor_config.json").is_file():
            pre = json.loads((path / "preprocessor_config.json").read_text())
            mean, std = pre.get("image_mean", mean), pre.get("image_std", std)
        return cls(model.eval(), tokenizer, mean, std)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        size = self.image_size
        pre = {
            "image_processor_type": "CLIPImageProcessor", "do_resize": True, "do_center_crop": True,
            "size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "resample": 3,
            "image_mean": self.image_mean.flatten().tolist(),
            "image_std": self.image_std.flatten().tolist(), "do_convert_rgb": True,
        }
        (path / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))

    @property
    def image_size(self) -> int:
        return self.model.config.vision_config.image_size

    @property
    def embed_dim(self) -> int:
        return self.model.config.projection_dim

    @property
    def max_length(self) -> int:
        return min(self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings)

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        warn_if_cut(self.tokenizer, captions, self.max_length)
        enc = self.tokenizer(
            list(captions), padding="max_length", truncation=True, max_length=self.max_length,
            return_tensors="pt",
        )
        device = self.image_mean.device
        return {"input_ids": enc.input_ids.to(device), "attention_mask": enc.attention_mask.to(device)}

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """[-1, 1] pixels of any square size -> the vision tower's normalised input."""
        x = (pixels.to(self.image_mean.device).float() + 1) / 2  # images come in on the CPU
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bicubic", antialias=True)
        x = (x - self.image_mean) / self.image_std
        return x.to(self.model.dtype)

    def embed_text(self, captions: list[str]) -> TextEmbedding:
        tokens = self.tokenize(captions)
        out = self.model.text_model(**tokens)
        text_embed = self.model.text_projection(out.pooler_output)  # (B, D)
        return TextEmbedding(text_embed, out.last_hidden_state, tokens["attention_mask"].bool())

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> image_embed (B, D), projected, not normalised."""
        out = self.model.vision_model(pixel_values=self.preprocess(pixels))
        return self.model.visual_projection(out.pooler_output)

    def forward(self, pixels: torch.Tensor, captions: list[str]):
        """Both embeddings, for contrastive training: (image_embed, text_embed), each (B, D)."""
        return self.embed_image(pixels), self.embed_text(captions).text_embed


class ClipTowers:
    """A published model's two CLIP towers (transformers' CLIPTextModelWithProjection and
    CLIPVisionModelWithProjection, its tokenizer and image processor) behind ClipEncoder's
    `embed_text` / `embed_image`, so that they can judge candidates (unclip.pipelines.rerank)."""

    def __init__(self, text_encoder, image_encoder, tokenizer, image_processor):
        self.text_encoder, self.image_encoder = text_encoder, image_encoder
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.image_size = image_encoder.config.image_size
        dev = execution_device(image_encoder)
        self.image_mean = torch.tensor(image_processor.image_mean, device=dev).view(1, 3, 1, 1)
        self.image_std = torch.tensor(image_processor.image_std, device=dev).view(1, 3, 1, 1)

    def embed_text(self, captions: list[str]) -> TextEmbedding:
        dev = execution_device(self.text_encoder)
        tok = self.tokenizer(list(captions), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        out = self.text_encoder(tok.input_ids.to(dev))
        return TextEmbedding(out.text_embeds, out.last_hidden_state, tok.attention_mask.bool().to(dev))

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> image_embed (B, D), projected: resized to the tower's side and
        normalised as its processor normalises (no crop: candidates are square)."""
        x = (pixels.to(self.image_mean.device).float() + 1) / 2
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bicubic", antialias=True)
        x = ((x - self.image_mean) / self.image_std).to(self.image_encoder.dtype)
        return self.image_encoder(pixel_values=x).image_embeds

    def embed_pil(self, images) -> torch.Tensor:
        """Image embeddings of PIL images or uint8 arrays, through the model's own processor."""
        import numpy as np
        from PIL import Image

        pil = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images]
        pixels = self.image_processor(images=pil, return_tensors="pt").pixel_values
        return self.image_encoder(pixels.to(execution_device(self.image_encoder), self.image_encoder.dtype)).image_embeds


def warn_if_cut(tokenizer, captions: list[str], max_length: int) -> None:
    """Say so when a caption is longer than the text tower reads (it is cut, as CLIP cuts it)."""
    for caption, ids in zip(captions, tokenizer(list(captions)).input_ids):
        if len(ids) > max_length:
            kept = tokenizer.decode(ids[1:max_length - 1]).strip()
            logging.getLogger(__name__).warning("prompt cut to its first %d tokens (%r ...): %r",
                                                max_length, kept[:60], caption)


def contrastive_loss(image_embed: torch.Tensor, text_embed: torch.Tensor, logit_scale: torch.Tensor):
    """CLIP's symmetric InfoNCE over a batch of matching (image, caption) pairs."""
    image_embed = F.normalize(image_embed.float(), dim=-1)
    text_embed = F.normalize(text_embed.float(), dim=-1)
    logits = logit_scale.float().exp().clamp(max=100) * text_embed @ image_embed.T  # (B, B)
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
