"""The figures a run writes, checked on the matplotlib Figure itself and on the PNG:
where ticks fall, where a point lands on the canvas, which texts the renderer drew and whether any two
of them overlap, font sizes, colours against WCAG's contrast formula, blank rows of pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import AxesImage

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
