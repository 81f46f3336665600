"""Training checkpoints: written atomically (temporary file, then rename) with a `latest`
pointer, so a run killed at any moment keeps its last complete checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)`, then rename over `path`: readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(folder: Path, step: int, state: dict, keep: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    atomic_write(folder / "latest", lambda tmp: tmp.write_text(path.name))
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink()
    return path


def latest_checkpoint(folder: Path) -> Path | None:
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    if not path.is_file():
        raise FileNotFoundError(f"{pointer} names {path.name}, which is missing")
    return path


def load_checkpoint(path: Path) -> dict:
    # weights_only: checkpoints hold tensors, numbers, strings and dicts; nothing to unpickle.
    return torch.load(path, map_location="cpu", weights_only=True)
