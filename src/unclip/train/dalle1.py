"""The DALL-E 1 stages: the dVAE on images, then the transformer on captions and the frozen
dVAE's codes of their images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from unclip.config import DataConfig, TrainConfig, check
from unclip.data import shapes
from unclip.data.stream import make_source
from unclip.data.transforms import to_tensor, to_uint8
from unclip.models.clip import ClipEncoder
from unclip.models.dalle1.dvae import DVAE, DVAEConfig
from unclip.models.dalle1.transformer import DalleConfig, DalleTransformer
from unclip.pipelines.dalle1 import DalleOnePipeline
from unclip.plot import image_grid
from unclip.tasks.evaluate.image_metrics import psnr


@dataclass
class DVAEStageConfig:
    init: str | None = None  # start from the dVAE of this DALL-E 1 folder (continue, or fine-tune the decoder)
    model: DVAEConfig = field(default_factory=DVAEConfig)
    data: DataConfig = field(default_factory=DataConfig)  # image_size is the dVAE's
    train: TrainConfig = field(default_factory=TrainConfig)


class DVAEModule(nn.Module):
    """forward(batch) -> the dVAE loss at the current step's temperature and KL weight."""

    def __init__(self, dvae: DVAE, cfg: DVAEConfig):
        super().__init__()
        self.dvae, self.cfg, self.step = dvae, cfg, 0
        if cfg.freeze_encoder:
            dvae.encoder.requires_grad_(False)  # the codes stay as they are; the codebook's vectors may move

    def set_step(self, step: int) -> None:
        self.step = step

    def forward(self, batch: dict) -> torch.Tensor:
        if self.cfg.freeze_encoder:
            return self.dvae.decoder_loss(batch["pixels"])
        return self.dvae.loss(batch["pixels"], self.cfg.temperature(self.step), self.cfg.kl(self.step),
                              hard=self.cfg.straight_through)[0]


def eval_renders(size: int, num: int = 64) -> torch.Tensor:
    return to_tensor(np.stack([shapes.render(it.scene, size) for it in shapes.eval_split(num)]))


class DVAEStage:
    name = "dvae"

    def __init__(self, cfg: DVAEStageConfig):
        torch.manual_seed(cfg.train.seed)
        m = cfg.model
        check(cfg.data.image_size % 2 ** (len(m.block_out_channels) - 1) == 0, "data.image_size",
              "must be divisible by the encoder's downsampling")
        self.cfg, self.data_workers = cfg, cfg.data.num_workers
        dvae = DVAE(image_size=cfg.data.image_size, codebook_size=m.codebook_size, code_dim=m.code_dim,
                    block_out_channels=tuple(m.block_out_channels), layers_per_block=m.layers_per_block,
                    norm_num_groups=32)
        if cfg.init:
            init = DalleOnePipeline.from_pretrained(cfg.init)
            init.require("dvae")
            dvae.load_state_dict(init.dvae.state_dict())
        self.module = DVAEModule(dvae, m)
        self._source = make_source(cfg.data)

    def source(self):
        return self._source

    @torch.no_grad()
    def preview(self, module: DVAEModule, folder: Path, step: int) -> dict:
        """Hard-code reconstructions of eval renders: PSNR, codes in use, and a grid."""
        dvae = module.dvae
        truth = eval_renders(dvae.config.image_size)
        codes = dvae.encode(truth)
        out = dvae.decode(codes).clamp(-1, 1)
        folder.mkdir(parents=True, exist_ok=True)
        pairs = to_uint8(torch.stack([truth[:12], out[:12]], dim=1).flatten(0, 1))
        image_grid(pairs, ["truth", "dVAE"] * 12, cols=6).save(folder / f"step-{step:06d}.png")
        return {"psnr": psnr(out, truth), "codes_used": int(codes.unique().numel())}

    def export(self, module: DVAEModule, folder: Path) -> None:
        DalleOnePipeline(None, dvae=module.dvae).save_pretrained(folder)


@dataclass
class DalleStageConfig:
    dvae: str = "runs/dvae/model"  # a folder holding the trained dVAE
    clip: str = "src/unclip/assets/shapes/clip"  # its tokenizer writes the captions; it reranks
    init: str | None = None  # start from the transformer of this DALL-E 1 folder (continue training)
    model: DalleConfig = field(default_factory=DalleConfig)
    data: DataConfig = field(default_factory=DataConfig)  # image_size: set to the dVAE's
    train: TrainConfig = field(default_factory=TrainConfig)


class DalleModule(nn.Module):
    """forward(batch) -> the transformer's weighted loss on the batch's captions and codes."""

    def __init__(self, transformer: DalleTransformer, dvae: DVAE, clip: ClipEncoder):
        super().__init__()
        self.transformer, self.dvae = transformer, dvae.requires_grad_(False).eval()
        self.tokenize = clip.tokenize  # the CLIP's tokenizer only: a method, so not a submodule

    def train(self, mode: bool = True):
        super().train(mode)
        self.dvae.eval()  # frozen: its codes are the data
        return self

    def forward(self, batch: dict) -> torch.Tensor:
        enc = self.tokenize(batch["captions"])
        codes = self.dvae.encode(batch["pixels"])
        device = batch["pixels"].device
        return self.transformer.loss(enc["input_ids"].to(device), enc["attention_mask"].bool().to(device), codes)[0]


class DalleStage:
    name = "dalle"

    def __init__(self, cfg: DalleStageConfig):
        torch.manual_seed(cfg.train.seed)
        self.cfg, self.data_workers = cfg, cfg.data.num_workers
        dvae = DalleOnePipeline.from_pretrained(cfg.dvae).dvae
        if dvae is None:
            raise ValueError(f"{cfg.dvae} holds no dVAE (train one with `unclip train dvae`)")
        self.clip = ClipEncoder.from_pretrained(cfg.clip).eval()
        self.dvae = dvae
        check(cfg.data.image_size == dvae.config.image_size, "data.image_size",
              f"must be the dVAE's image size, {dvae.config.image_size}")
        transformer = DalleTransformer(cfg.model, text_vocab=len(self.clip.tokenizer), text_len=self.clip.max_length,
                                       image_vocab=dvae.config.codebook_size, image_len=dvae.grid ** 2)
        if cfg.init:
            init = DalleOnePipeline.from_pretrained(cfg.init)
            init.require("transformer")
            transformer.load_state_dict(init.transformer.state_dict())
        self.module = DalleModule(transformer, dvae, self.clip)
        self._source = make_source(cfg.data)

    def source(self):
        return self._source

    def pipeline(self, module: DalleModule) -> DalleOnePipeline:
        return DalleOnePipeline(self.clip, self.dvae, module.transformer)

    @torch.no_grad()
    def preview(self, module: DalleModule, folder: Path, step: int, num: int = 12) -> dict:
        """A grid of the first eval prompts (2 candidates each, CLIP-reranked, bicubic to 2x)."""
        prompts = [it.prompt for it in shapes.eval_split(num)]
        gens = [torch.Generator().manual_seed(i) for i in range(num)]
        images = self.pipeline(module)(prompts, generator=gens, rerank=2, upscale="bicubic", output_type="uint8").images
        folder.mkdir(parents=True, exist_ok=True)
        image_grid(images, prompts, cols=6).save(folder / f"step-{step:06d}.png")
        return {}

    def export(self, module: DalleModule, folder: Path) -> None:
        self.pipeline(module).save_pretrained(folder)
