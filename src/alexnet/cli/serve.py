"""``alexnet serve``: the explorer's flags; the server is :mod:`alexnet.web`."""

from __future__ import annotations

import argparse
import ipaddress
import re

from ..web import serve
from .flags import add_device, bounded_int

# A host name: labels of letters, digits, "-" and "_" (container names have them) joined by dots.
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free port) to 65535."""
    value = bounded_int(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535 (0: any free one), got {value}")
    return value


def host(text: str) -> str:
    """An argparse type: an IPv4 or IPv6 address (brackets allowed) or a host name."""
    name = text.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    if len(name) > 253 or not _HOST_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"expected an address (127.0.0.1, ::1, 0.0.0.0) or a host name, "
                                         f"got {text!r}")
    return name


def allowed_host(text: str) -> str:
    return "*" if text.strip() == "*" else host(text)


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
    p.add_argument("--data", metavar="SPEC",
                   help="the dataset whose images (test set, nearest neighbours) weights files and "
                        "checkpoints show; a run shows its own; a file's metadata never chooses one")
    p.add_argument("--host", type=host, default="127.0.0.1",
                   help="address to bind; anything but loopback exposes your runs to the network")
    p.add_argument("--port", type=port, default=8000, help="port (0: any free one)")
    p.add_argument("--allow-host", type=allowed_host, action="append", default=[], metavar="NAME",
                   help="answer requests for this host name too (repeatable; * for any): the server "
                        "refuses names other than its address and localhost, against DNS rebinding")
    add_device(p, default="cpu")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    serve(args.paths, model_name=args.model, host=args.host, port=args.port, device=args.device,
          allow_hosts=tuple(args.allow_host), data=args.data)
    return 0
