"""Pictures people would rather look at than read: loss curves, line charts and captioned image grids,
drawn with Pillow alone (no plotting dependency)."""

from __future__ import annotations

import math
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


COLOURS = [(40, 90, 230), (230, 40, 40), (30, 150, 60), (200, 120, 0), (130, 60, 180)]


def line_chart(series: dict[str, tuple[list[float], list[float]]], title: str, *, log_y: bool = False,
               xlabel: str = "", width=640, height=360, markers: bool = False) -> Image.Image:
    """Lines of y against x, one per named series (a legend when there are several)."""
    img = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(img), _font()
    left, right, top, bottom = 60, width - 15, 30, height - 35
    draw.text((left, 8), title, fill="black", font=font)
    draw.rectangle([left, top, right, bottom], outline="black")
    pts = {k: [(x, y) for x, y in zip(*v) if math.isfinite(y) and (y > 0 or not log_y)] for k, v in series.items()}
    every = [p for v in pts.values() for p in v]
    if len(every) < 2:
        return img
    xs = np.array([p[0] for p in every], float)
    ys = np.array([p[1] for p in every], float)
    yv = np.log10(ys) if log_y else ys
    x0, x1, y0, y1 = xs.min(), max(xs.max(), xs.min() + 1), yv.min(), yv.max()
    if y1 - y0 < 1e-9:  # a flat line: draw it in the middle of a small range
        y0, y1 = y0 - 0.01 * (abs(y0) or 1), y1 + 0.01 * (abs(y1) or 1)

    def px(x, y):
        y = math.log10(y) if log_y else y
        return (left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top))

    for frac in (0, 0.5, 1):  # axis labels at the ends and the middle
        yy = y0 + frac * (y1 - y0)
        draw.text((4, bottom - frac * (bottom - top) - 6), f"{10 ** yy if log_y else yy:.3g}", fill="black", font=font)
        xx = x0 + frac * (x1 - x0)
        draw.text((left + frac * (right - left) - 10, bottom + 6), f"{xx:.3g}", fill="black", font=font)
    draw.text((right - 6 * len(xlabel), bottom + 20), xlabel, fill="black", font=font)
    for i, (name, line) in enumerate(pts.items()):
        colour = COLOURS[i % len(COLOURS)]
        if len(line) > 1:
            draw.line([px(x, y) for x, y in line], fill=colour, width=2 if markers else 1)
        for x, y in line if markers else []:
            cx, cy = px(x, y)
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
        if len(series) > 1:
            draw.text((left + 8, top + 6 + 14 * i), name, fill=colour, font=font)
    return img


def loss_curve(steps: list[int], losses: list[float], title: str, width=640, height=360) -> Image.Image:
    """Loss against step, log-scaled when it spans a decade, with a smoothed line on top."""
    ys = np.array([v for v in losses if math.isfinite(v)], float)
    log_y = len(ys) > 1 and ys.min() > 0 and ys.max() / ys.min() > 10
    series = {"loss": (steps, losses)}
    if len(steps) > 20:
        k = max(len(steps) // 20, 2)
        series["smoothed"] = (steps[k - 1:], list(np.convolve(losses, np.ones(k) / k, mode="valid")))
    return line_chart(series, title, log_y=log_y, width=width, height=height)


def image_grid(images: np.ndarray, captions: list[str] | None = None, cols: int = 4,
               marks: list[bool] | None = None, label_lines: int = 3) -> Image.Image:
    """uint8 (N, H, W, 3) images in a grid, each with its caption below it and, if `marks`
    is given, a green tick or red cross in its corner. Images under 96 px are enlarged
    (nearest neighbour, so pixels stay visible as pixels)."""
    scale = max(1, 96 // images.shape[1])
    if scale > 1:
        images = np.stack([np.asarray(Image.fromarray(im).resize((im.shape[1] * scale, im.shape[0] * scale),
                                                                Image.NEAREST)) for im in images])
    n, h, w = len(images), images.shape[1], images.shape[2]
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    cell_w = max(w, 160)
    font = _font(11)
    text_h = 13 * label_lines if captions else 0
    grid = Image.new("RGB", (cols * (cell_w + 8) + 8, rows * (h + text_h + 8) + 8), "white")
    draw = ImageDraw.Draw(grid)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        x, y = 8 + c * (cell_w + 8) + (cell_w - w) // 2, 8 + r * (h + text_h + 8)
        grid.paste(Image.fromarray(im), (x, y))
        if captions:
            lines = textwrap.wrap(captions[i], width=cell_w // 6)[:label_lines]
            for j, line in enumerate(lines):
                draw.text((8 + c * (cell_w + 8), y + h + 1 + 13 * j), line, fill="black", font=font)
        if marks is not None:
            colour = (40, 170, 60) if marks[i] else (230, 40, 40)
            draw.rectangle([x + w - 14, y, x + w, y + 14], fill=colour)
            draw.text((x + w - 11, y + 1), "v" if marks[i] else "x", fill="white", font=font)
    return grid
