"""Figure 4: test images with their top-5 predictions, and the training images nearest to them in fc7
space (Euclidean distance, section 6.1), as one PNG grid.

Everything comes from :mod:`alexnet.inference.analysis` (the module ``alexnet predict`` and ``alexnet serve``
use): :class:`~alexnet.inference.analysis.Explainer` for the top-5 and the fc7 vector of each test image,
:func:`~alexnet.inference.analysis.train_index` for the training split's fc7 index, built once per checkpoint
and cached in the run folder (``embeddings-fc7.pt``). When every evenly spaced test image is right, one
row more shows the first test image the model gets wrong. The report also counts how often a neighbour
has the query's class, against what classes drawn at random would give.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import build_source
from ..errors import UserError
from ..inference.analysis import Explainer, train_index
from ..inference.load import load_trained
from ..runtime import pick_device
from ..checkpoint import find_checkpoint
from .common import Report, data_slug, md_table
from .plots import plot_fig4

IMAGES = 8
TRAIN_EPOCHS = 10  # the run trained when none is given: about 98% test accuracy on digits
NEIGHBOURS = 6


def pick_images(n_total: int, n: int) -> list[int]:
    """``n`` test images evenly spaced over the split (deterministic, covering every class of a
    split sorted or stratified by class)."""
    n = min(n, n_total)
    return torch.linspace(0, n_total - 1, n).round().long().unique().tolist()


def first_failure(explainer: Explainer, split, batch_size: int = 256) -> int | None:
    """The index of the first image of ``split`` whose top-1 class (centre crop) is wrong; None when the
    model gets every image right."""
    for start in range(0, len(split), batch_size):
        items = [(i, *split[i]) for i in range(start, min(start + batch_size, len(split)))]
        items = [(i, image, label) for i, image, label in items if image is not None]
        if items:
            top1 = explainer.predict(torch.stack([image for _, image, _ in items])).argmax(1)
            wrong = [i for (i, _, label), t in zip(items, top1.tolist()) if t != label]
            if wrong:
                return wrong[0]
    return None


def fig4(
    run: str | None = None,
    *,
    data: str = "digits",
    model: str = "alexnet-small",
    epochs: int = TRAIN_EPOCHS,
    seed: int = 0,
    images: int = IMAGES,
    neighbours: int = NEIGHBOURS,
    out: str | None = None,
    device: str = "auto",
    quiet: bool = False,
) -> dict:
    """Figure 4 for the run folder ``run``, or for a run of ``model`` on ``data`` trained first."""
    if images < 1 or neighbours < 1:
        raise UserError("--images and --neighbours must be >= 1")
    if run is None:
        out = out or f"experiments/fig4-{data_slug(data)}"
        report = Report(
            Path(out),
            "fig4",
            {"data": data, "model": model, "device": device, "epochs": epochs},
            0,
            quiet=quiet,
        )
        report.add_epochs(report.expected_config("run", {"seed": seed})["epochs"])
    else:
        if not Path(run).is_dir():
            raise UserError(f"fig4 takes a run folder (its fc7 index is cached there), got {run}")
        load_trained(run)  # a bad run fails before a folder is made
        out = out or f"experiments/fig4-{Path(run).resolve().name}"
        report = Report(Path(out), "fig4", {}, 0, quiet=True)
    try:
        if run is None:
            run = report.run(f"seed{seed}", seed=seed)["run_dir"]
        loaded = load_trained(run)
        if loaded.data is None:
            raise UserError(f"{run} does not record its data set")
        source = build_source(loaded.data)
        explainer = Explainer(loaded, pick_device(device))
        report.progress.note("fc7 index")
        index = train_index(explainer, source.split("train"), find_checkpoint(run), cache_dir=run)
        test, train = source.split("test"), source.split("train")
        k = min(5, len(loaded.classes))

        def row(i: int, image: torch.Tensor, label: int) -> dict:
            ex = explainer.explain(image, k=k, maps=False, cam=False)
            nbs = [
                {
                    "train_index": nb.index,
                    "label": nb.label,
                    "name": loaded.class_names[nb.label],
                    "distance": nb.distance,
                    "image": train[nb.index][0],
                }
                for nb in index.search(ex.embedding, neighbours)
            ]
            return {
                "test_index": i,
                "label": label,
                "true_name": loaded.class_names[label],
                "image": explainer.crop(image),
                "top": ex.top,
                "neighbours": nbs,
            }

        items = [row(i, *test[i]) for i in pick_images(len(test), images) if test[i][0] is not None]
        failure = None
        if all(it["top"][0]["index"] == it["label"] for it in items):
            # every evenly spaced image is right: one row more, the first test image the model gets wrong
            report.progress.note("a failure")
            failure = first_failure(explainer, test)
            if failure is not None:
                items.append(row(failure, *test[failure]))
        plot_fig4(
            items,
            report.path / "fig4.png",
            title=f"{loaded.name}: top-5 and nearest training images in fc7 space",
        )
        numbers = summarize(items, index.labels, len(loaded.classes), failure)
        numbers.update(
            {
                "experiment": "fig4",
                "run": str(run),
                "data": loaded.data,
                "index_images": len(index),
                "fc7_dim": int(index.features.shape[1]),
            }
        )
        path = report.finish(markdown(numbers), numbers)
    except BaseException:
        report.abort()
        raise
    return {**numbers, "report": str(path)}


def summarize(items: list[dict], train_labels: torch.Tensor, num_classes: int,
              failure: int | None = None) -> dict:
    """The rows' numbers; the share of same-class neighbours over the evenly spaced images only (the
    ``failure`` row, chosen for being wrong, would bias it)."""
    freq = torch.bincount(train_labels, minlength=num_classes).double() / len(train_labels)
    sample = [it for it in items if it["test_index"] != failure]
    same = [
        sum(nb["label"] == it["label"] for nb in it["neighbours"]) / len(it["neighbours"]) for it in sample
    ]
    chance = [float(freq[it["label"]]) for it in sample]
    return {
        "images": [
            {
                "test_index": it["test_index"],
                "label": it["label"],
                "top": it["top"],
                "correct": it["top"][0]["index"] == it["label"],
                "chosen": "first failure" if it["test_index"] == failure else "evenly spaced",
                "neighbours": [{k: v for k, v in nb.items() if k != "image"} for nb in it["neighbours"]],
            }
            for it in items
        ],
        "failure": failure,
        "neighbour_same_class": sum(same) / len(same),
        "chance_same_class": sum(chance) / len(chance),
    }


def markdown(n: dict) -> str:
    lines = [
        f"# Figure 4: predictions and fc7 neighbours ({n['run']})",
        "",
        "Each row: a test image (centre crop; a red frame when its top-1 class is wrong); its top-5 "
        "classes with their probabilities (green, marked *, when the true class is among them); the "
        "training images nearest in fc7 space by Euclidean distance, nearest first (red caption: another "
        f"class). The fc7 index holds {n['index_images']} training images ({n['fc7_dim']}-d vectors), "
        "built once and cached in the "
        "run folder.",
        "",
        "![fig4](fig4.png)",
        "",
    ]
    rows = [
        [
            f"{im['test_index']}" + (" (first failure)" if im["test_index"] == n["failure"] else ""),
            _top1(im),
            "yes" if im["correct"] else "no",
            ", ".join(f"{nb['name']} ({nb['distance']:.1f})" for nb in im["neighbours"]),
        ]
        for im in n["images"]
    ]
    lines += [md_table(["test image", "top-1 (p)", "correct", "neighbours (distance)"], rows), ""]
    wrong = [im for im in n["images"] if not im["correct"]]
    if n["failure"] is not None:
        lines.append(
            f"Every evenly spaced image is classified correctly, so the last row (red frame) is the first "
            f"test image the model gets wrong, test image {n['failure']}, beside the successes."
        )
    elif not wrong:
        lines.append("The model classifies every test image correctly: there is no failure to show.")
    lines += [
        "",
        f"Neighbours of the query's class: {100 * n['neighbour_same_class']:.1f}% over the evenly spaced "
        f"images (classes drawn at the training split's frequencies: {100 * n['chance_same_class']:.1f}%).",
    ]
    return "\n".join(lines)


def _top1(im: dict) -> str:
    t = im["top"][0]
    return f"{t['name']} ({100 * t['probability']:.1f}%)"
