"""Batches for one epoch, in an order that depends on (seed, epoch) alone.

Because the order is a pure function of the seed and the epoch, a run resumed at batch ``k`` of an
epoch sees exactly the batches an uninterrupted run would have seen.

Training (:func:`train_steps`) splits the same global batches over any number of processes: step ``k``
is images ``k * B .. (k + 1) * B`` of the epoch's permutation whatever the world size, each of its
``accum_steps`` micro-batches is cut into ``world`` contiguous parts, and rank ``r`` takes part ``r`` of
each. Every image keeps its position in its step (:class:`StepPlan`), so augmentation and dropout can be
drawn for the whole global batch and each process uses its rows: 1, 2 or 4 processes see the same
samples with the same random draws in every step. Evaluation (:func:`batch_indices` with ``world > 1``)
gives each rank every ``world``-th image, each image once.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Iterator

import torch

from .base import ImageSet, TensorImageSet, check_workers


@dataclass
class StepPlan:
    """Where this process's images sit in their training step, over all processes.

    ``rows``: each image's position in the step's global batch (ascending); ``total``: the images the
    global batch planned; ``bounds``: the ``(start, end)`` positions of its micro-batches. One process
    with one micro-batch has ``rows == arange(total)`` (:attr:`whole`).
    """

    rows: torch.Tensor
    total: int
    bounds: list[tuple[int, int]]

    @property
    def whole(self) -> bool:
        return len(self.bounds) == 1 and len(self.rows) == self.total

    def keep(self, kept: list[int]) -> "StepPlan":
        """The plan of the images that could be decoded (``kept``: their indices in this batch)."""
        return StepPlan(self.rows[kept], self.total, self.bounds) if len(kept) < len(self.rows) else self

    def pieces(self) -> list[tuple[int, int, torch.Tensor, int]]:
        """Each micro-batch's ``(first, end)`` slice of this process's images, their positions in that
        micro-batch, and its planned size over all processes."""
        out = []
        for start, end in self.bounds:
            a = int(torch.searchsorted(self.rows, start))
            b = int(torch.searchsorted(self.rows, end))
            out.append((a, b, self.rows[a:b] - start, end - start))
        return out


@dataclass
class Batch:
    images: torch.Tensor  # uint8 (B, C, S, S)
    labels: torch.Tensor  # int64 (B,)
    skipped: list[str] = field(default_factory=list)  # files that could not be decoded
    plan: StepPlan | None = None  # a training step's place over all processes (train_steps)


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
    """The index batches of one epoch for this rank: every ``world``-th image of the epoch's order, each
    image once (evaluation; training uses :func:`train_steps`)."""
    order = epoch_order(n, shuffle=shuffle, seed=seed, epoch=epoch)[rank::world]
    batches = list(torch.split(order, batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def whole_step(n: int, accum_steps: int = 1) -> StepPlan:
    """The plan of a step that is one process's whole batch of ``n`` images."""
    sizes = [len(m) for m in torch.tensor_split(torch.arange(n), accum_steps)]
    ends = torch.tensor(sizes).cumsum(0).tolist()
    return StepPlan(torch.arange(n), n, [(e - s, e) for s, e in zip(sizes, ends)])


def train_steps(n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1,
                accum_steps: int = 1) -> list[tuple[torch.Tensor, StepPlan]]:
    """The training steps of one epoch for this rank: its dataset indices and their :class:`StepPlan`.

    ``batch_size`` is the global batch (over all processes). The last step holds what is left; its
    micro-batches and parts are as even as :func:`torch.tensor_split` makes them (a part may be empty
    when fewer images than processes are left).
    """
    order = epoch_order(n, shuffle=True, seed=seed, epoch=epoch)
    steps = []
    for step in torch.split(order, batch_size):
        m = len(step)
        parts, bounds, start = [], [], 0
        for micro in torch.tensor_split(torch.arange(m), accum_steps):
            parts.append(torch.tensor_split(micro, world)[rank])
            bounds.append((start, start + len(micro)))
            start += len(micro)
        rows = torch.cat(parts)
        steps.append((step[rows], StepPlan(rows, m, bounds)))
    return steps


def _collate(items) -> tuple[Batch, list[int]]:
    """The batch of the images that could be decoded, and their indices in ``items``."""
    ok = [(img, y) for img, y, _ in items if img is not None]
    skipped = [where for img, _, where in items if img is None]
    if ok:
        images = torch.stack([img for img, _ in ok])
        labels = torch.tensor([y for _, y in ok], dtype=torch.int64)
    else:
        images, labels = torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
    return Batch(images, labels, skipped), [i for i, (img, _, _) in enumerate(items) if img is not None]


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
    """Iterate the batches of one epoch of ``dataset``, starting at batch ``start``.

    ``batches``: index tensors (:func:`batch_indices`), or ``(indices, StepPlan)`` pairs
    (:func:`train_steps`), whose plans the batches carry."""

    def __init__(self, dataset: ImageSet, batches: list, *, start: int = 0,
                 workers: int = 0, pin_memory: bool = False):
        self.dataset, self.start = dataset, start
        planned = bool(batches) and isinstance(batches[0], tuple)
        self.batches = [b for b, _ in batches] if planned else list(batches)
        self.plans = [p for _, p in batches] if planned else [None] * len(batches)
        self.workers, self.pin_memory = check_workers(workers), pin_memory

    def __len__(self) -> int:
        return len(self.batches) - self.start

    def __iter__(self) -> Iterator[Batch]:
        todo, plans = self.batches[self.start:], self.plans[self.start:]
        if isinstance(self.dataset, TensorImageSet):
            for idx, plan in zip(todo, plans):
                images, labels = self.dataset.get_batch(idx)
                yield Batch(images, labels, plan=plan)
            return
        if not todo:
            return
        loader = torch.utils.data.DataLoader(
            _Described(self.dataset), batch_sampler=[b.tolist() for b in todo],
            num_workers=self.workers, collate_fn=_collate, pin_memory=self.pin_memory,
            worker_init_fn=_worker_init if self.workers else None,
            prefetch_factor=4 if self.workers else None, persistent_workers=False)
        for (batch, kept), plan in zip(loader, plans):  # a DataLoader keeps the order of its batches
            batch.plan = None if plan is None else plan.keep(kept)
            yield batch
