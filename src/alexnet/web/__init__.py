"""``alexnet serve``: a local page that shows what a trained AlexNet sees (see docs/explorer.md).

The server (FastAPI on uvicorn) is an optional extra: ``pip install alexnet[web]``.
"""

from __future__ import annotations

import argparse

from ..errors import UserError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(sub) -> None:
    """Register ``alexnet serve`` on the ``alexnet`` command's sub-parsers."""
    p = sub.add_parser(
        "serve", help="explorer page in the browser: predictions, layer maps, Grad-CAM, neighbours",
        description="Serve a local web page that shows what trained models see: top-5 classes, the "
                    "activation maps of every layer, a Grad-CAM heat map, the nearest training images in "
                    "fc7 space, training curves (live while a run trains) and a comparison of runs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="RUN_DIR_OR_WEIGHTS",
                   help="run folders, folders of runs, checkpoints or weight files (default: runs/)")
    p.add_argument("--model", help="model name for plain weight files (e.g. torchvision's alexnet-owt)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; anything but loopback exposes your runs to the network")
    p.add_argument("--port", type=int, default=8000, help="port")
    p.add_argument("--device", default="cpu", help="device for inference (cpu, cuda, mps)")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    try:
        import uvicorn

        from .server import create_app, discover
    except ImportError as e:
        raise UserError(f"alexnet serve needs the web extra: pip install 'alexnet[web]' ({e})") from None
    import os
    import sys

    if not args.paths and not os.path.isdir("runs"):
        raise UserError("no runs/ folder here: give run folders, checkpoints or weight files "
                        "(e.g. alexnet serve runs/NAME), or train one with `alexnet train`")
    runs = discover(args.paths or ["runs"], model_name=args.model)
    if not runs:
        raise UserError("no runs found: give run folders, checkpoints or weight files "
                        "(e.g. alexnet serve runs/NAME), or train one with `alexnet train`")
    if args.host not in LOOPBACK:
        print(f"alexnet: warning: serving on {args.host}: anyone who can reach this address can see your "
              "runs and use this machine's CPU; use --host 127.0.0.1 to keep it local", file=sys.stderr)
    app = create_app(runs, device=args.device)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"alexnet explorer: {len(runs)} model(s); open http://{shown}:{args.port}/ (Ctrl-C stops)",
          file=sys.stderr)
    server.run()
    return 0
