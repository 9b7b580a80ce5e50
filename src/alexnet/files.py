"""Writing files so that a crash never leaves half of one: every file the package writes (checkpoints,
run records, plots, cached statistics) goes through :func:`atomic_write`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], *,
                 durable: bool = False) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``.

    A reader sees the old file or the complete new one, never a mix. ``durable`` also flushes the file
    and the rename to disk (checkpoints: a power cut must not lose the last epoch).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if durable:
        try:
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
            pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Strict JSON (``NaN`` and ``Infinity`` are refused: other programs could not read them)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str, allow_nan=False) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.NAME.tmp-PID`` files a killed writer left in ``folder``; returns them."""
    folder = Path(folder)
    stale = [p for p in folder.glob(".*.tmp-*") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
