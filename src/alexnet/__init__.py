"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012): the network, its data pipeline and training protocol."""

from __future__ import annotations

from ._version import __version__
from .inference.features import dataset_features, extract_features, layer_names
from .models import create_model, list_models, model_options
from .models.keras_import import load_keras
from .models.split import split_towers
from .models.weights import KNOWN_WEIGHTS, imagenet_class_names, load_pretrained, load_weights
from .training.launch import TrainingStopped, train
from .training.trainer import Callback

__all__ = [
    "KNOWN_WEIGHTS",
    "Callback",
    "TrainingStopped",
    "__version__",
    "create_model",
    "dataset_features",
    "extract_features",
    "imagenet_class_names",
    "layer_names",
    "list_models",
    "load_keras",
    "load_pretrained",
    "load_weights",
    "model_options",
    "split_towers",
    "train",
]
