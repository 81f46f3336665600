"""Karlo's diffusers folders, read component by component.

Kakao Brain published Karlo, the one public pretrained unCLIP, as two diffusers pipeline
folders: `kakaobrain/karlo-v1-alpha` (`UnCLIPPipeline`: text to image) and
`kakaobrain/karlo-v1-alpha-image-variations` (`UnCLIPImageVariationPipeline`: no prior, an
image tower instead). Their `model_index.json` names the classes to import, one of them from a
library called "unclip" (the old home of `UnCLIPTextProjModel`) that no longer exists; so every
component is loaded here by the class this module assigns it, never by a name the folder gives.
Weights load from safetensors only (no pickle), from local files only, and a folder's code is
never run. A component that is missing, unreadable or of the wrong shape is an error that
names it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from unclip.pipelines import components
from unclip.pipelines.components import ERRORS, INDEX, load_eclipse, read_index, weights_variant
from unclip.runtime.weights import check_weights, component_error

TEXT_TO_IMAGE, VARIATIONS = "UnCLIPPipeline", "UnCLIPImageVariationPipeline"
SCHEDULERS = ("prior_scheduler", "decoder_scheduler", "super_res_scheduler")
# The components of each kind of folder.
LAYOUT = {
    TEXT_TO_IMAGE: ("tokenizer", "text_encoder", "prior", "text_proj", "decoder", "super_res_first",
                    "super_res_last", "prior_scheduler", "decoder_scheduler", "super_res_scheduler"),
    VARIATIONS: ("tokenizer", "text_encoder", "image_encoder", "feature_extractor", "text_proj", "decoder",
                 "super_res_first", "super_res_last", "decoder_scheduler", "super_res_scheduler"),
}
# What each scheduler must say for the sampler here to be Karlo's (the rest we do not implement).
SCHEDULER_RULES = {
    "prior_scheduler": {"variance_type": ("fixed_small_log",), "prediction_type": ("sample", "epsilon")},
    "decoder_scheduler": {"variance_type": ("learned_range", "fixed_small_log"), "prediction_type": ("epsilon",)},
    "super_res_scheduler": {"variance_type": ("fixed_small_log",), "prediction_type": ("epsilon",)},
}


def folder_kind(path: str | Path) -> str | None:
    """TEXT_TO_IMAGE or VARIATIONS for a Karlo folder, None for a folder without `model_index.json`."""
    index = read_index(path)
    if index is None:
        return None
    name = index.get("_class_name")
    if name not in LAYOUT:
        raise ValueError(f"{Path(path) / INDEX} describes a {name!r}, not a Karlo folder (UnCLIPPipeline, "
                         "UnCLIPImageVariationPipeline)")
    return name


def _check_scheduler(name: str, folder: Path) -> None:
    cfg_path = folder / "scheduler_config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{name}/scheduler_config.json is missing")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("beta_schedule", "squaredcos_cap_v2") != "squaredcos_cap_v2":
        raise ValueError(f"{name}: beta_schedule {cfg['beta_schedule']!r} is not supported (squaredcos_cap_v2 only)")
    for key, allowed in SCHEDULER_RULES[name].items():
        value = cfg.get(key, allowed[0])
        if value not in allowed:
            raise ValueError(f"{name}: {key} {value!r} is not supported here (supported: {', '.join(allowed)})")


def conditioning_from(cfg: dict):
    """An empty `DecoderConditioning` for an `UnCLIPTextProjModel` config: the same parameters
    under the same names, and the same arithmetic."""
    from unclip.models.decoder.conditioning import DecoderConditioning

    for key in ("time_embed_dim", "cross_attention_dim"):
        if key not in cfg:
            raise ValueError(f"text_proj/config.json has no {key}")
    return DecoderConditioning(
        clip_embeddings_dim=cfg.get("clip_embeddings_dim", 768), time_embed_dim=cfg["time_embed_dim"],
        cross_attention_dim=cfg["cross_attention_dim"],
        clip_extra_context_tokens=cfg.get("clip_extra_context_tokens", 4), use_text=True)


def _load_text_proj(folder: Path, variant: str | None, dtype: torch.dtype):
    """`UnCLIPTextProjModel` weights into `DecoderConditioning`."""
    from safetensors.torch import load_file

    model = conditioning_from(json.loads((folder / "config.json").read_text()))
    check_weights("text_proj", folder, variant, model)
    name = "diffusion_pytorch_model" + (f".{variant}" if variant else "") + ".safetensors"
    state = load_file(folder / name)
    model.load_state_dict({k: state[k] for k in model.state_dict()})
    return torch.nn.Module.to(model, dtype).eval()


def _loader(name: str):
    """(class, how to call it) for each component: nothing here comes from the folder's index."""
    if name in SCHEDULERS:
        from diffusers import UnCLIPScheduler
        return UnCLIPScheduler
    if name == "prior":
        from diffusers import PriorTransformer
        return PriorTransformer
    if name == "decoder":
        from diffusers import UNet2DConditionModel
        return UNet2DConditionModel
    if name in ("super_res_first", "super_res_last"):
        from diffusers import UNet2DModel
        return UNet2DModel
    if name == "text_encoder":
        from transformers import CLIPTextModelWithProjection
        return CLIPTextModelWithProjection
    if name == "image_encoder":
        from transformers import CLIPVisionModelWithProjection
        return CLIPVisionModelWithProjection
    if name == "tokenizer":
        from transformers import CLIPTokenizer
        return CLIPTokenizer
    if name == "feature_extractor":
        # The PIL processor: the default one needs torchvision, which this project never installs.
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
        return CLIPImageProcessorPil
    raise KeyError(name)


def load_component(root: Path, name: str, dtype: torch.dtype):
    """One component of a Karlo folder, in `dtype` where it has weights."""
    folder = root / name
    if name == "text_proj" and folder.is_dir():
        try:
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"{name}/config.json is missing")
            return _load_text_proj(folder, weights_variant(folder), dtype)
        except ERRORS as e:
            raise component_error(root, name, e) from None
    if name in SCHEDULERS and folder.is_dir():
        try:
            _check_scheduler(name, folder)
        except ERRORS as e:
            raise component_error(root, name, e) from None
    return components.load_component(root, name, _loader(name), dtype)


def load_folder(path: str | Path, dtype: torch.dtype = torch.float32, skip: tuple[str, ...] = ()) -> tuple[str, dict]:
    """(kind, {component name: loaded object}) for a Karlo folder, less the components in `skip`."""
    root = Path(path)
    kind = folder_kind(root)
    if kind is None:
        raise FileNotFoundError(f"not a diffusers pipeline folder (no {INDEX}): {root}")
    return kind, {name: load_component(root, name, dtype) for name in LAYOUT[kind] if name not in skip}


def diffusers_text_proj(proj):
    """diffusers' UnCLIPTextProjModel with the weights of unclip's decoder conditioning (the
    inverse of `conditioning_from`), in the dtype of its weights."""
    from diffusers.pipelines.deprecated.unclip import UnCLIPTextProjModel

    text_proj = UnCLIPTextProjModel(**{k: proj.config[k] for k in (
        "clip_extra_context_tokens", "clip_embeddings_dim", "time_embed_dim", "cross_attention_dim")})
    text_proj.load_state_dict(proj.state_dict())
    return torch.nn.Module.to(text_proj, proj.learned_classifier_free_guidance_embeddings.dtype)


def load_parts(path: Path, torch_dtype: torch.dtype, image_encoder: str | Path | None = None,
               prior_model: str | Path | None = None) -> tuple[str, dict]:
    """A Karlo folder's components with what a pipeline adds to them: LoRA adapters a fine-tuning
    run saved beside them, another folder's image tower (`image_encoder`), an ECLIPSE prior in
    place of Karlo's (`prior_model`, Karlo's prior then not loaded)."""
    skip = ("prior", "prior_scheduler") if prior_model is not None else ()
    folder_class, parts = load_folder(path, torch_dtype, skip)
    if prior_model is not None:
        parts["prior"] = load_eclipse(prior_model, parts["text_encoder"].config.projection_dim, torch_dtype,
                                      parts["tokenizer"].model_max_length, "this Karlo folder's text tower")
    for name in ("decoder", "text_proj", "prior"):  # LoRA adapters a fine-tuning run saved beside them
        adapters = Path(path) / f"{name}_lora"
        if adapters.is_dir() and parts.get(name) is not None and name not in skip:
            parts[name].load_lora_adapter(str(adapters), prefix=None, use_safetensors=True,
                                          weight_name="pytorch_lora_weights.safetensors")
    if image_encoder is not None:
        extra = Path(image_encoder)
        parts["image_encoder"] = load_component(extra, "image_encoder", torch_dtype)
        parts["feature_extractor"] = load_component(extra, "feature_extractor", torch_dtype)
        dim, need = parts["image_encoder"].config.projection_dim, parts["text_encoder"].config.projection_dim
        if dim != need:
            raise ValueError(f"{extra}: its image tower embeds in {dim} dimensions, the model in {need}")
    return folder_class, parts
