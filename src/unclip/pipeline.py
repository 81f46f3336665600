"""The unCLIP system as one object and one folder.

A pipeline folder holds a subfolder per component in diffusers' `save_pretrained` layout
(config plus safetensors: `clip/`, `prior/`, ...) and `unclip.json` with the system
settings (each component's sampling defaults) and the version of unclip that wrote it.
Nothing is pickled and loading runs no code from the folder. Components are optional, so a
stage's training run exports a partial pipeline (the prior comes with the CLIP it needs).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from . import __version__
from .clip import ClipEncoder
from .config import from_dict
from .data.embeddings import encode_text
from .prior import DiffusionPrior, PriorConfig

SETTINGS = "unclip.json"


def default_model_dir() -> Path:
    """The shapes-world model shipped inside the package."""
    return Path(__file__).resolve().parent / "assets" / "shapes"


def resolve_model(path: str | Path | None) -> Path:
    if path is not None:
        return Path(path)
    path = default_model_dir()
    if not (path / SETTINGS).is_file():
        raise FileNotFoundError(f"no default model is installed at {path}; pass --model DIR")
    return path


class UnCLIPPipeline:
    """CLIP + prior (+ decoder and upsamplers as they are added)."""

    def __init__(self, clip: ClipEncoder, prior: DiffusionPrior | None = None):
        self.clip, self.prior = clip, prior

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, torch_dtype=None) -> UnCLIPPipeline:
        path = resolve_model(path)
        if not (path / SETTINGS).is_file():
            raise FileNotFoundError(f"not an unclip model folder (no {SETTINGS}): {path}")
        settings = json.loads((path / SETTINGS).read_text())
        clip = ClipEncoder.from_pretrained(path / "clip")
        prior = None
        if (path / "prior").is_dir():
            cfg = from_dict(PriorConfig, settings.get("prior", {}), "prior.")
            prior = DiffusionPrior.from_pretrained(path / "prior", cfg, torch_dtype=torch_dtype)
        return cls(clip.eval(), prior)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.clip.save_pretrained(path / "clip")
        settings = {"unclip_version": __version__, "components": ["clip"]}
        if self.prior is not None:
            self.prior.save_pretrained(path / "prior")
            settings["prior"] = asdict(self.prior.cfg)
            settings["components"].append("prior")
        (path / SETTINGS).write_text(json.dumps(settings, indent=2))

    @torch.no_grad()
    def text_condition(self, prompts: list[str]) -> tuple[dict, dict]:
        """The CLIP text condition of `prompts` and of the empty caption (the null)."""
        if not prompts or any(not p.strip() for p in prompts):
            raise ValueError("prompts must be non-empty strings")
        return encode_text(self.clip, list(prompts)), encode_text(self.clip, [""])

    @torch.no_grad()
    def image_embeds(self, prompts: list[str], generator: torch.Generator | None = None, **kw) -> torch.Tensor:
        """The prior's CLIP image embeddings (B, D), L2-normalised, for `prompts`."""
        if self.prior is None:
            raise ValueError("this model has no prior")
        cond, null = self.text_condition(prompts)
        return self.prior.sample(cond, null, generator=generator, **kw)
