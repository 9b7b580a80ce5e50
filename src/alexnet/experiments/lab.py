"""The teaching lab's three experiments on small images:

1. ``alexnet-small`` against ``lenet5``: test error, parameters, training time, and inference time
   per image on the CPU (and on the GPU when there is one), both models timed in alternation
   (:func:`alexnet.timing.alternate`) so that a shared machine's load hits them alike;
2. dropout on and off (``alexnet-small``): test error and the gap between training and test error,
   the overfitting dropout exists to prevent (section 4.2);
3. a batch-size sweep at the recipe's learning rate: the training loss per epoch of each batch size
   (mean ± std over seeds) and how much it moves from seed to seed, i.e. how stable the optimization is.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.loader import batch_indices
from ..data.transforms import Preset
from ..inference.load import load_trained
from ..runtime import pick_device
from ..timing import alternate
from .common import Report, Stats, compare, data_slug, md_table, verdict
from .plots import plot_curves_by

EPOCHS = 5
BATCH_SIZES = (8, 32, 128)
MODELS = ("alexnet-small", "lenet5")


def _history(run_dir: str) -> list[dict]:
    return [json.loads(line) for line in open(Path(run_dir) / "metrics.jsonl") if line.strip()]


def inference_times(
    runs: dict[str, str], source, device: torch.device, batch_sizes=(1, 100), rounds: int = 20
) -> dict:
    """Seconds per image of each run's model at each batch size (median over ``rounds`` alternating
    calls, preprocessing included, as ``alexnet predict`` runs it)."""
    test = source.split("test")
    out = {name: {} for name in runs}
    models = {}
    for name, run in runs.items():
        loaded = load_trained(run)
        models[name] = (loaded.model.eval().to(device), Preset.from_dict(loaded.preset, train=False))
    for b in batch_sizes:
        idx = batch_indices(len(test), b, shuffle=False)[0]
        images = torch.stack([test[int(i)][0] for i in idx]).to(device)

        def call(m=None, p=None, x=images):
            with torch.no_grad():
                m(p(x))

        timed = alternate(
            {n: (lambda m=m, p=p: call(m, p)) for n, (m, p) in models.items()},
            device,
            rounds=rounds,
            warmup=3,
            memory=False,
        )
        for name, t in timed.items():
            out[name][str(len(images))] = t.median / len(images)
    return out


def lab(
    *,
    data: str = "digits",
    epochs: int = EPOCHS,
    seeds: int = 3,
    out: str | None = None,
    device: str = "auto",
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
    quiet: bool = False,
) -> dict:
    """Run the three experiments; returns results.json's content plus ``report``."""
    out = out or f"experiments/lab-{data_slug(data)}"
    common = {"data": data, "epochs": epochs, "device": device}
    report = Report(Path(out), "lab", common, 0, quiet=quiet)
    try:
        default_batch = report.expected_config("probe", {"model": "alexnet-small"})["batch_size"]
        sweep = [b for b in batch_sizes if b != default_batch]
        report.add_epochs((len(MODELS) + 1 + len(sweep)) * seeds * epochs)
        models = {m: [report.run(f"{m}-seed{s}", model=m, seed=s) for s in range(seeds)] for m in MODELS}
        no_dropout = [
            report.run(
                f"alexnet-small-nodropout-seed{s}", model="alexnet-small", seed=s, model_opts={"dropout": 0.0}
            )
            for s in range(seeds)
        ]
        by_batch = {default_batch: models["alexnet-small"]}
        for b in sweep:
            by_batch[b] = [
                report.run(f"alexnet-small-batch{b}-seed{s}", model="alexnet-small", seed=s, batch_size=b)
                for s in range(seeds)
            ]
        by_batch = dict(sorted(by_batch.items()))
        report.progress.note("inference timing")
        numbers = {"experiment": "lab", "data": data, "epochs": epochs, "seeds": seeds, "settings": common}
        numbers["models"] = compare_models(models, report.source, device)
        numbers["dropout"] = dropout_numbers(models["alexnet-small"], no_dropout)
        numbers["batch_sweep"] = batch_numbers(by_batch, default_batch)
        plot_curves_by(
            {
                f"batch {b}" + (" (recipe)" if b == default_batch else ""): [
                    [r["train_loss"] for r in _history(x["run_dir"])] for x in rs
                ]
                for b, rs in by_batch.items()
            },
            report.path / "batch_sweep.png",
            ylabel="training loss (cross-entropy)",
            title=f"alexnet-small on {data}: batch size",
            log=True,
        )
        plot_curves_by(
            {
                "dropout 0.5": [
                    [100 * (1 - r["val_top1"]) for r in _history(x["run_dir"])]
                    for x in models["alexnet-small"]
                ],
                "no dropout": [
                    [100 * (1 - r["val_top1"]) for r in _history(x["run_dir"])] for x in no_dropout
                ],
            },
            report.path / "dropout.png",
            ylabel="validation top-1 error (%)",
            title=f"alexnet-small on {data}: dropout",
        )
        path = report.finish(markdown(numbers), numbers)
    except BaseException:
        report.abort()
        raise
    return {**numbers, "report": str(path)}


def compare_models(models: dict[str, list[dict]], source, device: str) -> dict:

    first = {m: rs[0]["run_dir"] for m, rs in models.items()}
    out = {"per_model": {}}
    for m, rs in models.items():
        net = load_trained(rs[0]["run_dir"]).model
        out["per_model"][m] = {
            "test_top1_error": Stats([r["test_top1_error"] for r in rs]).to_dict(),
            "parameters": sum(p.numel() for p in net.parameters()),
            "train_seconds": Stats([r["train_seconds"] for r in rs]).to_dict(),
            "runs": [r["run_dir"] for r in rs],
        }
    a, b = (models[m] for m in MODELS)
    out["error_test"] = compare([r["test_top1_error"] for r in b], [r["test_top1_error"] for r in a])
    devices = {"cpu": torch.device("cpu")}
    if torch.cuda.is_available():
        devices["cuda"] = pick_device("cuda")
    out["seconds_per_image"] = {d: inference_times(first, source, dev) for d, dev in devices.items()}
    return out


def dropout_numbers(on: list[dict], off: list[dict]) -> dict:
    def gap(rs):  # training error of the last epoch (with dropout active) minus test error
        return [r["test_top1_error"] - (1 - _history(r["run_dir"])[-1]["train_top1"]) for r in rs]

    return {
        "with": {
            "test_top1_error": Stats([r["test_top1_error"] for r in on]).to_dict(),
            "gap": Stats(gap(on)).to_dict(),
        },
        "without": {
            "test_top1_error": Stats([r["test_top1_error"] for r in off]).to_dict(),
            "gap": Stats(gap(off)).to_dict(),
        },
        "error_test": compare([r["test_top1_error"] for r in on], [r["test_top1_error"] for r in off]),
        "gap_test": compare(gap(on), gap(off)),
    }


def batch_numbers(by_batch: dict[int, list[dict]], default: int) -> dict:
    out = {}
    for b, rs in by_batch.items():
        losses = [[r["train_loss"] for r in _history(x["run_dir"])] for x in rs]
        # epoch-to-epoch wobble: mean |change| of the validation error between consecutive epochs
        wobble = [
            sum(abs(h[i + 1]["val_top1"] - h[i]["val_top1"]) for i in range(len(h) - 1)) / max(len(h) - 1, 1)
            for h in (_history(x["run_dir"]) for x in rs)
        ]
        out[str(b)] = {
            "test_top1_error": Stats([x["test_top1_error"] for x in rs]).to_dict(),
            "final_train_loss": Stats([c[-1] for c in losses]).to_dict(),
            "first_epoch_train_loss": Stats([c[0] for c in losses]).to_dict(),
            "val_error_wobble": Stats(wobble).to_dict(),
            "train_seconds": Stats([x["train_seconds"] for x in rs]).to_dict(),
            "recipe": b == default,
            "runs": [x["run_dir"] for x in rs],
        }
    return out


def markdown(n: dict) -> str:
    m = n["models"]
    lines = [
        f"# The lab's experiments on {n['data']}",
        "",
        f"{n['seeds']} seeds each, {n['epochs']} epochs, each model's own recipe. Mean ± sample std over "
        "seeds; differences tested with Welch's t-test over seeds (p >= 0.05: within noise).",
        "",
        "## alexnet-small vs lenet5",
        "",
    ]
    rows = []
    for name, pm in m["per_model"].items():
        times = [
            f"{1e3 * m['seconds_per_image'][d][name][b]:.3f}"
            for d in m["seconds_per_image"]
            for b in m["seconds_per_image"][d][name]
        ]
        rows.append(
            [
                name,
                Stats(pm["test_top1_error"]["values"]).pct(),
                f"{pm['parameters']:,}",
                Stats(pm["train_seconds"]["values"]).text(1),
                *times,
            ]
        )
    heads = [
        f"ms / image, {d} batch {b}"
        for d in m["seconds_per_image"]
        for b in next(iter(m["seconds_per_image"][d].values()))
    ]
    lines += [md_table(["model", "test top-1 error %", "parameters", "training seconds", *heads], rows), ""]
    lines.append(
        f"alexnet-small minus lenet5 test error: {verdict(m['error_test'])}. Inference times are medians "
        "of alternating calls (preprocessing included) on this machine"
        + ("; no GPU was present." if "cuda" not in m["seconds_per_image"] else ".")
    )
    d = n["dropout"]
    lines += [
        "",
        "## Dropout on / off (alexnet-small)",
        "",
        "![dropout](dropout.png)",
        "",
        md_table(
            ["", "test top-1 error %", "test minus last-epoch training error (points)"],
            [
                [
                    "dropout 0.5",
                    Stats(d["with"]["test_top1_error"]["values"]).pct(),
                    Stats(d["with"]["gap"]["values"]).pct(),
                ],
                [
                    "no dropout",
                    Stats(d["without"]["test_top1_error"]["values"]).pct(),
                    Stats(d["without"]["gap"]["values"]).pct(),
                ],
            ],
        ),
        "",
        f"Removing dropout changes test error by {verdict(d['error_test'])} and the generalization gap by "
        f"{verdict(d['gap_test'])}. (The last epoch's training error is measured with dropout active, "
        "so it overstates the trained net's own training error.)",
    ]
    lines += [
        "",
        "## Batch size (alexnet-small, the recipe's learning rate)",
        "",
        "![batch sweep](batch_sweep.png)",
        "",
    ]
    rows = []
    for b, r in n["batch_sweep"].items():
        rows.append(
            [
                b + (" (recipe)" if r["recipe"] else ""),
                Stats(r["test_top1_error"]["values"]).pct(),
                Stats(r["final_train_loss"]["values"]).text(4),
                Stats(r["val_error_wobble"]["values"]).pct(),
                f"{Stats(r['train_seconds']['values']).mean:.1f}",
            ]
        )
    lines += [
        md_table(
            [
                "batch",
                "test top-1 error %",
                "final training loss",
                "epoch-to-epoch val error change (points)",
                "training seconds",
            ],
            rows,
        ),
        "",
    ]
    sizes = list(n["batch_sweep"])
    lo, hi = n["batch_sweep"][sizes[0]], n["batch_sweep"][sizes[-1]]
    c = compare(lo["test_top1_error"]["values"], hi["test_top1_error"]["values"])
    lines.append(
        f"Batch {sizes[-1]} minus batch {sizes[0]} test error: {verdict(c)}. With a fixed learning rate a "
        "larger batch takes fewer, less noisy steps per epoch; the seed-to-seed spread of the loss "
        "(the ± column) is the stability the sweep shows."
    )
    return "\n".join(lines)
