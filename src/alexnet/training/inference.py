"""Using trained models: ``alexnet evaluate`` (one model or an ensemble) and ``alexnet predict``."""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..analysis import top_classes
from ..data import build_source
from ..data.decode import ImageDecodeError, load_image
from ..data.loader import EpochLoader, batch_indices
from ..data.transforms import Normalization, Preset
from ..cliargs import format_table
from ..errors import UserError
from ..models import create_model
from ..models.base import ImageClassifier
from ..models.weights import load_pretrained, read_state_dict
from ..runtime import amp_warning, pick_device, prepare_model
from .checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from .engine import Member, evaluate, probabilities

# Published top-1 / top-5 error in %: the paper's Table 1 (ILSVRC-2010 test) and Table 2 (ILSVRC-2012
# val); Caffe's models/bvlc_alexnet/readme.md; torchvision's AlexNet_Weights.IMAGENET1K_V1
# (100 - 56.522, 100 - 79.066).
PAPER_ROWS = [
    ("paper: ILSVRC-2010 test, 1 CNN", 37.5, 17.0),
    ("paper: ILSVRC-2012 val, 1 CNN", 40.7, 18.2),
    ("paper: ILSVRC-2012 val, 5 CNNs", 38.1, 16.4),
    ("Caffe bvlc_alexnet, centre crop", 42.9, 19.8),
    ("torchvision alexnet, centre crop", 43.5, 20.9),
]


@dataclass
class Loaded:
    model: ImageClassifier
    preset: dict  # Preset.to_dict() of the training preset
    classes: list[str]
    class_names: list[str]
    data: str | None
    name: str


def load_trained(path: str, *, model_name: str | None = None) -> Loaded:
    """A run directory or checkpoint of ours; or, with ``model_name``, a plain weights file
    (torchvision's, a .safetensors), which gets ImageNet's 256 -> centre-crop preprocessing."""
    p = Path(path)
    is_plain = p.is_file() and model_name is not None
    if not is_plain:
        try:
            ckpt = load_checkpoint(find_checkpoint(p))
        except CheckpointError as e:
            if p.is_file() and model_name is None and "not an alexnet checkpoint" in str(e):
                raise CheckpointError(f"{p} is not an alexnet checkpoint; for a plain weights file "
                                      f"(e.g. torchvision's) also pass --model NAME") from None
            raise
        model = create_model(ckpt["model_name"], num_classes=ckpt["num_classes"], **ckpt["model_options"])
        model.load_state_dict(ckpt["model"])
        return Loaded(model, ckpt["preset"], list(ckpt["classes"]), list(ckpt["class_names"]), ckpt["data"],
                      f"{p}")
    state = read_state_dict(p)
    heads = [k for k in state if k.startswith("classifier.") and k.endswith(".weight")]
    if not heads:
        raise UserError(f"{p} has no classifier weights for {model_name}")
    out = state[heads[-1]]  # the output layer comes last
    model = load_pretrained(create_model(model_name, num_classes=out.shape[0]), p)
    crop = model.input_size[-1]
    preset = Preset(train=False, crop=crop, base_size=256, norm=Normalization.torchvision()).to_dict()
    classes = [str(i) for i in range(out.shape[0])]
    return Loaded(model, preset, classes, classes, None, f"{p}")


def _members(loaded: list[Loaded], device, *, amp: str, channels_last: bool, tta: str,
             compile_frozen: bool = False) -> list[Member]:
    warning = amp_warning(device, amp)
    if warning:
        print(f"alexnet: {warning}", file=sys.stderr)
    members = []
    for item in loaded:
        net = prepare_model(item.model.eval(), device, channels_last=channels_last,
                            compile_frozen=compile_frozen)
        members.append(Member(net, Preset.from_dict(item.preset, train=False, tta=tta), amp, channels_last,
                              item.name))
    return members


def evaluate_command(args) -> int:
    device = pick_device(args.device)
    loaded = [load_trained(p, model_name=args.model) for p in args.checkpoints]
    spec = args.data or loaded[0].data
    if spec is None:
        raise UserError("--data is needed to evaluate a plain weights file")
    source = build_source(spec)
    for item in loaded:
        if len(item.classes) != source.num_classes or (item.data and item.classes != source.classes):
            raise UserError(f"{item.name} was trained on {len(item.classes)} classes that do not match "
                            f"the {source.num_classes} classes of {source.name}")
        if item.preset["base_size"] != source.base_size:
            raise UserError(f"{item.name} expects {item.preset['base_size']}-pixel images; "
                            f"{source.name} has {source.base_size}")
    split_name = source.eval_split_name(args.split)
    split = source.split(args.split)
    batches = batch_indices(len(split), args.batch_size, shuffle=False)
    members = _members(loaded, device, amp=args.amp, channels_last=args.channels_last, tta=args.tta,
                       compile_frozen=args.compile_frozen)
    results = evaluate(members, EpochLoader(split, batches, workers=args.workers), device, source.num_classes)
    print(format_results(results, source.class_names, fmt=args.format, split=split_name, tta=args.tta,
                         data=source.name, paper=args.paper))
    return 0


def format_results(results, class_names, *, fmt: str, split: str, tta: str, data: str, paper: bool) -> str:
    rows = [r.to_dict() for r in results]
    k = rows[0]["topk"]
    if fmt == "json":
        out = {"data": data, "split": split, "tta": tta, "results": rows,
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
    lines = [f"{data}, {split} split, {rows[0]['count']} images, test views: {tta}", ""]
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


def predict_command(args) -> int:
    device = pick_device(args.device)
    item = load_trained(args.checkpoint, model_name=args.model)
    member = _members([item], device, amp=args.amp, channels_last=False, tta=args.tta,
                      compile_frozen=args.compile_frozen)[0]
    channels, base = item.model.input_size[0], item.preset["base_size"]
    k = min(args.top_k, len(item.classes))
    failures, outputs = 0, []
    for path in args.images:
        try:
            image = load_image(path, base, channels)
        except ImageDecodeError as e:
            print(f"alexnet: error: {e}", file=sys.stderr)
            failures += 1
            continue
        with torch.no_grad():
            probs = probabilities(member, image[None].to(device))[0].cpu()
        preds = top_classes(probs, item.classes, item.class_names, k)
        outputs.append({"image": str(path), "top": preds})
        if not args.json:
            print(path)
            for p in preds:
                print(f"  {p['rank']}. {p['name']:30s} {100 * p['probability']:6.2f}%")
    if args.json:
        print(json.dumps(outputs, indent=2))
    return 2 if failures else 0
