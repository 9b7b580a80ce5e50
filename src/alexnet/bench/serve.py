"""Latency of one explorer prediction, end to end over HTTP: ``alexnet bench serve``.

For each model, a checkpoint (random weights: the time does not depend on them) is served by a real
``alexnet serve`` process on 127.0.0.1, as a user runs it; one request uploads a PNG and gets the top-5,
the maps of every layer and the Grad-CAM heat map back as JSON. The reference, measured in the same run
on the same image, is the bare forward pass of the model loaded from the same checkpoint
(``torch.no_grad``, in this process, while the server waits), so the ratio says what the explanation and
the HTTP round trip cost.
"""

from __future__ import annotations

import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..checkpoint import save_checkpoint
from ..data import build_source
from ..data.decode import resize_center_crop
from ..data.samples import gallery
from ..data.transforms import Normalization, Preset
from ..errors import UserError
from ..inference.load import load_trained
from ..models import create_model

BUDGET_MS = {"alexnet-small": 300.0, "alexnet2012": 1500.0}
START_SECONDS = 120  # how long the server may take to start (imports, model loading)


def _checkpoint(folder: Path, model_name: str) -> tuple[Path, bytes, torch.Tensor]:
    """A checkpoint of ``model_name`` with random weights, a PNG to send, and the model input it makes."""
    torch.manual_seed(0)
    if model_name == "alexnet-small":
        model = create_model(model_name, num_classes=10)
        preset = Preset(train=False, crop=28, base_size=28, norm=Normalization.per_channel([40.0], [80.0]))
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
    arr = np.array(resize_center_crop(image, preset.base_size), dtype=np.uint8)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    x = preset(torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous())
    return path, buf.getvalue(), x


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(client, url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise UserError(f"the explorer server exited with code {server.returncode} before it served a "
                            f"page: {server.stderr.read().decode(errors='replace').strip()[-300:]}")
        try:
            client.get(url)
            return
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.1)
    raise UserError(f"the explorer server did not answer within {START_SECONDS} s")


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def measure(model_name: str, repeat: int, warmup: int = 3, threads: int = 0) -> dict:
    """p50 / p90 of the HTTP prediction and of the bare forward pass, in milliseconds."""
    import httpx  # deferred: a test dependency of the web extra, needed by this benchmark alone

    with tempfile.TemporaryDirectory() as tmp:
        ckpt, png, x = _checkpoint(Path(tmp), model_name)
        port = _free_port()
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        server = subprocess.Popen([sys.executable, "-m", "alexnet", "serve", str(ckpt), "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            http, layers = [], 0
            with httpx.Client(timeout=120) as client:
                _wait_until_up(client, base + "/api/runs", server)
                url = f"{base}/api/runs/{ckpt.stem}/predict?neighbours=0"
                for i in range(warmup + repeat):
                    t = time.perf_counter()
                    r = client.post(url, content=png, headers={"x-filename": "bench.png"})
                    dt = 1000 * (time.perf_counter() - t)
                    r.raise_for_status()
                    layers = len(r.json()["layers"])
                    if i >= warmup:
                        http.append(dt)
        finally:
            server.terminate()
            server.wait(timeout=30)
        model = load_trained(str(ckpt)).model.eval()
        forward = []
        with torch.no_grad():
            for i in range(warmup + repeat):
                t = time.perf_counter()
                model(x)
                if i >= warmup:
                    forward.append(1000 * (time.perf_counter() - t))
    return {"model": model_name, "layers": layers, "http_p50": statistics.median(http),
            "http_p90": _p(http, 90), "forward_p50": statistics.median(forward),
            "budget": BUDGET_MS[model_name]}
