"""The experiments' figures (matplotlib's object API with the Agg canvas, saved atomically by
:mod:`alexnet.viz`'s writer): Figure 1's curves, the ablation bars, Figure 4's grid, the lab's sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ..viz import epoch_axis, save_figure

STYLE = {"relu": ("tab:blue", "-"), "tanh": ("tab:red", "--")}  # Figure 1: ReLU solid, tanh dashed
SEED_ALPHA = 0.85  # Figure 1's thin lines, one per seed


def plot_fig1(runs: dict, lrs: dict, threshold: float, path: Path, title: str = "") -> Figure:
    """Training error (%) per epoch: each seed thin, the mean over seeds thick."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for act, rs in runs.items():
        colour, dash = STYLE.get(act, ("black", "-"))
        curves = np.array([r["train_error"] for r in rs]) * 100
        epochs = np.arange(1, curves.shape[1] + 1)
        for c in curves:  # opaque enough to stand out from the white (WCAG's 3:1 for graphics)
            ax.plot(epochs, c, dash, color=colour, alpha=SEED_ALPHA, linewidth=0.9, zorder=3)
        ax.plot(
            epochs,
            curves.mean(0),
            dash,
            color=colour,
            linewidth=2.6,
            alpha=0.6,
            label=f"{act} (lr {lrs[act]:g}, mean of {len(rs)} seeds)",
        )
    ax.plot([], [], color="dimgray", linewidth=0.9, label="thin: each seed")
    ax.axhline(100 * threshold, color="gray", linestyle=":", linewidth=1)
    ax.text(1, 100 * threshold, f" {100 * threshold:g}%", va="bottom", color="gray", fontsize=8)
    ax.set(xlabel="epoch", ylabel="training error (%)", title=title or "training error per epoch")
    ax.set_ylim(bottom=0)
    epoch_axis(ax)
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return fig


def plot_ablations(rows: list[dict], path: Path, *, model: str, data: str, seeds: int, epochs: int) -> Figure:
    """Per ablation: our change of top-1 error (mean ± combined std) beside the paper's published one;
    a row not run says so and why, and a paper's "over X" is drawn as a bound (an arrow past X)."""
    rows = [r for r in rows if r["key"] != "baseline"]  # the others are changes from it
    fig = Figure(figsize=(8, 1.3 + 0.55 * len(rows)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    ours = [100 * r["ours"] if r.get("ours") is not None else np.nan for r in rows]
    err = [100 * r.get("ours_std", 0.0) if r.get("ours") is not None else 0 for r in rows]
    paper = [r["paper_top1"] if r.get("paper_top1") is not None else np.nan for r in rows]
    bound = [bool(r.get("paper_top1_bound")) for r in rows]
    ax.barh(y + 0.2, ours, 0.38, xerr=err, color="tab:blue", label="ours (mean ± std over seeds)", capsize=3)
    ax.barh(y - 0.2, [np.nan if b else p for p, b in zip(paper, bound)], 0.38, color="tab:gray",
            label="paper (ImageNet)")
    if any(bound):
        ax.barh(y - 0.2, [p if b else np.nan for p, b in zip(paper, bound)], 0.38, color="white",
                edgecolor="tab:gray", hatch="//", label="paper: at least this much")
    reach = max([abs(o) + e for o, e in zip(ours, err) if o == o] + [p for p in paper if p == p] + [1.0])
    for yi, r, p, b in zip(y, rows, paper, bound):
        if r.get("skipped"):
            ax.text(0, yi + 0.2, "  not run: " + r["skipped"].split(":")[0], va="center", fontsize=8,
                    style="italic", color="tab:blue")
        if b:  # "over X": an open-ended bar
            ax.annotate("", xy=(p + 0.35 * reach, yi - 0.2), xytext=(p, yi - 0.2),
                        arrowprops={"arrowstyle": "->", "color": "tab:gray", "linewidth": 1.5})
            ax.text(p + 0.37 * reach, yi - 0.2, f"> {p:.1f}", va="center", fontsize=9, color="dimgray")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(min([o - e for o, e in zip(ours, err) if o == o] + [0.0]) - 0.1 * reach, 1.5 * reach)
    ax.set_yticks(y, [r["label"] for r in rows])
    ax.set(xlabel="change in top-1 error when the ingredient is removed (points)",
           title=f"{model} on {data}: {seeds} seeds of {epochs} epochs each")
    fig.legend(fontsize=8, loc="outside lower center", ncols=3)
    ax.grid(alpha=0.3, axis="x")
    save_figure(fig, path)
    return fig


def _show(ax, image: torch.Tensor) -> None:
    img = image.permute(1, 2, 0).numpy()
    ax.imshow(
        img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest"
    )
    ax.set_xticks([])
    ax.set_yticks([])


CAPTION = 8  # points: the smallest text in a figure


def _short(name: str, n: int = 18) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def _pct(p: float) -> str:
    return "<0.1%" if p < 0.001 else f"{100 * p:.1f}%"


def plot_fig4(items: list[dict], path: Path, title: str = "") -> Figure:
    """One row per test image: the image (a red frame when its top-1 class is wrong), its top-5 bars
    with their probabilities (the true class marked), its nearest training images in fc7 space (each
    with its class and distance)."""
    k = max(len(it["neighbours"]) for it in items)
    fig = Figure(figsize=(1.4 + 3.0 + 1.15 * k, 1.55 * len(items) + 0.4), layout="constrained")
    grid = fig.add_gridspec(len(items), 2 + k, width_ratios=[1, 2.4] + [1] * k)
    for i, it in enumerate(items):
        top = it["top"]
        wrong = top[0]["index"] != it["label"]
        colour = "tab:red" if wrong else "black"
        ax = fig.add_subplot(grid[i, 0])
        _show(ax, it["image"])
        ax.set_title(f"true: {_short(it['true_name'])}" + ("\nwrong at top-1" if wrong else ""),
                     fontsize=CAPTION + 1, color=colour)
        for spine in ax.spines.values():
            spine.set(color=colour, linewidth=3 if wrong else 0.8)
        ax = fig.add_subplot(grid[i, 1])
        true = [t["index"] == it["label"] for t in top][::-1]
        ax.barh(range(len(top)), [100 * t["probability"] for t in top][::-1],
                color=["tab:green" if t else "tab:gray" for t in true])
        labels = [f"{_short(t['name'])}{' *' if t['index'] == it['label'] else ''}  {_pct(t['probability'])}"
                  for t in top][::-1]
        ax.set_yticks(range(len(top)), labels, fontsize=CAPTION)
        ax.set_xlim(0, 100)
        ax.tick_params(axis="x", labelsize=CAPTION)
        if i == len(items) - 1:
            ax.set_xlabel("probability (%); * = true class", fontsize=CAPTION)
        for j, nb in enumerate(it["neighbours"]):
            ax = fig.add_subplot(grid[i, 2 + j])
            _show(ax, nb["image"])
            ax.set_title(f"{_short(nb['name'])}\nd = {nb['distance']:.1f}", fontsize=CAPTION,
                         color="black" if nb["label"] == it["label"] else "tab:red")
    fig.suptitle(title or "top-5 predictions and nearest training images in fc7 space", fontsize=11)
    save_figure(fig, path)
    return fig


def plot_curves_by(
    groups: dict[str, list[list[float]]], path: Path, *, ylabel: str, title: str, log: bool = False
) -> Figure:
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
    epoch_axis(ax)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return fig
