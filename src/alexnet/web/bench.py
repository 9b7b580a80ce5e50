"""Latency of one explorer prediction, end to end over HTTP: ``alexnet bench serve``.

For each model, a checkpoint (random weights: the time does not depend on them) is served by the
real app on 127.0.0.1; one request uploads a PNG and gets the top-5, the maps of every layer and the
Grad-CAM heat map back as JSON. The reference, measured in the same run on the same image, is the
bare forward pass of the model (``torch.no_grad``), so the ratio says what the explanation costs.
"""

from __future__ import annotations

import io
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

BUDGET_MS = {"alexnet-small": 300.0, "alexnet2012": 1500.0}


def _checkpoint(folder: Path, model_name: str) -> tuple[Path, bytes, torch.Tensor]:
    """A checkpoint of ``model_name`` with random weights, a PNG to send, and the model input it makes."""
    from ..data.transforms import Normalization, Preset
    from ..models import create_model
    from ..training.checkpoint import save_checkpoint
    from .server import gallery

    torch.manual_seed(0)
    if model_name == "alexnet-small":
        model = create_model(model_name, num_classes=10)
        preset = Preset(train=False, crop=28, base_size=28, norm=Normalization.per_channel([40.0], [80.0]))
        from ..data import build_source

        pixels = build_source("digits").split("test")[0][0][0].numpy()
        image = Image.fromarray(pixels, "L")
    else:
        model = create_model(model_name, num_classes=1000)
        preset = Preset(train=False, crop=227, base_size=256, norm=Normalization.torchvision())
        image = Image.open(gallery()["china.jpg"]).convert("RGB")
    classes = [str(i) for i in range(model.num_classes)]
    path = folder / f"{model_name}.pt"
    save_checkpoint(path, dict(model_name=model_name, num_classes=model.num_classes, model_options={},
                               model=model.state_dict(), preset=preset.to_dict(), classes=classes,
                               class_names=classes, data=None))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    from ..data.decode import resize_center_crop

    side = preset.base_size
    arr = np.array(resize_center_crop(image, side), dtype=np.uint8)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    x = preset(torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous())
    return path, buf.getvalue(), x


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def measure(model_name: str, repeat: int, warmup: int = 3) -> dict:
    """p50 / p90 of the HTTP prediction and of the bare forward pass, in milliseconds."""
    import httpx
    import uvicorn

    from ..models import create_model  # noqa: F401  (imported before timing starts)
    from .server import create_app, discover

    with tempfile.TemporaryDirectory() as tmp:
        ckpt, png, x = _checkpoint(Path(tmp), model_name)
        app = create_app(discover([str(ckpt)]))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            url = f"http://127.0.0.1:{port}/api/runs/{ckpt.stem}/predict?neighbours=0"
            http, layers = [], 0
            with httpx.Client(timeout=120) as client:
                for i in range(warmup + repeat):
                    t = time.perf_counter()
                    r = client.post(url, content=png, headers={"x-filename": "bench.png"})
                    dt = 1000 * (time.perf_counter() - t)
                    r.raise_for_status()
                    layers = len(r.json()["layers"])
                    if i >= warmup:
                        http.append(dt)
            model = app.state.entries[0].explainer().model
            forward = []
            with torch.no_grad():
                for i in range(warmup + repeat):
                    t = time.perf_counter()
                    model(x)
                    if i >= warmup:
                        forward.append(1000 * (time.perf_counter() - t))
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    return {"model": model_name, "layers": layers, "http_p50": statistics.median(http), "http_p90": _p(http,
                                                                                                       90),
            "forward_p50": statistics.median(forward), "budget": BUDGET_MS[model_name]}


def add_parser(bsub) -> None:
    """``alexnet bench serve``."""
    p = bsub.add_parser("serve", help="explorer latency: one prediction with every layer's maps, over HTTP",
                        description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(BUDGET_MS), choices=list(BUDGET_MS))
    p.add_argument("--repeat", type=int, default=20, help="timed requests per model (after 3 warm-up ones)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=_bench_serve)


def _bench_serve(args) -> int:
    from ..cliargs import format_table

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeat} requests per model")
    rows, ok = [], True
    for name in args.models:
        r = measure(name, args.repeat)
        passed = r["http_p50"] < r["budget"]
        ok &= passed
        rows.append([name, r["layers"], f"{r['http_p50']:.1f}", f"{r['http_p90']:.1f}", f"{r['budget']:.0f}",
                     f"{r['forward_p50']:.1f}", f"{r['http_p50'] / r['forward_p50']:.1f}x",
                     "within budget" if passed else "OVER BUDGET"])
    print(format_table(["model", "layers", "p50 ms", "p90 ms", "budget ms", "forward p50", "p50/forward", ""],
                       rows))
    return 0 if ok else 1
