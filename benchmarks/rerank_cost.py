"""Reranking's fidelity against its cost: how many candidates to draw, and when to stop.

The shipped model keeps the best of k candidates per image by its reranker. Drawing all k costs
about k draws. With a threshold (`rerank_threshold`), candidates come in rounds (unclip.pipelines.rerank
ROUNDS: 1, 3, 4) and an image stops as soon as its best scores at least the threshold
against its caption, so easy captions cost one draw and hard ones up to k.

Fidelity: for each of the first NUM eval prompts (seed = eval index, as `unclip eval shapes`),
--candidates candidates are drawn and finished, scored by the reranker (at its input size, after
the first upsampler) and by the shapes detector (right or not). Every policy is then read off
these draws: all of the first k, or rounds until the threshold, judged by 9 views each
(unclip.pipelines.rerank.judge_embedding) and by one; with --at, also judging after m
decoder steps by the clean image the decoder predicts there (a preview; the finished image is
the same at DDIM eta 0). Cost: whole pipeline calls on the first --batch eval prompts (a mix of
subsets like the eval's), warm, alternating, median of --repeats, per timed setting.

    python benchmarks/rerank_cost.py [--num 300] [--candidates 8] [--thresholds 0.5 0.6] [--raw F.npz] [--load-raw A.npz B.npz]

Prints tables and, as its last line, one JSON object.
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from unclip import load_pipeline
from unclip.data import shapes
from unclip.data.embeddings import encode_text
from unclip.data.transforms import to_output
from unclip.diffusion.sampling import repeat_generators
from unclip.models.upsampler import cascade
from unclip.pipelines.rerank import best_of, judged_after, rounds
from unclip.runtime.devices import cpu_name
from unclip.tasks.evaluate.detector import Detector, parse_prompt, score
from unclip.tasks.evaluate.shapes_eval import subset_of

SUBSETS = {("in_distribution", 1): "single", ("in_distribution", 2): "two", ("novel", 1): "novel_single",
           ("novel", 2): "novel_two"}


@torch.no_grad()
def draw_all(pipe, prompts: list[str], k: int, at: list[int], per_call: int, first: int = 0,
             steps: int | None = None):
    """scores[m] (N, k): the judge's score of each candidate's preview after m decoder steps
    (m = 0: the finished candidate; "plain": the finished one judged by one view); right (N, k): each finished candidate right or not.
    `prompts` are the eval's from index `first` on (seed = eval index)."""
    judged = pipe.upsamplers[:judged_after(pipe.decoder.cfg.image_size, pipe.upsamplers, pipe.judge)]
    detector = Detector()
    scores = {m: [] for m in [*at, 0, "plain"]}
    right = []
    for start in tqdm(range(0, len(prompts), per_call), desc="candidates", unit="chunk"):
        chunk = prompts[start:start + per_call]
        gens = repeat_generators([torch.Generator().manual_seed(first + start + i) for i in range(len(chunk))], k)
        rows = [p for p in chunk for _ in range(k)]
        z = pipe.image_embeds(rows, gens)
        previews = {}

        def keep(state, previews=previews):
            if state["i"] + 1 in at:
                previews[state["i"] + 1] = state["pred_x0"].float().clamp(-1, 1)

        x = pipe.decoder.sample(pipe._decoder_cond(z, rows), encode_text(pipe.clip, [""]), generator=gens,
                                steps=steps, callback=keep)
        previews[0] = x
        for m, preview in previews.items():
            judged_images = cascade(judged, preview, generator=gens)
            scores[m].append(best_of(pipe.judge, judged_images, chunk, k)[1].float())
            if m == 0:  # the same candidates judged by one view each, as before judge_embedding's views
                scores["plain"].append(best_of(pipe.judge, judged_images, chunk, k, views=False)[1].float())
        final = to_output(pipe.upsample(x, generator=gens), "uint8")
        right.append(torch.tensor([score(detector(img), parse_prompt(p))["all"] for img, p in zip(final, rows)],
                                  dtype=torch.float32).view(len(chunk), k))
    return {m: torch.cat(s).numpy() for m, s in scores.items()}, torch.cat(right).numpy()


def policy(scores: np.ndarray, right: np.ndarray, k: int, threshold: float | None):
    """Per image: whether the kept candidate is right, and how many were drawn, when the first k
    are drawn all at once (threshold None) or in rounds until the best scores >= threshold."""
    plan = [k] if threshold is None else rounds(k)
    kept, drawn = np.zeros(len(scores)), np.zeros(len(scores))
    for i in range(len(scores)):
        n = 0
        for size in plan:
            n += size
            if threshold is not None and scores[i, :n].max() >= threshold:
                break
        j = scores[i, :n].argmax()
        kept[i], drawn[i] = right[i, j], n
    return kept, drawn


def by_subset(values: np.ndarray, subsets: np.ndarray) -> dict:
    return {name: round(float(values[subsets == name].mean()), 3) for name in SUBSETS.values()}


def call_seconds(pipe, settings: list[dict], batch: int, repeats: int) -> list[float]:
    """Seconds per image of whole pipeline calls per setting on the first `batch` eval prompts,
    warm, alternating, median."""
    prompts = [it.prompt for it in shapes.eval_split(batch)]
    times = [[] for _ in settings]
    for rep in range(repeats + 1):
        for i, s in enumerate(settings):
            start = time.perf_counter()
            pipe(prompts, generator=[torch.Generator().manual_seed(j) for j in range(batch)], output_type="np", **s)
            if rep:  # the first round warms up
                times[i].append((time.perf_counter() - start) / batch)
    return [statistics.median(t) for t in times]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder (default: the shipped model)")
    p.add_argument("--num", type=int, default=300)
    p.add_argument("--first", type=int, default=0, help="start at this eval index (e.g. past the prompts a "
                   "threshold was chosen on, to check it on others)")
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--at", type=int, nargs="*", default=[], help="decoder steps to judge previews after")
    p.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--thresholds", type=float, nargs="*", default=None,
                   help="thresholds to time, and to add to the offline table's grid")
    p.add_argument("--plain-thresholds", type=float, nargs="*", default=[0.82],
                   help="thresholds for the offline table's rows judged by one view (as before 9 views)")
    p.add_argument("--batch", type=int, default=40, help="eval prompts per timed call")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per setting (0: time nothing)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--decoder-steps", type=int, help="the decoder's steps for every candidate, drawn and timed "
                   "(default: the model's)")
    p.add_argument("--raw", help="save every candidate's scores and verdicts here (.npz)")
    p.add_argument("--load-raw", nargs="+", help="read them from these files, consecutive prompts in order (e.g. "
                   "a --raw of the first 500 and one of the 300 after them), instead of drawing (and draw only the "
                   "prompts past their last, when --num asks for more; --raw then saves them all)")
    p.add_argument("--no-all", action="store_true", help="do not time drawing all candidates")
    p.add_argument("--also", type=json.loads, nargs="*", default=[],
                   help="more settings to time, each a JSON object of pipeline call arguments, e.g. the defaults "
                   "before a change: '{\"rerank\": 8, \"decoder_num_inference_steps\": 8}'")
    args = p.parse_args()
    pipe = load_pipeline(args.model, torch_dtype=args.dtype)
    items = shapes.eval_split(args.first + args.num)[args.first:]
    subsets = np.array([SUBSETS[(subset_of(it.scene), len(it.scene.objects))] for it in items])
    print(f"CPU: {cpu_name()}; {torch.get_num_threads()} threads; {pipe.dtype}; {args.num} eval prompts from index {args.first} "
          f"({', '.join(f'{n} {int((subsets == n).sum())}' for n in SUBSETS.values())})", flush=True)
    steps = args.decoder_steps or pipe.decoder.cfg.sample_steps
    scores, right, have = {}, np.zeros((0, args.candidates)), 0
    if args.load_raw:
        raws = [np.load(f) for f in args.load_raw]
        at = {int(r["decoder_steps"]) if "decoder_steps" in r.files else None for r in raws}
        if len(at) > 1:
            raise SystemExit(f"{' and '.join(args.load_raw)} were drawn with the decoder at different steps")
        keys = set.intersection(*(set(r.files) for r in raws))
        right = np.concatenate([r["right"] for r in raws])[:args.num]
        scores = {key.split("_")[1]: np.concatenate([r[key] for r in raws])[:args.num]
                  for key in sorted(keys) if key.startswith("scores_")}
        scores = {int(m) if m.isdigit() else m: v for m, v in scores.items()}
        have = len(right)
        drawn_at = at.pop()
        if have < args.num and drawn_at not in (None, steps):
            raise SystemExit(f"{' and '.join(args.load_raw)} were drawn with the decoder at {drawn_at} steps, not {steps}")
        steps = drawn_at or steps
    if have < args.num:
        more, more_right = draw_all(pipe, [it.prompt for it in items[have:]], args.candidates, args.at,
                                    max(1, 16 // args.candidates), first=args.first + have, steps=steps)
        scores = {m: np.concatenate([scores[m], s]) if m in scores else s for m, s in more.items()}
        right = np.concatenate([right, more_right])
        if args.raw:
            np.savez(args.raw, right=right, decoder_steps=steps, **{f"scores_{m}": s for m, s in scores.items()})
    print(f"candidates drawn with the decoder at {steps} steps")
    report = {"cpu": cpu_name(), "dtype": str(pipe.dtype), "num": args.num, "decoder_steps": steps,
              "offline": [], "timed": []}

    each = by_subset(right.mean(1), subsets)  # the base model's accuracy per draw: low noise, no judge involved
    report["each_candidate_right"] = each
    print(f"each candidate right (all {args.candidates} per prompt, no judging): " +
          ", ".join(f"{n} {v:.3f}" for n, v in each.items()))
    print("\n| candidates | judged | stop at score | single | two | novel single | novel two | mean drawn |")
    print("|---|---|---|---|---|---|---|---|")
    first = scores[0][:, 0]
    grid = [None] + sorted({round(float(q), 3) for q in np.quantile(first, [0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9])}
                           | set(args.thresholds or []))
    settings = [(1, 0, None)] + [(k, 0, t) for k in args.ks for t in grid] + \
        [(k, m, None) for m in args.at for k in args.ks]
    if "plain" in scores:
        settings += [(k, "plain", None) for k in args.ks] + \
            [(args.candidates, "plain", t) for t in args.plain_thresholds]
    label = lambda m: {0: "finished, 9 views", "plain": "finished, 1 view"}.get(m, f"after {m} steps")
    for k, m, t in settings:
        kept, drawn = policy(scores[m], right, k, t)
        fig = by_subset(kept, subsets)
        report["offline"].append({"rerank": k, "judged": label(m), "threshold": t, **fig,
                                  "mean_drawn": round(float(drawn.mean()), 2),
                                  "mean_drawn_by_subset": by_subset(drawn, subsets)})
        print(f"| {k} | {label(m)} | {'-' if t is None else t} | "
              f"{fig['single']:.3f} | {fig['two']:.3f} | {fig['novel_single']:.3f} | {fig['novel_two']:.3f} | "
              f"{drawn.mean():.2f} |", flush=True)

    if not args.repeats:
        print(json.dumps(report))
        return
    timed = [{"rerank": 1}] + ([] if args.no_all else [{"rerank": args.candidates, "rerank_threshold": 1.0}]) + \
        [{"rerank": args.candidates, "rerank_threshold": t} for t in args.thresholds or []]
    timed = [{**s, "decoder_num_inference_steps": steps} for s in timed] + args.also
    seconds = call_seconds(pipe, timed, args.batch, args.repeats)
    print(f"\nwhole calls, the first {args.batch} eval prompts, median of {args.repeats} alternating after a warm-up")
    print("| setting | s/image | x one candidate |\n|---|---|---|")
    for s, sec in zip(timed, seconds):
        report["timed"].append({**s, "s_per_image": round(sec, 4), "x_one": round(sec / seconds[0], 2)})
        print(f"| {s} | {sec:.3f} | {sec / seconds[0]:.2f} |")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
