"""`compile=` / `--compile`: compiled sampling draws the images eager sampling draws, and a
compile cache left by another model or damaged on disk is rebuilt, not trusted."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from unclip.pipelines.registry import load_pipeline
from unclip.runtime.compiled import backend

from .test_generate import PROMPTS

pytestmark = pytest.mark.slow  # compiling takes tens of seconds on 2 cores

DRAW = """
import json, sys, torch
from unclip.pipelines.registry import load_pipeline
pipe = load_pipeline(sys.argv[1], torch_dtype=torch.float32, compile=sys.argv[2] == "on")  # exact: float32
if sys.argv[2] == "graphs":  # torch.compile's reduce-overhead mode: CUDA graphs on a GPU, "default" on a CPU
    pipe.compile(mode="reduce-overhead")
gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
images = pipe({prompts!r}, generator=gens, output_type="np").images
print(json.dumps(images.tolist()))
"""


def draw(model, compile: str, cache) -> np.ndarray:
    """The two prompts' images from a fresh process, compiled or not, with `cache` as inductor's cache."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", DRAW.format(prompts=PROMPTS), str(model), compile], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return np.array(json.loads(out.stdout.splitlines()[-1]))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Inductor's cache, filled by the first test and damaged by the second."""
    return tmp_path_factory.mktemp("inductor")


def test_compiled_sampling_draws_the_eager_images(tiny_model, cache):
    # in fresh processes: compiled graphs and their kernels stay out of the test process
    assert [n for n, _ in load_pipeline(tiny_model).sampled_networks()] == ["prior", "decoder", "upsampler1",
                                                                            "upsampler2"]
    eager = draw(tiny_model, "off", cache)
    assert np.abs(draw(tiny_model, "on", cache) - eager).max() < 1e-4
    assert any(f.is_file() for f in cache.rglob("*"))  # kernels kept for the next process
    assert np.abs(draw(tiny_model, "graphs", cache) - eager).max() < 1e-4


def test_a_compile_mode_torch_does_not_have_is_refused(tiny_model):
    pipe = load_pipeline(tiny_model)
    with pytest.raises(ValueError, match="mode must be one of default, reduce-overhead"):
        pipe.compile(mode="fastest")
    with pytest.raises(ValueError, match="not ONNX Runtime's"):
        pipe.compile("onnx", mode="reduce-overhead")
    assert pipe.compiled_with is None
    pipe.compile()  # torch.compile is lazy: this compiles nothing yet
    assert pipe.compiled_with == "inductor"  # what `unclip serve` warms up before it opens
    assert load_pipeline(tiny_model, compile="on").compiled_with == "inductor"


def test_a_stale_or_damaged_compile_cache_is_rebuilt(tiny_model, cache, tmp_path):
    from unclip.models.decoder import Decoder, DecoderConfig
    from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline

    from .conftest import D, randomize

    assert any(f.is_file() for f in cache.rglob("*"))  # the tiny model's kernels, from the test above
    # another model in the same folder layout: a wider decoder (its cached graph is stale), other weights
    pipe = DalleTwoPipeline.from_pretrained(tiny_model)
    torch.manual_seed(1)
    pipe.decoder = Decoder.from_config(DecoderConfig(image_size=8, block_out_channels=(32, 64), layers_per_block=1,
                                                     attention_head_dim=8, cross_attention_dim=32, sample_steps=3), D)
    randomize(pipe.decoder)
    pipe.save_pretrained(tmp_path / "model")
    for f in cache.rglob("*"):  # and every cached file damaged
        if f.is_file():
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    eager = draw(tmp_path / "model", "off", tmp_path / "unused")
    assert np.abs(draw(tmp_path / "model", "on", cache) - eager).max() < 1e-4
