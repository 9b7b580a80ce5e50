"""The model zoo's registry: names, their classes, options and metadata, and building a model by name.
A ~30-line registry in timm's spirit (``create_model(name, **kw)``); :mod:`.weights` builds the model a
weights file holds through it, and :func:`alexnet.models.create_model` adds the ``weights=`` path."""

from __future__ import annotations

import inspect
from typing import Callable

from ..errors import UserError
from .alexnet import AlexNet2012, AlexNetOWT
from .base import ImageClassifier, ModelCfg
from .convnet import ConvNet18
from .lesson import KerasAlexNet
from .nnott import NnottAlexNet, NnottLeNet
from .small import AlexNetSmall, LeNet5

_REGISTRY: dict[str, Callable[..., ImageClassifier]] = {
    "alexnet2012": AlexNet2012,
    "alexnet-owt": AlexNetOWT,
    "alexnet-small": AlexNetSmall,
    "lenet5": LeNet5,
    "convnet18": ConvNet18,  # the four-layer CIFAR-10 net of Figure 1 (cuda-convnet layers-18pct.cfg)
    "keras-alexnet": KerasAlexNet,  # a Keras lesson's simplified AlexNet (224x224x3, 50,844,008 params)
    "nnott-alexnet": NnottAlexNet,  # the NNOTT lab's AlexNet for 28x28 digits (polla-fattah/nnott)
    "nnott-lenet": NnottLeNet,      # the NNOTT lab's LeNet
}


class ModelError(UserError, ValueError):
    """An unknown model name or option."""


def list_models() -> list[str]:
    """Names accepted by :func:`alexnet.create_model`."""
    return list(_REGISTRY)


def _get(name: str) -> Callable[..., ImageClassifier]:
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}; choose from: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def model_options(name: str) -> dict[str, object]:
    """The keyword options a model accepts, with their defaults."""
    sig = inspect.signature(_get(name))
    return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


def model_cfg(name: str) -> ModelCfg:
    """What model ``name`` says about itself (input size, recipe, normalization, output layer)."""
    return _get(name).default_cfg


def data_options(name: str, channels: int, size: int) -> dict:
    """The options that make model ``name`` fit images of ``channels`` x ``size`` x ``size``:
    ``in_chans`` and ``img_size`` for the models sized by their data, nothing for the others."""
    return {"in_chans": channels, "img_size": size} if model_cfg(name).sized_by_data else {}


def check_options(name: str, options: dict) -> dict:
    """Options typed against the model's signature: ``lrn=maybe`` or ``dropout=abc`` is an error."""
    accepted = model_options(name)
    if "num_classes" in options:
        raise ModelError("the class count is not a model option: use --num-classes (or let the data set it)")
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ModelError(f"{name} has no option(s) {', '.join(unknown)}; "
                         f"it accepts: {', '.join(accepted) or 'none'}")
    out = {}
    for key, value in options.items():
        kind = type(accepted[key])
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            want = {bool: "true or false", int: "an integer", float: "a number", str: "a word"}.get(
                kind, kind.__name__)
            raise ModelError(f"{name} option {key} must be {want}, got {value!r}")
        out[key] = value
    return out


def build_model(name: str, num_classes: int = 1000, **options) -> ImageClassifier:
    """A freshly initialized registered model; options checked against its signature."""
    cls = _get(name)
    options = check_options(name, options)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    try:
        return cls(num_classes, **options)
    except (ValueError, TypeError) as e:  # a bad option value (towers=3, activation="gelu", ...)
        raise ModelError(f"{name}: {e}") from None
