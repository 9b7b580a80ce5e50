"""The ``alexnet`` command: train, evaluate, predict, summary, data, bench.

Each command lives with the code it drives and registers itself through ``add_parser``; this
module only assembles them and turns bad input into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .cliargs import format_table, parse_input_size, parse_kv
from . import __version__
from .bench import add_parser as add_bench
from .data.cli import add_parser as add_data
from .experiments import add_parser as add_experiment
from .export import add_parser as add_export
from .features import add_parser as add_features
from .models import check_options, create_model, data_options, list_models, model_cfg, model_options
from .models.summary import summarize
from .training.cli import add_evaluate_parser, add_predict_parser, add_train_parser
from .training.config import recipe_table
from .web import add_parser as add_serve
from .errors import UserError


def _summary(args) -> int:
    options = check_options(args.model, parse_kv(args.opt, what="model option"))
    size = parse_input_size(args.input_size) if args.input_size else None
    sized = data_options(args.model, size[0], size[1]) if size else {}
    if sized and size[1] != size[2]:
        raise UserError(f"{args.model} takes square inputs, got {size[1]}x{size[2]}")
    num_classes = args.num_classes if args.num_classes is not None else (
        10 if model_cfg(args.model).sized_by_data else 1000)
    model = create_model(args.model, num_classes=num_classes, **{**sized, **options})
    try:
        s = summarize(model, size)
    except ValueError as e:  # the model's own input check
        raise UserError(str(e)) from None
    print(json.dumps(s.to_dict(), indent=2) if args.json else s.table())
    return 0


def _add_summary(sub) -> None:
    p = sub.add_parser("summary", help="per-layer table: output shapes, parameters, multiply-adds",
                       description="Print one row per layer (output shape, parameters, multiply-adds) "
                                   "and the totals.")
    p.add_argument("model", help="model name (`alexnet models` lists them)")
    p.add_argument("--num-classes", type=int,
                   help="output classes (default: 10 for the small-input models, 1000 for the others)")
    p.add_argument("--input-size", metavar="C,H,W", help="input size (default: the model's own)")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="model option, repeatable (e.g. --opt towers=1 --opt lrn=false)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_summary)


def _models(args) -> int:
    rows = []
    for name in list_models():
        cfg = model_cfg(name)
        size = "from the data" if cfg.sized_by_data else "x".join(map(str, cfg.input_size))
        opts = ", ".join(f"{k}={v!r}" for k, v in model_options(name).items())
        rows.append([name, size, cfg.recipe, opts])
    print(format_table(["model", "input", "recipe", "options (defaults)"], rows, align="llll"))
    return 0


def _recipes(args) -> int:
    print(recipe_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alexnet", description="AlexNet (Krizhevsky, Sutskever & Hinton, 2012): train, evaluate, "
                                    "predict, inspect and benchmark.")
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_train_parser(sub)
    add_evaluate_parser(sub)
    add_predict_parser(sub)
    _add_summary(sub)
    sub.add_parser("models", help="list the models and their options").set_defaults(func=_models)
    sub.add_parser("recipes", help="the training recipes side by side").set_defaults(func=_recipes)
    add_data(sub)
    add_bench(sub)
    add_serve(sub)
    add_export(sub)
    add_features(sub)
    add_experiment(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"alexnet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alexnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
