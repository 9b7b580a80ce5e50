"""The figures a run and the experiments write, checked on the matplotlib Figure itself and on the PNG:
where ticks fall, where a point lands on the canvas, which texts the renderer drew and whether any two
of them overlap, font sizes, colours against WCAG's contrast formula, blank rows of pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import AxesImage
from matplotlib.text import Annotation
from PIL import Image

from alexnet.experiments.plots import plot_ablations, plot_fig1, plot_fig4
from alexnet.viz import kernel_grid, plot_conv1, plot_curves


def drawn_texts(fig) -> list:
    """(text, its box in pixels) of every non-empty text the Agg renderer really draws."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    seen, real = {}, renderer.draw_text

    def draw_text(gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if mtext is not None and s.strip():
            seen[id(mtext)] = mtext
        return real(gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)

    renderer.draw_text = draw_text
    fig.draw(renderer)
    return [(t, t.get_window_extent(renderer)) for t in seen.values()]


def overlaps(boxes: list) -> list[tuple[str, str]]:
    """Pairs of :func:`drawn_texts` whose boxes share more than one pixel each way."""
    found = []
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1:]:
            w = min(ba.x1, bb.x1) - max(ba.x0, bb.x0)
            h = min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
            if w > 1 and h > 1:
                found.append((a.get_text(), b.get_text()))
    return found


def history(lrs: list[float]) -> list[dict]:
    n = len(lrs)
    return [{"epoch": e, "train_loss": 2 / e, "val_loss": 2.1 / e, "train_top1": 1 - 1 / (e + 1),
             "val_top1": 1 - 1.2 / (e + 2), "val_top5": 1 - 0.2 / (e + 1), "lr": lr}
            for e, lr in zip(range(1, n + 1), lrs)]


def cosine(lr0: float, epochs: int) -> list[float]:
    """Half a cosine from lr0 down to 0 at the end of the last epoch."""
    return [lr0 * 0.5 * (1 + math.cos(math.pi * e / epochs)) for e in range(1, epochs + 1)]


SCHEDULES = {
    "one epoch": [0.05],
    "cosine to 0": cosine(0.01, 7),
    "step /10 every 10 of 30": [0.01] * 10 + [0.001] * 10 + [0.0001] * 10,
}


# ----------------------------------------------------------------------------- plots/curves.png


@pytest.mark.parametrize("name", SCHEDULES)
def test_curves_whole_epoch_ticks_every_learning_rate_drawn_no_labels_overlap(tmp_path, name):
    lrs = SCHEDULES[name]
    fig = plot_curves(history(lrs), tmp_path / "curves.png", run="lenet5-digits-2", model="lenet5")
    assert fig.get_suptitle() == "run lenet5-digits-2: lenet5"
    texts = drawn_texts(fig)  # draws the figure: the transforms below are final
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(t == int(t) for t in ticks), (ax.get_title(), ticks)
    ax = next(a for a in fig.axes if a.get_title().startswith("learning rate"))
    points = ax.transData.transform(np.column_stack([np.arange(1, len(lrs) + 1), lrs]))
    box = ax.bbox
    assert np.isfinite(points).all(), points
    assert all(box.x0 <= x <= box.x1 and box.y0 < y < box.y1 for x, y in points), (points, box)
    if name == "cosine to 0":  # 0 is drawn below every positive rate, and labelled
        assert points[-1, 1] < points[:-1, 1].min()
        lo, hi = ax.get_ylim()
        assert 0 in [t for t in ax.get_yticks() if lo <= t <= hi]
    assert overlaps(texts) == []


# ----------------------------------------------------------------------------- plots/conv1.png


def test_kernel_grid_is_a_signed_scale_with_grey_at_zero():
    w = torch.stack([torch.zeros(1, 3, 3), torch.full((1, 3, 3), 2.0), torch.full((1, 3, 3), -2.0),
                     torch.full((1, 3, 3), 1.0)])  # (4, 1, 3, 3)
    grid = kernel_grid(w, columns=4, gap=1)
    cells = [grid[:, 4 * i:4 * i + 3, 0] for i in range(4)]
    for cell, value in zip(cells, (0.0, 2.0, -2.0, 1.0)):
        np.testing.assert_allclose(cell, 0.5 + value / (2 * 2.0))  # 0.5 + w / (2 max|w|)
    rgb = torch.zeros(2, 3, 2, 2)
    rgb[1, 0], rgb[1, 1] = 1.0, -1.0  # red up, green down, blue 0
    grid = kernel_grid(rgb, columns=2, gap=1)
    np.testing.assert_allclose(grid[:, :2], 0.5)  # a kernel of zeros is grey in every channel
    np.testing.assert_allclose(grid[0, 3], [1.0, 0.0, 0.5])


def test_conv1_towers_share_one_scale_and_say_what_grey_is(tmp_path):
    w = torch.zeros(4, 1, 3, 3)
    w[0], w[1], w[2] = 4.0, -1.0, 2.0  # tower 1: kernels 0-1, tower 2: kernels 2-3 (3 is all zero)
    fig = plot_conv1(w, tmp_path / "conv1.png", towers=2)
    images = [im for ax in fig.axes for im in ax.get_children() if isinstance(im, AxesImage)]
    assert len(images) == 2
    for im in images:
        assert (im.norm.vmin, im.norm.vmax) == (0, 1)
        assert im.cmap(im.norm(0.5))[:3] == pytest.approx((0.5, 0.5, 0.5), abs=0.01)  # 0.5 is mid grey
    tower2 = images[1].get_array()
    assert tower2[0, 0] == pytest.approx(0.5 + 2.0 / 8) and tower2[0, 4] == pytest.approx(0.5)  # 2 of 4
    bar = next(ax for ax in fig.axes if "grey = 0" in ax.get_ylabel())
    assert bar.get_ylim() == pytest.approx((-4.0, 4.0))
    assert overlaps(drawn_texts(fig)) == []


# ----------------------------------------------------------------------------- experiments' figures


def relative_luminance(rgb) -> float:
    """WCAG 2.1's relative luminance of an sRGB colour in [0, 1]."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_fig1_draws_every_seed_visibly(tmp_path):
    from matplotlib.colors import to_rgb

    errors = [[0.6, 0.2, 0.1, 0.04], [0.55, 0.18, 0.09, 0.03], [0.62, 0.21, 0.12, 0.05]]
    runs = {act: [{"train_error": e} for e in errors] for act in ("relu", "tanh")}
    fig = plot_fig1(runs, {"relu": 0.03, "tanh": 0.01}, 0.05, tmp_path / "fig1.png",
                    title="convnet18 on digits: 3 seeds, 4 epochs")
    ax = fig.axes[0]
    for act in ("relu", "tanh"):
        mean = next(line for line in ax.get_lines() if line.get_label().startswith(act))
        seeds = [line for line in ax.get_lines() if line.get_color() == mean.get_color() and line is not mean]
        assert len(seeds) == 3
        for line, e in zip(seeds, errors):
            np.testing.assert_allclose(line.get_ydata(), 100 * np.array(e))
            assert line.get_linewidth() < mean.get_linewidth()
            # the line blended over white, against white: at least 3:1 (WCAG 2.1, 1.4.11 non-text contrast)
            a = line.get_alpha()
            seen = [a * c + (1 - a) for c in to_rgb(line.get_color())]
            assert 1.05 / (relative_luminance(seen) + 0.05) >= 3.0, (act, a)
    assert any("seed" in t.get_text() and "mean" not in t.get_text() for t in ax.get_legend().get_texts())
    assert overlaps(drawn_texts(fig)) == []


def digit(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 28, 28), generator=generator, dtype=torch.uint8)


def fig4_item(i: int, label: int, top1: int, names: list[str]) -> dict:
    order = [top1] + [c for c in range(len(names)) if c != top1][:4]
    probs = [0.9, 0.05, 0.03, 0.015, 0.005]
    return {"test_index": i, "label": label, "true_name": names[label], "image": digit(i),
            "top": [{"index": c, "name": names[c], "probability": p} for c, p in zip(order, probs)],
            "neighbours": [{"label": c, "name": names[c], "distance": 3.0 + j, "image": digit(100 + j)}
                           for j, c in enumerate((label, label, top1, label))]}


def test_fig4_has_no_blank_band_legible_captions_and_marks_the_failure(tmp_path):
    names = ["tabby cat", "golden retriever", "container ship", "3", "4", "5"]
    items = [fig4_item(0, 0, 0, names), fig4_item(1, 1, 1, names), fig4_item(2, 2, 5, names)]  # last: wrong
    fig = plot_fig4(items, tmp_path / "fig4.png", title="run r: top-5 and fc7 neighbours")
    texts = drawn_texts(fig)
    sizes = {t.get_text(): t.get_fontsize() for t, _ in texts}
    assert min(sizes.values()) >= 8, sizes  # points
    assert "golden retriever *  5.0%" not in sizes  # the true class (index 1) is not second in row 1
    assert any(t.startswith("golden retriever *") and t.endswith("90.0%") for t in sizes)
    images = [ax for ax in fig.axes if ax.get_title().startswith("true:")]
    assert [ax.get_title() for ax in images] == ["true: tabby cat", "true: golden retriever",
                                                 "true: container ship\nwrong at top-1"]
    frames = [ax.spines["left"].get_edgecolor() for ax in images]
    assert frames[0] == frames[1] != frames[2]
    assert frames[2][0] > 0.7 and frames[2][1] < 0.3  # red
    grey = np.asarray(Image.open(tmp_path / "fig4.png").convert("L"))
    blank = grey.min(axis=1) >= 250  # rows of white pixels only
    longest = max(len(run) for run in "".join("1" if b else "0" for b in blank).split("0"))
    assert longest < 0.03 * grey.shape[0], (longest, grey.shape)  # gaps between rows, no band
    assert overlaps(texts) == []


def test_ablations_marks_rows_not_run_and_the_papers_bound(tmp_path):
    rows = [
        {"key": "baseline", "label": "all ingredients (baseline)"},
        {"key": "no-lrn", "label": "no local response normalization", "ours": -0.0056, "ours_std": 0.01,
         "paper_top1": 1.4},
        {"key": "centre-crop", "label": "centre crop instead of ten patches", "ours": 0.0, "ours_std": 0.0,
         "paper_top1": 1.5},
        {"key": "no-lighting", "label": "no PCA lighting", "ours": None, "paper_top1": 1.0,
         "paper_top1_bound": True, "skipped": "digits is grayscale: PCA lighting needs three channels"},
    ]
    fig = plot_ablations(rows, tmp_path / "ablations.png", model="alexnet-small", data="digits", seeds=3,
                         epochs=5)
    ax = fig.axes[0]
    assert "5 epochs" in ax.get_title() and "3 seeds" in ax.get_title()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [r["label"] for r in rows[1:]]
    row_y = dict(zip(labels, ax.get_yticks()))
    boxes = drawn_texts(fig)
    texts = {t.get_text(): t for t, _ in boxes}
    not_run = next(t for s, t in texts.items() if "not run" in s)
    assert "grayscale" in not_run.get_text()
    assert abs(not_run.get_position()[1] - row_y["no PCA lighting"]) < 0.5
    bound = texts["> 1.0"]
    assert bound.get_position()[0] > 1.0 and abs(bound.get_position()[1] - row_y["no PCA lighting"]) < 0.5
    arrows = [a for a in ax.texts if isinstance(a, Annotation)]
    assert len(arrows) == 1 and arrows[0].xy[0] > arrows[0].xyann[0] == 1.0  # from 1.0 to the right
    assert overlaps(boxes) == []


def test_a_trained_run_titles_its_curves_with_its_name_and_model(cli, tmp_path, monkeypatch):
    import alexnet.viz

    drawn, real = {}, alexnet.viz.save_figure

    def save_figure(fig, path):
        drawn[path.name] = fig
        return real(fig, path)

    monkeypatch.setattr(alexnet.viz, "save_figure", save_figure)
    r = cli("train", "--model", "lenet5", "--data", "digits:classes=0-1", "--epochs", "1", "--quiet",
            "--out", tmp_path, "--name", "tiny")
    assert r.returncode == 0, r.stderr
    assert drawn["curves.png"].get_suptitle() == "run tiny: lenet5"
    assert (tmp_path / "tiny" / "plots" / "curves.png").is_file()
