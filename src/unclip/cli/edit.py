"""`unclip invert | vary | interpolate | edit | inpaint | probe`: commands that read an image and write edited ones."""

from __future__ import annotations

from pathlib import Path

from unclip.cli.flags import (
    MODEL_HELP,
    check_device,
    compute_flags,
    image_encoder_flag,
    load,
    overwrite_flag,
    prior_model_flag,
)


def cmd_edit(args) -> None:
    """invert, vary, interpolate and edit: read images, manipulate, write frames + manifest."""

    import numpy as np

    from unclip.data.transforms import open_rgb
    from unclip.plot import image_grid
    from unclip.tasks import manipulate as m
    from unclip.tasks.generate import finish_manifest, prepare_out, write_images

    m.check_settings(steps=args.steps, seed=args.seed, num=getattr(args, "num_images", None),
                     eta=getattr(args, "eta", None), frames=getattr(args, "frames", None),
                     max_theta=getattr(args, "max_theta", None))
    images = [np.asarray(open_rgb(p)) for p in args.images]
    ends = images + list(getattr(args, "caption", []))
    if args.command == "interpolate" and len(ends) != 2:
        raise ValueError(f"interpolate takes two ends (images, then --caption texts); got {len(ends)}")
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
            frames, thetas = m.interpolate(pipe, *ends, args.frames, latent=args.latent,
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

    from unclip import validate
    from unclip.data.transforms import open_rgb
    from unclip.pipelines.inpaint import Region
    from unclip.plot import image_grid
    from unclip.tasks.generate import (
        finish_manifest,
        parse_samplers,
        parse_steps,
        prepare_out,
        write_images,
    )

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

    from unclip import validate
    from unclip.data.transforms import open_rgb
    from unclip.plot import image_grid
    from unclip.tasks import probe
    from unclip.tasks.generate import finish_manifest, prepare_out, write_images

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


def add_edit(sub) -> dict:
    from unclip.validate import DEFAULTS as D

    def editing(name, help, n_images, description):
        c = sub.add_parser(name, help=help, description=description + " Writes PNGs and manifest.jsonl.")
        c.add_argument("images", nargs=n_images, metavar="IMAGE", help="image files of any size and mode")
        c.add_argument("--model", help=MODEL_HELP)
        c.add_argument("--out", required=True, help="output folder")
        c.add_argument("--steps", type=int, default=D["steps"], help="DDIM steps for inversion and decoding")
        c.add_argument("--seed", type=int, default=D["seed"])
        image_encoder_flag(c)
        prior_model_flag(c)
        overwrite_flag(c)
        compute_flags(c)
        return c

    editing("invert", "DDIM-invert an image and reconstruct it", 1,
            "Invert IMAGE to the decoder's latent (z_i, x_T), decode it again at eta 0 and report the PSNR.")
    c = editing("vary", "variations of an image", 1,
                "Keep the image's CLIP embedding and inverted latent; resample with DDIM at eta > 0.")
    c.add_argument("--num-images", type=int, default=D["vary_num_images"])
    c.add_argument("--eta", type=float, default=D["eta"], help="DDIM eta; 0 reconstructs, 1 as the paper's figures")
    c = editing("interpolate", "interpolate between two images (or captions)", "*",
                "Slerp between two ends' CLIP image embeddings: images, or captions (--caption: the prior's "
                "embedding for it); also writes strip.png.")
    c.add_argument("--caption", action="append", default=[], metavar="TEXT",
                   help="a caption as an end (after the images): e.g. IMAGE --caption 'a cat', or two --caption")
    c.add_argument("--frames", type=int, default=D["frames"], help="frames including both ends")
    c.add_argument("--latent", choices=["inverted", "fixed"], default=D["latent"],
                   help="inverted: slerp the two inverted x_T; fixed: one random x_T for all frames")
    c = editing("edit", "text diff: edit an image towards a caption", 1,
                "Move the image's embedding towards normalize(z_t(--to) - z_t(--from)); also writes strip.png.")
    c.add_argument("--to", dest="to_caption", required=True, help="target caption")
    c.add_argument("--from", dest="from_caption", help="the image's caption (default: none)")
    c.add_argument("--frames", type=int, default=D["frames"], help="frames from theta 0 to --max-theta")
    c.add_argument("--max-theta", type=float, default=D["max_theta"])
    return {"invert": cmd_edit, "vary": cmd_edit, "interpolate": cmd_edit, "edit": cmd_edit}


def add_inpaint(sub) -> dict:
    from unclip.validate import DEFAULTS as D

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
    return {"inpaint": cmd_inpaint}


def add_probe(sub) -> dict:
    from unclip.validate import DEFAULTS as D

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
    prior_model_flag(pr)
    overwrite_flag(pr)
    compute_flags(pr)
    return {"probe": cmd_probe}
