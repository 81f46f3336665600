"""Offloading, in diffusers' names, through accelerate's hooks: the weights live in CPU memory and
reach the accelerator only while they compute.

- "model" (`enable_model_cpu_offload`): one network on the accelerator at a time. A network's
  forward (or its decode, which diffusers routes through the same hook) moves it there and moves the
  one before it back, so the peak is the largest network plus activations.
- "sequential" (`enable_sequential_cpu_offload`): one layer at a time (accelerate's `cpu_offload`):
  the least memory, the most traffic. Networks whose weights the samplers read outside a forward
  (a prior's CLIP statistics) stay whole on the accelerator, as diffusers keeps
  `_exclude_from_cpu_offload` there.

unclip's own networks (the shapes models, ECLIPSE's prior) are small and read outside their forward:
in both modes they stay whole on the accelerator.

`attach(pipe, mode, device)` takes any device, the CPU included, so the hooks are tested on
machines without an accelerator; the pipeline methods refuse the CPU with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("model", "sequential")


@dataclass
class Offload:
    mode: str
    device: torch.device
    current: torch.nn.Module | None = None  # "model": the network now on the accelerator


def accelerator(device: str | torch.device | None = None) -> torch.device:
    """The accelerator to offload onto (the first GPU by default); a ValueError where there is none."""
    from unclip.runtime.devices import resolve_device

    found = resolve_device("auto" if device is None else device)
    if found.type == "cpu":
        raise ValueError("offloading moves each stage between CPU memory and an accelerator, and "
                         f"{'this machine has none' if device in (None, 'auto') else 'the device given is the CPU'}: "
                         "run without --offload (the whole model then stays in CPU memory)")
    return found


def _layered(module: torch.nn.Module) -> bool:
    """diffusers' and transformers' networks: every weight is read inside a forward."""
    return type(module).__module__.split(".")[0] in ("diffusers", "transformers")


def attach(pipe, mode: str, device: torch.device) -> Offload:
    """Hooks on every network of `pipe` for `mode`, onto `device`; replaces any earlier ones."""
    from accelerate import cpu_offload
    from accelerate.hooks import ModelHook, add_hook_to_module
    from accelerate.utils import send_to_device

    if mode not in MODES:
        raise ValueError(f"offload must be one of {', '.join(MODES)}, got {mode!r}")
    detach(pipe)
    state = Offload(mode, torch.device(device))

    class OneAtATime(ModelHook):
        execution_device = state.device

        def pre_forward(self, module, *args, **kwargs):
            if state.current is not module:
                if state.current is not None:
                    state.current.to("cpu")
                module.to(state.device)
                state.current = module
            return send_to_device(args, state.device), send_to_device(kwargs, state.device)

    whole = set(getattr(pipe, "offload_whole", ())) if mode == "sequential" else set()
    for name, net in pipe.networks():
        if not _layered(net) or name in whole:
            net.to(state.device)  # read outside a forward (unclip's own networks are small)
        elif mode == "sequential":
            net.to("cpu")
            cpu_offload(net, execution_device=state.device)
        else:
            net.to("cpu")
            add_hook_to_module(net, OneAtATime())
    for inner in _inner_pipelines(pipe):  # e.g. Stable unCLIP's Karlo prior: it computes there too
        inner._offload = state
    pipe._offload = state
    return state


def _inner_pipelines(pipe) -> list:
    """Pipelines held inside `pipe` (their networks are among its networks)."""
    return [v for v in vars(pipe).values() if hasattr(v, "networks") and hasattr(v, "_first_param")]


def detach(pipe) -> None:
    """Every hook removed and every network back in CPU memory, as before `attach`."""
    from accelerate.hooks import remove_hook_from_module

    state = getattr(pipe, "_offload", None)
    if state is None:
        return
    for _, net in pipe.networks():
        remove_hook_from_module(net, recurse=True)
        net.to("cpu")
    for inner in _inner_pipelines(pipe):
        inner._offload = None
    pipe._offload = None


def execution_device(module: torch.nn.Module) -> torch.device:
    """Where a network computes: its hook's device under offloading, else where its weights are."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(device)
    return next(module.parameters()).device
