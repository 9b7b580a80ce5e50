"""Writing files so that a crash never leaves half of one: every file the package writes (checkpoints,
run records, plots, cached statistics, exported models, feature files, compiled kernels) goes through
:func:`atomic_path`, directly or through :func:`atomic_write`. Also the package's cache folder."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

TMP_MARK = ".tmp-"  # temporaries are named .NAME.tmp-PID[SUFFIX] beside their target


def cache_root() -> Path:
    """``$ALEXNET_CACHE``, else ``~/.cache/alexnet``: statistics, fc7 indexes, compiled kernels."""
    root = os.environ.get("ALEXNET_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "alexnet")
    return Path(root)


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = False, keep_suffix: bool = False,
                mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception, rename it over
    ``path``. A reader sees the old file or the complete new one, never a mix; on an exception nothing
    is left behind (also not the ``.data`` file an ONNX writer may add).

    ``durable`` flushes the file and the rename to disk (checkpoints: a power cut must not lose the last
    epoch); ``keep_suffix`` ends the temporary name with ``path``'s suffix, for writers that choose the
    format by it; ``mode`` sets the permission bits (default: what a new file gets under the umask, as
    some writers create owner-only files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem if keep_suffix else path.name}{TMP_MARK}{os.getpid()}"
                         f"{path.suffix if keep_suffix else ''}")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        if mode is None:
            mask = os.umask(0)
            os.umask(mask)
            mode = 0o666 & ~mask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".data")):
            leftover.unlink(missing_ok=True)
    if durable:
        _sync_folder(path.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], *,
                 durable: bool = False) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``."""
    with atomic_path(path, durable=durable) as tmp, open(tmp, "wb") as f:
        write(f)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Strict JSON (``NaN`` and ``Infinity`` are refused: other programs could not read them)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str, allow_nan=False) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.NAME.tmp-PID`` files a killed writer left in ``folder``; returns them."""
    folder = Path(folder)
    stale = [p for p in folder.glob(f".*{TMP_MARK}*") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
