"""``alexnet train``, ``evaluate`` and ``predict``: argument parsing only; the work is in
:mod:`.launch` and :mod:`.inference`."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..errors import UserError
from .config import GROUPS, TrainConfig
from .inference import evaluate_command, predict_command
from .launch import launch
from .recipes import RECIPE_FIELDS, RECIPES


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(name: str, default) -> str:
    if name in RECIPE_FIELDS:
        return "default from the recipe: " + ", ".join(f"{r} {RECIPES[r][name]}" for r in RECIPES)
    if default is None:
        return ""
    return f"default: {default!r}"


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model (default: alexnet-small on the embedded digits, about a minute on a "
                      "CPU)",
        description="Train a model into a new run directory (OUT/NAME), or continue one with --resume. "
                    "Values come from the recipe (by default the model's own), then --config FILE, then the "
                    "flags given; the run's config.json records every resolved value.",
        argument_default=argparse.SUPPRESS)
    p.add_argument("--config", metavar="FILE", help="TOML, YAML or JSON file of options (flags override it)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    for f in fields(TrainConfig):
        meta = f.metadata
        g = groups[meta["group"]]
        note = _default_text(f.name, f.default)
        help_text = meta["help"] + (f" ({note})" if note and f.name not in ("pad", "flip") else "")
        if f.name == "model_opts":
            g.add_argument(meta["flag"], dest="model_opts", action="append", metavar=meta["metavar"],
                           help=help_text)
        elif meta["type"] is bool:
            g.add_argument(_flag(f.name), dest=f.name, action="store_true", help=meta["help"])
        else:
            g.add_argument(_flag(f.name), dest=f.name, type=_typed(meta["type"], f.name),
                           choices=("auto", *meta["choices"]) if f.name == "recipe" else meta.get("choices"),
                           metavar=None if meta.get("choices") else f.name.split("_")[-1].upper(),
                           help=help_text)
    p.set_defaults(func=_train)


def _typed(kind: type, name: str):
    """argparse's converter for a field: a clear message for ``--lr abc`` (finite ranges are
    checked once the whole config is resolved)."""
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_flag(name)} takes "
                                             f"{'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
    convert.__name__ = kind.__name__
    return convert


def _train(args) -> int:
    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    outcome = launch(given, config_file=getattr(args, "config", None), resume=getattr(args, "resume", None))
    return 0 if outcome.signum is None else 128 + outcome.signum


def _common_eval_flags(p) -> None:
    p.add_argument("--model", help="the model a weights file must hold (default: found from the file)")
    p.add_argument("--tta", choices=("center", "10crop"), default="center",
                   help="test views: the centre crop, or the paper's ten patches (softmax averaged)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off", help="mixed precision")
    p.add_argument("--compile-frozen", action="store_true",
                   help="compile with the weights frozen into the graph (oneDNN prepacking on the CPU): "
                        "pays over many batches, costs a compilation first")


def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate",
                       help="top-1 / top-5 accuracy and error of checkpoints (several: an ensemble)",
                       description="Evaluate one or more run directories / checkpoints. With several, each "
                                   "member and the average of their softmax outputs (the paper's ensembles) "
                                   "are reported.")
    p.add_argument("checkpoints", nargs="*", metavar="RUN_DIR_OR_CHECKPOINT")
    p.add_argument("--weights", action="append", default=[], metavar="PATH",
                   help="a weights file (torchvision's .pth, an exported .safetensors), repeatable")
    p.add_argument("--data", help="dataset spec (default: the one the first model was trained on)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="split to evaluate (test falls back to val when a dataset has none)")
    p.add_argument("--batch-size", type=int, default=100, help="images per batch")
    p.add_argument("--workers", type=int, default=0, help="data loading worker processes")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory layout")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    p.add_argument("--paper", action="store_true", help="print the paper's reference rows alongside")
    _common_eval_flags(p)
    p.set_defaults(func=_evaluate)


def _evaluate(args) -> int:
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    args.checkpoints = args.checkpoints + args.weights
    if not args.checkpoints:
        raise UserError("give a run directory, a checkpoint or --weights PATH")
    return evaluate_command(args)


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="top-5 classes, with probabilities, of image files",
                       description="Classify image files (JPEG, PNG, ...; any size, grayscale or colour) "
                                   "with the same preprocessing as evaluation.")
    p.add_argument("checkpoint", nargs="?", metavar="RUN_DIR_OR_CHECKPOINT", help="(omit it with --weights)")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--weights", metavar="PATH", help="a weights file (torchvision's .pth, an exported "
                                                     ".safetensors) instead of a run directory")
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image")
    p.add_argument("--json", action="store_true", help="print JSON")
    _common_eval_flags(p)
    p.set_defaults(func=_predict)


def _predict(args) -> int:
    if args.top_k < 1:
        raise UserError("--top-k must be >= 1")
    if args.weights:  # the first positional was an image
        args.checkpoint, args.images = args.weights, [p for p in (args.checkpoint, *args.images) if p]
    if not args.checkpoint:
        raise UserError("give a run directory, a checkpoint or --weights PATH")
    if not args.images:
        raise UserError("no image files given")
    return predict_command(args)
