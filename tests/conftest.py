import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

# The suite gives one answer on every machine: `--dtype auto` resolves as on a CPU without fast
# bf16 (float32), in this process and in the commands it starts, from a precision cache of its
# own (never the user's). Tests of the probe itself set its answer explicitly.
os.environ["UNCLIP_CACHE"] = tempfile.mkdtemp(prefix="unclip-test-cache-")
torch.set_num_threads(min(2, os.cpu_count() or 1))

from unclip.runtime import precision  # after UNCLIP_CACHE is set

_cpu = precision._cpu_key().rsplit("|", 1)[0]
precision.CACHE.write_text(json.dumps({f"{_cpu}|{n} threads": 1.0 for n in range(1, (os.cpu_count() or 1) + 1)}))

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny"
D, L = 16, 6  # tiny CLIP: embedding size, caption tokens (plus 2 specials)


@pytest.fixture
def tiny_clip_cfg(tmp_path):
    """The tiny CLIP stage config, writing into a temporary run folder."""
    from unclip.config import load
    from unclip.train.clip import ClipStageConfig

    def make(*overrides):
        return load(ClipStageConfig, TINY / "clip.yaml", [f"train.out_dir={tmp_path / 'run'}", *overrides])

    return make


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A folder with a random tiny CLIP (16 px images, D-dim embeddings)."""
    from unclip.data.stream import ShapesSource
    from unclip.models.clip import ClipConfig, ClipEncoder
    from unclip.models.tokenizer import train_tokenizer

    torch.manual_seed(0)
    tok = train_tokenizer(ShapesSource(16).captions(300), vocab_size=150, max_length=L + 2)
    cfg = ClipConfig(image_size=16, patch_size=4, vision_width=D, vision_layers=1, vision_heads=2,
                     text_width=D, text_layers=1, text_heads=2, max_length=L + 2, embed_dim=D)
    path = tmp_path_factory.mktemp("clip")
    ClipEncoder.from_config(cfg, tok).save_pretrained(path)
    return path


def randomize(module):
    """Random weights everywhere (diffusers zero-initialises output layers), so every input matters."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture(scope="session")
def tiny_model(tiny_clip, tmp_path_factory):
    """A folder with a whole random pipeline: both priors, 8 px base, two upsamplers to 32 px."""
    from unclip.models.clip import ClipEncoder
    from unclip.models.decoder import Decoder, DecoderConfig
    from unclip.models.prior import ARPrior, ARPriorConfig, DiffusionPrior, PriorConfig
    from unclip.models.upsampler import Upsampler, UpsamplerConfig
    from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline

    torch.manual_seed(0)
    clip = ClipEncoder.from_pretrained(tiny_clip)
    z = torch.nn.functional.normalize(torch.randn(200, D), dim=-1)  # fits the AR prior's codec
    ar = ARPrior.from_data(ARPriorConfig(width=16, num_layers=1, num_heads=2, buckets=16, max_rel_mse=0.5),
                           z, z.roll(1, 0), clip.max_length, D)
    prior = DiffusionPrior.from_config(PriorConfig(num_layers=1, num_heads=2, head_dim=8, sample_steps=3), D,
                                       clip.max_length)
    decoder = Decoder.from_config(DecoderConfig(image_size=8, block_out_channels=(32, 32), layers_per_block=1,
                                                attention_head_dim=8, cross_attention_dim=32, sample_steps=3), D)
    ups = [Upsampler.from_config(UpsamplerConfig(block_out_channels=(32, 32), layers_per_block=1, sample_steps=2,
                                                 degradation=d)) for d in ("blur", "bsr")]
    for m in (prior, decoder, *ups):
        randomize(m)
    path = tmp_path_factory.mktemp("model")
    DalleTwoPipeline(clip, prior, decoder, ups, ar.eval()).save_pretrained(path)
    return path


class Interrupt(Exception):
    """A crash in the middle of training (tests of exact resume)."""


def die_during_step(stage, step: int) -> None:
    """Make `stage`'s module raise Interrupt during its `step`-th forward call."""
    forward, calls = stage.module.forward, []

    def dying_forward(batch):
        calls.append(1)
        if len(calls) == step:
            raise Interrupt
        return forward(batch)

    stage.module.forward = dying_forward


def assert_exports_use_the_copy(stage, names: tuple[str, ...]) -> None:
    """A fine-tuning stage's previews and exports draw with the averaged copy's networks, every one
    of `names`: the copy lives on the CPU while training may have left the pipeline's towers on a GPU
    (a GPU run failed with tensors on cuda:0 and cpu)."""
    import copy

    copied = copy.deepcopy(stage.module)
    pipe = stage._export_pipe(copied)
    for name in names:
        assert getattr(pipe, name) is getattr(copied, name), name
