"""``alexnet bench``: data-pipeline and model throughput, each against a reference measured in the
same run."""

from __future__ import annotations

from ..web.bench import add_parser as add_serve
from .data import add_parser as add_data
from .e2e import add_parser as add_e2e
from .model import add_parsers as add_model


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks: data pipeline, training and inference speed")
    bsub = p.add_subparsers(dest="bench", metavar="WHAT", required=True)
    add_data(bsub)
    add_model(bsub)
    add_serve(bsub)
    add_e2e(bsub)
