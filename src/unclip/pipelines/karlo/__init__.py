"""Karlo (Kakao Brain's pretrained unCLIP) from its diffusers folders: loading and sampling."""

from unclip.pipelines.karlo.folder import TEXT_TO_IMAGE, VARIATIONS, folder_kind
from unclip.pipelines.karlo.pipeline import KarloPipeline

__all__ = ["TEXT_TO_IMAGE", "VARIATIONS", "KarloPipeline", "folder_kind"]
