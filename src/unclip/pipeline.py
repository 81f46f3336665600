"""The unCLIP system as one object and one folder.

A pipeline folder holds a subfolder per component in diffusers' `save_pretrained` layout
(config plus safetensors): `clip/`, `prior/`, `ar_prior/`, `decoder/` (`unet/`, `text_proj/`),
`upsampler1/`, `upsampler2/`, optionally `reranker/` (a CLIP that picks the best of `rerank`
candidates per image, unclip.rerank), and `unclip.json` with each component's settings (sampling
defaults), the fingerprint of the CLIP the others were trained on, and the version of unclip
that wrote it. Nothing is pickled and loading runs no code from the folder. Components are
optional, so a stage's training run exports a partial pipeline and `assemble` merges them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__, validate
from .clip import ClipEncoder
from .config import from_dict
from .data.embeddings import clip_fingerprint, encode_image, encode_text
from .data.transforms import center_square, to_tensor
from .decoder import Decoder, DecoderConfig
from .diffusion.guidance import cfg
from .diffusion.sampling import Generators, ddim_invert, repeat_generators
from .output import Components, UnCLIPOutput, check_prompts, to_output
from .prior import ARPrior, ARPriorConfig, DiffusionPrior, PriorConfig
from .rerank import RERANKER, best_of, images_per_call, judged_after, load_reranker
from .upsampler import Upsampler, cascade, load_cascade, save_cascade
from .weights import component_error

SETTINGS = "unclip.json"


def default_model_dir() -> Path:
    """The shapes-world model shipped inside the package."""
    return Path(__file__).resolve().parent / "assets" / "shapes"


SHIPPED_NAMES = {"dalle1": "dalle1"}  # --model NAME: a model shipped in the package's assets


def resolve_model(path: str | Path | None) -> Path:
    """A model folder: the one given, a shipped model by name ("dalle1", unless a folder of that
    name exists here), or the shipped unCLIP model."""
    if path is not None and str(path) in SHIPPED_NAMES and not Path(path).is_dir():
        shipped = default_model_dir().parent / SHIPPED_NAMES[str(path)]
        if not shipped.is_dir():
            raise FileNotFoundError(f"no {path} model is installed at {shipped}; pass --model DIR")
        return shipped
    if path is not None:
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"model folder not found: {path}")
        return path
    path = default_model_dir()
    if not (path / SETTINGS).is_file():
        raise FileNotFoundError(f"no default model is installed at {path}; pass --model DIR")
    return path


def read_settings(path: str | Path) -> dict:
    path = Path(path)
    if not (path / SETTINGS).is_file():
        raise FileNotFoundError(f"not a model folder (no {SETTINGS} of unclip's own, no model_index.json "
                                f"of a diffusers UnCLIPPipeline): {path}")
    try:
        return json.loads((path / SETTINGS).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path / SETTINGS} is not valid JSON: {e}") from None


def load_pipeline(path: str | Path | None = None, torch_dtype=torch.float32, image_encoder: str | Path | None = None):
    """The pipeline a folder holds, chosen by what the folder says: unclip's own (`unclip.json`),
    DALL-E 1 (`dalle1.json`) or Karlo's diffusers layout (`model_index.json`); default: the
    shipped model.
    `image_encoder`: for Karlo, a variations folder whose image tower to add."""
    from .dalle1.pipeline import DalleOnePipeline, is_dalle1_folder
    from .karlo import KarloPipeline, folder_kind

    path = resolve_model(path)
    if is_dalle1_folder(path):
        if image_encoder is not None:
            raise ValueError("--image-encoder adds a Karlo image tower to a Karlo folder; this is a DALL-E 1 folder")
        return DalleOnePipeline.from_pretrained(path, torch_dtype=torch_dtype)
    if folder_kind(path) is not None:
        return KarloPipeline.from_pretrained(path, torch_dtype=torch_dtype, image_encoder=image_encoder)
    if image_encoder is not None:
        raise ValueError("--image-encoder adds a Karlo image tower to a Karlo folder; this is an unclip folder")
    return UnCLIPPipeline.from_pretrained(path, torch_dtype=torch_dtype)


NETWORKS = ("prior", "ar_prior", "decoder")  # the components saved with their settings


class UnCLIPPipeline(Components):
    """CLIP, priors, decoder and upsamplers; any of them may be missing from a partial folder."""

    def __init__(self, clip: ClipEncoder | None, prior: DiffusionPrior | None = None,
                 decoder: Decoder | None = None, upsamplers: list[Upsampler] = (), ar_prior: ARPrior | None = None,
                 reranker: ClipEncoder | None = None, rerank: int = 1):
        self.clip, self.prior, self.decoder, self.upsamplers = clip, prior, decoder, list(upsamplers)
        self.ar_prior, self.reranker = ar_prior, reranker
        self.set_rerank(rerank)  # candidates per image by default

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, torch_dtype=torch.float32) -> UnCLIPPipeline:
        """Load a pipeline folder (default: the shipped model). Weights stored in fp16 are
        upcast to `torch_dtype`, fp32 unless asked otherwise (CPUs are slow in fp16)."""
        path = resolve_model(path)
        settings = read_settings(path)
        parts = settings.get("components", [])

        def load(name: str, fn):
            try:
                return fn()
            except (ValueError, OSError, RuntimeError, KeyError, TypeError) as e:
                raise component_error(path, name, e) from None

        clip = load("clip", lambda: ClipEncoder.from_pretrained(path / "clip", torch_dtype).eval()) \
            if "clip" in parts else None
        prior = decoder = None
        if "prior" in parts:
            cfg = from_dict(PriorConfig, settings.get("prior", {}), "prior.")
            prior = load("prior", lambda: DiffusionPrior.from_pretrained(path / "prior", cfg, torch_dtype=torch_dtype))
        ar_prior = None
        if "ar_prior" in parts:
            cfg = from_dict(ARPriorConfig, settings.get("ar_prior", {}), "ar_prior.")
            ar_prior = load("ar_prior", lambda: ARPrior.from_pretrained(path / "ar_prior", cfg, torch_dtype=torch_dtype))
        if "decoder" in parts:
            cfg = from_dict(DecoderConfig, settings.get("decoder", {}), "decoder.")
            decoder = load("decoder", lambda: Decoder.from_pretrained(path / "decoder", cfg, torch_dtype=torch_dtype))
        upsamplers = load_cascade(path, settings, torch_dtype, load)
        reranker = load(RERANKER, lambda: load_reranker(path, torch_dtype)) if RERANKER in parts else None
        try:
            return cls(clip, prior, decoder, upsamplers, ar_prior, reranker, settings.get("rerank", 1))
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
        settings["rerank"] = self.rerank
        (path / SETTINGS).write_text(json.dumps(settings, indent=2))

    def components(self) -> list:
        return [self.clip, self.prior, self.ar_prior, self.decoder, *self.upsamplers, self.reranker]

    @torch.no_grad()
    def text_condition(self, prompts: list[str]) -> tuple[dict, dict]:
        """The CLIP text condition of `prompts` and of the empty caption (the null)."""
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise ValueError("prompts must be non-empty strings")
        self.require("clip")
        return encode_text(self.clip, list(prompts)), encode_text(self.clip, [""])

    def prior_net(self, prior: str) -> DiffusionPrior | ARPrior:
        """The network of a prior by name: "diffusion" or "ar"."""
        name = {"diffusion": "prior", "ar": "ar_prior"}[prior]
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
        if prior == "ar":
            if steps is not None or sampler is not None:
                raise ValueError("prior_num_inference_steps and prior_sampler (--steps prior=N, --sampler "
                                 "prior=NAME) are for the diffusion prior; the AR prior draws one code per step")
            return self.prior_net("ar").sample(cond, null, guidance_scale=guidance_scale, generator=generator)
        return self.prior_net("diffusion").sample(cond, null, guidance_scale=guidance_scale, steps=steps,
                                                  generator=generator, sampler=sampler)

    @torch.no_grad()
    def decode(self, image_embed: torch.Tensor, prompts: list[str] | None = None, *,
               generator: Generators = None, x_T: torch.Tensor | None = None, **kw) -> torch.Tensor:
        """Base-resolution images (B, 3, S, S) in [-1, 1] from CLIP image embeddings, with the
        captions as extra context when the decoder uses text (None: the empty caption)."""
        self.require("clip", "decoder")
        text_null = encode_text(self.clip, [""])
        cond = {"image_embed": image_embed}
        if self.decoder.cfg.use_text:
            text = encode_text(self.clip, prompts) if prompts else \
                {k: v.expand(len(image_embed), *v.shape[1:]) for k, v in text_null.items()}
            cond.update(text)
        return self.decoder.sample(cond, text_null, generator=generator, x_T=x_T, **kw)

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
                 rerank: int | None = None):
        """Text to image through every stage, in diffusers' conventions. Settings left None are
        the model's own. `prior`: which image embedding the decoder gets (validate.PRIORS; None: the
        diffusion prior). `image_embeddings` (B, D) skip the prior (with the prompt as the
        decoder's caption, or the empty caption). `*_sampler`: validate.SAMPLERS, for the stage's
        own. `rerank`: candidates drawn through prior and decoder per image, the one the
        reranking CLIP scores highest against its caption upsampled (unclip.rerank).
        `generator`: one, or one per image, so that each image depends on its own seed alone.
        Returns UnCLIPOutput(images, image_embeds)."""
        validate.sampling(num_images_per_prompt=num_images_per_prompt, prior=prior, rerank=rerank,
                          prior_num_inference_steps=prior_num_inference_steps,
                          decoder_num_inference_steps=decoder_num_inference_steps,
                          super_res_num_inference_steps=super_res_num_inference_steps,
                          prior_guidance_scale=prior_guidance_scale, decoder_guidance_scale=decoder_guidance_scale,
                          prior_sampler=prior_sampler, decoder_sampler=decoder_sampler,
                          super_res_sampler=super_res_sampler)
        n = num_images_per_prompt
        if image_embeddings is not None:
            prompts = None if prompt is None else check_prompts(prompt, len(image_embeddings))
            given = F.normalize(image_embeddings.float(), dim=-1).repeat_interleave(n, dim=0)
        else:
            prompts, given = check_prompts(prompt), None
        captions = None if prompts is None else [p for p in prompts for _ in range(n)]
        k = self.candidates(rerank, captions)
        self.require("decoder")
        total = len(captions if given is None else given)
        per_call = images_per_call(k, self.decoder.unet.device, total)
        up_kw = {"steps": super_res_num_inference_steps, "sampler": super_res_sampler}
        chunks = [self._best_candidates(
            None if captions is None else captions[s:s + per_call], None if given is None else given[s:s + per_call],
            generator[s:s + per_call] if isinstance(generator, Sequence) else generator, k,
            {"prior": prior or "diffusion", "guidance_scale": prior_guidance_scale,
             "steps": prior_num_inference_steps, "sampler": prior_sampler},
            {"guidance_scale": decoder_guidance_scale, "steps": decoder_num_inference_steps,
             "sampler": decoder_sampler}, up_kw)
            for s in range(0, total, per_call)]
        images, z = torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])
        later = self.upsamplers[self.judged_after(k):]
        images = to_output(cascade(later, images, generator=generator, **up_kw), output_type)
        return UnCLIPOutput(images, z) if return_dict else (images,)

    def _best_candidates(self, captions: list[str] | None, given: torch.Tensor | None, generator: Generators,
                         k: int, prior_kw: dict, decoder_kw: dict, up_kw: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and their embeddings: k candidates per image through prior (unless the
        embeddings are `given`), decoder and the upsamplers the judge sees them after
        (`judged_after`), the best by the reranking CLIP kept."""
        rows = None if captions is None else [c for c in captions for _ in range(k)]
        gens = repeat_generators(generator, k)
        z = given.repeat_interleave(k, dim=0) if given is not None else self.image_embeds(rows, gens, **prior_kw)
        images = self.decode(z, rows, generator=gens, **decoder_kw)
        if k == 1:
            return images, z
        images = cascade(self.upsamplers[:self.judged_after(k)], images, generator=gens, **up_kw)
        best, _ = best_of(self.judge, images, captions, k)
        return images[best], z[best]

    @property
    def judge(self) -> ClipEncoder:
        """The CLIP that reranks candidates: the folder's reranker, else its own CLIP."""
        return self.reranker or self.clip

    def judged_after(self, k: int) -> int:
        """How many upsamplers an image's k candidates go through before they are judged
        (unclip.rerank.judged_after); none for one candidate."""
        return 0 if k == 1 else judged_after(self.decoder.cfg.image_size, self.upsamplers, self.judge)

    def set_rerank(self, n: int) -> None:
        self.rerank = validate.count("rerank", n)

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
                "super_res_sampler": ups[0].cfg.sampler if ups else None}

    # -- what the manipulations need (unclip.manipulate) -------------------------------------------
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

        from .data.transforms import resize_center_crop

        return to_tensor(np.array(resize_center_crop(Image.fromarray(image), self.decoder.cfg.image_size)))

    def _decoder_cond(self, z_i: torch.Tensor, caption: str | None) -> dict:
        cond = {"image_embed": z_i}
        if self.decoder.cfg.use_text:
            text = encode_text(self.clip, [caption or ""])
            cond.update({k: v.expand(len(z_i), *v.shape[1:]) for k, v in text.items()})
        return cond

    @torch.no_grad()
    def invert_decoder(self, z_i: torch.Tensor, x0: torch.Tensor, *, steps: int, caption: str | None = None):
        """DDIM inversion of the unguided decoder (scale 1, as reconstruction decodes)."""
        self.require("clip", "decoder")
        null = self.decoder.null(encode_text(self.clip, [""]))
        denoise = cfg(self.decoder.denoise, self._decoder_cond(z_i, caption), null, 1.0)
        return ddim_invert(denoise, x0, self.decoder.scheduler, steps=steps)

    @torch.no_grad()
    def decode_latents(self, z_i: torch.Tensor, x_T: torch.Tensor, *, steps: int, eta: float = 0.0,
                       guidance_scale: float = 1.0, caption: str | None = None, generator: Generators = None):
        """DDIM from (z_i, x_T) at the base size, (B, 3, S, S) in [-1, 1]."""
        return self.decoder.sample(self._decoder_cond(z_i, caption), encode_text(self.clip, [""]),
                                   guidance_scale=guidance_scale, steps=steps, eta=eta, generator=generator,
                                   x_T=x_T)


def assemble(parts: list[str | Path], out: str | Path, dtype: torch.dtype | None = None,
             reranker: str | Path | None = None, rerank: int | None = None):
    """Merge partial pipeline folders (one per training run) into one, stored in `dtype` if
    given (fp16 halves the size). Every part that holds a CLIP-conditioned component must have
    been trained on the same CLIP. With a DALL-E 1 part among them the result is a DALL-E 1
    folder: its parts give CLIP, dVAE and transformer, unclip folders give only their
    upsamplers (the cascade both systems share). `reranker`: a CLIP folder (as `unclip train
    clip` exports) to score candidates by; `rerank`: candidates per image by default."""
    from .dalle1.pipeline import DalleOnePipeline, is_dalle1_folder

    dalle = any(is_dalle1_folder(p) for p in parts)
    merged = DalleOnePipeline(None) if dalle else UnCLIPPipeline(None)
    fingerprint = None
    for path in parts:
        if is_dalle1_folder(path):
            pipe = DalleOnePipeline.from_pretrained(path)
            for name in ("clip", "dvae", "transformer", RERANKER):
                setattr(merged, name, getattr(pipe, name) or getattr(merged, name))
            merged.upsamplers += pipe.upsamplers
            continue
        pipe = UnCLIPPipeline.from_pretrained(path)
        merged.upsamplers += pipe.upsamplers
        if dalle:
            continue
        if pipe.reranker is not None:
            merged.reranker, merged.rerank = pipe.reranker, pipe.rerank
        if pipe.clip is not None:
            fp = read_settings(path)["clip_fingerprint"]
            if fingerprint is not None and fp != fingerprint:
                raise ValueError(f"{path} was trained on another CLIP than the parts before it")
            fingerprint, merged.clip = fp, pipe.clip
        for name in NETWORKS:
            if getattr(pipe, name) is not None:
                setattr(merged, name, getattr(pipe, name))
    if dalle and merged.upsamplers:
        merged.scale = int(np.prod([up.cfg.factor for up in merged.upsamplers]))
    if reranker is not None:
        merged.reranker = ClipEncoder.from_pretrained(reranker).eval()
    if rerank is not None:
        merged.set_rerank(rerank)
    if dtype is not None:
        merged.to(dtype=dtype)
    merged.save_pretrained(out)
    return merged
