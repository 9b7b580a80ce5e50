"""The one checkpoint format: a dict of tensors and plain values written with ``torch.save`` and
read back with ``weights_only=True`` (no pickled code runs). Written through
:func:`alexnet.files.atomic_write`: a crash mid-write leaves the previous checkpoint intact."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import UserError
from ..files import atomic_write
from ..models.weights import WeightsError, load_torch_file

FORMAT = "alexnet-checkpoint"
VERSION = 1


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, truncated or not one of ours."""


def save_checkpoint(path: str | os.PathLike, content: dict) -> None:
    """Write ``content`` as one of our checkpoints, atomically and durably."""
    obj = {"format": FORMAT, "version": VERSION, **content}
    atomic_write(path, lambda f: torch.save(obj, f), durable=True)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read one of our checkpoints (on the CPU); anything else raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    try:
        ckpt = load_torch_file(path)
    except WeightsError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an alexnet checkpoint (for plain weight files use "
                              f"--pretrained, or evaluate with --model NAME)")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer alexnet (format {ckpt['version']})")
    return ckpt


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
