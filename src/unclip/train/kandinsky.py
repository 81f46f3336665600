"""Fine-tuning Kandinsky 2.2's decoder or prior on your own images and captions, in full or with LoRA.

`unclip train decoder|prior --config configs/kandinsky/{decoder,prior}_finetune.yaml --init DECODER
--prior-model PRIOR --data.path DATA` (a config with `kind: kandinsky`), in the one training loop:

- decoder: epsilon of the MoVQ latents (MoVQ frozen), conditioned on the prior folder's CLIP image
  embedding of the image, which is replaced by the all-zero image's embedding 10% of the time
  (the decoder's unconditional input at sampling); with a learned-variance scheduler the hybrid
  loss, else MSE (diffusers' Kandinsky 2.2 training scripts);
- prior: x0 prediction of the standardised image embedding (MSE), the caption dropped 20%.

Both CLIP towers stay frozen. `RUN/model` is a folder in Kandinsky's layout (the decoder folder,
or the prior folder) with the trained network replaced, which diffusers' own pipelines load; with
`lora.rank` > 0 only adapters train, exported beside the network (`unet_lora/`, `prior_lora/`,
loaded with the folder) or, with `lora.merge`, merged into its weights.
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
from unclip.models.clip import ClipTowers
from unclip.pipelines.diffusers_order import encode_prompt
from unclip.pipelines.kandinsky import KandinskyPipeline
from unclip.plot import image_grid
from unclip.train.finetune import LoraSettings, add_lora, export_lora, frozen_dtype, prior_loss

LORA_TARGETS = {
    "unet": ["to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj"],
    "prior": ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "embedding_proj", "encoder_hidden_states_proj"],
}


@dataclass
class KandinskyFinetuneConfig:
    kind: Literal["kandinsky"] = "kandinsky"
    init: str = ""  # the decoder folder to start from (kandinsky-2-2-decoder's layout), or its Hub id
    prior_model: str = ""  # the prior folder (kandinsky-2-2-prior's layout): CLIP towers, and the prior
    image_drop_prob: float = 0.1  # decoder: the image embedding replaced by the zero image's
    text_drop_prob: float = 0.2  # prior: the caption replaced by the empty one
    gradient_checkpointing: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        check(bool(self.init), "init", "is required: the Kandinsky 2.2 decoder folder to fine-tune (--init DIR)")
        check(bool(self.prior_model), "prior_model", "is required: the Kandinsky 2.2 prior folder (--prior-model DIR)")
        for name in ("image_drop_prob", "text_drop_prob"):
            check(0 <= getattr(self, name) < 1, name, "must be in [0, 1)")


class KandinskyModule(nn.Module):
    """forward(batch) -> the loss of the network being trained; CLIP towers and MoVQ frozen inside."""

    def __init__(self, pipe: KandinskyPipeline, component: str, cfg: KandinskyFinetuneConfig):
        super().__init__()
        self.component, self.cfg = component, cfg
        self.tokenizer, self.image_processor = pipe.tokenizer, pipe.image_processor
        self.text_encoder = pipe.text_encoder.requires_grad_(False)
        self.image_encoder = pipe.image_encoder.requires_grad_(False)
        self.movq = pipe.movq.requires_grad_(False)
        self.unet, self.prior = pipe.unet, pipe.prior
        trained = self.unet if component == "decoder" else self.prior
        other = self.prior if component == "decoder" else self.unet
        other.requires_grad_(False)
        trained.requires_grad_(cfg.lora.rank == 0)
        if cfg.lora.rank > 0:
            add_lora(trained, LORA_TARGETS["unet" if component == "decoder" else "prior"], cfg.lora)
        if cfg.gradient_checkpointing and hasattr(trained, "enable_gradient_checkpointing"):
            trained.enable_gradient_checkpointing()
        self.schedulers = {"decoder": pipe.scheduler, "prior": pipe.prior_scheduler}

    def train(self, mode: bool = True):
        super().train(mode)
        for frozen in (self.text_encoder, self.image_encoder, self.movq):
            frozen.eval()
        return self

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> dict:
        return encode_prompt(self.tokenizer, self.text_encoder, captions, self.text_encoder.device)

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """The prior folder's CLIP image embeddings (B, D) of [-1, 1] square images."""
        towers = ClipTowers(self.text_encoder, self.image_encoder, self.tokenizer, self.image_processor)
        return towers.embed_image(pixels).float()

    @torch.no_grad()
    def zero_embed(self, rows: int) -> torch.Tensor:
        side = self.image_encoder.config.image_size
        zero = torch.zeros(1, 3, side, side, device=self.image_encoder.device, dtype=self.image_encoder.dtype)
        return self.image_encoder(zero).image_embeds.float().repeat(rows, 1)

    def forward(self, batch: dict) -> torch.Tensor:
        pixels, captions = batch["pixels"], batch["captions"]
        image_embed = self.encode_images(pixels)
        if self.component == "prior":
            return self.prior_loss(image_embed, captions)
        return self.decoder_loss(pixels, image_embed)

    def prior_loss(self, image_embed: torch.Tensor, captions: list[str]) -> torch.Tensor:
        net = self.prior
        keep = torch.rand(len(captions)) >= self.cfg.text_drop_prob
        text = self.encode_text([c if k else "" for c, k in zip(captions, keep.tolist())])
        return prior_loss(net, image_embed, text, self.schedulers["prior"].alphas_cumprod)

    def decoder_loss(self, pixels: torch.Tensor, image_embed: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x0 = self.movq.encode(pixels.to(self.movq.dtype)).latents.float()
            zero = self.zero_embed(len(image_embed))
        drop = (torch.rand(len(image_embed), device=image_embed.device) < self.cfg.image_drop_prob)[:, None]
        z = torch.where(drop, zero, image_embed)
        abar = self.schedulers["decoder"].alphas_cumprod.to(x0.device)
        t = torch.randint(0, len(abar), (x0.shape[0],)).to(x0.device)
        noise = torch.randn(x0.shape).to(x0.device)
        x_t = q_sample(x0, t, noise, abar)
        dtype = self.unet.dtype
        out = self.unet(sample=x_t.to(dtype), timestep=t, encoder_hidden_states=None,
                        added_cond_kwargs={"image_embeds": z.to(dtype)}, return_dict=False)[0].float()
        if getattr(self.schedulers["decoder"].config, "variance_type", None) in ("learned", "learned_range"):
            return hybrid_loss(out, x0, x_t, t, noise, abar)
        return F.mse_loss(out[:, :x0.shape[1]], noise)


class KandinskyStage:
    """Fine-tune the decoder's UNet or the prior of Kandinsky 2.2 folders."""

    component = "decoder"

    def __init__(self, cfg: KandinskyFinetuneConfig):
        torch.manual_seed(cfg.train.seed)
        self.cfg = cfg
        self.name = f"kandinsky {self.component}"
        pipe = KandinskyPipeline.from_pretrained(cfg.init, prior_model=cfg.prior_model,
                                                 torch_dtype=frozen_dtype(cfg.lora, cfg.train.mixed_precision))
        if pipe.prior_kind != "diffusion":
            raise ValueError("fine-tuning trains Kandinsky's own prior: give its prior folder alone as --prior-model")
        if pipe.decoder_kind != "KandinskyV22Pipeline" and self.component == "decoder":
            raise ValueError("fine-tuning trains the base decoder (kandinsky-2-2-decoder), not the inpaint decoder")
        self.data_workers = cfg.data.num_workers
        size = pipe.default_size if self.component == "decoder" else pipe.image_encoder.config.image_size
        self._source = make_source(replace(cfg.data, image_size=size))
        self.pipe = pipe
        self.module = KandinskyModule(pipe, self.component, cfg)
        net = pipe.unet if self.component == "decoder" else pipe.prior
        trainable = sum(p.numel() for p in self.module.parameters() if p.requires_grad)
        total = sum(p.numel() for n, p in net.named_parameters() if "lora_" not in n)
        print(f"fine-tuning Kandinsky 2.2's {self.component}: {trainable:,} trainable parameters "
              f"({'LoRA rank ' + str(cfg.lora.rank) if cfg.lora.rank else 'full'}; the network has {total:,})",
              flush=True)

    def source(self):
        return self._source

    def _export_pipe(self, module: KandinskyModule) -> KandinskyPipeline:
        """The pipeline on `module`'s networks, every one of them: a CPU copy of the averaged weights
        (previews, exports) must not meet the towers training left on a GPU."""
        for name in ("unet", "prior", "text_encoder", "image_encoder", "movq"):
            setattr(self.pipe, name, getattr(module, name))
        return self.pipe

    @torch.no_grad()
    def preview(self, module: KandinskyModule, folder: Path, step: int, num: int = 4) -> dict:
        """Images for four eval prompts: from their true scenes' embeddings (decoder) or through
        the prior (prior), in 10 decoder steps."""
        pipe = self._export_pipe(module)
        items = shapes.eval_split(num)
        prompts = [it.prompt for it in items]
        kw = {"num_inference_steps": 10, "output_type": "uint8", "generator": torch.Generator().manual_seed(0)}
        if self.component == "decoder":
            truth = torch.from_numpy(np.stack([shapes.render(it.scene, 64) for it in items])).permute(0, 3, 1, 2)
            images = pipe(image_embeddings=module.encode_images(truth.float().div(127.5).sub(1)), **kw).images
        else:
            images = pipe(prompts, prior_num_inference_steps=10, **kw).images
        folder.mkdir(parents=True, exist_ok=True)
        image_grid(images, prompts, cols=num).save(folder / f"step-{step:06d}.png")
        return {}

    def export(self, module: KandinskyModule, folder: Path) -> None:
        """The trained network's folder in Kandinsky's layout: the decoder folder, or the prior
        folder; LoRA adapters saved apart (loaded with the folder) or merged."""
        from unclip.pipelines.kandinsky.synthetic import write_decoder, write_prior

        pipe = self._export_pipe(module)
        name, net = ("unet", pipe.unet) if self.component == "decoder" else ("prior", pipe.prior)
        if self.cfg.lora.rank > 0:
            export_lora(net, Path(folder) / f"{name}_lora", self.cfg.lora.merge)
        if self.component == "decoder":
            write_decoder({"unet": pipe.unet, "scheduler": pipe.scheduler, "movq": pipe.movq}, folder)
        else:
            write_prior({"prior": pipe.prior, "image_encoder": pipe.image_encoder, "text_encoder": pipe.text_encoder,
                         "tokenizer": pipe.tokenizer, "scheduler": pipe.prior_scheduler,
                         "image_processor": pipe.image_processor}, folder)


class KandinskyDecoderStage(KandinskyStage):
    component = "decoder"


class KandinskyPriorStage(KandinskyStage):
    component = "prior"
