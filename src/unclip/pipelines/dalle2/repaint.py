"""Drawing with RePaint in unclip's own pipeline: inpainting a region of an image
(`DalleTwoPipeline.inpaint`), and two-object scenes drawn one object at a time (`compose`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from unclip import validate
from unclip.data import shapes
from unclip.data.transforms import to_output
from unclip.diffusion.sampling import Generators
from unclip.models.upsampler import cascade
from unclip.pipelines.output import UnCLIPOutput, check_prompts
from unclip.pipelines.rerank import draw_best


@torch.no_grad()
def inpaint(pipe, image, mask_image, prompt: str | list[str], *, like=None, num_images_per_prompt: int = 1,
            generator: Generators = None, resample: int = 1, rerank: int | None = None, prior: str | None = None,
            prior_guidance_scale: float | None = None, decoder_guidance_scale: float | None = None,
            prior_num_inference_steps: int | None = None, decoder_num_inference_steps: int | None = None,
            super_res_num_inference_steps: int | None = None, decoder_sampler: str | None = None,
            super_res_sampler: str | None = None, output_type: str = "pil", return_dict: bool = True):
    """DalleTwoPipeline.inpaint (its docstring says what it does)."""
    from unclip.pipelines.inpaint import Region, check_sampler

    validate.count("resample", resample, high=validate.MAX_STEPS)
    validate.sampling(num_images_per_prompt=num_images_per_prompt, prior=prior, rerank=rerank,
                      prior_num_inference_steps=prior_num_inference_steps,
                      decoder_num_inference_steps=decoder_num_inference_steps,
                      super_res_num_inference_steps=super_res_num_inference_steps,
                      prior_guidance_scale=prior_guidance_scale, decoder_guidance_scale=decoder_guidance_scale,
                      decoder_sampler=decoder_sampler, super_res_sampler=super_res_sampler)
    pipe.require("clip", "decoder")
    region = Region(image, mask_image, resample)
    check_sampler(decoder_sampler or pipe.decoder.cfg.sampler)
    for up in pipe.upsamplers:
        check_sampler(super_res_sampler or up.cfg.sampler)
    captions = [p for p in check_prompts(prompt) for _ in range(num_images_per_prompt)]
    k = pipe.candidates(rerank, captions)
    given = None if like is None else pipe.embed_images([like]).to(pipe.device)
    up_kw = {"steps": super_res_num_inference_steps, "sampler": super_res_sampler}
    judged = pipe.upsamplers[:pipe.judged_after(k)]
    at = lambda side: region.at(side, pipe.device)

    def draw(indices: list[int], gens: Generators, n: int):
        rows = [captions[i] for i in indices for _ in range(n)]
        z = given.expand(len(rows), -1) if given is not None else pipe.image_embeds(
            rows, gens, prior=prior or "diffusion", guidance_scale=prior_guidance_scale,
            steps=prior_num_inference_steps)
        images = pipe.decode(z, rows, generator=gens, guidance_scale=decoder_guidance_scale,
                             steps=decoder_num_inference_steps, sampler=decoder_sampler,
                             inpaint=at(pipe.decoder.cfg.image_size))
        return cascade(judged, images, generator=gens, inpaint=at, **up_kw), z

    images, z = draw_best(draw, pipe.judge, captions, len(captions), k, pipe.device, generator)
    images = cascade(pipe.upsamplers[len(judged):], images, generator=generator, inpaint=at, **up_kw)
    images = to_output(region.composite(images), output_type)
    return UnCLIPOutput(images, z) if return_dict else (images,)



# A two-object shapes caption, and where each of its objects goes.
TWO_OBJECTS = re.compile(r"^a (\w+) (\w+) (to the left of|to the right of|above|below) a (\w+) (\w+) "
                         r"on a (\w+) background$")
PLACES = {"to the left of": ("left", "right"), "to the right of": ("right", "left"), "above": ("top", "bottom"),
          "below": ("bottom", "top")}


def split_caption(caption: str) -> tuple[str, str, str] | None:
    """(first object's caption, second object's caption, the second's place) of a canonical
    two-object shapes caption, each object alone at its place (size "large": single-object
    captions name one); None for any other caption."""
    m = TWO_OBJECTS.match(caption.strip())
    if m is None:
        return None
    c1, s1, relation, c2, s2, bg = m.groups()
    p1, p2 = PLACES[relation]
    one = [f"a large {c} {s} {shapes.PLACE_PHRASES[p]} on a {bg} background" for c, s, p in ((c1, s1, p1), (c2, s2, p2))]
    return one[0], one[1], p2


def half_keep(places: list[str], side: int, device) -> torch.Tensor:
    """(B, 1, side, side): 0 over the half where each row's second object goes, 1 elsewhere."""
    keep = torch.ones(len(places), 1, side, side, device=device)
    h = side // 2
    for row, place in enumerate(places):
        region = {"left": np.s_[:, :h], "right": np.s_[:, h:], "top": np.s_[:h, :], "bottom": np.s_[h:, :]}[place]
        keep[row, 0][region] = 0
    return keep


@torch.no_grad()
def draw_composed(pipe, captions: list[str], generator: Generators, kw: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, S, S) in [-1, 1] and embeddings for `captions`, two-object scenes one object
    at a time (issue 47): the first object alone at its place (one candidate), then the second
    repainted into the other half (RePaint through decoder and upsamplers), each from its own
    single-object caption, which the decoder binds where it does not bind two. Other captions are
    drawn as the call draws them (`kw`: its settings)."""
    parts = [split_caption(c) for c in captions]
    pick = lambda ids: [generator[i] for i in ids] if isinstance(generator, Sequence) else generator  # noqa: E731
    images, z = [None] * len(captions), [None] * len(captions)
    rest = [i for i, p in enumerate(parts) if p is None]
    todo = [i for i, p in enumerate(parts) if p is not None]
    if rest:
        out = pipe([captions[i] for i in rest], generator=pick(rest), output_type="pt", compose=False, **kw)
        for j, i in enumerate(rest):
            images[i], z[i] = out.images[j] * 2 - 1, out.image_embeds[j]
    if todo:
        gens = pick(todo)
        first = pipe([parts[i][0] for i in todo], generator=gens, output_type="pt", compose=False,
                     **{**kw, "rerank": 1}).images * 2 - 1
        second = [parts[i][1] for i in todo]
        keep_at = lambda side: half_keep([parts[i][2] for i in todo], side, pipe.device)  # noqa: E731

        def at(side: int):
            known = first if side == first.shape[-1] else F.interpolate(first, size=(side, side), mode="bicubic",
                                                                          antialias=True).clamp(-1, 1)
            return known.to(pipe.device), keep_at(side), 1

        zs = pipe.image_embeds(second, gens, prior=kw.get("prior") or "diffusion",
                               guidance_scale=kw.get("prior_guidance_scale"), steps=kw.get("prior_num_inference_steps"))
        base = pipe.decode(zs, second, generator=gens, guidance_scale=kw.get("decoder_guidance_scale"),
                           steps=kw.get("decoder_num_inference_steps"), inpaint=at(pipe.decoder.cfg.image_size))
        up = cascade(pipe.upsamplers, base, generator=gens, steps=kw.get("super_res_num_inference_steps"), inpaint=at)
        keep = keep_at(up.shape[-1])
        up = keep * first.to(up.device) + (1 - keep) * up
        for j, i in enumerate(todo):
            images[i], z[i] = up[j], zs[j]
    return torch.stack(images), torch.stack(z)
