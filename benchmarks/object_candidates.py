"""Candidates of each object alone, for choosing how two-object scenes are composed (issue 47).

For each of the first NUM eval prompts, every object caption (a single-object prompt is its own;
a two-object prompt gives two, `split_caption`: each object alone, as compose draws it) gets --candidates
candidates drawn through prior, decoder and the upsamplers before judging (64 px), seeded by
eval index and object. Saved per candidate: the judge's 9-view image embedding, the image
(uint8), and the shapes detector's verdict against the object caption. `benchmarks/compose_policy.py`
then reads choices and stopping rules off these draws.

    python benchmarks/object_candidates.py --num 500 --out /tmp/work/objects_500.npz
"""

import argparse
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from unclip import load_pipeline
from unclip.data import shapes
from unclip.data.transforms import to_output
from unclip.diffusion.sampling import repeat_generators
from unclip.models.upsampler import cascade
from unclip.pipelines.dalle2.compose import split_caption
from unclip.pipelines.rerank import judge_embedding
from unclip.runtime.devices import cpu_name
from unclip.tasks.evaluate.detector import Detector, parse_prompt, score


def object_captions(items) -> tuple[list[str], list[int]]:
    """Each eval prompt's object captions in order, and the eval index each comes from."""
    caps, owner = [], []
    for i, it in enumerate(items):
        parts = split_caption(it.prompt)
        for c in ([it.prompt] if parts is None else [c for c, _ in parts]):
            caps.append(c)
            owner.append(i)
    return caps, owner


@torch.no_grad()
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--first", type=int, default=0, help="start at this eval index (e.g. past the eval's 500, to "
                   "choose settings on prompts the eval does not score)")
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    pipe = load_pipeline(None, torch_dtype=args.dtype)
    items = shapes.eval_split(args.first + args.num)[args.first:]
    caps, owner = object_captions(items)
    k, per_call = args.candidates, max(1, 16 // args.candidates)
    judged = pipe.upsamplers[:pipe.judged_after(k)]
    detector = Detector()
    emb, imgs, right = [], [], []
    start_t = time.perf_counter()
    for start in tqdm(range(0, len(caps), per_call), desc="object candidates", unit="chunk"):
        chunk = list(range(start, min(start + per_call, len(caps))))
        # seed: eval index, and which object of the prompt (0 or 1)
        gens = repeat_generators([torch.Generator().manual_seed((args.first + owner[j]) * 2 + (j > 0 and owner[j - 1] == owner[j]))
                                  for j in chunk], k)
        rows = [caps[j] for j in chunk for _ in range(k)]
        z = pipe.image_embeds(rows, gens)
        x = cascade(judged, pipe.decode(z, rows, generator=gens), generator=gens)
        emb.append(judge_embedding(pipe.judge, x).float().cpu())
        u8 = to_output(x, "uint8")
        imgs.append(u8)
        right.extend(score(detector(im), parse_prompt(c))["all"] for im, c in zip(u8, rows))
    seconds = time.perf_counter() - start_t
    np.savez(args.out, first=args.first, captions=np.array(caps), owner=np.array(owner), prompts=np.array([it.prompt for it in items]),
             embeds=torch.cat(emb).view(len(caps), k, -1).numpy(), images=np.concatenate(imgs).reshape(len(caps), k, *imgs[0].shape[1:]),
             right=np.array(right, dtype=bool).reshape(len(caps), k), seconds=seconds, cpu=cpu_name(),
             dtype=str(pipe.dtype))
    print(f"{len(caps)} object captions x {k} candidates in {seconds:.0f} s ({cpu_name()}, {pipe.dtype}); "
          f"each right {np.mean(right):.3f}")


if __name__ == "__main__":
    main()
