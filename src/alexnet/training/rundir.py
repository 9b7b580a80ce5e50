"""The files of one run, and the only code that writes them (on rank 0):

    runs/NAME/
      config.json      the resolved configuration, environment, data description, command line
      state.json       what the run is doing or how it ended (see :func:`run_state`), and why
      metrics.jsonl    one record per epoch
      log.txt          the epoch lines, warnings (bad files, lr drops) and why the run stopped
      checkpoints/     last.pt (every epoch, and inside epochs with --save-every), best.pt
      results.json     test accuracy / error (top-1, top-5), per-class accuracy, train seconds
      plots/           curves.png, conv1.png, confusion.png
      .lock            held by the process that trains the run (see :meth:`RunDir.lock`)

A run is trained by one process at a time: the trainer holds an advisory lock (``flock``) on ``.lock``
for as long as it runs, and the operating system lets go of it when that process ends, however it ends,
so a lock is never stale. Platforms without ``flock`` do not lock runs.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

from ..errors import UserError
from ..files import append_line, atomic_write_json, atomic_write_text, printable, remove_stale_temporaries

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked
    fcntl = None

LOCK = ".lock"
STATE = "state.json"
LOCK_WAIT = 2.0  # seconds a new trainer retries a held lock: long enough for a run_state() probe to let go
# What run_state() answers. A run records the first five itself; "killed" is a "training" record whose
# process is gone (SIGKILL, a power cut, an out-of-memory kill).
STATES = ("training", "finished", "stopped", "diverged", "failed", "killed")


class RunBusyError(UserError):
    """The run is being trained by another live process."""


def _lock_held(path: Path) -> bool:
    """Whether some process holds the lock file ``path`` (tested with a shared lock let go at once)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a filesystem without flock: nothing can hold it
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _read_json(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def run_state(path: str | os.PathLike) -> str:
    """How the run in folder ``path`` stands, one of :data:`STATES`:

    - ``"training"``: a live process holds the run's lock (it is training, or testing at the end);
    - ``"finished"``: it trained every epoch and wrote ``results.json``;
    - ``"stopped"``: SIGINT / SIGTERM (or a second Ctrl-C) stopped it; ``--resume`` continues it;
    - ``"diverged"``: the training loss became NaN or infinite; ``log.txt`` says at which epoch and step;
    - ``"failed"``: an error ended it (a full disk, a data error); ``state.json``'s ``reason`` says which;
    - ``"killed"``: its record says training but no process holds its lock: it was killed without a
      chance to say so (SIGKILL, a power cut); ``--resume`` continues it from its last checkpoint.

    The run writes ``state.json`` (``state``, ``reason``, ``pid``, ``host``, ``time``) when its first
    epoch starts and when it ends; this function adds the lock test, which wins: a run whose lock is held
    is ``training`` (also while it sets up, or resumes a finished run for more epochs). Without
    ``state.json`` (a run of an earlier version) a run is ``finished`` when it holds ``results.json``,
    else ``stopped``. Reading never changes the run.
    """
    path = Path(path)
    if _lock_held(path / LOCK):
        return "training"
    record = _read_json(path / STATE)
    if record is None or record.get("state") not in STATES:
        return "finished" if (path / "results.json").is_file() else "stopped"
    if record["state"] == "training" and fcntl is not None:  # without flock, the record is all we know
        return "killed"
    return record["state"]


class RunDir:
    """One run's folder. Writes do nothing on ranks other than 0 (``primary=False``)."""

    def __init__(self, path: Path, primary: bool = True):
        self.path, self.primary = Path(path), primary
        self._lock: int | None = None  # the file descriptor holding the lock

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "checkpoints" / "best.pt"

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    def create(self, *, unique: bool = False) -> None:
        """Make the folder of a new run and lock it. A name already taken is an error, unless ``unique``
        (the run named itself): then the first free one of NAME-2, NAME-3, ... is taken, so runs started in
        the same second get folders of their own."""
        if not self.primary:
            return
        try:
            self.path.name.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"--name '{printable(self.path.name)}' is not valid UTF-8 text; run names are "
                            "shown in logs, JSON and the explorer: pick one that is") from None
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UserError(f"--out {parent}: not a folder (a file of that name is in the way)") from None
        except OSError as e:
            raise UserError(f"--out {parent}: cannot make the folder ({e.strerror})") from None
        base, n = self.path, 1
        while True:
            try:
                self.path.mkdir()
                break
            except FileExistsError:
                if not unique:
                    raise UserError(f"run directory {self.path} already exists; pick another --name, or "
                                    f"continue it with: alexnet train --resume {self.path}") from None
                n += 1
                self.path = base.with_name(f"{base.name}-{n}")
            except OSError as e:
                raise UserError(f"cannot make the run folder {self.path}: {e.strerror}") from None
        self.lock()

    def lock(self) -> None:
        """Hold the run's lock while this process trains it. A lock held by another live process is an
        error (one line, naming that process); a dead process holds none, so a killed run resumes."""
        if not self.primary or fcntl is None or self._lock is not None:
            return
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot lock {self.path}: {e.strerror}") from None
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RunBusyError(f"{self.path} is being trained by another process{self._owner()}; "
                                       "wait for it to end, or stop it (Ctrl-C, kill PID) and resume "
                                       "then") from None
                time.sleep(0.05)
            except OSError:  # a filesystem without flock (some network mounts): not locked
                break
        self._lock = fd

    def _owner(self) -> str:
        record = _read_json(self.path / STATE) or {}
        if "pid" not in record:
            return ""
        return f" (pid {record['pid']} on {record.get('host', '?')}, since {record.get('time', '?')})"

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor lets go of the lock
            self._lock = None

    def discard_if_empty(self) -> None:
        """Remove a new run's folder when nothing but its lock was written (its start failed)."""
        if not self.primary or not self.path.is_dir():
            return
        if all(p.name == LOCK for p in self.path.iterdir()):
            self.unlock()
            (self.path / LOCK).unlink(missing_ok=True)
            self.path.rmdir()

    def set_state(self, state: str, reason: str = "") -> None:
        """Record what the run does now (``training``) or how it ended (see :func:`run_state`)."""
        if self.primary:
            atomic_write_json(self.path / STATE, {
                "state": state, "reason": printable(reason), "pid": os.getpid(), "host": socket.gethostname(),
                "time": datetime.now().isoformat(timespec="seconds")})

    def clean_leftovers(self) -> list[Path]:
        """Remove the temporary files a writer killed mid-write left behind."""
        if not self.primary:
            return []
        return [p for folder in (self.path, self.path / "checkpoints", self.path / "plots")
                for p in remove_stale_temporaries(folder)]

    def read_config(self) -> dict:
        try:
            return json.loads(self.config_file.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{self.path} is not a run directory: cannot read config.json ({e})") from None

    def write_json(self, name: str, obj) -> None:
        if self.primary:
            atomic_write_json(self.path / name, obj)

    def write_metrics(self, history: list[dict]) -> None:
        if self.primary:
            atomic_write_text(self.path / "metrics.jsonl",
                              "".join(json.dumps(r, allow_nan=False) + "\n" for r in history))

    def log(self, line: str, *, echo: bool = True, err: bool = False) -> None:
        """Add ``line`` to log.txt and (``echo``) print it; names that are not UTF-8 show as ``\\xNN``."""
        if not self.primary:
            return
        line = printable(line)
        if echo:
            tqdm.write(line, file=sys.stderr if err else sys.stdout)
        append_line(self.path / "log.txt", line)
