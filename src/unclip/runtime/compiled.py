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

`auto` compiles only what the job repays (`decide`): on a CUDA GPU, jobs of at least LONG_JOB
images (LONG_JOB_WARM once inductor's cache holds kernels from an earlier run) and jobs without an
end (serve); everything shorter, and everything on a CPU, runs eager. On an H200 (2026-12-04)
`unclip generate` of two prompts took 15 s eager and was still compiling after 60 s: compiling
pays back only over many calls. Batch sizes vary within a job (reranking rounds, guidance halves,
chunks) and image sizes between upsamplers: networks compile with symbolic sizes from the start
(`dynamic=True`), so one graph serves every size up to the guards of diffusers' own branches on
the batch (at most two graphs per network). Measured on a tiny pipeline, three calls of 3, 5 and
2 prompts reranked in rounds (tests/test_compile_shapes.py): 5 graphs for 4 networks, none new
after the first call; with automatic dynamic shapes instead (a static graph first, a symbolic
one at the next size) 8, and one more in the second call. Measured on a 2-core AMD EPYC with AVX-512
BF16 (benchmarks/compile.py, docs/results/compile_cpu.txt): compiled bf16 ran 0.9-1.33x eager
bf16 after 20-120 s of compiling per network, and a pipeline call reaches each network in many
batch shapes (reranking rounds, chunks, guidance), each compiled anew. With dynamic shapes
(2026-12-05, benchmarks/batch_gain.py --compiled, docs/results/batch_gain_cpu_compiled.txt): 289 s
to compile, then whole calls 1.06-1.09x faster in bf16: not worth it by default. In float32 ONNX Runtime
ran whole calls 1.16-1.22x faster than eager after about 50 s of exporting the four networks
once (cached), so it is there for long float32 runs on the CPU ("onnx"), not a default.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
from dataclasses import dataclass
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
    # diffusers' upsamplers call its lru_cache'd is_torch_version; dynamo traces through the cache
    # and warns, 8 lines each, on every compiled run: harmless, so not shown
    warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`-wrapped function")
    for _, module in networks:
        module.compile(mode=mode, dynamic=True)
    return [name for name, _ in networks]


def missing_toolchain(device: torch.device) -> str | None:
    """What torch.compile lacks here to build kernels for `device` (None: nothing): inductor builds
    CPU kernels with a C++ compiler ($CXX, else g++) and CUDA kernels with Triton, which builds its
    launchers with a C compiler ($CC, cc, gcc or clang). Without them the first compiled call fails
    deep inside sampling; asked before, `--compile on` is refused and `auto` runs eager."""
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "Triton, which torch.compile builds GPU kernels with, is not installed"
        if not (os.environ.get("CC") or any(shutil.which(c) for c in ("cc", "gcc", "clang"))):
            return "no C compiler for Triton's kernels (install gcc, or set CC)"
        return None
    if device.type != "cpu":
        return None
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        from torch._inductor.exc import InvalidCxxCompiler
    except ImportError:  # inductor moved its helpers: let torch.compile speak for itself
        return None
    try:
        get_cpp_compiler()
    except InvalidCxxCompiler:
        return "no C++ compiler for inductor's CPU kernels (install g++, or set CXX)"
    return None


LONG_JOB = 64  # images a job draws from which compiling (1-2 min on a GPU, cold) pays back
LONG_JOB_WARM = 16  # the same with kernels already in inductor's cache (seconds to load)


def cache_is_warm() -> bool:
    """Inductor's cache holds kernels for this torch (from an earlier compiled run)."""
    root = cache_dir()
    return root.is_dir() and any(root.glob("**/*.py"))


@dataclass(frozen=True)
class Decision:
    backend: str | None  # "inductor", "onnx" or None (eager)
    reason: str  # one line: why, and roughly how long compiling takes


def decide(setting: str | bool, device: torch.device, dtype: torch.dtype | None = None, images: int | None = 0,
           warm: bool | None = None) -> Decision:
    """How to run the sampled networks for `setting` ("auto", "on"/True, "off"/False, "onnx") on
    `device` in `dtype`, for a job of `images` images (None: no end, e.g. a server); `warm`: whether
    inductor's cache already holds kernels (looked up when None). A ValueError for a bad setting,
    or for "on" where torch.compile cannot build kernels (`missing_toolchain`)."""
    how = _decide(setting, device, dtype, images, warm)
    if how.backend != "inductor" or (lacking := missing_toolchain(device)) is None:
        return how
    if setting in ("on", True):
        raise ValueError(f"--compile on cannot compile on {device.type} here: {lacking}; or use --compile off")
    return Decision(None, f"eager (--compile auto would compile, but {lacking})")


def _decide(setting: str | bool, device: torch.device, dtype: torch.dtype | None, images: int | None,
            warm: bool | None) -> Decision:
    if isinstance(setting, bool):
        setting = "on" if setting else "off"
    if setting not in CHOICES:
        raise ValueError(f"compile (--compile) must be one of {', '.join(CHOICES)}, got {setting!r}")
    if setting == "onnx":
        from unclip.runtime.onnx_runtime import require

        if device.type != "cpu" or dtype not in (None, torch.float32):
            raise ValueError(f"compile 'onnx' runs float32 on the CPU, not {dtype} on {device} (--dtype float32)")
        require()
        return Decision("onnx", "ONNX Runtime (--compile onnx): about 50 s to export once, cached")
    if setting == "off":
        return Decision(None, "eager (--compile off)")
    warm = cache_is_warm() if warm is None else warm
    if device.type == "cpu":  # the shipped model on 2 cores: 289 s cold, 74 s warm (docs/performance.md)
        took = "about 1-2 min (kernels cached by an earlier run)" if warm else "about 5 min (empty cache)"
    else:
        took = "about 10-20 s (kernels cached by an earlier run)" if warm else "about 1-2 min (empty cache)"
    if setting == "on":
        return Decision("inductor", f"compiling (--compile on): {took}")
    if device.type != "cuda":
        return Decision(None, f"eager (--compile auto on {device.type}: compiling takes minutes there for a few percent)")
    need = LONG_JOB_WARM if warm else LONG_JOB
    if images is None:
        return Decision("inductor", f"compiling (--compile auto: a job without an end, e.g. serve): {took}")
    if images >= need:
        return Decision("inductor", f"compiling (--compile auto: {images} images >= {need}): {took}")
    return Decision(None, f"eager (--compile auto: {images} images < {need}, too few to repay compiling)")


def backend(setting: str | bool, device: torch.device, dtype: torch.dtype | None = None,
            images: int | None = 0) -> str | None:
    """`decide(...)`'s backend: "inductor", "onnx" or None (eager)."""
    return decide(setting, device, dtype, images).backend
