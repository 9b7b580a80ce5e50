"""Data sources, loaders and the paper's preprocessing presets."""

from __future__ import annotations

from .base import DataError, DataSource, ImageSet, TensorImageSet
from .loader import Batch, EpochLoader, batch_indices
from .transforms import Lighting, Normalization, Preset


def build_source(spec: str) -> DataSource:
    """Build a :class:`DataSource` from a ``--data`` spec (``digits``, ...)."""
    if spec == "digits":
        from .digits import load_digits_source

        return load_digits_source()
    raise DataError(f"unknown dataset {spec!r}; expected 'digits'")


__all__ = ["DataError", "DataSource", "ImageSet", "TensorImageSet", "Batch", "EpochLoader", "batch_indices",
           "Lighting", "Normalization", "Preset", "build_source"]
