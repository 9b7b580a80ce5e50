"""``alexnet experiment fig1|ablations|fig3|fig4|lab``: the experiments' flags; each experiment is a
function of :mod:`alexnet.experiments` whose keyword arguments are these flags, and whose defaults are
used where a flag is not given."""

from __future__ import annotations

import argparse
import signal
import sys

from ..cliargs import parse_kv
from ..experiments import ablations, fig1, fig3, fig4, lab
from ..experiments.ablations import ABLATIONS
from ..experiments.fig1 import LRS
from ..experiments.lab import BATCH_SIZES
from ..training.launch import TrainingStopped
from .flags import add_device, add_quiet, bounded_int


def _numbers(kind: type, minimum: float):
    """An argparse type for ``a,b,c``: numbers of ``kind``, each >= ``minimum`` (> 0 for floats)."""
    def convert(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
        if not values or min(values) < minimum or (kind is float and min(values) <= 0):
            raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
        return values
    return convert


def _run(experiment, *positional: str):
    """The command of ``experiment``: flags given become its keyword arguments (``opt`` its
    ``model_opts``); Ctrl-C / SIGTERM stop the current run after saving it, with how to continue."""
    def call(args) -> int:
        given = {k: v for k, v in vars(args).items() if v is not None and k not in ("command", "experiment",
                                                                                  "func", *positional)}
        if "opt" in given:
            given["model_opts"] = parse_kv(given.pop("opt"), what="model option")
        try:
            experiment(*(getattr(args, p) for p in positional), **given)
        except TrainingStopped as e:
            print(f"alexnet: stopped by {signal.Signals(e.signum).name} in {e.run_dir}; run the same command "
                  "again to continue (finished runs are reused)", file=sys.stderr)
            return 128 + e.signum
        return 0
    return call


def _common(p, *, model: str | None, seeds: bool = True) -> None:
    p.add_argument("--data", help="dataset spec: digits (embedded, default), cifar10:PATH, mnist:PATH, an "
                                  "ImageNet folder")
    if model:
        p.add_argument("--model", help=f"model name (default: {model})")
    p.add_argument("--epochs", type=bounded_int(1),
                   help="epochs per run (default: the experiment's, in its report)")
    if seeds:
        p.add_argument("--seeds", type=bounded_int(1), help="seeds per setting (default: 3)")
    p.add_argument("--out", help="report folder (default: experiments/NAME-DATA); rerun with the same folder "
                                 "to resume")
    add_device(p)
    add_quiet(p)


def _train_flags(p) -> None:
    p.add_argument("--batch-size", type=bounded_int(1),
                   help="images per step (default: the recipe's)")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="model option for every run, repeatable")


def add_experiment_parser(sub) -> None:
    p = sub.add_parser("experiment",
                       help="the paper's experiments and figures: fig1, ablations, fig3, fig4, lab",
                       description="Run one of the paper's experiments into a report folder (report.md, "
                                   "results.json, figures, every run); rerun the same command to resume.")
    esub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)

    e = esub.add_parser("fig1",
                        help="ReLU vs tanh: training error per epoch, epochs and seconds to a threshold",
                        description="Figure 1: the four-layer CIFAR-10 net of cuda-convnet (convnet18) with "
                                    "ReLU and with tanh, each at the learning rate of a small sweep, no "
                                    "regularization; the ratio of epochs and seconds to a training-error "
                                    "threshold.")
    _common(e, model="convnet18")
    e.add_argument("--lrs", type=_numbers(float, 0), help="learning rates to sweep per activation "
                                                          f"(default: {','.join(map(str, LRS))})")
    e.add_argument("--threshold", type=float, help="training error to reach, as a fraction (default: 0.25 on "
                                                   "CIFAR-10 as the paper, 0.05 elsewhere)")
    _train_flags(e)
    e.set_defaults(func=_run(fig1))

    e = esub.add_parser("ablations",
                        help="each of the paper's ingredients removed, beside its published delta",
                        description="LRN, overlapping pooling, dropout, two towers, PCA lighting (RGB data) "
                                    "and ten-patch testing, each removed on its own; N seeds each.")
    _common(e, model="alexnet-small")
    e.add_argument("--only", type=lambda text: text.split(","),
                   help="comma-separated subset: " + ", ".join(ab.key for ab in ABLATIONS))
    _train_flags(e)
    e.set_defaults(func=_run(ablations))

    e = esub.add_parser("fig3", help="conv1 kernels per tower and each tower's colour specificity",
                        description="Figure 3 for a run folder, checkpoint or weights file; with none, "
                                    "trains one run of --model on --data first.")
    e.add_argument("source", nargs="?", metavar="RUN_OR_WEIGHTS",
                   help="run folder, checkpoint or weights file")
    e.add_argument("--weights-model", dest="model_name",
                   help="model name for a plain weights file (e.g. alexnet-owt)")
    _common(e, model="alexnet-small", seeds=False)
    e.add_argument("--seed", type=bounded_int(0),
                   help="seed of the run trained when no source is given (default: 0)")
    e.set_defaults(func=_run(fig3, "source"))

    e = esub.add_parser("fig4", help="top-5 predictions and nearest training images in fc7 space",
                        description="Figure 4 for a run folder; with none, trains one run of --model on "
                                    "--data first. The fc7 index is cached in the run folder.")
    e.add_argument("run", nargs="?", metavar="RUN_DIR", help="run folder")
    _common(e, model="alexnet-small", seeds=False)
    e.add_argument("--seed", type=bounded_int(0),
                   help="seed of the run trained when no run is given (default: 0)")
    e.add_argument("--images", type=bounded_int(1), help="test images shown (default: 8)")
    e.add_argument("--neighbours", type=bounded_int(1),
                   help="neighbours per image (default: 6)")
    e.set_defaults(func=_run(fig4, "run"))

    e = esub.add_parser("lab", help="alexnet-small vs lenet5, dropout on/off, a batch-size sweep",
                        description="The teaching lab's experiments on small images.")
    _common(e, model=None)
    e.add_argument("--batch-sizes", type=_numbers(int, 1),
                   help=f"batch sizes to sweep (default: {','.join(map(str, BATCH_SIZES))})")
    e.set_defaults(func=_run(lab))
