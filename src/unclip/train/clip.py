"""The CLIP stage: a small transformers CLIPModel trained contrastively on captioned images."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from transformers import AutoTokenizer

from unclip.config import DataConfig, TrainConfig
from unclip.data.folder import ImageFolderSource
from unclip.data.stream import ShapesSource, make_source
from unclip.models.clip import ClipConfig, ClipEncoder, contrastive_loss
from unclip.models.tokenizer import train_tokenizer


@dataclass
class ClipStageConfig:
    model: ClipConfig = field(default_factory=ClipConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrained: str | None = None  # fine-tune a local Hugging Face CLIP folder instead
    tokenizer_captions: int = 20000  # captions drawn to train the tokenizer (shapes data)


class ContrastiveModule(nn.Module):
    """forward(batch) -> CLIP loss. With several processes the embeddings are all-gathered
    (with gradients), so the loss is over the global batch, as on one process."""

    def __init__(self, encoder: ClipEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, batch: dict) -> torch.Tensor:
        image_embed, text_embed = self.encoder(batch["pixels"], batch["captions"])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            from torch.distributed.nn.functional import all_gather

            image_embed, text_embed = torch.cat(all_gather(image_embed)), torch.cat(all_gather(text_embed))
        return contrastive_loss(image_embed, text_embed, self.encoder.model.logit_scale)


class ClipStage:
    name = "clip"

    def __init__(self, cfg: ClipStageConfig):
        self.cfg, self.data_workers = cfg, cfg.data.num_workers
        torch.manual_seed(cfg.train.seed)  # the same initial weights for the same config
        self._source = make_source(cfg.data)
        if cfg.pretrained:
            encoder = ClipEncoder.from_pretrained(cfg.pretrained).train()
        else:
            encoder = ClipEncoder.from_config(cfg.model, self._tokenizer())
        self.module = ContrastiveModule(encoder)

    def _tokenizer(self):
        """Trained on the data's captions once per run and kept, so resumes reuse it."""
        folder = Path(self.cfg.train.out_dir) / "tokenizer"
        if (folder / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(folder)
        src = self._source
        if isinstance(src, ImageFolderSource):
            captions = [e.caption for e in src.entries]
        else:
            assert isinstance(src, ShapesSource)
            captions = src.captions(self.cfg.tokenizer_captions)
        tok = train_tokenizer(captions, self.cfg.model.vocab_size, self.cfg.model.max_length)
        # Every process trains the same tokenizer; the folder appears whole (a rename), so no
        # process ever reads another's half-written files.
        tmp = folder.with_name(f".tokenizer.tmp{os.getpid()}")
        tok.save_pretrained(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process got there first with the same files
            shutil.rmtree(tmp)
        return tok

    def source(self):
        return self._source

    def preview(self, module: ContrastiveModule, folder: Path, step: int) -> dict:
        if self.cfg.data.source != "shapes":
            return {}
        from unclip.tasks.evaluate.clip_retrieval import retrieval_accuracy

        return {"retrieval_top1": retrieval_accuracy(module.encoder, num=100)["in_distribution"]["top1"]}

    def export(self, module: ContrastiveModule, folder: Path) -> None:
        module.encoder.save_pretrained(folder)
