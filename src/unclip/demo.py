"""`unclip demo`: a grid of canonical prompts drawn by the shipped default model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .generate import generate_files
from .pipeline import UnCLIPPipeline
from .plot import image_grid

PROMPTS = [
    "a large red circle on the left on a white background",
    "a small blue square at the top on a black background",
    "a large yellow triangle in the center on a white background",
    "a large purple star on the right on a black background",
    "a small green square at the bottom on a white background",
    "a red square to the left of a blue circle on a white background",
    "a orange star above a green triangle on a black background",  # the spec's form: always "a"
    "a blue triangle below a yellow circle on a white background",
]


def run_demo(out: str | Path = "unclip-demo", model: str | Path | None = None, seed: int = 0) -> Path:
    """Generate PROMPTS once each and save `grid.png` beside the images; returns the grid path."""
    start = time.perf_counter()
    pipe = UnCLIPPipeline.from_pretrained(model)
    out = Path(out)
    manifest = generate_files(pipe, PROMPTS, out, seed=seed, batch_size=len(PROMPTS))
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    images = np.stack([np.asarray(Image.open(out / r["file"])) for r in records])
    image_grid(images, [r["prompt"] for r in records], cols=4).save(out / "grid.png")
    print(f"{len(records)} images in {time.perf_counter() - start:.1f} s; grid: {out / 'grid.png'}")
    return out / "grid.png"
