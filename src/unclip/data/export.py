"""Write shapes-world images to disk as PNGs with a manifest.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from unclip.data import shapes
from unclip.data.stream import ShapesSource


def write_shapes(out: str | Path, split: str, num: int, size: int, seed: int | None = None) -> Path:
    """Render `num` images of the train stream or the eval split into `out`; each manifest line
    is {"prompt": canonical caption, "file": path relative to the manifest, "scene": {...}}
    (eval lines also carry "subset" and "kind"). Returns the manifest's path."""
    if num <= 0 or size < 8:
        raise ValueError(f"need --num > 0 and --size >= 8, got num={num}, size={size}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    if split == "eval":
        items = shapes.eval_split(num, shapes.EVAL_SEED if seed is None else seed)
        rows = [(it.scene, {"subset": it.subset, "kind": it.kind}) for it in items]
    elif split == "train":
        source = ShapesSource(size, 0 if seed is None else seed)
        rows = [(source.draw(i)[0], {}) for i in range(num)]
    else:
        raise ValueError(f"unknown split {split!r}; splits are train, eval")
    lines = []
    for i, (scene, extra) in enumerate(tqdm(rows, desc=f"render {split}", leave=False)):
        file = f"images/{i:06d}.png"
        Image.fromarray(shapes.render(scene, size)).save(out / file)
        lines.append({"prompt": shapes.canonical_caption(scene), "file": file, "scene": scene.to_dict(), **extra})
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest
