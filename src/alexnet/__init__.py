"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012): the network, its data pipeline and training protocol."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .models import create_model, list_models, model_options
from .models.split import split_towers
from .models.weights import load_pretrained

try:
    __version__ = version("alexnet")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"

__all__ = ["__version__", "create_model", "list_models", "load_pretrained", "model_options", "split_towers"]
