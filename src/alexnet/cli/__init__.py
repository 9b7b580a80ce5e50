"""The ``alexnet`` command: the top of the package. Every command's flags live in this package, each
module beside the others by what it drives; this file assembles them and turns bad input into one line
on stderr and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys

from .._version import __version__
from ..errors import UserError
from ..files import DiskFullError, printable
from .bench import add_bench_parser
from .data import add_parser as add_data_parser
from .experiment import add_experiment_parser
from .inference import add_evaluate_parser, add_export_parser, add_features_parser, add_predict_parser
from .models import add_summary_parser, add_zoo_parsers
from .serve import add_serve_parser
from .train import add_train_parser


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (exit code 2), as every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="alexnet", description="AlexNet (Krizhevsky, Sutskever & Hinton, 2012): train, evaluate, "
                                    "predict, inspect and benchmark.")
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_train_parser(sub)
    add_evaluate_parser(sub)
    add_predict_parser(sub)
    add_summary_parser(sub)
    add_zoo_parsers(sub)
    add_data_parser(sub)
    add_bench_parser(sub)
    add_serve_parser(sub)
    add_export_parser(sub)
    add_features_parser(sub)
    add_experiment_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, DiskFullError) as e:
        print(f"alexnet: error: {printable(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alexnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
