"""The README's screenshots of `unclip serve`: the shipped model, driven in headless Chromium
as a person would use it (the browser tests' own steps, tests/web_pages.py).

    python docs/web/shoot.py [--out docs/web]
"""

import argparse
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests import web_pages as web  # noqa: E402
from unclip.data import shapes  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(ROOT / "docs" / "web"))
    p.add_argument("--model", default=None)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    items = shapes.eval_split(4)
    pics = []
    for i, it in enumerate(items[:2]):
        path = out / f"input{i}.png"
        Image.fromarray(shapes.render(it.scene, 128)).save(path)
        pics.append(path)
    with web.served(args.model, out / "serve.log", args=("--auth", "demo:demo")) as url, \
            web.browser_page(1280, 1000) as page:
        def shot(name: str) -> None:  # after Gradio's fade-in of new outputs
            page.wait_for_timeout(1500)
            page.screenshot(path=out / name, full_page=True)

        page.goto(url)
        page.get_by_role("button", name="Login").wait_for()
        shot("login.png")
        web.login(page, "demo", "demo")
        web.generate(page, "a large red circle on the left on a white background\n"
                           "a blue square above a green star on a black background\n"
                           "a small yellow triangle at the top on a black background\n"
                           "a purple star to the right of an orange circle on a white background")
        shot("generate.png")
        web.vary(page, pics[0])
        shot("vary.png")
        web.interpolate(page, pics[0], pics[1])
        shot("interpolate.png")
        web.edit(page, pics[0], "a blue square")
        shot("edit.png")
        web.inpaint(page, pics[1], "a orange triangle below a purple circle on a black background")
        shot("inpaint.png")
        web.open_tab(page, "About the model")
        page.get_by_text("colours:").wait_for()
        shot("about.png")
    for f in [*pics, out / "serve.log"]:
        f.unlink()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
