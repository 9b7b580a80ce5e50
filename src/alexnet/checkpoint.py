"""The one checkpoint format, and the one way the package reads PyTorch files.

A checkpoint is a dict of tensors and plain values written with ``torch.save`` and read back with
``weights_only=True``: no pickled code ever runs, whatever the file holds. It is written through
:func:`alexnet.files.atomic_path`, so a crash mid-write leaves the previous checkpoint intact. Besides
the training state it describes its model (:data:`MODEL_KEYS`), so that evaluation, prediction,
export and the explorer can rebuild the network from the file alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import UserError
from .files import atomic_path

FORMAT = "alexnet-checkpoint"
VERSION = 1
# What every checkpoint says about its model: enough to rebuild it and read images as it was trained.
MODEL_KEYS = ("model_name", "model_options", "num_classes", "model", "preset", "classes", "class_names")

_MAGIC = [(b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"BM", "a BMP image"), (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip file"),
          (b"ONNX", "an ONNX model"), (b"\x08", "an ONNX model (protobuf)")]


class CheckpointError(UserError, ValueError):
    """A checkpoint or PyTorch file that is missing, truncated, unsafe or not what it should be."""


def load_torch_file(path: str | os.PathLike):
    """``torch.load(path, weights_only=True)`` on the CPU; a file it cannot read raises
    :class:`CheckpointError` saying what the file is, never suggesting an unsafe load."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file can raise almost anything
        raise CheckpointError(f"{path}: {_unreadable(head, e)}") from None


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


def is_checkpoint(obj) -> bool:
    """Whether a loaded object is one of this package's checkpoints (of any version)."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def check_checkpoint(obj: dict, where: str | os.PathLike) -> dict:
    """``obj`` if it is a checkpoint this version reads and describes its model completely."""
    if not is_checkpoint(obj):
        raise CheckpointError(f"{where} is not an alexnet checkpoint (for plain weight files use "
                              f"--pretrained, or evaluate with --model NAME)")
    if obj.get("version", 0) > VERSION:
        raise CheckpointError(f"{where} was written by a newer alexnet (format {obj['version']})")
    missing = [k for k in MODEL_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{where} is an incomplete alexnet checkpoint: no {', '.join(missing)}")
    state = obj["model"]
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise CheckpointError(f"{where}: its 'model' entry is not a state dict (names to tensors)")
    return obj


def tensor_bytes(obj) -> int:
    """The bytes of every tensor in ``obj`` (nested dicts, lists and tuples): what a file of it needs."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def save_checkpoint(path: str | os.PathLike, content: dict) -> None:
    """Write ``content`` as one of our checkpoints, atomically and durably; a full disk raises
    :class:`alexnet.files.DiskFullError` (one line: the folder, the space needed) and keeps the old file."""
    obj = {"format": FORMAT, "version": VERSION, **content}
    with atomic_path(path, durable=True, size=tensor_bytes(obj)) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read one of our checkpoints (on the CPU); anything else raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    return check_checkpoint(load_torch_file(path), path)


def find_checkpoint(path: str | os.PathLike, prefer: str = "best") -> Path:
    """A checkpoint file, or a run directory (its ``best.pt``, else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        order = [prefer, "last" if prefer == "best" else "best"]
        for name in order:
            candidate = path / "checkpoints" / f"{name}.pt"
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{path} holds no checkpoints/best.pt or checkpoints/last.pt")
    if not path.exists():
        raise CheckpointError(f"no such run directory or checkpoint: {path}")
    return path
