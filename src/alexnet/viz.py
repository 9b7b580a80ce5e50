"""Pictures of a run: training curves, the learned conv1 kernels (the paper's Figure 3) and the
confusion matrix. matplotlib's object API with the Agg canvas: no display, no global state."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator

from .files import atomic_write


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG, atomically."""
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    return path


def epoch_axis(ax) -> None:
    """Ticks on whole epochs only, also when the run has one epoch."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def plot_curves(history: list[dict], path: str | Path, *, run: str = "", model: str = "") -> Figure:
    """Loss, accuracy and learning rate per epoch, from the ``metrics.jsonl`` records, titled with the
    run's name and model."""
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "s-", label="val")
    ax_loss.set(title="loss (cross-entropy)", xlabel="epoch")
    ax_acc.plot(epochs, [100 * r["train_top1"] for r in history], "o-", label="train top-1")
    ax_acc.plot(epochs, [100 * r["val_top1"] for r in history], "s-", label="val top-1")
    ax_acc.plot(epochs, [100 * r["val_top5"] for r in history], "^-", label="val top-5")
    ax_acc.set(title="accuracy (%)", xlabel="epoch")
    lr = np.array([r["lr"] for r in history], dtype=float)
    ax_lr.plot(epochs, lr, "o-")
    ax_lr.set(title="learning rate (end of epoch)", xlabel="epoch")
    _lr_axis(ax_lr, lr)
    for ax in (ax_loss, ax_acc):
        ax.legend()
    for ax in (ax_loss, ax_acc, ax_lr):
        epoch_axis(ax)
        ax.grid(alpha=0.3)
    title = ": ".join(p for p in (run and f"run {run}", model) if p)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return fig


def _lr_axis(ax, lr: np.ndarray) -> None:
    """A log axis for rates spanning a decade or more, whose linear stretch near 0 (symlog) keeps a
    rate of 0 (the end of a cosine schedule) on the plot; a linear axis from 0 for the rest."""
    positive = lr[lr > 0]
    if positive.size and positive.max() >= 10 * positive.min():
        if (lr <= 0).any():
            low = positive.min()
            ax.set_yscale("symlog", linthresh=low)
            ax.set_ylim(-0.3 * low, None)  # 0 inside the axes, not on its edge
            # ticks at 0 and at whole decades above the linear stretch, so that no two labels meet
            decades = range(math.ceil(math.log10(low)), math.ceil(math.log10(positive.max())) + 1)
            ax.yaxis.set_major_locator(FixedLocator([0.0] + [10.0**k for k in decades]))
        else:
            ax.set_yscale("log")
    elif lr.size:
        top = max(float(lr.max()), 1e-12)
        ax.set_ylim(-0.05 * top, 1.1 * top)


def _shown(weight: torch.Tensor) -> torch.Tensor:
    """(O, C, kh, kw) kernels as drawn: RGB or one channel as they are, other channel counts averaged."""
    w = weight.detach().float().cpu()
    return w if w.shape[1] in (1, 3) else w.mean(1, keepdim=True)


def kernel_grid(weight: torch.Tensor, columns: int = 16, gap: int = 1,
                scale: float | None = None) -> np.ndarray:
    """Tile (O, C, kh, kw) kernels into one (H, W, C) image in [0, 1] on one signed scale: 0.5 (grey) is
    a weight of 0, 1 (white) is ``+scale`` and 0 (black) ``-scale`` (per channel for RGB kernels);
    ``scale`` defaults to the largest absolute weight. Other channel counts show the channels' mean."""
    w = _shown(weight)
    o, _, kh, kw = w.shape
    scale = float(w.abs().max()) if scale is None else scale
    w = (0.5 + 0.5 * w / max(scale, 1e-12)).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (O, kh, kw, C)
    columns = min(columns, o)
    rows = math.ceil(o / columns)
    grid = np.ones((rows * (kh + gap) - gap, columns * (kw + gap) - gap, w.shape[-1]))
    for i in range(o):
        r, col = divmod(i, columns)
        grid[r * (kh + gap): r * (kh + gap) + kh, col * (kw + gap): col * (kw + gap) + kw] = w[i]
    return grid


def plot_conv1(weight: torch.Tensor, path: str | Path, towers: int = 1, title: str = "") -> Figure:
    """The first layer's kernels on one signed scale shared by every kernel and tower (grey: a weight
    of 0), with its colour bar; with two towers, each tower's half on its own panel (Figure 3)."""
    halves = weight.chunk(towers) if towers > 1 else [weight]
    scale = float(_shown(weight).abs().max()) or 1.0
    rows = len(halves) * math.ceil(len(halves[0]) / 16)
    fig = Figure(figsize=(10, 1.4 + 1.6 * rows / 3), layout="constrained")
    axes = fig.subplots(len(halves), 1, squeeze=False)[:, 0]
    for i, (ax, half) in enumerate(zip(axes, halves)):
        grid = kernel_grid(half, scale=scale)
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_axis_off()
        if towers > 1:
            ax.set_title(f"tower {i + 1}: kernels {i * len(half) + 1}-{(i + 1) * len(half)}", fontsize=9)
    o, c, kh, kw = weight.shape
    bar = fig.colorbar(ScalarMappable(Normalize(-scale, scale), cmap="gray"), ax=list(axes), shrink=0.9,
                       ticks=[-scale, 0, scale], format="%.2g")
    bar.set_label("weight; grey = 0" + (" (each of R, G, B)" if c == 3 else ""), fontsize=9)
    fig.suptitle(title or f"conv1: {o} learned kernels of size {kh}x{kw}x{c}")
    save_figure(fig, path)
    return fig


def plot_confusion(confusion: torch.Tensor, class_names: list[str], path: str | Path,
                   title: str = "") -> Figure:
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
    save_figure(fig, path)
    return fig
