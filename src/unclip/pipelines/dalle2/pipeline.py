"""The unCLIP system as one object and one folder.

A pipeline folder holds a subfolder per component in diffusers' `save_pretrained` layout
(config plus safetensors): `clip/`, `prior/`, `ar_prior/`, `decoder/` (`unet/`, `text_proj/`),
`upsampler1/`, `upsampler2/`, optionally `reranker/` (a CLIP that picks the best of `rerank`
candidates per image, unclip.pipelines.rerank), and `unclip.json` with each component's settings (sampling
defaults), the fingerprint of the CLIP the others were trained on, and the version of unclip
that wrote it. Nothing is pickled and loading runs no code from the folder. Components are
optional, so a stage's training run exports a partial pipeline and `assemble` merges them.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unclip import __version__, validate
from unclip.config import from_dict
from unclip.data.embeddings import clip_fingerprint, encode_image, encode_text
from unclip.data.transforms import center_square, to_output, to_tensor
from unclip.diffusion.guidance import cfg
from unclip.diffusion.sampling import Generators, ddim_invert
from unclip.models.clip import ClipEncoder
from unclip.models.decoder import Decoder, DecoderConfig
from unclip.models.prior import (
    ARPrior,
    ARPriorConfig,
    DiffusionPrior,
    EclipseConfig,
    EclipsePrior,
    PriorConfig,
)
from unclip.models.upsampler import Upsampler, cascade, load_cascade, save_cascade
from unclip.pipelines.base import Capabilities, Pipeline
from unclip.pipelines.output import UnCLIPOutput, check_prompts
from unclip.pipelines.rerank import RERANKER, draw_best, judged_after, load_reranker
from unclip.runtime.weights import component_error

SETTINGS = "unclip.json"


def read_settings(path: str | Path) -> dict:
    path = Path(path)
    if not (path / SETTINGS).is_file():
        raise FileNotFoundError(f"not a model folder (no {SETTINGS} of unclip's own, no model_index.json "
                                f"of a diffusers UnCLIPPipeline): {path}")
    try:
        return json.loads((path / SETTINGS).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path / SETTINGS} is not valid JSON: {e}") from None


NETWORK_CLASSES = {"prior": (DiffusionPrior, PriorConfig), "ar_prior": (ARPrior, ARPriorConfig),
                   "eclipse_prior": (EclipsePrior, EclipseConfig), "decoder": (Decoder, DecoderConfig)}
NETWORKS = tuple(NETWORK_CLASSES)  # the components saved with their settings
PRIOR_PARTS = {"diffusion": "prior", "ar": "ar_prior", "eclipse": "eclipse_prior"}  # prior name -> component
CALL_SETTINGS = frozenset({
    "image_embeddings", "prior", "rerank", "prior_num_inference_steps", "decoder_num_inference_steps",
    "super_res_num_inference_steps", "prior_guidance_scale", "decoder_guidance_scale", "prior_sampler",
    "decoder_sampler", "super_res_sampler", "rerank_threshold", "compose"})


class DalleTwoPipeline(Pipeline):
    """unclip's own DALL-E 2: CLIP, priors, decoder and upsamplers; any of them may be missing
    from a partial folder."""

    title = "unclip model"

    def __init__(self, clip: ClipEncoder | None, prior: DiffusionPrior | None = None,
                 decoder: Decoder | None = None, upsamplers: list[Upsampler] = (), ar_prior: ARPrior | None = None,
                 reranker: ClipEncoder | None = None, rerank: int = 1, eclipse_prior: EclipsePrior | None = None,
                 rerank_threshold: float | None = None, compose: bool = False):
        self.compose = bool(compose)  # two-object scenes one object at a time by default (dalle2.compose)
        self.clip, self.prior, self.decoder, self.upsamplers = clip, prior, decoder, list(upsamplers)
        self.ar_prior, self.eclipse_prior, self.reranker = ar_prior, eclipse_prior, reranker
        self.set_rerank(rerank, rerank_threshold)  # candidates per image, and when to stop drawing them

    @classmethod
    def _load(cls, path: Path, torch_dtype=torch.float32) -> DalleTwoPipeline:
        """A pipeline folder; weights stored in fp16 are cast to `torch_dtype`."""
        settings = read_settings(path)
        parts = settings.get("components", [])

        def load(name: str, fn):
            try:
                return fn()
            except (ValueError, OSError, RuntimeError, KeyError, TypeError) as e:
                raise component_error(path, name, e) from None

        clip = load("clip", lambda: ClipEncoder.from_pretrained(path / "clip", torch_dtype).eval()) \
            if "clip" in parts else None
        nets = {}
        for name, (net, config) in NETWORK_CLASSES.items():
            if name in parts:
                cfg = from_dict(config, settings.get(name, {}), f"{name}.")
                nets[name] = load(name, lambda: net.from_pretrained(path / name, cfg, torch_dtype=torch_dtype))  # noqa: B023
        upsamplers = load_cascade(path, settings, torch_dtype, load)
        reranker = load(RERANKER, lambda: load_reranker(path, torch_dtype)) if RERANKER in parts else None
        try:
            return cls(clip, nets.get("prior"), nets.get("decoder"), upsamplers, nets.get("ar_prior"), reranker,
                       settings.get("rerank", 1), nets.get("eclipse_prior"), settings.get("rerank_threshold"),
                       settings.get("compose", False))
        except ValueError as e:
            raise ValueError(f"{path / SETTINGS}: {e}") from None

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        settings: dict = {"unclip_version": __version__, "components": []}
        if self.clip is not None:
            self.clip.save_pretrained(path / "clip")
            settings["components"].append("clip")
            settings["clip_fingerprint"] = clip_fingerprint(self.clip)
        for name in NETWORKS:
            part = getattr(self, name)
            if part is not None:
                part.save_pretrained(path / name)
                settings[name] = asdict(part.cfg)
                settings["components"].append(name)
        save_cascade(self.upsamplers, path, settings)
        if self.reranker is not None:
            self.reranker.save_pretrained(path / RERANKER)
            settings["components"].append(RERANKER)
        settings["rerank"], settings["rerank_threshold"] = self.rerank, self.rerank_threshold
        settings["compose"] = self.compose
        (path / SETTINGS).write_text(json.dumps(settings, indent=2))

    def networks(self) -> list[tuple[str, torch.nn.Module]]:
        parts = [("clip", self.clip), ("prior", self.prior), ("ar_prior", self.ar_prior),
                 ("eclipse_prior", self.eclipse_prior), ("decoder", self.decoder),
                 *((f"upsampler{i}", up) for i, up in enumerate(self.upsamplers, 1)), (RERANKER, self.reranker)]
        return [(n, m) for n, m in parts if m is not None]

    def sampled_networks(self) -> list[tuple[str, torch.nn.Module]]:
        parts = [("prior", self.prior and self.prior.transformer), ("decoder", self.decoder and self.decoder.unet),
                 *((f"upsampler{i}", up.unet) for i, up in enumerate(self.upsamplers, 1))]
        return [(n, m) for n, m in parts if m is not None]

    @property
    def capabilities(self) -> Capabilities:
        priors = [name for name, part in PRIOR_PARTS.items() if getattr(self, part) is not None]
        if self.decoder is not None:
            priors += ["text", "none"] if self.clip is not None else ["none"]
        clip, dec = self.clip is not None, self.decoder is not None
        return Capabilities(text_to_image=clip and dec and bool(priors), reads_images=clip, inversion=clip and dec,
                            inpainting=clip and dec,
                            priors=tuple(priors), reranking=self.judge is not None,
                            prior_samples=clip and any(getattr(self, p) is not None for p in PRIOR_PARTS.values()),
                            settings=CALL_SETTINGS)

    @torch.no_grad()
    def text_condition(self, prompts: list[str]) -> tuple[dict, dict]:
        """The CLIP text condition of `prompts` and of the empty caption (the null)."""
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise ValueError("prompts must be non-empty strings")
        self.require("clip")
        return encode_text(self.clip, list(prompts)), encode_text(self.clip, [""])

    def prior_net(self, prior: str) -> DiffusionPrior | ARPrior:
        """The network of a prior by name: "diffusion", "ar" or "eclipse"."""
        name = PRIOR_PARTS[prior]
        self.require(name)
        return getattr(self, name)

    @torch.no_grad()
    def image_embeds(self, prompts: list[str], generator: Generators = None, *, prior: str = "diffusion",
                     guidance_scale: float | None = None, steps: int | None = None,
                     sampler: str | None = None) -> torch.Tensor:
        """The decoder's image embeddings (B, D) for `prompts`, by `prior` (validate.PRIORS):
        a prior's sample (L2-normalised), the CLIP text embedding itself ("text"), or the
        decoder's learned null image embedding, so that the caption alone conditions ("none")."""
        validate.prior(prior)
        if prior == "none":
            self.require("decoder")
            return self.decoder.text_proj.null_image_embed().float().expand(len(prompts), -1)
        cond, null = self.text_condition(prompts)
        if prior == "text":
            return cond["text_embed"]
        if prior in ("ar", "eclipse"):
            if steps is not None or sampler is not None:
                raise ValueError("prior_num_inference_steps and prior_sampler (--steps prior=N, --sampler "
                                 f"prior=NAME) are for the diffusion prior; the {prior} prior samples in its own way")
            return self.prior_net(prior).sample(cond, null, guidance_scale=guidance_scale, generator=generator)
        return self.prior_net("diffusion").sample(cond, null, guidance_scale=guidance_scale, steps=steps,
                                                  generator=generator, sampler=sampler)

    def caption_embeds(self, captions: list[str], generator: Generators = None) -> torch.Tensor:
        return self.image_embeds(captions, generator)

    @torch.no_grad()
    def decode(self, image_embed: torch.Tensor, prompts: list[str] | None = None, *,
               generator: Generators = None, x_T: torch.Tensor | None = None, **kw) -> torch.Tensor:
        """Base-resolution images (B, 3, S, S) in [-1, 1] from CLIP image embeddings, with the
        captions as extra context when the decoder uses text (None: the empty caption)."""
        self.require("clip", "decoder")
        return self.decoder.sample(self._decoder_cond(image_embed, prompts), encode_text(self.clip, [""]),
                                   generator=generator, x_T=x_T, **kw)

    @torch.no_grad()
    def upsample(self, images: torch.Tensor, *, generator: Generators = None, steps: int | None = None,
                 sampler: str | None = None):
        """Through every upsampler in turn."""
        return cascade(self.upsamplers, images, generator=generator, steps=steps, sampler=sampler)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, *, image_embeddings: torch.Tensor | None = None,
                 num_images_per_prompt: int = 1, generator: Generators = None,
                 prior_num_inference_steps: int | None = None, decoder_num_inference_steps: int | None = None,
                 super_res_num_inference_steps: int | None = None, prior_guidance_scale: float | None = None,
                 decoder_guidance_scale: float | None = None, output_type: str = "pil",
                 return_dict: bool = True, prior: str | None = None, prior_sampler: str | None = None,
                 decoder_sampler: str | None = None, super_res_sampler: str | None = None,
                 rerank: int | None = None, rerank_threshold: float | None = None, compose: bool | None = None):
        """Text to image through every stage, in diffusers' conventions. Settings left None are
        the model's own. `prior`: which image embedding the decoder gets (validate.PRIORS; None: the
        diffusion prior). `image_embeddings` (B, D) skip the prior (with the prompt as the
        decoder's caption, or the empty caption). `*_sampler`: validate.SAMPLERS, for the stage's
        own. `rerank`: candidates drawn through prior and decoder per image, the one the
        reranking CLIP scores highest against its caption upsampled (unclip.pipelines.rerank).
        `rerank_threshold`: draw the candidates in rounds and stop an image's drawing once one
        scores at least this against its caption (None: the model's; 1.0: always all).
        `generator`: one, or one per image, so that each image depends on its own seed alone.
        `compose`: draw two-object shapes captions one object at a time (dalle2.compose; None: the
        model's setting). Returns UnCLIPOutput(images, image_embeds)."""
        validate.sampling(num_images_per_prompt=num_images_per_prompt, prior=prior, rerank=rerank,
                          rerank_threshold=rerank_threshold, prior_num_inference_steps=prior_num_inference_steps,
                          decoder_num_inference_steps=decoder_num_inference_steps,
                          super_res_num_inference_steps=super_res_num_inference_steps,
                          prior_guidance_scale=prior_guidance_scale, decoder_guidance_scale=decoder_guidance_scale,
                          prior_sampler=prior_sampler, decoder_sampler=decoder_sampler,
                          super_res_sampler=super_res_sampler, compose=compose)
        n = num_images_per_prompt
        if image_embeddings is not None:
            prompts = None if prompt is None else check_prompts(prompt, len(image_embeddings))
            given = F.normalize(image_embeddings.float(), dim=-1).repeat_interleave(n, dim=0).to(self.device)
        else:
            prompts, given = check_prompts(prompt), None
        captions = None if prompts is None else [p for p in prompts for _ in range(n)]
        objects = None
        if (self.compose if compose is None else compose) and captions is not None and given is None:
            from unclip.pipelines.dalle2.compose import Objects

            objects = Objects.split(captions, generator)
        k = self.candidates(rerank, captions)
        self.require("decoder")
        prior_kw = {"prior": prior or "diffusion", "guidance_scale": prior_guidance_scale,
                    "steps": prior_num_inference_steps, "sampler": prior_sampler}
        decoder_kw = {"guidance_scale": decoder_guidance_scale, "steps": decoder_num_inference_steps,
                      "sampler": decoder_sampler}
        up_kw = {"steps": super_res_num_inference_steps, "sampler": super_res_sampler}
        judged = self.upsamplers[:self.judged_after(k)]
        drawn = captions if objects is None else objects.captions

        def draw(indices: list[int], gens: Generators, n: int):
            """n candidates of each image in `indices` at the judge's size, and their embeddings."""
            rows = None if drawn is None else [drawn[i] for i in indices for _ in range(n)]
            z = given[indices].repeat_interleave(n, dim=0) if given is not None else \
                self.image_embeds(rows, gens, **prior_kw)
            images = self.decode(z, rows, generator=gens, **decoder_kw)
            return cascade(judged, images, generator=gens, **up_kw), z

        total = len(drawn if given is None else given)
        threshold = self.rerank_threshold if rerank_threshold is None else rerank_threshold
        images, z = draw_best(draw, self.judge, drawn, total, k, self.device,
                              generator if objects is None else objects.generator, threshold)
        if objects is not None:  # each two-object scene from its objects' images, then finished once
            images, z = objects.combine(images, z)
        later = self.upsamplers[len(judged):]
        images = to_output(cascade(later, images, generator=generator, **up_kw), output_type)
        return UnCLIPOutput(images, z) if return_dict else (images,)

    @torch.no_grad()
    def inpaint(self, image, mask_image, prompt: str | list[str], *, like=None, num_images_per_prompt: int = 1,
                generator: Generators = None, resample: int = 1, rerank: int | None = None, prior: str | None = None,
                prior_guidance_scale: float | None = None, decoder_guidance_scale: float | None = None,
                prior_num_inference_steps: int | None = None, decoder_num_inference_steps: int | None = None,
                super_res_num_inference_steps: int | None = None, decoder_sampler: str | None = None,
                super_res_sampler: str | None = None, output_type: str = "pil", return_dict: bool = True):
        """Repaint the white region of `mask_image` in `image` to agree with `prompt`, keeping the
        rest (unclip.pipelines.inpaint; diffusers' argument names). The image embedding comes from the
        prompt through the prior, or from the image `like` (PIL or uint8). `resample`: RePaint's
        jumps back per step. `rerank`: candidates per image, the best by the judge kept.
        Images come out at the model's output size; the input is cropped and resized to it."""
        from unclip.pipelines.dalle2.repaint import inpaint

        return inpaint(self, image, mask_image, prompt, like=like, num_images_per_prompt=num_images_per_prompt,
                       generator=generator, resample=resample, rerank=rerank, prior=prior,
                       prior_guidance_scale=prior_guidance_scale, decoder_guidance_scale=decoder_guidance_scale,
                       prior_num_inference_steps=prior_num_inference_steps,
                       decoder_num_inference_steps=decoder_num_inference_steps,
                       super_res_num_inference_steps=super_res_num_inference_steps, decoder_sampler=decoder_sampler,
                       super_res_sampler=super_res_sampler, output_type=output_type, return_dict=return_dict)

    @property
    def judge(self) -> ClipEncoder:
        """The CLIP that reranks candidates: the folder's reranker, else its own CLIP."""
        return self.reranker or self.clip

    def judged_after(self, k: int) -> int:
        """How many upsamplers an image's k candidates go through before they are judged
        (unclip.pipelines.rerank.judged_after); none for one candidate."""
        return 0 if k == 1 else judged_after(self.decoder.cfg.image_size, self.upsamplers, self.judge)

    def set_rerank(self, n: int, threshold: float | None = None) -> None:
        """Candidates per image by default, and the score that stops an image's drawing early
        (None: draw all n; unclip.pipelines.rerank.draw_best)."""
        self.rerank = validate.count("rerank", n)
        self.rerank_threshold = None if threshold is None else validate.number("rerank_threshold", threshold,
                                                                                 low=-1.0, high=1.0)

    def candidates(self, rerank: int | None, captions: list[str] | None) -> int:
        """How many candidates to draw per image: `rerank`, or the model's default; one when
        there is no caption to score them against."""
        if captions is None:
            if rerank is not None and rerank > 1:
                raise ValueError("rerank (--rerank) scores candidates against their prompt; give a prompt")
            return 1
        return self.rerank if rerank is None else rerank

    def sampling_defaults(self) -> dict:
        """The call's sampling settings as this model's folder sets them (None: no such stage)."""
        prior, dec, ups = self.prior, self.decoder, self.upsamplers
        return {"prior_guidance_scale": prior and prior.cfg.guidance_scale,
                "decoder_guidance_scale": dec and dec.cfg.guidance_scale,
                "prior_num_inference_steps": prior and prior.cfg.sample_steps,
                "decoder_num_inference_steps": dec and dec.cfg.sample_steps,
                "super_res_num_inference_steps": ups[0].cfg.sample_steps if ups else None,
                "prior_sampler": prior and prior.cfg.sampler, "decoder_sampler": dec and dec.cfg.sampler,
                "super_res_sampler": ups[0].cfg.sampler if ups else None, "rerank": self.rerank,
                "rerank_threshold": self.rerank_threshold, "compose": self.compose}

    # -- what the manipulations need (unclip.tasks.manipulate) -------------------------------------------
    @property
    def default_decoder_guidance(self) -> float:
        return self.decoder.cfg.guidance_scale

    @torch.no_grad()
    def embed_images(self, images) -> torch.Tensor:
        """L2-normalised CLIP image embeddings (B, D) of uint8 arrays (H, W, 3) of any size."""
        self.require("clip")
        squares = [center_square(np.asarray(im)) for im in images]
        if len({sq.shape for sq in squares}) == 1:  # one batch; the CLIP resizes it
            return encode_image(self.clip, to_tensor(squares))
        return torch.cat([encode_image(self.clip, to_tensor(sq)) for sq in squares])

    @torch.no_grad()
    def embed_captions(self, captions: list[str]) -> torch.Tensor:
        self.require("clip")
        return encode_text(self.clip, list(captions))["text_embed"]

    def decoder_input(self, image: np.ndarray) -> torch.Tensor:
        """An image (uint8, any size) at the decoder's base size, (1, 3, S, S) in [-1, 1]."""
        from PIL import Image

        from unclip.data.transforms import resize_center_crop

        size = self.decoder.cfg.image_size
        return to_tensor(np.array(resize_center_crop(Image.fromarray(image), size))).to(self.device)

    def _decoder_cond(self, z_i: torch.Tensor, captions: list[str] | None) -> dict:
        """The decoder's condition: the image embeddings (B, D) and, when it reads text, the
        captions' encodings (B captions, or one for every row; None: the empty caption)."""
        cond = {"image_embed": z_i}
        if self.decoder.cfg.use_text:
            text = encode_text(self.clip, list(captions or [""]))
            cond.update({k: v.expand(len(z_i), *v.shape[1:]) for k, v in text.items()})
        return cond

    @torch.no_grad()
    def invert_decoder(self, z_i: torch.Tensor, x0: torch.Tensor, *, steps: int, caption: str | None = None):
        """DDIM inversion of the unguided decoder (scale 1, as reconstruction decodes)."""
        self.require("clip", "decoder")
        null = self.decoder.null(encode_text(self.clip, [""]))
        denoise = cfg(self.decoder.denoise, self._decoder_cond(z_i, caption and [caption]), null, 1.0)
        return ddim_invert(denoise, x0, self.decoder.scheduler, steps=steps)

    @torch.no_grad()
    def decode_latents(self, z_i: torch.Tensor, x_T: torch.Tensor, *, steps: int, eta: float = 0.0,
                       guidance_scale: float = 1.0, caption: str | None = None, generator: Generators = None):
        """DDIM from (z_i, x_T) at the base size, (B, 3, S, S) in [-1, 1]."""
        return self.decoder.sample(self._decoder_cond(z_i, caption and [caption]), encode_text(self.clip, [""]),
                                   guidance_scale=guidance_scale, steps=steps, eta=eta, generator=generator,
                                   x_T=x_T)
