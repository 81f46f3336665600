"""Every `unclip eval` prints a readable table and, as its last line, one JSON object."""

from __future__ import annotations

import json


def flatten(figures: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in figures.items():
        name = f"{prefix}{key}"
        rows += flatten(value, name + " / ") if isinstance(value, dict) else [(name, value)]
    return rows


def _format(value) -> str:
    if not isinstance(value, float):
        return str(value)
    return f"{value:.3g}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"  # small shares, e.g. speckle


def print_report(title: str, figures: dict) -> None:
    rows = flatten(figures)
    width = max([len(name) for name, _ in rows] + [len(title)])
    print(title)
    print("-" * (width + 12))
    for name, value in rows:
        shown = _format(value)
        print(f"{name:<{width}}  {shown:>10}")
    print("-" * (width + 12))
    print(json.dumps(figures))
