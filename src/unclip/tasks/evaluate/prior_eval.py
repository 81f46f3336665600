"""How well the prior maps captions to CLIP image embeddings, on the shapes eval split.

For each eval prompt, the true image embedding is CLIP's embedding of the rendered scene the
prompt describes. Figures per subset and method:
- cosine: mean cosine between the predicted and the true image embedding;
- retrieval: share of predictions whose nearest true image embedding among a group of 100
  (distinct captions) is the right one.
Methods: the prior with its default sampling, the prior without guidance (scale 1), and the
paper's baseline of the normalised text embedding used in place of an image embedding.
A reference, `another_render`: the true embedding of another render of the same caption
(positions and unstated sizes drawn afresh), i.e. what a prior sampling exactly from the
true distribution of image embeddings given the caption would score.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from unclip.data import shapes
from unclip.tasks.evaluate.clip_retrieval import by_subset, retrieval_hits, true_image_embeds

METHODS = ("prior", "text_embedding_baseline", "no_guidance", "another_render")


@torch.no_grad()
def evaluate_prior(pipe, num: int = 500, group: int = 100, seed: int = 0, batch: int = 100,
                   methods: tuple[str, ...] = METHODS, prior: str = "diffusion", **sampling) -> dict:
    """{subset: {method: {"cosine": .., "retrieval": ..}}} over the first `num` eval items;
    `prior`: which of the pipeline's priors, "diffusion" or "ar"; `sampling`: for its `sample`
    (e.g. steps, sampler)."""
    clip, items, net = pipe.clip, shapes.eval_split(num), pipe.prior_net(prior)
    generator = torch.Generator().manual_seed(seed)
    figures = {}
    for subset, chosen in by_subset(items):
        truth = true_image_embeds(clip, chosen, batch)
        sampled = [m for m in methods if m != "another_render"]
        preds = {m: [] for m in sampled}
        for i in range(0, len(chosen), batch):
            prompts = [it.prompt for it in chosen[i : i + batch]]
            cond, null = pipe.text_condition(prompts)
            for m in sampled:
                if m == "text_embedding_baseline":
                    preds[m].append(cond["text_embed"])
                else:
                    scale = 1.0 if m == "no_guidance" else None
                    preds[m].append(net.sample(cond, null, guidance_scale=scale, generator=generator, **sampling))
        if "another_render" in methods:
            rng = np.random.default_rng(seed)
            others = [dataclasses.replace(it, scene=shapes.resample_scene(it.scene, rng)) for it in chosen]
            preds["another_render"] = [true_image_embeds(clip, others, batch)]
        figures[subset] = {m: _score(torch.cat(p), truth, group) for m, p in preds.items()}
    return figures


def _score(pred: torch.Tensor, truth: torch.Tensor, group: int) -> dict:
    cosine = (pred * truth).sum(-1).mean().item()  # both L2-normalised
    return {"cosine": cosine, "retrieval": retrieval_hits(pred, truth, group) / len(pred)}
