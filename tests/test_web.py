"""`unclip serve` in a real browser (headless Chromium driven by Playwright), with a tiny model:
every tab used as a person would, errors shown in the page, a screenshot of each tab.
Also the API endpoints through gradio_client, and the request limits without a browser."""

import numpy as np
import pytest
from PIL import Image

from unclip.data import shapes

from . import web_pages as web

pytest.importorskip("gradio")
pytest.importorskip("playwright")


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with web.served(tiny_model, tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for i, item in enumerate(shapes.eval_split(2)):
        path = folder / f"{i}.png"
        Image.fromarray(shapes.render(item.scene, 48)).save(path)
        paths.append(path)
    fake = folder / "notes.png"
    fake.write_text("this is a text file, not a picture")
    return paths, fake


@pytest.mark.browser
@pytest.mark.skipif(web.chromium_path() is None, reason="no Chromium (apt-get install chromium; make test does)")
def test_every_tab_in_a_real_browser(server, pictures, tmp_path):
    (a, b), fake = pictures
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with web.browser_page() as page:
        page.goto(server)
        sizes = web.generate(page, "a red circle on a white background\na blue square on a black background")
        assert sizes == [(32, 32), (32, 32)]  # the tiny model's output size
        page.screenshot(path=shots / "generate.png", full_page=True)

        page.fill("#prompts textarea", "   ")
        page.click("#generate-button")
        web.error_shown(page, "type a prompt")  # an error as a message in the page

        assert web.vary(page, a) == [(32, 32)] * 4
        assert "PSNR" in page.input_value("#vary-psnr textarea")
        page.screenshot(path=shots / "vary.png", full_page=True)

        assert web.interpolate(page, a, b) == [(32, 32)] * 5
        page.screenshot(path=shots / "interpolate.png", full_page=True)

        assert web.edit(page, a, "a blue circle") == [(32, 32)] * 5
        page.screenshot(path=shots / "edit.png", full_page=True)

        assert web.inpaint(page, a, "a red circle above a blue square") == [(32, 32)] * 4
        page.screenshot(path=shots / "inpaint.png", full_page=True)

        web.open_tab(page, "Vary")
        web.upload(page, "vary-image", fake)
        page.click("#vary-button")
        web.error_shown(page, "not an image")

        web.open_tab(page, "About the model")
        page.get_by_text("colours:").wait_for()
        page.screenshot(path=shots / "about.png", full_page=True)
        # the server is still up after the errors
        assert web.generate(page, "a green star") == [(32, 32)]
    assert all((shots / f"{t}.png").stat().st_size > 1000
               for t in ("generate", "vary", "interpolate", "edit", "inpaint", "about"))


def test_api_endpoints_with_gradio_client(server, pictures):
    from gradio_client import Client, handle_file

    (a, b), _ = pictures
    client = Client(server, verbose=False)
    out = client.predict("a red circle", api_name="/generate")  # every other parameter has a default
    assert len(out) == 1 and Image.open(out[0]["image"]).size == (32, 32)
    rec, psnr, gallery = client.predict(handle_file(str(a)), num_images=2, steps=5, api_name="/vary")
    assert "PSNR" in psnr and len(gallery) == 2
    strip, gif, frames = client.predict(handle_file(str(a)), handle_file(str(b)), frames=3, steps=3,
                                        api_name="/interpolate")
    assert len(frames) == 3
    strip, gif, frames = client.predict(handle_file(str(a)), "a blue circle", steps=3, api_name="/edit")
    assert len(frames) == 5
    mask = a.parent / "mask.png"
    Image.fromarray(np.where(np.arange(48)[:, None] < 24, 255, 0).astype(np.uint8).repeat(48, 1)).save(mask)
    strip, results = client.predict(handle_file(str(a)), handle_file(str(mask)), "a red circle", num_images=2,
                                    api_name="/inpaint")
    assert len(results) == 2 and Image.open(results[0]["image"]).size == (32, 32)
    from unclip.data.transforms import resize_center_crop

    kept = np.asarray(Image.open(results[0]["image"]))[17:]  # below the mask's edge row
    assert np.array_equal(kept, np.asarray(resize_center_crop(Image.open(a).convert("RGB"), 32))[17:])
    with pytest.raises(Exception, match="mask is empty"):
        Image.new("L", (8, 8), 0).save(a.parent / "black.png")
        client.predict(handle_file(str(a)), handle_file(str(a.parent / "black.png")), "a red circle",
                       api_name="/inpaint")
    with pytest.raises(Exception, match="at most 16"):
        client.predict("a red circle", num_images=17, api_name="/generate")


def test_jobs_enforce_the_limits(tiny_model, tmp_path):
    from unclip import load_pipeline
    from unclip.web.jobs import Jobs, Limits

    jobs = Jobs(load_pipeline(tiny_model), tmp_path, Limits(upload_mb=0.01, upload_pixels=64 * 64))
    for prompts, word in (("x" * 301, "longer than"), ("\n".join(["a"] * 9), "at most 8"), ("", "type a prompt")):
        with pytest.raises(ValueError, match=word):
            jobs.generate(prompts)
    with pytest.raises(ValueError, match="steps"):
        jobs.generate("a red circle", decoder_steps=5000)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(big)
    with pytest.raises(ValueError, match="pixels"):
        jobs.vary(str(big))
    heavy = tmp_path / "heavy.bmp"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 60, 3), dtype=np.uint8)).save(heavy)
    with pytest.raises(ValueError, match="MB"):
        jobs.vary(str(heavy))
    out = jobs.generate("a red circle", num_images=2, seed=3, decoder_steps=2)
    assert [c for _, c in out] == ["a red circle (seed 3)", "a red circle (seed 4)"]
    assert all(str(p).startswith(str(tmp_path)) for p, _ in out)  # files only in the app's own folder


def test_generated_pngs_carry_their_settings(tiny_model, tmp_path):
    import json

    from unclip import load_pipeline
    from unclip.web.jobs import Jobs

    jobs = Jobs(load_pipeline(tiny_model), tmp_path)
    (path, _), = jobs.generate("a red circle", seed=5, decoder_steps=2, decoder_guidance=2.5)
    settings = json.loads(Image.open(path).text["unclip"])
    assert settings == {"prompt": "a red circle", "seed": 5, "decoder_guidance_scale": 2.5,
                        "decoder_num_inference_steps": 2}
