"""``alexnet evaluate``, ``predict``, ``export`` and ``features``: their flags and output; the work is in
:mod:`alexnet.inference`."""

from __future__ import annotations

import csv
import io
import json
import sys

from ..cliargs import format_table
from ..errors import UserError
from ..files import printable
from ..inference.evaluate import PAPER_ROWS, evaluate_models, predict_files
from ..inference.export import CHECK_BATCHES, FORMATS, check_target, export, output_format
from ..inference.features import dataset_features, save_npz
from ..inference.load import load_trained
from .flags import (add_amp, add_batch_size, add_device, add_json, add_quiet, add_source, add_workers,
                    bounded_int)


def _common_eval_flags(p) -> None:
    p.add_argument("--model", help="the model a weights file must hold (default: found from the file)")
    p.add_argument("--tta", choices=("center", "10crop"), default="center",
                   help="test views: the centre crop, or the paper's ten patches (softmax averaged)")
    add_device(p)
    add_amp(p)
    p.add_argument("--compile-frozen", action="store_true",
                   help="compile with the weights frozen into the graph (oneDNN prepacking on the CPU): "
                        "pays over many batches, costs a compilation first")


def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate",
                       help="top-1 / top-5 accuracy and error of checkpoints (several: an ensemble)",
                       description="Evaluate one or more run directories / checkpoints. With several, each "
                                   "member and the average of their softmax outputs (the paper's ensembles) "
                                   "are reported.")
    p.add_argument("checkpoints", nargs="*", metavar="RUN_DIR_OR_CHECKPOINT")
    p.add_argument("--weights", action="append", default=[], metavar="PATH",
                   help="a weights file (torchvision's .pth, an exported .safetensors), repeatable")
    p.add_argument("--data", help="dataset spec (default: the one the first model was trained on)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="split to evaluate (test falls back to val when a dataset has none)")
    add_batch_size(p)
    add_workers(p)
    p.add_argument("--channels-last", action="store_true", help="NHWC memory layout")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    p.add_argument("--paper", action="store_true", help="print the paper's reference rows alongside")
    _common_eval_flags(p)
    p.set_defaults(func=_evaluate)


def _evaluate(args) -> int:
    paths = args.checkpoints + args.weights
    if not paths:
        raise UserError("give a run directory, a checkpoint or --weights PATH")
    ev = evaluate_models(paths, args.data, split=args.split, tta=args.tta, batch_size=args.batch_size,
                         workers=args.workers, device=args.device, amp=args.amp,
                         channels_last=args.channels_last, compile_frozen=args.compile_frozen,
                         model_name=args.model)
    if args.format == "csv":  # the rows stay a plain table; which weights, and why, go beside them
        for name, why in ev.weights.items():
            print(f"alexnet: {printable(name)}: {why}", file=sys.stderr)
    print(format_results(ev.results, ev.class_names, fmt=args.format, split=ev.split, tta=ev.tta,
                         data=ev.data, paper=args.paper, weights=ev.weights))
    return 0


def format_results(results, class_names, *, fmt: str, split: str, tta: str, data: str, paper: bool,
                   weights: dict[str, str] | None = None) -> str:
    """``alexnet evaluate``'s output: a table with per-class accuracy, JSON or CSV. ``weights``: which
    checkpoint of each run directory was evaluated, and why (in the table and the JSON)."""
    rows = [r.to_dict() for r in results]
    k = rows[0]["topk"]
    weights = weights or {}
    if fmt == "json":
        out = {"data": data, "split": split, "tta": tta, "results": rows, "weights": weights,
               "per_class_accuracy": {r.name: dict(zip(class_names, r.per_class_accuracy)) for r in results}}
        if paper:
            out["paper"] = [{"name": n, "top1_error": a / 100, "top5_error": b / 100} for n, a,
                            b in PAPER_ROWS]
        return json.dumps(out, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")  # Unix line ends, as our other output
        w.writerow(["name", "images", "top1_accuracy", "top1_error", f"top{k}_accuracy", f"top{k}_error",
                    "loss"])
        for r in rows:
            w.writerow([r["name"], r["count"], f"{r['top1_accuracy']:.6f}", f"{r['top1_error']:.6f}",
                        f"{r['top5_accuracy']:.6f}", f"{r['top5_error']:.6f}", f"{r['loss']:.6f}"])
        if paper:
            for n, a, b in PAPER_ROWS:
                w.writerow([n, "", f"{1 - a / 100:.6f}", f"{a / 100:.6f}", f"{1 - b / 100:.6f}",
                            f"{b / 100:.6f}", ""])
        return buf.getvalue().rstrip("\n")
    lines = [f"{data}, {split} split, {rows[0]['count']} images, test views: {tta}"]
    lines += [f"weights of {printable(name)}: {why}" for name, why in weights.items()] + [""]
    body = [[r["name"] if len(r["name"]) <= 40 else "..." + r["name"][-37:],
             *(f"{100 * r[key]:.2f}%" for key in ("top1_error", "top5_error", "top1_accuracy",
                                                  "top5_accuracy"))]
            for r in rows]
    paper_rows = [[n, f"{a:.2f}%", f"{b:.2f}%", f"{100 - a:.2f}%", f"{100 - b:.2f}%"] for n, a,
                  b in PAPER_ROWS]
    lines.append(format_table(["model", "top-1 err", f"top-{k} err", "top-1 acc", f"top-{k} acc"], body,
                              footer=paper_rows if paper else ()))
    if paper and not data.startswith(("imagenet", "store:")):
        lines.append(f"(the paper's rows are ILSVRC results with 1,000 classes: not comparable with {data})")
    per_class = results[-1].per_class_accuracy
    if len(per_class) <= 30:
        lines += ["", f"per-class top-1 accuracy ({results[-1].name}):"]
        lines += [f"  {name:24s} {'-' if acc is None else f'{100 * acc:6.2f}%'}"
                  for name, acc in zip(class_names, per_class)]
    else:
        worst = sorted((a, n) for n, a in zip(class_names, per_class) if a is not None)[:10]
        lines += ["", f"ten hardest classes ({results[-1].name}):"]
        lines += [f"  {n:24s} {100 * a:6.2f}%" for a, n in worst]
    return "\n".join(lines)


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="top-5 classes, with probabilities, of image files",
                       description="Classify image files (JPEG, PNG, ...; any size, grayscale or colour) "
                                   "with the same preprocessing as evaluation.")
    p.add_argument("checkpoint", nargs="?", metavar="RUN_DIR_OR_CHECKPOINT", help="(omit it with --weights)")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--weights", metavar="PATH", help="a weights file (torchvision's .pth, an exported "
                                                     ".safetensors) instead of a run directory")
    p.add_argument("--top-k", type=bounded_int(1), default=5, help="classes to show per image")
    add_json(p, "print JSON")
    _common_eval_flags(p)
    p.set_defaults(func=_predict)


def _predict(args) -> int:
    checkpoint, images = args.checkpoint, args.images
    if args.weights:  # the first positional was an image
        checkpoint, images = args.weights, [p for p in (args.checkpoint, *args.images) if p]
    if not checkpoint:
        raise UserError("give a run directory, a checkpoint or --weights PATH")
    if not images:
        raise UserError("no image files given")
    outputs, failures = [], 0
    for out in predict_files(checkpoint, images, top_k=args.top_k, tta=args.tta, device=args.device,
                             amp=args.amp, compile_frozen=args.compile_frozen, model_name=args.model):
        if "error" in out:
            print(f"alexnet: error: {printable(out['error'])}", file=sys.stderr)
            failures += 1
        elif args.json:
            outputs.append(out)
        else:
            print(printable(out["image"]))
            for p in out["top"]:
                print(f"  {p['rank']}. {p['name']:30s} {100 * p['probability']:6.2f}%")
    if args.json:
        print(json.dumps(outputs, indent=2))
    return 2 if failures else 0


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="write a model as ONNX, torch.export (.pt2) or safetensors",
                       description="Export a run directory, checkpoint or weights file. ONNX and .pt2 take "
                                   "float32 (N, C, H, W) images with any batch size N; every format carries "
                                   "the model name, options, classes and preprocessing.")
    add_source(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    p.add_argument("--format", choices=tuple(FORMATS),
                   help="default: from the output's extension, which must agree with it (.onnx, .pt2, "
                        ".safetensors)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument("--no-check", action="store_true",
                   help="skip running the file at batch 1 and 7 against PyTorch before writing it")
    p.set_defaults(func=_export)


def _export(args) -> int:
    fmt = output_format(args.output, args.format)  # before the (slow) load
    check_target(args.output)
    loaded = load_trained(args.source, model_name=args.model)
    if loaded.weights:
        print(f"alexnet: {printable(loaded.name)}: {loaded.weights}", file=sys.stderr)
    out = export(loaded, fmt, args.output, opset=args.opset, check=not args.no_check)
    runner = {"onnx": "onnxruntime", "pt2": "torch.export.load", "safetensors": "reloaded"}[fmt]
    replaced = ", replacing the file that was there" if out["replaced"] else ""
    line = f"wrote {out['path']} ({fmt}, {out['bytes'] / 1e6:.1f} MB{replaced})"
    if out["max_abs_diff"] is not None:
        line += (f"; {runner} vs PyTorch at batch {' and '.join(map(str, CHECK_BATCHES))}: "
                 f"max abs diff {out['max_abs_diff']:.2g}")
    print(line)
    return 0


def add_features_parser(sub) -> None:
    p = sub.add_parser("features", help="write a layer's activations for a whole dataset to .npz",
                       description="Run a model over a dataset split and save one vector per image "
                                   "(features), its label (labels) and its file (files) to an .npz file.")
    add_source(p)
    p.add_argument("--data", help="dataset spec (default: the one the model was trained on)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default: test)")
    p.add_argument("--layer", default="fc7", help="conv1..conv5, pool5, fc6, fc7, fc8 or a module path")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the .npz file to write")
    add_batch_size(p)
    add_device(p)
    add_workers(p)
    add_quiet(p)
    p.set_defaults(func=_features)


def _features(args) -> int:
    check_target(args.output)  # before the slow part
    fs = dataset_features(args.source, args.data, layer=args.layer, split=args.split,
                          batch_size=args.batch_size, device=args.device, workers=args.workers,
                          model_name=args.model, progress=not args.quiet)
    save_npz(fs, args.output)
    for where in fs.skipped:
        print(f"alexnet: skipped unreadable {printable(where)}", file=sys.stderr)
    n, d = fs.features.shape
    print(f"wrote {printable(args.output)}: {n} x {d} {args.layer} features, labels and file names")
    return 0
