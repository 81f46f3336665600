"""Merge the partial folders that training runs export (one per stage) into one model folder:
unclip's own, or DALL-E 1's when a DALL-E 1 part is among them (`unclip assemble`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from unclip.models.clip import ClipEncoder
from unclip.pipelines.dalle1 import DalleOnePipeline
from unclip.pipelines.dalle2.pipeline import NETWORKS, DalleTwoPipeline, read_settings
from unclip.pipelines.locate import is_dalle1_folder
from unclip.pipelines.rerank import RERANKER


def assemble(parts: list[str | Path], out: str | Path, dtype: torch.dtype | None = None,
             reranker: str | Path | None = None, rerank: int | None = None, rerank_threshold: float | None = None,
             compose: bool = False):
    """Merge partial pipeline folders (one per training run) into one, stored in `dtype` if
    given (fp16 halves the size). Every part that holds a CLIP-conditioned component must have
    been trained on the same CLIP. With a DALL-E 1 part among them the result is a DALL-E 1
    folder: its parts give CLIP, dVAE and transformer, unclip folders give only their
    upsamplers (the cascade both systems share). `reranker`: a CLIP folder (as `unclip train
    clip` exports) to score candidates by; `rerank`: candidates per image by default;
    `rerank_threshold`: the score that stops an image's drawing early by default; `compose`: draw
    two-object captions one object at a time by default (dalle2.compose)."""
    dalle = any(is_dalle1_folder(p) for p in parts)
    merged = DalleOnePipeline(None) if dalle else DalleTwoPipeline(None)
    fingerprint = None
    for path in parts:
        if is_dalle1_folder(path):
            pipe = DalleOnePipeline.from_pretrained(path)
            for name in ("clip", "dvae", "transformer", RERANKER):
                setattr(merged, name, getattr(pipe, name) or getattr(merged, name))
            merged.upsamplers += pipe.upsamplers
            continue
        pipe = DalleTwoPipeline.from_pretrained(path)
        merged.upsamplers += pipe.upsamplers
        if dalle:
            continue
        if pipe.reranker is not None:
            merged.reranker = pipe.reranker
            merged.set_rerank(pipe.rerank, pipe.rerank_threshold)
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
    if dalle and rerank_threshold is not None:
        raise ValueError("--rerank-threshold is a setting of unCLIP models; DALL-E 1 draws every candidate")
    if rerank is not None:
        merged.set_rerank(rerank) if dalle else merged.set_rerank(rerank, merged.rerank_threshold)
    if rerank_threshold is not None:
        merged.set_rerank(merged.rerank, rerank_threshold)
    if compose:
        if dalle:
            raise ValueError("--compose is a setting of unCLIP models; DALL-E 1 draws whole captions")
        merged.compose = True
    if dtype is not None:
        merged.to(dtype=dtype)
    merged.save_pretrained(out)
    return merged
