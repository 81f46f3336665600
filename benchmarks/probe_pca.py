"""Which attributes the leading principal components of the CLIP image embedding carry (unCLIP
Fig. 7, for the shapes world): each eval image's embedding cut to its first k components,
decoded with one DDIM noise, and scored by the shapes detector against the image's own scene.

    python benchmarks/probe_pca.py --num 100 --out docs/results/probe_pca > docs/results/probe_pca.txt

Prints, for each k, the share of single-object images whose shape, colour, size, place and
background come back right (and all of them), and writes the paper-style figure (rows: images,
columns: k) to OUT/figure.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from unclip import load_pipeline
from unclip.data import shapes
from unclip.plot import image_grid
from unclip.tasks import probe
from unclip.tasks.evaluate.detector import Detector, score

KEYS = ("shape", "colour", "size", "place", "background", "all")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model folder (default: the shipped model)")
    p.add_argument("--num", type=int, default=100, help="single-object eval images")
    p.add_argument("--dims", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--out", default="runs/probe_pca")
    args = p.parse_args()
    pipe = load_pipeline(args.model, torch_dtype=args.dtype)
    print(f"model {args.model or 'shipped'}, {pipe.dtype}; {args.num} single-object eval images; "
          f"dims {args.dims}; {args.steps} DDIM steps", flush=True)
    start = time.perf_counter()
    pca = probe.cached_fit(pipe)
    print(f"PCA of 4096 training embeddings: {time.perf_counter() - start:.0f} s (cached after the first run); "
          f"variance explained by k components: " + ", ".join(
              f"{k}: {pca['variance'][:k].sum() / pca['variance'].sum():.2f}" for k in args.dims), flush=True)
    items = [it for it in shapes.eval_split(4 * args.num) if len(it.scene.objects) == 1
             and it.subset == "in_distribution"][:args.num]
    detector, right, shown = Detector(), {k: [] for k in args.dims}, []
    start = time.perf_counter()
    for i, item in enumerate(tqdm(items, desc="probe")):
        image = shapes.render(item.scene, 128)
        frames = probe.probe_pca(pipe, image, args.dims, pca, seed=i, steps=args.steps)
        for k, frame in zip(args.dims, frames):
            right[k].append(score(detector(frame), item.scene))
        if i < 6:
            shown += [image, *frames]
    seconds = time.perf_counter() - start
    print(f"{seconds:.0f} s ({seconds / len(items):.1f} s per image, {len(args.dims)} decodes each)")
    print("| k | " + " | ".join(KEYS) + " |")
    print("|" + "---|" * (len(KEYS) + 1))
    table = {}
    for k in args.dims:
        table[k] = {key: float(np.mean([v[key] for v in right[k]])) for key in KEYS}
        print(f"| {k} | " + " | ".join(f"{table[k][key]:.2f}" for key in KEYS) + " |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures.json").write_text(json.dumps(table, indent=1))
    labels = [t for _ in range(len(shown) // (len(args.dims) + 1)) for t in ("input", *[f"k={k}" for k in args.dims])]
    image_grid(np.stack(shown), labels, cols=len(args.dims) + 1, label_lines=1).save(out / "figure.png")
    print(f"figure: {out / 'figure.png'}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
