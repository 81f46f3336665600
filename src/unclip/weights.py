"""Model weights on disk: what a folder's safetensors hold, checked against what a network
built from its config needs, before anything is loaded; and errors that name the component."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WEIGHT_NAMES = ("diffusion_pytorch_model", "model")


def stored_shapes(folder: Path, variant: str | None = None) -> dict[str, tuple]:
    """Every tensor's shape from the safetensors headers (one file or an index of shards)."""
    from safetensors import safe_open

    suffix = (f".{variant}" if variant else "") + ".safetensors"
    files = []
    for stem in WEIGHT_NAMES:
        index = folder / f"{stem}{suffix}.index.json"
        if index.is_file():
            files += sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
        elif (folder / f"{stem}{suffix}").is_file():
            files.append(folder / f"{stem}{suffix}")
    if not files:
        raise FileNotFoundError(f"{folder.name}/ has no weights (*{suffix})")
    shapes = {}
    for f in files:
        try:
            with safe_open(str(f), "pt") as fh:
                names = fh.keys()  # a safetensors handle, not a dict
                shapes.update({k: tuple(fh.get_slice(k).get_shape()) for k in names})
        except Exception as e:  # noqa: BLE001 (safetensors raises its own types for damaged files)
            raise ValueError(f"{folder.name}/{f.name} is not a readable safetensors file ({e})") from None
    return shapes


def check_weights(name: str, folder: Path, variant: str | None, model: torch.nn.Module) -> None:
    """Every weight the model (e.g. built on the meta device from its config) needs is stored,
    with its shape; extra stored tensors (e.g. old buffers) are ignored, as the loaders do."""
    stored = stored_shapes(folder, variant)
    need = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(need) - set(stored))
    if missing:
        raise ValueError(f"{name}/: weights missing for its config: {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    for k, shape in need.items():
        if stored[k] != shape:
            raise ValueError(f"{name}/: weight {k} has shape {list(stored[k])}, its config needs {list(shape)}")


def meta_model(cls, folder: Path) -> torch.nn.Module:
    """An empty network of class `cls` (diffusers or transformers) from the folder's config."""
    with torch.device("meta"):
        if hasattr(cls, "config_class"):  # transformers
            return cls(cls.config_class.from_pretrained(folder))
        return cls.from_config(cls.load_config(folder))


def component_error(root: Path, name: str, e: Exception) -> ValueError:
    """A one-line error naming the model folder and the component that failed to load."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if msg.startswith((f"{name}/", f"{name}:")):
        return ValueError(f"{root}: {msg}")
    return ValueError(f"{root}: cannot load the component {name}/: {msg}")
