"""Captioned images in the layout img2dataset writes: `00001.jpg` beside `00001.txt`, in
folders or in webdataset `.tar` shards. Bad pairs are skipped with a warning and counted,
never a crash and never a silent wrong pair."""

from __future__ import annotations

import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unclip.data.order import EpochOrder
from unclip.data.transforms import open_rgb, resize_center_crop

log = logging.getLogger(__name__)
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass(frozen=True)
class Entry:
    """One image and its caption: a file on disk, or a byte range inside a tar shard."""

    caption: str
    path: str
    offset: int = -1  # >= 0: image bytes at [offset, offset + size) of the tar at `path`
    size: int = 0

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            if self.offset < 0:
                return f.read()
            f.seek(self.offset)
            return f.read(self.size)


class ImageFolderSource:
    """Indexes a folder (recursively) of images with `.txt` captions and/or `.tar` shards.

    `get(i)` is the i-th sample of an endless, seeded, per-epoch shuffled stream, as a dict
    `{"image": uint8 (S, S, 3), "caption": str}`, or `{"unreadable": name}` if the image cannot
    be decoded. `skipped` counts the files dropped while indexing (a missing or empty caption,
    an unreadable shard)."""

    def __init__(self, root: str | Path, image_size: int, seed: int = 0):
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"data folder not found: {root}")
        self.image_size, self.seed, self.skipped = image_size, seed, 0
        self.entries: list[Entry] = []
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in IMAGE_EXTS:
                txt = path.with_suffix(".txt")
                self._add(txt.read_text("utf-8", errors="replace") if txt.exists() else None, str(path), str(path))
            elif path.suffix == ".tar":
                self._index_tar(path)
        if not self.entries:
            raise ValueError(f"no captioned images found under {root} ({self.skipped} skipped)")
        self.order = EpochOrder(len(self.entries), seed)

    def _add(self, caption: str | None, name: str, path: str, offset=-1, size=0) -> None:
        if not (caption or "").strip():
            self.skipped += 1
            log.warning("skipping %s: %s", name, "no caption" if caption is None else "empty caption")
            return
        self.entries.append(Entry(caption.strip(), path, offset, size))

    def _index_tar(self, path: Path) -> None:
        try:
            tar = tarfile.open(path)
            members = [m for m in tar.getmembers() if m.isfile()]
        except (tarfile.TarError, OSError) as e:
            self.skipped += 1
            log.warning("skipping shard %s: %s", path, e)
            return
        with tar:
            by_key: dict[str, dict[str, tarfile.TarInfo]] = {}
            for m in members:
                key, dot, ext = m.name.rpartition(".")
                by_key.setdefault(key, {})["." + ext.lower()] = m
            for key, parts in sorted(by_key.items()):
                image = next((parts[e] for e in IMAGE_EXTS if e in parts), None)
                if image is None:
                    continue
                txt = parts.get(".txt")
                caption = tar.extractfile(txt).read().decode("utf-8", errors="replace") if txt else None
                self._add(caption, f"{path}:{image.name}", str(path), image.offset_data, image.size)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, index: int) -> dict | None:
        entry = self.entries[self.order(index)]
        try:
            img = open_rgb(entry.read())
        except (ValueError, OSError) as e:
            name = entry.path if entry.offset < 0 else f"{entry.path}@{entry.offset}"
            log.warning("skipping unreadable image %s: %s", name, e)
            return {"unreadable": name}
        image = np.asarray(resize_center_crop(img, self.image_size))
        return {"image": image, "caption": entry.caption}
