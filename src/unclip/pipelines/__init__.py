"""Pipelines: the contract every model family keeps (base.py), what a folder is and which
family loads it (locate.py, registry.py), and one module or subpackage per family: dalle2/
(unclip's own), karlo/ (Karlo's diffusers folders), dalle1.py (DALL-E 1). Reranking and
inpainting run inside a pipeline's call, so their shared parts live here too."""
