"""`unclip eval shapes`: generate the eval split's canonical prompts (or read a manifest of
images from anywhere) and score every image against its prompt with the shapes detector.

Figures per subset (in_distribution, novel): for single-object prompts the accuracy of each
attribute and the share with everything right; for two-object prompts the share with both
named objects found and the share with the relation (and background) right; when a CLIP is
at hand, the CLIP score (cosine of image and prompt embeddings); and over all images the
speckle figure: the share of background pixels (more than 2 px from every object) more than
24/255 off the background colour in some channel; and the share of images with more objects
found than the prompt names (stray fragments, which the two-object verdicts do not see).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unclip.data import shapes
from unclip.data.transforms import open_rgb
from unclip.plot import image_grid
from unclip.tasks.evaluate.detector import Detector, parse_prompt, score
from unclip.tasks.evaluate.masks import speckle_share

SINGLE_KEYS = ("shape", "colour", "size", "place", "background", "all")
TWO_KEYS = ("objects", "relation", "all")


def subset_of(scene: shapes.Scene) -> str:
    held = any((o.colour, o.shape) in shapes.HELD_OUT for o in scene.objects)
    return "novel" if held else "in_distribution"


def summarize(scenes: list[shapes.Scene], verdicts: list[dict], clip_scores: list[float] | None) -> dict:
    figures = {}
    for subset in ("in_distribution", "novel"):
        rows = [i for i, s in enumerate(scenes) if subset_of(s) == subset]
        if not rows:
            continue
        out = {}
        for kind, keys in (("single", SINGLE_KEYS), ("two", TWO_KEYS)):
            chosen = [i for i in rows if (len(scenes[i].objects) == 1) == (kind == "single")]
            if chosen:
                out[kind] = {k: float(np.mean([verdicts[i][k] for i in chosen])) for k in keys}
                out[kind]["images"] = len(chosen)
        if clip_scores is not None:
            out["clip_score"] = float(np.mean([clip_scores[i] for i in rows]))
        figures[subset] = out
    return figures


@torch.no_grad()
def clip_score(pipe, images: np.ndarray, prompts: list[str]) -> list[float]:
    """Cosine of each image's and prompt's CLIP embeddings, by the pipeline's own CLIP."""
    img = F.normalize(pipe.embed_images(list(images)), dim=-1)
    txt = F.normalize(pipe.embed_captions(prompts), dim=-1)
    return (img * txt).sum(-1).tolist()


def write_report(out: Path, figures: dict, images: np.ndarray, prompts: list[str], verdicts: list[dict],
                 grid_size: int = 24) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(figures, indent=2))
    n = min(grid_size, len(images))
    grid = image_grid(images[:n], prompts[:n], cols=6, marks=[v["all"] for v in verdicts[:n]])
    grid.save(out / "grid.png")


def evaluate_model(pipe, out: str | Path, num: int = 500, batch_size: int = 16, seed: int = 0,
                   resume: bool = False, process=None, **sampling) -> dict | None:
    """Generate the first `num` eval prompts (image i with seed `seed + i`) into `out/images`
    (PNGs and a manifest, as `unclip generate` writes them: split over processes under
    `accelerate launch`, and continued with `resume`) and score them. Returns the figures
    (None on every process but the main one)."""
    from unclip.tasks.generate import generate_files

    prompts = [it.prompt for it in shapes.eval_split(num)]
    manifest = generate_files(pipe, prompts, Path(out) / "images", seed=seed, batch_size=batch_size,
                              overwrite=not resume, resume=resume, process=process, **sampling)
    if process is not None and process[0] != 0:
        return None
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    images = np.stack([np.asarray(open_rgb(manifest.parent / r["file"])) for r in records])
    return score_images(images, prompts, out, pipe if pipe.capabilities.reads_images else None)


def evaluate_manifest(manifest: str | Path, out: str | Path, scorer=None) -> dict:
    """Score the images a manifest.jsonl lists ({"prompt", "file"} per line, file relative
    to the manifest), e.g. the output of `unclip generate` or of another model; `scorer`: a
    pipeline whose CLIP gives the CLIP score (None: no CLIP score)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    if not records:
        raise ValueError(f"manifest {manifest} lists no images")
    prompts = [r["prompt"] for r in records]
    images = [np.asarray(open_rgb(manifest.parent / r["file"]).resize((128, 128))) for r in records]
    return score_images(np.stack(images), prompts, out, scorer)


def score_images(images: np.ndarray, prompts: list[str], out, scorer) -> dict:
    """Score uint8 images (B, H, W, 3) against their prompts, write report.json and grid.png to
    `out`; `scorer`: a pipeline whose CLIP gives the CLIP score (None: none)."""
    detector = Detector()
    scenes = [parse_prompt(p) for p in prompts]
    found = [detector(img) for img in images]
    verdicts = [score(det, scene) for det, scene in zip(found, scenes)]
    scores = None
    if scorer is not None:
        scores = sum((clip_score(scorer, images[i:i + 100], prompts[i:i + 100]) for i in range(0, len(images), 100)), [])
    figures = summarize(scenes, verdicts, scores)
    # speckle: the share of background pixels off the background colour (masks.speckle_share),
    # averaged over every image at its own size
    figures["speckle"] = float(np.mean([speckle_share(img) for img in images]))
    # stray fragments: two-object verdicts ignore objects beyond the named ones, so count them here
    figures["extra_objects"] = float(np.mean([len(det.objects) > len(s.objects) for det, s in zip(found, scenes)]))
    write_report(Path(out), figures, images, prompts, verdicts)
    return figures


@torch.no_grad()
def diversity(pipe, prompts: list[str], samples: int = 4, seed: int = 10_000, **sampling) -> float:
    """Mean pairwise cosine distance between the CLIP image embeddings of `samples` images per prompt."""
    dists = []
    for i, prompt in enumerate(prompts):
        gens = [torch.Generator().manual_seed(seed + i * samples + j) for j in range(samples)]
        images = pipe([prompt] * samples, generator=gens, output_type="uint8", **sampling).images
        z = F.normalize(pipe.embed_images(list(images)), dim=-1)
        pairs = ~torch.eye(samples, dtype=torch.bool)
        dists.append((1 - (z @ z.t())[pairs]).mean().item())
    return sum(dists) / len(dists)


def headline(figures: dict) -> dict:
    """The figures a comparison table shows, from evaluate_model's: all right on single and two
    objects (in distribution and novel pairs), the CLIP score over every image, speckle."""
    ind, nov = figures["in_distribution"], figures["novel"]
    sizes = [sum(f[k]["images"] for k in ("single", "two")) for f in (ind, nov)]
    clip_score = (ind["clip_score"] * sizes[0] + nov["clip_score"] * sizes[1]) / sum(sizes) \
        if "clip_score" in ind else None
    return {"single": ind["single"]["all"], "two": ind["two"]["all"], "novel_single": nov["single"]["all"],
            "novel_two": nov["two"]["all"], "clip_score": clip_score, "speckle": figures["speckle"]}
