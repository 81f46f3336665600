import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_clip_cfg(tmp_path):
    """The tiny CLIP stage config, writing into a temporary run folder."""
    from unclip.config import load
    from unclip.train.clip import ClipStageConfig

    def make(*overrides):
        return load(ClipStageConfig, TINY / "clip.yaml", [f"train.out_dir={tmp_path / 'run'}", *overrides])

    return make
