"""The small sets, read whole into memory from the files their authors distribute:

- CIFAR-10 ("python version", ``cifar-10-batches-py``): pickled ``data_batch_1..5`` (train) and
  ``test_batch`` (test), 32x32 RGB, with ``batches.meta`` naming the classes.
- MNIST and Fashion-MNIST: idx files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, raw or
  ``.gz``, in the folder given, its ``raw/`` subfolder, or ``<folder>/<name>/raw`` (torchvision's
  layout); 28x28 grayscale, t10k is test. Fashion-MNIST is the same format: say ``fashion-mnist:PATH``,
  or have "fashion" in the path.

Validation: 5,000 training images (a tenth of the training set when it has fewer than 50,000), held
out stratified by class with :func:`alexnet.data.splits.holdout` (seed 0). Train keeps the rest.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re

import numpy as np
import torch

from .base import DataError, DataSource, TensorImageSet
from .splits import holdout
from .stats import cache_dir_for

VAL_IMAGES = 5000
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]
_IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx[13]-ubyte(\.gz)?$")


def _small_source(name: str, train: tuple[torch.Tensor, np.ndarray], test: tuple[torch.Tensor, np.ndarray], *,
                  classes: list[str], class_names: list[str], flip: bool, notes: dict,
                  files: list[str]) -> DataSource:
    images, labels = train
    n_val = min(VAL_IMAGES, len(labels) // 10)
    kept, held = holdout(labels, n_val)
    splits = {"train": TensorImageSet(images[torch.from_numpy(kept)], labels[kept]),
              "val": TensorImageSet(images[torch.from_numpy(held)], labels[held]),
              "test": TensorImageSet(*test)}
    identity = {"kind": name,
                "files": [(os.path.abspath(f), os.path.getsize(f), os.path.getmtime(f)) for f in files]}
    return DataSource(
        name=name, imagery="small", channels=images.shape[1], base_size=images.shape[-1], classes=classes,
        class_names=class_names, splits=splits, flip=flip, cache_dir=cache_dir_for(identity),
        notes={**notes,
               "split": f"val = {n_val} training images held out, stratified (seed 0); test = the test files",
               "sizes": {k: len(v) for k, v in splits.items()}})


# --- CIFAR-10 ---------------------------------------------------------------------------------

class _ArraysOnly(pickle.Unpickler):
    """CIFAR's batches are pickles: refuse anything but the NumPy arrays and builtins they hold, so a
    file posing as one cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _unpickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            d = _ArraysOnly(f, encoding="latin1").load()  # the batches were written by Python 2
        return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError) as e:
        raise DataError(f"{path}: not a CIFAR batch ({type(e).__name__}: {e})") from None


def _cifar_batch(path: str) -> tuple[torch.Tensor, np.ndarray]:
    d = _unpickle(path)
    try:
        data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # rows are R, G, B planes
        labels = np.asarray(d["labels"], dtype=np.int64)
    except (KeyError, ValueError) as e:
        raise DataError(f"{path}: not a CIFAR-10 batch (expected 'data' N x 3072 and 'labels'; {e})") \
            from None
    if len(data) != len(labels):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    if len(labels) and not 0 <= labels.min() <= labels.max() < 10:
        raise DataError(f"{path}: labels outside 0..9")
    return torch.from_numpy(data), labels


def cifar10_folder(path: str) -> str | None:
    """``path`` or its ``cifar-10-batches-py`` subfolder, whichever holds the batches."""
    for folder in (path, os.path.join(path, "cifar-10-batches-py")):
        if os.path.isfile(os.path.join(folder, "data_batch_1")):
            return folder
    return None


def cifar10_source(path: str) -> DataSource:
    folder = cifar10_folder(path)
    if folder is None:
        raise DataError(f"{path}: no CIFAR-10 batches (data_batch_1..5, test_batch) here or in "
                        f"{os.path.join(path, 'cifar-10-batches-py')}")
    files = [os.path.join(folder, n) for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]]
    missing = [os.path.basename(f) for f in files if not os.path.isfile(f)]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}")
    parts = [_cifar_batch(f) for f in files[:5]]
    train = torch.cat([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    names = CIFAR10_NAMES
    meta = os.path.join(folder, "batches.meta")
    if os.path.isfile(meta):
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in _unpickle(meta).get("label_names", names)]
    return _small_source(f"cifar10:{path}", train, _cifar_batch(files[5]), classes=list(names),
                         class_names=list(names), flip=True, files=files, notes={"source": folder})


# --- MNIST / Fashion-MNIST -----------------------------------------------------------------

def read_idx(path: str) -> np.ndarray:
    """An idx file (``.gz`` or raw) of unsigned bytes: big-endian header, then the data."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an idx file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(f"{path}: idx data type 0x{raw[2]:02x} is not unsigned bytes (0x08)")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says {shape} but holds {data.size} values")
    return data.reshape(shape)


def find_idx_files(path: str) -> dict[tuple[str, str], str] | None:
    """``{("train" | "t10k", "images" | "labels"): file}`` from the first folder that has all four."""
    candidates = [path, os.path.join(path, "raw")]
    if os.path.isdir(path):
        candidates += [os.path.join(path, d, "raw") for d in sorted(os.listdir(path))]
    for folder in candidates:
        if not os.path.isdir(folder):
            continue
        found = {}
        for name in sorted(os.listdir(folder)):  # raw sorts before .gz: prefer it when both exist
            m = _IDX_NAME.match(name)
            if m:
                found.setdefault((m.group(1), m.group(2)), os.path.join(folder, name))
        if len(found) == 4:
            return found
    return None


def mnist_source(path: str, *, fashion: bool | None = None) -> DataSource:
    files = find_idx_files(path)
    if files is None:
        raise DataError(f"{path}: no MNIST idx files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, raw or .gz) here or in raw/")
    if fashion is None:
        fashion = "fashion" in os.path.abspath(path).lower()
    parts = {}
    for part in ("train", "t10k"):
        images, labels = read_idx(files[part, "images"]), read_idx(files[part, "labels"])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{files[part, 'images']}: {images.shape} images do not match "
                            f"{labels.shape} labels in {files[part, 'labels']}")
        parts[part] = torch.from_numpy(images.copy()).unsqueeze(1), labels.astype(np.int64)  # (N, 1, 28, 28)
    name = "fashion-mnist" if fashion else "mnist"
    classes = [str(i) for i in range(10)]
    return _small_source(f"{name}:{path}", parts["train"], parts["t10k"], classes=classes,
                         class_names=FASHION_NAMES if fashion else classes, flip=fashion,
                         files=list(files.values()),
                         notes={"source": os.path.dirname(files["train", "images"])})
