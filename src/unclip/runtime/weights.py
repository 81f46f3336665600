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


SIZES = "config.json"  # a sized module's constructor arguments beside its config dataclass
SIZED_WEIGHTS = "model.safetensors"


def save_sized(module: torch.nn.Module, path: str | Path) -> None:
    """A module built as `cls(cfg, **module.sizes)`: its weights and its sizes."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, path / SIZED_WEIGHTS)
    (path / SIZES).write_text(json.dumps(module.sizes, indent=2))


def load_sized(cls, path: str | Path, cfg, torch_dtype=None) -> torch.nn.Module:
    """The inverse of `save_sized`, in eval mode; stored weights are checked first."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / SIZES).is_file():
        raise FileNotFoundError(f"{path.name}/{SIZES} is missing")
    try:
        sizes = json.loads((path / SIZES).read_text())
        with torch.device("meta"):
            check_weights(path.name, path, None, cls(cfg, **sizes))
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path.name}/{SIZES} is not a valid sizes file ({e})") from None
    module = cls(cfg, **sizes)
    state = load_file(path / SIZED_WEIGHTS)
    module.load_state_dict({k: state[k] for k in module.state_dict()})
    return (module.to(torch_dtype) if torch_dtype is not None else module).eval()
