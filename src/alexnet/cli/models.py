"""``alexnet summary``, ``models``, ``recipes`` and ``import-keras``: what the zoo and the recipes hold, and
a Keras model's weights brought into the zoo."""

from __future__ import annotations

import json

from ..cliargs import format_table, parse_input_size, parse_kv
from ..errors import UserError
from ..inference.export import check_target, export
from ..inference.load import Loaded, default_preset
from ..models import check_options, create_model, data_options, list_models, model_cfg, model_options
from ..models.keras_import import keras_input_output, load_keras, read_keras_file
from ..models.summary import summarize
from ..models.weights import imagenet_class_names
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


def _import_keras(args) -> int:
    if not str(args.output).endswith(".safetensors"):
        raise UserError(f"{args.output}: import-keras writes a .safetensors file")
    check_target(args.output)  # before the (slow) read
    options = check_options(args.model, parse_kv(args.opt, what="model option"))
    keras_model = read_keras_file(args.source)
    (h, w, c), num_classes = keras_input_output(keras_model)
    sized = data_options(args.model, c, h) if h == w else {}
    options = {**sized, **options}
    model = load_keras(create_model(args.model, num_classes=num_classes, **options), keras_model)
    classes = imagenet_class_names() if num_classes == 1000 else [str(i) for i in range(num_classes)]
    loaded = Loaded(model, default_preset(model), classes, classes, None, str(args.source), options)
    out = export(loaded, "safetensors", args.output)
    print(f"wrote {out['path']} ({out['bytes'] / 1e6:.1f} MB): {args.model} with the weights of "
          f"{args.source}, logits within 1e-4 of Keras's; reloaded: max abs diff {out['max_abs_diff']:.2g}")
    return 0


def add_zoo_parsers(sub) -> None:
    """``alexnet models``, ``alexnet recipes`` and ``alexnet import-keras``."""
    sub.add_parser("models", help="list the models and their options").set_defaults(func=_models)
    sub.add_parser("recipes", help="the training recipes side by side").set_defaults(func=_recipes_table)
    p = sub.add_parser("import-keras", help="a Keras 3 model's weights (.keras) as a .safetensors file",
                       description="Copy the Conv2D and Dense weights of a saved Keras 3 model into a "
                                   "model of the zoo (kernels transposed, fc6's inputs reordered from NHWC "
                                   "to NCHW), check that both give the same logits, and write it with its "
                                   "model name, options and classes (needs: pip install "
                                   "'alexnet[keras,export]').")
    p.add_argument("source", help="the .keras file")
    p.add_argument("-o", "--output", required=True, metavar="FILE.safetensors", help="file to write")
    p.add_argument("--model", default="keras-alexnet",
                   help="the zoo's model with the same layers (default: keras-alexnet, the Keras lesson's)")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="model option, repeatable (the small models' in_chans / img_size follow the file)")
    p.set_defaults(func=_import_keras)
