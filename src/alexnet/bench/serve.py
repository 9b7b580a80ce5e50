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


def _timed(client, repeat: int, warmup: int, send) -> tuple[list[float], object]:
    """Milliseconds of ``repeat`` calls of ``send(client)`` after ``warmup`` ones, and the last answer."""
    times, answer = [], None
    for i in range(warmup + repeat):
        t = time.perf_counter()
        answer = send(client)
        dt = 1000 * (time.perf_counter() - t)
        answer.raise_for_status()
        if i >= warmup:
            times.append(dt)
    return times, answer


def measure(model_name: str, repeat: int, warmup: int = 3, threads: int = 0) -> dict:
    """p50 / p90 of the HTTP prediction and of the bare forward pass, in milliseconds; also, for the page:
    the first card (the model loaded, its layer table), the p50 of a unit's arithmetic (``/unit``) and,
    for ``alexnet-small`` served with its dataset (``--data digits``), how long the neighbour index and
    the test report take to build in the background from the card's request (the requests are timed
    after them) and the p50 of a prediction with 8 neighbours."""
    import httpx  # deferred: a test dependency of the web extra, needed by this benchmark alone

    with tempfile.TemporaryDirectory() as tmp:
        ckpt, png, x = _checkpoint(Path(tmp), model_name)
        port = _free_port()
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        data = ["--data", "digits"] if model_name == "alexnet-small" else []
        server = subprocess.Popen([sys.executable, "-m", "alexnet", "serve", str(ckpt), "--port", str(port),
                                   *data], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        page: dict = {}
        try:
            base = f"http://127.0.0.1:{port}/api/runs/{ckpt.stem}"
            with httpx.Client(timeout=300) as client:
                _wait_until_up(client, base + "/metrics", server)
                t = time.perf_counter()
                client.get(base).raise_for_status()  # the card: loads the model, starts the index
                page["card_ms"] = 1000 * (time.perf_counter() - t)
                if data:  # the index is built in the background: time the requests after it, not beside it
                    while client.get(base + "/index").json()["state"] != "ready":
                        time.sleep(0.05)
                    page["index_ms"] = 1000 * (time.perf_counter() - t)
                    while client.get(base + "/errors").json()["state"] != "ready":  # then the test report
                        time.sleep(0.05)
                    page["report_ms"] = 1000 * (time.perf_counter() - t)
                url = base + "/predict?neighbours=0"
                http, r = _timed(client, repeat, warmup, lambda c: c.post(
                    url, content=png, headers={"x-filename": "bench.png"}))
                layers = len(r.json()["layers"])
                unit = f"{base}/unit?layer={r.json()['layers'][3]['name']}&channel=0&y=1&x=1"
                times, _ = _timed(client, repeat, warmup, lambda c: c.post(
                    unit, content=png, headers={"x-filename": "bench.png"}))
                page["unit_p50"] = statistics.median(times)
                if data:
                    times, _ = _timed(client, repeat, warmup, lambda c: c.post(
                        base + "/predict?neighbours=8", content=png, headers={"x-filename": "bench.png"}))
                    page["neighbours_p50"] = statistics.median(times)
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
            "budget": BUDGET_MS[model_name], **page}
