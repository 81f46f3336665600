"""`unclip data`, `unclip train` and `unclip assemble`: data sets, training runs, model folders."""

from __future__ import annotations

from unclip.train import STAGES


def cmd_data(args) -> None:
    from unclip.data.export import write_shapes

    path = write_shapes(args.out, args.split, args.num, args.size, args.seed)
    print(f"wrote {args.num} images and {path}")


def cmd_train(args, overrides: list[str]) -> None:
    from unclip.config import load, read_file, to_dict
    from unclip.train import stage_classes
    from unclip.train.loop import check_out_dir, train

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


def cmd_assemble(args) -> None:
    import torch

    from unclip.pipelines.dalle2.assemble import assemble

    pipe = assemble(args.parts, args.out, torch.float16 if args.fp16 else None, args.reranker, args.rerank,
                    args.rerank_threshold, args.compose)
    parts = [n for n in ("clip", "prior", "ar_prior", "eclipse_prior", "decoder", "dvae", "transformer", "reranker")
             if getattr(pipe, n, None) is not None]
    print(f"wrote {args.out}: {', '.join(parts + [f'{len(pipe.upsamplers)} upsamplers'])}")


def add_data(sub) -> dict:
    d = sub.add_parser("data", help="render data sets to disk", description="Render the shapes world to PNGs "
                       "with a manifest.jsonl ({prompt, file, scene} per line).")
    d.add_argument("dataset", choices=["shapes"], help="which data set")
    d.add_argument("--split", choices=["train", "eval"], default="train",
                   help="train: the training stream (held-out pairs never drawn); eval: the fixed evaluation split")
    d.add_argument("--num", type=int, default=100, help="number of images")
    d.add_argument("--size", type=int, default=128, help="image side in pixels")
    d.add_argument("--seed", type=int, default=None, help="seed (default: 0 for train, the fixed eval seed for eval)")
    d.add_argument("--out", required=True, help="output folder")
    return {"data": cmd_data}


def add_train(sub) -> dict:
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
    return {"train": cmd_train}


def add_assemble(sub) -> dict:
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
    a.add_argument("--compose", action="store_true", help="by default, draw two-object captions one object at a "
                   "time (each alone, then moved to its place and the two combined)")
    return {"assemble": cmd_assemble}
