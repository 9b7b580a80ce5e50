"""Loading a trained model: a run directory, one of its checkpoints, or any weights file, with its
classes and the preprocessing it was trained with; and the images of a dataset split as that model reads
them.

A run directory holds two checkpoints; which one stands for the run follows the rule training reports
by (:func:`alexnet.data.selection.reported_weights`): :func:`run_weights` picks it for the split the
numbers will be measured on, or, given none, for the split the run itself reported. Evaluation,
ensembles, prediction, export and features load run directories through it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from ..data.base import ImageSet
from ..data.decode import ImageDecodeError
from ..data.folder import FolderImageSet
from ..data.selection import WeightsChoice, reported_weights
from ..data.transforms import Normalization, Preset, PresetError, preset_from_spec
from ..errors import UserError
from ..models import create_model
from ..models.base import ImageClassifier
from ..models.weights import load_pretrained, load_weights


@dataclass
class Loaded:
    model: ImageClassifier
    preset: dict  # Preset.to_dict() of the training preset
    classes: list[str]
    class_names: list[str]
    data: str | None
    name: str
    options: dict = field(default_factory=dict)  # the model's options (create_model keywords)
    weights: str = ""  # a run directory's: which checkpoint was loaded, and why (empty for a file given)


def _read_json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def run_weights(run_dir: str | Path, split: str | None = None) -> tuple[Path, WeightsChoice]:
    """The checkpoint that stands for run directory ``run_dir`` on ``split`` (the split that will be
    reported, after a missing test split fell back to val; default: the split the run reported, from its
    results.json), and why: :func:`alexnet.data.selection.reported_weights`. What shows a run's model
    without naming a split (prediction, export, the explorer) takes this file by default."""
    run_dir = Path(run_dir)
    if split is None:
        split = _read_json(run_dir / "results.json").get("test_split")
        split = split if isinstance(split, str) else None
    best, last = run_dir / "checkpoints" / "best.pt", run_dir / "checkpoints" / "last.pt"
    choice = reported_weights(split, has_best=best.is_file())
    path = best if choice.which == "best" else last
    if not path.is_file():
        if best.is_file() and split is None:  # nothing reported yet: the weights it has
            return best, WeightsChoice("best", "the run has reported on no split yet and has no last.pt")
        if best.is_file():
            raise CheckpointError(f"{run_dir} has no checkpoints/last.pt, and its best.pt was chosen on "
                                  f"{split}, the split reported; give {best} itself to use it anyway")
        find_checkpoint(run_dir)  # neither: its one-line error
    return path, choice


def _epoch(ckpt: dict) -> str:
    """" (epoch N)" of a checkpoint that records its epoch (a file saved by hand may not)."""
    return f" (epoch {ckpt['epoch']})" if isinstance(ckpt.get("epoch"), int) else ""


def recorded_data(path: str | Path, model_name: str | None = None) -> str | None:
    """The dataset a run directory, checkpoint or weights file records having been trained on (None: a
    plain weights file says nothing)."""
    p = Path(path)
    if p.is_dir():
        name = _read_json(p / "config.json").get("data", {})
        if isinstance(name, dict) and isinstance(name.get("name"), str):
            return name["name"]
        return load_checkpoint(find_checkpoint(p)).get("data")
    return load_trained(str(path), model_name=model_name).data


def load_trained(path: str, *, model_name: str | None = None, split: str | None = None) -> Loaded:
    """A run directory, one of our checkpoints, or any weights file (torchvision's ``.pth``, an
    exported ``.safetensors``; see :func:`alexnet.models.weights.load_weights`), with its classes and
    evaluation preset. ``model_name``, when given, must be the model the file holds. Of a run directory
    the checkpoint :func:`run_weights` picks for ``split`` is loaded, and ``Loaded.weights`` says which
    and why."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"no such run directory, checkpoint or weights file: {p}")
    if p.is_dir():
        file, choice = run_weights(p, split)
        ckpt = load_checkpoint(file)
        if model_name is not None and model_name != ckpt["model_name"]:
            raise CheckpointError(f"{p} holds {ckpt['model_name']} weights, not {model_name}")
        model = create_model(ckpt["model_name"], num_classes=ckpt["num_classes"], **ckpt["model_options"])
        load_pretrained(model, ckpt["model"], where=str(p))
        loaded = Loaded(model, ckpt["preset"], list(ckpt["classes"]), list(ckpt["class_names"]),
                        ckpt.get("data"), f"{p}", dict(ckpt["model_options"]),
                        f"{file.name}{_epoch(ckpt)}: {choice.why}")
        return _check_fits(loaded)
    model = load_weights(p, model_name)
    cfg = model.pretrained_cfg
    preset = cfg.preset if cfg.preset is not None else default_preset(model)
    if isinstance(preset, str):
        try:
            preset = preset_from_spec(preset).to_dict()
        except PresetError as e:
            raise CheckpointError(f"{p}: {e}") from None
    return _check_fits(Loaded(model, preset, list(cfg.classes), list(cfg.class_names), cfg.data, f"{p}",
                              dict(cfg.options)))


def _check_fits(loaded: Loaded) -> Loaded:
    """The preset must be one and make the inputs the model takes: one line naming both sides otherwise."""
    c, h, _ = loaded.model.input_size
    try:
        preset = Preset.from_dict(loaded.preset, train=False)
    except PresetError as e:
        raise CheckpointError(f"{loaded.name}: {e}") from None
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
