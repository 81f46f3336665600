"""`--compile` / `compile=`: torch.compile for the networks that run at every sampling step
(decoder, upsamplers, diffusion prior; `Pipeline.sampled_networks`).

Inductor fuses each network's element-wise work (group norm, SiLU, residual adds) around its
convolutions and matmuls. Each network compiles on its first call with a new input shape:
tens of seconds on 2 cores with an empty cache, a few once inductor's on-disk cache holds the
kernels. That cache lives in $UNCLIP_CACHE/inductor (unless TORCHINDUCTOR_CACHE_DIR says
otherwise) and is keyed by the graph, torch's version and its settings, so a changed model or
an upgraded torch compiles anew instead of reusing stale kernels, and a cache entry that cannot
be read is compiled again. Weights are inputs of the graph, not baked in: loading other
weights of the same architecture reuses the kernels.

`auto` compiles on a GPU only. On the CPU it did not pay (benchmarks/compile.py, a 2-core AMD
EPYC with AVX-512 BF16, docs/results/compile_cpu.txt): in bf16 the networks ran 0.9-1.33x their
eager speed, after 20-120 s of compiling each, and a pipeline call reaches each network in many
batch shapes (reranking rounds, chunks, guidance), each compiled anew.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .cache import user_cache

CHOICES = ("auto", "on", "off")


def cache_dir() -> Path:
    """Inductor's on-disk cache: $TORCHINDUCTOR_CACHE_DIR, set to $UNCLIP_CACHE/inductor if unset."""
    return Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(user_cache("inductor"))))


def compile_networks(networks: list[tuple[str, torch.nn.Module]]) -> list[str]:
    """torch.compile each module in place (nn.Module.compile: its weights, state dict and
    attributes stay as they are; calls go through the compiled graph). Returns their names."""
    cache_dir()
    for _, module in networks:
        module.compile()
    return [name for name, _ in networks]


def wanted(setting: str | bool, device: torch.device) -> bool:
    """Whether to compile: "on"/True, "off"/False, or "auto": on a CUDA GPU."""
    if isinstance(setting, bool):
        return setting
    if setting not in CHOICES:
        raise ValueError(f"compile (--compile) must be one of {', '.join(CHOICES)}, got {setting!r}")
    return setting == "on" or (setting == "auto" and device.type == "cuda")
