"""The experiments' figures (matplotlib's object API with the Agg canvas, saved atomically by
:mod:`alexnet.viz`'s writer): Figure 1's curves, the ablation bars, Figure 4's grid, the lab's sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..viz import save_figure

STYLE = {"relu": ("tab:blue", "-"), "tanh": ("tab:red", "--")}  # Figure 1: ReLU solid, tanh dashed


def plot_fig1(runs: dict, lrs: dict, threshold: float, path: Path, title: str = "") -> Path:
    """Training error (%) per epoch: each seed thin, the mean over seeds thick."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for act, rs in runs.items():
        colour, dash = STYLE.get(act, ("black", "-"))
        curves = np.array([r["train_error"] for r in rs]) * 100
        epochs = np.arange(1, curves.shape[1] + 1)
        for c in curves:
            ax.plot(epochs, c, dash, color=colour, alpha=0.3, linewidth=0.8)
        ax.plot(
            epochs,
            curves.mean(0),
            dash,
            color=colour,
            linewidth=2.2,
            label=f"{act} (lr {lrs[act]:g}, mean of {len(rs)} seeds)",
        )
    ax.axhline(100 * threshold, color="gray", linestyle=":", linewidth=1)
    ax.text(1, 100 * threshold, f" {100 * threshold:g}%", va="bottom", color="gray", fontsize=8)
    ax.set(xlabel="epoch", ylabel="training error (%)", title=title or "training error per epoch")
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_ablations(rows: list[dict], path: Path, title: str = "") -> Path:
    """Per ablation: our change of top-1 error (mean ± combined std) beside the paper's published one."""
    rows = [r for r in rows if r.get("ours") is not None or r.get("paper_top1") is not None]
    fig = Figure(figsize=(7.5, 0.6 + 0.55 * len(rows)))
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    ours = [100 * r["ours"] if r.get("ours") is not None else np.nan for r in rows]
    err = [100 * r.get("ours_std", 0.0) if r.get("ours") is not None else 0 for r in rows]
    paper = [r["paper_top1"] if r.get("paper_top1") is not None else np.nan for r in rows]
    ax.barh(y + 0.2, ours, 0.38, xerr=err, color="tab:blue", label="ours (mean ± std over seeds)", capsize=3)
    ax.barh(y - 0.2, paper, 0.38, color="tab:gray", label="paper (ImageNet)")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, [r["label"] for r in rows])
    ax.set(xlabel="change in top-1 error when the ingredient is removed (points)", title=title or "ablations")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)


def _show(ax, image: torch.Tensor) -> None:
    img = image.permute(1, 2, 0).numpy()
    ax.imshow(
        img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest"
    )
    ax.set_xticks([])
    ax.set_yticks([])


def plot_fig4(items: list[dict], path: Path, title: str = "") -> Path:
    """One row per test image: the image, its top-5 bars (the true class marked), its nearest training
    images in fc7 space (each with its class and distance)."""
    k = max(len(it["neighbours"]) for it in items)
    fig = Figure(figsize=(2.2 + 2.6 + 1.1 * k, 1.35 * len(items) + 0.5))
    grid = fig.add_gridspec(len(items), 2 + k, width_ratios=[1, 2.2] + [1] * k, wspace=0.3, hspace=0.4)
    for i, it in enumerate(items):
        ax = fig.add_subplot(grid[i, 0])
        _show(ax, it["image"])
        ax.set_title(f"true: {it['true_name']}", fontsize=8)
        ax = fig.add_subplot(grid[i, 1])
        top = it["top"]
        names = [t["name"] for t in top][::-1]
        probs = [100 * t["probability"] for t in top][::-1]
        colours = ["tab:green" if t["index"] == it["label"] else "tab:gray" for t in top][::-1]
        ax.barh(range(len(top)), probs, color=colours)
        ax.set_yticks(
            range(len(top)), [f"{n} *" if c == "tab:green" else n for n, c in zip(names, colours)], fontsize=7
        )
        ax.set_xlim(0, 100)
        ax.tick_params(axis="x", labelsize=6)
        if i == len(items) - 1:
            ax.set_xlabel("probability (%); * = true class", fontsize=7)
        for j, nb in enumerate(it["neighbours"]):
            ax = fig.add_subplot(grid[i, 2 + j])
            _show(ax, nb["image"])
            ax.set_title(
                f"{nb['name']}  d={nb['distance']:.1f}",
                fontsize=6,
                color="black" if nb["label"] == it["label"] else "tab:red",
            )
    fig.suptitle(title or "top-5 predictions and nearest training images in fc7 space", fontsize=10)
    return save_figure(fig, path)


def plot_curves_by(
    groups: dict[str, list[list[float]]], path: Path, *, ylabel: str, title: str, log: bool = False
) -> Path:
    """One line per group (its mean over seeds) with a band of ± one std, against the epoch."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for label, curves in groups.items():
        c = np.array(curves)
        epochs = np.arange(1, c.shape[1] + 1)
        mean, std = c.mean(0), c.std(0, ddof=1) if len(c) > 1 else np.zeros(c.shape[1])
        (line,) = ax.plot(epochs, mean, "o-", markersize=3, label=label)
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title, yscale="log" if log else "linear")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
