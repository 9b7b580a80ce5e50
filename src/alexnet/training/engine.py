"""The training loop: ``train_one_epoch`` (evaluation is :mod:`alexnet.evaluation`)."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import Batch, whole_step
from ..data.transforms import Preset
from ..models.dropout import batch_shard
from ..runtime import autocast, memory_format


def model_input(preset: Preset, images: torch.Tensor, generator, channels_last: bool, *,
                rows: torch.Tensor | None = None, total: int | None = None) -> torch.Tensor:
    x = preset(images, generator, rows=rows, total=total)
    return x.contiguous(memory_format=memory_format(channels_last))


@dataclass
class TrainState:
    """Running sums of the epoch in progress (saved in mid-epoch checkpoints)."""

    step: int = 0  # batches done in this epoch
    count: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"step": self.step, "count": self.count, "loss_sum": self.loss_sum, "correct": self.correct,
                "skipped": list(self.skipped), "seconds": self.seconds}


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    batches: Iterable[Batch], preset: Preset, generator: torch.Generator,
                    device: torch.device, *, state: TrainState, amp: str = "off",
                    channels_last: bool = False, accum_steps: int = 1, world: int = 1, shard: bool = False,
                    after_step: Callable[[TrainState], bool] | None = None, progress=None) -> bool:
    """One pass of SGD over ``batches``; ``state`` accumulates loss / accuracy in place.

    Each batch is one optimizer step over the global batch that its
    :class:`~alexnet.data.loader.StepPlan` describes (this process's images of it; without a plan, the
    batch alone, split into ``accum_steps`` micro-batches). Each micro-batch's loss is weighted by its
    share of the global batch, times ``world`` because DDP averages the processes' gradients: the step's
    gradient is the mean over the whole global batch, whatever the number of processes. With ``shard``
    (every process of a torchrun run), augmentation and dropout are drawn for the whole global batch
    and each process takes its rows, and a process whose part of a step is empty still joins the
    step's gradient all-reduce. ``after_step(state)`` runs after each step and returns True to stop
    early (a signal, a mid-epoch checkpoint). Returns True if stopped.
    """
    model.train()
    last = time.perf_counter()
    for batch in batches:  # time spent waiting for data counts too
        state.skipped.extend(batch.skipped)
        n = batch.labels.numel()
        plan = batch.plan or whole_step(n, accum_steps)
        if n or shard:
            images = batch.images.to(device, non_blocking=True)
            labels = batch.labels.to(device, non_blocking=True)
            partial = len(plan.rows) < plan.total
            x = model_input(preset, images, generator, channels_last, rows=plan.rows if partial else None,
                            total=plan.total)
            pieces = plan.pieces()
            loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
            for i, (a, b, rows, total) in enumerate(pieces):
                xc, yc = x[a:b], labels[a:b]
                sync = i == len(pieces) - 1 or not hasattr(model, "no_sync")
                with (nullcontext() if sync else model.no_sync()), autocast(device, amp), \
                        (batch_shard(rows, total) if shard else nullcontext()):
                    logits = model(xc)
                    loss = F.cross_entropy(logits, yc) if len(yc) else logits.sum() * 0.0
                scaler.scale(loss * (len(yc) * world / plan.total)).backward()
                loss_sum += loss.detach().float() * len(yc)
                correct += (logits.detach().argmax(1) == yc).sum()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            # .item() waits for the device: once per step, for the progress line
            state.loss_sum += loss_sum.item()
            state.correct += int(correct.item())
            state.count += n
        state.step += 1
        now = time.perf_counter()
        state.seconds += now - last
        last = now
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{state.loss_sum / max(state.count, 1):.3f}",
                                 acc=f"{100 * state.correct / max(state.count, 1):.1f}%",
                                 ips=f"{state.count / max(state.seconds, 1e-9):.0f}/s", refresh=False)
        if after_step is not None and after_step(state):
            return True
    return False
