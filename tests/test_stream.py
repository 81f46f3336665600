"""The training stream: deterministic, resumable, and never repeating across workers/processes."""

import torch

from unclip.data.stream import BatchStream, ShapesSource, make_loader


class IndexSource:
    """Returns each sample's global index, to see exactly which samples a stream draws."""

    def get(self, index):
        import numpy as np

        return {"image": np.full((2, 2, 3), index % 256, np.uint8), "caption": str(index)}


def take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def indices(batches):
    return [int(c) for b in batches for c in b["captions"]]


def test_workers_never_repeat_and_keep_the_order():
    one = indices(take(make_loader(IndexSource(), 4, workers=0), 10))
    two = indices(take(make_loader(IndexSource(), 4, workers=2), 10))
    assert one == two == list(range(40))


def test_processes_split_the_global_batch():
    single = indices(take(make_loader(IndexSource(), 8, workers=0), 3))
    ranks = [take(make_loader(IndexSource(), 4, rank=r, world=2, workers=0), 3) for r in range(2)]
    merged = [i for b0, b1 in zip(*ranks) for i in indices([b0]) + indices([b1])]
    assert merged == single


def test_resume_starts_where_an_unbroken_stream_would_be():
    full = indices(take(make_loader(IndexSource(), 4, workers=0), 6))
    resumed = indices(take(make_loader(IndexSource(), 4, start_batch=4, workers=2), 2))
    assert resumed == full[16:]


def test_shapes_batches_are_pixels_in_range_and_deterministic():
    src = ShapesSource(image_size=16, seed=3)
    b1 = next(iter(BatchStream(src, 5)))
    b2 = next(iter(BatchStream(ShapesSource(16, 3), 5)))
    assert b1["pixels"].shape == (5, 3, 16, 16) and b1["pixels"].dtype == torch.float32
    assert b1["pixels"].min() >= -1 and b1["pixels"].max() <= 1
    assert torch.equal(b1["pixels"], b2["pixels"]) and b1["captions"] == b2["captions"]
    b3 = next(iter(BatchStream(ShapesSource(16, 4), 5)))
    assert not torch.equal(b1["pixels"], b3["pixels"])
