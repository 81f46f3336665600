"""Inpainting with RePaint in unclip's own pipeline (`DalleTwoPipeline.inpaint`)."""

from __future__ import annotations

import torch

from unclip import validate
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


