"""Driving `unclip serve` in a real browser as a person would, for the browser tests and for the
README's screenshots (docs/web/shoot.py): Playwright with Debian's Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

TIMEOUT_MS = 120_000


def chromium_path() -> str | None:
    return os.environ.get("UNCLIP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(model: str | None, log_path: Path, args: tuple = (), env: dict | None = None):
    """`unclip serve` on a free local port (with more `args`, and `env` added to its environment);
    yields its URL and stops it afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "unclip", "serve", "--port", str(port), *args] + (["--model", str(model)] if model else [])
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "2", **(env or {})}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.time() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"unclip serve exited: {Path(log_path).read_text()[-2000:]}")
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError("unclip serve did not answer within 120 s") from None
                    time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def browser_page(width: int = 1280, height: int = 900):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def image_sizes(page, selector: str) -> list[tuple[int, int]]:
    """Natural sizes of the loaded images under `selector`."""
    sizes = page.eval_on_selector_all(selector, "els => els.filter(e => e.complete && e.naturalWidth)"
                                                ".map(e => [e.naturalWidth, e.naturalHeight])")
    return [tuple(s) for s in sizes]


def sources(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.src)")


def wait_images(page, selector: str, count: int, old: list[str] = ()) -> list[tuple[int, int]]:
    """Wait for exactly `count` loaded images, none of them one of `old` (an earlier result)."""
    page.wait_for_function(
        """([sel, n, old]) => { const els = [...document.querySelectorAll(sel)];
            return els.length === n && els.every(e => e.complete && e.naturalWidth && !old.includes(e.src)); }""",
        arg=[selector, count, list(old)], timeout=TIMEOUT_MS)
    return image_sizes(page, selector)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def generate(page, prompts: str) -> list[tuple[int, int]]:
    open_tab(page, "Generate")
    old = sources(page, "#generate-gallery img")
    page.fill("#prompts textarea", prompts)
    page.click("#generate-button")
    n = len([p for p in prompts.splitlines() if p.strip()])
    return wait_images(page, "#generate-gallery img", n, old)


def upload(page, component_id: str, path: Path) -> None:
    """Upload `path`, first removing a file uploaded there before (as a person clicks the x)."""
    if page.locator(f"#{component_id} input[type=file]").count() == 0:
        page.locator(f"#{component_id} button[aria-label='Clear']").first.click()
    page.set_input_files(f"#{component_id} input[type=file]", str(path))


def run_tab(page, tab: str, prefix: str, uploads: dict, count: int, fills: dict | None = None) -> list[tuple[int, int]]:
    """Open a tab, upload {component id: file}, type {component id: text}, press its button and
    wait for `count` new images in its gallery; their sizes."""
    open_tab(page, tab)
    for component, path in uploads.items():
        upload(page, component, path)
    for component, text in (fills or {}).items():
        page.fill(f"#{component} textarea", text)
    page.click(f"#{prefix}-button")
    return wait_images(page, f"#{prefix}-gallery img", count)


def vary(page, image: Path, count: int = 4) -> list[tuple[int, int]]:
    return run_tab(page, "Vary", "vary", {"vary-image": image}, count)


def interpolate(page, a: Path, b: Path, frames: int = 5) -> list[tuple[int, int]]:
    return run_tab(page, "Interpolate", "interp", {"interp-a": a, "interp-b": b}, frames)


def edit(page, image: Path, to: str, frames: int = 5) -> list[tuple[int, int]]:
    return run_tab(page, "Edit", "edit", {"edit-image": image}, frames, {"edit-to": to})


def error_shown(page, text: str) -> None:
    """Wait for an error message containing `text` in the page (gradio's toast)."""
    page.get_by_text(text).first.wait_for(timeout=TIMEOUT_MS)


def inpaint(page, image: Path, caption: str, count: int = 4) -> list[tuple[int, int]]:
    """Upload `image` into the Inpaint tab's editor, paint over its upper half with the brush,
    type the caption, press Inpaint and wait for `count` results."""
    open_tab(page, "Inpaint")
    old = sources(page, "#inpaint-gallery img")
    page.set_input_files("#inpaint-editor input[type=file]", str(image))
    canvas = page.locator("#inpaint-editor canvas").first
    canvas.wait_for()
    page.get_by_role("button", name="Brush", exact=True).click()
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.3
    for dy in range(-40, 41, 10):  # strokes across the upper part of the picture
        page.mouse.move(cx - 50, cy + dy)
        page.mouse.down()
        page.mouse.move(cx + 50, cy + dy, steps=8)
        page.mouse.up()
    page.fill("#inpaint-caption textarea", caption)
    page.click("#inpaint-button")
    return wait_images(page, "#inpaint-gallery img", count, old)


def login(page, user: str, password: str) -> None:
    """Fill gradio's login form and press Login (the page reloads into the app when accepted)."""
    page.fill("input[data-testid=textbox]", user)
    page.fill("input[data-testid=password]", password)
    page.get_by_role("button", name="Login").click()
