"""Karlo's unCLIP, sampled exactly as diffusers' (deprecated) `UnCLIPPipeline` samples it.

Stages: CLIP text tower -> diffusion prior (x0-prediction, fixed small variance) -> decoder
(epsilon with a learned variance range, guidance on the 3 epsilon channels) -> one 64->256
super-resolution stage whose last step uses a separate UNet. Every random number is drawn from
the caller's generator in diffusers' order: prior latents, one noise per prior step after its
model call (none at t = 0), decoder latents and step noises, super-res latents and step noises.
docs/karlo.md lists the details; tests/test_karlo.py pins equality (at float32).

Beyond diffusers: image embeddings in and out, DDIM inversion of the decoder and DDIM decoding
at any eta (what the manipulations in `unclip.tasks.manipulate` need), and compute in bf16/fp16 with
the latents and the scheduler's arithmetic kept in fp32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unclip import validate
from unclip.data.transforms import to_output
from unclip.diffusion.sampling import Generators, ddim_invert, sample
from unclip.diffusion.schedules import make_scheduler
from unclip.models.decoder.conditioning import DecoderConditioning
from unclip.pipelines.base import Capabilities, Pipeline
from unclip.pipelines.components import prior_kind
from unclip.pipelines.diffusers_order import (
    encode_prompt,
    prior_loop,
    randn,
    repeat_rows,
    unclip_loop,
    with_null,
)
from unclip.pipelines.karlo.folder import (
    LAYOUT,
    SCHEDULERS,
    TEXT_TO_IMAGE,
    VARIATIONS,
    conditioning_from,
    diffusers_text_proj,
    load_parts,
)
from unclip.pipelines.output import UnCLIPOutput, check_prompts

NETWORKS = ("text_encoder", "image_encoder", "prior", "text_proj", "decoder", "super_res_first", "super_res_last")


CALL_SETTINGS = frozenset({
    "image", "image_embeddings", "prior", "prior_num_inference_steps", "decoder_num_inference_steps",
    "super_res_num_inference_steps", "prior_guidance_scale", "decoder_guidance_scale", "prior_latents",
    "decoder_latents", "super_res_latents"})


class KarloPipeline(Pipeline):
    """A Karlo folder (text to image, or image variations) behind unclip's pipeline contract."""

    title = "Karlo model"
    offload_whole = ("prior",)  # its CLIP statistics are read outside its forward
    load_options = ("image_encoder", "prior_model")
    folder_classes = (TEXT_TO_IMAGE, VARIATIONS)

    def __init__(self, components: dict, folder_class: str = TEXT_TO_IMAGE):
        """`components`: as `karlo.folder.load_folder` returns them, or a diffusers pipeline's
        `.components`."""
        self.folder_class = folder_class
        self.tokenizer = components["tokenizer"]
        self.text_encoder = components["text_encoder"]
        self.prior = components.get("prior")
        self.prior_scheduler = components.get("prior_scheduler")
        self.text_proj, self.decoder = components["text_proj"], components["decoder"]
        if not isinstance(self.text_proj, DecoderConditioning):  # diffusers' UnCLIPTextProjModel, in memory
            proj = conditioning_from(dict(self.text_proj.config))
            proj.load_state_dict(self.text_proj.state_dict())
            self.text_proj = proj.to(self.decoder.dtype).eval()
        self.decoder_scheduler = components["decoder_scheduler"]
        self.super_res_first, self.super_res_last = components["super_res_first"], components["super_res_last"]
        self.super_res_scheduler = components["super_res_scheduler"]
        self.image_encoder = components.get("image_encoder")
        self.feature_extractor = components.get("feature_extractor")
        for unet in (self.super_res_first, self.super_res_last):
            # NHWC convolutions: super-res 1.21x faster on this CPU (benchmarks/vs_diffusers.py). Not
            # the decoder: there it bought 2% and moved pixels by up to 182/255 on a random model.
            unet.to(memory_format=torch.channels_last)
        # DDIM over the decoder's own training betas, for inversion and eta-controlled decoding.
        self.ddim = make_scheduler("ddim", num_train_timesteps=self.decoder_scheduler.config.num_train_timesteps,
                                   prediction_type="epsilon", clip_sample_range=1.0)

    @classmethod
    def _load(cls, path: Path, torch_dtype: torch.dtype = torch.float32, image_encoder: str | Path | None = None,
              prior_model: str | Path | None = None) -> KarloPipeline:
        """Load a Karlo folder. `image_encoder`: a variations folder whose image tower (and
        feature extractor) to add, so that a text-to-image folder can also edit images.
        `prior_model`: an ECLIPSE prior folder (as published for Karlo) in place of Karlo's
        diffusion prior, which is then not loaded."""
        from unclip.pipelines.locate import resolve_model

        if isinstance(prior_model, (list, tuple)):
            if len(prior_model) != 1:
                raise ValueError("a Karlo folder takes one --prior-model: an ECLIPSE prior folder")
            prior_model = prior_model[0]
        prior_model, image_encoder = (None if p is None else resolve_model(str(p)) for p in (prior_model, image_encoder))
        folder_class, parts = load_parts(path, torch_dtype, image_encoder, prior_model)
        return cls(parts, folder_class)

    # -- the contract (unclip.pipelines.base) -------------------------------------------------------------
    def networks(self):
        return [(n, getattr(self, n)) for n in NETWORKS if getattr(self, n) is not None]

    def sampled_networks(self):
        names = ("decoder", "super_res_first", "super_res_last") + (("prior",) if self.prior_kind == "diffusion" else ())
        return [(n, getattr(self, n)) for n in names if getattr(self, n) is not None]

    @property
    def prior_kind(self) -> str | None:
        return prior_kind(self.prior)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(text_to_image=self.prior is not None, reads_images=self.image_encoder is not None,
                            inversion=True, inpainting=True, priors=(self.prior_kind,) if self.prior is not None else (),
                            settings=CALL_SETTINGS)

    def _guided(self, prior_guidance_scale: float, decoder_guidance_scale: float) -> bool:
        """Whether the empty caption's rows are computed: Karlo guides prior and decoder alike;
        an ECLIPSE prior has no guidance, so the decoder's scale alone decides (as ECLIPSE's pipeline)."""
        if self.prior_kind == "eclipse":
            return decoder_guidance_scale > 1.0
        return prior_guidance_scale > 1.0 or decoder_guidance_scale > 1.0

    def save_pretrained(self, path: str | Path) -> None:
        """The folder in Karlo's layout (diffusers' UnCLIPPipeline or UnCLIPImageVariationPipeline)."""
        from unclip.pipelines.karlo.synthetic import write_folder

        if self.prior_kind == "eclipse":
            raise ValueError("this pipeline's prior is an ECLIPSE prior, which Karlo's layout has no place for: "
                             "save the Karlo folder from the pipeline without it, and keep the ECLIPSE folder apart")
        parts = {name: getattr(self, name) for name in (*NETWORKS, "tokenizer", "feature_extractor", *SCHEDULERS)}
        parts["text_proj"] = diffusers_text_proj(self.text_proj)
        # the folder's own layout: an image tower added with --image-encoder is not written
        write_folder({k: v for k, v in parts.items() if v is not None and k in LAYOUT[self.folder_class]}, path)

    @property
    def image_size(self) -> int:
        """The side of the final images."""
        return self.super_res_first.config.sample_size

    @property
    def base_size(self) -> int:
        return self.decoder.config.sample_size

    def require(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) is None:
                hint = {"prior": "text to image needs the prior: use the karlo-v1-alpha folder",
                        "image_encoder": "reading images needs an image tower: use the "
                        "karlo-v1-alpha-image-variations folder, or add its tower with --image-encoder DIR"}
                raise ValueError(f"this Karlo folder ({self.folder_class}) has no {name}; {hint.get(name, '')}")

    # -- conditioning -------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> dict:
        """text_embed (B, D) as projected (not normalised), text_encodings (B, 77, W), mask (B, 77).
        The text tower runs without an attention mask, as in Karlo."""
        return encode_prompt(self.tokenizer, self.text_encoder, prompts, self.device)

    def _text_condition(self, prompts: list[str], n: int) -> tuple[dict, dict]:
        """The prompts' condition and the empty caption's, each row repeated n times. The empty
        caption is encoded once per prompt, as diffusers does (a batch's size can change the
        last bits of a matmul)."""
        return repeat_rows(self.encode_prompt(prompts), n), repeat_rows(self.encode_prompt([""] * len(prompts)), n)

    @torch.no_grad()
    def embed_images(self, images) -> torch.Tensor:
        """CLIP image embeddings (B, D), as projected (Karlo's decoder takes them unnormalised),
        of uint8 arrays (H, W, 3) or PIL images."""
        from PIL import Image

        self.require("image_encoder")
        pil = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images]
        pixels = self.feature_extractor(images=pil, return_tensors="pt").pixel_values
        return self.image_encoder(pixels.to(self.device, self.image_encoder.dtype)).image_embeds.float()

    @torch.no_grad()
    def embed_captions(self, captions: list[str]) -> torch.Tensor:
        return self.encode_prompt(captions)["text_embed"].float()

    # -- the three stages -----------------------------------------------------------------------
    @torch.no_grad()
    def sample_prior(self, cond: dict, null: dict, *, guidance_scale: float, steps: int, guided: bool,
                     generator: Generators = None, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Karlo's image embeddings (B, D) for a text condition (B rows; `null` the empty caption's).
        An ECLIPSE prior: one forward pass from noise (`latents`, else drawn from `generator`)."""
        self.require("prior")
        if self.prior_kind == "eclipse":
            if latents is not None:
                return self.prior.to_embedding(self.prior.predict(latents.float().to(self.device), cond))
            return self.prior.sample(cond, generator=generator)
        return prior_loop(self.prior, self.prior_scheduler, cond, null, guidance_scale=guidance_scale, steps=steps,
                          guided=guided, generator=generator, device=self.device, latents=latents)

    def caption_embeds(self, captions: list[str], generator: Generators = None) -> torch.Tensor:
        self.require("prior")
        d = self.sampling_defaults()
        cond, null = self._text_condition(captions, 1)
        return self.sample_prior(cond, null, guidance_scale=d["prior_guidance_scale"] or 1.0, guided=True,
                                 steps=d["prior_num_inference_steps"] or 1, generator=generator)

    def _decoder_context(self, image_embeds: torch.Tensor, cond: dict, null: dict, guided: bool):
        """(context tokens, mask, class labels) for the decoder; rows [null; cond] when guided,
        the null row using the learned unconditional image embedding."""
        dtype = self.decoder.dtype
        z = image_embeds.to(self.device, dtype)
        if guided:
            z = torch.cat([self.text_proj.null_image_embed().to(dtype).expand(len(z), -1), z])
        text = with_null(cond, null, guided)
        tokens, mask, time_add = self.text_proj({"image_embed": z, "text_embed": text["text_embed"].to(dtype),
                                                 "text_encodings": text["text_encodings"].to(dtype),
                                                 "mask": text["mask"]})
        return tokens, mask, time_add

    def _decoder_out(self, x: torch.Tensor, t, context, guidance_scale: float, guided: bool) -> torch.Tensor:
        """The decoder's output (B, 6, S, S) in float32, guided on the epsilon channels; the
        variance channels come from the conditional rows."""
        tokens, mask, time_add = context
        dtype = self.decoder.dtype
        inp = torch.cat([x, x]) if guided else x
        out = self.decoder(sample=inp.to(dtype), timestep=t, encoder_hidden_states=tokens, class_labels=time_add,
                           attention_mask=mask).sample.float()
        if not guided:
            return out
        uncond, text = out.chunk(2)
        c = x.shape[1]
        eps = uncond[:, :c] + guidance_scale * (text[:, :c] - uncond[:, :c])
        return torch.cat([eps, text[:, c:]], dim=1)

    @torch.no_grad()
    def sample_decoder(self, image_embeds: torch.Tensor, cond: dict, null: dict, *, guidance_scale: float,
                       steps: int, guided: bool, generator: Generators = None,
                       latents: torch.Tensor | None = None, inpaint: tuple | None = None) -> torch.Tensor:
        """Base-resolution images (B, 3, 64, 64) in [-1, 1], Karlo's ancestral sampler
        (`inpaint`: see `_loop`)."""
        sched = self.decoder_scheduler
        context = self._decoder_context(image_embeds, cond, null, guided)
        sched.set_timesteps(steps, device=self.device)
        b, s = len(image_embeds), self.base_size
        shape = (b, self.decoder.config.in_channels, s, s)
        x = randn(shape, generator, self.device) if latents is None else latents.float().to(self.device)
        x = unclip_loop(sched, x, lambda x, i, t: self._decoder_out(x, t, context, guidance_scale, guided), generator,
                  inpaint)
        return x.clamp(-1, 1)

    @torch.no_grad()
    def upsample(self, images: torch.Tensor, *, generator: Generators = None, steps: int = 7,
                 latents: torch.Tensor | None = None, inpaint: tuple | None = None) -> torch.Tensor:
        """Karlo's super-resolution: (B, 3, 64, 64) -> (B, 3, 256, 256) in [-1, 1]. The input is
        enlarged by antialiased bicubic interpolation (in float32: it has no bf16 kernel)."""
        sched, first, last = self.super_res_scheduler, self.super_res_first, self.super_res_last
        sched.set_timesteps(steps, device=self.device)
        b, s = images.shape[0], self.image_size
        shape = (b, first.config.in_channels // 2, s, s)
        x = randn(shape, generator, self.device) if latents is None else latents.float().to(self.device)
        up = F.interpolate(images.float(), size=[s, s], mode="bicubic", align_corners=False, antialias=True)
        last_i = len(sched.timesteps) - 1

        def out(x, i, t):
            net = last if i == last_i else first
            return net(torch.cat([x, up], dim=1).to(net.dtype), t).sample

        return unclip_loop(sched, x, out, generator, inpaint)

    # -- the pipeline call --------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, *, image=None, image_embeddings: torch.Tensor | None = None,
                 num_images_per_prompt: int = 1, prior_num_inference_steps: int = 25,
                 decoder_num_inference_steps: int = 25, super_res_num_inference_steps: int = 7,
                 generator: Generators = None, prior_guidance_scale: float = 4.0,
                 decoder_guidance_scale: float = 8.0, prior_latents: torch.Tensor | None = None,
                 decoder_latents: torch.Tensor | None = None, super_res_latents: torch.Tensor | None = None,
                 output_type: str = "pil", return_dict: bool = True, prior: str | None = None):
        """Text to image as diffusers' `UnCLIPPipeline`, or, given `image` (PIL images or uint8
        arrays) or `image_embeddings` (B, D) without a prompt, as `UnCLIPImageVariationPipeline`
        (empty caption, decoder guidance only). Returns `UnCLIPOutput(images, image_embeds)`.
        `prior`: the one prior the pipeline has (None, or its name: "diffusion", or "eclipse"
        when loaded with an ECLIPSE prior)."""
        validate.sampling(prior=prior)
        if prior not in (None, self.prior_kind):
            raise ValueError(f"prior {prior!r}: this Karlo pipeline has only the {self.prior_kind or 'no'} prior")
        validate.sampling(num_images_per_prompt=num_images_per_prompt,
                          prior_num_inference_steps=prior_num_inference_steps,
                          decoder_num_inference_steps=decoder_num_inference_steps,
                          super_res_num_inference_steps=super_res_num_inference_steps,
                          prior_guidance_scale=prior_guidance_scale, decoder_guidance_scale=decoder_guidance_scale)
        if image is not None or image_embeddings is not None:
            if image is not None and image_embeddings is not None:
                raise ValueError("give image or image_embeddings, not both")
            if image is not None:
                image_embeddings = self.embed_images(image if isinstance(image, list) else [image])
            b = image_embeddings.shape[0]
            prompts = [""] * b if prompt is None else check_prompts(prompt, b)
            guided = decoder_guidance_scale > 1.0 if prompt is None else \
                self._guided(prior_guidance_scale, decoder_guidance_scale)
            n = num_images_per_prompt
            cond, null = self._text_condition(prompts, n)
            z = image_embeddings.float().to(self.device).repeat_interleave(n, dim=0)
        else:
            prompts = check_prompts(prompt)
            n = num_images_per_prompt
            guided = self._guided(prior_guidance_scale, decoder_guidance_scale)
            cond, null = self._text_condition(prompts, n)
            z = self.sample_prior(cond, null, guidance_scale=prior_guidance_scale, steps=prior_num_inference_steps,
                                  guided=guided, generator=generator, latents=prior_latents)
        small = self.sample_decoder(z, cond, null, guidance_scale=decoder_guidance_scale,
                                    steps=decoder_num_inference_steps, guided=guided, generator=generator,
                                    latents=decoder_latents)
        big = self.upsample(small, generator=generator, steps=super_res_num_inference_steps, latents=super_res_latents)
        images = to_output(big, output_type)
        return UnCLIPOutput(images, z) if return_dict else (images,)

    @torch.no_grad()
    def inpaint(self, image, mask_image, prompt: str | list[str], *, like=None, num_images_per_prompt: int = 1,
                generator: Generators = None, resample: int = 1, prior_num_inference_steps: int = 25,
                decoder_num_inference_steps: int = 25, super_res_num_inference_steps: int = 7,
                prior_guidance_scale: float = 4.0, decoder_guidance_scale: float = 8.0, output_type: str = "pil",
                return_dict: bool = True):
        """Repaint the white region of `mask_image` in `image` to agree with `prompt`, keeping the
        rest (unclip.pipelines.inpaint), with Karlo's own samplers; the image embedding from the prior, or
        from the image `like` (which needs an image tower)."""
        from unclip.pipelines.inpaint import Region

        validate.count("resample", resample, high=validate.MAX_STEPS)
        validate.sampling(num_images_per_prompt=num_images_per_prompt,
                          prior_num_inference_steps=prior_num_inference_steps,
                          decoder_num_inference_steps=decoder_num_inference_steps,
                          super_res_num_inference_steps=super_res_num_inference_steps,
                          prior_guidance_scale=prior_guidance_scale, decoder_guidance_scale=decoder_guidance_scale)
        region = Region(image, mask_image, resample)
        prompts, n = check_prompts(prompt), num_images_per_prompt
        guided = self._guided(prior_guidance_scale, decoder_guidance_scale)
        cond, null = self._text_condition(prompts, n)
        if like is not None:
            z = self.embed_images([like]).expand(len(prompts) * n, -1)
        else:
            z = self.sample_prior(cond, null, guidance_scale=prior_guidance_scale, steps=prior_num_inference_steps,
                                  guided=guided, generator=generator)
        small = self.sample_decoder(z, cond, null, guidance_scale=decoder_guidance_scale,
                                    steps=decoder_num_inference_steps, guided=guided, generator=generator,
                                    inpaint=region.at(self.base_size, self.device))
        big = self.upsample(small, generator=generator, steps=super_res_num_inference_steps,
                            inpaint=region.at(self.image_size, self.device))
        images = to_output(region.composite(big.clamp(-1, 1)), output_type)
        return UnCLIPOutput(images, z) if return_dict else (images,)

    def sampling_defaults(self) -> dict:
        """diffusers' defaults for Karlo, which the call's signature repeats."""
        diffusion = self.prior_kind == "diffusion"
        return {"prior_guidance_scale": 4.0 if diffusion else None, "decoder_guidance_scale": 8.0,
                "prior_num_inference_steps": 25 if diffusion else None,
                "decoder_num_inference_steps": 25, "super_res_num_inference_steps": 7}

    # -- what the manipulations need (unclip.tasks.manipulate) -------------------------------------------
    @property
    def default_decoder_guidance(self) -> float:
        return self.sampling_defaults()["decoder_guidance_scale"]

    def decoder_input(self, image: np.ndarray) -> torch.Tensor:
        from PIL import Image

        from unclip.data.transforms import resize_center_crop, to_tensor

        return to_tensor(np.array(resize_center_crop(Image.fromarray(image), self.base_size))).to(self.device)

    def _ddim_denoiser(self, z_i: torch.Tensor, caption: str | None, guidance_scale: float):
        """eps(x, t) of the decoder for DDIM, guided (on epsilon) when guidance_scale != 1."""
        cond = repeat_rows(self.encode_prompt([caption or ""]), len(z_i))
        guided = guidance_scale != 1.0
        context = self._decoder_context(z_i, cond, self.encode_prompt([""]), guided)
        c = self.decoder.config.in_channels
        return lambda x, t: self._decoder_out(x.float(), t[0], context, guidance_scale, guided)[:, :c]

    @torch.no_grad()
    def invert_decoder(self, z_i: torch.Tensor, x0: torch.Tensor, *, steps: int, caption: str | None = None):
        """DDIM inversion of the unguided decoder: the x_T that DDIM at eta 0 decodes to x0."""
        return ddim_invert(self._ddim_denoiser(z_i, caption, 1.0), x0.float(), self.ddim, steps=steps)

    @torch.no_grad()
    def decode_latents(self, z_i: torch.Tensor, x_T: torch.Tensor, *, steps: int, eta: float = 0.0,
                       guidance_scale: float = 1.0, caption: str | None = None, generator: Generators = None):
        """DDIM from (z_i, x_T) at the base size, (B, 3, S, S) in [-1, 1]."""
        denoise = self._ddim_denoiser(z_i, caption, guidance_scale)
        return sample(denoise, x_T.float(), self.ddim, steps=steps, eta=eta, generator=generator).clamp(-1, 1)


__all__ = ["TEXT_TO_IMAGE", "VARIATIONS", "KarloPipeline"]
