"""The training configuration: one dataclass, the single source of the command-line flags, and the one
function that resolves it.

Values are layered, later wins: the recipe (``--recipe``; by default the model's own) < a TOML/YAML/JSON
config file (``--config``) < the flags or keyword arguments given. What the data decides (the small
models' channels and size, the pad before small-image crops, whether mirrors keep the label) is filled
in from the data source. :func:`resolve_config` does all of it, before anything runs, and returns a
:class:`TrainConfig` with every value explicit: that is what ``config.json`` records.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path

import yaml

from ..cliargs import parse_kv
from ..data import DataSource, build_source
from ..data.transforms import LIGHTING_FORMS, MEAN_CROPS
from ..errors import UserError
from ..models import check_options, create_model, data_options, model_cfg, model_options
from ..runtime import check_cuda_graphs, pick_device
from .recipes import RECIPE_MODEL_OPTIONS, RECIPES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def opt(default, help: str, group: str, *, kind: type | None = None, **extra):
    """A field with its flag's help text and group; ``kind`` is its type when the default is None."""
    kind = kind or type(default)
    return field(default=default, metadata={"help": help, "group": group, "type": kind, **extra})


GROUPS = {
    "run": "run",
    "model": "model",
    "data": "data and augmentation",
    "optim": "optimization",
    "speed": "speed",
}
FROM_RECIPE = "from the recipe"
FROM_DATA = "from the data"


@dataclass
class TrainConfig:
    """Every option of a training run. ``None`` means "not decided yet" (the recipe or the data
    decides it in :func:`resolve_config`); a resolved config holds no ``None``."""

    # run
    recipe: str = opt(None, "named set of defaults (default: the model's own; `alexnet models` shows it)",
                      "run", kind=str, choices=tuple(RECIPES))
    name: str = opt(None, "run name; the run is written to OUT/NAME (default: a timestamp)", "run", kind=str)
    out: str = opt("runs", "folder that holds the run directories", "run")
    seed: int = opt(0, "seed for initialization, data order, augmentation and dropout", "run")
    quiet: bool = opt(False, "no progress bars; one line per epoch only", "run")
    save_every: int = opt(0, "also checkpoint every N steps inside an epoch (0: at epoch ends only)", "run")
    # model
    model: str = opt("alexnet-small", "model name (`alexnet models` lists them)", "model")
    model_opts: dict = opt(None, "model option as KEY=VALUE, repeatable (e.g. --opt lrn=false)", "model",
                           kind=dict, flag="--opt", metavar="KEY=VALUE")
    pretrained: str = opt("", "start from these weights (a run directory, one of its checkpoints, a "
                              "torchvision .pth or a .safetensors file); the output layer is "
                              "re-initialized when the class count differs", "model")
    freeze: str = opt("none", "features: keep the convolutional trunk as loaded (with --pretrained) and "
                              "train only the fully connected layers; none: train everything", "model",
                      choices=("none", "features"))
    doctor: str = opt("on", "the training doctor (docs/doctor.md): each layer's health every epoch in "
                            "metrics.jsonl, and a warning when the loss sits at chance, activations explode "
                            "or vanish, or a layer's ReLUs die; it never stops the run", "run",
                      choices=("on", "off"))
    doctor_steps: int = opt(200, "steps the training loss must sit at chance, ln(classes), before the doctor "
                                 "says so", "run")
    tensorboard: bool = opt(False, "also write TensorBoard event files (scalars per epoch, conv1 kernels) to "
                                   "RUN/tensorboard (needs: pip install tensorboard)", "run")
    # data
    data: str = opt("digits", "dataset spec: digits, synthetic, a folder, cifar10:PATH, mnist:PATH, "
                              "store:PATH, ...", "data")
    batch_size: int = opt(None, "images per optimizer step, over all processes", "data", kind=int)
    workers: int = opt(0, "data loading worker processes (0: in the main process)", "data")
    normalize: str = opt(None, "paper: subtract the training set's mean image; channel: its per-channel "
                               "mean; standard: per-channel mean and std; imagenet: torchvision's fixed "
                               "ImageNet mean and std", "data", kind=str,
                         choices=("paper", "channel", "standard", "imagenet"))
    crop: str = opt(None, "training crops: random (the paper's) or random-resized (torchvision's)", "data",
                    kind=str, choices=("random", "random-resized"))
    pad: int = opt(None, "zero padding before random crops (default from the data: 2 pixels for 28x28 "
                         "images, 4 for 32x32, none for photographs)", "data", kind=int)
    flip: str = opt(None, "random horizontal flips (default from the data: on unless a mirror changes the "
                          "label, as for digits)", "data", kind=str, choices=("on", "off"))
    lighting: str = opt(None, "PCA lighting: none, data (eigen-decomposition of the training set), "
                              "imagenet (the published constants)", "data", kind=str,
                        choices=("none", "data", "imagenet"))
    lighting_std: float = opt(None, "standard deviation of the lighting coefficients alpha", "data",
                              kind=float)
    lighting_form: str = opt(None, "paper: eigvec @ (alpha * eigval) as the paper prints it; cuda-convnet2: "
                                   "eigvec @ (alpha * sqrt(eigval)) and the batch x 1/(1 + std), as "
                                   "Krizhevsky's convdata.py", "data", kind=str, choices=LIGHTING_FORMS)
    mean_crop: str = opt(None, "with --normalize paper: subtract the mean image cropped like the image "
                               "(same, Caffe) or its centre crop (center, cuda-convnet2)", "data", kind=str,
                         choices=MEAN_CROPS)
    stats_images: int = opt(0, "images used for mean / PCA statistics (0: the whole training split)", "data")
    tta: str = opt(None, "test views for the final evaluation: center or 10crop", "data", kind=str,
                   choices=("center", "10crop"))
    # optimization
    epochs: int = opt(None, "passes over the training split", "optim", kind=int)
    optimizer: str = opt(None, "paper-sgd (the paper's update rule) or sgd (torch.optim.SGD)", "optim",
                         kind=str, choices=("paper-sgd", "sgd"))
    lr: float = opt(None, "learning rate", "optim", kind=float)
    momentum: float = opt(None, "momentum", "optim", kind=float)
    weight_decay: float = opt(None, "weight decay (L2)", "optim", kind=float)
    bias_lr_mult: float = opt(None, "learning-rate multiplier of the biases (Caffe's lr_mult: 2)", "optim",
                              kind=float)
    bias_decay_mult: float = opt(None, "weight-decay multiplier of the biases (Caffe's decay_mult: 0)",
                                 "optim", kind=float)
    schedule: str = opt(None, "learning-rate schedule: plateau (divide by 10 when val error stalls), step, "
                              "cosine, dexp (cuda-convnet2's fixed stages), constant", "optim", kind=str,
                        choices=("plateau", "step", "cosine", "dexp", "constant"))
    warmup_epochs: int = opt(None, "linear learning-rate warm-up epochs (cosine schedule)", "optim", kind=int)
    patience: int = opt(None, "plateau: epochs without a better val error before the lr drops", "optim",
                        kind=int)
    max_drops: int = opt(None, "plateau: at most this many drops", "optim", kind=int)
    plateau_threshold: float = opt(None, "plateau: a val top-1 error lower than the best by more than this "
                                         "many percentage points counts as an improvement", "optim",
                                   kind=float)
    lr_factor: float = opt(None, "plateau / step: multiply the lr by this at a drop", "optim", kind=float)
    step_size: int = opt(None, "step: drop the lr every this many epochs", "optim", kind=int)
    dexp_factor: float = opt(None, "dexp: the weights' lr goes from lr to lr / this factor over the run "
                                   "(cuda-convnet2's tgtFactor)", "optim", kind=float)
    dexp_steps: int = opt(None, "dexp: in this many equal stages (cuda-convnet2's numSteps)", "optim",
                          kind=int)
    bias_dexp_factor: float = opt(None, "dexp: the biases' tgtFactor", "optim", kind=float)
    bias_dexp_steps: int = opt(None, "dexp: the biases' numSteps", "optim", kind=int)
    accum_steps: int = opt(1, "split each batch into this many micro-batches (same result, less memory)",
                           "optim")
    # speed
    device: str = opt("auto", "auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps", "speed")
    amp: str = opt("off", "mixed precision: off, bf16, fp16", "speed", choices=("off", "bf16", "fp16"))
    channels_last: bool = opt(False, "NHWC memory layout", "speed")
    compile: bool = opt(False, "torch.compile the model (TorchInductor fuses ReLU, LRN and pooling)", "speed")
    tower_devices: str = opt("", "the paper's two-GPU split: tower 1 on the first device, tower 2 on the "
                                 "second, e.g. cuda:0,cuda:1 (two-tower models; under torchrun, process r "
                                 "adds 2r to the CUDA indices)", "speed")
    cuda_graphs: bool = opt(False, "CUDA only: compile and replay each step as CUDA graphs (pays for small "
                                   "models and batches, where kernel launches bound the step)", "speed")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def check(self) -> "TrainConfig":
        """Raise :class:`UserError` for an unresolved, out-of-range or inconsistent value."""
        unresolved = [f.name for f in fields(self) if getattr(self, f.name) is None]
        if unresolved:
            raise UserError(f"unresolved option(s) {', '.join(unresolved)}: build configs with "
                            "resolve_config")
        for f in fields(self):
            value, choices = getattr(self, f.name), f.metadata.get("choices")
            if choices and value not in choices:
                raise UserError(f"{f.name} must be one of {', '.join(choices)}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{f.name} must be a finite number, got {value}")
        for name, low in MINIMUM.items():
            _at_least(name, getattr(self, name), low)
        for name in ("weight_decay", "lighting_std", "plateau_threshold", "bias_decay_mult"):
            _at_least(name, getattr(self, name), 0)
        if self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        for name in ("dexp_factor", "bias_dexp_factor"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.bias_lr_mult <= 0:
            raise UserError(f"bias_lr_mult must be > 0, got {self.bias_lr_mult}")
        if not 0 <= self.momentum < 1:
            raise UserError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 < self.lr_factor < 1:
            raise UserError(f"lr_factor must be in (0, 1), got {self.lr_factor}")
        if self.batch_size % self.accum_steps:
            raise UserError(f"batch_size {self.batch_size} is not divisible by accum_steps "
                            f"{self.accum_steps}")
        if self.tower_devices:
            if len(self.tower_devices.split(",")) != 2:
                raise UserError(f"--tower-devices takes two devices, e.g. cuda:0,cuda:1, got "
                                f"{self.tower_devices!r}")
            if self.model_opts.get("towers") != 2:
                raise UserError(f"--tower-devices needs a two-tower model; {self.model} has towers="
                                f"{self.model_opts.get('towers', 1)}")
            clash = [f for f in ("compile", "cuda_graphs") if getattr(self, f)]
            clash += ["freeze"] if self.freeze != "none" else []
            if clash:
                raise UserError(f"--tower-devices cannot be combined with --{clash[0].replace('_', '-')}")
        if not self.name or Path(self.name).name != self.name or self.name in (".", ".."):
            raise UserError(f"--name is a folder name inside --out, not a path: {self.name!r}")
        return self


def _at_least(name: str, value, low) -> None:
    if value < low:
        raise UserError(f"{name} must be >= {low}, got {value}")


FIELDS = {f.name: f for f in fields(TrainConfig)}
# The least value of each integer option: checked on every config, and by its flag (as every command's
# --workers, --batch-size: alexnet.cli.flags.bounded_int).
MINIMUM = {"epochs": 1, "batch_size": 1, "accum_steps": 1, "patience": 1, "step_size": 1, "workers": 0,
           "save_every": 0, "stats_images": 0, "pad": 0, "warmup_epochs": 0, "max_drops": 0, "seed": 0,
           "dexp_steps": 1, "bias_dexp_steps": 1, "doctor_steps": 1}
DEXP_OPTIONS = ("dexp_factor", "dexp_steps", "bias_dexp_factor", "bias_dexp_steps")
# What may change when a run is resumed: nothing that changes what was computed so far.
RESUMABLE_CHANGES = ("epochs", "device", "workers", "quiet", "save_every", "compile", "cuda_graphs", "out",
                     "doctor", "doctor_steps")


# ----------------------------------------------------------------------------- reading values

def read_config_file(path: str) -> dict:
    """Read a TOML (``.toml``), YAML (``.yaml``/``.yml``) or JSON file of TrainConfig values."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"no such config file: {path}")
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(p.read_text())
        elif p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(p.read_text()) or {}
        elif p.suffix == ".json":
            data = json.loads(p.read_text())
        else:
            raise UserError(f"{path}: config files must be .toml, .yaml, .yml or .json")
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path}: cannot parse ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of option names to values")
    return check_values(_flatten_sections(data, path), path)


def _flatten_sections(data: dict, where: str) -> dict:
    """Accept both flat files and files grouped in sections, named freely: ``[run]``, ``[model]``,
    ``[data]``, ``[optim]``, ``[speed]`` (the groups of ``alexnet train --help``), ... A table is a
    section unless it is the value of an option that takes one (``model_opts``), also when the section is
    named like an option (``[model]`` holding ``model = "alexnet2012"``). An option given twice is an
    error."""
    flat = {}
    for key, value in data.items():
        key = key.replace("-", "_")
        takes_table = key in FIELDS and FIELDS[key].metadata["type"] is dict
        is_section = isinstance(value, dict) and not takes_table
        for k, v in (_flatten_sections(value, where).items() if is_section else [(key, value)]):
            if k in flat:
                raise UserError(f"{where}: option {k} is given twice")
            flat[k] = v
    return flat


def check_values(values: dict, where: str) -> dict:
    """Known option names, and each value of its field's type (ints are fine where floats are)."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise UserError(f"{where}: unknown option(s) {', '.join(unknown)}")
    out = {}
    for key, value in values.items():
        kind = FIELDS[key].metadata["type"]
        if key == "model_opts" and isinstance(value, (list, tuple)):
            value = parse_kv(value, what="model option")
        elif key == "recipe" and value == "auto":  # the model's own, as when the option is left out
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UserError(f"{where}: {key} must be {kind.__name__}, got {value!r}")
        out[key] = value
    return out


# ----------------------------------------------------------------------------- resolving

def resolve_config(values: dict | None = None, *, config_file: str | None = None,
                   resume: dict | None = None, source: DataSource | None = None,
                   where: str = "option") -> tuple[TrainConfig, DataSource]:
    """Turn what the user gave into a fully resolved, checked :class:`TrainConfig`.

    Args:
        values: options given explicitly (flags, or keyword arguments of :func:`alexnet.train`).
        config_file: a TOML / YAML / JSON file of options; ``values`` override it.
        resume: the checkpoint of a run being continued: its recorded config is the base, and only
            :data:`RESUMABLE_CHANGES` may differ in ``values``.
        source: the data source when the caller has built it already.

    Returns the config and the data source it was resolved against.
    """
    given = check_values(dict(values or {}), where)
    if resume is not None:
        if config_file:
            raise UserError("--config cannot be combined with --resume (the run keeps its own config)")
        recorded = _upgrade(resume["config"])
        changed = {k: v for k, v in given.items() if not _same(recorded.get(k), v)}
        refused = sorted(set(changed) - set(RESUMABLE_CHANGES))
        if refused:
            raise UserError(f"cannot change {', '.join(refused)} when resuming "
                            f"(allowed: {', '.join(RESUMABLE_CHANGES)})")
        layered = {**recorded, **changed}
    else:
        from_file = read_config_file(config_file) if config_file else {}
        layered = {**from_file, **given}
        if "model_opts" in from_file and "model_opts" in given:
            layered["model_opts"] = {**from_file["model_opts"], **given["model_opts"]}
        model = layered.get("model", FIELDS["model"].default)
        recipe = layered.get("recipe") or model_cfg(model).recipe
        layered = {**RECIPES[recipe], **layered, "recipe": recipe}
    cfg = TrainConfig(**layered)
    if source is None:
        source = build_source(cfg.data)
    return fill_from_data(cfg, source).check(), source


def _same(recorded, given) -> bool:
    """A given value that the recorded one already holds (model options: the ones given, as recorded),
    so that the command that started a run can resume it."""
    if isinstance(recorded, dict) and isinstance(given, dict):
        return all(k in recorded and recorded[k] == v for k, v in given.items())
    return recorded == given


def _check_recipe_options(cfg: TrainConfig, source: DataSource, options: dict, from_recipe: dict) -> None:
    """A model option the recipe sets that this model cannot take (cuda-convnet2's file initializations
    are alexnet2012's layers') is an error that names the recipe: the model is built on the meta device
    (shapes only) to find out."""
    if not from_recipe:
        return
    try:
        import torch  # deferred: the config module itself needs no torch

        with torch.device("meta"):
            create_model(cfg.model, num_classes=source.num_classes, **options)
    except Exception as e:  # noqa: BLE001 - anything else is reported when the model is built for real
        if not isinstance(e, UserError):
            return
        named = [f"{k}={v}" for k, v in from_recipe.items() if re.search(rf"\b{re.escape(k)}\b", str(e))]
        if named:
            raise UserError(f"recipe {cfg.recipe} sets {', '.join(named)}, which {cfg.model} cannot take "
                            f"({e}); set it with --opt, or use the recipe's model") from None


def fill_from_data(cfg: TrainConfig, source: DataSource) -> TrainConfig:
    """Decide what the data decides, and every other value left open, explicitly."""
    given = check_options(cfg.model, dict(cfg.model_opts or {}))
    sized = data_options(cfg.model, source.channels, source.base_size)
    if sized and source.imagery != "small" and "img_size" not in given:
        raise UserError(f"{cfg.model} is made for 28x28 / 32x32 images and {source.name} holds "
                        f"{source.base_size}x{source.base_size} photographs; use alexnet2012 or alexnet-owt, "
                        f"or set --opt img_size=N")
    accepted = model_options(cfg.model)
    from_recipe = {k: v for k, v in RECIPE_MODEL_OPTIONS.get(cfg.recipe, {}).items() if k in accepted}
    options = {**accepted, **from_recipe, **sized, **given}
    _check_recipe_options(cfg, source, options, {k: v for k, v in from_recipe.items() if k not in given})
    pad = cfg.pad
    if pad is None:
        pad = {28: 2, 32: 4}.get(source.base_size, 0) if source.imagery == "small" else 0
    flip = cfg.flip or ("on" if source.flip else "off")
    device = cfg.device
    if device == "auto":
        device = pick_device(device).type
    pick_device(device)  # an absent device is an error now, before a run folder exists
    if cfg.cuda_graphs:
        check_cuda_graphs(pick_device(device))
    for tower_device in filter(None, cfg.tower_devices.split(",")):
        pick_device(tower_device.strip())  # absent devices are an error now
    name = cfg.name or auto_name()
    return cfg.replace(model_opts=options, pad=pad, flip=flip, device=device, name=name)


def auto_name() -> str:
    """The name of a run given none: the time it starts (the run folder adds -2, -3, ... when another
    run took it in the same second)."""
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _upgrade(recorded: dict) -> dict:
    """A config recorded by an earlier version: its "auto" / -1 markers mean "decide again"."""
    out = {k: v for k, v in recorded.items() if k in FIELDS}
    if out.get("pad") == -1:
        out["pad"] = None
    if out.get("flip") == "auto":
        out["flip"] = None
    if out.get("name") == "":
        out["name"] = None
    for key in DEXP_OPTIONS:  # runs recorded before the dexp schedule: unused by theirs
        out.setdefault(key, RECIPES["paper"][key])
    return out
