"""Pictures of a run: training curves, the learned conv1 kernels (the paper's Figure 3) and the
confusion matrix. matplotlib's object API with the Agg canvas: no display, no global state."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from .files import atomic_write


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG, atomically."""
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    return path


def plot_curves(history: list[dict], path: str | Path) -> Path:
    """Loss, accuracy and learning rate per epoch, from the ``metrics.jsonl`` records."""
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(13, 3.6))
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "s-", label="val")
    ax_loss.set(title="loss (cross-entropy)", xlabel="epoch")
    ax_acc.plot(epochs, [100 * r["train_top1"] for r in history], "o-", label="train top-1")
    ax_acc.plot(epochs, [100 * r["val_top1"] for r in history], "s-", label="val top-1")
    ax_acc.plot(epochs, [100 * r["val_top5"] for r in history], "^-", label="val top-5")
    ax_acc.set(title="accuracy (%)", xlabel="epoch")
    ax_lr.plot(epochs, [r["lr"] for r in history], "o-")
    ax_lr.set(title="learning rate (end of epoch)", xlabel="epoch", yscale="log")
    for ax in (ax_loss, ax_acc):
        ax.legend()
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def kernel_grid(weight: torch.Tensor, columns: int = 16, gap: int = 1) -> np.ndarray:
    """Tile (O, C, kh, kw) kernels, each scaled to [0, 1] on its own, into one image."""
    w = weight.detach().float().cpu()
    o, c, kh, kw = w.shape
    lo = w.flatten(1).min(1).values[:, None, None, None]
    hi = w.flatten(1).max(1).values[:, None, None, None]
    w = ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()  # (O, kh, kw, C)
    if c not in (1, 3):
        w = w.mean(-1, keepdims=True)  # other channel counts: show the mean over channels
    columns = min(columns, o)
    rows = math.ceil(o / columns)
    grid = np.ones((rows * (kh + gap) - gap, columns * (kw + gap) - gap, w.shape[-1]))
    for i in range(o):
        r, col = divmod(i, columns)
        grid[r * (kh + gap): r * (kh + gap) + kh, col * (kw + gap): col * (kw + gap) + kw] = w[i]
    return grid


def plot_conv1(weight: torch.Tensor, path: str | Path, towers: int = 1, title: str = "") -> Path:
    """The first layer's kernels; with two towers, each tower's half on its own panel (Figure 3)."""
    halves = weight.chunk(towers) if towers > 1 else [weight]
    fig = Figure(figsize=(10, 1.2 + 1.6 * len(halves) * math.ceil(len(halves[0]) / 16) / 3))
    axes = fig.subplots(len(halves), 1, squeeze=False)[:, 0]
    for i, (ax, half) in enumerate(zip(axes, halves)):
        grid = kernel_grid(half)
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", interpolation="nearest")
        ax.set_axis_off()
        if towers > 1:
            ax.set_title(f"tower {i + 1}: kernels {i * len(half) + 1}-{(i + 1) * len(half)}", fontsize=9)
    o, c, kh, kw = weight.shape
    fig.suptitle(title or f"conv1: {o} learned kernels of size {kh}x{kw}x{c}")
    return save_figure(fig, path)


def plot_confusion(confusion: torch.Tensor, class_names: list[str], path: str | Path,
                   title: str = "") -> Path:
    """Row-normalized confusion matrix (rows: true class), with counts written in each cell."""
    cm = confusion.cpu().numpy().astype(np.int64)
    k = cm.shape[0]
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(14, 2.5 + 0.5 * k)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rates[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), class_names, rotation=90 if k > 10 else 0)
        ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted class", ylabel="true class",
           title=title or f"confusion matrix ({cm.sum()} images, {np.trace(cm)} correct)")
    return save_figure(fig, path)
