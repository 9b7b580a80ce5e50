"""Loading a trained model: a run directory, one of its checkpoints, or any weights file, with its
classes and the preprocessing it was trained with; and the images of a dataset split as that model reads
them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from ..data.base import ImageSet
from ..data.decode import ImageDecodeError
from ..data.folder import FolderImageSet
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


def load_trained(path: str, *, model_name: str | None = None) -> Loaded:
    """A run directory, one of our checkpoints, or any weights file (torchvision's ``.pth``, an
    exported ``.safetensors``; see :func:`alexnet.models.weights.load_weights`), with its classes and
    evaluation preset. ``model_name``, when given, must be the model the file holds."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"no such run directory, checkpoint or weights file: {p}")
    if p.is_dir():
        ckpt = load_checkpoint(find_checkpoint(p))
        if model_name is not None and model_name != ckpt["model_name"]:
            raise CheckpointError(f"{p} holds {ckpt['model_name']} weights, not {model_name}")
        model = create_model(ckpt["model_name"], num_classes=ckpt["num_classes"], **ckpt["model_options"])
        load_pretrained(model, ckpt["model"], where=str(p))
        loaded = Loaded(model, ckpt["preset"], list(ckpt["classes"]), list(ckpt["class_names"]),
                        ckpt.get("data"), f"{p}", dict(ckpt["model_options"]))
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
