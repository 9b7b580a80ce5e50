"""``alexnet experiment fig1|ablations|fig3|fig4|lab``: the paper's experiments and figures, one command
each, on any data from the embedded digits to ImageNet.

Each writes a report folder (``report.md`` with its figures and tables, ``results.json`` with the raw
numbers, every run it trained under ``runs/``) and prints where it is. Run the same command again
after an interruption: finished runs are reused, an interrupted one continues from its checkpoint.
"""

from __future__ import annotations

import argparse
import signal
import sys

from ..cliargs import parse_kv
from ..errors import UserError
from ..training.launch import TrainingStopped
from .ablations import ABLATIONS, ablations
from .ablations import EPOCHS as ABLATION_EPOCHS
from .fig1 import EPOCHS as FIG1_EPOCHS
from .fig1 import LRS, fig1
from .fig3 import TRAIN_EPOCHS as FIG3_EPOCHS
from .fig3 import fig3
from .fig4 import TRAIN_EPOCHS as FIG4_EPOCHS
from .fig4 import fig4
from .lab import BATCH_SIZES, lab
from .lab import EPOCHS as LAB_EPOCHS

__all__ = ["fig1", "ablations", "fig3", "fig4", "lab", "add_parser"]


def _stoppable(run):
    """Ctrl-C / SIGTERM stop the current run after saving it: one line, and how to continue."""

    def call(args) -> int:
        try:
            return run(args)
        except TrainingStopped as e:
            print(f"alexnet: stopped by {signal.Signals(e.signum).name} in {e.run_dir}; run the same command "
                  "again to continue (finished runs are reused)", file=sys.stderr)
            return 128 + e.signum

    return call


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise UserError(f"{flag} must be >= 1, got {value}")


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _common(p, *, model: str | None, epochs: str, seeds: bool = True) -> None:
    p.add_argument(
        "--data",
        default="digits",
        help="dataset spec: digits (embedded, default), cifar10:PATH, mnist:PATH, an ImageNet folder",
    )
    if model:
        p.add_argument("--model", default=model, help=f"model name (default: {model})")
    p.add_argument("--epochs", type=int, help=f"epochs per run (default: {epochs})")
    if seeds:
        p.add_argument("--seeds", type=int, default=3, help="seeds per setting (default: 3)")
    p.add_argument(
        "--out", help="report folder (default: experiments/NAME-DATA); rerun with the same folder to resume"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_fig1(a) -> int:
    _positive(a.epochs, "--epochs")
    _positive(a.seeds, "--seeds")
    fig1(
        data=a.data,
        model=a.model,
        epochs=a.epochs or FIG1_EPOCHS,
        seeds=a.seeds,
        lrs=a.lrs,
        threshold=a.threshold,
        out=a.out,
        device=a.device,
        batch_size=a.batch_size,
        model_opts=parse_kv(a.opt, what="model option"),
        quiet=a.quiet,
    )
    return 0


def _run_ablations(a) -> int:
    _positive(a.epochs, "--epochs")
    _positive(a.seeds, "--seeds")
    only = a.only.split(",") if a.only else None
    unknown = sorted(set(only or ()) - {ab.key for ab in ABLATIONS})
    if unknown:
        raise UserError(
            f"unknown ablation(s) {', '.join(unknown)}; choose from {', '.join(ab.key for ab in ABLATIONS)}"
        )
    ablations(
        data=a.data,
        model=a.model,
        epochs=a.epochs or ABLATION_EPOCHS,
        seeds=a.seeds,
        out=a.out,
        device=a.device,
        batch_size=a.batch_size,
        model_opts=parse_kv(a.opt, what="model option"),
        only=only,
        quiet=a.quiet,
    )
    return 0


def _run_fig3(a) -> int:
    _positive(a.epochs, "--epochs")
    fig3(
        a.source,
        model_name=a.weights_model,
        data=a.data,
        model=a.model,
        epochs=a.epochs or FIG3_EPOCHS,
        seed=a.seed,
        out=a.out,
        device=a.device,
        quiet=a.quiet,
    )
    return 0


def _run_fig4(a) -> int:
    _positive(a.epochs, "--epochs")
    fig4(
        a.run,
        data=a.data,
        model=a.model,
        epochs=a.epochs or FIG4_EPOCHS,
        seed=a.seed,
        images=a.images,
        neighbours=a.neighbours,
        out=a.out,
        device=a.device,
        quiet=a.quiet,
    )
    return 0


def _run_lab(a) -> int:
    _positive(a.epochs, "--epochs")
    _positive(a.seeds, "--seeds")
    lab(
        data=a.data,
        epochs=a.epochs or LAB_EPOCHS,
        seeds=a.seeds,
        out=a.out,
        device=a.device,
        batch_sizes=a.batch_sizes,
        quiet=a.quiet,
    )
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "experiment",
        help="the paper's experiments and figures: fig1, ablations, fig3, fig4, lab",
        description="Run one of the paper's experiments into a report folder (report.md, "
        "results.json, figures, every run); rerun the same command to resume.",
    )
    esub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)

    e = esub.add_parser(
        "fig1",
        help="ReLU vs tanh: training error per epoch, epochs and seconds to a threshold",
        description="Figure 1: the four-layer CIFAR-10 net of cuda-convnet (convnet18) with ReLU "
        "and with tanh, each at the learning rate of a small sweep, no "
        "regularization; the ratio of epochs and seconds to a training-error "
        "threshold.",
    )
    _common(e, model="convnet18", epochs=str(FIG1_EPOCHS))
    e.add_argument(
        "--lrs",
        type=_floats,
        default=LRS,
        help=f"learning rates to sweep per activation (default: {','.join(map(str, LRS))})",
    )
    e.add_argument(
        "--threshold",
        type=float,
        help="training error to reach, as a fraction (default: 0.25 on CIFAR-10 as the paper, 0.05 "
        "elsewhere)",
    )
    e.add_argument("--batch-size", type=int, help="images per step (default: the recipe's)")
    e.add_argument("--opt", action="append", metavar="KEY=VALUE", help="model option, repeatable")
    e.set_defaults(func=_stoppable(_run_fig1))

    e = esub.add_parser(
        "ablations",
        help="each of the paper's ingredients removed, beside its published delta",
        description="LRN, overlapping pooling, dropout, two towers, PCA lighting (RGB data) and "
        "ten-patch testing, each removed on its own; N seeds each.",
    )
    _common(e, model="alexnet-small", epochs=str(ABLATION_EPOCHS))
    e.add_argument("--only", help="comma-separated subset: " + ", ".join(ab.key for ab in ABLATIONS))
    e.add_argument("--batch-size", type=int, help="images per step (default: the recipe's)")
    e.add_argument(
        "--opt", action="append", metavar="KEY=VALUE", help="model option for every run, repeatable"
    )
    e.set_defaults(func=_stoppable(_run_ablations))

    e = esub.add_parser(
        "fig3",
        help="conv1 kernels per tower and each tower's colour specificity",
        description="Figure 3 for a run folder, checkpoint or weights file; with none, trains "
        "one run of --model on --data first.",
    )
    e.add_argument(
        "source", nargs="?", metavar="RUN_OR_WEIGHTS", help="run folder, checkpoint or weights file"
    )
    e.add_argument("--weights-model", help="model name for a plain weights file (e.g. alexnet-owt)")
    _common(e, model="alexnet-small", epochs=str(FIG3_EPOCHS), seeds=False)
    e.add_argument("--seed", type=int, default=0, help="seed of the run trained when no source is given")
    e.set_defaults(func=_stoppable(_run_fig3))

    e = esub.add_parser(
        "fig4",
        help="top-5 predictions and nearest training images in fc7 space",
        description="Figure 4 for a run folder; with none, trains one run of --model on --data "
        "first. The fc7 index is cached in the run folder.",
    )
    e.add_argument("run", nargs="?", metavar="RUN_DIR", help="run folder")
    _common(e, model="alexnet-small", epochs=str(FIG4_EPOCHS), seeds=False)
    e.add_argument("--seed", type=int, default=0, help="seed of the run trained when no run is given")
    e.add_argument("--images", type=int, default=8, help="test images shown (default: 8)")
    e.add_argument("--neighbours", type=int, default=6, help="neighbours per image (default: 6)")
    e.set_defaults(func=_stoppable(_run_fig4))

    e = esub.add_parser(
        "lab",
        help="alexnet-small vs lenet5, dropout on/off, a batch-size sweep",
        description="The teaching lab's experiments on small images.",
    )
    _common(e, model=None, epochs=str(LAB_EPOCHS))
    e.add_argument(
        "--batch-sizes",
        type=_ints,
        default=BATCH_SIZES,
        help=f"batch sizes to sweep (default: {','.join(map(str, BATCH_SIZES))})",
    )
    e.set_defaults(func=_stoppable(_run_lab))
