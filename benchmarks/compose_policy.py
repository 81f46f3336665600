"""Choosing and stopping for objects drawn alone (issue 47), read off `object_candidates.py`'s draws.

Each object caption's candidates are judged against the caption (cosine, 9 views) and against
its contrasts (the same caption with another colour or another shape). Policies: which
candidate to keep (highest score, or highest margin over the best contrast) and when to stop
drawing (rounds 1, 3, 4: at a score threshold, or once the margin is positive). A prompt is
right when every object it was split into is right alone (two-object scenes: both halves).
Cost: candidates drawn per prompt (the final upsampler then runs once per prompt).

    python benchmarks/compose_policy.py /tmp/work/objects_500.npz
"""

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from unclip import load_pipeline
from unclip.data import shapes
from unclip.data.embeddings import encode_text
from unclip.pipelines.rerank import rounds
from unclip.tasks.evaluate.shapes_eval import subset_of

SUBSETS = {("in_distribution", 1): "single", ("in_distribution", 2): "two", ("novel", 1): "novel_single",
           ("novel", 2): "novel_two"}


def contrasts(caption: str) -> list[str]:
    words = caption.split(" ")
    colour, shape = words[2], words[3]
    return [caption.replace(f" {colour} {shape} ", f" {c} {shape} ") for c in shapes.COLOURS if c != colour] + \
           [caption.replace(f" {colour} {shape} ", f" {colour} {s} ") for s in shapes.SHAPES if s != shape]


def run(score, margin, right, k, choose, stop, value):
    """Per object: kept right, candidates drawn."""
    plan = rounds(k) if stop else [k]
    kept, drawn = np.zeros(len(score)), np.zeros(len(score))
    for i in range(len(score)):
        n = 0
        for size in plan:
            n += size
            crit = score[i, :n].max() if stop == "score" else margin[i, :n].max()
            if stop and crit >= value:
                break
        key = score if choose == "score" else margin
        j = key[i, :n].argmax()
        kept[i], drawn[i] = right[i, j], n
    return kept, drawn


@torch.no_grad()
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("raw")
    p.add_argument("--dtype", default="auto")
    args = p.parse_args()
    d = np.load(args.raw)
    caps, owner, emb, right = list(d["captions"]), d["owner"], torch.from_numpy(d["embeds"]), d["right"]
    first = int(d["first"]) if "first" in d.files else 0
    items = shapes.eval_split(first + len(d["prompts"]))[first:]
    subsets = np.array([SUBSETS[(subset_of(it.scene), len(it.scene.objects))] for it in items])
    pipe = load_pipeline(None, torch_dtype=args.dtype)
    alts = [contrasts(c) for c in caps]
    text = lambda cs: F.normalize(encode_text(pipe.judge, cs)["text_embed"].float(), dim=-1)
    t = text(caps)
    ta = text([a for al in alts for a in al]).view(len(caps), len(alts[0]), -1)
    score = torch.einsum("nkd,nd->nk", emb, t).numpy()
    alt = torch.einsum("nkd,nad->nka", emb, ta).amax(-1).numpy()
    margin = score - alt
    k = right.shape[1]
    print(f"{args.raw}: {len(caps)} object captions x {k} ({d['cpu']}, {d['dtype']}, drawn in {float(d['seconds']):.0f} s)")
    print("each object candidate right:", {n: round(float(right[np.isin(owner, np.nonzero(subsets == n)[0])].mean()), 3)
                                          for n in SUBSETS.values()})
    print("\n| candidates | keep by | stop when | single | two | novel single | novel two | drawn / prompt |")
    print("|---|---|---|---|---|---|---|---|")
    report = []
    rows = [(1, "score", None, None)] + [(kk, ch, None, None) for kk in (2, 4, 8) for ch in ("score", "margin")] + \
        [(kk, ch, "score", v) for kk in (4, 8) for ch in ("score", "margin") for v in (0.80, 0.82, 0.84)] + \
        [(kk, ch, "margin", v) for kk in (2, 4, 8) for ch in ("score", "margin") for v in (0.0, 0.01, 0.02, 0.04)]
    for kk, ch, stop, v in rows:
        kept, drawn = run(score[:, :kk], margin[:, :kk], right[:, :kk], kk, ch, stop, v)
        per_prompt = np.ones(len(items), dtype=bool)
        cost = np.zeros(len(items))
        for o, (r, n) in enumerate(zip(kept, drawn)):
            per_prompt[owner[o]] &= bool(r)
            cost[owner[o]] += n
        fig = {n: round(float(per_prompt[subsets == n].mean()), 3) for n in SUBSETS.values()}
        report.append({"candidates": kk, "keep_by": ch, "stop": stop, "value": v, **fig,
                       "drawn_per_prompt": round(float(cost.mean()), 3),
                       "drawn_by_subset": {n: round(float(cost[subsets == n].mean()), 2) for n in SUBSETS.values()}})
        print(f"| {kk} | {ch} | {'-' if stop is None else f'{stop} >= {v}'} | {fig['single']:.3f} | {fig['two']:.3f} | "
              f"{fig['novel_single']:.3f} | {fig['novel_two']:.3f} | {cost.mean():.2f} |")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
