"""Training checkpoints that survive a kill at any moment.

Each checkpoint is written to a temporary file, flushed to disk (fsync of the file and of its
folder), then renamed into place, with a SHA-256 beside it (`step_N.pt.sha256`) and a `latest`
pointer. Loading verifies the checksum and falls back, with a warning, to the newest intact
older checkpoint when the latest is damaged; temporary files left by a kill are removed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)
TMP_GLOB = ".*.tmp*"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)`, flush it to disk, then rename over `path`: readers never see a
    partial file, and a crash after the rename cannot lose it."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(folder: Path, step: int, state: dict, keep: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    atomic_write(path.with_name(path.name + ".sha256"), lambda tmp: tmp.write_text(sha256(path)))
    atomic_write(folder / "latest", lambda tmp: tmp.write_text(path.name))
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink()
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)
    return path


def has_checkpoints(folder: Path) -> bool:
    return any(folder.glob("step_*.pt"))


def clean_stale(folder: Path) -> None:
    """Remove the temporary files of writes a kill interrupted."""
    for tmp in folder.glob(TMP_GLOB):
        tmp.unlink(missing_ok=True)


def _candidates(folder: Path) -> list[Path]:
    """The checkpoint `latest` names, then every other one, newest first."""
    found = sorted(folder.glob("step_*.pt"), reverse=True)
    pointer = folder / "latest"
    named = pointer.read_text().strip() if pointer.is_file() else ""
    first = [folder / named] if named.startswith("step_") and (folder / named) in found else []
    return first + [p for p in found if p not in first]


def _verify(path: Path) -> str | None:
    """Why `path` is not intact, or None."""
    summed = path.with_name(path.name + ".sha256")
    if not summed.is_file():
        return "its checksum file is missing"
    return None if summed.read_text().strip() == sha256(path) else "its checksum does not match"


def load_latest(folder: Path) -> tuple[Path, dict] | None:
    """(path, state) of the newest intact checkpoint in `folder`, or None when there is none;
    each damaged one passed over is reported in a warning."""
    if not folder.is_dir():
        return None
    clean_stale(folder)
    for path in _candidates(folder):
        problem = _verify(path)
        if problem is None:
            try:
                return path, load_checkpoint(path)
            except Exception as e:  # noqa: BLE001 (torch raises many types for damaged files)
                problem = f"it cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        log.warning("skipping checkpoint %s: %s; trying an older one", path, problem)
    if has_checkpoints(folder):
        raise ValueError(f"no intact checkpoint in {folder}: every one is damaged; start a new run")
    return None


def load_checkpoint(path: Path) -> dict:
    # weights_only: checkpoints hold tensors, numbers, strings and dicts; nothing to unpickle.
    return torch.load(path, map_location="cpu", weights_only=True)
