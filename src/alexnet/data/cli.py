"""``alexnet data``: synth, prepare, check, stats."""


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="dataset tools: synth, prepare, check, stats")
    p.add_subparsers(dest="data_command", metavar="WHAT")
