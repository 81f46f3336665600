"""What fine-tuning a published model's networks shares, whatever the family (train/karlo.py,
train/kandinsky.py): LoRA settings and adapters (peft, through diffusers' adapter API), their
export, and the diffusion prior's objective."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from unclip.config import check
from unclip.diffusion.objectives import training_loss


@dataclass
class LoraSettings:
    rank: int = 0  # 0: full fine-tuning
    alpha: float | None = None  # LoRA's scale numerator (default: the rank)
    merge: bool = False  # export merged weights instead of the base weights plus adapters

    def __post_init__(self):
        check(self.rank >= 0, "rank", "must be >= 0 (0: full fine-tuning)")


def add_lora(module: nn.Module, targets: list[str], settings: LoraSettings) -> None:
    """LoRA adapters (peft, through diffusers' adapter API) on the named linear layers present."""
    from peft import LoraConfig

    present = sorted({t for t in targets if any(n == t or n.endswith("." + t) for n, _ in module.named_modules())})
    module.add_adapter(LoraConfig(r=settings.rank, lora_alpha=settings.alpha or settings.rank,
                                  target_modules=present, init_lora_weights="gaussian"))
    for p in module.parameters():  # the adapters train in float32 whatever the frozen weights are in
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def frozen_dtype(settings: LoraSettings, mixed_precision: str) -> torch.dtype:
    """The dtype to load a published family's folders in for fine-tuning: bf16 when only LoRA
    adapters train under bf16 mixed precision (the frozen weights never change, and Kandinsky's
    4.9 B of them are 19.5 GB in float32), else float32."""
    from unclip.train.loop import resolved_precision

    return torch.bfloat16 if settings.rank > 0 and resolved_precision(mixed_precision) == "bf16" else torch.float32


def export_lora(net: nn.Module, folder: Path, merge: bool) -> None:
    """A trained network's adapters: merged into its weights, or saved to `folder` (loaded with the
    model folder) with the base weights left as they were."""
    if merge:
        net.fuse_lora()
    else:
        net.save_lora_adapter(folder)
    net.unload_lora()  # merged: the fused weights stay; otherwise the base weights


def prior_loss(net, image_embed: torch.Tensor, text: dict, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """A PriorTransformer's objective as Karlo and Kandinsky trained it: x0 prediction of the
    standardised image embedding (`clip_mean` / `clip_std`), MSE."""
    x0 = (image_embed - net.clip_mean.float()) / net.clip_std.float()

    def denoise(x_t, t):
        return net(x_t.to(net.dtype), timestep=t, proj_embedding=text["text_embed"].to(net.dtype),
                   encoder_hidden_states=text["text_encodings"].to(net.dtype),
                   attention_mask=text["mask"]).predicted_image_embedding.float()

    return training_loss(denoise, x0, alphas_cumprod, prediction_type="sample")
