"""Loading weight files made elsewhere (torchvision's ``alexnet-owt-*.pth``, safetensors files,
this package's checkpoints) without executing pickled code."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError

# What torchvision publishes for IMAGENET1K_V1 (alexnet-owt-7be5be79.pth), for reference.
TORCHVISION_ALEXNET = {
    "file": "alexnet-owt-7be5be79.pth",
    "num_params": 61_100_840,
    "acc@1": 56.522,
    "acc@5": 79.066,
    "resize": 256,
    "crop": 224,
    "mean": (0.485, 0.456, 0.406),  # of [0, 1] pixels
    "std": (0.229, 0.224, 0.225),
}


class WeightsError(UserError, ValueError):
    """A weights file that cannot be read or does not fit the model."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.pth``/``.pt`` (plain or one of our checkpoints) or a ``.safetensors``
    file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no such weights file: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover - optional dependency
            raise WeightsError("reading .safetensors needs the safetensors package "
                               "(pip install 'alexnet[safetensors]')") from e
        try:
            return load_file(str(path))
        except Exception as e:
            raise WeightsError(f"{path} is not a readable safetensors file ({e})") from None
    obj = load_torch_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # one of our checkpoints
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return obj


def load_pretrained(model: nn.Module, path: str | os.PathLike, *, new_head: bool = False) -> nn.Module:
    """Load a weights file into ``model``: every key and shape must match.

    ``load_pretrained(create_model("alexnet-owt"), "alexnet-owt-7be5be79.pth")`` gives torchvision's
    pretrained AlexNet, logit for logit. With ``new_head``, an output layer of another class count
    in the file is skipped and the model's own (freshly initialized) one kept: fine-tuning.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    skipped = []
    if new_head:
        head = model.default_cfg.classifier
        keys = [f"{head}.weight", f"{head}.bias"]
        if all(k in state for k in keys) and state[keys[0]].shape != own[keys[0]].shape:
            skipped = keys
            state = {k: v for k, v in state.items() if k not in keys}
    missing = [k for k in own if k not in state and k not in skipped]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        name = getattr(model, "name", type(model).__name__)
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                parts.append(f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}")
        raise WeightsError(f"{path} does not fit {name}: " + "; ".join(parts))
    model.load_state_dict({**own, **state}, strict=True)
    return model


_MAGIC = [(b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"BM", "a BMP image"), (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip file"),
          (b"ONNX", "an ONNX model"), (b"\x08", "an ONNX model (protobuf)")]


def load_torch_file(path: str | os.PathLike):
    """``torch.load(path, weights_only=True)`` on the CPU; a file it cannot read raises
    :class:`WeightsError` saying what the file is, never suggesting an unsafe load."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise WeightsError(f"cannot read {path}: {e.strerror}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: {_unreadable(head, e)}") from None


def _unreadable(head: bytes, error: Exception) -> str:
    message = str(error)
    if not head:
        return "empty file, not a PyTorch checkpoint"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip, or its legacy pickle
        if "Unsupported global" in message or "GLOBAL" in message:
            return ("a PyTorch file holding objects other than tensors and plain values; not loaded, because "
                    "loading it would run code from the file")
        return "a truncated or damaged PyTorch file"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return f"not a PyTorch checkpoint (it is {what})"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "not a PyTorch checkpoint (it is a text file)"
    return "not a PyTorch checkpoint"
