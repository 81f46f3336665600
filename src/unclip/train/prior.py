"""The prior stages: the diffusion, AR and ECLIPSE priors, trained on cached CLIP embeddings."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from unclip.config import ConfigError, DataConfig, TrainConfig, check
from unclip.data.embeddings import EmbeddingCache, build_cache
from unclip.data.stream import make_source
from unclip.models.clip import ClipEncoder
from unclip.models.prior import (
    ARPrior,
    ARPriorConfig,
    DiffusionPrior,
    EclipseConfig,
    EclipsePrior,
    PriorConfig,
)
from unclip.models.prior.diffusion_prior import TEXT_KEYS
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline


@dataclass
class PriorStageConfig:
    clip: str = "runs/clip/model"  # the CLIP folder whose embedding space the prior learns
    cache: str = "runs/prior-cache"  # embedding cache; built on first use
    cache_size: int = 50_000  # samples of the data stream embedded into the cache
    model: PriorConfig = field(default_factory=PriorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        check(self.cache_size > 0, "cache_size", "must be positive")


@dataclass
class ARPriorStageConfig(PriorStageConfig):
    model: ARPriorConfig = field(default_factory=ARPriorConfig)


@dataclass
class EclipsePriorStageConfig(PriorStageConfig):
    model: EclipseConfig = field(default_factory=EclipseConfig)


class PriorModule(nn.Module):
    """forward(batch) -> the prior's loss on a batch of cached embeddings."""

    def __init__(self, prior: DiffusionPrior | ARPrior, null: dict[str, torch.Tensor]):
        super().__init__()
        self.prior = prior
        for k in TEXT_KEYS:  # the empty caption's condition, moved with the module
            self.register_buffer(f"null_{k}", null[k], persistent=False)

    def null(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, f"null_{k}") for k in TEXT_KEYS}

    def forward(self, batch: dict) -> torch.Tensor:
        return self.prior.loss(batch["image_embed"], {k: batch[k] for k in TEXT_KEYS}, self.null())


class PriorStage:
    name, kind = "prior", "diffusion"
    prior_class = DiffusionPrior  # built from the config, standardised by the cache's statistics
    data_workers = 0  # batches come from memory

    def __init__(self, cfg: PriorStageConfig):
        torch.manual_seed(cfg.train.seed)
        self.cfg = cfg
        self.clip = ClipEncoder.from_pretrained(cfg.clip).eval()
        if self.clip.model.config.text_config.hidden_size != self.clip.embed_dim:
            raise ConfigError("clip", "the prior needs a CLIP whose text width equals its embedding size")
        self.cache = EmbeddingCache(self._cache_path(), self.clip, seed=cfg.data.seed)
        self.module = PriorModule(self.build(cfg.model), self.cache.null)

    def build(self, cfg: PriorConfig | EclipseConfig) -> DiffusionPrior | EclipsePrior:
        prior = self.prior_class.from_config(cfg, self.clip.embed_dim, self.clip.max_length)
        image_embed = self.cache.data["image_embed"]
        prior.set_statistics(image_embed.mean(0), image_embed.std(0))
        return prior

    def pipeline(self, prior: DiffusionPrior) -> DalleTwoPipeline:
        return DalleTwoPipeline(self.clip, prior)

    def _cache_path(self) -> Path:
        path = Path(self.cfg.cache)
        if not (path / "manifest.json").is_file():
            if int(os.environ.get("RANK", "0")) == 0:
                data = replace(self.cfg.data, image_size=self.clip.image_size)
                build_cache(self.clip, make_source(data), self.cfg.cache_size, path)
            while not (path / "manifest.json").is_file():  # other processes wait for rank 0
                time.sleep(1)
        return path

    def source(self):
        return self.cache

    def preview(self, module: PriorModule, folder: Path, step: int) -> dict:
        from unclip.tasks.evaluate.prior_eval import evaluate_prior

        figures = evaluate_prior(self.pipeline(module.prior), num=100, methods=("prior",), prior=self.kind)
        return {k: v["prior"] for k, v in figures.items()}

    def export(self, module: PriorModule, folder: Path) -> None:
        self.pipeline(module.prior).save_pretrained(folder)


class ARPriorStage(PriorStage):
    """The AR prior on the same cache; its codec is fitted to the cached image embeddings."""

    name, kind = "prior_ar", "ar"

    def build(self, cfg: ARPriorConfig) -> ARPrior:
        data, text_width = self.cache.data, self.clip.model.config.text_config.hidden_size
        return ARPrior.from_data(cfg, data["image_embed"], data["text_embed"], self.clip.max_length, text_width)

    def pipeline(self, prior: ARPrior) -> DalleTwoPipeline:
        return DalleTwoPipeline(self.clip, ar_prior=prior)


class EclipsePriorStage(PriorStage):
    """The contrastive one-pass prior (ECLIPSE) on the same cache, standardised by its statistics."""

    name, kind = "prior_eclipse", "eclipse"
    prior_class = EclipsePrior

    def pipeline(self, prior: EclipsePrior) -> DalleTwoPipeline:
        return DalleTwoPipeline(self.clip, eclipse_prior=prior)
