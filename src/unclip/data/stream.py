"""Endless, resumable training streams.

Every sample is a pure function of its global index, so the stream needs no state to resume
and no two DataLoader workers or processes ever draw the same sample: micro-batch `b` of
process `rank` holds the global indices `(b * world + rank) * B ... + B - 1`, and worker `w`
of `W` builds the micro-batches `b = w, w + W, ...` (the DataLoader returns them in order).
One process with batch 2B therefore sees exactly the samples that two processes with B see.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from unclip.config import DataConfig
from unclip.data import shapes
from unclip.data.folder import ImageFolderSource
from unclip.data.transforms import to_tensor


class Source(Protocol):
    def get(self, index: int) -> dict | None: ...


class ShapesSource:
    """Endless shapes-world training samples (held-out colour-shape pairs never drawn)."""

    def __init__(self, image_size: int, seed: int = 0, two_prob=0.5, paraphrase_prob=0.5,
                 hard_negatives=False):
        self.image_size, self.seed = image_size, seed
        self.two_prob, self.paraphrase_prob = two_prob, paraphrase_prob
        self.hard_negatives = hard_negatives

    def draw(self, index: int) -> tuple[shapes.Scene, str]:
        """Scene and training caption of sample `index`. With hard negatives, each odd sample
        is the hard negative of the even one before it (so batches hold both)."""
        if self.hard_negatives and index % 2:
            scene = shapes.hard_negative(self.draw(index - 1)[0], shapes.scene_rng(self.seed, index, 1))
        else:
            scene = shapes.sample_scene(shapes.scene_rng(self.seed, index), self.two_prob)
        rng = shapes.scene_rng(self.seed, index, 2)
        return scene, shapes.training_caption(scene, rng, self.paraphrase_prob)

    def get(self, index: int) -> dict:
        scene, caption = self.draw(index)
        return {"image": shapes.render(scene, self.image_size), "caption": caption}

    def captions(self, num: int) -> list[str]:
        """The first `num` training captions, without rendering (a tokenizer corpus)."""
        return [self.draw(i)[1] for i in range(num)]


def make_source(cfg: DataConfig) -> Source:
    if cfg.source == "shapes":
        return ShapesSource(cfg.image_size, cfg.seed, cfg.two_prob, cfg.paraphrase_prob, cfg.hard_negatives)
    return ImageFolderSource(cfg.path, cfg.image_size, cfg.seed)


def collate(samples: list[dict]) -> dict:
    """Stack samples into {"captions": [...], "skipped": [names of unreadable files], "pixels":
    (B, 3, S, S) in [-1, 1] if they have images}; any other key becomes a stacked tensor or a list."""
    good = [s for s in samples if "unreadable" not in s]
    batch = {"captions": [s["caption"] for s in good], "skipped": [s["unreadable"] for s in samples
                                                                   if "unreadable" in s]}
    if good and "image" in good[0]:
        batch["pixels"] = to_tensor([s["image"] for s in good])
    for key in sorted(good[0].keys() - {"image", "caption"}) if good else ():
        values = [s[key] for s in good]
        batch[key] = torch.stack(values) if torch.is_tensor(values[0]) else values
    return batch


class BatchStream(IterableDataset):
    """Micro-batches `start_batch, start_batch + 1, ...` of one process, forever."""

    def __init__(self, source: Source, micro_batch: int, rank=0, world=1, start_batch=0):
        self.source, self.micro_batch = source, micro_batch
        self.rank, self.world, self.start_batch = rank, world, start_batch

    def batch_indices(self, b: int) -> range:
        first = (b * self.world + self.rank) * self.micro_batch
        return range(first, first + self.micro_batch)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        b = self.start_batch + worker
        while True:
            yield collate([self.source.get(i) for i in self.batch_indices(b)])
            b += workers


def make_loader(source: Source, micro_batch: int, rank=0, world=1, start_batch=0, workers=1):
    """A DataLoader over `BatchStream`; batches come in order whatever the worker count."""
    stream = BatchStream(source, micro_batch, rank, world, start_batch)
    return DataLoader(
        stream, batch_size=None, num_workers=workers, persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
