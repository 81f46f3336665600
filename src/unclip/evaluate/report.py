"""Every `unclip eval` prints a readable table and, as its last line, one JSON object."""

from __future__ import annotations

import json


def flatten(figures: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in figures.items():
        name = f"{prefix}{key}"
        rows += flatten(value, name + " / ") if isinstance(value, dict) else [(name, value)]
    return rows


def print_report(title: str, figures: dict) -> None:
    rows = flatten(figures)
    width = max([len(name) for name, _ in rows] + [len(title)])
    print(title)
    print("-" * (width + 12))
    for name, value in rows:
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{name:<{width}}  {shown:>10}")
    print("-" * (width + 12))
    print(json.dumps(figures))
