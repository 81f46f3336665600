"""`unclip serve`: the web app."""

from __future__ import annotations

from unclip.cli.flags import (
    MODEL_HELP,
    check_device,
    compute_flags,
    image_encoder_flag,
    prior_model_flag,
)


def cmd_serve(args) -> None:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError("the web interface needs gradio: pip install 'unclip[web]'") from None
    from unclip.web.app import serve

    check_device(args)
    serve(args.model, args.host, args.port, image_encoder=args.image_encoder, device=args.device, dtype=args.dtype,
          compile=args.compile, prior_model=args.prior_model, offload=args.offload)


def add_serve(sub) -> dict:
    w = sub.add_parser("serve", help="a web page for every job, on one loaded model",
                       description="Serve a gradio page (and its API: /generate, /vary, /interpolate, /edit, /inpaint) "
                       "with the model loaded once. Binds to 127.0.0.1 unless told otherwise.")
    w.add_argument("--model", help=MODEL_HELP)
    w.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    w.add_argument("--port", type=int, default=7860)
    image_encoder_flag(w)
    prior_model_flag(w)
    compute_flags(w)
    return {"serve": cmd_serve}
