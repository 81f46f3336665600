"""Fine-tuning Karlo's prior or decoder on your own images and captions, in full or with LoRA.

`unclip train decoder --config configs/karlo/decoder_finetune.yaml --init KARLO_DIR
--data.path DATA --train.out_dir RUN` (a config with `kind: karlo`): the same training loop
as every stage, on the objective each Karlo component was trained with:

- decoder: epsilon with a learned variance range, improved DDPM's hybrid loss
  (`diffusion.objectives.hybrid_loss`); the CLIP image embedding dropped for the text_proj's
  learned null 10% of the time, the caption for the empty one 30% (Karlo's configs);
- prior: x0 prediction of the standardised image embedding (`clip_mean` / `clip_std`), MSE;
  the caption dropped 20% of the time.

Conditions come from Karlo's own CLIP, frozen: the text tower of the folder, the image tower of
a variations folder (`image_encoder`, or the folder's own). Image size, conditioning and noise
schedule come from the folder, so one preset fine-tunes Karlo's 3.5 GB weights and a tiny
random folder in Karlo's layout alike. `RUN/model` is a Karlo folder with the trained
component replaced; with `lora.rank` > 0 only adapters on the attention and projection layers
train, and the export holds them (`*_lora/`, loaded with the folder) or, with `lora.merge`,
merged weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unclip.config import DataConfig, TrainConfig, check
from unclip.data import shapes
from unclip.data.stream import make_source
from unclip.diffusion.objectives import hybrid_loss, q_sample
from unclip.pipelines.karlo.pipeline import KarloPipeline
from unclip.plot import image_grid
from unclip.train.finetune import LoraSettings, add_lora, export_lora, frozen_dtype, prior_loss

# LoRA's targets: attention projections and the conditioning's linear projections
LORA_TARGETS = {
    "decoder": ["to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj"],
    "text_proj": ["clip_image_embeddings_project_to_time_embeddings", "clip_extra_context_tokens_proj",
                  "embedding_proj", "encoder_hidden_states_proj"],
    "prior": ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "embedding_proj", "encoder_hidden_states_proj"],
}


@dataclass
class KarloFinetuneConfig:
    kind: Literal["karlo"] = "karlo"
    init: str = ""  # the Karlo folder to start from (karlo-v1-alpha's layout)
    image_encoder: str | None = None  # a variations folder whose image tower embeds the images
    image_drop_prob: float = 0.1  # decoder: Karlo's clip_emb_drop
    text_drop_prob: float = 0.3  # decoder 0.3, prior 0.2 (Karlo's text_drop)
    gradient_checkpointing: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        check(bool(self.init), "init", "is required: the Karlo folder to fine-tune (--init DIR)")
        for name in ("image_drop_prob", "text_drop_prob"):
            check(0 <= getattr(self, name) < 1, name, "must be in [0, 1)")


class KarloModule(nn.Module):
    """forward(batch) -> the loss of the component being trained; Karlo's CLIP frozen inside."""

    def __init__(self, pipe: KarloPipeline, component: str, cfg: KarloFinetuneConfig):
        super().__init__()
        self.component, self.cfg = component, cfg
        self.text_encoder = pipe.text_encoder.requires_grad_(False)
        self.image_encoder = pipe.image_encoder.requires_grad_(False)
        self.tokenizer, self.feature_extractor = pipe.tokenizer, pipe.feature_extractor
        self.decoder, self.text_proj, self.prior = pipe.decoder, pipe.text_proj, pipe.prior
        self.schedulers = {"decoder": pipe.decoder_scheduler, "prior": pipe.prior_scheduler}
        trained = [self.decoder, self.text_proj] if component == "decoder" else [self.prior]
        for net in (self.decoder, self.text_proj, self.prior):
            if net is not None:
                net.requires_grad_(any(net is t for t in trained) and cfg.lora.rank == 0)
        if cfg.lora.rank > 0:
            for name, net in (("decoder", self.decoder), ("text_proj", self.text_proj), ("prior", self.prior)):
                if any(net is t for t in trained):
                    add_lora(net, LORA_TARGETS[name], cfg.lora)
        if cfg.gradient_checkpointing:
            for net in trained:
                if hasattr(net, "enable_gradient_checkpointing"):
                    net.enable_gradient_checkpointing()
        mean, std = self.feature_extractor.image_mean, self.feature_extractor.image_std
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.text_encoder.eval()  # frozen, always
        self.image_encoder.eval()
        return self

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> dict:
        tok = self.tokenizer(list(captions), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        device = self.pixel_mean.device
        out = self.text_encoder(tok.input_ids.to(device))
        return {"text_embed": out.text_embeds.float(), "text_encodings": out.last_hidden_state.float(),
                "mask": tok.attention_mask.bool().to(device)}

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Karlo's CLIP image embeddings (B, D), unnormalised, of [-1, 1] square images: the
        feature extractor's resize and normalisation done on tensors."""
        size = self.image_encoder.config.image_size
        x = F.interpolate((pixels.float() + 1) / 2, size=(size, size), mode="bicubic", antialias=True)
        x = (x.clamp(0, 1) - self.pixel_mean) / self.pixel_std
        return self.image_encoder(x.to(self.image_encoder.dtype)).image_embeds.float()

    def _drop(self, value: torch.Tensor, null: torch.Tensor, p: float) -> torch.Tensor:
        keep = torch.rand(value.shape[0], device=value.device) >= p
        return torch.where(keep.view(-1, *([1] * (value.dim() - 1))), value, null.expand_as(value).to(value.dtype))

    def condition(self, pixels: torch.Tensor, captions: list[str]) -> tuple[dict, torch.Tensor]:
        """(text condition with captions dropped, the CLIP image embeddings)."""
        text, null = self.encode_text(captions), self.encode_text([""])
        p = self.cfg.text_drop_prob
        keep = torch.rand(len(captions), device=pixels.device) >= p
        for k in text:
            shape = (-1, *([1] * (text[k].dim() - 1)))
            text[k] = torch.where(keep.view(shape), text[k], null[k].expand_as(text[k]))
        return text, self.encode_images(pixels)

    def forward(self, batch: dict) -> torch.Tensor:
        pixels = batch["pixels"]
        text, image_embed = self.condition(pixels, batch["captions"])
        if self.component == "prior":
            return self.prior_loss(image_embed, text)
        return self.decoder_loss(pixels, image_embed, text)

    def prior_loss(self, image_embed: torch.Tensor, text: dict) -> torch.Tensor:
        return prior_loss(self.prior, image_embed, text, self.schedulers["prior"].alphas_cumprod)

    def decoder_loss(self, pixels: torch.Tensor, image_embed: torch.Tensor, text: dict) -> torch.Tensor:
        size = self.decoder.config.sample_size
        x0 = F.interpolate(pixels.float(), size=(size, size), mode="area")
        null = self.text_proj.null_image_embed()
        dtype = self.decoder.dtype
        z = self._drop(image_embed.to(dtype), null.to(dtype), self.cfg.image_drop_prob)
        tokens, mask, time_add = self.text_proj({"image_embed": z, "text_embed": text["text_embed"].to(dtype),
                                                 "text_encodings": text["text_encodings"].to(dtype),
                                                 "mask": text["mask"]})
        abar = self.schedulers["decoder"].alphas_cumprod
        t = torch.randint(0, len(abar), (x0.shape[0],)).to(x0.device)
        noise = torch.randn(x0.shape).to(x0.device)
        x_t = q_sample(x0, t, noise, abar)
        out = self.decoder(sample=x_t.to(dtype), timestep=t, encoder_hidden_states=tokens, class_labels=time_add,
                           attention_mask=mask).sample
        return hybrid_loss(out, x0, x_t, t, noise, abar)


class KarloStage:
    """Fine-tune one component of a Karlo folder (`component`: "decoder" or "prior")."""

    component = "decoder"

    def __init__(self, cfg: KarloFinetuneConfig):
        torch.manual_seed(cfg.train.seed)
        self.cfg = cfg
        self.name = f"karlo {self.component}"
        pipe = KarloPipeline.from_pretrained(cfg.init, image_encoder=cfg.image_encoder,
                                             torch_dtype=frozen_dtype(cfg.lora, cfg.train.mixed_precision))
        pipe.require("image_encoder", *(("prior",) if self.component == "prior" else ()))
        if pipe.prior_kind == "eclipse":
            raise ValueError("fine-tuning trains Karlo's own components; leave out --prior-model")
        size = max(pipe.base_size, pipe.image_encoder.config.image_size)
        self.data_workers = cfg.data.num_workers
        self._source = make_source(replace(cfg.data, image_size=size))
        self.pipe = pipe
        self.module = KarloModule(pipe, self.component, cfg)
        trainable = sum(p.numel() for p in self.module.parameters() if p.requires_grad)
        nets = [pipe.prior] if self.component == "prior" else [pipe.decoder, pipe.text_proj]
        total = sum(p.numel() for net in nets for n, p in net.named_parameters() if "lora_" not in n)
        print(f"fine-tuning Karlo's {self.component}: {trainable:,} trainable parameters "
              f"({'LoRA rank ' + str(cfg.lora.rank) if cfg.lora.rank else 'full'}; the component has {total:,})",
              flush=True)

    def source(self):
        return self._source

    def _export_pipe(self, module: KarloModule) -> KarloPipeline:
        """The pipeline on `module`'s networks, the frozen towers too: a CPU copy of the averaged
        weights (previews, exports) must not meet towers training left on a GPU."""
        pipe = self.pipe
        pipe.decoder, pipe.text_proj, pipe.prior = module.decoder, module.text_proj, module.prior
        pipe.text_encoder, pipe.image_encoder = module.text_encoder, module.image_encoder
        return pipe

    @torch.no_grad()
    def preview(self, module: KarloModule, folder: Path, step: int, num: int = 4) -> dict:
        """Images for four eval prompts, drawn from their true scenes' embeddings (decoder) or
        through the prior (prior), with Karlo's fast sampler settings."""
        pipe = self._export_pipe(module)
        items = shapes.eval_split(num)
        prompts = [it.prompt for it in items]
        kw = {"decoder_num_inference_steps": 10, "super_res_num_inference_steps": 2, "output_type": "uint8",
              "generator": torch.Generator().manual_seed(0)}
        if self.component == "decoder":
            truth = torch.from_numpy(np.stack([shapes.render(it.scene, 64) for it in items])).permute(0, 3, 1, 2)
            z = module.encode_images(truth.float().div(127.5).sub(1).to(module.pixel_mean.device))
            images = pipe(prompts, image_embeddings=z, **kw).images
        else:
            images = pipe(prompts, prior_num_inference_steps=10, **kw).images
        folder.mkdir(parents=True, exist_ok=True)
        image_grid(images, prompts, cols=num).save(folder / f"step-{step:06d}.png")
        return {}

    def export(self, module: KarloModule, folder: Path) -> None:
        """The Karlo folder with the trained component; with LoRA, the adapters saved apart
        (`<component>_lora/`, which the folder loads with) or merged into the weights.
        `module` is the loop's EMA copy, free to change."""
        pipe = self._export_pipe(module)
        if self.cfg.lora.rank > 0:
            nets = {"decoder": pipe.decoder, "text_proj": pipe.text_proj} if self.component == "decoder" \
                else {"prior": pipe.prior}
            for name, net in nets.items():
                export_lora(net, Path(folder) / f"{name}_lora", self.cfg.lora.merge)
        pipe.save_pretrained(folder)


class KarloDecoderStage(KarloStage):
    component = "decoder"


class KarloPriorStage(KarloStage):
    component = "prior"
