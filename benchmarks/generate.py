"""`unclip generate` speed on this machine. First the cold start: a fresh `unclip generate`
process, from its start until its first image is on disk, with the time its imports take.
Then warm seconds per image at each batch size, split by stage, with the network
evaluations each stage makes (calls, and rows: guidance doubles the rows of a call, best-of-n
multiplies the prior's, reranking n candidates multiplies the prior's, the decoder's and those
of the upsamplers that run before the judge).

With --baseline-steps / --baseline-sampler / --baseline-rerank, a second setting (e.g. the model's earlier
defaults) is timed in the same run, alternating with the first, median of --repeats, and
with --eval N both are scored by `unclip eval shapes` on the first N eval prompts.

    python benchmarks/generate.py [--model DIR] [--batches 1 8 16] [--cold-only] \\
        [--steps decoder=8 ...] [--sampler decoder=dpm++ ...] [--rerank 4] \\
        [--baseline-steps prior=25 decoder=25 upsampler=7 --baseline-sampler prior=ddpm decoder=ddim upsampler=ddim] \\
        [--eval 500]
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from unclip.diffusion.sampling import repeat_generators
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline
from unclip.pipelines.rerank import best_of
from unclip.runtime.devices import cpu_name
from unclip.tasks.evaluate.shapes_eval import evaluate_model, headline
from unclip.tasks.generate import parse_samplers, parse_steps

PROMPT = "a large red circle on the left on a white background"


def count_calls(module, tally: dict) -> None:
    """Wrap module.denoise so that every call adds to tally["calls"] and tally["rows"]."""
    real = module.denoise

    def counted(x_t, t, cond):
        tally["calls"] += 1
        tally["rows"] += x_t.shape[0]
        return real(x_t, t, cond)

    module.denoise = counted


def cold_start(model: str | None, settings: list[str]) -> tuple[float, float]:
    """Seconds from launching `unclip generate PROMPT` until its first PNG exists, and until the
    command has returned (what a user waits for)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "unclip", "generate", PROMPT, "--out", out, *settings]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd + (["--model", model] if model else []),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not any(Path(out).glob("*.png")):
            if proc.poll() not in (None, 0):
                raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
            time.sleep(0.02)
        first = time.perf_counter() - start
        proc.wait()
    return first, time.perf_counter() - start


IMPORTS = ["torch", "transformers.models.clip.modeling_clip", "diffusers.models.unets.unet_2d_condition",
           "unclip.pipelines.dalle2.pipeline"]


def import_seconds() -> dict:
    """A fresh interpreter's time to import, one after the other, what `unclip generate`
    needs before its first image: {module: seconds it added}."""
    code = ("import importlib, json, time\nout = {}\n"
            f"for name in {IMPORTS!r}:\n"
            "    t = time.perf_counter(); importlib.import_module(name); out[name] = time.perf_counter() - t\n"
            "print(json.dumps(out))")
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def run_stages(pipe, b: int, s: dict) -> tuple[dict, torch.Tensor]:
    """Seconds per stage for one batch of b images with settings s (the pipeline call's keywords)."""
    gens = [torch.Generator().manual_seed(i) for i in range(b)]
    k = pipe.candidates(s.get("rerank"), [PROMPT] * b)
    rows, g = [PROMPT] * (b * k), repeat_generators(gens, k)
    seconds = {}
    t = time.perf_counter()
    z = pipe.image_embeds(rows, g, steps=s.get("prior_num_inference_steps"), sampler=s.get("prior_sampler"))
    seconds["prior"] = time.perf_counter() - t
    t = time.perf_counter()
    x = pipe.decode(z, rows, generator=g, steps=s.get("decoder_num_inference_steps"),
                    sampler=s.get("decoder_sampler"))
    seconds["decoder"] = time.perf_counter() - t
    ups = list(enumerate(pipe.upsamplers, start=1))
    judged = pipe.judged_after(k)  # the upsamplers candidates go through before the judge

    def upsample(x, part, generator):
        for i, up in part:
            t = time.perf_counter()
            x = up.sample(x, generator=generator, steps=s.get("super_res_num_inference_steps"),
                          sampler=s.get("super_res_sampler"))
            seconds[f"upsampler{i}"] = time.perf_counter() - t
        return x

    x = upsample(x, ups[:judged], g)
    t = time.perf_counter()
    if k > 1:
        x = x[best_of(pipe.judge, x, [PROMPT] * b, k)[0]]
    seconds["rerank"] = time.perf_counter() - t
    x = upsample(x, ups[judged:], gens)
    return seconds, x


def call_seconds(pipe, b: int, s: dict, repeats: int) -> float:
    """Median seconds of one whole pipeline call for b images, as users make it."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        pipe([PROMPT] * b, generator=[torch.Generator().manual_seed(i) for i in range(b)], output_type="uint8", **s)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="pipeline folder (default: the shipped model)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--steps", nargs="+", metavar="STAGE=N", help="as `unclip generate --steps`")
    p.add_argument("--sampler", nargs="+", metavar="STAGE=NAME", help="as `unclip generate --sampler`")
    p.add_argument("--rerank", type=int, help="candidates per image (default: the model's)")
    p.add_argument("--baseline-steps", nargs="+", metavar="STAGE=N")
    p.add_argument("--baseline-sampler", nargs="+", metavar="STAGE=NAME")
    p.add_argument("--baseline-rerank", type=int)
    p.add_argument("--repeats", type=int, default=3, help="timed batches per setting and batch size (median)")
    p.add_argument("--eval", type=int, default=0, metavar="N", help="also score each setting on N eval prompts")
    p.add_argument("--cold-only", action="store_true", help="only the imports and the cold start, --repeats times")
    args = p.parse_args()
    def rerank(n):
        return {} if n is None else {"rerank": n}

    settings = {"given": {**parse_steps(args.steps), **parse_samplers(args.sampler), **rerank(args.rerank)}}
    if args.baseline_steps or args.baseline_sampler or args.baseline_rerank:
        settings["baseline"] = {**parse_steps(args.baseline_steps), **parse_samplers(args.baseline_sampler),
                                **rerank(args.baseline_rerank)}
    flags = [f for name, items in (("--steps", args.steps), ("--sampler", args.sampler),
                                   ("--rerank", [str(args.rerank)] if args.rerank else None)) if items
             for f in (name, *items)]
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    imports = import_seconds()
    print(f"imports in a fresh process: {sum(imports.values()):.1f} s (" +
          ", ".join(f"{name} +{sec:.1f}" for name, sec in imports.items()) + ")")
    colds = [cold_start(args.model, flags) for _ in range(args.repeats if args.cold_only else 1)]
    for i, what in enumerate(("first image written", "command returned")):
        times = [c[i] for c in colds]
        print(f"cold start (process start to {what}): {statistics.median(times):.1f} s"
              + (f" (median of {len(times)}: " + ", ".join(f"{t:.2f}" for t in times) + ")" if len(times) > 1 else ""))
    if args.cold_only:
        return

    pipe = DalleTwoPipeline.from_pretrained(args.model)
    defaults = pipe.sampling_defaults()
    for name, s in settings.items():
        shown = {k: s.get(k, v) for k, v in defaults.items() if 'sampler' in k or 'steps' in k}
        print(f"{name}: {json.dumps({**shown, 'rerank': s.get('rerank', pipe.rerank)})}")
    stages = [("prior", pipe.prior), ("decoder", pipe.decoder), ("rerank", None)] + \
             [(f"upsampler{i}", up) for i, up in enumerate(pipe.upsamplers, start=1)]
    tallies = {name: {"calls": 0, "rows": 0} for name, _ in stages}
    for name, module in stages:
        if module is not None:
            count_calls(module, tallies[name])
    print(f"model {args.model or 'default'}; {torch.get_num_threads()} threads; median of {args.repeats}")
    print(f"{'setting':<9}{'batch':>5} {'stage':<11}{'s/image':>9}{'calls':>7}{'rows/image':>11}")
    for s in settings.values():
        run_stages(pipe, 1, s)  # warm-up
    summary = {}
    for b in args.batches:
        runs = {name: [] for name in settings}
        for _ in range(args.repeats):
            for name, s in settings.items():  # alternating, so that drifts in the machine hit both
                for t in tallies.values():
                    t.update(calls=0, rows=0)
                seconds, x = run_stages(pipe, b, s)
                runs[name].append((seconds, {k: dict(v) for k, v in tallies.items()}))
        for name, setting in settings.items():
            per_stage = {st: statistics.median(r[0][st] for r in runs[name]) / b for st, _ in stages}
            calls = runs[name][0][1]
            for st, _ in stages:
                print(f"{name:<9}{b:5d} {st:<11}{per_stage[st]:9.3f}{calls[st]['calls']:7d}{calls[st]['rows'] / b:11.0f}")
            total = statistics.median(sum(r[0].values()) for r in runs[name]) / b
            print(f"{name:<9}{b:5d} {'total':<11}{total:9.3f}   ({x.shape[-1]} px images)")
            call = call_seconds(pipe, b, setting, args.repeats) / b
            print(f"{name:<9}{b:5d} {'pipe(...)':<11}{call:9.3f}   (the whole call: the decoder in chunks on the CPU)")
            summary.setdefault(name, {})[b] = {"total": total, "call": call, **per_stage}
        if "baseline" in settings:
            ratio = summary["baseline"][b]["total"] / summary["given"][b]["total"]
            print(f"batch {b}: given settings {ratio:.2f}x faster than the baseline")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"batch {b}: peak RSS of this process so far {rss:.0f} MB")
    scores = {}
    for name, s in settings.items() if args.eval else ():
        with tempfile.TemporaryDirectory() as out:
            scores[name] = headline(evaluate_model(pipe, out, num=args.eval, **s))
        print(f"{name}: eval shapes on {args.eval} prompts: {json.dumps(scores[name])}", flush=True)
    print(json.dumps({"seconds_per_image": summary, "eval": scores, "settings": settings}))


if __name__ == "__main__":
    main()
