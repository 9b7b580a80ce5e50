"""Writing files so that a crash never leaves half of one: every file the package writes (checkpoints,
run records, plots, cached statistics, exported models, feature files, compiled kernels) goes through
:func:`atomic_path`, directly or through :func:`atomic_write`; a run's log grows by
:func:`append_line`. A full disk is said in one line (:class:`DiskFullError`), and names that are not
valid UTF-8 are shown with :func:`printable`. Also the package's cache folder."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

TMP_MARK = ".tmp-"  # temporaries are named .NAME.tmp-PID[SUFFIX] beside their target
# "No space left on device", and a user's quota exhausted: the same for whoever writes
FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(OSError):
    """A write that ran out of space: its message names the folder, the space needed and the space free.
    Nothing was replaced (the temporary is removed); the command line says it in one line."""

    def __str__(self) -> str:
        return self.strerror


def printable(text: str) -> str:
    """``text`` safe to print and to write as UTF-8. On POSIX a file name is bytes; Python holds bytes
    that are not UTF-8 as lone surrogates (PEP 383), which no UTF-8 stream accepts: they are shown as
    ``\\xNN``, so ``caf\\xe9.jpg`` names the file whose name has the byte 0xE9."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _free(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _is_disk_full(error: BaseException, folder: Path, needed: int | None) -> bool:
    """Whether ``error`` (or what caused it) is a full disk. Some writers lose the errno (torch.save says
    "unexpected pos"): for those, a folder with less free space than the file needs is the answer."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    if isinstance(error, RuntimeError) and needed:
        free = _free(folder)
        return free is not None and free < needed
    return False


def disk_full(path: Path, needed: int | None, written: int = 0) -> DiskFullError:
    """The one-line error for writing ``path`` on a full disk: the folder, what it needs, what is free."""
    free = _free(path.parent)
    need = f"about {_megabytes(needed)}" if needed else f"more than {_megabytes(written)}"
    have = f"{_megabytes(free)} free" if free is not None else "free space unknown"
    return DiskFullError(errno.ENOSPC, f"no space left on the device of {path.parent} to write {path.name}: "
                                       f"it needs {need}, {have}; {path.name} was left as it was")


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
                mode: int | None = None, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception, rename it over
    ``path``. A reader sees the old file or the complete new one, never a mix; on an exception nothing
    is left behind (also not the ``.data`` file an ONNX writer may add).

    ``durable`` flushes the file and the rename to disk (checkpoints: a power cut must not lose the last
    epoch); ``keep_suffix`` ends the temporary name with ``path``'s suffix, for writers that choose the
    format by it; ``mode`` sets the permission bits (default: what a new file gets under the umask, as
    some writers create owner-only files); ``size``, the bytes the file will take when known, tells a
    full disk from other failures of writers that lose the errno (torch.save), and is said in the error.
    A full disk raises :class:`DiskFullError`.
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
    except Exception as e:
        if not _is_disk_full(e, path.parent, size):  # checked before the temporary frees its space
            raise
        written = tmp.stat().st_size if tmp.is_file() else 0
        _remove_temporary(tmp)
        raise disk_full(path, size, written) from None
    finally:
        _remove_temporary(tmp)
    if durable:
        _sync_folder(path.parent)


def _remove_temporary(tmp: Path) -> None:
    for leftover in (tmp, tmp.with_name(tmp.name + ".data")):
        leftover.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], *,
                 durable: bool = False) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``."""
    with atomic_path(path, durable=durable) as tmp, open(tmp, "wb") as f:
        write(f)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(printable(text).encode()))


def append_line(path: str | os.PathLike, line: str) -> None:
    """Add ``line`` to a text file (a run's log), as UTF-8 through :func:`printable`; a full disk raises
    :class:`DiskFullError`."""
    path = Path(path)
    data = (printable(line) + "\n").encode()
    try:
        with open(path, "ab") as f:
            f.write(data)
    except OSError as e:
        if e.errno in FULL:
            raise disk_full(path, len(data)) from None
        raise


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
