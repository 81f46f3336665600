"""Components of diffusers folders (Karlo's, Kandinsky's, ...), each loaded by the class the
caller assigns it, never by a name the folder gives: weights from safetensors only (no pickle),
local files only, shapes checked against the config before loading, and a folder's code never
run. A component that is missing, unreadable or of the wrong shape is an error naming it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from unclip.runtime.weights import WEIGHT_NAMES, check_weights, component_error, meta_model

INDEX = "model_index.json"
ERRORS = (ValueError, OSError, RuntimeError, KeyError, TypeError)  # what a damaged component raises


def read_index(path: str | Path) -> dict | None:
    """A diffusers folder's model_index.json, None where there is none."""
    index = Path(path) / INDEX
    if not index.is_file():
        return None
    try:
        data = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{index} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{index} is not a JSON object")
    return data


def weights_variant(folder: Path) -> str | None:
    """None for plain weights; "fp16" (or another variant) when only a variant is stored."""
    plain = [folder / f"{n}.safetensors" for n in WEIGHT_NAMES]
    if any(p.is_file() for p in plain):
        return None
    variants = sorted({p.name.split(".")[-2] for n in WEIGHT_NAMES for p in folder.glob(f"{n}.*.safetensors")})
    if variants:
        return "fp16" if "fp16" in variants else variants[0]
    if any(folder.glob("*.bin")):
        raise ValueError(f"{folder.name}/ holds pickled .bin weights only; unclip loads safetensors "
                         "(convert with safetensors.torch.save_file, or download the repo's .safetensors files)")
    raise FileNotFoundError(f"{folder.name}/ has no weights (*.safetensors)")


def load_network(folder: Path, name: str, cls, dtype: torch.dtype) -> torch.nn.Module:
    """A network (diffusers' or transformers' class `cls`) from `folder`, in `dtype`, in eval mode."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{name}/config.json is missing")
    variant = weights_variant(folder)
    check_weights(name, folder, variant, meta_model(cls, folder))
    kw = dict(local_files_only=True, use_safetensors=True, variant=variant)
    if cls.__module__.startswith("transformers"):
        kw["dtype"] = dtype
    else:
        kw.update(torch_dtype=dtype, low_cpu_mem_usage=True)
    return cls.from_pretrained(folder, **kw).eval()


def load_component(root: Path, name: str, cls, dtype: torch.dtype = torch.float32):
    """Component `name` of the folder `root` as `cls`: a network in `dtype`, or a scheduler,
    tokenizer or image processor as it is stored."""
    folder = root / name
    if not folder.is_dir():
        raise FileNotFoundError(f"{root}: the component {name}/ is missing")
    try:
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
            return load_network(folder, name, cls, dtype)
        return cls.from_pretrained(folder, local_files_only=True)
    except ERRORS as e:
        raise component_error(root, name, e) from None


def prior_kind(prior) -> str | None:
    """What a published family's prior is: "diffusion" (a PriorTransformer), "eclipse" (a one-pass
    ECLIPSE prior) or None (none loaded)."""
    from unclip.models.prior.eclipse import EclipsePrior

    if prior is None:
        return None
    return "eclipse" if isinstance(prior, EclipsePrior) else "diffusion"


def load_eclipse(path: str | Path, width: int, dtype: torch.dtype, tokens: int | None = None,
                 towers: str = "the folder's text tower"):
    """An ECLIPSE prior folder as published (one network: config.json + safetensors), which returns
    the image embedding itself in one pass; refused unless it takes `width`-d embeddings (and
    `tokens` tokens, where given) of `towers`."""
    from unclip.models.prior.eclipse import EclipseConfig, EclipsePrior

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"--prior-model: ECLIPSE prior folder not found: {path}")
    try:
        prior = EclipsePrior.from_pretrained(path, EclipseConfig(standardized=False, normalize=False), dtype)
    except ERRORS as e:
        raise ValueError(f"--prior-model {path}: not an ECLIPSE prior folder ({e})") from None
    cfg = prior.net.config
    if cfg.embedding_dim != width or (tokens is not None and cfg.num_embeddings != tokens):
        made = f"{cfg.embedding_dim}-d CLIP embeddings" + (f" of {cfg.num_embeddings} tokens" if tokens else "")
        gives = f"{width}-d" + (f" and {tokens} tokens" if tokens else "")
        raise ValueError(f"--prior-model {path}: made for {made}; {towers} gives {gives}")
    return prior.eval()
