"""unclip's own DALL-E 2: one folder, one subfolder per component (pipeline.py); assemble.py
merges trained stages into such a folder."""

from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline

__all__ = ["DalleTwoPipeline"]
