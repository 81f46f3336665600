"""Karlo (Kakao Brain's pretrained unCLIP) from its diffusers folders: loading and sampling."""

from .folder import TEXT_TO_IMAGE, VARIATIONS, folder_kind
from .pipeline import KarloPipeline

__all__ = ["TEXT_TO_IMAGE", "VARIATIONS", "KarloPipeline", "folder_kind"]
