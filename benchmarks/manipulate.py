"""Manipulation figures on rendered shapes images, scored by the shapes detector:

- inversion: reconstruction PSNR at the base resolution after DDIM inversion (50 steps);
- variations (eta 1): share whose detected colour and shape match the input, and the mean
  absolute pixel difference to the input (0-255), which must not be ~0 (copies);
- text diffs "a {colour} {shape}" -> "a {other colour} {shape}": share whose last frame
  (theta 0.5) has the new colour and keeps the shape;
- interpolations: share of middle frames whose detected object comes from either end.

    python benchmarks/manipulate.py [--model DIR] [--num 20] [--out docs/manipulations]
"""

import argparse
import time
from pathlib import Path

import numpy as np

from unclip.data import shapes
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline
from unclip.plot import image_grid
from unclip.tasks import manipulate as m
from unclip.tasks.evaluate.detector import Detector


def singles(num: int, seed: int = 0) -> list[shapes.Scene]:
    rng = np.random.default_rng(seed)
    pairs = shapes.colour_shape_pairs(False)
    return [shapes.sample_single(rng, pairs) for _ in range(num)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model")
    p.add_argument("--num", type=int, default=20)
    p.add_argument("--out", help="write example strips here")
    args = p.parse_args()
    pipe, det = DalleTwoPipeline.from_pretrained(args.model), Detector()
    size = 32 * 2 ** len(pipe.upsamplers) if pipe.upsamplers else pipe.decoder.cfg.image_size
    scenes = singles(args.num)
    images = [shapes.render(s, size) for s in scenes]

    def first(img):
        found = det(img).objects
        return (found[0].colour, found[0].shape) if found else None

    t = time.perf_counter()
    psnrs = [m.reconstruct(pipe, img)[1] for img in images]
    print(f"inversion: reconstruction PSNR {np.mean(psnrs):.2f} dB (min {np.min(psnrs):.2f}) "
          f"over {len(images)} images, 50 DDIM steps, {(time.perf_counter() - t) / len(images):.1f} s/image")

    t = time.perf_counter()
    match, diffs, examples = [], [], []
    for s, img in zip(scenes, images):
        var = m.vary(pipe, img, 2, eta=1.0)
        match += [first(v) == (s.objects[0].colour, s.objects[0].shape) for v in var]
        diffs += [np.abs(v.astype(float) - img.astype(float)).mean() for v in var]
        examples.append(np.concatenate([img[None], var]))
    print(f"variations (eta 1): colour and shape kept {np.mean(match):.3f}; mean pixel difference "
          f"{np.mean(diffs):.1f}/255; {(time.perf_counter() - t) / len(images):.1f} s/image")

    t = time.perf_counter()
    rng, hits, strips = np.random.default_rng(1), [], []
    for s, img in zip(scenes, images):
        o = s.objects[0]
        new = rng.choice([c for c in shapes.COLOURS if c != o.colour])
        frames, _ = m.text_diff(pipe, img, f"a {new} {o.shape}", f"a {o.colour} {o.shape}", 5)
        hits.append(first(frames[-1]) == (new, o.shape))
        strips.append(frames)
    print(f"text diffs: new colour with the shape kept {np.mean(hits):.3f}; "
          f"{(time.perf_counter() - t) / len(images):.1f} s/edit")

    t = time.perf_counter()
    ends_hit, interps = [], []
    for a, b, ia, ib in zip(scenes[::2], scenes[1::2], images[::2], images[1::2]):
        frames, _ = m.interpolate(pipe, ia, ib, 5)
        ends = {(a.objects[0].colour, a.objects[0].shape), (b.objects[0].colour, b.objects[0].shape)}
        ends_hit.append(first(frames[2]) in ends)
        interps.append(frames)
    print(f"interpolations: middle frame's object from either end {np.mean(ends_hit):.3f}; "
          f"{(time.perf_counter() - t) / len(interps):.1f} s/path")

    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        image_grid(np.concatenate(examples[:4]), ["input", "variation", "variation"] * 4, cols=3,
                   label_lines=1).save(out / "variations.png")
        image_grid(np.concatenate(strips[:3]), [f"theta {th:.2f}" for th in np.linspace(0, 0.5, 5)] * 3,
                   cols=5, label_lines=1).save(out / "text_diffs.png")
        image_grid(np.concatenate(interps[:3]), [f"theta {th:.2f}" for th in np.linspace(0, 1, 5)] * 3,
                   cols=5, label_lines=1).save(out / "interpolations.png")
        print(f"strips written to {out}")


if __name__ == "__main__":
    main()
