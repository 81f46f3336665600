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
    from unclip.web.auth import credentials
    from unclip.web.server import serve

    check_device(args)
    creds = credentials(args.auth, args.auth_file)
    serve(args.model, args.host, args.port, image_encoder=args.image_encoder, device=args.device, dtype=args.dtype,
          compile=args.compile, prior_model=args.prior_model, offload=args.offload, creds=creds,
          no_auth=args.no_auth, batch_size=args.batch_size, batch_wait=args.batch_wait)


def add_serve(sub) -> dict:
    w = sub.add_parser("serve", help="a web page for every job, on one loaded model",
                       description="Serve a gradio page (and its API: /generate, /vary, /interpolate, /edit, /inpaint) "
                       "with the model loaded once. Binds to 127.0.0.1 unless told otherwise; bound beyond it, a login is "
                       "required. /healthz and /metrics (Prometheus) answer without one.")
    w.add_argument("--model", help=MODEL_HELP)
    w.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    w.add_argument("--port", type=int, default=7860)
    w.add_argument("--auth", action="append", metavar="USER:PASSWORD", help="a login (repeat for more users); "
                   "also --auth-file or the UNCLIP_SERVE_AUTH environment variable (USER:PASSWORD[,...])")
    w.add_argument("--auth-file", metavar="FILE", help="logins, one USER:PASSWORD per line")
    w.add_argument("--no-auth", action="store_true", help="serve beyond this machine without a login "
                   "(anyone who can reach the port may use it)")
    w.add_argument("--batch-size", type=int, default=8, help="images drawn in one pipeline call: generate requests "
                   "with the same settings share a call up to this many images (1: one request at a time; default 8)")
    w.add_argument("--batch-wait", type=float, default=None, help="seconds a generate request waits for others to "
                   "share its call (default: while others share the server, until the batch is full, at most 10%% of the last "
                   "call's time and 2 s; a lone user never waits; 0: only those already waiting)")
    image_encoder_flag(w)
    prior_model_flag(w)
    compute_flags(w)
    return {"serve": cmd_serve}
