"""What the web app does, without the page: each job takes plain values, checks them against
the request limits and the shared validation, runs the pipeline and writes its results as
files in the app's own folder (the only files it serves). Bad input raises ValueError with a
message for the person; the page shows it. The model is used through one line (web.batching):
jobs take turns, and generate requests with the same settings are drawn together."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from unclip import validate
from unclip.data.transforms import open_rgb, to_uint8
from unclip.tasks import manipulate as m
from unclip.tasks.evaluate.image_metrics import psnr as psnr_of
from unclip.web.batching import ModelLine


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (a public page is not a batch job)."""

    prompt_chars: int = 300
    prompts: int = 8
    images: int = 16  # images per request, prompts x images per prompt
    steps: int = 200
    frames: int = 16
    upload_mb: float = 20.0
    upload_pixels: int = 4096 * 4096
    seconds: float = 120.0  # a request's running time; checked between batches and stages


def save_png(folder: Path, image: np.ndarray, settings: dict) -> str:
    """A PNG that carries its settings (a JSON text chunk "unclip"), so a download keeps them."""
    info = PngInfo()
    info.add_text("unclip", json.dumps(settings))
    path = folder / f"{uuid.uuid4().hex[:12]}.png"
    Image.fromarray(image).save(path, pnginfo=info)
    return str(path)


class Jobs:
    def __init__(self, pipe, folder: str | Path, limits: Limits | None = None, line: ModelLine | None = None):
        self.pipe, self.limits = pipe, limits or Limits()
        self.line = line or ModelLine(pipe)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _request_folder(self) -> Path:
        path = self.folder / uuid.uuid4().hex[:12]
        path.mkdir()
        return path

    def read_image(self, path, what: str = "image") -> np.ndarray:
        """An uploaded file (a path the web framework gave to its own upload) as uint8 RGB."""
        if path is None:
            raise ValueError(f"upload an {what}")
        path = Path(path)
        if path.stat().st_size > self.limits.upload_mb * 2 ** 20:
            raise ValueError(f"the {what} is larger than {self.limits.upload_mb:g} MB")
        try:
            with Image.open(path) as probe:
                w, h = probe.size
        except Exception:  # noqa: BLE001 (PIL raises many types for foreign files)
            raise ValueError(f"the {what} is not an image PIL can read") from None
        if w * h > self.limits.upload_pixels:
            raise ValueError(f"the {what} has {w} x {h} pixels; the limit is {self.limits.upload_pixels:,}")
        try:
            return np.asarray(open_rgb(path))
        except ValueError:
            raise ValueError(f"the {what} is not an image PIL can read") from None

    def _check(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"this request ran past the server's {self.limits.seconds:g} s limit; "
                               "ask for fewer images or steps")

    def _steps(self, steps: int) -> int:
        return validate.count("steps", int(steps), high=self.limits.steps)

    def generate(self, prompts: str, num_images: int = validate.DEFAULTS["num_images"],
                 seed: int = validate.DEFAULTS["seed"], prior_guidance: float | None = None,
                 decoder_guidance: float | None = None, prior_steps: int | None = None,
                 decoder_steps: int | None = None, upsampler_steps: int | None = None,
                 prior: str | None = None) -> list[tuple[str, str]]:
        """Images for each non-blank line of `prompts`: [(png path, caption)]; image i has seed
        `seed + i`, batched with other requests or not."""
        from unclip.tasks.generate import check_generate, save_png

        lines = [ln.strip() for ln in (prompts or "").splitlines() if ln.strip()]
        if not lines:
            raise ValueError("type a prompt (one per line for several)")
        if len(lines) > self.limits.prompts:
            raise ValueError(f"{len(lines)} prompts; at most {self.limits.prompts} per request")
        if any(len(p) > self.limits.prompt_chars for p in lines):
            raise ValueError(f"a prompt is longer than {self.limits.prompt_chars} characters")
        num_images, seed = int(num_images), int(seed)
        if len(lines) * num_images > self.limits.images:
            raise ValueError(f"{len(lines)} prompts x {num_images} images; at most {self.limits.images} per request")
        prior = prior or self.priors()[0]
        if prior not in self.priors():
            raise ValueError(f"unknown prior {prior!r}; this model has {', '.join(self.priors())}")
        sampling = {"prior_guidance_scale": prior_guidance, "decoder_guidance_scale": decoder_guidance,
                    "prior_num_inference_steps": prior_steps and self._steps(prior_steps),
                    "decoder_num_inference_steps": decoder_steps and self._steps(decoder_steps),
                    "super_res_num_inference_steps": upsampler_steps and self._steps(upsampler_steps),
                    "prior": prior if prior != self.priors()[0] else None}  # None: the model's own default
        check_generate(len(lines), num_images, seed, 1, **sampling)
        given = self.pipe.check_settings(**sampling)
        key = frozenset((k, repr(v)) for k, v in {**self.pipe.sampling_defaults(), **given}.items())
        records = [{"prompt": p, "seed": seed + i, **given}
                   for i, p in enumerate(p for p in lines for _ in range(num_images))]
        images = self.line.draw([r["prompt"] for r in records], [r["seed"] for r in records], given, key,
                                seconds=self.limits.seconds)
        out = self._request_folder()
        for i, (image, record) in enumerate(zip(images, records)):
            save_png(out / f"{i:05d}.png", image, record)
        return [(str(out / f"{i:05d}.png"), f"{r['prompt']} (seed {r['seed']})") for i, r in enumerate(records)]

    def priors(self) -> list[str]:
        """The priors the model has, its default first."""
        return list(self.pipe.capabilities.priors) or ["none"]

    def vary(self, image, num_images: int = validate.DEFAULTS["vary_num_images"],
             eta: float = validate.DEFAULTS["eta"], seed: int = validate.DEFAULTS["seed"],
             steps: int = validate.DEFAULTS["steps"]) -> tuple[str, str, list[tuple[str, str]]]:
        """(the inversion's reconstruction, its PSNR as text, the variations)."""
        img = self.read_image(image)
        num_images, steps = int(num_images), self._steps(steps)
        if num_images > self.limits.images:
            raise ValueError(f"at most {self.limits.images} variations per request")
        m.check_settings(steps=steps, seed=int(seed), num=num_images, eta=float(eta))
        def run():
            deadline = time.monotonic() + self.limits.seconds
            inverted = m.invert(self.pipe, img, steps=steps)
            z_i, x_T, x0 = inverted
            self._check(deadline)
            rec = self.pipe.decode_latents(z_i, x_T, steps=steps)
            frames = m.vary(self.pipe, img, num_images, eta=float(eta), seed=int(seed), steps=steps, inverted=inverted)
            return rec, psnr_of(rec, x0), frames

        rec, psnr, frames = self.line.run(run)
        out = self._request_folder()
        settings = {"job": "vary", "eta": float(eta), "seed": int(seed), "steps": steps}
        rec_path = save_png(out, to_uint8(rec)[0], {**settings, "reconstruction": True})
        gallery = [(save_png(out, f, {**settings, "index": i}), f"variation {i} (seed {int(seed) + i})")
                   for i, f in enumerate(frames)]
        return rec_path, f"reconstruction PSNR {psnr:.2f} dB at {rec.shape[-1]} px ({steps} DDIM steps)", gallery

    def _strip_and_gif(self, out: Path, frames: np.ndarray, thetas: list, settings: dict):
        from unclip.plot import image_grid

        strip = image_grid(frames, [f"theta {t:.2f}" for t in thetas], cols=len(frames), label_lines=1)
        strip_path = out / "strip.png"
        strip.save(strip_path)
        gif_path = out / "frames.gif"
        pics = [Image.fromarray(f) for f in frames]
        pics[0].save(gif_path, save_all=True, append_images=pics[1:] + pics[-2:0:-1], duration=300, loop=0)
        gallery = [(save_png(out, f, {**settings, "theta": t}), f"theta {t:.2f}") for f, t in zip(frames, thetas)]
        return str(strip_path), str(gif_path), gallery

    def interpolate(self, image_a, image_b, frames: int = validate.DEFAULTS["frames"],
                    latent: str = validate.DEFAULTS["latent"], seed: int = validate.DEFAULTS["seed"],
                    steps: int = validate.DEFAULTS["steps"]):
        """(strip PNG, animated GIF, frames)."""
        a, b = self.read_image(image_a, "first image"), self.read_image(image_b, "second image")
        frames, steps = int(frames), self._steps(steps)
        if frames > self.limits.frames:
            raise ValueError(f"at most {self.limits.frames} frames")
        pics, thetas = self.line.run(lambda: m.interpolate(self.pipe, a, b, frames, latent=latent,
                                                           seed=int(seed), steps=steps))
        settings = {"job": "interpolate", "latent": latent, "seed": int(seed), "steps": steps}
        return self._strip_and_gif(self._request_folder(), pics, thetas, settings)

    def edit(self, image, to_caption: str, from_caption: str = "", max_theta: float = validate.DEFAULTS["max_theta"],
             frames: int = validate.DEFAULTS["frames"], seed: int = validate.DEFAULTS["seed"],
             steps: int = validate.DEFAULTS["steps"]):
        """(strip PNG, animated GIF, frames) from the image towards `to_caption`."""
        img = self.read_image(image)
        if not (to_caption or "").strip():
            raise ValueError("type the target caption")
        for caption in (to_caption, from_caption or ""):
            if len(caption) > self.limits.prompt_chars:
                raise ValueError(f"a caption is longer than {self.limits.prompt_chars} characters")
        frames, steps = int(frames), self._steps(steps)
        if frames > self.limits.frames:
            raise ValueError(f"at most {self.limits.frames} frames")
        pics, thetas = self.line.run(lambda: m.text_diff(self.pipe, img, to_caption, (from_caption or "").strip() or None,
                                                         frames, max_theta=float(max_theta), seed=int(seed),
                                                         steps=steps))
        settings = {"job": "edit", "to": to_caption, "from": from_caption, "seed": int(seed), "steps": steps}
        return self._strip_and_gif(self._request_folder(), pics, thetas, settings)

    def inpaint(self, image, mask, caption: str, num_images: int = validate.DEFAULTS["vary_num_images"],
                seed: int = validate.DEFAULTS["seed"], resample: int = validate.DEFAULTS["resample"]):
        """Repaint the white part of `mask` in `image` (each an uploaded file's path, or a uint8
        array from the page's editor) to agree with `caption`: (strip PNG, results)."""
        from unclip.plot import image_grid

        img = image if isinstance(image, np.ndarray) else self.read_image(image)
        if img.shape[0] * img.shape[1] > self.limits.upload_pixels:
            raise ValueError(f"the image has {img.shape[1]} x {img.shape[0]} pixels; the limit is "
                             f"{self.limits.upload_pixels:,}")
        mask = mask if isinstance(mask, np.ndarray) else self.read_image(mask, "mask")
        caption = (caption or "").strip()
        if not caption:
            raise ValueError("type the caption the repainted image should match")
        if len(caption) > self.limits.prompt_chars:
            raise ValueError(f"the caption is longer than {self.limits.prompt_chars} characters")
        num_images, seed, resample = int(num_images), int(seed), int(resample)
        if num_images > self.limits.images:
            raise ValueError(f"at most {self.limits.images} images per request")
        validate.count("resample", resample, high=8)
        if not self.pipe.capabilities.inpainting:
            raise ValueError(f"this {self.pipe.title} cannot inpaint")
        gens = [torch.Generator().manual_seed(seed + i) for i in range(num_images)]
        images = self.line.run(lambda: self.pipe.inpaint(img, mask, caption, num_images_per_prompt=num_images,
                                                         generator=gens, resample=resample,
                                                         output_type="uint8").images)
        out = self._request_folder()
        settings = {"job": "inpaint", "prompt": caption, "resample": resample}
        gallery = [(save_png(out, im, {**settings, "seed": seed + i}), f"seed {seed + i}")
                   for i, im in enumerate(images)]
        side = images.shape[1]
        shown = [np.asarray(Image.fromarray(a).convert("RGB").resize((side, side))) for a in (img, mask)]
        strip = out / "strip.png"
        image_grid(np.stack([*shown, *images]), ["input", "mask", *[c for _, c in gallery]], cols=num_images + 2,
                   label_lines=1).save(strip)
        return str(strip), gallery


def describe(pipe, path) -> str:
    """The About tab: what the loaded model is, and what the shapes world can draw."""
    from unclip.data import shapes

    def params(module) -> str:
        return f"{sum(p.numel() for p in module.parameters()) / 1e6:.1f} M parameters"

    caps = pipe.capabilities
    dtype = str(pipe.dtype).removeprefix("torch.")
    rows = [f"- folder: `{path}`", f"- kind: {pipe.title} ({type(pipe).__name__}), on {pipe.device} in {dtype}",
            f"- priors: {', '.join(caps.priors) or 'none'}; reranking: {'yes' if caps.reranking else 'no'}"]
    rows += [f"- {name}: {params(net)}" for name, net in pipe.networks()]
    defaults = {k: v for k, v in pipe.sampling_defaults().items() if v is not None}
    rows.append("- sampling defaults: " + ", ".join(f"{k} {v}" for k, v in defaults.items()))
    vocab = [
        "The shipped model knows the **shapes world**: one or two objects on a plain background.",
        f"- colours: {', '.join(shapes.COLOURS)}", f"- shapes: {', '.join(shapes.SHAPES)}",
        f"- sizes: {', '.join(shapes.SIZES)}", f"- places: {', '.join(shapes.PLACES)}",
        f"- relations (two objects): {', '.join(shapes.RELATIONS)}",
        f"- backgrounds: {', '.join(shapes.BACKGROUNDS)}",
        f"- never trained on (held out): {', '.join(f'{c} {s}' for c, s in shapes.HELD_OUT)}",
        "- e.g. *a large red circle on the left on a white background*, "
        "*a blue square above a green star on a black background*",
    ]
    return "\n".join(["### The loaded model", *rows, "", "### What it can draw", *vocab])

