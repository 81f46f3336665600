"""Run in its own process by tests/test_compile_shapes.py: a compiled pipeline's calls at several
batch sizes, and what dynamo and inductor did (JSON on the last line of stdout)."""

import json
import sys

import torch


def main(model: str) -> None:
    from torch._dynamo.utils import counters

    from unclip import load_pipeline

    pipe = load_pipeline(model, torch_dtype="float32", compile="on")
    graphs = []
    for prompts in (["a red circle", "a blue square", "a green star"], ["a red star"] * 5, ["a blue circle"] * 2):
        gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
        pipe(prompts, generator=gens, rerank=4, rerank_threshold=0.99, decoder_num_inference_steps=2,
             prior_num_inference_steps=2, super_res_num_inference_steps=2, output_type="uint8")
        graphs.append(counters["stats"]["unique_graphs"])
    print(json.dumps({"graphs_after_each_call": graphs, "networks": len(pipe.sampled_networks()),
                      "fxgraph_cache_hit": counters["inductor"]["fxgraph_cache_hit"],
                      "fxgraph_cache_miss": counters["inductor"]["fxgraph_cache_miss"]}))


if __name__ == "__main__":
    main(sys.argv[1])
