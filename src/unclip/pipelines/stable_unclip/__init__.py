"""Stable unCLIP (Stability AI's StableUnCLIPImg2ImgPipeline folders): loading (folder.py), sampling
exactly as diffusers (pipeline.py, stages.py), random folders for tests (synthetic.py)."""

from unclip.pipelines.stable_unclip.folder import IMG2IMG
from unclip.pipelines.stable_unclip.pipeline import StableUnclipPipeline

__all__ = ["IMG2IMG", "StableUnclipPipeline"]
