"""Checks of the settings a person gives, shared by the command line and the Python API, so
that both reject the same values with the same words. Each message names the setting, in the
API's spelling and, where there is one, the command line's flag."""

from __future__ import annotations

import math

# API keyword -> command-line flag.
FLAGS = {
    "prior_guidance_scale": "--prior-guidance", "decoder_guidance_scale": "--decoder-guidance",
    "prior_num_inference_steps": "--steps prior=N", "decoder_num_inference_steps": "--steps decoder=N",
    "super_res_num_inference_steps": "--steps upsampler=N", "num_images_per_prompt": "--num-images",
    "num_images": "--num-images", "batch_size": "--batch-size", "seed": "--seed", "eta": "--eta",
    "steps": "--steps", "frames": "--frames", "max_theta": "--max-theta", "prior": "--prior",
    "rerank": "--rerank", "upscale": "--upscale", "prior_sampler": "--sampler prior=NAME",
    "decoder_sampler": "--sampler decoder=NAME", "super_res_sampler": "--sampler upsampler=NAME",
    "resample": "--resample", "rerank_threshold": "--rerank-threshold", "height": "--height", "width": "--width",
    "negative_prompt": "--negative-prompt", "num_inference_steps": "--steps decoder=N",
    "guidance_scale": "--decoder-guidance", "noise_level": "--noise-level", "compose": "--compose",
}
# The defaults of every setting a person can give, read by the command line and the web app
# alike (one source of truth). Sampling settings left out here default to the model's own.
DEFAULTS = {
    "num_images": 1, "seed": 0, "batch_size": 8,  # generate
    "steps": 50,  # DDIM steps of inversion and decoding in the manipulations
    "vary_num_images": 4, "eta": 1.0,  # vary
    "frames": 5, "latent": "inverted",  # interpolate, edit
    "max_theta": 0.5,  # edit
    "resample": 1,  # inpaint
}
MAX_SEED = 2 ** 63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
MAX_STEPS = 1000  # the training timesteps of every model here
SAMPLERS = ("ddpm", "ddim", "dpm++", "unipc")  # diffusion.schedules.make_scheduler
PRIORS = ("diffusion", "ar", "eclipse", "text", "none")  # what gives the decoder its image embedding (Sec. 5.1)
UPSCALES = ("upsampler", "bicubic")  # DALL-E 1: from the dVAE's size to twice it


def _name(name: str) -> str:
    flag = FLAGS.get(name)
    return f"{name} ({flag})" if flag else name


def number(name: str, value, *, low: float | None = None, high: float | None = None) -> float:
    """A finite real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{_name(name)} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if low is not None and high is not None else \
            f"at least {low}" if low is not None else f"at most {high}"
        raise ValueError(f"{_name(name)} must be {bounds}, got {value!r}")
    return float(value)


def count(name: str, value, *, low: int = 1, high: int | None = None) -> int:
    """A whole number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{_name(name)} must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"in {low}..{high}" if high is not None else f"at least {low}"
        raise ValueError(f"{_name(name)} must be {bounds}, got {value}")
    return value


def seed(value, name: str = "seed") -> int:
    return count(name, value, low=0, high=MAX_SEED)


def choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{_name(name)} must be one of {', '.join(choices)}, got {value!r}")
    return value


def prior(value) -> str:
    return choice("prior", value, PRIORS)


def sampling(**settings) -> dict:
    """Guidance scales (>= 0), step counts (1..1000), samplers and the prior of a pipeline call; None
    means the model's default and passes."""
    for name, value in settings.items():
        if value is None:
            continue
        if name == "prior":
            prior(value)
        elif name.endswith("sampler"):
            choice(name, value, SAMPLERS)
        elif name == "upscale":
            choice(name, value, UPSCALES)
        elif name == "rerank":
            count(name, value)
        elif name == "rerank_threshold":
            number(name, value, low=-1.0, high=1.0)
        elif name.endswith("guidance_scale"):
            number(name, value, low=0.0)
        elif name.endswith("num_inference_steps"):
            count(name, value, high=MAX_STEPS)
        elif name in ("num_images_per_prompt", "height", "width"):
            count(name, value, low=1 if name == "num_images_per_prompt" else 8,
                  high=None if name == "num_images_per_prompt" else 4096)
        elif name == "compose":
            if not isinstance(value, bool):
                raise ValueError(f"{_name(name)} must be true or false (on / off), got {value!r}")
        elif name == "noise_level":
            count(name, value, low=0, high=MAX_STEPS - 1)
        elif name == "negative_prompt":
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{_name(name)} must be a non-empty string")
        else:
            raise KeyError(name)
    return settings
