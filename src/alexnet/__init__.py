"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012): the network, its data pipeline and training protocol."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .models import create_model, list_models, model_options
from .models.weights import load_pretrained
from .training.launch import TrainingStopped, train

try:
    __version__ = version("alexnet")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"

__all__ = ["create_model", "list_models", "model_options", "load_pretrained", "train", "TrainingStopped",
           "__version__"]
