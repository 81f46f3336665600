"""DALL-E 1 as one object and one folder, in the same harness as unCLIP.

Folder: `dalle1.json` (kind, components, the transformer's sampling settings), `dvae/`
(diffusers' save_pretrained), `transformer/`, `clip/` (its tokenizer writes the captions'
tokens, its towers rerank the candidates, unless a `reranker/` CLIP does) and optionally
`upsampler1/`, `upsampler2/`...: unCLIP
upsamplers that take the decoded images up by `scale` (the shipped model: 32 -> 64 -> 128 px,
the same cascade as the unCLIP model's); bicubic when there are none or when asked for.

Text to image: for each image, `rerank` candidates are drawn token by token (batched, key/value
cache), decoded by the dVAE, and the one whose CLIP image embedding is closest to the
caption's text embedding is kept.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from unclip import __version__, validate
from unclip.config import from_dict
from unclip.data.embeddings import encode_image, encode_text
from unclip.data.transforms import center_square, to_output, to_tensor
from unclip.diffusion.sampling import Generators
from unclip.models.clip import ClipEncoder
from unclip.models.dalle1.dvae import DVAE
from unclip.models.dalle1.transformer import DalleConfig, DalleTransformer
from unclip.models.upsampler import Upsampler, cascade, load_cascade, save_cascade, upsample
from unclip.pipelines.base import Capabilities, Pipeline
from unclip.pipelines.locate import DALLE1_SETTINGS as SETTINGS
from unclip.pipelines.output import UnCLIPOutput, check_prompts
from unclip.pipelines.rerank import RERANKER, best_of, draw_best, judged_after, load_reranker
from unclip.runtime.weights import component_error

class DalleOnePipeline(Pipeline):
    """DALL-E 1: a transformer over caption and image tokens, a dVAE, CLIP reranking and the
    unCLIP upsamplers. It has no CLIP image latent: no prior, nothing to invert or vary."""

    kind = "dalle1"  # what its folder's dalle1.json says
    title = "DALL-E 1 model"

    def __init__(self, clip: ClipEncoder | None, dvae: DVAE | None = None,
                 transformer: DalleTransformer | None = None, upsamplers: list[Upsampler] = (), scale: int = 4,
                 reranker: ClipEncoder | None = None):
        self.clip, self.dvae, self.transformer, self.upsamplers = clip, dvae, transformer, list(upsamplers)
        self.reranker = reranker
        factors = [up.cfg.factor for up in self.upsamplers]
        if factors and int(np.prod(factors)) != scale:
            raise ValueError(f"the upsamplers scale by {int(np.prod(factors))}, the model by {scale}")
        self.scale = scale  # output side / dVAE side

    @classmethod
    def _load(cls, path: Path, torch_dtype=torch.float32) -> DalleOnePipeline:
        try:
            settings = json.loads((path / SETTINGS).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path / SETTINGS} is not valid JSON: {e}") from None
        parts = settings.get("components", [])

        def load(name: str, fn):
            if name not in parts:
                return None
            try:
                return fn()
            except (ValueError, OSError, RuntimeError, KeyError, TypeError) as e:
                raise component_error(path, name, e) from None

        clip = load("clip", lambda: ClipEncoder.from_pretrained(path / "clip", torch_dtype).eval())
        dvae = load("dvae", lambda: DVAE.from_pretrained(path / "dvae", torch_dtype=torch_dtype).eval())
        cfg = from_dict(DalleConfig, settings.get("transformer", {}), "transformer.")
        transformer = load("transformer", lambda: DalleTransformer.from_pretrained(path / "transformer", cfg,
                                                                                   torch_dtype))
        upsamplers = load_cascade(path, settings, torch_dtype, load)
        reranker = load(RERANKER, lambda: load_reranker(path, torch_dtype))
        return cls(clip, dvae, transformer, upsamplers, settings.get("scale", 4), reranker)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        settings: dict = {"kind": self.kind, "unclip_version": __version__, "scale": self.scale, "components": []}
        for name in ("clip", "dvae", "transformer", RERANKER):
            part = getattr(self, name)
            if part is not None:
                part.save_pretrained(path / name)
                settings["components"].append(name)
        if self.transformer is not None:
            settings["transformer"] = asdict(self.transformer.cfg)
        save_cascade(self.upsamplers, path, settings)
        (path / SETTINGS).write_text(json.dumps(settings, indent=2))

    def networks(self) -> list[tuple[str, torch.nn.Module]]:
        parts = [("clip", self.clip), ("dvae", self.dvae), ("transformer", self.transformer),
                 *((f"upsampler{i}", up) for i, up in enumerate(self.upsamplers, 1)), (RERANKER, self.reranker)]
        return [(n, m) for n, m in parts if m is not None]

    def sampled_networks(self) -> list[tuple[str, torch.nn.Module]]:
        # the transformer samples token by token with a growing cache: shapes change every step
        return [(f"upsampler{i}", up.unet) for i, up in enumerate(self.upsamplers, 1)]

    @property
    def capabilities(self) -> Capabilities:
        ready = None not in (self.clip, self.dvae, self.transformer)
        return Capabilities(text_to_image=ready, reads_images=self.clip is not None, reranking=self.judge is not None,
                            settings=frozenset({"rerank", "upscale", "temperature", "top_k"}))

    def sampling_defaults(self) -> dict:
        t = self.transformer
        return {"rerank": t and t.cfg.rerank, "upscale": "upsampler"}

    def set_rerank(self, n: int) -> None:
        self.require("transformer")
        self.transformer.cfg.rerank = validate.count("rerank", n)

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.clip.tokenize(prompts)
        return enc["input_ids"], enc["attention_mask"].bool()

    # -- what the scorer needs (evaluate.shapes_eval.clip_score) ------------------------------------
    @torch.no_grad()
    def embed_images(self, images) -> torch.Tensor:
        squares = [center_square(np.asarray(im)) for im in images]
        return torch.cat([encode_image(self.clip, to_tensor(sq)) for sq in squares])

    @torch.no_grad()
    def embed_captions(self, captions: list[str]) -> torch.Tensor:
        return encode_text(self.clip, list(captions))["text_embed"]

    def rerank(self, candidates: torch.Tensor, prompts: list[str], n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The best of each prompt's n consecutive candidates (B * n, 3, S, S) by CLIP score
        (the reranker's, else the folder's CLIP), and every candidate's score (B, n)."""
        best, scores = best_of(self.judge, candidates, prompts, n)
        return candidates[best], scores

    @property
    def judge(self):
        """The CLIP that reranks candidates: the folder's reranker, else its own CLIP."""
        return self.reranker or self.clip

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], *, num_images_per_prompt: int = 1, generator: Generators = None,
                 rerank: int | None = None, upscale: str = "upsampler", temperature: float | None = None,
                 top_k: int | None = None, output_type: str = "pil", return_dict: bool = True):
        """Text to images `scale` times the dVAE's side. `rerank`: candidates drawn per image, the
        best by CLIP kept (default: the model's), judged after the upsamplers that take them to
        the judge's size (unclip.pipelines.rerank.judged_after). `generator`: one, or one per image. `upscale`:
        "upsampler" (the model's cascade; bicubic if it has none) or "bicubic". Returns
        UnCLIPOutput(images, None): DALL-E 1 has no image embeddings."""
        self.require("clip", "dvae", "transformer")
        validate.sampling(num_images_per_prompt=num_images_per_prompt)
        validate.sampling(rerank=rerank, upscale=upscale)
        n = self.transformer.cfg.rerank if rerank is None else rerank
        prompts = [p for p in check_prompts(prompt) for _ in range(num_images_per_prompt)]
        ups = self.upsamplers if upscale == "upsampler" else []
        judged = ups[:judged_after(self.dvae.config.image_size, ups, self.judge)] if n > 1 else []

        def draw(indices: list[int], gens: Generators, k: int):
            ids, mask = self.tokenize([prompts[i] for i in indices])
            codes = self.transformer.sample(ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0),
                                            generator=gens, temperature=temperature, top_k=top_k)
            candidates = self.dvae.decode(codes).float().clamp(-1, 1)
            return cascade(judged, candidates, generator=gens), None

        images, _ = draw_best(draw, self.judge, prompts, len(prompts), n, self.device, generator)
        images = cascade(ups[len(judged):], images, generator=generator) if ups else upsample(images, self.scale)
        images = to_output(images, output_type)
        return UnCLIPOutput(images, None) if return_dict else (images,)
