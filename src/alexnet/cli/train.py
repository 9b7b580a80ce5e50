"""``alexnet train``: its flags, made from :class:`alexnet.training.config.TrainConfig` (one flag per
field, grouped, with each recipe's default in the help); the work is in :mod:`alexnet.training.launch`."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..training.config import GROUPS, MINIMUM, TrainConfig
from ..training.launch import launch
from ..training.recipes import RECIPE_FIELDS, RECIPES
from .flags import bounded_int


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
            kind = bounded_int(MINIMUM[f.name]) if f.name in MINIMUM else _typed(meta["type"], f.name)
            g.add_argument(_flag(f.name), dest=f.name, type=kind,
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
