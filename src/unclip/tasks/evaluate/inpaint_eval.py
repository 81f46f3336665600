"""`unclip eval inpaint`: two-object eval scenes with one object masked out and a caption that
asks for a third object in its place; the shapes detector checks the result.

A case is right when the kept object and the new one are both found in the caption's relation
on the right background and the removed object is gone. Beside that: PSNR against the input
outside the mask grown by 4 px (the kept region), and the speckle figure within 4 px of the
mask's edge (a seam shows up there as off-background pixels away from every object).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from unclip.data import shapes
from unclip.plot import image_grid
from unclip.tasks.evaluate.detector import Detector, parse_prompt, score
from unclip.tasks.evaluate.image_metrics import psnr
from unclip.tasks.evaluate.masks import SPECKLE_DISTANCE, SPECKLE_MARGIN, components, foreground

SIDE = 128
MARGIN = 4  # px the mask is grown by for PSNR, and the width of the seam ring


@dataclass(frozen=True)
class Case:
    image: np.ndarray  # uint8 (S, S, 3): the scene as drawn
    mask: np.ndarray  # uint8 (S, S): 255 where the removed object was (repaint)
    caption: str  # the kept object and the new one, in the scene's relation
    removed: shapes.Obj
    scene: shapes.Scene  # what the caption asks for


def make_case(item: shapes.EvalItem, side: int = SIDE) -> Case:
    """The item's second object masked (its box, 3 px wider) and replaced, in the caption, by
    an in-distribution colour and shape that neither object has (chosen by the scene)."""
    scene = item.scene
    kept, removed = scene.objects
    rng = np.random.default_rng(zlib.crc32(shapes.scene_key(scene).encode()))
    pairs = [p for p in shapes.colour_shape_pairs(include_held_out=False)
             if p not in ((kept.colour, kept.shape), (removed.colour, removed.shape)) and p[0] != removed.colour]
    colour, shape = pairs[rng.integers(len(pairs))]
    new = shapes.Obj(shape, colour, removed.size, removed.cx, removed.cy)
    asked = shapes.Scene(scene.background, (kept, new), relation=scene.relation)
    half = shapes.SIZES[removed.size] * 1.2 * side + 3  # a star's outer radius is 1.2 r
    cx, cy = removed.cx * side, removed.cy * side
    mask = np.zeros((side, side), np.uint8)
    mask[max(0, int(cy - half)):int(np.ceil(cy + half)), max(0, int(cx - half)):int(np.ceil(cx + half))] = 255
    return Case(shapes.render(scene, side), mask, shapes.canonical_caption(asked), removed, asked)


def score_case(image: np.ndarray, case: Case, detector: Detector | None = None) -> dict:
    """right, relation, removed_gone, psnr_outside (dB) and seam_speckle for one result."""
    det = (detector or Detector())(image)
    verdict = score(det, parse_prompt(case.caption))
    gone = not any((o.colour, o.shape) == (case.removed.colour, case.removed.shape) for o in det.objects)
    repaint = case.mask > 127
    grown = ndimage.binary_dilation(repaint, iterations=MARGIN)
    outside = ~grown
    a = torch.from_numpy(image.astype(np.float32) / 127.5 - 1)[outside]
    b = torch.from_numpy(case.image.astype(np.float32) / 127.5 - 1)[outside]
    ring = grown & ~ndimage.binary_erosion(repaint, iterations=MARGIN)
    return {"right": bool(verdict["all"] and gone), "relation": bool(verdict["relation"]), "removed_gone": gone,
            "psnr_outside": psnr(a.T[None, :, :, None], b.T[None, :, :, None]),
            "seam_speckle": _speckle_in(image, ring)}


def _speckle_in(image: np.ndarray, region: np.ndarray) -> float:
    """masks.speckle_share restricted to `region`: the share of its background pixels (more than
    SPECKLE_MARGIN px from every object) off the background colour."""
    fg, name, x = foreground(image, side=None)
    objects = np.zeros_like(fg)
    for comp in components(fg):
        objects |= comp
    near = ndimage.binary_dilation(objects, iterations=SPECKLE_MARGIN) if objects.any() else objects
    background = region & ~near
    if not background.any():
        return 0.0
    off = np.abs(x - np.array(shapes.BACKGROUNDS[name], dtype=np.float32)).max(axis=-1) > SPECKLE_DISTANCE
    return float(off[background].mean())


def evaluate_inpaint(pipe, out: str | Path, num: int = 100, seed: int = 0, batch_size: int = 4, **kw) -> dict:
    """The first `num` two-object in-distribution eval scenes as cases, inpainted at the model's
    output size (case i with seed `seed + i`); report.json and grid.png (input, mask, result) in `out`."""
    items = [it for it in shapes.eval_split(max(8 * num, 40)) if len(it.scene.objects) == 2
             and it.subset == "in_distribution"][:num]
    if len(items) < num:
        raise ValueError(f"the eval split has {len(items)} two-object in-distribution scenes in reach, not {num}")
    detector, rows, shown = Detector(), [], []
    for i, item in enumerate(tqdm(items, desc="inpaint eval scenes")):
        case = make_case(item)
        result = pipe.inpaint(case.image, case.mask, case.caption, generator=torch.Generator().manual_seed(seed + i),
                              output_type="uint8", **kw).images[0]
        if result.shape[0] != SIDE:
            from PIL import Image

            result = np.asarray(Image.fromarray(result).resize((SIDE, SIDE), Image.BICUBIC))
        rows.append(score_case(result, case, detector))
        if len(shown) < 24:
            shown += [case.image, np.repeat(case.mask[..., None], 3, -1), result]
    figures = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    figures["cases"] = len(rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"figures": figures, "cases": rows}, indent=1))
    labels = [t for r in rows[:8] for t in ("input", "mask", "right" if r["right"] else "wrong")]
    image_grid(np.stack(shown), labels, cols=6, label_lines=1).save(out / "grid.png")
    return figures
