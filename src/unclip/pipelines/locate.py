"""Where a model folder is: a path, a shipped model's name, a Hugging Face Hub id (`owner/name`,
optionally `owner/name@revision`), or nothing (the shipped unCLIP model).

Every place that takes a model folder resolves it here, so the contract (base.py) and the
registry (registry.py) share one answer without importing each other.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SHIPPED = {"dalle1": "dalle1"}  # --model NAME: a model shipped in the package's assets
DEFAULT = "shapes"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
PICKLES = ["*.bin", "*.ckpt", "*.pt", "*.pth", "*.pkl", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data"]
DALLE1_SETTINGS = "dalle1.json"  # the file that makes a folder DALL-E 1's


def is_dalle1_folder(path: str | Path) -> bool:
    return (Path(path) / DALLE1_SETTINGS).is_file()


def assets() -> Path:
    return Path(__file__).resolve().parents[1] / "assets"


def default_model_dir() -> Path:
    """The shapes-world model shipped inside the package."""
    return assets() / DEFAULT


def resolve_model(path: str | Path | None) -> Path:
    """A model folder: the one given, a shipped model by name ("dalle1", unless a folder of that
    name exists here), a Hub id that is not a folder here (through huggingface_hub's cache), or
    the shipped unCLIP model."""
    if path is not None and str(path) in SHIPPED and not Path(path).is_dir():
        shipped = assets() / SHIPPED[str(path)]
        if not shipped.is_dir():
            raise FileNotFoundError(f"no {path} model is installed at {shipped}; pass --model DIR")
        return shipped
    if path is not None:
        if Path(path).is_dir():
            return Path(path)
        if isinstance(path, str) and HUB_ID.match(path):
            return hub_folder(path)
        raise FileNotFoundError(f"model folder not found: {path}")
    path = default_model_dir()
    if not path.is_dir():
        raise FileNotFoundError(f"no default model is installed at {path}; pass --model DIR")
    return path


def resolve_folders(value):
    """`resolve_model` of a folder option: one folder or Hub id, or a list of them."""
    if isinstance(value, (list, tuple)):
        return [resolve_model(str(v)) for v in value]
    return resolve_model(str(value))


def hub_cache() -> Path:
    """huggingface_hub's cache as the environment names it now (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home) / "hub"


def hub_folder(name: str) -> Path:
    """The snapshot folder of Hub repository `owner/name[@revision]`: from huggingface_hub's cache,
    downloaded there first when the Hub can be reached and HF_HUB_OFFLINE is not set (weights as
    safetensors only: pickled files are never fetched)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo, _, revision = name.partition("@")
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    cache = hub_cache()
    try:
        return Path(snapshot_download(repo, revision=revision or None, cache_dir=cache, local_files_only=offline,
                                      ignore_patterns=PICKLES))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        why = "HF_HUB_OFFLINE is set" if offline else f"the Hub could not be reached ({type(e).__name__})"
        raise ValueError(
            f"model folder not found: {name}; as a Hugging Face Hub id it is not in the cache ({cache}"
            f"{', revision ' + revision if revision else ''}) and {why}. Get it where there is internet with "
            f"`hf download {repo}{' --revision ' + revision if revision else ''}` and copy the cache (HF_HUB_CACHE) "
            "here, or pass a local folder") from None
