"""Kandinsky 2.2 (kandinsky-community's diffusers folders, and ECLIPSE's Kandinsky prior): loading
(folder.py), sampling exactly as diffusers (pipeline.py, stages.py), random folders for tests
(synthetic.py)."""

from unclip.pipelines.kandinsky.folder import DECODER, INPAINT, PRIOR, folder_kind
from unclip.pipelines.kandinsky.pipeline import KandinskyPipeline

__all__ = ["DECODER", "INPAINT", "PRIOR", "KandinskyPipeline", "folder_kind"]
