"""What every pipeline's call returns, in diffusers' conventions, and what every pipeline of
networks shares (`Components`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

OUTPUT_TYPES = ("pil", "np", "uint8", "pt")


class Components:
    """`.to()` and `.require()` over a pipeline's networks, any of which may be missing."""

    kind_name = "model"  # as error messages call it

    def components(self) -> list:
        raise NotImplementedError

    def to(self, device=None, dtype: torch.dtype | None = None):
        for part in self.components():
            if part is not None:
                part.to(device=device, dtype=dtype)
        return self

    def require(self, *names: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(f"this {self.kind_name} has no {' or '.join(missing)}")


@dataclass
class UnCLIPOutput:
    """`images`: PIL images ("pil"), float32 (B, H, W, 3) in [0, 1] ("np"), uint8 (B, H, W, 3)
    ("uint8") or float (B, 3, H, W) in [0, 1] ("pt"); `image_embeds`: the CLIP image embeddings
    (B, D) the decoder drew them from."""

    images: Any
    image_embeds: torch.Tensor | None = None


def check_prompts(prompt: str | list[str] | None, batch: int | None = None) -> list[str]:
    """A prompt or a list of them as a list of non-empty strings; one prompt is repeated to
    `batch` rows when a batch size is given."""
    if prompt is None:
        raise ValueError("give a prompt (or image / image_embeddings)")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError("prompts must be non-empty strings")
    if batch is not None and len(prompts) != batch:
        if len(prompts) != 1:
            raise ValueError(f"{len(prompts)} prompts for {batch} image embeddings")
        prompts = prompts * batch
    return prompts


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] float32, exactly as diffusers' pipelines compute it."""
    return (pixels.float() * 0.5 + 0.5).clamp(0, 1)


def to_output(pixels: torch.Tensor, output_type: str = "pil"):
    """Images (B, 3, H, W) in [-1, 1] as `output_type` (see UnCLIPOutput)."""
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    unit = to_unit(pixels)
    if output_type == "pt":
        return unit
    arr = unit.cpu().permute(0, 2, 3, 1).numpy()
    if output_type == "np":
        return arr
    u8 = (arr * 255).round().astype("uint8")
    if output_type == "uint8":
        return u8
    from PIL import Image

    return [Image.fromarray(a) for a in u8]
