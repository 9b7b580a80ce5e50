"""Using trained models: ``alexnet evaluate`` (one model or an ensemble) and ``alexnet predict``."""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..analysis import top_classes
from ..data import build_source
from ..data.base import ImageSet
from ..data.decode import ImageDecodeError
from ..data.folder import FolderImageSet
from ..data.loader import EpochLoader, batch_indices
from ..cliargs import format_table
from ..data.transforms import Normalization, Preset, preset_from_spec
from ..errors import UserError
from ..models import create_model
from ..models.base import ImageClassifier
from ..models.weights import load_weights
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
    options: dict = field(default_factory=dict)  # the model's options (create_model keywords)


def load_trained(path: str, *, model_name: str | None = None) -> Loaded:
    """A run directory, one of our checkpoints, or any weights file (torchvision's ``.pth``, an
    exported ``.safetensors``; see :func:`alexnet.models.weights.load_weights`), with its classes and
    evaluation preset. ``model_name``, when given, must be the model the file holds."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"no such run directory, checkpoint or weights file: {p}")
    if p.is_dir():
        ckpt = load_checkpoint(find_checkpoint(p))
        model = create_model(ckpt["model_name"], num_classes=ckpt["num_classes"], **ckpt["model_options"])
        model.load_state_dict(ckpt["model"])
        loaded = Loaded(model, ckpt["preset"], list(ckpt["classes"]), list(ckpt["class_names"]), ckpt["data"],
                        f"{p}", dict(ckpt["model_options"]))
        return _check_fits(loaded)
    model = load_weights(p, model_name)
    cfg = model.pretrained_cfg
    preset = cfg["preset"] if cfg["preset"] is not None else default_preset(model)
    if isinstance(preset, str):
        preset = preset_from_spec(preset).to_dict()
    return _check_fits(Loaded(model, preset, list(cfg["classes"]), list(cfg["class_names"]), cfg["data"],
                              f"{p}",
                              dict(cfg["options"])))


def _check_fits(loaded: Loaded) -> Loaded:
    """The preset must make the inputs the model takes: one line naming both sides otherwise."""
    c, h, _ = loaded.model.input_size
    preset = Preset.from_dict(loaded.preset, train=False)
    channels = preset.norm.mean.shape[0]
    if channels != c:
        raise UserError(f"{loaded.name}: the model ({loaded.model.name}) takes {c}-channel images but its "
                        f"preprocessing normalizes {channels} channel(s)")
    if preset.crop != h and loaded.model.min_size is None:
        raise UserError(f"{loaded.name}: the model ({loaded.model.name}) takes {h}x{h} inputs but its "
                        f"preprocessing crops {preset.crop}x{preset.crop}")
    return loaded


def default_preset(model: ImageClassifier) -> dict:
    """For weights that name no preset, the model's own evaluation: the centre crop of its
    ``default_cfg.eval_resize`` squares (photographs: 256), or of images its own size (small models),
    normalized as torchvision's ImageNet weights expect (a grey model: to [-1, 1])."""
    c, _, side = model.input_size
    base = model.default_cfg.eval_resize or side
    norm = Normalization.torchvision() if c == 3 else Normalization.per_channel([127.5], [255 * 0.5])
    return Preset(train=False, crop=side, base_size=base, norm=norm).to_dict()


class _ReadByPreset(ImageSet):
    """A folder split whose files are read by a preset's own decoding (torchvision's resize and crop)."""

    def __init__(self, split: FolderImageSet, preset: Preset):
        self.split, self.preset, self.targets = split, preset, split.targets

    def describe(self, index: int) -> str:
        return self.split.describe(index)

    def __getitem__(self, i):
        label = int(self.targets[i])
        try:
            return self.preset.load(self.split.path(i), self.split.channels), label
        except ImageDecodeError:
            return None, label


def split_for(item: Loaded, source, split_name: str) -> ImageSet:
    """The images of ``split_name`` as ``item``'s preset takes them: the source's stored squares, or
    the original files re-read by a preset with its own decoding (``resize``)."""
    split = source.split(split_name)
    if item.preset.get("resize") is None:
        if item.preset["base_size"] != source.base_size:
            raise UserError(f"{item.name} expects {item.preset['base_size']}-pixel images; "
                            f"{source.name} has {source.base_size}")
        return split
    if not isinstance(split, FolderImageSet):
        raise UserError(f"{item.name} is evaluated with torchvision's resize and crop of the original files; "
                        f"{source.name} holds images already resized (use a folder: or imagenet: dataset)")
    return _ReadByPreset(split, Preset.from_dict(item.preset, train=False))


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
    reads = {(i.preset.get("resize"), i.preset["base_size"]) for i in loaded}
    if len(reads) > 1:
        raise UserError("the models read image files differently (torchvision's resize and crop vs the "
                        "paper's squares); evaluate them separately")
    split_name = source.eval_split_name(args.split)
    split = split_for(loaded[0], source, args.split)
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


def _warn_if_tiny(path, side: int) -> None:
    """A picture much smaller than the model's input is blown up: say so (only the header is read)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - the decoder reports unreadable files itself
        return
    if min(w, h) < side // 2:
        print(f"alexnet: warning: {path} is {w}x{h} pixels; it was upscaled to {side}x{side}, so the "
              f"prediction says little", file=sys.stderr)


def predict_command(args) -> int:
    device = pick_device(args.device)
    item = load_trained(args.checkpoint, model_name=args.model)
    member = _members([item], device, amp=args.amp, channels_last=False, tta=args.tta,
                      compile_frozen=args.compile_frozen)[0]
    channels = item.model.input_size[0]
    reader = Preset.from_dict(item.preset, train=False)
    k = min(args.top_k, len(item.classes))
    failures, outputs = 0, []
    for path in args.images:
        try:
            _warn_if_tiny(path, reader.resize or reader.base_size)
            image = reader.load(path, channels)
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
