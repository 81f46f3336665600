"""The contract every pipeline keeps (unclip's own DALL-E 2, Karlo's folders, DALL-E 1), in
diffusers' conventions, so that the command line, the web app and the manipulations ask a
pipeline what it can do instead of what kind it is.

A pipeline is a set of networks (`networks()`, any of which may be missing from a partial
folder) plus sampling code:

- `Pipeline.from_pretrained(path, torch_dtype=..., device=...)`, `save_pretrained(path)`;
- `.to(device)`, `.to(dtype)`, `.to(device, dtype)`, `.to(device=..., dtype=...)` as torch
  and diffusers take them; `.device`, `.dtype`;
- `pipe(prompt or list, num_images_per_prompt=, generator=, output_type=, ...)` returning
  `UnCLIPOutput(images, image_embeds)` (`image_embeds` None where the system has none);
  generators live on the CPU, so a seed draws the same noise on every device;
- `sampling_defaults()`: the call's settings as the model sets them;
- `capabilities`: what it can do (`Capabilities`), and `check_settings` to refuse a setting
  it does not take, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from unclip import validate
from unclip.pipelines.locate import resolve_model


@dataclass(frozen=True)
class Capabilities:
    """What a pipeline can do. `settings`: the keyword arguments of its call beyond the common
    ones (prompt, num_images_per_prompt, generator, output_type, return_dict)."""

    text_to_image: bool = True
    reads_images: bool = False  # embed_images / embed_captions: CLIP scores, the manipulations' input
    inversion: bool = False  # decoder_input / invert_decoder / decode_latents: the manipulations
    inpainting: bool = False  # inpaint(image, mask_image, prompt): repaint a region in place
    priors: tuple[str, ...] = ()  # validate.PRIORS it has; () for a system without a CLIP latent
    reranking: bool = False  # draws candidates and keeps the best by a CLIP (`rerank=`)
    prior_samples: bool = False  # text_condition / prior_net: its priors sampled alone (`eval prior`)
    settings: frozenset[str] = field(default_factory=frozenset)


def _device_and_dtype(args, kwargs) -> tuple[torch.device | None, torch.dtype | None]:
    """.to()'s arguments as torch.nn.Module.to takes them: a device, a dtype, or both."""
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    if kwargs:
        raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
    for arg in args:
        if isinstance(arg, torch.dtype):
            dtype = arg
        elif arg is not None:
            device = arg
    return (None if device is None else torch.device(device)), dtype


def _accelerator_name(device, gpu_id: int | None):
    """diffusers' (gpu_id, device) arguments as one device name; None: the first accelerator."""
    if gpu_id is not None:
        return f"{torch.device(device or 'cuda').type}:{gpu_id}"
    return device


class Pipeline:
    """The shared part of every pipeline: devices, dtypes, loading and the settings check."""

    title = "model"  # as messages call it, e.g. "DALL-E 1 model"
    load_options: tuple[str, ...] = ()  # from_pretrained's keywords beyond torch_dtype and device
    compiled_with: str | None = None  # the backend `compile` ran its sampled networks through, if any

    @property
    def capabilities(self) -> Capabilities:
        raise NotImplementedError

    # -- what each pipeline provides ---------------------------------------------------------------
    def networks(self) -> list[tuple[str, torch.nn.Module]]:
        """(name, module) of every network the pipeline holds."""
        raise NotImplementedError

    @classmethod
    def _load(cls, path: Path, torch_dtype: torch.dtype, **kw) -> Pipeline:
        raise NotImplementedError

    def save_pretrained(self, path: str | Path) -> None:
        raise NotImplementedError

    def sampling_defaults(self) -> dict:
        return {}

    def caption_embeds(self, captions: list[str], generator=None) -> torch.Tensor:
        """The prior's image embeddings (B, D) for captions, at the model's defaults: what an
        interpolation with a caption at one end starts from."""
        raise ValueError(f"this {self.title} has no prior to turn a caption into an image embedding")

    def decoder_noise_shape(self, side: int) -> tuple[int, ...]:
        """(C, H, W) of the decoder's x_T for a `decoder_input` of `side` px (the manipulations):
        a pixel-space decoder's image itself; a latent decoder says otherwise."""
        return (3, side, side)

    def sampled_networks(self) -> list[tuple[str, torch.nn.Module]]:
        """(name, module) of the networks called at every sampling step: what `compile` compiles."""
        return []

    # -- shared --------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, torch_dtype: torch.dtype = torch.float32,
                        device: str | torch.device | None = None, **kw) -> Pipeline:
        """Load a folder (or a shipped model by name, unclip.pipelines.locate; None: the default) in
        `torch_dtype` (weights stored in fp16 are cast), onto `device`."""
        pipe = cls._load(resolve_model(path), torch_dtype, **kw)
        return pipe.to(device) if device is not None else pipe

    def compile(self, backend: str = "inductor", mode: str | None = None) -> list[str]:
        """Run the networks that sample many steps compiled, in place (unclip.runtime.compiled):
        "inductor" (torch.compile in its `mode`, e.g. "reduce-overhead" for CUDA graphs; the
        first call of each input shape compiles) or "onnx" (ONNX Runtime, float32 on the CPU;
        unclip.runtime.onnx_runtime). Returns their names."""
        if backend == "onnx":
            if mode is not None:
                raise ValueError("mode is torch.compile's (backend inductor), not ONNX Runtime's")
            from unclip.runtime.onnx_runtime import run_in_onnx

            names = run_in_onnx(self.sampled_networks())
            self.compiled_with = backend
            return names
        if backend != "inductor":
            raise ValueError(f"backend must be inductor or onnx, got {backend!r}")
        from unclip.runtime.compiled import compile_networks, missing_toolchain

        if (lacking := missing_toolchain(self.device)) is not None:
            raise ValueError(f"torch.compile cannot build kernels on {self.device.type} here: {lacking}")

        names = compile_networks(self.sampled_networks(), mode)
        self.compiled_with = backend
        return names

    # -- memory: offloading and latent decoding, in diffusers' names ----------------------------------
    offload_whole: tuple[str, ...] = ()  # networks whose weights are read outside a forward (runtime.offload)

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: str | torch.device | None = None) -> None:
        """Weights in CPU memory, one network at a time on the accelerator (unclip.runtime.offload)."""
        from unclip.runtime import offload

        offload.attach(self, "model", offload.accelerator(_accelerator_name(device, gpu_id)))

    def enable_sequential_cpu_offload(self, gpu_id: int | None = None, device: str | torch.device | None = None) -> None:
        """Weights in CPU memory, one layer at a time on the accelerator: the least memory, the slowest."""
        from unclip.runtime import offload

        offload.attach(self, "sequential", offload.accelerator(_accelerator_name(device, gpu_id)))

    def remove_all_hooks(self) -> None:
        """Offloading undone: every network back in CPU memory, without hooks."""
        from unclip.runtime import offload

        offload.detach(self)

    @property
    def latent_decoder(self) -> torch.nn.Module | None:
        """The network that turns latents into pixels (Kandinsky's MoVQ, Stable unCLIP's VAE), if any."""
        return None

    def _latent_decoder(self) -> torch.nn.Module:
        if self.latent_decoder is None:
            raise ValueError(f"this {self.title} draws pixels directly: it has no latent decoder to slice or tile")
        return self.latent_decoder

    def enable_vae_slicing(self) -> None:
        """Decode a batch of latents one image at a time (the same images, less memory)."""
        self._latent_decoder().use_slicing = True

    def disable_vae_slicing(self) -> None:
        self._latent_decoder().use_slicing = False

    def enable_vae_tiling(self) -> None:
        """Decode a large image in overlapping tiles, blended across the seams (less memory)."""
        self._latent_decoder().use_tiling = True

    def disable_vae_tiling(self) -> None:
        self._latent_decoder().use_tiling = False

    def to(self, *args, **kwargs) -> Pipeline:
        device, dtype = _device_and_dtype(args, kwargs)
        if device is not None and getattr(self, "_offload", None) is not None:
            raise ValueError("this pipeline is offloaded (enable_*_cpu_offload): call remove_all_hooks() before .to(device)")
        for _, net in self.networks():
            torch.nn.Module.to(net, device=device, dtype=dtype)  # diffusers' .to warns on fp16 CPU modules
        return self

    def _first_param(self) -> torch.Tensor | None:
        for _, net in self.networks():
            for p in net.parameters():
                if p.is_floating_point():
                    return p
        return None

    @property
    def device(self) -> torch.device:
        """Where the pipeline computes: its accelerator when offloaded, else where its weights are."""
        state = getattr(self, "_offload", None)
        if state is not None:
            return state.device
        p = self._first_param()
        return torch.device("cpu") if p is None else p.device

    @property
    def dtype(self) -> torch.dtype:
        p = self._first_param()
        return torch.float32 if p is None else p.dtype

    def require(self, *names: str) -> None:
        missing = [n for n in names if getattr(self, n, None) is None]
        if missing:
            raise ValueError(f"this {self.title} has no {' or '.join(missing)}")

    def check_settings(self, **given) -> dict:
        """The settings given (None: the model's default, left out), refused with a reason where
        this pipeline does not take them; a prior it does not have is refused too."""
        given = {k: v for k, v in given.items() if v is not None}
        caps = self.capabilities
        for key in given:
            if key not in caps.settings:
                raise ValueError(f"{validate.FLAGS.get(key, key)} is not a setting of this {self.title}")
        if "prior" in given and given["prior"] not in caps.priors:
            raise ValueError(f"prior {given['prior']!r}: this {self.title} has "
                             f"{', '.join(caps.priors) or 'no prior'}")
        return given
