"""Choosing and stopping for objects drawn alone (issue 47), read off `object_candidates.py`'s draws.

Each object caption's candidates are judged against the caption (cosine, 9 views) and against
its contrasts (the same caption with another colour or another shape). The highest
scoring candidate drawn is kept; the policies differ in when to stop drawing (rounds 1, 3, 4):
at a score threshold, and also a margin over the best contrast, or never (all k). A prompt is
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


def run(score, margin, right, k, threshold, min_margin):
    """Per object: kept right, candidates drawn. Rounds (unclip.pipelines.rerank.rounds) until a
    candidate scores >= threshold with a margin >= min_margin (None: any); the highest scoring
    drawn is kept. threshold None: all k at once."""
    plan = rounds(k) if threshold is not None else [k]
    kept, drawn = np.zeros(len(score)), np.zeros(len(score))
    for i in range(len(score)):
        n = 0
        for size in plan:
            n += size
            ok = score[i, :n] >= threshold if threshold is not None else np.zeros(n, bool)
            if min_margin is not None:
                ok &= margin[i, :n] >= min_margin
            if ok.any():
                break
        j = score[i, :n].argmax()
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
    text = lambda cs: F.normalize(encode_text(pipe.judge, cs)["text_embed"].float(), dim=-1)  # noqa: E731
    score = torch.einsum("nkd,nd->nk", emb, text(caps)).numpy()
    margin = np.full_like(score, np.inf)  # as rerank.verdicts, from the saved judge embeddings
    for i, c in enumerate(caps):
        if others := shapes.contrast_captions(c):
            margin[i] = score[i] - torch.einsum("kd,ad->ka", emb[i], text(others)).amax(-1).numpy()
    k = right.shape[1]
    print(f"{args.raw}: {len(caps)} object captions x {k} ({d['cpu']}, {d['dtype']}, drawn in {float(d['seconds']):.0f} s)")
    print("each object candidate right:", {n: round(float(right[np.isin(owner, np.nonzero(subsets == n)[0])].mean()), 3)
                                          for n in SUBSETS.values()})
    print("\n| candidates | stop at score | and margin | single | two | novel single | novel two | drawn / prompt |")
    print("|---|---|---|---|---|---|---|---|")
    report = []
    rows = [(kk, None, None) for kk in (1, 2, 4, 8)] + \
        [(kk, t, m) for kk in (4, 8) for t in (0.76, 0.78, 0.8, 0.82) for m in (None, 0.0, 0.02)]
    for kk, t, m in rows:
        kept, drawn = run(score[:, :kk], margin[:, :kk], right[:, :kk], kk, t, m)
        per_prompt = np.ones(len(items), dtype=bool)
        cost = np.zeros(len(items))
        for o, (r, n) in enumerate(zip(kept, drawn)):
            per_prompt[owner[o]] &= bool(r)
            cost[owner[o]] += n
        fig = {n: round(float(per_prompt[subsets == n].mean()), 3) for n in SUBSETS.values()}
        wrong = ~right[:, :kk]
        accepted = (score[:, :kk] >= (t if t is not None else np.inf)) & (margin[:, :kk] >= (m if m is not None else -np.inf))
        report.append({"candidates": kk, "threshold": t, "min_margin": m, **fig,
                       "drawn_per_prompt": round(float(cost.mean()), 3),
                       "drawn_by_subset": {n: round(float(cost[subsets == n].mean()), 2) for n in SUBSETS.values()},
                       "wrong_candidates_accepted": int(accepted[wrong].sum()), "wrong_candidates": int(wrong.sum())})
        print(f"| {kk} | {'-' if t is None else t} | {'-' if m is None else m} | {fig['single']:.3f} | {fig['two']:.3f} | "
              f"{fig['novel_single']:.3f} | {fig['novel_two']:.3f} | {cost.mean():.2f} |")
    print("\nwrong candidates that would stop drawing (of all wrong ones): " +
          ", ".join(f"{r['threshold']}/{r['min_margin']}: {r['wrong_candidates_accepted']}" for r in report
                    if r["candidates"] == 8 and r["threshold"] is not None) + f" (of {report[-1]['wrong_candidates']})")
    groups: dict = {}
    for c, r in zip(caps, right):
        groups.setdefault(c.split(" ", 1)[1], []).append(r)  # the caption less its article
    hard = sorted(groups.items(), key=lambda kv: np.mean(kv[1]))[:8]
    print("\nhardest object captions (right / candidates drawn): " +
          "; ".join(f"{c!r} {int(np.sum(v))}/{np.size(v)}" for c, v in hard))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
