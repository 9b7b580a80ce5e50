"""``alexnet serve``: a local page that shows what a trained AlexNet sees (see docs/explorer.md).

The server (FastAPI on uvicorn) is an optional extra: ``pip install alexnet[web]``.
"""

from __future__ import annotations

import errno
import os
import socket
import sys

from ..data import parse_spec
from ..errors import UserError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def netloc(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` (0: a free port), as uvicorn binds one; a one-line error when
    the address cannot be had (unknown name, port in use, a port below 1024 without the right)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        hint = " (another server has it; --port 0 picks a free port)" if e.errno == errno.EADDRINUSE else ""
        raise UserError(f"cannot listen on {netloc(host, port)}: {e.strerror or e}{hint}") from None
    return sock


def serve(paths: list[str], *, model_name: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          device: str = "cpu", allow_hosts: tuple[str, ...] = (), data: str | None = None) -> None:
    """Serve the explorer for run folders, folders of runs, checkpoints or weight files (default: runs/)
    until Ctrl-C. ``allow_hosts``: more names the server answers for (see :class:`.server.HostCheck`);
    ``data``: the dataset of weights files and checkpoints (a file's own metadata never chooses one)."""
    try:
        # deferred: the web extra is optional, and the rest of the package runs without it
        import uvicorn

        from .server import create_app, discover
    except ImportError as e:
        raise UserError(f"alexnet serve needs the web extra: pip install 'alexnet[web]' ({e})") from None
    if not paths and not os.path.isdir("runs"):
        raise UserError("no runs/ folder here: give run folders, checkpoints or weight files "
                        "(e.g. alexnet serve runs/NAME), or train one with `alexnet train`")
    if data is not None:
        parse_spec(data)  # a typo is a one-line error now, not a missing image later
    runs = discover(paths or ["runs"], model_name=model_name, data=data)
    if not runs:
        raise UserError("no runs found: give run folders, checkpoints or weight files "
                        "(e.g. alexnet serve runs/NAME), or train one with `alexnet train`")
    app = create_app(runs, device=device, host=host, allow_hosts=allow_hosts)
    sock = listen(host, port)
    try:
        port = sock.getsockname()[1]
        if host not in LOOPBACK:
            print(f"alexnet: warning: serving on {host}: anyone who can reach this address can see your "
                  "runs and use this machine's CPU; use --host 127.0.0.1 to keep it local", file=sys.stderr)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # a wildcard is not an address to open
        print(f"alexnet explorer: {len(runs)} model(s); open http://{netloc(local, port)}/ (Ctrl-C stops)",
              file=sys.stderr)
        server.run(sockets=[sock])
    finally:
        sock.close()
