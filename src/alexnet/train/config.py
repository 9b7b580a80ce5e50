"""The training configuration: one dataclass, the single source of the command-line flags.

Values are layered, later wins: the dataclass defaults < the recipe (``--recipe``, chosen from the
model when "auto") < a TOML/YAML config file (``--config``) < flags given on the command line.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def opt(default, help: str, group: str, **extra):
    return field(default=default, metadata={"help": help, "group": group, **extra})


GROUPS = {
    "run": "run",
    "model": "model",
    "data": "data and augmentation",
    "optim": "optimization",
    "speed": "speed",
}


@dataclass
class TrainConfig:
    # run
    recipe: str = opt("auto", "named set of defaults: paper, torchvision, small, or auto (from the model)",
                      "run", choices=("auto", "paper", "torchvision", "small"))
    name: str = opt("", "run name; the run is written to OUT/NAME (default: a timestamp)", "run")
    out: str = opt("runs", "folder that holds the run directories", "run")
    seed: int = opt(0, "seed for initialization, data order, augmentation and dropout", "run")
    quiet: bool = opt(False, "no progress bars; one line per epoch only", "run")
    save_every: int = opt(0, "also checkpoint every N steps inside an epoch (0: at epoch ends only)", "run")
    tensorboard: bool = opt(False, "also write TensorBoard event files to RUN/tensorboard (scalars per epoch, "
                                   "conv1 kernels); needs the tensorboard package", "run")
    # model
    model: str = opt("alexnet-small", "model name (`alexnet models` lists them)", "model")
    model_opts: dict = opt(None, "model options as KEY=VALUE, repeatable (e.g. --opt lrn=false)", "model",
                           flag="--opt", metavar="KEY=VALUE")
    pretrained: str = opt("", "start from these weights (torchvision .pth, .safetensors or a checkpoint); "
                              "the output layer is re-initialized when the class count differs", "model")
    # data
    data: str = opt("digits", "dataset spec: digits, synthetic, a folder, cifar10:PATH, mnist:PATH, "
                              "store:PATH, ...", "data")
    batch_size: int = opt(64, "images per optimizer step, over all processes", "data")
    workers: int = opt(0, "data loading worker processes (0: in the main process)", "data")
    normalize: str = opt("standard", "paper: subtract the training set's mean image; channel: its "
                                     "per-channel mean; standard: per-channel mean and std; imagenet: "
                                     "torchvision's fixed ImageNet mean and std", "data",
                         choices=("paper", "channel", "standard", "imagenet"))
    crop: str = opt("random", "training crops: random (the paper's) or random-resized (torchvision's)",
                    "data", choices=("random", "random-resized"))
    pad: int = opt(-1, "zero padding before random crops of small images (-1: auto, 2 pixels for "
                       "28x28 data, 4 for 32x32, none for photographs)", "data")
    flip: str = opt("auto", "random horizontal flips: auto (when the data allows), on, off", "data",
                    choices=("auto", "on", "off"))
    lighting: str = opt("none", "PCA lighting: none, data (eigen-decomposition of the training set), "
                                "imagenet (the published constants)", "data",
                        choices=("none", "data", "imagenet"))
    lighting_std: float = opt(0.1, "standard deviation of the lighting coefficients alpha", "data")
    stats_images: int = opt(0, "images used for mean / PCA statistics (0: the whole training split)", "data")
    tta: str = opt("center", "test views for the final evaluation: center or 10crop", "data",
                   choices=("center", "10crop"))
    # optimization
    epochs: int = opt(15, "passes over the training split", "optim")
    optimizer: str = opt("sgd", "paper-sgd (the paper's update rule) or sgd (torch.optim.SGD)", "optim",
                         choices=("paper-sgd", "sgd"))
    lr: float = opt(0.02, "learning rate", "optim")
    momentum: float = opt(0.9, "momentum", "optim")
    weight_decay: float = opt(5e-4, "weight decay (L2)", "optim")
    schedule: str = opt("cosine", "learning-rate schedule: plateau (divide by 10 when val error stalls), "
                                  "step, cosine, constant", "optim",
                        choices=("plateau", "step", "cosine", "constant"))
    warmup_epochs: int = opt(0, "linear learning-rate warm-up epochs (cosine schedule)", "optim")
    patience: int = opt(5, "plateau: epochs without a better val error before the lr drops", "optim")
    max_drops: int = opt(3, "plateau: at most this many drops", "optim")
    plateau_threshold: float = opt(0.0, "plateau: a val top-1 error lower than the best by more than "
                                        "this many percentage points counts as an improvement", "optim")
    lr_factor: float = opt(0.1, "plateau / step: multiply the lr by this at a drop", "optim")
    step_size: int = opt(30, "step: drop the lr every this many epochs", "optim")
    accum_steps: int = opt(1, "split each batch into this many micro-batches (same result, less memory)",
                           "optim")
    # speed
    device: str = opt("auto", "auto, cpu, cuda, cuda:N or mps", "speed")
    amp: str = opt("off", "mixed precision: off, bf16, fp16", "speed", choices=("off", "bf16", "fp16"))
    channels_last: bool = opt(False, "NHWC memory layout", "speed")
    compile: bool = opt(False, "torch.compile the model (TorchInductor fuses ReLU, LRN and pooling)", "speed")
    cuda_graphs: bool = opt(False, "CUDA only: compile and replay each step as CUDA graphs (pays for small "
                                   "models and batches, where kernel launches bound the step)", "speed")

    def __post_init__(self):
        if self.model_opts is None:
            self.model_opts = {}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "TrainConfig":
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise UserError(f"{f.name} must be one of {', '.join(choices)}, got {getattr(self, f.name)!r}")
        positive = ("epochs", "batch_size", "accum_steps", "patience", "step_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.accum_steps:
            raise UserError(f"batch_size {self.batch_size} is not divisible by accum_steps {self.accum_steps}")
        if self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if self.workers < 0 or self.save_every < 0 or self.stats_images < 0 or self.pad < -1:
            raise UserError("workers, save_every and stats_images must be >= 0, pad >= -1")
        return self


FIELDS = {f.name: f for f in fields(TrainConfig)}


def read_config_file(path: str) -> dict:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file of TrainConfig values."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"no such config file: {path}")
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(p.read_text())
        elif p.suffix in (".yaml", ".yml"):
            import yaml

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
    return flatten_sections(data, path)


def flatten_sections(data: dict, where: str = "config") -> dict:
    """Accept both flat files and files grouped in sections ([model], [optim], ...)."""
    flat = {}
    for key, value in data.items():
        key = key.replace("-", "_")
        if isinstance(value, dict) and key not in FIELDS:
            flat.update(flatten_sections(value, where))
        else:
            flat[key] = value
    unknown = sorted(set(flat) - set(FIELDS))
    if unknown:
        raise UserError(f"{where}: unknown option(s) {', '.join(unknown)}")
    for key, value in flat.items():
        flat[key] = coerce(key, value, where)
    return flat


def coerce(key: str, value, where: str = "config"):
    """Check a value's type against the field's default type (ints are fine where floats are)."""
    default = FIELDS[key].default
    if key == "model_opts":
        if not isinstance(value, dict):
            raise UserError(f"{where}: model_opts must be a mapping")
        return value
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"{where}: {key} must be {kind.__name__}, got {value!r}")
    return value


def resolve(file_values: dict, flag_values: dict, recipe_defaults) -> TrainConfig:
    """Layer the recipe, the config file and the flags over the defaults."""
    explicit = {**file_values, **flag_values}
    if "model_opts" in file_values and "model_opts" in flag_values:
        explicit["model_opts"] = {**file_values["model_opts"], **flag_values["model_opts"]}
    base = TrainConfig()
    recipe = explicit.pop("recipe", base.recipe)
    values = recipe_defaults(recipe, explicit.get("model", base.model))  # "recipe" resolved from auto
    return base.replace(**{**values, **explicit}).validate()
