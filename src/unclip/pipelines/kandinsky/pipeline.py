"""Kandinsky 2.2 (unCLIP on a latent decoder), sampled exactly as diffusers' pipelines sample it.

Stages: the prior folder's CLIP text tower -> diffusion prior (PriorTransformer, UnCLIPScheduler,
x0-prediction) or ECLIPSE's one-pass prior -> the decoder UNet on MoVQ latents, conditioned on the
image embedding alone (guided against the embedding of an all-zero image, or of a negative
prompt) -> MoVQ decodes the latents to pixels. Random numbers come from the caller's generator in
diffusers' order (prior latents and step noises, then decoder latents and step noises), as
`KandinskyV22CombinedPipeline` draws them with one generator passed to both stages.
tests/test_kandinsky.py pins equality at float32 (images within 1/255).

Beyond diffusers: unclip's contract (devices, bf16/fp16 with float32 latents and scheduler
arithmetic), DDIM inversion of the MoVQ latent with the image embedding kept (the paper's
variations), RePaint inpainting in latent space with the base decoder, the inpaint decoder as
diffusers runs it, and reranking by the prior folder's CLIP towers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from unclip import validate
from unclip.data.transforms import to_output
from unclip.diffusion.sampling import Generators
from unclip.models.clip import ClipTowers
from unclip.pipelines.base import Capabilities, Pipeline
from unclip.pipelines.components import load_eclipse, prior_kind
from unclip.pipelines.diffusers_order import encode_prompt, prior_loop, randn, repeat_rows
from unclip.pipelines.kandinsky import stages
from unclip.pipelines.kandinsky.folder import DECODER, INPAINT, PRIOR, load_folder
from unclip.pipelines.output import UnCLIPOutput, call_settings, check_prompts
from unclip.pipelines.rerank import draw_best

NETWORKS = ("text_encoder", "image_encoder", "prior", "unet", "movq")
CALL_SETTINGS = frozenset({
    "image", "image_embeddings", "negative_image_embeds", "prior", "negative_prompt", "height", "width",
    "num_inference_steps", "guidance_scale", "prior_num_inference_steps", "prior_guidance_scale",
    "decoder_num_inference_steps", "decoder_guidance_scale", "latents", "prior_latents", "rerank"})


class KandinskyPipeline(Pipeline):
    """A Kandinsky 2.2 decoder folder (text to image, or the inpaint decoder) with, optionally, a
    prior folder (`prior_model`), behind unclip's pipeline contract."""

    title = "Kandinsky 2.2 model"
    load_options = ("prior_model",)
    offload_whole = ("prior",)  # its CLIP statistics are read outside its forward
    folder_classes = (DECODER, INPAINT)

    def __init__(self, decoder: dict, prior: dict | None = None, decoder_kind: str = DECODER):
        """`decoder`: unet, scheduler, movq; `prior`: prior (a PriorTransformer or an
        EclipsePrior), image_encoder, text_encoder, tokenizer, scheduler, image_processor."""
        self.decoder_kind = decoder_kind
        self.unet, self.scheduler, self.movq = decoder["unet"], decoder["scheduler"], decoder["movq"]
        prior = prior or {}
        self.prior, self.prior_scheduler = prior.get("prior"), prior.get("scheduler")
        self.text_encoder, self.tokenizer = prior.get("text_encoder"), prior.get("tokenizer")
        self.image_encoder, self.image_processor = prior.get("image_encoder"), prior.get("image_processor")
        self.rerank = 1
        # DDIM over the decoder's own training betas, for inversion and eta-controlled decoding.
        from diffusers import DDIMScheduler

        cfg = self.scheduler.config
        self.ddim = DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                                  beta_start=cfg.beta_start, beta_end=cfg.beta_end, prediction_type="epsilon",
                                  clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")

    @classmethod
    def _load(cls, path: Path, torch_dtype: torch.dtype = torch.float32,
              prior_model: str | Path | list | tuple | None = None) -> KandinskyPipeline:
        """A decoder folder; `prior_model`: a Kandinsky 2.2 prior folder, or [that folder, ECLIPSE's
        Kandinsky prior folder] (ECLIPSE's network in place of the diffusion prior, which is then
        not loaded; the towers come from the prior folder)."""
        from unclip.pipelines.locate import resolve_model

        kind, decoder = load_folder(path, torch_dtype)
        prior = None
        if prior_model is not None:
            paths = list(prior_model) if isinstance(prior_model, (list, tuple)) else [prior_model]
            if len(paths) > 2:
                raise ValueError("--prior-model takes a Kandinsky prior folder, and optionally an ECLIPSE prior after it")
            skip = ("prior",) if len(paths) == 2 else ()
            _, prior = load_folder(resolve_model(paths[0]), torch_dtype, expect=(PRIOR,), skip=skip)
            if skip:
                prior["prior"] = load_eclipse(resolve_model(paths[1]), prior["text_encoder"].config.projection_dim,
                                              torch_dtype, towers="the Kandinsky prior folder's text tower")
            width = prior["image_encoder"].config.projection_dim
            need = decoder["unet"].config.encoder_hid_dim
            if need is not None and width != need:
                raise ValueError(f"the prior folder gives {width}-d image embeddings; this decoder takes {need}-d")
        return cls(decoder, prior, kind)

    def save_pretrained(self, path: str | Path) -> None:
        """The decoder folder in Kandinsky's layout, and the prior folder beside it in `path/prior`
        when the pipeline has one (diffusers' KandinskyV22Pipeline / PriorPipeline load them)."""
        from unclip.pipelines.kandinsky.synthetic import write_decoder, write_prior

        write_decoder({"unet": self.unet, "scheduler": self.scheduler, "movq": self.movq}, path, self.decoder_kind)
        if self.prior is not None:
            if self.prior_kind == "eclipse":
                raise ValueError("this pipeline's prior is ECLIPSE's; Kandinsky's prior layout has no place for it")
            write_prior({"prior": self.prior, "image_encoder": self.image_encoder, "text_encoder": self.text_encoder,
                         "tokenizer": self.tokenizer, "scheduler": self.prior_scheduler,
                         "image_processor": self.image_processor}, Path(path) / "prior")

    # -- the contract (unclip.pipelines.base) ---------------------------------------------------
    def networks(self):
        return [(n, getattr(self, n)) for n in NETWORKS if getattr(self, n) is not None]

    def sampled_networks(self):
        names = ("unet",) + (("prior",) if self.prior_kind == "diffusion" else ())
        return [(n, getattr(self, n)) for n in names]

    @property
    def latent_decoder(self):
        return self.movq

    @property
    def prior_kind(self) -> str | None:
        return prior_kind(self.prior)

    @property
    def capabilities(self) -> Capabilities:
        towers = self.image_encoder is not None
        base = self.decoder_kind == DECODER
        return Capabilities(text_to_image=towers and base, reads_images=towers, inversion=towers and base,
                            inpainting=towers, priors=(self.prior_kind,) if towers else (), reranking=towers,
                            settings=CALL_SETTINGS)

    def sampling_defaults(self) -> dict:
        """diffusers' defaults for Kandinsky 2.2 (the combined pipeline's), at the UNet's own size."""
        diffusion = self.prior_kind == "diffusion"
        return {"prior_guidance_scale": 4.0 if diffusion else None, "guidance_scale": 4.0,
                "prior_num_inference_steps": 25 if diffusion else None, "num_inference_steps": 100,
                "height": self.default_size, "width": self.default_size}

    @property
    def default_size(self) -> int:
        """512 for the published decoder: the UNet's latent side times MoVQ's factor, or 512."""
        size = self.unet.config.sample_size
        return 512 if size is None else int(size) * self.movq_factor

    @property
    def movq_factor(self) -> int:
        return 2 ** (len(self.movq.config.block_out_channels) - 1)

    @property
    def judge(self) -> ClipTowers:
        """The prior folder's CLIP towers: what reranking scores candidates by."""
        self.require("image_encoder")
        return ClipTowers(self.text_encoder, self.image_encoder, self.tokenizer, self.image_processor)

    def require(self, *names: str) -> None:
        if any(getattr(self, n, None) is None for n in names):
            raise ValueError(f"this {self.title} has no prior folder, which {', '.join(names)} come from: give it "
                             "with --prior-model (load_pipeline(..., prior_model=...)), e.g. "
                             "kandinsky-community/kandinsky-2-2-prior")

    # -- conditioning ---------------------------------------------------------------------------
    def encode_prompt(self, prompts: list[str]) -> dict:
        self.require("text_encoder")
        return encode_prompt(self.tokenizer, self.text_encoder, prompts, self.device)

    @torch.no_grad()
    def zero_embed(self, rows: int) -> torch.Tensor:
        """The image tower's embedding of an all-zero image: the decoder's unconditional input.
        Kept while the tower's device, dtype and weights stay as they were (diffusers runs the
        1.8 B tower for it on every call: 2.7 s of each image on a 2-core CPU in bf16)."""
        params = list(self.image_encoder.parameters())
        key = (self.device, params[0].dtype, len(params), sum(p._version for p in params), params[0].data_ptr())
        if getattr(self, "_zero", (None,))[0] != key:
            side = self.image_encoder.config.image_size
            zero = torch.zeros(1, 3, side, side, device=self.device, dtype=self.image_encoder.dtype)
            self._zero = (key, self.image_encoder(zero).image_embeds.float())
        return self._zero[1].repeat(rows, 1)

    @torch.no_grad()
    def embed_images(self, images) -> torch.Tensor:
        """CLIP image embeddings (B, D) as projected, of uint8 arrays (H, W, 3) or PIL images."""
        self.require("image_encoder")
        return self.judge.embed_pil(images).float()

    @torch.no_grad()
    def embed_captions(self, captions: list[str]) -> torch.Tensor:
        return self.encode_prompt(captions)["text_embed"].float()

    @torch.no_grad()
    def sample_prior(self, prompts: list[str], n: int, *, negative_prompt=None, guidance_scale: float = 4.0,
                     steps: int = 25, generator: Generators = None, latents: torch.Tensor | None = None):
        """(image embeddings, negative image embeddings), each (B * n, D), as diffusers' prior
        pipeline gives them: with a negative prompt both come from one prior call over
        [prompts; negative prompts]; without, the negative is the zero image's embedding."""
        self.require("prior")
        rows = list(prompts)
        negatives = None
        if negative_prompt is not None:
            negatives = [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negatives) != len(rows):
                raise ValueError(f"{len(negatives)} negative prompts for {len(rows)} prompts")
            rows = rows + negatives
        cond = repeat_rows(self.encode_prompt(rows), n)
        if self.prior_kind == "eclipse":
            noise = randn((len(rows) * n, self.prior.net.config.embedding_dim), generator, self.device) \
                if latents is None else latents.float().to(self.device)
            z = self.prior.to_embedding(self.prior.predict(noise, cond))
        else:
            uncond = (2 * negatives) if negatives is not None else [""] * len(rows)
            null = repeat_rows(self.encode_prompt(uncond), n)
            z = prior_loop(self.prior, self.prior_scheduler, cond, null, guidance_scale=guidance_scale, steps=steps,
                           guided=guidance_scale > 1, generator=generator, device=self.device, latents=latents)
        if negatives is None:
            return z, self.zero_embed(len(z))
        return z.chunk(2)

    def caption_embeds(self, captions: list[str], generator: Generators = None) -> torch.Tensor:
        d = self.sampling_defaults()
        return self.sample_prior(captions, 1, guidance_scale=d["prior_guidance_scale"] or 1.0,
                                 steps=d["prior_num_inference_steps"] or 1, generator=generator)[0]

    # -- the pipeline call ----------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, *, negative_prompt: str | list[str] | None = None,
                 image=None, image_embeddings: torch.Tensor | None = None,
                 negative_image_embeds: torch.Tensor | None = None, height: int | None = None,
                 width: int | None = None, num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 prior_num_inference_steps: int | None = None, prior_guidance_scale: float | None = None,
                 num_images_per_prompt: int = 1, generator: Generators = None, latents: torch.Tensor | None = None,
                 prior_latents: torch.Tensor | None = None, output_type: str = "pil", return_dict: bool = True,
                 prior: str | None = None, rerank: int | None = None, decoder_num_inference_steps: int | None = None,
                 decoder_guidance_scale: float | None = None):
        """Text to image as `KandinskyV22CombinedPipeline` (diffusers' names; `decoder_*` are the
        same settings in unclip's stage names, as the command line passes them), or, given `image`
        (PIL images or uint8 arrays) or `image_embeddings` (B, D), the decoder on those
        embeddings (against the zero image's, or `negative_image_embeds`). `rerank`: candidates
        per image, the best by the prior folder's CLIP towers kept. Returns
        UnCLIPOutput(images, image_embeds)."""
        s = call_settings(self, height=height, width=width, num_inference_steps=num_inference_steps,
                            guidance_scale=guidance_scale, prior_num_inference_steps=prior_num_inference_steps,
                            prior_guidance_scale=prior_guidance_scale, num_images_per_prompt=num_images_per_prompt,
                            prior=prior, rerank=rerank, decoder_num_inference_steps=decoder_num_inference_steps,
                            decoder_guidance_scale=decoder_guidance_scale)
        if self.decoder_kind != DECODER:
            raise ValueError("this is Kandinsky's inpaint decoder: it repaints images (inpaint), it does not draw new ones")
        n = num_images_per_prompt
        if image is not None or image_embeddings is not None:
            if image is not None and image_embeddings is not None:
                raise ValueError("give image or image_embeddings, not both")
            if image is not None:
                image_embeddings = self.embed_images(image if isinstance(image, list) else [image])
            z = image_embeddings.float().to(self.device)
            neg = self.zero_embed(len(z)) if negative_image_embeds is None else negative_image_embeds.float()
            latents_out = stages.decode(self, z.repeat_interleave(n, 0), neg.to(self.device).repeat_interleave(n, 0),
                                        s, generator=generator, latents=latents)
            images = to_output(stages.to_pixels(self, latents_out), output_type)
            return UnCLIPOutput(images, z) if return_dict else (images,)
        prompts = check_prompts(prompt)
        captions = [p for p in prompts for _ in range(n)]

        def draw(rows: list[str], negs, gens: Generators, k: int):
            z, neg = self.sample_prior(rows, k, negative_prompt=negs, guidance_scale=s["prior_guidance_scale"],
                                       steps=s["prior_num_inference_steps"], generator=gens, latents=prior_latents)
            lat = stages.decode(self, z, neg, s, generator=gens, latents=latents)
            return stages.to_pixels(self, lat), z

        if s["rerank"] == 1 and not isinstance(generator, (list, tuple)):
            images, z = draw(prompts, negative_prompt, generator, n)  # one call, as diffusers batches it
        else:
            def draw_some(indices: list[int], gens: Generators, k: int):
                negs = None if negative_prompt is None else [stages.row(negative_prompt, i, n) for i in indices]
                return draw([captions[i] for i in indices], negs, gens, k)


            images, z = draw_best(draw_some, self.judge, captions, len(captions), s["rerank"], self.device, generator)
        images = to_output(images, output_type)
        return UnCLIPOutput(images, z) if return_dict else (images,)

    @torch.no_grad()
    def inpaint(self, image, mask_image, prompt: str | list[str], *, like=None, num_images_per_prompt: int = 1,
                generator: Generators = None, resample: int = 1, negative_prompt=None, height: int | None = None,
                width: int | None = None, num_inference_steps: int | None = None, guidance_scale: float | None = None,
                prior_num_inference_steps: int | None = None, prior_guidance_scale: float | None = None,
                decoder_num_inference_steps: int | None = None, decoder_guidance_scale: float | None = None,
                rerank: int | None = None, output_type: str = "pil", return_dict: bool = True):
        """Repaint the white region of `mask_image` in `image` to agree with `prompt`, keeping the
        rest: with the inpaint decoder as `KandinskyV22InpaintPipeline` does it (the prior's
        embeddings, or the image `like`'s); with the base decoder by RePaint in latent space
        (`resample` jumps back per step), the input kept exactly outside the mask."""
        validate.count("resample", resample, high=validate.MAX_STEPS)
        s = call_settings(self, height=height, width=width, num_inference_steps=num_inference_steps,
                            guidance_scale=guidance_scale, prior_num_inference_steps=prior_num_inference_steps,
                            prior_guidance_scale=prior_guidance_scale, num_images_per_prompt=num_images_per_prompt,
                            rerank=rerank, decoder_num_inference_steps=decoder_num_inference_steps,
                            decoder_guidance_scale=decoder_guidance_scale)
        prompts, n = check_prompts(prompt), num_images_per_prompt
        if like is not None:
            z = self.embed_images([like]).expand(len(prompts) * n, -1)
            neg = self.zero_embed(len(z))
        else:
            z, neg = self.sample_prior(prompts, n, negative_prompt=negative_prompt,
                                       guidance_scale=s["prior_guidance_scale"], steps=s["prior_num_inference_steps"],
                                       generator=generator)
        if self.decoder_kind == INPAINT:
            pixels = stages.inpaint_decoder(self, image, mask_image, z, neg, s, generator=generator)
        else:
            pixels = stages.repaint(self, image, mask_image, z, neg, s, resample, generator=generator)
        images = to_output(pixels, output_type)
        return UnCLIPOutput(images, z) if return_dict else (images,)

    # -- what the manipulations need (unclip.tasks.manipulate) ----------------------------------
    @property
    def default_decoder_guidance(self) -> float:
        return self.sampling_defaults()["guidance_scale"]

    def decoder_input(self, image: np.ndarray) -> torch.Tensor:
        """The image at the output size (the default), (1, 3, S, S) in [-1, 1]: what inversion
        encodes with MoVQ and what a reconstruction is compared with."""
        from PIL import Image

        from unclip.data.transforms import resize_center_crop, to_tensor

        return to_tensor(np.array(resize_center_crop(Image.fromarray(image), self.default_size))).to(self.device)

    @torch.no_grad()
    def invert_decoder(self, z_i: torch.Tensor, x0: torch.Tensor, *, steps: int, caption: str | None = None):
        """DDIM inversion of the unguided decoder from the MoVQ latent of x0 (pixels): the latent
        x_T that DDIM at eta 0 decodes back to it, with the image embedding kept."""
        return stages.invert(self, z_i, self.encode_latents(x0), steps)

    @torch.no_grad()
    def decode_latents(self, z_i: torch.Tensor, x_T: torch.Tensor, *, steps: int, eta: float = 0.0,
                       guidance_scale: float = 1.0, caption: str | None = None, generator: Generators = None):
        """DDIM from (z_i, x_T) in latent space, then MoVQ: (B, 3, S, S) in [-1, 1]."""
        return stages.to_pixels(self, stages.ddim_decode(self, z_i, x_T, steps, eta, guidance_scale, generator))

    def decoder_noise_shape(self, side: int) -> tuple[int, ...]:
        return (self.unet.config.in_channels, *stages.latent_size(self, side, side))

    def upsample(self, images: torch.Tensor, **_) -> torch.Tensor:
        """Kandinsky's decoder draws at the output size: nothing to enlarge."""
        return images

    @torch.no_grad()
    def encode_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """MoVQ's latents (B, 4, s, s) of pixels in [-1, 1], in float32."""
        return self.movq.encode(pixels.to(self.movq.dtype)).latents.float()

    def with_null(self, z: torch.Tensor, neg: torch.Tensor, guided: bool) -> torch.Tensor:
        """The decoder's image_embeds rows, [negative; z] when guided, in the UNet's dtype."""
        rows = torch.cat([neg.to(z.device), z]) if guided else z
        return rows.to(self.device, self.unet.dtype)


__all__ = ["KandinskyPipeline"]
