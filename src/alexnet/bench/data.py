"""``alexnet bench data``: images/s of the input pipeline against a plain Pillow reference."""


def add_parser(bsub) -> None:
    bsub.add_parser("data", help="input pipeline throughput (not built yet)")
