"""Stable unCLIP (Stable Diffusion 2.1 conditioned on a noise-augmented CLIP image embedding),
sampled exactly as diffusers' pipelines sample it.

Image variations as `StableUnCLIPImg2ImgPipeline`: the image's embedding (or `image_embeddings`)
noised to `noise_level`, beside the caption (empty by default), guided against the empty caption
and an all-zero class input; random numbers in diffusers' order (the embedding's noise, then the
latents, then the scheduler's). Text to image as `StableUnCLIPPipeline` built as diffusers' docs
build it: an unCLIP prior from `--prior-model` (Karlo's folder: its prior, text tower and
tokenizer, the prior scheduler's config as a DDPMScheduler; or ECLIPSE's Karlo prior in one pass)
draws the embedding first. tests/test_stable_unclip.py pins both at float32.

Beyond diffusers: variations by DDIM inversion of the VAE latent with the embedding kept,
interpolation and text diffs through the latent (captions through the prior folder's text tower,
in the image tower's space only for the -small folder), the PCA probe, RePaint in latent space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from unclip import validate
from unclip.data.transforms import to_output
from unclip.diffusion.sampling import Generators
from unclip.pipelines.base import Capabilities, Pipeline
from unclip.pipelines.diffusers_order import prior_loop, repeat_rows
from unclip.pipelines.output import UnCLIPOutput, call_settings, check_prompts
from unclip.pipelines.stable_unclip import stages
from unclip.pipelines.stable_unclip.folder import IMG2IMG, LAYOUT, load_folder

NETWORKS = ("image_encoder", "text_encoder", "unet", "vae")
CALL_SETTINGS = frozenset({
    "image", "image_embeddings", "prior", "negative_prompt", "height", "width", "num_inference_steps",
    "guidance_scale", "prior_num_inference_steps", "prior_guidance_scale", "decoder_num_inference_steps",
    "decoder_guidance_scale", "noise_level", "eta", "latents", "prior_latents"})


class StableUnclipPipeline(Pipeline):
    """A Stable unCLIP folder with, optionally, an unCLIP prior (`prior_model`) for text to image."""

    title = "Stable unCLIP model"
    load_options = ("prior_model",)
    offload_whole = ("prior_prior",)  # Karlo's prior: its CLIP statistics are read outside its forward
    folder_classes = (IMG2IMG,)

    def __init__(self, parts: dict, prior=None):
        """`parts`: the folder's components; `prior`: a KarloPipeline whose prior draws embeddings."""
        for name in LAYOUT:
            setattr(self, name, parts[name])
        self.prior_pipe = prior
        if prior is not None and prior.prior_kind == "diffusion":
            from diffusers import DDPMScheduler

            self.prior_scheduler = DDPMScheduler.from_config(prior.prior_scheduler.config)  # as diffusers' docs
        from diffusers import DDIMScheduler

        cfg = self.scheduler.config
        self.ddim = DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                                  beta_start=cfg.beta_start, beta_end=cfg.beta_end,
                                  prediction_type=cfg.prediction_type, clip_sample=False, set_alpha_to_one=False,
                                  timestep_spacing="trailing")

    @classmethod
    def _load(cls, path: Path, torch_dtype: torch.dtype = torch.float32, prior_model=None) -> StableUnclipPipeline:
        """A Stable unCLIP folder; `prior_model`: Karlo's folder, or [Karlo's folder, ECLIPSE's Karlo
        prior], whose prior draws the image embedding for text to image."""
        from unclip.pipelines.karlo import KarloPipeline
        from unclip.pipelines.locate import resolve_model

        parts = load_folder(path, torch_dtype)
        prior = None
        if prior_model is not None:
            paths = list(prior_model) if isinstance(prior_model, (list, tuple)) else [prior_model]
            if len(paths) > 2:
                raise ValueError("--prior-model takes Karlo's folder, and optionally ECLIPSE's Karlo prior after it")
            prior = KarloPipeline.from_pretrained(resolve_model(str(paths[0])), torch_dtype=torch_dtype,
                                                  prior_model=paths[1] if len(paths) == 2 else None)
            prior.require("prior")
            width, need = prior.text_encoder.config.projection_dim, parts["image_normalizer"].config.embedding_dim
            if width != need:
                raise ValueError(f"--prior-model {paths[0]}: its prior draws {width}-d image embeddings; this "
                                 f"Stable unCLIP folder's UNet takes {need}-d (Karlo's prior fits -unclip-small, "
                                 "CLIP ViT-L/14)")
        return cls(parts, prior)

    def save_pretrained(self, path: str | Path) -> None:
        from unclip.pipelines.stable_unclip.synthetic import write_folder

        write_folder({name: getattr(self, name) for name in LAYOUT}, path)

    # -- the contract -------------------------------------------------------------------------------
    def networks(self):
        own = [(n, getattr(self, n)) for n in NETWORKS]
        return own + ([] if self.prior_pipe is None else [(f"prior_{n}", m) for n, m in self.prior_pipe.networks()
                                                          if n in ("text_encoder", "prior")])

    @property
    def latent_decoder(self):
        return self.vae

    def sampled_networks(self):
        return [("unet", self.unet)] + ([("prior", self.prior_pipe.prior)] if self.prior_kind == "diffusion" else [])

    @property
    def prior_kind(self) -> str | None:
        return None if self.prior_pipe is None else self.prior_pipe.prior_kind

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(text_to_image=self.prior_pipe is not None, reads_images=True, inversion=True,
                            inpainting=True, priors=(self.prior_kind,) if self.prior_pipe is not None else (),
                            settings=CALL_SETTINGS)

    def sampling_defaults(self) -> dict:
        """diffusers' defaults (StableUnCLIPImg2ImgPipeline's; the prior's as StableUnCLIPPipeline's)."""
        diffusion = self.prior_kind == "diffusion"
        side = self.unet.config.sample_size * self.vae_factor
        return {"num_inference_steps": 20, "guidance_scale": 10.0, "noise_level": 0, "height": side, "width": side,
                "prior_num_inference_steps": 25 if diffusion else None,
                "prior_guidance_scale": 4.0 if diffusion else None}

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    # -- embeddings -----------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_images(self, images) -> torch.Tensor:
        """CLIP image embeddings (B, D) as projected, through the folder's feature extractor."""
        from PIL import Image

        pil = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images]
        pixels = self.feature_extractor(images=pil, return_tensors="pt").pixel_values
        return self.image_encoder(pixels.to(self.device, self.image_encoder.dtype)).image_embeds.float()

    @torch.no_grad()
    def embed_captions(self, captions: list[str]) -> torch.Tensor:
        """Caption embeddings in the image tower's space: the prior folder's projected text tower."""
        if self.prior_pipe is None:
            raise ValueError("Stable unCLIP folders hold no projected CLIP text tower: text diffs embed captions "
                             "with --prior-model (Karlo's folder: ViT-L/14, the space of -unclip-small)")
        return self.prior_pipe.embed_captions(captions)

    @torch.no_grad()
    def sample_prior(self, prompts: list[str], n: int, s: dict, generator: Generators = None,
                     latents: torch.Tensor | None = None) -> torch.Tensor:
        """Image embeddings (B * n, D) as StableUnCLIPPipeline's prior draws them."""
        if self.prior_pipe is None:
            raise ValueError("text to image needs an unCLIP prior: give --prior-model (Karlo's folder, e.g. "
                             "kakaobrain/karlo-v1-alpha), or pass image= for variations")
        p = self.prior_pipe
        cond = repeat_rows(p.encode_prompt(prompts), n)
        if self.prior_kind == "eclipse":
            return p.sample_prior(cond, {}, guidance_scale=0.0, steps=1, guided=False, generator=generator,
                                  latents=latents)
        guided = s["prior_guidance_scale"] > 1
        null = repeat_rows(p.encode_prompt([""] * len(prompts)), n)
        return prior_loop(p.prior, self.prior_scheduler, cond, null, guidance_scale=s["prior_guidance_scale"],
                          steps=s["prior_num_inference_steps"], guided=guided, generator=generator,
                          device=self.device, latents=latents)

    def caption_embeds(self, captions: list[str], generator: Generators = None) -> torch.Tensor:
        return self.sample_prior(captions, 1, call_settings(self), generator)

    # -- the pipeline call ----------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, *, image=None,
                 image_embeddings: torch.Tensor | None = None, negative_prompt: str | list[str] | None = None,
                 height: int | None = None, width: int | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, noise_level: int | None = None, eta: float = 0.0,
                 prior_num_inference_steps: int | None = None, prior_guidance_scale: float | None = None,
                 num_images_per_prompt: int = 1, generator: Generators = None, latents: torch.Tensor | None = None,
                 prior_latents: torch.Tensor | None = None, output_type: str = "pil", return_dict: bool = True,
                 prior: str | None = None, decoder_num_inference_steps: int | None = None,
                 decoder_guidance_scale: float | None = None):
        """Variations of `image` (PIL images or uint8 arrays) or of `image_embeddings` (B, D) as
        `StableUnCLIPImg2ImgPipeline`; without them, text to image through the prior as
        `StableUnCLIPPipeline`. diffusers' names; `decoder_*` are unclip's stage names for
        `num_inference_steps` and `guidance_scale`. Returns UnCLIPOutput(images, image_embeds), the
        embeddings before noise augmentation."""
        s = call_settings(self, height=height, width=width, num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale, prior_num_inference_steps=prior_num_inference_steps,
                    prior_guidance_scale=prior_guidance_scale, num_images_per_prompt=num_images_per_prompt,
                    prior=prior, decoder_num_inference_steps=decoder_num_inference_steps,
                    decoder_guidance_scale=decoder_guidance_scale, noise_level=noise_level)
        s["eta"] = validate.number("eta", eta, low=0.0, high=1.0)
        level = int(s["noise_level"])
        if not 0 <= level < self.image_noising_scheduler.config.num_train_timesteps:
            raise ValueError(f"noise_level must be in 0..{self.image_noising_scheduler.config.num_train_timesteps - 1}")
        n = num_images_per_prompt
        if image is not None or image_embeddings is not None:
            if image is not None and image_embeddings is not None:
                raise ValueError("give image or image_embeddings, not both")
            one = image is not None and not isinstance(image, list)
            z = self.embed_images([image] if one else image) if image is not None else image_embeddings.float()
            prompts = ([""] if one else [""] * len(z)) if prompt is None else check_prompts(prompt)
            rows = len(prompts) * n
            cond = stages.noise_embeds(self, z.to(self.device), level, generator)
            cond = cond.repeat(rows, 1) if len(z) == 1 else cond.repeat_interleave(rows // len(z), dim=0)
        else:
            prompts = check_prompts(prompt)
            z = self.sample_prior(prompts, n, s, generator, prior_latents)
            cond = stages.noise_embeds(self, z, level, generator)
        captions = [p for p in prompts for _ in range(n)]
        text, cond = stages.conditions(self, captions, cond, s["guidance_scale"] > 1, negative_prompt)
        lat = stages.latent_loop(self, text, cond, s, generator=generator, latents=latents)
        images = to_output(stages.to_pixels(self, lat), output_type)
        return UnCLIPOutput(images, z) if return_dict else (images,)

    @torch.no_grad()
    def inpaint(self, image, mask_image, prompt: str | list[str], *, like=None, num_images_per_prompt: int = 1,
                generator: Generators = None, resample: int = 1, noise_level: int | None = None,
                num_inference_steps: int | None = None, guidance_scale: float | None = None,
                prior_num_inference_steps: int | None = None, prior_guidance_scale: float | None = None,
                decoder_num_inference_steps: int | None = None, decoder_guidance_scale: float | None = None,
                output_type: str = "pil", return_dict: bool = True):
        """Repaint the white region of `mask_image` in `image` by RePaint in latent space: the
        image embedding from the image itself (or `like`), or from the prior given a prior; the
        input's pixels kept exactly outside the mask."""
        from unclip.pipelines.inpaint import Region, check_sampler
        check_sampler({"DDIMScheduler": "ddim", "DDPMScheduler": "ddpm"}.get(type(self.scheduler).__name__, "other"))
        validate.count("resample", resample, high=validate.MAX_STEPS)
        s = call_settings(self, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    prior_num_inference_steps=prior_num_inference_steps, prior_guidance_scale=prior_guidance_scale,
                    num_images_per_prompt=num_images_per_prompt, decoder_num_inference_steps=decoder_num_inference_steps,
                    decoder_guidance_scale=decoder_guidance_scale, noise_level=noise_level)
        prompts, n = check_prompts(prompt), num_images_per_prompt
        region = Region(image, mask_image, resample)
        if like is not None or self.prior_pipe is None:
            z = self.embed_images([like if like is not None else region.image]).expand(len(prompts) * n, -1)
        else:
            z = self.sample_prior(prompts, n, s, generator)
        cond = stages.noise_embeds(self, z, int(s["noise_level"]), generator)
        text, cond = stages.conditions(self, [p for p in prompts for _ in range(n)], cond, s["guidance_scale"] > 1)
        side = s["height"]
        known_px, keep_px, _ = region.at(side, self.device)
        f = self.vae_factor
        keep = (torch.nn.functional.interpolate(keep_px, (side // f, side // f), mode="area") > 0.999).float()
        s["width"] = side
        lat = stages.latent_loop(self, text, cond, s, generator=generator,
                                 inpaint=(stages.to_latents(self, known_px), keep, resample))
        images = to_output(region.composite(stages.to_pixels(self, lat).clamp(-1, 1)), output_type)
        return UnCLIPOutput(images, z) if return_dict else (images,)

    # -- what the manipulations need (unclip.tasks.manipulate) ----------------------------------------
    @property
    def default_decoder_guidance(self) -> float:
        return self.sampling_defaults()["guidance_scale"]

    def decoder_input(self, image: np.ndarray) -> torch.Tensor:
        from PIL import Image

        from unclip.data.transforms import resize_center_crop, to_tensor

        side = self.sampling_defaults()["height"]
        return to_tensor(np.array(resize_center_crop(Image.fromarray(image), side))).to(self.device)

    def decoder_noise_shape(self, side: int) -> tuple[int, ...]:
        return (self.unet.config.in_channels, side // self.vae_factor, side // self.vae_factor)

    @torch.no_grad()
    def invert_decoder(self, z_i: torch.Tensor, x0: torch.Tensor, *, steps: int, caption: str | None = None):
        """DDIM inversion of the unguided UNet from the VAE latent of x0 (pixels), the embedding kept."""
        return stages.invert(self, z_i, stages.to_latents(self, x0), steps, caption)

    @torch.no_grad()
    def decode_latents(self, z_i: torch.Tensor, x_T: torch.Tensor, *, steps: int, eta: float = 0.0,
                       guidance_scale: float = 1.0, caption: str | None = None, generator: Generators = None):
        lat = stages.ddim_decode(self, z_i, x_T, steps, eta, guidance_scale, generator, caption)
        return stages.to_pixels(self, lat)

    def upsample(self, images: torch.Tensor, **_) -> torch.Tensor:
        """The decoder draws at the output size: nothing to enlarge."""
        return images


__all__ = ["StableUnclipPipeline"]
