"""The upsampler stages: corrupted low-resolution image -> image at `factor` times the side."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unclip.config import ConfigError, DataConfig, TrainConfig, check
from unclip.data import shapes
from unclip.data.stream import make_source
from unclip.data.transforms import to_tensor, to_uint8
from unclip.models.upsampler import Upsampler, UpsamplerConfig, upsample
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline
from unclip.plot import image_grid
from unclip.tasks.evaluate.image_metrics import psnr


@dataclass
class UpsamplerStageConfig:
    stage: int = 1  # 1: base -> 2x with blur; 2: 2x -> 4x with BSR (the presets)
    init: str | None = None  # start from upsampler `stage` of this model folder (continue training)
    model: UpsamplerConfig = field(default_factory=UpsamplerConfig)
    data: DataConfig = field(default_factory=DataConfig)  # image_size is the target size
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        check(self.stage in (1, 2), "stage", "must be 1 or 2")
        check(self.data.image_size % self.model.factor == 0, "data.image_size", "must be divisible by model.factor")


class UpsamplerModule(nn.Module):
    """forward(batch) -> loss: the batch's images are the targets; their area-downsampled and
    corrupted versions the inputs. The corruption's randomness comes from the global RNG, which
    the training loop reseeds every step, so resumes repeat it exactly."""

    def __init__(self, upsampler: Upsampler):
        super().__init__()
        self.upsampler = upsampler

    def forward(self, batch: dict) -> torch.Tensor:
        high = batch["pixels"]
        low = F.interpolate(high, scale_factor=1 / self.upsampler.cfg.factor, mode="area")
        rng = np.random.default_rng(int(torch.randint(2**31, (1,))))
        return self.upsampler.loss(high, self.upsampler.degrade(low, rng))


class UpsamplerStage:
    def __init__(self, cfg: UpsamplerStageConfig):
        torch.manual_seed(cfg.train.seed)
        self.cfg, self.name, self.data_workers = cfg, f"upsampler{cfg.stage}", cfg.data.num_workers
        self._source = make_source(cfg.data)
        upsampler = Upsampler.from_config(cfg.model)
        if cfg.init:  # a whole model's upsampler `stage`, or a one-upsampler folder's only one
            ups = DalleTwoPipeline.from_pretrained(cfg.init).upsamplers
            if not ups:
                raise ConfigError("init", f"{cfg.init} holds no upsampler")
            upsampler.load_state_dict((ups[cfg.stage - 1] if len(ups) > 1 else ups[0]).state_dict())
        self.module = UpsamplerModule(upsampler)

    def source(self):
        return self._source

    @torch.no_grad()
    def preview(self, module: UpsamplerModule, folder: Path, step: int, num: int = 8) -> dict:
        """Clean eval renders, downsampled and upsampled again: PSNR against bicubic, and a
        grid of (bicubic, upsampler, truth) triples."""
        if self.cfg.data.source != "shapes":
            return {}
        up = module.upsampler
        truth = to_tensor(np.stack([shapes.render(it.scene, self.cfg.data.image_size)
                                    for it in shapes.eval_split(num)]))
        low = F.interpolate(truth, scale_factor=1 / up.cfg.factor, mode="area")
        out = up.sample(low, generator=torch.Generator().manual_seed(0))
        bicubic = upsample(low, up.cfg.factor)
        folder.mkdir(parents=True, exist_ok=True)
        triples = to_uint8(torch.stack([bicubic, out, truth], dim=1).flatten(0, 1))
        image_grid(triples, ["bicubic", "upsampler", "truth"] * num, cols=6).save(folder / f"step-{step:06d}.png")
        return {"psnr": psnr(out, truth), "psnr_bicubic": psnr(bicubic, truth)}

    def export(self, module: UpsamplerModule, folder: Path) -> None:
        DalleTwoPipeline(None, upsamplers=[module.upsampler]).save_pretrained(folder)
