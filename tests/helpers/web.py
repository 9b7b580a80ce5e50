"""A trained run, a live uvicorn server and the explorer's reference computations, shared by the API
and browser tests."""

import io
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import torch
import uvicorn
from PIL import Image

from alexnet.cli import main
from alexnet.models import create_model
from alexnet.training.rundir import RunDir

LAYERS = ["conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4", "conv5", "pool5"]


# ---------- shared with tests/test_web_browser.py ----------

def train_tiny_run(base: Path) -> Path:
    """A 2-epoch alexnet-small run on the digits (about 15 s), trained once per test session."""
    run = base / "r"
    if not (run / "results.json").is_file():
        shutil.rmtree(run, ignore_errors=True)
        assert main(["train", "--epochs", "2", "--quiet", "--out", str(base), "--name", "r", "--device",
                     "cpu"]) == 0
    return run


_HELD: list[RunDir] = []  # the fake live runs' locks, held for the whole session as a trainer holds its own


def fake_live_run(base: Path) -> Path:
    """A run in progress: its config and one epoch of metrics, no checkpoint yet, its lock held (by this
    process, as a training process holds it)."""
    run = base / "live"
    run.mkdir(parents=True, exist_ok=True)
    held = RunDir(run)
    held.lock()
    _HELD.append(held)
    (run / "config.json").write_text(json.dumps({"config": {"model": "alexnet-small", "data": "digits",
                                                            "epochs": 5, "recipe": "small"}}))
    (run / "metrics.jsonl").write_text(json.dumps(metrics_record(1)) + "\n")
    return run


def metrics_record(epoch: int) -> dict:
    return {"epoch": epoch, "train_loss": 2.0 / epoch, "train_top1": 0.2 * epoch, "val_loss": 2.1 / epoch,
            "val_top1": 0.18 * epoch, "val_top5": 0.5 + 0.1 * epoch, "lr": 0.02, "seconds": 1.0}


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 and a free port, in a thread."""

    def __init__(self, app):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def reference_probs(run: Path, images: torch.Tensor) -> torch.Tensor:
    """The run's model on uint8 (B, C, S, S) images, written out: checkpoint, centre crop,
    (x - mean) / std."""
    ckpt = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    model = create_model(ckpt["model_name"], num_classes=ckpt["num_classes"], **ckpt["model_options"]).eval()
    model.load_state_dict(ckpt["model"])
    p = ckpt["preset"]
    o, c = (p["base_size"] - p["crop"]) // 2, p["crop"]
    x = (images[..., o:o + c, o:o + c].float() - p["norm"]["mean"]) / p["norm"]["std"]
    with torch.no_grad():
        return model(x).softmax(-1)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


# ---------- fixtures ----------
