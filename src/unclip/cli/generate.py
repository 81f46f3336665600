"""`unclip generate`: text to image files."""

from __future__ import annotations

from unclip.cli.flags import (
    MODEL_HELP,
    check_device,
    compose_flag,
    compose_value,
    compute_flags,
    load,
    model_flags,
    overwrite_flag,
    prior_flag,
    prior_model_flag,
)


def cmd_generate(args) -> None:
    from unclip.runtime.devices import process_group
    from unclip.tasks.generate import (
        check_generate,
        check_out,
        generate_files,
        parse_samplers,
        parse_steps,
        prepare_out,
        read_prompts,
    )

    prompts = read_prompts(args.prompts, args.prompts_file)
    sampling = dict(prior_guidance_scale=args.prior_guidance, decoder_guidance_scale=args.decoder_guidance,
                    height=args.height, width=args.width, negative_prompt=args.negative_prompt,
                    noise_level=args.noise_level, compose=compose_value(args),
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
    pipe = load(args, images=len(prompts) * args.num_images)
    manifest = generate_files(pipe, prompts, args.out, num_images=args.num_images, seed=args.seed,
                              batch_size=args.batch_size, overwrite=args.overwrite, resume=args.resume,
                              process=(rank, world, wait), **sampling)
    if rank == 0:
        print(f"wrote {len(manifest.read_text().splitlines())} images and {manifest}"
              + (f" ({world} processes)" if world > 1 else ""))


def add_generate(sub) -> dict:
    from unclip.validate import DEFAULTS as D

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
    g.add_argument("--height", type=int, help="image height in pixels, for models that draw any size "
                   "(Kandinsky 2.2; default: the model's)")
    g.add_argument("--width", type=int, help="image width in pixels (as --height)")
    compose_flag(g)
    g.add_argument("--noise-level", type=int, help="Stable unCLIP: the noise added to the image embedding "
                   "(0..999; more varies the image more; default 0)")
    g.add_argument("--negative-prompt", help="what the images should not show (Kandinsky 2.2: the prior's "
                   "embedding of it replaces the zero image's as the decoder's unconditional input)")
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
    return {"generate": cmd_generate}
