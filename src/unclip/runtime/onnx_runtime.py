"""`--compile onnx`: the sampling networks exported to ONNX and run by ONNX Runtime, for long
float32 runs on the CPU (`--dtype float32`, or `auto` on a CPU without native bf16).

Measured on a 2-core AMD EPYC (benchmarks/compile.py, docs/results/compile_cpu*.txt): per
network 1.15-1.9x eager float32 at a default call's batches, whole calls 1.16-1.22x, after
about 50 s of exporting and checking the four networks once; ONNX Runtime's CPU kernels have no
bf16 convolutions, and eager bf16 is faster still where the CPU has it. So it is asked for, not
a default.

A network is exported on its first call with a new input signature (names, dtypes, shapes but
the batch), with the batch left dynamic, and the export is kept in $UNCLIP_CACHE/onnx under a
key of the network's class, weights, signature and both libraries' versions: other weights or an
upgrade export anew, and a cached file that cannot be loaded is exported again. Each export's
first result is checked against eager PyTorch before it is kept (output.json marks it checked);
a network that cannot be exported, or whose export disagrees, stays eager (with a warning). Calls with gradients, or off the CPU, or
not in float32, run eager.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from unclip.runtime.cache import user_cache

log = logging.getLogger(__name__)

TOLERANCE = 1e-3  # largest |onnx - eager| allowed, relative to the output's largest magnitude
BATCH_FREE = 2  # exported at this batch at least: torch.export fixes a batch of 1 as a constant


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (torch.onnx.export's dynamo exporter needs it)
    except ImportError:
        return False
    return True


def require() -> None:
    if not available():
        raise ValueError("compile 'onnx' needs ONNX Runtime: pip install 'unclip[onnx]' "
                         "(onnxruntime, onnx, onnxscript)")


class _Keyword(torch.nn.Module):
    """The network called with its tensors positionally and its other arguments fixed,
    returning its first output: the form the exporter takes."""

    def __init__(self, net: torch.nn.Module, forward, names: list[str], fixed: dict):
        super().__init__()
        self.net, self.eager, self.names, self.fixed = net, forward, names, fixed

    def forward(self, *tensors):
        return self.eager(**dict(zip(self.names, tensors)), **self.fixed, return_dict=False)[0]


def weights_digest(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in [*net.named_parameters(), *net.named_buffers()]:
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.detach().cpu().reshape(-1).clone().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class OnnxNetwork:
    """Stands in for a network's `forward` (unclip.runtime.onnx_runtime): ONNX Runtime where it can,
    the network's own forward elsewhere."""

    def __init__(self, net: torch.nn.Module, name: str, cache: Path | None = None):
        self.net, self.name, self.eager = net, name, net.forward
        self.params = list(inspect.signature(self.eager).parameters)
        self.cache = cache or user_cache("onnx")
        self.sessions: dict = {}  # signature -> (session, output class or None) or None (eager)
        self.digest: str | None = None

    def __call__(self, *args, **kwargs):
        kwargs = {**dict(zip(self.params, args)), **kwargs}
        return_dict = kwargs.pop("return_dict", True)
        tensors = {k: v for k, v in kwargs.items() if torch.is_tensor(v)}
        if torch.is_grad_enabled() or not self._runnable(tensors.values()):
            return self.eager(**kwargs, return_dict=return_dict)
        names = list(tensors)
        fixed = {k: v for k, v in kwargs.items() if k not in tensors}
        batch = next((t.shape[0] for t in tensors.values() if t.dim()), None)
        batched = [t.dim() > 0 and t.shape[0] == batch for t in tensors.values()]
        signature = json.dumps([names, [[str(t.dtype), list(t.shape[1:] if b else t.shape), b]
                                        for t, b in zip(tensors.values(), batched)], repr(sorted(fixed.items()))])
        if signature not in self.sessions:
            self.sessions[signature] = self._session(signature, names, fixed, tensors, batched, return_dict)
        entry = self.sessions[signature]
        if entry is None:
            return self.eager(**kwargs, return_dict=return_dict)
        session, output = entry
        y = _run(session, tensors)
        return output(y) if return_dict else (y,)

    @staticmethod
    def _runnable(tensors) -> bool:
        return all(t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point())
                   for t in tensors)

    def _session(self, signature: str, names: list[str], fixed: dict, tensors: dict, batched: list[bool],
                 return_dict: bool):
        """An ONNX Runtime session for this signature, checked against eager on these inputs,
        with the wrapper of its output; None where it cannot be had."""
        try:
            if any(p.dtype != torch.float32 for p in self.net.parameters()):
                return None
            import onnxruntime as ort

            self.digest = self.digest or weights_digest(self.net)
            key = hashlib.sha256(json.dumps([type(self.net).__qualname__, self.digest, signature, torch.__version__,
                                             ort.__version__]).encode()).hexdigest()[:32]
            folder = self.cache / f"{self.name}-{key}"
            module = _Keyword(self.net, self.eager, names, fixed).eval()
            if (folder / "output.json").is_file():  # exported and checked by an earlier call
                try:
                    return _load(folder / "model.onnx"), _output_class(folder) if return_dict else None
                except Exception:  # damaged: export anew
                    shutil.rmtree(folder, ignore_errors=True)
            log.warning("exporting %s to ONNX Runtime: once, some seconds (kept in %s)", self.name, folder)
            shutil.rmtree(folder, ignore_errors=True)  # an export that was never checked
            _export(module, tensors, batched, folder)
            session = _load(folder / "model.onnx")
            want = self.eager(**tensors, **fixed, return_dict=True)
            first = want[0]
            got = _run(session, tensors)
            if got.shape != first.shape or (got - first).abs().max() > TOLERANCE * max(1.0, first.abs().max().item()):
                shutil.rmtree(folder, ignore_errors=True)
                raise RuntimeError(f"its output differs from eager PyTorch's by {(got - first).abs().max():.3g}")
            kind = type(want)
            (folder / "output.json").write_text(json.dumps({"module": kind.__module__, "name": kind.__qualname__,
                                                            "field": dataclasses.fields(want)[0].name}))
            return session, _output_class(folder) if return_dict else None
        except Exception as e:  # noqa: BLE001  (any failure keeps the network eager)
            warnings.warn(f"{self.name} runs in eager PyTorch, not ONNX Runtime: {type(e).__name__}: {e}",
                          stacklevel=3)
            return None


def _output_class(folder: Path):
    """Builds the network's own output (diffusers' dataclass, named in output.json) around ONNX
    Runtime's tensor."""
    import importlib

    spec = json.loads((folder / "output.json").read_text())
    kind = getattr(importlib.import_module(spec["module"]), spec["name"])
    return lambda y: kind(**{spec["field"]: y})


def _run(session, tensors: dict) -> torch.Tensor:
    """The first output for these named inputs (those the export kept)."""
    return torch.from_numpy(session.run(None, {i.name: tensors[i.name].numpy() for i in session.get_inputs()})[0])


def _export(module: torch.nn.Module, tensors: dict, batched: list[bool], folder: Path) -> None:
    """Export with the batch dynamic into `folder`, written whole or not at all; the graph's
    inputs are named after the network's arguments."""
    examples = tuple(t.expand(max(BATCH_FREE, t.shape[0]), *t.shape[1:]).contiguous() if b else t
                     for t, b in zip(tensors.values(), batched))
    batch = torch.export.Dim("batch", min=1)
    dynamic = (tuple({0: batch} if b else None for b in batched),)  # one spec per *tensors item
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    quiet = logging.getLogger("torch.onnx")  # says torchvision's ops are skipped: none are used
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # the exporter's notes to PyTorch's own developers
            warnings.simplefilter("ignore")
            torch.onnx.export(module, examples, str(tmp / "model.onnx"), dynamo=True, dynamic_shapes=dynamic,
                              input_names=list(tensors), verbose=False, report=False)
        os.replace(tmp, folder)
    finally:
        quiet.setLevel(level)
        shutil.rmtree(tmp, ignore_errors=True)


def _load(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_in_onnx(networks: list[tuple[str, torch.nn.Module]]) -> list[str]:
    """Route each module's calls through ONNX Runtime (OnnxNetwork), in place. Returns their names."""
    require()
    for name, net in networks:
        if not isinstance(net.forward, OnnxNetwork):
            net.forward = OnnxNetwork(net, name)
    return [name for name, _ in networks]
