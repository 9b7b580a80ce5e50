"""The flags several commands share, defined once: the same name, type, range, default and help text
wherever they appear. A value out of range is refused by argparse itself (one usage line, exit 2)."""

from __future__ import annotations

import argparse

from ..runtime import AMP_DTYPES

EVAL_BATCH = 64  # images per batch of every command that only runs the model forward


def bounded_int(minimum: int):
    """An argparse type: an integer >= ``minimum`` (argparse names the flag in its message)."""
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    convert.__name__ = "int"
    return convert


def add_device(p, default: str = "auto") -> None:
    p.add_argument("--device", default=default,
                   help=f"auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps (default: {default})")


def add_batch_size(p, default: int | None = EVAL_BATCH, what: str = "images per batch") -> None:
    shown = f"default: {default}" if default is not None else "default: the recipe's"
    p.add_argument("--batch-size", type=bounded_int(1), default=default, help=f"{what} ({shown})")


def add_workers(p, default: int = 0, what: str = "data loading worker processes") -> None:
    p.add_argument("--workers", type=bounded_int(0), default=default,
                   help=f"{what} (default: {default}{', this process' if default == 0 else ''})")


def add_threads(p) -> None:
    p.add_argument("--threads", type=bounded_int(1), help="CPU threads (default: torch's choice)")


def add_json(p, what: str = "print JSON instead of a table") -> None:
    p.add_argument("--json", action="store_true", help=what)


def add_quiet(p) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_amp(p) -> None:
    p.add_argument("--amp", choices=list(AMP_DTYPES), default="off", help="mixed precision (default: off)")


def add_speed_flags(group) -> None:
    """The fast-path flags every model benchmark shares: --amp, --channels-last, --compile."""
    group.add_argument("--amp", default="off", choices=list(AMP_DTYPES), help="autocast dtype")
    group.add_argument("--channels-last", action="store_true", help="NHWC memory layout")
    group.add_argument("--compile", action="store_true", help="torch.compile (TorchInductor)")


def add_source(p) -> None:
    """The model to use: ``RUN_OR_WEIGHTS`` and ``--model`` (export, features)."""
    p.add_argument("source", metavar="RUN_OR_WEIGHTS", help="run directory, checkpoint or weights file")
    p.add_argument("--model", help="the model a weights file must hold (default: found from the file)")
