"""`unclip serve`: a gradio page with one tab per job, all on one loaded model.

Every tab is also a named API endpoint (/generate, /vary, /interpolate, /edit, /inpaint) that
`gradio_client` can call; every parameter but the main inputs has a default, the same as the
command line's (`validate.DEFAULTS`). The model runs one call at a time (unclip.web.batching:
generate requests with the same settings share one); a queue shows each request its position;
errors appear in the page as a message. Uploads reach the jobs as the files gradio itself
stored; no path a client names is opened. The server around it: unclip.web.server.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from unclip import validate
from unclip.diffusion.sampling import STEP_BARS
from unclip.web.batching import ModelLine, Withdrawn, last_batch, leaving
from unclip.web.jobs import Jobs, Limits, describe
from unclip.web.metrics import Metrics, images_in

D = validate.DEFAULTS
WATCH = 0.5  # seconds between checks that a request's client is still connected
log = logging.getLogger(__name__)


def _client_connected():
    """A check that the client of the request handled in this context is still connected: gradio
    marks the request's event dead when the client's stream closes (a closed tab) but does not
    cancel it. gradio's internal state; where it is missing, the client counts as connected."""
    from gradio.context import LocalContext

    queue, event_id = getattr(LocalContext.blocks.get(None), "_queue", None), LocalContext.event_id.get(None)

    def connected() -> bool:
        for events in list(getattr(queue, "active_jobs", None) or []):
            for event in events or []:
                if getattr(event, "_id", None) == event_id:
                    return getattr(event, "alive", True)
        return True

    return connected


def _shown(fn, metrics: Metrics, line: ModelLine):
    """Run a job on a worker thread; its ValueErrors (and a request past its time limit) become
    messages in the page (gr.Error), never tracebacks. When gradio cancels the request (its
    client cancelled or left), the job is withdrawn from `line` unless the model already drew
    it; so it is when its client disconnects (checked every WATCH seconds). Each request's
    outcome, time and batch go to the log and to `metrics`."""
    import asyncio
    import functools
    import time

    import anyio
    import gradio as gr

    job = fn.__name__.removesuffix("_files")

    async def watch_client(gone):
        connected = _client_connected()
        while connected():
            await asyncio.sleep(WATCH)
        gone.set()
        line.wake()

    def work(*args, **kwargs):  # on the worker thread, where last_batch() is its request's
        result = fn(*args, **kwargs)
        return result, last_batch() if job == "generate" else None

    @functools.wraps(fn)
    async def run(*args, **kwargs):
        start = time.perf_counter()
        metrics.running.inc()
        gone = leaving()  # before the thread starts: it takes this context with it
        STEP_BARS.set(True)  # the sampling loops' bars become the request's progress in the page
        watch = asyncio.create_task(watch_client(gone))
        outcome, result = "error", None
        try:
            result, batch = await anyio.to_thread.run_sync(functools.partial(work, *args, **kwargs),
                                                           abandon_on_cancel=True)
            outcome = "ok"
        except (anyio.get_cancelled_exc_class(), Withdrawn) as e:
            gone.set()
            line.wake()
            outcome = "cancelled"
            log.info("job %s cancelled after %.1f s: its client left", job, time.perf_counter() - start)
            if isinstance(e, Withdrawn):  # the client disconnected: nobody reads the answer
                raise gr.Error(str(e)) from None
            raise
        except TimeoutError as e:
            outcome = "timeout"
            log.warning("job %s: past its time limit after %.1f s", job, time.perf_counter() - start)
            raise gr.Error(f"{e}; ask for fewer images or steps") from None
        except (ValueError, OSError) as e:
            outcome = "refused"
            log.info("job %s refused: %s", job, e)
            raise gr.Error(str(e)) from None
        finally:
            watch.cancel()
            seconds = time.perf_counter() - start
            metrics.running.dec()
            metrics.finished(job, outcome, seconds, images_in(result))
        shared = f" (batch of {batch[0]} requests, {batch[1]} images)" if batch else ""
        log.info("job %s done in %.1f s%s", job, seconds, shared)
        return result

    return run


def editor_parts(editor) -> tuple:
    """(image RGB, mask) from an ImageEditor value: its background, and every pixel painted on
    any layer (alpha > 0) as white."""
    import numpy as np

    if not editor or editor.get("background") is None:
        raise ValueError("upload an image, then paint over the region to repaint")
    background = np.asarray(editor["background"])
    painted = np.zeros(background.shape[:2], bool)
    for layer in editor.get("layers") or []:
        layer = np.asarray(layer)
        if layer.ndim == 3 and layer.shape[-1] == 4 and layer.shape[:2] == painted.shape:
            painted |= layer[..., 3] > 0
    if not painted.any():
        raise ValueError("paint over the region to repaint (white brush) first")
    return background[..., :3].astype(np.uint8), painted.astype(np.uint8) * 255


def build_app(pipe, model_path, limits: Limits | None = None, folder: str | Path | None = None,
              line: ModelLine | None = None, metrics: Metrics | None = None):
    """The page and its jobs on `pipe`. `line`: how requests share the model (default: batches of
    up to 8 images, no wait); `metrics`: where requests are counted."""
    import gradio as gr

    metrics = metrics or Metrics()
    line = line or ModelLine(pipe, on_batch=metrics.batch)
    jobs = Jobs(pipe, folder or tempfile.mkdtemp(prefix="unclip-web-"), limits, line)

    def shown(fn):
        return _shown(fn, metrics, line)
    model = pipe.sampling_defaults()
    takes = pipe.capabilities.settings

    def default(key: str, alias: str | None = None):
        """The model's own value of a setting (diffusers' name as `alias` where the family uses it)."""
        return model.get(key, model.get(alias))

    def image_input(label: str, elem_id: str):
        """An upload that only our own reader opens (so a bad file gets our message), and its preview."""
        file = gr.File(label=label, file_types=["image"], type="filepath", elem_id=elem_id, height=90)
        preview_image = gr.Image(label=f"{label}: preview", interactive=False, height=160,
                                 elem_id=f"{elem_id}-preview")
        def preview(path):
            return None if path is None else jobs.read_image(path)

        file.change(shown(preview), file, preview_image, api_name=False)
        return file

    def frame_outputs(prefix: str, strip_label: str):
        """A strip, an animation and the frames: what interpolations and edits show."""
        with gr.Row():
            strip = gr.Image(label=strip_label, elem_id=f"{prefix}-strip")
            gif = gr.Image(label="Animation", elem_id=f"{prefix}-gif")
        return strip, gif, gr.Gallery(label="Frames", columns=8, elem_id=f"{prefix}-gallery", format="png")

    def seed_and_steps():
        with gr.Row():
            return (gr.Number(D["seed"], label="Seed", precision=0, minimum=0),
                    gr.Number(D["steps"], label="DDIM steps", precision=0, minimum=1))

    def generate(prompts, num_images=D["num_images"], seed=D["seed"], prior_guidance=None, decoder_guidance=None,
                 prior_steps=None, decoder_steps=None, upsampler_steps=None, prior="diffusion",
                 progress=gr.Progress(track_tqdm=True)):
        return jobs.generate(prompts, num_images, seed, prior_guidance, decoder_guidance, prior_steps,
                             decoder_steps, upsampler_steps, prior)

    def vary(image, num_images=D["vary_num_images"], eta=D["eta"], seed=D["seed"], steps=D["steps"],
             progress=gr.Progress(track_tqdm=True)):
        return jobs.vary(image, num_images, eta, seed, steps)

    def interpolate(image_a, image_b, frames=D["frames"], latent=D["latent"], seed=D["seed"], steps=D["steps"],
                    progress=gr.Progress(track_tqdm=True)):
        return jobs.interpolate(image_a, image_b, frames, latent, seed, steps)

    def edit(image, to_caption, from_caption="", max_theta=D["max_theta"], frames=D["frames"], seed=D["seed"],
             steps=D["steps"], progress=gr.Progress(track_tqdm=True)):
        return jobs.edit(image, to_caption, from_caption, max_theta, frames, seed, steps)

    def inpaint(editor, caption, num_images=D["vary_num_images"], seed=D["seed"], resample=D["resample"],
                progress=gr.Progress(track_tqdm=True)):
        """The page's editor: the uploaded image is its background, what was painted its mask."""
        image, mask = editor_parts(editor)
        return jobs.inpaint(image, mask, caption, num_images, seed, resample)

    def inpaint_files(image, mask, caption, num_images=D["vary_num_images"], seed=D["seed"],
                      resample=D["resample"], progress=gr.Progress(track_tqdm=True)):
        """The API: an image file and a mask file (white = repaint, any size)."""
        return jobs.inpaint(image, mask, caption, num_images, seed, resample)

    with gr.Blocks(title="unclip") as app:
        gr.Markdown("# unclip\nText to image with CLIP latents (DALL-E 2), and what the latent allows: "
                    "variations, interpolations, text diffs, inpainting.")
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column():
                    prompts = gr.Textbox(label="Prompts (one per line)", lines=3, elem_id="prompts",
                                         placeholder="a large red circle on the left on a white background")
                    with gr.Row():
                        num = gr.Number(D["num_images"], label="Images per prompt", precision=0, minimum=1)
                        seed = gr.Number(D["seed"], label="Seed (image i gets seed + i)", precision=0, minimum=0)
                    with gr.Row():  # prefilled with the loaded model's own settings
                        pg = gr.Number(default("prior_guidance_scale"), label="Prior guidance", minimum=0)
                        dg = gr.Number(default("decoder_guidance_scale", "guidance_scale"), label="Decoder guidance",
                                       minimum=0)
                    with gr.Row():
                        ps = gr.Number(default("prior_num_inference_steps"), label="Prior steps", precision=0, minimum=1)
                        ds = gr.Number(default("decoder_num_inference_steps", "num_inference_steps"),
                                       label="Decoder steps", precision=0, minimum=1)
                        us = gr.Number(default("super_res_num_inference_steps"), label="Upsampler steps", precision=0,
                                       minimum=1, visible="super_res_num_inference_steps" in takes)
                    prior = gr.Radio(jobs.priors(), value=jobs.priors()[0], label="Prior")
                    go = gr.Button("Generate", variant="primary", elem_id="generate-button")
                gallery = gr.Gallery(label="Images", columns=4, elem_id="generate-gallery", format="png")
            go.click(shown(generate), [prompts, num, seed, pg, dg, ps, ds, us, prior], gallery, api_name="generate",
                     concurrency_limit=2 * line.max_images,  # the next batch waits in the line
                     concurrency_id="generate")
        with gr.Tab("Vary"):
            with gr.Row():
                with gr.Column():
                    v_img = image_input("Image", "vary-image")
                    with gr.Row():
                        v_num = gr.Number(D["vary_num_images"], label="Variations", precision=0, minimum=1)
                        v_eta = gr.Slider(0, 1, D["eta"], label="eta (0 reconstructs)")
                    v_seed, v_steps = seed_and_steps()
                    v_go = gr.Button("Vary", variant="primary", elem_id="vary-button")
                with gr.Column():
                    v_rec = gr.Image(label="Inversion's reconstruction (base size)", elem_id="vary-reconstruction",
                                     height=200)
                    v_psnr = gr.Textbox(label="Reconstruction", elem_id="vary-psnr")
                    v_gallery = gr.Gallery(label="Variations", columns=4, elem_id="vary-gallery", format="png")
            v_go.click(shown(vary), [v_img, v_num, v_eta, v_seed, v_steps], [v_rec, v_psnr, v_gallery], api_name="vary")
        with gr.Tab("Interpolate"):
            with gr.Row():
                with gr.Column():
                    i_a = image_input("First image", "interp-a")
                with gr.Column():
                    i_b = image_input("Second image", "interp-b")
            with gr.Row():
                i_frames = gr.Number(D["frames"], label="Frames (both ends included)", precision=0, minimum=2)
                i_latent = gr.Radio(["inverted", "fixed"], value=D["latent"], label="Decoder noise")
            i_seed, i_steps = seed_and_steps()
            i_go = gr.Button("Interpolate", variant="primary", elem_id="interp-button")
            i_out = frame_outputs("interp", "Strip")
            i_go.click(shown(interpolate), [i_a, i_b, i_frames, i_latent, i_seed, i_steps], list(i_out),
                       api_name="interpolate")
        with gr.Tab("Edit"):
            with gr.Row():
                with gr.Column():
                    e_img = image_input("Image", "edit-image")
                    e_from = gr.Textbox("", label="Its caption (optional)", elem_id="edit-from")
                    e_to = gr.Textbox(label="Target caption", elem_id="edit-to")
                    with gr.Row():
                        e_theta = gr.Slider(0, 1, D["max_theta"], label="Strength (largest theta)")
                        e_frames = gr.Number(D["frames"], label="Frames", precision=0, minimum=2)
                    e_seed, e_steps = seed_and_steps()
                    e_go = gr.Button("Edit", variant="primary", elem_id="edit-button")
            e_out = frame_outputs("edit", "From the original to the edit")
            e_go.click(shown(edit), [e_img, e_to, e_from, e_theta, e_frames, e_seed, e_steps], list(e_out),
                       api_name="edit")
        with gr.Tab("Inpaint"):
            with gr.Row():
                with gr.Column():
                    p_editor = gr.ImageEditor(label="Image: upload it, then paint over what to repaint", type="numpy",
                                              image_mode="RGBA", brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                                              layers=False, transforms=(), elem_id="inpaint-editor", height=360)
                    p_caption = gr.Textbox(label="Caption of the whole image after repainting", elem_id="inpaint-caption")
                    with gr.Row():
                        p_num = gr.Number(D["vary_num_images"], label="Images", precision=0, minimum=1)
                        p_seed = gr.Number(D["seed"], label="Seed", precision=0, minimum=0)
                        p_resample = gr.Number(D["resample"], label="Resample (RePaint)", precision=0, minimum=1)
                    p_go = gr.Button("Inpaint", variant="primary", elem_id="inpaint-button")
                with gr.Column():
                    p_strip = gr.Image(label="Input, mask, results", elem_id="inpaint-strip")
                    p_gallery = gr.Gallery(label="Results", columns=4, elem_id="inpaint-gallery", format="png")
            p_go.click(shown(inpaint), [p_editor, p_caption, p_num, p_seed, p_resample], [p_strip, p_gallery],
                       api_name=False)
            with gr.Row(visible=False):  # the API's inputs: files, where the page has its editor
                p_file, p_mask = (gr.File(type="filepath", file_types=["image"]) for _ in range(2))
                p_api = gr.Button(visible=False)
            p_api.click(shown(inpaint_files), [p_file, p_mask, p_caption, p_num, p_seed, p_resample],
                        [p_strip, p_gallery], api_name="inpaint")
        with gr.Tab("About the model"):
            gr.Markdown(describe(pipe, model_path), elem_id="about")
    app.queue(default_concurrency_limit=1, max_size=32)  # the rest wait, each told its position
    return app, jobs
