"""Where a model folder is: a path, a shipped model's name, or nothing (the shipped unCLIP model).

Every place that takes a model folder resolves it here, so the contract (base.py) and the
registry (registry.py) share one answer without importing each other.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED = {"dalle1": "dalle1"}  # --model NAME: a model shipped in the package's assets
DEFAULT = "shapes"


def assets() -> Path:
    return Path(__file__).resolve().parents[1] / "assets"


def default_model_dir() -> Path:
    """The shapes-world model shipped inside the package."""
    return assets() / DEFAULT


def resolve_model(path: str | Path | None) -> Path:
    """A model folder: the one given, a shipped model by name ("dalle1", unless a folder of that
    name exists here), or the shipped unCLIP model."""
    if path is not None and str(path) in SHIPPED and not Path(path).is_dir():
        shipped = assets() / SHIPPED[str(path)]
        if not shipped.is_dir():
            raise FileNotFoundError(f"no {path} model is installed at {shipped}; pass --model DIR")
        return shipped
    if path is not None:
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"model folder not found: {path}")
        return path
    path = default_model_dir()
    if not path.is_dir():
        raise FileNotFoundError(f"no default model is installed at {path}; pass --model DIR")
    return path
