"""`--compile` / `compile=`: torch.compile ("on"), or ONNX Runtime ("onnx", unclip.runtime.onnx_runtime),
for the networks that run at every sampling step (decoder, upsamplers, diffusion prior;
`Pipeline.sampled_networks`).

Inductor fuses each network's element-wise work (group norm, SiLU, residual adds) around its
convolutions and matmuls. Each network compiles on its first call with a new input shape:
tens of seconds on 2 cores with an empty cache, a few once inductor's on-disk cache holds the
kernels. That cache lives in $UNCLIP_CACHE/inductor (unless TORCHINDUCTOR_CACHE_DIR says
otherwise) and is keyed by the graph, torch's version and its settings, so a changed model or
an upgraded torch compiles anew instead of reusing stale kernels, and a cache entry that cannot
be read is compiled again. Weights are inputs of the graph, not baked in: loading other
weights of the same architecture reuses the kernels.

`auto`: torch.compile on a CUDA GPU, eager elsewhere. Measured on a 2-core AMD EPYC with AVX-512
BF16 (benchmarks/compile.py, docs/results/compile_cpu.txt): compiled bf16 ran 0.9-1.33x eager
bf16 after 20-120 s of compiling per network, and a pipeline call reaches each network in many
batch shapes (reranking rounds, chunks, guidance), each compiled anew. In float32 ONNX Runtime
ran whole calls 1.16-1.22x faster than eager after about 50 s of exporting the four networks
once (cached), so it is there for long float32 runs on the CPU ("onnx"), not a default.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from unclip.runtime.cache import user_cache

CHOICES = ("auto", "on", "off", "onnx")


def cache_dir() -> Path:
    """Inductor's on-disk cache: $TORCHINDUCTOR_CACHE_DIR, set to $UNCLIP_CACHE/inductor if unset."""
    return Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(user_cache("inductor"))))


MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


def compile_networks(networks: list[tuple[str, torch.nn.Module]], mode: str | None = None) -> list[str]:
    """torch.compile each module in place (nn.Module.compile: its weights, state dict and
    attributes stay as they are; calls go through the compiled graph), in torch.compile's `mode`
    ("reduce-overhead" replays CUDA graphs on a GPU; on a CPU it compiles as "default").
    Returns their names."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    cache_dir()
    for _, module in networks:
        module.compile(mode=mode)
    return [name for name, _ in networks]


def backend(setting: str | bool, device: torch.device, dtype: torch.dtype | None = None) -> str | None:
    """How to run the sampled networks: "inductor" (torch.compile), "onnx" or None (eager), for
    `setting` ("auto", "on"/True, "off"/False, "onnx") on `device` in `dtype`."""
    if isinstance(setting, bool):
        return "inductor" if setting else None
    if setting not in CHOICES:
        raise ValueError(f"compile (--compile) must be one of {', '.join(CHOICES)}, got {setting!r}")
    if setting == "onnx":
        from unclip.runtime.onnx_runtime import require

        if device.type != "cpu" or dtype not in (None, torch.float32):
            raise ValueError(f"compile 'onnx' runs float32 on the CPU, not {dtype} on {device} (--dtype float32)")
        require()
        return "onnx"
    return "inductor" if setting == "on" or (setting == "auto" and device.type == "cuda") else None
