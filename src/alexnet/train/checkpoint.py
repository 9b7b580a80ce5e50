"""The one checkpoint format: a dict of tensors and plain values written with ``torch.save`` and
read back with ``weights_only=True`` (no pickled code runs). Written to a temporary file in the
same folder, flushed to disk, then renamed over the old one: a crash mid-write leaves the previous
checkpoint intact."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import UserError

FORMAT = "alexnet-checkpoint"
VERSION = 1


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, truncated or not one of ours."""


def atomic_save(obj, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass


def save_checkpoint(path: str | os.PathLike, **content) -> None:
    atomic_save({"format": FORMAT, "version": VERSION, **content}, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read one of our checkpoints (on the CPU); anything else raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path} is not a readable checkpoint ({first[:200]})") from None
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
