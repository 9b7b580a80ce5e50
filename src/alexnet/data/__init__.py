"""Data sources, loaders and the paper's preprocessing presets.

``--data SPEC`` (train, evaluate, predict, bench, data) is one of:

- ``digits``: scikit-learn's 8x8 digits at 28x28 (embedded, the default for quick runs);
  ``digits:classes=0-4`` (or ``classes=5,7,9``) keeps some of the digits, each split its own images;
- ``synthetic`` or ``synthetic:KEY=VALUE,...``: generated ImageNet-like photos at 256, in memory
  (keys: ``classes`` 10, ``per-class`` 50 training images, ``val-per-class`` and ``test-per-class``
  ``per-class // 5``, ``size`` 300 (longer side before the 256 centre crop), ``seed`` 0);
- ``KIND:PATH`` with KIND one of ``folder``, ``imagenet``, ``cifar10``, ``mnist``, ``fashion-mnist``,
  ``store``;
- a bare ``PATH``, recognized as (in this order) a prepared store, CIFAR-10 batches, MNIST idx
  files (Fashion-MNIST when "fashion" is in the path), or an image folder (``folder:``: with
  ``train/``, or of class folders). ``imagenet:PATH`` is ``folder:PATH`` that insists on ``train/``.
"""

from __future__ import annotations

import os

from ..cliargs import parse_kv
from ..errors import UserError
from .base import DataError, DataSource, ImageSet, TensorImageSet
from .digits import load_digits_source
from .folder import find_root, folder_source, list_images
from .loader import Batch, EpochLoader, batch_indices
from .small import cifar10_folder, cifar10_source, find_idx_files, mnist_source
from .store import is_store, store_source
from .synth import synthetic_source
from .transforms import Lighting, Normalization, Preset

KINDS = ("folder", "imagenet", "cifar10", "mnist", "fashion-mnist", "store")
SYNTHETIC_KEYS = {"classes": "classes", "per-class": "per_class", "val-per-class": "val_per_class",
                  "test-per-class": "test_per_class", "size": "size", "seed": "seed"}


def parse_spec(spec: str) -> tuple[str, str]:
    """``(kind, argument)``: ``("digits", "")``, ``("synthetic", "classes=5")``, ``("cifar10", PATH)``...

    A bare path is recognized by what it holds (see the module docstring).
    """
    if spec in ("digits", "synthetic"):
        return spec, ""
    head, sep, rest = spec.partition(":")
    if sep and head in ("synthetic", "digits"):
        return head, rest
    if sep and head in KINDS:
        if not os.path.exists(rest):
            raise DataError(f"--data {spec}: no such file or folder: {rest}")
        return head, rest
    if not os.path.exists(spec):
        if sep and head.replace("-", "").isalnum() and len(head) > 1:
            raise DataError(f"unknown dataset kind {head!r} in {spec!r}; expected digits, synthetic[:...] "
                            f"or one of {', '.join(k + ':PATH' for k in KINDS)}")
        raise DataError(f"--data {spec}: not a dataset name (digits, synthetic) and no such file or folder")
    return detect_kind(spec), spec


def detect_kind(path: str) -> str:
    """What kind of dataset ``path`` holds (see the module docstring)."""
    if is_store(path):
        return "store"
    if os.path.isdir(path):
        if cifar10_folder(path):
            return "cifar10"
        if find_idx_files(path):
            return "fashion-mnist" if "fashion" in os.path.abspath(path).lower() else "mnist"
        if os.path.isdir(os.path.join(find_root(path), "train")):
            return "folder"
        subdirs = [e.path for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
        if any(list_images(d) for d in subdirs):
            return "folder"
    raise DataError(f"cannot tell what dataset {path} is: expected a prepared store, CIFAR-10 batches, "
                    "MNIST idx files, or image folders (PATH/train/<class>/*, or PATH/<class>/*)")


def _synthetic_options(text: str) -> dict:
    try:
        options = parse_kv(filter(None, text.split(",")), what="synthetic option")
    except UserError as e:
        raise DataError(f"synthetic: {e}") from None
    unknown = sorted(set(options) - set(SYNTHETIC_KEYS))
    if unknown:
        raise DataError(f"synthetic: unknown key(s) {', '.join(unknown)}; expected "
                        f"{', '.join(SYNTHETIC_KEYS)}")
    for key, value in options.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "seed" else 1):
            raise DataError(f"synthetic: {key} must be a {'non-negative' if key == 'seed' else 'positive'} "
                            f"integer, got {value!r}")
    return {SYNTHETIC_KEYS[k]: v for k, v in options.items()}


def _digits_options(text: str) -> dict:
    """``classes=0-4`` or ``classes=5,7,9``."""
    if not text:
        return {}
    key, sep, value = text.partition("=")
    if key != "classes" or not sep:
        raise DataError(f"digits: expected classes=A-B or classes=A,B,..., got {text!r}")
    try:
        if "-" in value:
            lo, hi = (int(v) for v in value.split("-"))
            return {"classes": list(range(lo, hi + 1))}
        return {"classes": [int(v) for v in value.split(",")]}
    except ValueError:
        raise DataError(f"digits: classes must be digits, got {value!r}") from None


def build_source(spec: str) -> DataSource:
    """Build a :class:`DataSource` from a ``--data`` spec (see the module docstring)."""
    kind, arg = parse_spec(spec)
    source = _build(kind, arg)
    source.name = spec  # what the user typed: recorded in run logs and checkpoints
    return source


def _build(kind: str, arg: str) -> DataSource:
    if kind == "digits":
        return load_digits_source(**_digits_options(arg))
    if kind == "synthetic":
        return synthetic_source(**_synthetic_options(arg))
    if kind in ("folder", "imagenet"):
        return folder_source(arg, require_splits=kind == "imagenet")
    if kind == "cifar10":
        return cifar10_source(arg)
    if kind in ("mnist", "fashion-mnist"):
        return mnist_source(arg, fashion=kind == "fashion-mnist")
    return store_source(arg)


__all__ = ["DataError", "DataSource", "ImageSet", "TensorImageSet", "Batch", "EpochLoader", "batch_indices",
           "Lighting", "Normalization", "Preset", "build_source", "parse_spec"]
