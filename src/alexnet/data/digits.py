"""scikit-learn's handwritten digits (UCI ML hand-written digits, 1,797 real 8x8 images, 10 classes),
upscaled to 28x28 like MNIST so the MNIST-sized models run on it unchanged. Ships with
scikit-learn: no download.

Split: stratified 60 / 20 / 20 into train / val / test (1,078 / 359 / 360 images) with a fixed seed
(``random_state=0``), so every run and every machine sees the same test set.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .base import DataError, DataSource, TensorImageSet
from .splits import stratified_split

SPLIT_SEED = 0
SIZE = 28


def upscale(images8: np.ndarray, size: int = SIZE) -> torch.Tensor:
    """(N, 8, 8) values 0..16 -> uint8 (N, 1, size, size) values 0..255, bilinear."""
    x = torch.from_numpy(images8.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def split_indices(targets: np.ndarray, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    idx = np.arange(len(targets))
    train, rest = stratified_split(idx, targets, math.ceil(0.4 * len(idx)), seed)  # 40% for val + test
    val, test = stratified_split(rest, targets[rest], math.ceil(0.5 * len(rest)), seed)  # half each
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def load_digits_source(classes: list[int] | None = None) -> DataSource:
    """The digits; ``classes`` keeps only those digits (relabelled 0, 1, ... in the given order), each
    split keeping its own images of them: ``digits:classes=5-9`` tests on the 5-9s of the usual test set."""
    from sklearn.datasets import load_digits  # scikit-learn's datasets take a second to import

    bunch = load_digits()
    images = upscale(bunch.images)
    targets = bunch.target.astype(np.int64)
    parts = split_indices(targets)
    keep = list(range(10)) if classes is None else list(classes)
    if sorted(set(keep)) != sorted(keep) or not keep or not set(keep) <= set(range(10)):
        raise DataError(f"digits: classes must be distinct digits 0-9, got {classes}")
    relabel = np.full(10, -1, dtype=np.int64)
    relabel[keep] = np.arange(len(keep))
    parts = {k: v[relabel[targets[v]] >= 0] for k, v in parts.items()}
    splits = {k: TensorImageSet(images[torch.from_numpy(v)], relabel[targets[v]]) for k, v in parts.items()}
    names = [str(bunch.target_names[c]) for c in keep]
    return DataSource(
        name="digits", imagery="small", channels=1, base_size=SIZE, classes=names, class_names=names,
        splits=splits, flip=False,
        notes={"source": "sklearn.datasets.load_digits (8x8, upscaled bilinear to 28x28)",
               "split": f"stratified 60/20/20, random_state={SPLIT_SEED}",
               "classes": names, "sizes": {k: len(v) for k, v in parts.items()}},
    )
