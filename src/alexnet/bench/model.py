"""``alexnet bench train|infer``: model throughput against a plain-PyTorch reference."""


def add_parsers(bsub) -> None:
    bsub.add_parser("train", help="training throughput (not built yet)")
    bsub.add_parser("infer", help="inference throughput (not built yet)")
