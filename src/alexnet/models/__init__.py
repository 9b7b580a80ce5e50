"""The model zoo: ``create_model(name, num_classes=..., **options)`` over a small registry, and
``create_model(name, weights=PATH)`` for a weights file."""

from __future__ import annotations

from .alexnet import AlexNet2012, AlexNetOWT
from .base import ImageClassifier, ModelCfg
from .lesson import KerasAlexNet
from .lrn import LocalResponseNorm, local_response_norm
from .nnott import NnottAlexNet, NnottLeNet
from .registry import (ModelError, build_model, check_options, data_options, list_models, model_cfg,
                       model_options)
from .small import AlexNetSmall, LeNet5
from .weights import load_weights


def create_model(name: str, *, num_classes: int | None = None, weights=None, **options) -> ImageClassifier:
    """Build a registered model, e.g. ``create_model("alexnet2012", lrn_mode="cuda-convnet")``
    (``num_classes`` 1000 unless given), or with ``weights=PATH`` load a weights file into it
    (class count, options and ``model.pretrained_cfg`` from the file; see :mod:`.weights`)."""
    if weights is None:
        return build_model(name, 1000 if num_classes is None else num_classes, **options)
    model = load_weights(weights, name, **options)
    if num_classes is not None and num_classes != model.num_classes:
        raise ModelError(f"{weights} has {model.num_classes} classes, not {num_classes}")
    return model


__all__ = ["AlexNet2012", "AlexNetOWT", "AlexNetSmall", "LeNet5", "KerasAlexNet", "NnottAlexNet",
           "NnottLeNet", "ImageClassifier", "ModelCfg",
           "LocalResponseNorm", "local_response_norm", "ModelError", "create_model", "list_models",
           "model_options", "model_cfg", "data_options", "check_options"]
