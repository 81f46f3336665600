"""Text to image files: `unclip generate`."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from unclip import validate

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


def check_out(out: str | Path, overwrite: bool = False, resume: bool = False) -> list[Path]:
    """The earlier results in `out` that `overwrite` will remove, after refusing a folder that
    holds some unless `overwrite` or `resume` (which keeps them) is given. Changes nothing."""
    out = Path(out)
    if overwrite and resume:
        raise ValueError("--overwrite replaces earlier results, --resume continues them: give one")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    earlier = [p for p in out.iterdir() if p.name in (MANIFEST, "strip.png") or RESULT.match(p.name)] \
        if out.is_dir() else []
    if earlier and not (overwrite or resume):
        raise FileExistsError(f"--out {out} already holds results ({len(earlier)} files, e.g. {earlier[0].name}); "
                              "choose another folder, pass --resume to continue that run, or --overwrite to "
                              "replace them")
    return [] if resume else earlier


def prepare_out(out: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Make `out` ready for a command's results before any work is done: create it, refuse it
    if it holds an earlier run's results (its manifest or numbered PNGs) unless `overwrite`,
    which removes just those, or `resume`, which keeps them; check that it can be written."""
    earlier = check_out(out, overwrite, resume)
    out = Path(out)
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
    for image, record in zip(images, records):
        name = f"{len(manifest):05d}.png"
        save_png(out / name, image, record)
        manifest.append(json.dumps({**record, "file": name}))


def save_png(path: Path, image, record: dict) -> None:
    """A PNG carrying its record, written whole or not at all (a crash leaves no half file)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("unclip", json.dumps(record))
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(image).save(tmp, format="PNG", pnginfo=info)
    os.replace(tmp, path)


def read_record(path: Path) -> dict | None:
    """The record a result PNG carries, None if there is no readable one."""
    try:
        with Image.open(path) as im:
            return json.loads(im.text["unclip"])
    except (OSError, KeyError, ValueError, AttributeError):
        return None


def finish_manifest(out: Path, lines: list[str]) -> Path:
    """Write the manifest whole or not at all (a temporary file renamed into place)."""
    path = out / MANIFEST
    tmp = path.with_name(MANIFEST + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in lines))
    os.replace(tmp, path)
    return path


def single_process() -> tuple[int, int, callable]:
    return 0, 1, lambda: None


def generate_files(pipe, prompts: list[str], out: str | Path, *, num_images: int = 1,
                   seed: int = 0, batch_size: int = 8, overwrite: bool = False, resume: bool = False,
                   process: tuple[int, int, callable] | None = None, deadline: float | None = None,
                   **sampling) -> Path:
    """Write `num_images` PNGs per prompt and `manifest.jsonl` ({prompt, file, seed, process}
    per image, in prompt order) to `out`. Image i is `i:05d.png`, has seed `seed + i` and
    depends on it alone, whatever the batch size or the process that draws it.
    `pipe`: any pipeline (unclip.pipelines.base); `sampling`: its call's keyword arguments, None meaning
    the pipeline's default. A folder holding earlier results is refused unless `overwrite`
    (which replaces them) or `resume` (which keeps every image already written with the same
    prompt, seed and settings and draws the rest). `process`: (rank, world size,
    wait_for_everyone) under `accelerate launch`: process r draws images r, r + world, ...; the
    main process writes the manifest once all are done. `deadline` (time.monotonic()): a
    TimeoutError before the next batch once it has passed (the web app's per-request limit)."""
    rank, world, wait = process or single_process()
    check_generate(len(prompts), num_images, seed, batch_size, **sampling)
    check_out(out, overwrite, resume)  # every process checks the same folder, then one changes it
    wait()
    if rank == 0:
        prepare_out(out, overwrite, resume)
    wait()
    out = Path(out)
    given = pipe.check_settings(**sampling)  # the rest: the model's defaults
    records = [{"prompt": p, "seed": seed + i, **given}
               for i, p in enumerate(p for p in prompts for _ in range(num_images))]
    mine = [i for i in range(rank, len(records), world)
            if not (resume and _same(read_record(out / f"{i:05d}.png"), records[i]))]
    with tqdm(total=len(mine), desc="generate" if world == 1 else f"generate (process {rank})", unit="img",
              position=rank) as bar:
        for start in range(0, len(mine), batch_size):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"stopped after {start} of {len(mine)} images: the time limit was reached")
            chunk = mine[start:start + batch_size]
            generators = [torch.Generator().manual_seed(records[i]["seed"]) for i in chunk]
            images = pipe([records[i]["prompt"] for i in chunk], generator=generators, output_type="uint8",
                          **given).images
            for i, image in zip(chunk, images):
                save_png(out / f"{i:05d}.png", image, {**records[i], "process": rank})
            bar.update(len(chunk))
    wait()
    path = out / MANIFEST
    if rank == 0:
        lines = []
        for i, record in enumerate(records):
            found = read_record(out / f"{i:05d}.png")
            if not _same(found, record):
                raise RuntimeError(f"{out / f'{i:05d}.png'} is missing after every process finished")
            lines.append(json.dumps({**found, "file": f"{i:05d}.png"}))
        finish_manifest(out, lines)
    wait()
    return path


def _same(found: dict | None, record: dict) -> bool:
    """Whether a PNG's record is the one asked for (which process drew it aside)."""
    return found is not None and {k: v for k, v in found.items() if k != "process"} == record
