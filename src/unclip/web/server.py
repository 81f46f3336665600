"""`unclip serve`: the page (unclip.web.app) mounted in a FastAPI app of our own, so that the
server can add what gradio's `launch` has not: /healthz and /metrics without a login, failed
logins slowed down per client, and the refusal to be reachable from other machines without a
login (unclip.web.auth). Run by uvicorn, one process per device.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from unclip.web.app import build_app
from unclip.web.auth import LoginLimiter, check_exposure
from unclip.web.batching import ModelLine, model_thread
from unclip.web.jobs import Limits
from unclip.web.metrics import Metrics

log = logging.getLogger("unclip.web.app")


def make_server(pipe, path, creds: list | None = None, limits: Limits | None = None,
                batch_size: int = 8, batch_wait: float | None = None, login_attempts: int = 5, thread=None):
    """(the FastAPI app, the jobs): the page at /, /healthz and /metrics beside it; the model
    computes on `thread` (the one it was loaded on; batching.model_thread)."""
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    metrics = Metrics()
    metrics.describe(str(path), str(pipe.device), str(pipe.dtype).removeprefix("torch."))
    line = ModelLine(pipe, max_images=batch_size, wait=batch_wait, on_batch=metrics.batch,
                     on_compute=metrics.model_seconds.inc, on_drawn=metrics.drawn.inc, thread=thread)
    limits = limits or Limits()
    blocks, jobs = build_app(pipe, path, limits, line=line, metrics=metrics)
    metrics.watch_queue(lambda: (len(blocks._queue) if blocks._queue else 0) + line.waiting())

    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @api.get("/healthz")
    def healthz():
        """Answers once the model is loaded (it is loaded before the server starts)."""
        return JSONResponse({"status": "ok", "model_loaded": True, "device": str(pipe.device),
                             "dtype": str(pipe.dtype).removeprefix("torch."), "waiting": line.waiting()})

    @api.get("/metrics")
    def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    api.middleware("http")(LoginLimiter(login_attempts).middleware(metrics.login_failures.inc))
    app = gr.mount_gradio_app(api, blocks, path="/", auth=creds or None, allowed_paths=[str(jobs.folder)],
                              max_file_size=f"{limits.upload_mb:g}mb", show_error=False, run_history=False,
                              auth_message="unclip: log in with the credentials the server was started with")
    return app, jobs


def warm_up(pipe, thread) -> float | None:
    """Draw one image on the model's `thread` if its networks are compiled, so that they compile
    now rather than during the first person's request (minutes on a GPU with an empty cache);
    the seconds it took, or None when there was nothing to compile."""
    if not pipe.compiled_with:
        return None
    import torch

    print(f"unclip serve: compiling the model's networks ({pipe.compiled_with}) with one image before serving; "
          "cached for the next start", flush=True)
    start = time.monotonic()
    thread.submit(lambda: pipe(["warm-up"], generator=[torch.Generator().manual_seed(0)], output_type="uint8")).result()
    took = time.monotonic() - start
    print(f"unclip serve: compiled in {took:.0f} s", flush=True)
    return took


def serve(model=None, host: str = "127.0.0.1", port: int = 7860, image_encoder=None, limits: Limits | None = None,
          device: str | None = "auto", dtype: str = "auto", prior_model=None, compile: str | bool = "auto",
          offload: str | None = None, creds: list | None = None, no_auth: bool = False,
          batch_size: int = 8, batch_wait: float | None = None):
    """Check who may reach the server, load the model once (on `device`, in `dtype`, compiled
    as `compile` says, unclip.runtime.compiled; offloaded as `offload` says) and serve until
    interrupted."""
    import uvicorn

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves this machine
    reach = check_exposure(host, creds or [], no_auth)  # before minutes of loading
    if batch_size < 1 or (batch_wait is not None and batch_wait < 0):
        raise ValueError(f"--batch-size must be at least 1 and --batch-wait at least 0 (got {batch_size}, {batch_wait})")
    log.setLevel(logging.INFO)  # each request's outcome, time and batch, for whoever runs the server
    from unclip.pipelines.locate import resolve_model
    from unclip.pipelines.registry import load_pipeline

    path = resolve_model(model)
    thread = model_thread()  # torch runs on this thread alone (batching: one OpenMP team)
    pipe = thread.submit(lambda: load_pipeline(
        path, torch_dtype=dtype, image_encoder=image_encoder, device=device, prior_model=prior_model, compile=compile,
        offload=offload, job_images=None)).result()  # a server has no end: --compile auto compiles on a GPU
    if not pipe.capabilities.inversion:  # every tab but one edits through the CLIP latent
        raise ValueError(f"{path} is a {pipe.title}; the web app serves unCLIP and Karlo models "
                         "(use `unclip generate --model ...` for it)")
    warm_up(pipe, thread)
    app, _ = make_server(pipe, path, creds, limits, batch_size, batch_wait, thread=thread)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise OSError(f"the server could not start on {host}:{port} (is the port in use?)")
        time.sleep(0.05)
    print(f"unclip serve: http://{host}:{port} bound to {host} ({reach}); model {path}; "
          f"batches of up to {batch_size} images; /healthz and /metrics beside the page", flush=True)
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(10)
