"""Quality against sampling steps and sampler, stage by stage, for a model folder (issue 16):
the measurements the shipped model's default steps and samplers are chosen from.

  upsampler  PSNR of each upsampler against the true render, from clean inputs (the area-
             downsampled render) of held-out eval scenes, and seconds per image
  prior      `unclip eval prior` figures of the diffusion prior: retrieval among 100 and cosine
             to the true CLIP image embedding, in distribution and on novel pairs
  decoder    `unclip eval shapes` figures (single and two objects all right, novel pairs) on the
             first NUM eval prompts, with the prior and upsamplers at the --fix settings, and
             seconds per image of the whole pipeline at batch 16

Results are merged into runs/sampling_steps.json (so stages can be run one at a time) and all
of it is drawn in docs/sampling_steps.png.

    python benchmarks/sampling_steps.py --stages upsampler prior decoder --num 500 \\
        --fix prior=ddim:10 upsampler=ddim:2
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from unclip.data import shapes
from unclip.data.transforms import to_tensor
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline
from unclip.plot import line_chart
from unclip.tasks.evaluate.image_metrics import psnr
from unclip.tasks.evaluate.prior_eval import evaluate_prior
from unclip.tasks.evaluate.shapes_eval import evaluate_model, headline
from unclip.validate import SAMPLERS

STEPS = {"upsampler": (1, 2, 3, 4, 7), "prior": (2, 4, 6, 10, 25), "decoder": (4, 6, 8, 12, 25)}
KEYS = {"prior": ("prior_sampler", "prior_num_inference_steps"),
        "decoder": ("decoder_sampler", "decoder_num_inference_steps"),
        "upsampler": ("super_res_sampler", "super_res_num_inference_steps")}


def sweep_upsamplers(pipe, num: int, samplers) -> list[dict]:
    items, rows, size = shapes.eval_split(num), [], pipe.decoder.cfg.image_size
    for stage, up in enumerate(pipe.upsamplers, start=1):
        size *= up.cfg.factor
        truth = to_tensor(np.stack([shapes.render(it.scene, size) for it in items]))
        low = F.interpolate(truth, scale_factor=1 / up.cfg.factor, mode="area")
        for sampler in samplers:
            for steps in STEPS["upsampler"]:
                start = time.perf_counter()
                out = torch.cat([up.sample(chunk, steps=steps, sampler=sampler,
                                           generator=torch.Generator().manual_seed(i))
                                 for i, chunk in enumerate(low.split(16))])
                rows.append({"stage": stage, "sampler": sampler, "steps": steps, "psnr": psnr(out, truth),
                             "s_per_image": (time.perf_counter() - start) / num})
                print("upsampler", json.dumps(rows[-1]), flush=True)
    return rows


def sweep_prior(pipe, num: int, samplers) -> list[dict]:
    rows = []
    for sampler in samplers:
        for steps in STEPS["prior"]:
            start = time.perf_counter()
            figures = evaluate_prior(pipe, num=num, methods=("prior",), steps=steps, sampler=sampler)
            rows.append({"sampler": sampler, "steps": steps, "s_per_image": (time.perf_counter() - start) / num,
                         **{f"{s}_{k}": f["prior"][k] for s, f in figures.items() for k in ("retrieval", "cosine")}})
            print("prior", json.dumps(rows[-1]), flush=True)
    return rows


def sweep_decoder(pipe, num: int, samplers, fixed: dict, out: Path) -> list[dict]:
    rows = []
    for sampler in samplers:
        for steps in STEPS["decoder"]:
            start = time.perf_counter()
            figures = evaluate_model(pipe, out / f"decoder-{sampler}-{steps}", num=num, decoder_sampler=sampler,
                                     decoder_num_inference_steps=steps, **fixed)
            rows.append({"sampler": sampler, "steps": steps, "s_per_image": (time.perf_counter() - start) / num,
                         **headline(figures)})
            print("decoder", json.dumps(rows[-1]), flush=True)
    return rows


def parse_fix(items: list[str]) -> dict:
    """["prior=ddim:10"] -> {"prior_sampler": "ddim", "prior_num_inference_steps": 10}."""
    out = {}
    for item in items:
        stage, _, value = item.partition("=")
        sampler, _, steps = value.partition(":")
        out[KEYS[stage][0]], out[KEYS[stage][1]] = sampler, int(steps)
    return out


def draw(results: dict, path: Path) -> None:
    charts = []

    def lines(rows, y, **match):
        chosen = [r for r in rows if all(r[k] == v for k, v in match.items())]
        return {s: ([r["steps"] for r in chosen if r["sampler"] == s], [r[y] for r in chosen if r["sampler"] == s])
                for s in dict.fromkeys(r["sampler"] for r in chosen)}

    for stage in (1, 2):
        if any(r["stage"] == stage for r in results.get("upsampler", [])):
            charts.append(line_chart(lines(results["upsampler"], "psnr", stage=stage),
                                     f"upsampler {stage}: PSNR (dB) from clean inputs", xlabel="steps", markers=True))
    if results.get("prior"):
        charts.append(line_chart(lines(results["prior"], "in_distribution_retrieval"),
                                 "prior: retrieval among 100 (in distribution)", xlabel="steps", markers=True))
    for key, label in (("single", "single objects all right"), ("two", "two objects all right")):
        if results.get("decoder"):
            charts.append(line_chart(lines(results["decoder"], key), f"decoder: {label} ({results['decoder_fixed']})",
                                     xlabel="steps", markers=True))
    if results.get("decoder"):
        charts.append(line_chart(lines(results["decoder"], "s_per_image"), "s/image: whole pipeline, eval at batch 16",
                                 xlabel="decoder steps", markers=True))
    if not charts:
        return
    cols = 2
    w, h = charts[0].size
    sheet = Image.new("RGB", (w * cols, h * ((len(charts) + cols - 1) // cols)), "white")
    for i, chart in enumerate(charts):
        sheet.paste(chart, ((i % cols) * w, (i // cols) * h))
    sheet.save(path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="pipeline folder (default: the shipped model)")
    p.add_argument("--stages", nargs="+", default=["upsampler", "prior", "decoder"], choices=list(STEPS))
    p.add_argument("--samplers", nargs="+", default=["ddim", "dpm++", "unipc"], choices=SAMPLERS)
    p.add_argument("--steps", nargs="+", type=int, help="step counts to try (default: per stage, "
                   + "; ".join(f"{k} {' '.join(map(str, v))}" for k, v in STEPS.items()) + ")")
    p.add_argument("--num", type=int, default=500, help="eval prompts (prior, decoder)")
    p.add_argument("--upsampler-num", type=int, default=64, help="eval scenes for the upsamplers")
    p.add_argument("--fix", nargs="*", default=[], metavar="STAGE=SAMPLER:STEPS",
                   help="the other stages' settings during the decoder sweep (default: the model's)")
    p.add_argument("--results", default="runs/sampling_steps.json")
    p.add_argument("--plot", default="docs/sampling_steps.png")
    args = p.parse_args()
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    pipe = DalleTwoPipeline.from_pretrained(args.model)
    print(f"{torch.get_num_threads()} threads; samplers {args.samplers}")
    if args.steps:
        STEPS.update({stage: tuple(args.steps) for stage in args.stages})
    new = {}
    if "upsampler" in args.stages:
        new["upsampler"] = sweep_upsamplers(pipe, args.upsampler_num, args.samplers)
    if "prior" in args.stages:
        new["prior"] = sweep_prior(pipe, args.num, args.samplers)
    if "decoder" in args.stages:
        fix = " ".join(args.fix) or "model defaults"
        if results.get("decoder_fixed", fix) != fix or results.get("decoder_num", args.num) != args.num:
            results.pop("decoder", None)  # rows measured under other settings are not comparable
        new["decoder"] = sweep_decoder(pipe, args.num, args.samplers, parse_fix(args.fix), results_path.with_suffix(""))
        results.update(decoder_fixed=fix, decoder_num=args.num)
    for stage, rows in new.items():  # a row replaces an earlier one of the same setting
        key = lambda r: (r.get("stage"), r["sampler"], r["steps"])  # noqa: E731
        merged = {key(r): r for r in results.get(stage, []) + rows}
        results[stage] = sorted(merged.values(), key=lambda r: (r.get("stage", 0), r["sampler"], r["steps"]))
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=1))
    draw(results, Path(args.plot))
    for stage in ("upsampler", "prior", "decoder"):
        for r in results.get(stage, []):
            print(stage, " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
