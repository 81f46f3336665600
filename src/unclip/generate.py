"""Text to image files: `unclip generate`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

STEP_KEYS = {"prior": "prior_num_inference_steps", "decoder": "decoder_num_inference_steps",
             "upsampler": "super_res_num_inference_steps"}


def read_prompts(prompts: list[str], prompts_file: str | Path | None = None) -> list[str]:
    """Prompts from the command line, then one per non-blank line of the file."""
    out = list(prompts)
    if prompts_file is not None:
        path = Path(prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompts file not found: {path}")
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        if not lines:
            raise ValueError(f"prompts file {path} has no prompts")
        out += lines
    if not out:
        raise ValueError("give a prompt or --prompts-file")
    if any(not p.strip() for p in out):
        raise ValueError("empty prompt; prompts must have words in them")
    return out


def parse_steps(items: list[str] | None) -> dict[str, int]:
    """["prior=25", "decoder=50"] -> {"prior_num_inference_steps": 25, "decoder_num_inference_steps": 50}."""
    out = {}
    for item in items or []:
        stage, _, value = item.partition("=")
        if stage not in STEP_KEYS or not value.isdigit() or int(value) < 1:
            raise ValueError(f"bad --steps item {item!r}; use e.g. prior=25 decoder=25 upsampler=7")
        out[STEP_KEYS[stage]] = int(value)
    return out


def write_images(out: Path, images, records: list[dict], manifest: list[str]) -> None:
    """Save uint8 images as numbered PNGs in `out`, appending one JSON line per image (its
    record plus "file", relative to the manifest) to `manifest`."""
    for image, record in zip(images, records):
        name = f"{len(manifest):05d}.png"
        Image.fromarray(image).save(out / name)
        manifest.append(json.dumps({**record, "file": name}))


def finish_manifest(out: Path, lines: list[str]) -> Path:
    path = out / "manifest.jsonl"
    path.write_text("".join(ln + "\n" for ln in lines))
    return path


def generate_files(pipe, prompts: list[str], out: str | Path, *, num_images: int = 1,
                   seed: int = 0, batch_size: int = 8, **sampling) -> Path:
    """Write `num_images` PNGs per prompt and `manifest.jsonl` ({prompt, file, seed} per image)
    to `out`. Image i has seed `seed + i` and depends on it alone, whatever the batch size.
    `pipe`: any pipeline (unclip's own or Karlo's); `sampling`: its call's keyword arguments,
    None meaning the pipeline's default."""
    if num_images < 1 or batch_size < 1:
        raise ValueError("--num-images and --batch-size must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(p, seed + i) for i, p in enumerate(p for p in prompts for _ in range(num_images))]
    lines = []
    with tqdm(total=len(jobs), desc="generate", unit="img") as bar:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            generators = [torch.Generator().manual_seed(s) for _, s in chunk]
            images = pipe([p for p, _ in chunk], generator=generators, output_type="uint8",
                          **{k: v for k, v in sampling.items() if v is not None}).images
            write_images(out, images, [{"prompt": p, "seed": s} for p, s in chunk], lines)
            bar.update(len(chunk))
    return finish_manifest(out, lines)
