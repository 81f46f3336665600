"""Text to image files: `unclip generate`."""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from . import validate

STEP_KEYS = {"prior": "prior_num_inference_steps", "decoder": "decoder_num_inference_steps",
             "upsampler": "super_res_num_inference_steps"}
SAMPLER_KEYS = {"prior": "prior_sampler", "decoder": "decoder_sampler", "upsampler": "super_res_sampler"}


def read_prompts(prompts: list[str], prompts_file: str | Path | None = None) -> list[str]:
    """Prompts from the command line, then one per non-blank line of the file."""
    out = list(prompts)
    if prompts_file is not None:
        path = Path(prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompts file not found: {path}")
        try:
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except UnicodeDecodeError:
            raise ValueError(f"prompts file {path} is not UTF-8 text") from None
        if not lines:
            raise ValueError(f"prompts file {path} has no prompts")
        out += lines
    if not out:
        raise ValueError("give a prompt or --prompts-file")
    if any(not p.strip() for p in out):
        raise ValueError("empty prompt; prompts must have words in them")
    return out


def check_generate(num_prompts: int, num_images: int, seed: int, batch_size: int, **sampling) -> None:
    """Every setting of a generate run, before anything is loaded."""
    validate.count("num_images", num_images)
    validate.count("batch_size", batch_size)
    validate.seed(seed)
    validate.seed(seed + num_prompts * num_images - 1, "seed")  # image i gets seed + i
    validate.sampling(**sampling)


def parse_steps(items: list[str] | None) -> dict[str, int]:
    """["prior=25", "decoder=50"] -> {"prior_num_inference_steps": 25, "decoder_num_inference_steps": 50}."""
    out = {}
    for item in items or []:
        stage, _, value = item.partition("=")
        if stage not in STEP_KEYS or not value.isdigit() or not 1 <= int(value) <= validate.MAX_STEPS:
            raise ValueError(f"bad --steps item {item!r}; use e.g. prior=25 decoder=25 upsampler=7 "
                             f"(1..{validate.MAX_STEPS} steps)")
        out[STEP_KEYS[stage]] = int(value)
    return out


def parse_samplers(items: list[str] | None) -> dict[str, str]:
    """["decoder=dpm++"] -> {"decoder_sampler": "dpm++"}."""
    out = {}
    for item in items or []:
        stage, _, value = item.partition("=")
        if stage not in SAMPLER_KEYS or value not in validate.SAMPLERS:
            raise ValueError(f"bad --sampler item {item!r}; use e.g. decoder=dpm++ upsampler=ddim "
                             f"(samplers: {', '.join(validate.SAMPLERS)})")
        out[SAMPLER_KEYS[stage]] = value
    return out


RESULT = re.compile(r"^\d{5}\.png$")
MANIFEST = "manifest.jsonl"


def prepare_out(out: str | Path, overwrite: bool = False) -> Path:
    """Make `out` ready for a command's results before any work is done: create it, refuse it
    if it holds an earlier run's results (its manifest or numbered PNGs) unless `overwrite`,
    which removes just those, and check that it can be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    earlier = [p for p in out.iterdir() if p.name in (MANIFEST, "strip.png") or RESULT.match(p.name)] \
        if out.is_dir() else []
    if earlier and not overwrite:
        raise FileExistsError(f"--out {out} already holds results ({len(earlier)} files, e.g. {earlier[0].name}); "
                              "choose another folder, or pass --overwrite to replace them")
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".unclip-write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OSError(e.errno, f"cannot write to --out ({e.strerror})", str(out)) from None
    for p in earlier:
        p.unlink()
    return out


def write_images(out: Path, images, records: list[dict], manifest: list[str]) -> None:
    """Save uint8 images as numbered PNGs in `out`, appending one JSON line per image (its
    record plus "file", relative to the manifest) to `manifest`. Each PNG carries its record
    as a text chunk ("unclip"), so the image keeps its settings wherever it goes."""
    from PIL.PngImagePlugin import PngInfo

    for image, record in zip(images, records):
        name = f"{len(manifest):05d}.png"
        info = PngInfo()
        info.add_text("unclip", json.dumps(record))
        Image.fromarray(image).save(out / name, pnginfo=info)
        manifest.append(json.dumps({**record, "file": name}))


def finish_manifest(out: Path, lines: list[str]) -> Path:
    """Write the manifest whole or not at all (a temporary file renamed into place)."""
    path = out / MANIFEST
    tmp = path.with_name(MANIFEST + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in lines))
    os.replace(tmp, path)
    return path


def generate_files(pipe, prompts: list[str], out: str | Path, *, num_images: int = 1,
                   seed: int = 0, batch_size: int = 8, overwrite: bool = False, **sampling) -> Path:
    """Write `num_images` PNGs per prompt and `manifest.jsonl` ({prompt, file, seed} per image)
    to `out`. Image i has seed `seed + i` and depends on it alone, whatever the batch size.
    `pipe`: any pipeline (unclip's own or Karlo's); `sampling`: its call's keyword arguments,
    None meaning the pipeline's default. A folder holding earlier results is refused unless
    `overwrite`."""
    check_generate(len(prompts), num_images, seed, batch_size, **sampling)
    out = prepare_out(out, overwrite)
    given = {k: v for k, v in sampling.items() if v is not None}  # the rest: the model's defaults
    takes = inspect.signature(pipe.__call__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in takes.values()):
        for k in given.keys() - takes.keys():
            raise ValueError(f"{validate.FLAGS.get(k, k)} is not a setting of this model ({type(pipe).__name__})")
    jobs = [(p, seed + i) for i, p in enumerate(p for p in prompts for _ in range(num_images))]
    lines = []
    with tqdm(total=len(jobs), desc="generate", unit="img") as bar:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            generators = [torch.Generator().manual_seed(s) for _, s in chunk]
            images = pipe([p for p, _ in chunk], generator=generators, output_type="uint8", **given).images
            write_images(out, images, [{"prompt": p, "seed": s, **given} for p, s in chunk], lines)
            bar.update(len(chunk))
    return finish_manifest(out, lines)
