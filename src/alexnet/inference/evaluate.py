"""Using trained models on data: the accuracy of one model or an ensemble on a dataset split (what
``alexnet evaluate`` prints), and the top classes of image files (``alexnet predict``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Iterator

import torch

from ..data import build_source
from ..data.decode import ImageDecodeError, open_image
from ..data.loader import EpochLoader, batch_indices
from ..data.transforms import Preset
from ..errors import UserError
from ..evaluation import EvalResult, Member, evaluate, probabilities
from ..files import printable
from ..runtime import amp_warning, pick_device, prepare_model
from .analysis import top_classes
from .load import Loaded, load_trained, recorded_data, split_for

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
class Evaluation:
    """What :func:`evaluate_models` measured: one result per model, then the ensemble's (with several)."""

    results: list[EvalResult]
    class_names: list[str]
    data: str  # the dataset's name
    split: str  # the split evaluated (test falls back to val)
    tta: str
    weights: dict[str, str] = field(default_factory=dict)  # each run directory: which checkpoint, and why


def members(loaded: list[Loaded], device: torch.device, *, amp: str = "off", channels_last: bool = False,
            tta: str = "center", compile_frozen: bool = False) -> list[Member]:
    """The loaded models on ``device``, each with its evaluation preset and ``tta`` views."""
    warning = amp_warning(device, amp)
    if warning:
        print(f"alexnet: {warning}", file=sys.stderr)
    out = []
    for item in loaded:
        net = prepare_model(item.model.eval(), device, channels_last=channels_last,
                            compile_frozen=compile_frozen)
        out.append(Member(net, Preset.from_dict(item.preset, train=False, tta=tta), amp, channels_last,
                          item.name))
    return out


def evaluate_models(paths: list[str], data: str | None = None, *, split: str = "test", tta: str = "center",
                    batch_size: int = 64, workers: int = 0, device: str = "auto", amp: str = "off",
                    channels_last: bool = False, compile_frozen: bool = False,
                    model_name: str | None = None) -> Evaluation:
    """Top-1 / top-5 accuracy of each run, checkpoint or weights file in ``paths`` on ``split`` of
    ``data`` (default: the dataset the first was trained on) and, with several, of their average
    softmax (the paper's ensembles). Of a run directory, the checkpoint its split may report
    (:func:`~alexnet.inference.load.run_weights`): its last weights on val, which chose best.pt."""
    dev = pick_device(device)
    spec = data or recorded_data(paths[0], model_name)
    if spec is None:
        raise UserError("--data is needed to evaluate a plain weights file")
    source = build_source(spec)
    reported = source.eval_split_name(split)
    loaded = [load_trained(p, model_name=model_name, split=reported) for p in paths]
    for item in loaded:
        if len(item.classes) != source.num_classes or (item.data and item.classes != source.classes):
            raise UserError(f"{item.name} was trained on {len(item.classes)} classes that do not match "
                            f"the {source.num_classes} classes of {source.name}")
    reads = {(i.preset.get("resize"), i.preset["base_size"]) for i in loaded}
    if len(reads) > 1:
        raise UserError("the models read image files differently (torchvision's resize and crop vs the "
                        "paper's squares); evaluate them separately")
    images = split_for(loaded[0], source, split)
    batches = batch_indices(len(images), batch_size, shuffle=False)
    models = members(loaded, dev, amp=amp, channels_last=channels_last, tta=tta,
                     compile_frozen=compile_frozen)
    results = evaluate(models, EpochLoader(images, batches, workers=workers), dev, source.num_classes)
    return Evaluation(results, source.class_names, source.name, reported, tta,
                      {item.name: item.weights for item in loaded if item.weights})


def _warn_if_tiny(path, side: int) -> None:
    """A picture much smaller than the model's input is blown up: say so (only the header is read)."""
    try:
        with open_image(path) as im:  # not a FIFO: the decoder says what is wrong with the file
            w, h = im.size
    except Exception:  # noqa: BLE001 - the decoder reports unreadable files itself
        return
    if min(w, h) < side // 2:
        print(f"alexnet: warning: {path} is {w}x{h} pixels; it was upscaled to {side}x{side}, so the "
              f"prediction says little", file=sys.stderr)


def predict_files(path: str, images: list[str], *, top_k: int = 5, tta: str = "center", device: str = "auto",
                  amp: str = "off", compile_frozen: bool = False,
                  model_name: str | None = None) -> Iterator[dict]:
    """The ``top_k`` classes of each image file, with their probabilities, by the model in ``path``, one
    ``{"image", "top"}`` per file as it is classified; a file that cannot be read yields
    ``{"image", "error"}``."""
    dev = pick_device(device)
    item = load_trained(path, model_name=model_name)
    if item.weights:  # a run directory: which of its checkpoints classifies, and why
        print(f"alexnet: {printable(item.name)}: {item.weights}", file=sys.stderr)
    member = members([item], dev, amp=amp, tta=tta, compile_frozen=compile_frozen)[0]
    channels = item.model.input_size[0]
    reader = Preset.from_dict(item.preset, train=False)
    k = min(top_k, len(item.classes))
    for image_path in images:
        try:
            _warn_if_tiny(image_path, reader.resize or reader.base_size)
            image = reader.load(image_path, channels)
        except ImageDecodeError as e:
            yield {"image": str(image_path), "error": str(e)}
            continue
        with torch.no_grad():
            probs = probabilities(member, image[None].to(dev))[0].cpu()
        yield {"image": str(image_path), "top": top_classes(probs, item.classes, item.class_names, k)}
