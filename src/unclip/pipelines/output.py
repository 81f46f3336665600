"""What every pipeline's call returns, in diffusers' conventions, and what every pipeline of
networks shares (`Components`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from unclip import validate


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


def call_settings(pipe, **given) -> dict:
    """A call's settings checked, the model's defaults (`pipe.sampling_defaults()`) filled in where
    None; `decoder_*` are unclip's stage names for diffusers' `num_inference_steps` and
    `guidance_scale` (the command line passes them; one of each pair at most)."""
    for ours, theirs in (("decoder_num_inference_steps", "num_inference_steps"),
                         ("decoder_guidance_scale", "guidance_scale")):
        if given.get(ours) is not None:
            if given.get(theirs) is not None:
                raise ValueError(f"give {theirs} or {ours}, not both")
            given[theirs] = given[ours]
        given.pop(ours, None)
    prior = given.pop("prior", None)
    if prior not in (None, pipe.prior_kind):
        raise ValueError(f"prior {prior!r}: this {pipe.title} has only the {pipe.prior_kind or 'no'} prior")
    validate.sampling(**given)
    out = {**pipe.sampling_defaults(), **{k: v for k, v in given.items() if v is not None}}
    out.setdefault("rerank", 1)
    return out
