"""Shapes-world rendering speed on one core: scenes/s, render/s at 64 and 128 px, and whole
training micro-batches (sample + caption + render + tensor) per second.

    python benchmarks/render.py
"""

import os
import time

os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as a DataLoader worker has

from unclip.data import shapes  # noqa: E402
from unclip.data.stream import BatchStream, ShapesSource  # noqa: E402


def rate(fn, n):
    fn(0)
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t)


def main():
    n = 3000
    scenes = [shapes.sample_scene(shapes.scene_rng(0, i)) for i in range(n)]
    print(f"scene sampling + caption: {rate(lambda i: ShapesSource(8).draw(i), n):8.0f} /s")
    for size in (32, 64, 128):
        print(f"render {size:3d} px:           {rate(lambda i: shapes.render(scenes[i], size), n):8.0f} images/s")
    for size in (64, 128):
        it = iter(BatchStream(ShapesSource(size), 64))
        r = rate(lambda i: next(it), 30) * 64
        print(f"training stream {size:3d} px:  {r:8.0f} images/s (batches of 64, one worker)")


if __name__ == "__main__":
    main()
