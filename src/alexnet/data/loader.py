"""Batches for one epoch, in an order that depends on (seed, epoch) alone.

Because the order is a pure function of the seed and the epoch, a run resumed at batch ``k`` of an
epoch sees exactly the batches an uninterrupted run would have seen. With ``world > 1`` each rank
takes every ``world``-th index of the same permutation (padded by wrapping around in training, as
``DistributedSampler`` does, so all ranks run the same number of steps).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Iterator

import torch

from .base import ImageSet, TensorImageSet, check_workers


@dataclass
class Batch:
    images: torch.Tensor  # uint8 (B, C, S, S)
    labels: torch.Tensor  # int64 (B,)
    skipped: list[str] = field(default_factory=list)  # files that could not be decoded


def epoch_seed(seed: int, epoch: int) -> int:
    """The one seed of epoch ``epoch`` of a run seeded ``seed``: data order, augmentation, dropout."""
    return seed * 1_000_003 + epoch


def epoch_order(n: int, *, shuffle: bool, seed: int, epoch: int) -> torch.Tensor:
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=g)


def batch_indices(n: int, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                  rank: int = 0, world: int = 1, drop_last: bool = False) -> list[torch.Tensor]:
    """The index batches of one epoch for this rank."""
    order = epoch_order(n, shuffle=shuffle, seed=seed, epoch=epoch)
    if world > 1:
        if shuffle:  # pad so every rank gets the same number of samples
            per_rank = -(-n // world)
            order = torch.cat([order, order[: per_rank * world - n]]) if per_rank * world > n else order
        order = order[rank::world]
    batches = list(torch.split(order, batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def _collate(items) -> Batch:
    ok = [(img, y) for img, y, _ in items if img is not None]
    skipped = [where for img, _, where in items if img is None]
    if ok:
        images = torch.stack([img for img, _ in ok])
        labels = torch.tensor([y for _, y in ok], dtype=torch.int64)
    else:
        images, labels = torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
    return Batch(images, labels, skipped)


class _Described(torch.utils.data.Dataset):
    """Adds where each item comes from, so a bad file can be named by the main process."""

    def __init__(self, dataset: ImageSet):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        img, y = self.dataset[i]
        return img, y, (self.dataset.describe(i) if img is None else "")


def _worker_init(_):
    # Ctrl-C is handled by the main process, which finishes its step and saves; workers keep going.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class EpochLoader:
    """Iterate the batches of one epoch of ``dataset``, starting at batch ``start``."""

    def __init__(self, dataset: ImageSet, batches: list[torch.Tensor], *, start: int = 0,
                 workers: int = 0, pin_memory: bool = False):
        self.dataset, self.batches, self.start = dataset, batches, start
        self.workers, self.pin_memory = check_workers(workers), pin_memory

    def __len__(self) -> int:
        return len(self.batches) - self.start

    def __iter__(self) -> Iterator[Batch]:
        todo = self.batches[self.start:]
        if isinstance(self.dataset, TensorImageSet):
            for idx in todo:
                images, labels = self.dataset.get_batch(idx)
                yield Batch(images, labels)
            return
        if not todo:
            return
        loader = torch.utils.data.DataLoader(
            _Described(self.dataset), batch_sampler=[b.tolist() for b in todo],
            num_workers=self.workers, collate_fn=_collate, pin_memory=self.pin_memory,
            worker_init_fn=_worker_init if self.workers else None,
            prefetch_factor=4 if self.workers else None, persistent_workers=False)
        yield from loader
