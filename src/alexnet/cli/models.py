"""``alexnet summary``, ``models`` and ``recipes``: what the zoo and the recipes hold."""

from __future__ import annotations

import json

from ..cliargs import format_table, parse_input_size, parse_kv
from ..errors import UserError
from ..models import check_options, create_model, data_options, list_models, model_cfg, model_options
from ..models.summary import summarize
from ..training.recipes import RECIPE_FIELDS, RECIPE_MODEL_OPTIONS, RECIPES


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


def add_summary_parser(sub) -> None:
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




def recipe_table() -> str:
    """The recipes side by side, one row per option they set."""
    names = list(RECIPES)
    rows = [[key, *(RECIPES[r][key] for r in names)] for key in RECIPE_FIELDS]
    rows += [[f"--opt {key}", *(RECIPE_MODEL_OPTIONS.get(r, {}).get(key, "model's") for r in names)]
             for key in sorted({k for opts in RECIPE_MODEL_OPTIONS.values() for k in opts})]
    return format_table(["option", *names], rows, align="l" * (len(names) + 1))


def _recipes_table(args) -> int:
    print(recipe_table())
    return 0


def add_zoo_parsers(sub) -> None:
    """``alexnet models`` and ``alexnet recipes``."""
    sub.add_parser("models", help="list the models and their options").set_defaults(func=_models)
    sub.add_parser("recipes", help="the training recipes side by side").set_defaults(func=_recipes_table)
