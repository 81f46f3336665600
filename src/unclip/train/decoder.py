"""The decoder stage: CLIP image embeddings (computed on the fly by a frozen CLIP) -> images."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unclip.config import DataConfig, TrainConfig
from unclip.data import shapes
from unclip.data.embeddings import encode_image, encode_text
from unclip.data.stream import make_source
from unclip.data.transforms import to_tensor, to_uint8
from unclip.models.clip import ClipEncoder
from unclip.models.decoder import Decoder, DecoderConfig
from unclip.models.decoder.decoder import TEXT_KEYS
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline
from unclip.plot import image_grid


@dataclass
class DecoderStageConfig:
    clip: str = "runs/clip/model"  # the CLIP whose image embeddings the decoder draws
    init: str | None = None  # start from the decoder of this model folder (continue training)
    model: DecoderConfig = field(default_factory=DecoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class DecoderModule(nn.Module):
    """forward(batch) -> the decoder's loss. The frozen CLIP embeds each batch's images (at its
    own resolution) and captions; the target is the image area-downsampled to the base size."""

    def __init__(self, decoder: Decoder, clip: ClipEncoder):
        super().__init__()
        self.decoder, self.clip = decoder, clip.requires_grad_(False)
        for k, v in encode_text(clip, [""]).items():  # the empty caption: the text null
            self.register_buffer(f"null_{k}", v, persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen, always
        return self

    def text_null(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, f"null_{k}") for k in TEXT_KEYS}

    def condition(self, pixels: torch.Tensor, captions: list[str]) -> dict:
        cond = {"image_embed": encode_image(self.clip, pixels)}
        if self.decoder.cfg.use_text:
            cond.update(encode_text(self.clip, captions))
        return cond

    def forward(self, batch: dict) -> torch.Tensor:
        pixels = batch["pixels"]
        x0 = F.interpolate(pixels, size=self.decoder.cfg.image_size, mode="area")
        return self.decoder.loss(x0, self.condition(pixels, batch["captions"]), self.text_null())


class DecoderStage:
    name = "decoder"

    def __init__(self, cfg: DecoderStageConfig):
        torch.manual_seed(cfg.train.seed)
        self.cfg, self.data_workers = cfg, cfg.data.num_workers
        clip = ClipEncoder.from_pretrained(cfg.clip).eval()
        self._source = make_source(replace(cfg.data, image_size=clip.image_size))
        decoder = Decoder.from_config(cfg.model, clip.embed_dim)
        if cfg.init:
            init = DalleTwoPipeline.from_pretrained(cfg.init)
            init.require("decoder")
            decoder.load_state_dict(init.decoder.state_dict())
        self.module = DecoderModule(decoder, clip)

    def source(self):
        return self._source

    @torch.no_grad()
    def preview(self, module: DecoderModule, folder: Path, step: int, num: int = 8) -> dict:
        """Eight eval prompts drawn from their true scenes' CLIP embeddings: a grid of
        (truth, sample) pairs, and the mean CLIP cosine between sample and truth."""
        items = shapes.eval_split(num)
        truth = to_tensor(np.stack([shapes.render(it.scene, module.clip.image_size) for it in items]))
        cond = module.condition(truth, [it.prompt for it in items])
        images = module.decoder.sample(cond, module.text_null(), generator=torch.Generator().manual_seed(0))
        cosine = (encode_image(module.clip, images) * cond["image_embed"]).sum(-1).mean().item()
        small = F.interpolate(truth, size=images.shape[-1], mode="area")
        pairs = to_uint8(torch.stack([small, images], dim=1).flatten(0, 1))
        folder.mkdir(parents=True, exist_ok=True)
        grid = image_grid(pairs, [s for it in items for s in ("truth", it.prompt)], cols=4)
        grid.save(folder / f"step-{step:06d}.png")
        return {"clip_cosine": cosine}

    def export(self, module: DecoderModule, folder: Path) -> None:
        DalleTwoPipeline(module.clip, decoder=module.decoder).save_pretrained(folder)
