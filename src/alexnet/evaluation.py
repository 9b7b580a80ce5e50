"""Evaluating models: the accuracy of one model or of an ensemble (the average of their softmax, as the
paper's Table 2) over a stream of batches, summed over all processes. Training validates and tests with
it, ``alexnet evaluate`` and the experiments report with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from .data.loader import Batch
from .data.transforms import Preset
from .distributed import Dist
from .runtime import autocast, memory_format


@dataclass
class Member:
    """A model ready for evaluation: the callable, its preprocessing and precision."""

    model: Callable[[torch.Tensor], torch.Tensor]
    preset: Preset
    amp: str = "off"
    channels_last: bool = False
    name: str = ""


@dataclass
class EvalResult:
    name: str
    num_classes: int
    count: int = 0
    loss_sum: float = 0.0
    top1: int = 0
    top5: int = 0
    confusion: torch.Tensor | None = None  # (K, K) int64, rows = true class
    skipped: int = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    @property
    def top1_accuracy(self) -> float:
        return self.top1 / max(self.count, 1)

    @property
    def top5_accuracy(self) -> float:
        return self.top5 / max(self.count, 1)

    @property
    def per_class_accuracy(self) -> list[float | None]:
        totals = self.confusion.sum(1)
        return [None if t == 0 else (self.confusion[i, i] / t).item() for i, t in enumerate(totals.tolist())]

    def to_dict(self) -> dict:
        return {"name": self.name, "count": self.count, "loss": self.loss,
                "top1_accuracy": self.top1_accuracy, "top5_accuracy": self.top5_accuracy,
                "top1_error": 1 - self.top1_accuracy, "top5_error": 1 - self.top5_accuracy,
                "topk": min(5, self.num_classes), "skipped": self.skipped}


def probabilities(m: Member, images: torch.Tensor) -> torch.Tensor:
    """Softmax averaged over the preset's test views: (B, K) in float32."""
    x = m.preset(images)  # (B, C, h, w) or (B, V, C, h, w) for 10-crop
    views = x.shape[1] if x.ndim == 5 else 1
    x = x.flatten(0, 1) if x.ndim == 5 else x  # (B * V, C, h, w)
    x = x.contiguous(memory_format=memory_format(m.channels_last))
    with autocast(images.device, m.amp):
        logits = m.model(x)
    probs = logits.float().softmax(-1)
    return probs.view(-1, views, probs.shape[-1]).mean(1)


@torch.no_grad()
def evaluate(members: list[Member], batches: Iterable[Batch], device: torch.device, num_classes: int,
             dist: Dist | None = None, progress=None) -> list[EvalResult]:
    """Accuracy of each member and, with several, of their average softmax (the paper's ensembles).

    Counts are summed over all processes; every rank returns the same totals.
    """
    dist = dist or Dist()  # one process
    names = [m.name or f"model {i + 1}" for i, m in enumerate(members)]
    if len(members) > 1:
        names.append("ensemble")
    k = min(5, num_classes)
    sums = torch.zeros(len(names), 4, dtype=torch.float64, device=device)  # count, loss, top1, top5
    confusion = torch.zeros(len(names), num_classes, num_classes, dtype=torch.int64, device=device)
    skipped = 0
    for batch in batches:
        skipped += len(batch.skipped)
        if batch.labels.numel() == 0:
            continue
        images = batch.images.to(device, non_blocking=True)
        labels = batch.labels.to(device, non_blocking=True)
        probs = [probabilities(m, images) for m in members]
        if len(members) > 1:
            probs.append(torch.stack(probs).mean(0))
        for i, p in enumerate(probs):
            top = p.topk(k, dim=1).indices  # (B, k)
            hit = top == labels[:, None]
            sums[i] += torch.stack([
                torch.tensor(float(len(labels)), device=device, dtype=torch.float64),
                -p.gather(1, labels[:, None]).clamp_min(1e-12).log().sum().double(),
                hit[:, 0].sum().double(), hit.any(1).sum().double()])
            confusion[i].view(-1).index_add_(0, labels * num_classes + top[:, 0],
                                             torch.ones_like(labels))
        if progress is not None:
            progress.update(1)
    dist.all_reduce_sum(sums)
    dist.all_reduce_sum(confusion)
    skipped = int(dist.all_reduce_sum(torch.tensor([skipped], device=device)).item())
    results = []
    for i, name in enumerate(names):
        count, loss, top1, top5 = sums[i].tolist()
        results.append(EvalResult(name, num_classes, int(count), loss, int(top1), int(top5),
                                  confusion[i].cpu(), skipped))
    return results
