"""The files of one run, and the only code that writes them (on rank 0):

    runs/NAME/
      config.json      the resolved configuration, environment, data description, command line
      metrics.jsonl    one record per epoch
      log.txt          the epoch lines and warnings (bad files, lr drops)
      checkpoints/     last.pt (every epoch, and inside epochs with --save-every), best.pt
      results.json     test accuracy / error (top-1, top-5), per-class accuracy, train seconds
      plots/           curves.png, conv1.png, confusion.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..errors import UserError
from ..files import atomic_write_json, atomic_write_text, remove_stale_temporaries


class RunDir:
    """One run's folder. Writes do nothing on ranks other than 0 (``primary=False``)."""

    def __init__(self, path: Path, primary: bool = True):
        self.path, self.primary = Path(path), primary

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "checkpoints" / "best.pt"

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    def create(self) -> None:
        """Make the folder of a new run; a name already taken is an error."""
        if self.primary:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.path.mkdir()
            except FileExistsError:
                raise UserError(f"run directory {self.path} already exists; pick another --name, or "
                                f"continue it with: alexnet train --resume {self.path}") from None

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
        if not self.primary:
            return
        if echo:
            tqdm.write(line, file=sys.stderr if err else sys.stdout)
        with open(self.path / "log.txt", "a") as f:
            f.write(line + "\n")
