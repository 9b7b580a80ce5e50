"""The ``alexnet`` command: train, evaluate, predict, summary, data, bench.

Each command lives with the code it drives and registers itself through ``add_parser``; this
module only assembles them and turns bad input into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import UserError


def parse_kv(items: list[str] | None) -> dict:
    """``["towers=1", "lrn=false", "dropout=0.3"]`` -> ``{"towers": 1, "lrn": False, "dropout": 0.3}``."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        low = value.lower()
        if low in ("true", "false", "on", "off", "yes", "no"):
            out[key] = low in ("true", "on", "yes")
            continue
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                pass
        else:
            out[key] = value
    return out


def parse_input_size(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--input-size takes C,H,W (e.g. 3,227,227), got {text!r}") from None
    return c, h, w


def _summary(args) -> int:
    from .models import create_model
    from .models.summary import summarize

    options = parse_kv(args.opt)
    size = parse_input_size(args.input_size) if args.input_size else None
    if size and args.model in ("alexnet-small", "lenet5"):
        if size[1] != size[2]:
            raise UserError(f"{args.model} takes square inputs, got {size[1]}x{size[2]}")
        options.setdefault("in_chans", size[0])
        options.setdefault("img_size", size[1])
    model = create_model(args.model, num_classes=args.num_classes, **options)
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
    p.add_argument("--num-classes", type=int, default=1000, help="output classes (default: 1000)")
    p.add_argument("--input-size", metavar="C,H,W", help="input size (default: the model's own)")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="model option, repeatable (e.g. --opt towers=1 --opt lrn=false)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_summary)


def _models(args) -> int:
    from .models import list_models, model_options

    for name in list_models():
        opts = ", ".join(f"{k}={v!r}" for k, v in model_options(name).items())
        print(f"{name:14s} {opts}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .bench import add_parser as add_bench
    from .data.cli import add_parser as add_data
    from .export import add_parser as add_export
    from .features import add_parser as add_features
    from .train.cli import add_evaluate_parser, add_predict_parser, add_train_parser

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
    add_data(sub)
    add_bench(sub)
    add_export(sub)
    add_features(sub)
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
