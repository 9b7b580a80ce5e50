"""The contract between data sources and the rest of the package.

Every source (``digits``, ``synthetic``, an ImageNet-style folder, CIFAR-10, MNIST, a prepared store)
becomes a :class:`DataSource`: named splits of uint8 images at the source's *base size* (square,
``base_size`` pixels: 256 for photographs after the paper's rescale-and-centre-crop, 28 or 32 for
the small sets) with integer labels. Everything after that (crops, flips, mean subtraction,
lighting) happens on whole batches on the training device, in :mod:`alexnet.data.transforms`.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from ..errors import UserError

SPLITS = ("train", "val", "test")


class DataError(UserError, ValueError):
    """A dataset that cannot be used (missing, empty, inconsistent); raised before training starts."""


class ImageSet(torch.utils.data.Dataset):
    """One split. ``__getitem__(i)`` returns ``(image, label)`` with ``image`` a uint8 ``(C, S, S)``
    tensor, or ``(None, label)`` when the file behind item ``i`` cannot be decoded (it is then
    skipped and counted by the loader, never fatal)."""

    targets: np.ndarray  # (N,) int64 labels, known without decoding anything

    def __len__(self) -> int:
        return len(self.targets)

    def describe(self, index: int) -> str:
        """Where item ``index`` comes from (a path, for warnings about bad files)."""
        return f"item {index}"


class TensorImageSet(ImageSet):
    """A split held in memory as one uint8 ``(N, C, S, S)`` tensor; batches are sliced, not collated."""

    def __init__(self, images: torch.Tensor, targets: np.ndarray | torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(f"images must be a uint8 (N, C, S, S) tensor, got {images.dtype} "
                            f"{tuple(images.shape)}")
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        if len(self.targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(self.targets)} labels")

    def __getitem__(self, i):
        return self.images[i], int(self.targets[i])

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[indices], torch.from_numpy(self.targets)[indices]


@dataclass
class DataSource:
    """A dataset ready for training and evaluation.

    Attributes:
        name: the spec it was built from (``digits``, ``cifar10:/data/cifar``, ...).
        imagery: "small" (28/32-pixel sets: pad-and-crop shifts) or "photo" (photographs at 256:
            the paper's crops, PCA lighting, 10-crop testing).
        channels, base_size: every image is uint8 ``(channels, base_size, base_size)``.
        classes: class ids in label order (synsets for ImageNet).
        class_names: human-readable names, same order.
        splits: "train" / "val" / "test" (any may be missing; "test" falls back to "val").
        flip: whether a horizontal mirror keeps the label (not for digits).
        notes: how the splits were made, for the run log.
    """

    name: str
    imagery: str
    channels: int
    base_size: int
    classes: list[str]
    class_names: list[str]
    splits: dict[str, ImageSet]
    flip: bool = True
    notes: dict = field(default_factory=dict)
    cache_dir: str | None = None  # where statistics over the training split may be cached

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> ImageSet:
        if name == "test" and "test" not in self.splits and "val" in self.splits:
            name = "val"
        if name not in self.splits or len(self.splits[name]) == 0:
            raise DataError(f"{self.name} has no images in its {name!r} split")
        return self.splits[name]

    def eval_split_name(self, name: str = "test") -> str:
        """The split that ``split(name)`` really returns ("test" falls back to "val")."""
        return "val" if name == "test" and "test" not in self.splits and "val" in self.splits else name


def check_workers(workers: int) -> int:
    """Worker processes: 0 (this process) or more, the one rule of every command's ``--workers``."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise DataError(f"workers must be an integer >= 0, got {workers!r}")
    return workers


def parallel_map(fn: Callable, items: Iterable, workers: int, chunksize: int = 16) -> Iterator:
    """``map(fn, items)`` in order, over ``workers`` processes (0: in this process)."""
    if check_workers(workers) == 0:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(fn, items, chunksize=chunksize)
