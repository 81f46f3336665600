"""Where unclip keeps what it measures or derives once per machine: $UNCLIP_CACHE, default
~/.cache/unclip (the precision probe's answer, PCA fits, compiled kernels)."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache(name: str = "") -> Path:
    """$UNCLIP_CACHE/name (read each call, so that a test or a user can point it elsewhere)."""
    root = Path(os.environ.get("UNCLIP_CACHE") or Path.home() / ".cache" / "unclip")
    return root / name if name else root
