"""The `unclip` command. Each subcommand parses its arguments and calls one library function."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .train import STAGES


def _overrides(extra: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """`--train.lr=3e-4` or `--train.lr 3e-4` -> ["train.lr=3e-4"]."""
    out, i = [], 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or len(tok) < 3:
            parser.error(f"unexpected argument {tok!r}; config overrides look like --train.lr=3e-4")
        key = tok[2:]
        name, eq, value = key.partition("=")
        key = name.replace("-", "_") + eq + value  # --image-encoder DIR: the config key image_encoder
        if "=" not in key:
            if i + 1 >= len(extra):
                parser.error(f"override {tok} needs a value")
            key, i = f"{key}={extra[i + 1]}", i + 1
        out.append(key)
        i += 1
    return out


def cmd_data(args) -> None:
    from .data.export import write_shapes

    path = write_shapes(args.out, args.split, args.num, args.size, args.seed)
    print(f"wrote {args.num} images and {path}")


def cmd_train(args, overrides: list[str]) -> None:
    from .config import load, read_file, to_dict
    from .train import stage_classes
    from .train.loop import check_out_dir, train

    kind = read_file(args.config).get("kind") if args.config else None
    config_cls, stage_cls = stage_classes(args.stage, kind)
    if args.stage_number is not None:
        if args.stage != "upsampler":
            raise ValueError("--stage is for `unclip train upsampler`")
        overrides = [f"stage={args.stage_number}", *overrides]
    cfg = load(config_cls, args.config, overrides)
    if args.stage_number is not None and args.config and read_file(args.config).get("stage", 1) != cfg.stage:
        raise ValueError(f"--stage {cfg.stage} disagrees with {args.config}, which is for stage "
                         f"{read_file(args.config).get('stage', 1)}")
    resume = args.resume or args.resume_with_changes
    check_out_dir(cfg.train, resume)
    stage = stage_cls(cfg)
    model = train(stage, cfg.train, resume=resume, run_config=to_dict(cfg), allow_changes=args.resume_with_changes)
    print(f"model written to {model}")


def cmd_eval(args) -> None:
    from .evaluate.report import print_report

    if args.what == "clip":
        from .clip import ClipEncoder
        from .evaluate.clip_retrieval import retrieval_accuracy

        if args.model is None:
            raise ValueError("eval clip needs --model DIR (a CLIP folder)")
        figures = retrieval_accuracy(ClipEncoder.from_pretrained(args.model), num=args.num or 500)
        print_report(f"CLIP text-to-image top-1 retrieval among 100 ({args.model})", figures)
    elif args.what == "prior":
        from .evaluate.prior_eval import evaluate_prior
        from .pipeline import DalleTwoPipeline
        from .registry import pipeline_class, resolve_model

        path = resolve_model(args.model)
        if pipeline_class(path) is not DalleTwoPipeline:
            raise ValueError(f"eval prior compares a prior with the true embeddings of its own CLIP's image "
                             f"tower on the shapes world; {path} is not an unclip model folder")
        prior = args.prior or "diffusion"
        if prior not in ("diffusion", "ar", "eclipse"):
            raise ValueError(f"eval prior scores a prior's samples: --prior diffusion, ar or eclipse, not {prior}")
        pipe = load(args)
        pipe.check_settings(prior=prior)
        figures = evaluate_prior(pipe, num=args.num or 500, prior=prior)
        print_report(f"prior: predicted vs true CLIP image embeddings ({path})", figures)
    elif args.what == "inpaint":
        from .evaluate.inpaint_eval import evaluate_inpaint
        from .validate import count, sampling

        sampling(rerank=args.rerank)
        count("resample", args.resample)
        pipe = load(args)
        if not pipe.capabilities.inpainting:
            raise ValueError(f"eval inpaint needs a model that inpaints; this {pipe.title} does not")
        kw = {"rerank": args.rerank} if args.rerank is not None else {}
        figures = evaluate_inpaint(pipe, args.out, num=args.num or 100, resample=args.resample, **kw)
        print_report(f"inpaint: one object of two repainted as another ({args.model or 'default model'}); "
                     f"report and grid in {args.out}", figures)
    elif args.what == "shapes":
        from .evaluate.shapes_eval import evaluate_manifest, evaluate_model

        if args.manifest:
            scorer = load(args) if args.model else None
            figures = evaluate_manifest(args.manifest, args.out, scorer)
            source = args.manifest
        else:
            from .validate import sampling

            from .devices import process_group

            sampling(rerank=args.rerank, rerank_threshold=args.rerank_threshold)  # before the model loads
            process = process_group()  # several under `accelerate launch`
            if process[3] is not None and args.device == "auto":
                args.device = str(process[3])
            pipe = load(args)
            figures = evaluate_model(pipe, args.out, num=args.num or 500, batch_size=args.batch_size, resume=args.resume,
                                     process=process[:3], rerank=args.rerank, rerank_threshold=args.rerank_threshold,
                                     upscale=args.upscale, prior=args.prior)
            if figures is None:
                return
            source = args.model or "default model"
        print_report(f"shapes: generated images scored against their prompts ({source}); "
                     f"report and grid in {args.out}", figures)


def load(args):
    """The pipeline of --model on --device in --dtype, compiled as --compile says, with
    --image-encoder / --prior-model where the command has them."""
    from .registry import load_pipeline

    return load_pipeline(args.model, torch_dtype=getattr(args, "dtype", "float32"), device=getattr(args, "device", None),
                         compile=getattr(args, "compile", False), image_encoder=getattr(args, "image_encoder", None),
                         prior_model=getattr(args, "prior_model", None))


def check_device(args) -> None:
    """A --device that this machine lacks is refused before anything loads."""
    if getattr(args, "device", None) is not None:
        from .devices import resolve_device

        resolve_device(args.device)


def cmd_generate(args) -> None:
    from .devices import process_group
    from .generate import (check_generate, check_out, generate_files, parse_samplers, parse_steps, prepare_out,
                           read_prompts)

    prompts = read_prompts(args.prompts, args.prompts_file)
    sampling = dict(prior_guidance_scale=args.prior_guidance, decoder_guidance_scale=args.decoder_guidance,
                    prior=args.prior, rerank=args.rerank, rerank_threshold=args.rerank_threshold,
                    upscale=args.upscale, **parse_steps(args.steps),
                    **parse_samplers(args.sampler))
    check_generate(len(prompts), args.num_images, args.seed, args.batch_size, **sampling)
    check_device(args)
    rank, world, wait, launched = process_group()  # several under `accelerate launch`
    if launched is not None and args.device == "auto":
        args.device = str(launched)
    if world == 1:
        prepare_out(args.out, args.overwrite, args.resume)  # every check before the model loads (4 s of imports)
    else:
        check_out(args.out, args.overwrite, args.resume)  # the main process prepares it once all have checked
    pipe = load(args)
    manifest = generate_files(pipe, prompts, args.out, num_images=args.num_images, seed=args.seed,
                              batch_size=args.batch_size, overwrite=args.overwrite, resume=args.resume,
                              process=(rank, world, wait), **sampling)
    if rank == 0:
        print(f"wrote {len(manifest.read_text().splitlines())} images and {manifest}"
              + (f" ({world} processes)" if world > 1 else ""))


def cmd_demo(args) -> None:
    from .demo import run_demo, train_demo

    if args.train:
        if args.model:
            raise ValueError("--train trains its own model; leave out --model")
        train_demo(args.out or "unclip-demo-train", args.configs, args.eval_num)
    else:
        run_demo(args.out or "unclip-demo", args.model, args.seed, device=args.device)


def cmd_serve(args) -> None:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError("the web interface needs gradio: pip install 'unclip[web]'") from None
    from .web.app import serve

    check_device(args)
    serve(args.model, args.host, args.port, image_encoder=args.image_encoder, device=args.device, dtype=args.dtype,
          compile=args.compile,
          prior_model=args.prior_model)


def cmd_assemble(args) -> None:
    import torch

    from .pipeline import assemble

    pipe = assemble(args.parts, args.out, torch.float16 if args.fp16 else None, args.reranker, args.rerank,
                    args.rerank_threshold)
    parts = [n for n in ("clip", "prior", "ar_prior", "eclipse_prior", "decoder", "dvae", "transformer", "reranker")
             if getattr(pipe, n, None) is not None]
    print(f"wrote {args.out}: {', '.join(parts + [f'{len(pipe.upsamplers)} upsamplers'])}")


def cmd_edit(args) -> None:
    """invert, vary, interpolate and edit: read images, manipulate, write frames + manifest."""

    import numpy as np

    from . import manipulate as m
    from .data.transforms import open_rgb
    from .generate import finish_manifest, prepare_out, write_images
    from .plot import image_grid

    m.check_settings(steps=args.steps, seed=args.seed, num=getattr(args, "num_images", None),
                     eta=getattr(args, "eta", None), frames=getattr(args, "frames", None),
                     max_theta=getattr(args, "max_theta", None))
    images = [np.asarray(open_rgb(p)) for p in args.images]
    check_device(args)
    out, lines = prepare_out(args.out, args.overwrite), []
    pipe = load(args)
    m.check_pipeline(pipe, args.command)
    if args.command == "invert":
        rec, db = m.reconstruct(pipe, images[0], steps=args.steps)
        write_images(out, [rec], [{"index": 0, "psnr": db}], lines)
        print(f"reconstruction PSNR at {rec.shape[0]} px after {args.steps}-step DDIM inversion: {db:.2f} dB")
    elif args.command == "vary":
        frames = m.vary(pipe, images[0], args.num_images, eta=args.eta, seed=args.seed, steps=args.steps)
        write_images(out, frames, [{"index": i, "eta": args.eta} for i in range(len(frames))], lines)
    else:
        if args.command == "interpolate":
            frames, thetas = m.interpolate(pipe, images[0], images[1], args.frames, latent=args.latent,
                                           seed=args.seed, steps=args.steps)
        else:
            frames, thetas = m.text_diff(pipe, images[0], args.to_caption, args.from_caption, args.frames,
                                         max_theta=args.max_theta, seed=args.seed, steps=args.steps)
        write_images(out, frames, [{"index": i, "theta": th} for i, th in enumerate(thetas)], lines)
        strip = image_grid(frames, [f"theta {th:.2f}" for th in thetas], cols=len(frames), label_lines=1)
        strip.save(out / "strip.png")
    print(f"wrote {len(lines)} images and {finish_manifest(out, lines)}")


def cmd_inpaint(args) -> None:
    """Repaint the white region of --mask in IMAGE to agree with CAPTION; PNGs, strip.png, manifest."""
    import numpy as np
    import torch
    from PIL import Image

    from . import validate
    from .data.transforms import open_rgb
    from .generate import finish_manifest, parse_samplers, parse_steps, prepare_out, write_images
    from .inpaint import Region
    from .plot import image_grid

    validate.count("num_images", args.num_images)
    validate.count("resample", args.resample, high=validate.MAX_STEPS)
    validate.seed(args.seed + args.num_images - 1, "seed")
    validate.sampling(rerank=args.rerank)
    if not args.caption.strip():
        raise ValueError("give a caption for the repainted region")
    image, mask = open_rgb(args.image), open_rgb(args.mask)
    region = Region(image, mask)  # a mask that covers nothing or everything is refused here, before loading
    like = open_rgb(args.like) if args.like else None
    sampling = {**parse_steps(args.steps), **parse_samplers(args.sampler)}
    check_device(args)
    out, lines = prepare_out(args.out, args.overwrite), []
    pipe = load(args)
    if not pipe.capabilities.inpainting:
        raise ValueError(f"inpainting repaints with a diffusion decoder, which this {pipe.title} does not have")
    gens = [torch.Generator().manual_seed(args.seed + i) for i in range(args.num_images)]
    images = pipe.inpaint(image, mask, args.caption, like=like, num_images_per_prompt=args.num_images, generator=gens,
                          resample=args.resample, rerank=args.rerank, output_type="uint8", **sampling).images
    records = [{"prompt": args.caption, "seed": args.seed + i, "resample": args.resample, "mask": str(args.mask),
                **({"like": str(args.like)} if args.like else {}), **sampling} for i in range(len(images))]
    write_images(out, images, records, lines)
    side = images.shape[1]
    mask_rgb = Image.fromarray(region.repaint.astype(np.uint8) * 255).convert("RGB")
    shown = [np.asarray(image.resize((side, side))), np.asarray(mask_rgb.resize((side, side)))]
    image_grid(np.stack([*shown, *images]), ["input", "mask (white: repaint)", *[f"seed {r['seed']}" for r in records]],
               cols=len(images) + 2, label_lines=1).save(out / "strip.png")
    print(f"wrote {len(lines)} images, strip.png and {finish_manifest(out, lines)}")


def cmd_probe(args) -> None:
    """probe pca: the image's embedding cut to its first k principal components, decoded."""
    import numpy as np

    from . import probe, validate
    from .data.transforms import open_rgb
    from .generate import finish_manifest, prepare_out, write_images
    from .plot import image_grid

    validate.seed(args.seed)
    validate.count("steps", args.steps, high=validate.MAX_STEPS)
    if any(k < 1 for k in args.dims):
        raise ValueError(f"--dims must be whole numbers >= 1, got {args.dims}")
    image = np.asarray(open_rgb(args.image))
    fit_images = None
    if args.fit_images:
        paths = sorted(p for p in Path(args.fit_images).rglob("*")
                       if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"))
        if len(paths) < 2:
            raise ValueError(f"--fit-images {args.fit_images}: fewer than two images to fit the PCA on")
        fit_images = [np.asarray(open_rgb(p)) for p in paths]
    check_device(args)
    out, lines = prepare_out(args.out, args.overwrite), []
    pipe = load(args)
    if not pipe.capabilities.inversion:
        raise ValueError(f"probe pca decodes CLIP image embeddings, which this {pipe.title} does not have")
    name = "shapes" if fit_images is None else "folder-" + Path(args.fit_images).resolve().name
    pca = probe.cached_fit(pipe, fit_images, name)
    frames = probe.probe_pca(pipe, image, list(args.dims), pca, seed=args.seed, steps=args.steps)
    write_images(out, frames, [{"dims": k, "seed": args.seed, "steps": args.steps} for k in args.dims], lines)
    image_grid(frames, [f"{k} components" for k in args.dims], cols=len(frames), label_lines=1).save(out / "strip.png")
    print(f"wrote {len(lines)} images, strip.png and {finish_manifest(out, lines)}")


def build_parser() -> argparse.ArgumentParser:
    from .validate import DEFAULTS as D

    p = argparse.ArgumentParser(prog="unclip", description="unCLIP (DALL-E 2): train, sample, edit, evaluate.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("data", help="render data sets to disk", description="Render the shapes world to PNGs "
                       "with a manifest.jsonl ({prompt, file, scene} per line).")
    d.add_argument("dataset", choices=["shapes"], help="which data set")
    d.add_argument("--split", choices=["train", "eval"], default="train",
                   help="train: the training stream (held-out pairs never drawn); eval: the fixed evaluation split")
    d.add_argument("--num", type=int, default=100, help="number of images")
    d.add_argument("--size", type=int, default=128, help="image side in pixels")
    d.add_argument("--seed", type=int, default=None, help="seed (default: 0 for train, the fixed eval seed for eval)")
    d.add_argument("--out", required=True, help="output folder")

    t = sub.add_parser("train", help="train one stage from a config file",
                       description="Train a stage. Any config key can be overridden: --train.lr=3e-4 --data.num_workers 2.")
    t.add_argument("stage", choices=STAGES, help="which stage to train")
    t.add_argument("--config", help="YAML or TOML config file (see configs/)")
    t.add_argument("--resume", action="store_true", help="continue from the latest intact checkpoint in "
                   "train.out_dir (refused if the settings differ from the run's)")
    t.add_argument("--resume-with-changes", action="store_true", help="resume with settings that differ "
                   "from the run's; the changes are written to the log")
    t.add_argument("--stage", dest="stage_number", type=int, choices=[1, 2],
                   help="upsampler only: which upsampler (1: base to 2x, 2: 2x to 4x)")

    g = sub.add_parser("generate", help="text to images", description="Generate images through prior, "
                       "decoder and upsamplers; writes PNGs and manifest.jsonl ({prompt, file, seed} per image).")
    g.add_argument("prompts", nargs="*", help="captions")
    g.add_argument("--prompts-file", help="a text file with one prompt per line")
    g.add_argument("--model", help=MODEL_HELP)
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--num-images", type=int, default=D["num_images"], help="images per prompt")
    g.add_argument("--seed", type=int, default=D["seed"], help="image i gets seed SEED + i")
    g.add_argument("--prior-guidance", type=float, help="prior guidance scale (default: the model's)")
    g.add_argument("--decoder-guidance", type=float, help="decoder guidance scale (default: the model's)")
    g.add_argument("--steps", nargs="+", metavar="STAGE=N", help="sampling steps, e.g. prior=25 decoder=25 upsampler=7")
    g.add_argument("--sampler", nargs="+", metavar="STAGE=NAME",
                   help="samplers, e.g. decoder=dpm++ (ddpm, ddim, dpm++, unipc; default: the model's)")
    g.add_argument("--batch-size", type=int, default=D["batch_size"], help="images generated together")
    model_flags(g)
    prior_flag(g)
    prior_model_flag(g)
    overwrite_flag(g)
    g.add_argument("--resume", action="store_true", help="continue a run that stopped: keep the images already in "
                   "--out that were drawn with the same prompt, seed and settings, draw the rest")
    compute_flags(g)

    def editing(name, help, n_images, description):
        c = sub.add_parser(name, help=help, description=description + " Writes PNGs and manifest.jsonl.")
        c.add_argument("images", nargs=n_images, metavar="IMAGE", help="image files of any size and mode")
        c.add_argument("--model", help=MODEL_HELP)
        c.add_argument("--out", required=True, help="output folder")
        c.add_argument("--steps", type=int, default=D["steps"], help="DDIM steps for inversion and decoding")
        c.add_argument("--seed", type=int, default=D["seed"])
        image_encoder_flag(c)
        overwrite_flag(c)
        compute_flags(c)
        return c

    editing("invert", "DDIM-invert an image and reconstruct it", 1,
            "Invert IMAGE to the decoder's latent (z_i, x_T), decode it again at eta 0 and report the PSNR.")
    c = editing("vary", "variations of an image", 1,
                "Keep the image's CLIP embedding and inverted latent; resample with DDIM at eta > 0.")
    c.add_argument("--num-images", type=int, default=D["vary_num_images"])
    c.add_argument("--eta", type=float, default=D["eta"], help="DDIM eta; 0 reconstructs, 1 as the paper's figures")
    c = editing("interpolate", "interpolate between two images", 2,
                "Slerp between two images' CLIP embeddings; also writes strip.png.")
    c.add_argument("--frames", type=int, default=D["frames"], help="frames including both ends")
    c.add_argument("--latent", choices=["inverted", "fixed"], default=D["latent"],
                   help="inverted: slerp the two inverted x_T; fixed: one random x_T for all frames")
    c = editing("edit", "text diff: edit an image towards a caption", 1,
                "Move the image's embedding towards normalize(z_t(--to) - z_t(--from)); also writes strip.png.")
    c.add_argument("--to", dest="to_caption", required=True, help="target caption")
    c.add_argument("--from", dest="from_caption", help="the image's caption (default: none)")
    c.add_argument("--frames", type=int, default=D["frames"], help="frames from theta 0 to --max-theta")
    c.add_argument("--max-theta", type=float, default=D["max_theta"])

    ip = sub.add_parser("inpaint", help="repaint a region of an image to agree with a caption",
                        description="Repaint the white region of --mask in IMAGE so that it agrees with CAPTION, "
                        "keeping the rest (RePaint with the model's own decoder and upsamplers). Writes PNGs at "
                        "the model's output size, strip.png and manifest.jsonl.")
    ip.add_argument("image", metavar="IMAGE", help="the image (any size; cropped to a square as the decoder's input)")
    ip.add_argument("caption", metavar="CAPTION", help="what the whole image should show after repainting")
    ip.add_argument("--mask", required=True, help="greyscale mask image, white = repaint (any size: resized to IMAGE)")
    ip.add_argument("--like", metavar="IMAGE", help="take the image embedding from this image instead of the prior")
    ip.add_argument("--model", help=MODEL_HELP)
    prior_model_flag(ip)
    ip.add_argument("--out", required=True, help="output folder")
    ip.add_argument("--num-images", type=int, default=D["vary_num_images"])
    ip.add_argument("--seed", type=int, default=D["seed"], help="image i gets seed SEED + i")
    ip.add_argument("--resample", type=int, default=D["resample"], help="RePaint jumps back per step (harmony "
                    "between the kept and the repainted parts; cost grows with it)")
    ip.add_argument("--steps", nargs="+", metavar="STAGE=N", help="sampling steps, e.g. decoder=25 upsampler=7")
    ip.add_argument("--sampler", nargs="+", metavar="STAGE=NAME", help="ddpm or ddim for decoder and upsampler")
    ip.add_argument("--rerank", type=int, help="candidates per image, the best by the model's reranker kept "
                    "(default: the model's)")
    overwrite_flag(ip)
    compute_flags(ip)

    pr = sub.add_parser("probe", help="probe the latent: an image's embedding from its first k principal components",
                        description="The paper's Fig. 7: the image's CLIP embedding reconstructed from its first k "
                        "principal components (PCA of training embeddings, cached), each decoded with the same "
                        "DDIM noise. Writes one PNG per k, strip.png and manifest.jsonl ({dims} per image).")
    pr.add_argument("what", choices=["pca"])
    pr.add_argument("image", metavar="IMAGE")
    pr.add_argument("--dims", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64], help="values of k")
    pr.add_argument("--model", help=MODEL_HELP)
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--seed", type=int, default=D["seed"], help="the DDIM noise shared by every k")
    pr.add_argument("--steps", type=int, default=D["steps"], help="DDIM steps")
    pr.add_argument("--fit-images", metavar="DIR", help="fit the PCA on this folder's images (default: the "
                    "shapes world's training stream)")
    image_encoder_flag(pr)
    overwrite_flag(pr)
    compute_flags(pr)

    dm = sub.add_parser("demo", help="draw a grid of canonical prompts with the default model",
                        description="Generate a handful of canonical shapes prompts and save grid.png.")
    dm.add_argument("--model", help="model folder (default: the shipped model)")
    dm.add_argument("--out", help="output folder (default: unclip-demo, or unclip-demo-train with --train)")
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--train", action="store_true", help="first train a small model of every stage "
                    "from scratch (about 20 min on 2 CPU cores), then draw its grid and score it")
    dm.add_argument("--configs", help="with --train: folder of stage presets (default: configs/demo)")
    dm.add_argument("--eval-num", type=int, default=48, help="with --train: eval prompts to score")
    device_flag(dm)

    w = sub.add_parser("serve", help="a web page for every job, on one loaded model",
                       description="Serve a gradio page (and its API: /generate, /vary, /interpolate, /edit, /inpaint) "
                       "with the model loaded once. Binds to 127.0.0.1 unless told otherwise.")
    w.add_argument("--model", help=MODEL_HELP)
    w.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    w.add_argument("--port", type=int, default=7860)
    image_encoder_flag(w)
    prior_model_flag(w)
    compute_flags(w)

    a = sub.add_parser("assemble", help="merge trained stages into one model folder",
                       description="Merge the model folders that training runs export (CLIP + prior, "
                       "CLIP + decoder, upsampler 1, upsampler 2; upsamplers in order) into one. With a DALL-E 1 folder "
                       "among them: a DALL-E 1 folder, taking only the upsamplers of unclip folders.")
    a.add_argument("parts", nargs="+", help="model folders, e.g. runs/prior/model runs/decoder/model ...")
    a.add_argument("--out", required=True, help="output folder")
    a.add_argument("--fp16", action="store_true", help="store the weights in fp16 (half the size)")
    a.add_argument("--reranker", metavar="DIR", help="a CLIP folder (as `unclip train clip` exports) to score "
                   "candidates by, stored as the model's reranker/")
    a.add_argument("--rerank", type=int, help="candidates drawn per image by default, the best by the reranker "
                   "(or the model's CLIP) kept")
    a.add_argument("--rerank-threshold", type=float, help="by default, stop drawing an image's candidates once one "
                   "scores at least this against its caption")

    e = sub.add_parser("eval", help="evaluate a trained stage", description="Print a table of figures and, "
                       "as the last line, one JSON object with all of them.")
    e.add_argument("what", choices=["clip", "prior", "shapes", "inpaint"], help="clip: text-to-image retrieval; "
                   "prior: cosine and retrieval of sampled image embeddings against baselines; shapes: generated "
                   "images scored against their prompts; inpaint: one object of two repainted as another "
                   "(all on the shapes eval split)")
    e.add_argument("--resample", type=int, default=1, help="inpaint: RePaint jumps back per step")
    e.add_argument("--manifest", help="shapes: score the images of this manifest.jsonl instead of generating")
    e.add_argument("--out", default="runs/eval-shapes", help="shapes: folder for report.json and grid.png")
    e.add_argument("--batch-size", type=int, default=16, help="shapes: images generated together")
    e.add_argument("--model", help="model folder (a CLIP folder for clip, a pipeline folder otherwise; "
                   "default: the shipped model)")
    e.add_argument("--num", type=int, help="eval split items (groups of 100 per subset; default 500), or "
                   "inpaint cases (default 100)")
    e.add_argument("--resume", action="store_true", help="shapes: keep the images already drawn in OUT/images "
                   "with the same settings, draw the rest")
    prior_flag(e)
    model_flags(e)
    image_encoder_flag(e)
    prior_model_flag(e)
    compute_flags(e)
    return p


MODEL_HELP = ("model folder: unclip's own, a DALL-E 1 folder, or a Karlo diffusers folder (karlo-v1-alpha, "
              "karlo-v1-alpha-image-variations) as downloaded; 'dalle1': the shipped DALL-E 1 model "
              "(default: the shipped unCLIP model)")


def prior_flag(parser) -> None:
    from .validate import PRIORS

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


def prior_model_flag(parser) -> None:
    parser.add_argument("--prior-model", metavar="DIR", help="Karlo only: an ECLIPSE prior folder (as published "
                        "for Karlo) in place of Karlo's diffusion prior: one forward pass per image embedding")


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
                        "diffusers' for Karlo folders at float32")


def compute_flags(parser) -> None:
    """--dtype, --device and --compile: every command that runs a model."""
    dtype_flag(parser)
    device_flag(parser)
    parser.add_argument("--compile", choices=["auto", "on", "off", "onnx"], default="auto",
                        help="how the networks that sample many steps run: on: torch.compile (kernels cached in "
                        "$UNCLIP_CACHE/inductor); onnx: ONNX Runtime, with --dtype float32 on the CPU (exported "
                        "once, cached in $UNCLIP_CACHE/onnx; pip install 'unclip[onnx]'); auto: torch.compile on a "
                        "CUDA GPU, else off")


def device_flag(parser) -> None:
    parser.add_argument("--device", default="auto", help="where to compute: auto (the first GPU if there is "
                        "one, else the CPU), cpu, cuda, cuda:N or mps; seeds draw the same noise on every device")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars would trail our tables
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    out = Path(args.out) if args.command in OUTPUT_COMMANDS else None
    fresh_out = out is not None and not out.exists()
    try:
        if args.command == "train":
            cmd_train(args, _overrides(extra, parser))
            return 0
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        commands = {"data": cmd_data, "eval": cmd_eval, "generate": cmd_generate, "assemble": cmd_assemble,
                    "invert": cmd_edit, "vary": cmd_edit, "interpolate": cmd_edit, "edit": cmd_edit,
                    "demo": cmd_demo, "serve": cmd_serve, "inpaint": cmd_inpaint, "probe": cmd_probe}
        commands[args.command](args)
    except (ValueError, OSError, FloatingPointError) as e:
        if isinstance(e, OSError) and e.filename and e.strerror:
            e = f"{e.strerror}: {e.filename}"
        print(f"unclip: error: {e}", file=sys.stderr)
        if fresh_out and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed command leaves no empty folder behind
        return 2
    return 0


OUTPUT_COMMANDS = ("generate", "invert", "vary", "interpolate", "edit", "inpaint", "probe")


if __name__ == "__main__":
    sys.exit(main())
