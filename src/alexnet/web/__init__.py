"""``alexnet serve``: a local page that shows what a trained AlexNet sees (see docs/explorer.md).

The server (FastAPI on uvicorn) is an optional extra: ``pip install alexnet[web]``.
"""

from __future__ import annotations

import os
import sys

from ..errors import UserError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(paths: list[str], *, model_name: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          device: str = "cpu") -> None:
    """Serve the explorer for run folders, folders of runs, checkpoints or weight files (default: runs/)
    until Ctrl-C."""
    try:
        # deferred: the web extra is optional, and the rest of the package runs without it
        import uvicorn

        from .server import create_app, discover
    except ImportError as e:
        raise UserError(f"alexnet serve needs the web extra: pip install 'alexnet[web]' ({e})") from None
    if not paths and not os.path.isdir("runs"):
        raise UserError("no runs/ folder here: give run folders, checkpoints or weight files "
                        "(e.g. alexnet serve runs/NAME), or train one with `alexnet train`")
    runs = discover(paths or ["runs"], model_name=model_name)
    if not runs:
        raise UserError("no runs found: give run folders, checkpoints or weight files "
                        "(e.g. alexnet serve runs/NAME), or train one with `alexnet train`")
    if host not in LOOPBACK:
        print(f"alexnet: warning: serving on {host}: anyone who can reach this address can see your "
              "runs and use this machine's CPU; use --host 127.0.0.1 to keep it local", file=sys.stderr)
    app = create_app(runs, device=device)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    shown = f"[{host}]" if ":" in host else host
    print(f"alexnet explorer: {len(runs)} model(s); open http://{shown}:{port}/ (Ctrl-C stops)",
          file=sys.stderr)
    server.run()
