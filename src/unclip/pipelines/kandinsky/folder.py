"""Kandinsky 2.2's diffusers folders, read component by component.

Kandinsky 2.2 is unCLIP on a latent decoder, published as separate folders:
`kandinsky-community/kandinsky-2-2-prior` (`KandinskyV22PriorPipeline`: prior/ image_encoder/
text_encoder/ tokenizer/ scheduler/ image_processor/, CLIP ViT-bigG towers), and the decoders
`kandinsky-2-2-decoder` (`KandinskyV22Pipeline`: unet/ scheduler/ movq/) and
`kandinsky-2-2-decoder-inpaint` (`KandinskyV22InpaintPipeline`: the same with a 9-channel unet:
latent, masked image latent, mask). ECLIPSE's Kandinsky prior (`ECLIPSE-Community/
ECLIPSE_KandinskyV22_Prior`) is one network folder that replaces prior/ and uses the prior
folder's towers. Every component is loaded by the class assigned here (pipelines.components).
"""

from __future__ import annotations

from pathlib import Path

import torch

from unclip.pipelines.components import INDEX, load_component, read_index

PRIOR, DECODER, INPAINT = "KandinskyV22PriorPipeline", "KandinskyV22Pipeline", "KandinskyV22InpaintPipeline"
LAYOUT = {
    PRIOR: ("prior", "image_encoder", "text_encoder", "tokenizer", "scheduler", "image_processor"),
    DECODER: ("unet", "scheduler", "movq"),
    INPAINT: ("unet", "scheduler", "movq"),
}
# The schedulers each folder may name (the loops here are diffusers' for these).
SCHEDULERS = {PRIOR: ("UnCLIPScheduler",), DECODER: ("DDPMScheduler", "DDIMScheduler", "UnCLIPScheduler"),
              INPAINT: ("DDPMScheduler", "DDIMScheduler", "UnCLIPScheduler")}


def folder_kind(path: str | Path) -> str | None:
    """PRIOR, DECODER or INPAINT for a Kandinsky 2.2 folder, None for any other folder."""
    index = read_index(path)
    name = None if index is None else index.get("_class_name")
    return name if name in LAYOUT else None


def _class(name: str, scheduler: str | None = None):
    """The class of each component: nothing here comes from the folder's index."""
    import diffusers
    import transformers

    if name == "scheduler":
        return getattr(diffusers, scheduler)
    if name == "image_processor":
        # The PIL processor: the default one needs torchvision, which this project never installs.
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
        return CLIPImageProcessorPil
    return {"prior": diffusers.PriorTransformer, "unet": diffusers.UNet2DConditionModel, "movq": diffusers.VQModel,
            "text_encoder": transformers.CLIPTextModelWithProjection,
            "image_encoder": transformers.CLIPVisionModelWithProjection,
            "tokenizer": transformers.CLIPTokenizer}[name]


def _scheduler_name(root: Path, kind: str) -> str:
    import json

    config = root / "scheduler" / "scheduler_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{root}: scheduler/scheduler_config.json is missing")
    name = json.loads(config.read_text()).get("_class_name")
    if name not in SCHEDULERS[kind]:
        raise ValueError(f"{root}: scheduler {name!r} is not one unclip samples with here "
                         f"({', '.join(SCHEDULERS[kind])})")
    return name


def load_folder(path: str | Path, dtype: torch.dtype = torch.float32, expect: tuple[str, ...] = (DECODER, INPAINT),
                skip: tuple[str, ...] = ()) -> tuple[str, dict]:
    """(kind, {component: loaded object}) for a Kandinsky 2.2 folder of one of the `expect` kinds."""
    root = Path(path)
    index = read_index(root)
    if index is None:
        raise FileNotFoundError(f"not a diffusers pipeline folder (no {INDEX}): {root}")
    kind = index.get("_class_name")
    if kind not in expect:
        wanted = " or ".join(expect)
        hint = " (a prior folder: give it as --prior-model, and a decoder as --model)" if kind == PRIOR else ""
        raise ValueError(f"{root / INDEX} describes a {kind!r}; expected a {wanted} folder{hint}")
    scheduler = _scheduler_name(root, kind)
    parts = {name: load_component(root, name, _class(name, scheduler), dtype)
             for name in LAYOUT[kind] if name not in skip}
    for name in ("unet", "prior"):  # LoRA adapters a fine-tuning run saved beside the network
        adapters = root / f"{name}_lora"
        if adapters.is_dir() and name in parts:
            parts[name].load_lora_adapter(str(adapters), prefix=None, use_safetensors=True,
                                          weight_name="pytorch_lora_weights.safetensors")
    return kind, parts
