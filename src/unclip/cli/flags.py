"""The flags many commands share, and loading the model they name."""

from __future__ import annotations


def load(args, images: int | None = 0):
    """The pipeline of --model on --device in --dtype, compiled as --compile says for a job of
    `images` images (None: no end), with --image-encoder / --prior-model where the command has them."""
    from unclip.pipelines.registry import load_pipeline

    return load_pipeline(args.model, torch_dtype=getattr(args, "dtype", "float32"), device=getattr(args, "device", None),
                         compile=getattr(args, "compile", False), offload=getattr(args, "offload", None), job_images=images,
                         image_encoder=getattr(args, "image_encoder", None),
                         prior_model=_one_or_list(getattr(args, "prior_model", None)))


def _one_or_list(values: list | None):
    """--prior-model DIR [DIR]: one folder as itself, two as a list."""
    return values[0] if values and len(values) == 1 else values


def check_device(args) -> None:
    """A --device that this machine lacks is refused before anything loads."""
    if getattr(args, "device", None) is not None:
        from unclip.runtime.devices import resolve_device

        resolve_device(args.device)


MODEL_HELP = ("model folder or Hub id (owner/name[@revision]): unclip's own, a DALL-E 1 folder, a Karlo "
              "diffusers folder (karlo-v1-alpha, karlo-v1-alpha-image-variations) or a Kandinsky 2.2 decoder "
              "(kandinsky-2-2-decoder, -decoder-inpaint; its prior with --prior-model) as published; 'dalle1': "
              "the shipped DALL-E 1 model (default: the shipped unCLIP model)")


def prior_flag(parser) -> None:
    from unclip.validate import PRIORS

    parser.add_argument("--prior", choices=PRIORS, help="the decoder's image embedding: diffusion (the default), "
                        "ar or eclipse (one pass): that prior's sample; text: the caption's CLIP text embedding; "
                        "none: the caption alone (the decoder's null image embedding)")


def model_flags(parser) -> None:
    parser.add_argument("--rerank", type=int, help="candidates drawn per image, the best by the model's reranking "
                        "CLIP kept (default: the model's; 1 draws one)")
    parser.add_argument("--rerank-threshold", type=float, help="draw candidates in rounds and stop once one scores "
                        "at least this against its caption (default: the model's; 1 draws all)")
    parser.add_argument("--upscale", choices=["upsampler", "bicubic"], help="DALL-E 1: from the dVAE's 32 px to "
                        "128 px by the model's unCLIP upsamplers (default) or bicubic")


def compose_flag(parser) -> None:
    parser.add_argument("--compose", choices=["on", "off"], help="unclip's shapes models: draw two-object captions one "
                        "object at a time, each alone, then moved to its place and the two combined (default: the model's)")


def compose_value(args) -> bool | None:
    value = getattr(args, "compose", None)
    return None if value is None else value == "on"


def prior_model_flag(parser) -> None:
    parser.add_argument("--prior-model", metavar="DIR", nargs="+", help="Karlo: an ECLIPSE prior folder (as published "
                        "for Karlo) in place of Karlo's diffusion prior: one forward pass per image embedding. "
                        "Kandinsky 2.2: the prior folder (kandinsky-2-2-prior), optionally followed by ECLIPSE's "
                        "Kandinsky prior to use in its place. Folders or Hub ids (owner/name[@revision])")


def image_encoder_flag(parser) -> None:
    parser.add_argument("--image-encoder", metavar="DIR", help="Karlo only: a karlo-v1-alpha-image-variations "
                        "folder whose CLIP image tower to add to a karlo-v1-alpha --model")


def overwrite_flag(parser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out "
                        "(without it, a folder holding a manifest.jsonl or numbered PNGs is refused)")


def dtype_flag(parser) -> None:
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                        help="compute precision of the networks; auto: bf16 where it is faster on --device (a "
                        "GPU, a CPU measured faster in bf16), else float32 (latents stay float32). Images equal "
                        "diffusers' for Karlo, Kandinsky and Stable unCLIP folders at float32")


def compute_flags(parser) -> None:
    """--dtype, --device and --compile: every command that runs a model."""
    dtype_flag(parser)
    device_flag(parser)
    offload_flag(parser)
    parser.add_argument("--compile", choices=["auto", "on", "off", "onnx"], default="auto",
                        help="how the networks that sample many steps run: on: torch.compile (kernels cached in "
                        "$UNCLIP_CACHE/inductor); onnx: ONNX Runtime, with --dtype float32 on the CPU (exported "
                        "once, cached in $UNCLIP_CACHE/onnx; pip install 'unclip[onnx]'); auto: torch.compile on a "
                        "CUDA GPU for jobs long enough to repay compiling (64+ images, 16+ once kernels are cached; "
                        "serve), else off")


def offload_flag(parser) -> None:
    parser.add_argument("--offload", choices=["model", "sequential"], help="keep the weights in CPU memory and "
                        "compute on the GPU (--device): model: one network at a time on it (diffusers' "
                        "enable_model_cpu_offload); sequential: one layer at a time (the least memory, slowest)")


def device_flag(parser) -> None:
    parser.add_argument("--device", default="auto", help="where to compute: auto (the first GPU if there is "
                        "one, else the CPU), cpu, cuda, cuda:N or mps; seeds draw the same noise on every device")
