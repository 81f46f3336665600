"""What a model folder is, and the pipeline that loads it: one place decides.

`--model` takes a folder (unclip's own, DALL-E 1's, or a Karlo diffusers folder as
downloaded), a shipped model's name ("dalle1"), or nothing: the shipped unCLIP model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from unclip.pipelines.locate import resolve_folders, resolve_model


def pipeline_class(path: Path):
    """The pipeline class for a folder, by the file that says what it is: unclip's `unclip.json`,
    DALL-E 1's `dalle1.json`, or a diffusers folder's `model_index.json` (the family whose
    `folder_classes` name its class)."""
    from unclip.pipelines.components import INDEX, read_index
    from unclip.pipelines.locate import is_dalle1_folder

    # each family imported only where the folder is its kind: a command pays for one family's imports
    if is_dalle1_folder(path):
        from unclip.pipelines.dalle1 import DalleOnePipeline

        return DalleOnePipeline
    index = read_index(path)
    if index is None:
        from unclip.pipelines.dalle2 import DalleTwoPipeline

        return DalleTwoPipeline
    from unclip.pipelines.kandinsky import PRIOR, KandinskyPipeline
    from unclip.pipelines.karlo import KarloPipeline
    from unclip.pipelines.stable_unclip import StableUnclipPipeline

    name = index.get("_class_name")
    families = (KarloPipeline, KandinskyPipeline, StableUnclipPipeline)
    for cls in families:
        if name in cls.folder_classes:
            return cls
    if name == PRIOR:
        raise ValueError(f"{path} is a Kandinsky 2.2 prior folder: pass a decoder folder as --model "
                         "(kandinsky-2-2-decoder) and this one as --prior-model")
    known = ", ".join(n for cls in families for n in cls.folder_classes)
    raise ValueError(f"{Path(path) / INDEX} describes a {name!r}; unclip reads {known} folders and its own")


OPTIONS = {  # load options -> what they are for, in errors
    "image_encoder": "--image-encoder adds a Karlo image tower to a Karlo folder",
    "prior_model": "--prior-model gives a Karlo folder an ECLIPSE prior in place of its own, a Kandinsky "
                   "decoder its prior folder, a Stable unCLIP folder Karlo's prior",
}


def load_pipeline(path: str | Path | None = None, torch_dtype: torch.dtype | str = torch.float32,
                  device: str | torch.device | None = None, compile: bool | str = False, offload: str | None = None,
                  job_images: int | None = 0, **options):
    """The pipeline a folder holds (default: the shipped model), in `torch_dtype` ("auto": the
    fastest precision for `device`, see unclip.runtime.precision) on `device` ("auto": the first GPU if
    any; None: the CPU). `compile`: how the networks that sample many steps run: "on"/True
    (torch.compile), "onnx" (ONNX Runtime, float32 on the CPU), "off"/False, "auto" (torch.compile
    on a CUDA GPU; unclip.runtime.compiled). `options` (None: not given): `image_encoder`, a
    Karlo variations folder whose image tower to add; `prior_model`, an ECLIPSE prior folder for
    a Karlo folder, or a Kandinsky 2.2 prior folder for a Kandinsky decoder ([prior folder, ECLIPSE's
    Kandinsky prior] for ECLIPSE's). Every folder may be a Hub id (`owner/name[@revision]`).
    `job_images`: how many images the caller will draw (None: no end, a server), which
    `compile="auto"` weighs against the cost of compiling. `offload`: "model" or "sequential" keeps the weights in CPU memory and computes on `device`, which
    must be an accelerator (unclip.runtime.offload)."""
    from unclip.runtime.compiled import decide
    from unclip.runtime.devices import resolve_device
    from unclip.runtime.precision import resolve_dtype

    from unclip.runtime import offload as offloading

    path = resolve_model(path)
    if offload is not None:
        if offload not in offloading.MODES:
            raise ValueError(f"offload must be one of {', '.join(offloading.MODES)}, got {offload!r}")
        device = offloading.accelerator(device)  # before loading: no accelerator costs no load
    device = resolve_device(device) if device is not None else torch.device("cpu")
    if isinstance(torch_dtype, str):
        torch_dtype = resolve_dtype(torch_dtype, device)
    cls = pipeline_class(path)
    kw = {k: v for k, v in options.items() if v is not None}
    for key in kw:
        if key not in OPTIONS:
            raise TypeError(f"load_pipeline() got an unexpected keyword argument {key!r}")
        if key not in cls.load_options:
            raise ValueError(f"{OPTIONS[key]}; {path} is a {cls.title} folder")
    kw = {k: resolve_folders(v) for k, v in kw.items()}  # folders or Hub ids
    how = decide(compile, device, torch_dtype, job_images)  # before loading: a bad value costs no load
    pipe = cls.from_pretrained(path, torch_dtype=torch_dtype, device=None if offload else device, **kw)
    if offload is not None:
        offloading.attach(pipe, offload, device)
    if how.backend:
        import sys

        print(f"unclip: {how.reason}", file=sys.stderr, flush=True)
        pipe.compile(how.backend)
    return pipe
