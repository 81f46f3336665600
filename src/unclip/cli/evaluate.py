"""`unclip eval`: print a stage's figures."""

from __future__ import annotations

from unclip.cli.flags import (
    compose_flag,
    compose_value,
    compute_flags,
    image_encoder_flag,
    load,
    model_flags,
    prior_flag,
    prior_model_flag,
)


def cmd_eval(args) -> None:
    from unclip.tasks.evaluate.report import print_report

    if args.what == "clip":
        from unclip.models.clip import ClipEncoder
        from unclip.tasks.evaluate.clip_retrieval import retrieval_accuracy

        if args.model is None:
            raise ValueError("eval clip needs --model DIR (a CLIP folder)")
        figures = retrieval_accuracy(ClipEncoder.from_pretrained(args.model), num=args.num or 500)
        print_report(f"CLIP text-to-image top-1 retrieval among 100 ({args.model})", figures)
    elif args.what == "prior":
        from unclip.tasks.evaluate.prior_eval import evaluate_prior

        prior = args.prior or "diffusion"
        if prior not in ("diffusion", "ar", "eclipse"):
            raise ValueError(f"eval prior scores a prior's samples: --prior diffusion, ar or eclipse, not {prior}")
        pipe = load(args, images=args.num or 500)
        if not pipe.capabilities.prior_samples:
            raise ValueError(f"eval prior compares a prior's samples with the true embeddings of its own CLIP's "
                             f"image tower on the shapes world; this {pipe.title} does not sample its prior apart from its "
                             f"pipeline (capabilities.prior_samples)")
        pipe.check_settings(prior=prior)
        figures = evaluate_prior(pipe, num=args.num or 500, prior=prior)
        print_report(f"prior: predicted vs true CLIP image embeddings ({args.model or 'default model'})", figures)
    elif args.what == "inpaint":
        from unclip.tasks.evaluate.inpaint_eval import evaluate_inpaint
        from unclip.validate import count, sampling

        sampling(rerank=args.rerank)
        count("resample", args.resample)
        pipe = load(args, images=args.num or 100)
        if not pipe.capabilities.inpainting:
            raise ValueError(f"eval inpaint needs a model that inpaints; this {pipe.title} does not")
        kw = {"rerank": args.rerank} if args.rerank is not None else {}
        figures = evaluate_inpaint(pipe, args.out, num=args.num or 100, resample=args.resample, **kw)
        print_report(f"inpaint: one object of two repainted as another ({args.model or 'default model'}); "
                     f"report and grid in {args.out}", figures)
    elif args.what == "shapes":
        from unclip.tasks.evaluate.shapes_eval import evaluate_manifest, evaluate_model

        if args.manifest:
            scorer = load(args) if args.model else None
            figures = evaluate_manifest(args.manifest, args.out, scorer)
            source = args.manifest
        else:
            from unclip.runtime.devices import process_group
            from unclip.validate import sampling

            sampling(rerank=args.rerank, rerank_threshold=args.rerank_threshold)  # before the model loads
            process = process_group()  # several under `accelerate launch`
            if process[3] is not None and args.device == "auto":
                args.device = str(process[3])
            pipe = load(args, images=args.num or 500)
            figures = evaluate_model(pipe, args.out, num=args.num or 500, batch_size=args.batch_size, resume=args.resume,
                                     process=process[:3], rerank=args.rerank, rerank_threshold=args.rerank_threshold,
                                     upscale=args.upscale, prior=args.prior, compose=compose_value(args))
            if figures is None:
                return
            source = args.model or "default model"
        print_report(f"shapes: generated images scored against their prompts ({source}); "
                     f"report and grid in {args.out}", figures)


def add_eval(sub) -> dict:
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
    compose_flag(e)
    model_flags(e)
    image_encoder_flag(e)
    prior_model_flag(e)
    compute_flags(e)
    return {"eval": cmd_eval}
