"""What every experiment shares: its report folder, its runs (trained through :func:`alexnet.train`,
reused when an earlier, interrupted invocation finished them), one progress bar with an overall ETA,
and numbers over seeds with the test that says whether a difference is more than noise.

A report folder::

    REPORT/
      report.md       the tables and figures, with what they show and what they do not
      results.json    every number in the report, and the runs it came from
      *.png           the figures
      runs/NAME/      every run the experiment trained (an ordinary run folder)
"""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..data import build_source, parse_spec
from ..errors import UserError
from ..files import atomic_write_json, atomic_write_text
from ..training.config import FIELDS, TrainConfig, resolve_config
from ..training.launch import train, train_resolved
from ..training.trainer import Callback

# Options that only say where or how verbosely a run is written, or what it reports about itself: a
# finished run is reused whatever they were.
BOOKKEEPING = ("out", "name", "quiet", "workers", "save_every", "doctor", "doctor_steps")
ALPHA = 0.05  # a difference over seeds is called real when its t-test gives p < ALPHA


def data_slug(spec: str) -> str:
    """A folder-name form of a ``--data`` spec: ``digits``, ``cifar10-cifar-10-batches-py``, ..."""
    kind, arg = parse_spec(spec)
    tail = Path(arg.rstrip("/")).name if arg and kind != "synthetic" else arg
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(p for p in (kind, tail) if p)).strip("-") or "data"


@dataclass
class Stats:
    """Mean and sample standard deviation of one number over seeds."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    def pct(self, digits: int = 2) -> str:
        """``"12.34 ± 0.56"`` in percent (for rates in [0, 1])."""
        return f"{100 * self.mean:.{digits}f} ± {100 * self.std:.{digits}f}"

    def text(self, digits: int = 2, scale: float = 1.0) -> str:
        """``"0.1234 ± 0.0056"`` (times ``scale``)."""
        return f"{scale * self.mean:.{digits}f} ± {scale * self.std:.{digits}f}"

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n, "values": list(self.values)}


def compare(a: list[float], b: list[float], *, paired: bool = False) -> dict:
    """``mean(b) - mean(a)`` and whether it is more than seed-to-seed noise.

    Welch's t-test over the seeds (a paired t-test when ``paired``: the same runs measured two ways);
    ``real`` is True when p < :data:`ALPHA`, False when the difference is within noise, None when one
    seed leaves no spread to judge by.
    """
    from scipy import stats as st  # SciPy is a dependency already (the ILSVRC devkit); slow to import

    diff = statistics.fmean(b) - statistics.fmean(a)
    if min(len(a), len(b)) < 2:
        return {"diff": diff, "p": None, "real": None}
    with_spread = (
        statistics.pvariance(a) + statistics.pvariance(b) > 0
        if not paired
        else statistics.pvariance([y - x for x, y in zip(a, b)]) > 0
    )
    if not with_spread:  # identical values on every seed: either no difference or an exact one
        if diff == 0:
            return {"diff": diff, "p": 1.0, "real": False}
        return {"diff": diff, "p": None, "real": None, "constant": True}  # no spread: no test
    test = st.ttest_rel(b, a) if paired else st.ttest_ind(b, a, equal_var=False)
    p = float(test.pvalue)
    return {"diff": diff, "p": p, "real": p < ALPHA}


def verdict(c: dict, *, unit: str = " points", scale: float = 100) -> str:
    """The words for a :func:`compare` result: ``"+1.20 points (p = 0.01)"`` or ``"..., within noise"``
    (``scale`` 100: rates shown as percentage points)."""
    d = f"{scale * c['diff']:+.2f}{unit}"
    if c.get("constant"):
        return f"{d} on every seed (no spread: no test)"
    if c["real"] is None:
        return f"{d} (one seed: no spread to judge by)"
    return f"{d} (p = {c['p']:.2g})" if c["real"] else f"{d}, within noise (p = {c['p']:.2g})"


def md_table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


class Progress(Callback):
    """One bar over every epoch the experiment trains, with an overall ETA.

    It is the training runs' callback: the bar advances as each run ends an epoch, so the ETA follows real
    epochs; runs reused from an earlier invocation leave the total instead, and a resumed run's epochs
    done before are taken out of it when it starts.
    """

    def __init__(self, total_epochs: int, desc: str, quiet: bool = False):
        self.bar = tqdm(
            total=total_epochs,
            desc=desc,
            unit="epoch",
            dynamic_ncols=True,
            disable=quiet,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} epochs [{elapsed}<{remaining}]",
        )

    def on_start(self, epoch: int, epochs: int) -> None:
        if epoch:  # done by an earlier invocation: not part of this ETA
            self.bar.total -= min(epoch, epochs)
            self.bar.refresh()

    def on_epoch(self, record: dict) -> None:
        self.bar.update(1)

    def skip(self, epochs: int) -> None:
        """A run reused as it was: take its epochs out of the total."""
        self.bar.total = max(self.bar.n, self.bar.total - epochs)
        self.bar.refresh()

    def add(self, epochs: int) -> None:
        self.bar.total += epochs
        self.bar.refresh()

    def note(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        self.bar.close()


@dataclass
class Report:
    """One experiment's report folder and its runs.

    Args:
        path: the folder (made if missing; an earlier invocation's runs in it are reused).
        common: options every run gets (``data``, ``device``, ...), as :func:`alexnet.train` takes them.
        planned_epochs: the epochs the experiment means to train, for the progress bar.
    """

    path: Path
    title: str
    common: dict = field(default_factory=dict)
    planned_epochs: int = 0
    quiet: bool = False
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    _source: object = None
    _done: dict = field(default_factory=dict)

    def __post_init__(self):
        self.path = Path(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.runs = self.path / "runs"
        self.progress = Progress(self.planned_epochs, self.title, quiet=self.quiet)
        self.started = time.perf_counter()

    @property
    def source(self):
        """The data source of ``common["data"]``, built once (to resolve configs without re-reading)."""
        if self._source is None:
            self._source = build_source(self.common.get("data", "digits"))
        return self._source

    def resolve(self, name: str, options: dict) -> TrainConfig:
        """The resolved config of run ``name``: the common options, then ``options``."""
        cfg, _ = resolve_config(
            {**self.common, **options, "out": str(self.runs), "name": name, "quiet": True},
            source=self.source,
            where="experiment option",
        )
        return cfg

    def expected_config(self, name: str, options: dict) -> dict:
        return self.resolve(name, options).to_dict()

    def run(self, name: str, **options) -> dict:
        """Train run ``name`` with ``options`` (on top of the common ones), or reuse it.

        A folder with ``results.json`` and the same resolved configuration is reused; one without
        results (an interrupted run) is continued from its last checkpoint; one that was trained with
        other options is an error (nothing a user trained is deleted).
        """
        if name in self._done:  # asked twice in one invocation (a sweep's run that is also a seed's)
            return self._done[name]
        path = self.runs / name
        cfg = self.resolve(name, options)
        want = cfg.to_dict()
        epochs = want["epochs"]
        recorded = _recorded_config(path)
        if recorded is not None:
            # an option newer than the run was not recorded: the run had its default
            differs = sorted(k for k in want if k not in BOOKKEEPING
                             and recorded.get(k, FIELDS[k].default) != want[k])
            if differs:
                detail = ", ".join(f"{k} {recorded.get(k)!r} != {want[k]!r}" for k in differs[:3])
                raise UserError(
                    f"{path} holds a run with other options ({detail}); remove it or pick another --out"
                )
            results = _read_json(path / "results.json")
            if results is not None:
                self.progress.skip(epochs)
                self.reused.append(name)
                self._done[name] = {**results, "run_dir": str(path)}
                return self._done[name]
        self.progress.note(name)
        if recorded is not None:
            results = train(resume=str(path), quiet=True, callbacks=[self.progress])
        else:
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()  # an empty folder left by a run stopped before it wrote anything
            elif path.exists():
                raise UserError(f"{path} exists but is not a run folder; remove it or pick another --out")
            results = train_resolved(cfg, self.source, callbacks=[self.progress])
        self.trained.append(name)
        self._done[name] = results
        return results

    def add_epochs(self, epochs: int) -> None:
        """Runs planned after the start (e.g. once a sweep has chosen their learning rate)."""
        self.progress.add(epochs)

    def finish(self, markdown: str, numbers: dict) -> Path:
        """Write report.md and results.json, close the bar, print where the report is."""
        self.progress.close()
        seconds = time.perf_counter() - self.started
        numbers = {
            **numbers,
            "runs_trained": self.trained,
            "runs_reused": self.reused,
            "wall_seconds": seconds,
        }
        atomic_write_json(self.path / "results.json", numbers)
        runs = (f"{len(self.trained)} run(s) trained, {len(self.reused)} reused from an earlier invocation "
                "(every run is in `runs/`); " if self.trained or self.reused else "")
        footer = f"\n\n---\n{runs}{seconds:.0f} s wall. The raw numbers are in `results.json`.\n"
        atomic_write_text(self.path / "report.md", markdown.rstrip() + footer)
        print(f"report: {self.path / 'report.md'}")
        return self.path

    def abort(self) -> None:
        self.progress.close()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _recorded_config(path: Path) -> dict | None:
    record = _read_json(path / "config.json")
    return record.get("config") if isinstance(record, dict) else None


def remove_run(path: Path) -> None:
    """Delete a run folder the experiment itself made (tests and ``--fresh`` only)."""
    if (path / "config.json").is_file():
        shutil.rmtree(path)


def finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x
