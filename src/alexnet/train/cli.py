"""``alexnet train``, ``evaluate`` and ``predict``: argument parsing only; the work is in
:mod:`.run` and :mod:`.inference`."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..errors import UserError
from .config import GROUPS, TrainConfig, coerce, read_config_file, resolve


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model (default: alexnet-small on the embedded digits, a few minutes on a CPU)",
        description="Train a model into a new run directory (runs/NAME), or continue one with --resume. "
                    "Defaults come from the recipe, then --config FILE, then the flags given.",
        argument_default=argparse.SUPPRESS)
    p.add_argument("--config", metavar="FILE", help="TOML or YAML file of options (flags override it)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    defaults = TrainConfig()
    from .recipes import RECIPES

    by_recipe = {k for r in RECIPES.values() for k in r}
    for f in fields(TrainConfig):
        meta = f.metadata
        g = groups[meta["group"]]
        help_text = meta["help"]
        if f.name == "model_opts":
            g.add_argument(meta["flag"], dest="model_opts", action="append", metavar=meta["metavar"], help=help_text)
        elif isinstance(f.default, bool):
            g.add_argument(_flag(f.name), dest=f.name, action="store_true", help=help_text)
        else:
            shown = getattr(defaults, f.name)
            g.add_argument(_flag(f.name), dest=f.name, type=type(f.default), choices=meta.get("choices"),
                           metavar=None if meta.get("choices") else f.name.split("_")[-1].upper(),
                           help=f"{help_text} (default: {shown!r}"
                                + (", or the recipe's)" if f.name in by_recipe else ")"))
    p.set_defaults(func=_train)


def _train(args) -> int:
    from ..cli import parse_kv
    from .run import train

    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    if "model_opts" in given:
        given["model_opts"] = parse_kv(given["model_opts"])
    given = {k: coerce(k, v, "command line") for k, v in given.items()}
    resume = getattr(args, "resume", None)
    if resume:
        if getattr(args, "config", None):
            raise UserError("--config cannot be combined with --resume (the run keeps its own config)")
        return train(resume=resume, overrides=given)
    file_values = read_config_file(args.config) if getattr(args, "config", None) else {}
    from .recipes import recipe_defaults

    return train(resolve(file_values, given, recipe_defaults))


def _common_eval_flags(p) -> None:
    p.add_argument("--model", help="the model a weights file must hold (default: found from the file)")
    p.add_argument("--tta", choices=("center", "10crop"), default="center",
                   help="test views: the centre crop, or the paper's ten patches (softmax averaged)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off", help="mixed precision")


def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="top-1 / top-5 accuracy and error of checkpoints (several: an ensemble)",
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
    from .inference import run_evaluate

    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    args.checkpoints = args.checkpoints + args.weights
    if not args.checkpoints:
        raise UserError("give a run directory, a checkpoint or --weights PATH")
    return run_evaluate(args)


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="top-5 classes, with probabilities, of image files",
                       description="Classify image files (JPEG, PNG, ...; any size, grayscale or colour) with "
                                   "the same preprocessing as evaluation.")
    p.add_argument("checkpoint", nargs="?", metavar="RUN_DIR_OR_CHECKPOINT", help="(omit it with --weights)")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--weights", metavar="PATH", help="a weights file (torchvision's .pth, an exported "
                                                     ".safetensors) instead of a run directory")
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image")
    p.add_argument("--json", action="store_true", help="print JSON")
    _common_eval_flags(p)
    p.set_defaults(func=_predict)


def _predict(args) -> int:
    from .inference import run_predict

    if args.top_k < 1:
        raise UserError("--top-k must be >= 1")
    if args.weights:  # the first positional was an image
        args.checkpoint, args.images = args.weights, [p for p in (args.checkpoint, *args.images) if p]
    if not args.checkpoint:
        raise UserError("give a run directory, a checkpoint or --weights PATH")
    if not args.images:
        raise UserError("no image files given")
    return run_predict(args)
