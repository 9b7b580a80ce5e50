"""``alexnet serve``: the explorer's flags; the server is :mod:`alexnet.web`."""

from __future__ import annotations

import argparse

from ..web import serve
from .flags import add_device


def add_serve_parser(sub) -> None:
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
    add_device(p, default="cpu")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    serve(args.paths, model_name=args.model, host=args.host, port=args.port, device=args.device)
    return 0
