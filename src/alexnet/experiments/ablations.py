"""The paper's ingredients, each removed on its own, beside the change the paper published.

Every variant trains ``--seeds`` seeds with the model's own recipe; the baseline keeps every
ingredient. Ten-patch testing changes no training: the baseline runs' own checkpoints are evaluated
again with the centre crop and with the ten patches (:func:`alexnet.training.engine.evaluate`, the
code of ``alexnet evaluate``). PCA lighting needs colour: on grayscale data it is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.loader import EpochLoader, batch_indices
from ..data.transforms import Preset
from ..models import model_options
from ..runtime import pick_device
from ..errors import UserError
from ..evaluation import Member, evaluate
from ..inference.load import load_trained
from .common import Report, Stats, compare, data_slug, md_table, verdict
from .plots import plot_ablations

EPOCHS = 5


@dataclass(frozen=True)
class Ablation:
    key: str
    label: str
    paper_top1: float | None  # published change of error (points) when the ingredient is removed
    paper_top5: float | None
    source: str  # where the paper says so
    model_opts: dict | None = None  # the change, as model options ...
    options: dict | None = None  # ... or as training options
    needs: tuple[str, ...] = ()  # model options that must exist
    paper_bound: bool = False  # paper_top1 is a lower bound ("over 1%")


# The paper's numbers are ILSVRC top-1 / top-5 error differences (points), as printed in the sections
# named; None where the paper gives no number.
ABLATIONS = [
    Ablation(
        "no-lrn",
        "no local response normalization",
        1.4,
        1.2,
        "section 3.3: LRN reduces top-1 / top-5 error by 1.4% / 1.2%",
        {"lrn": False},
        needs=("lrn",),
    ),
    Ablation(
        "no-overlap",
        "non-overlapping pooling (2x2/2)",
        0.4,
        0.3,
        "section 3.4: overlapping pooling reduces them by 0.4% / 0.3%",
        {"overlap_pool": False},
        needs=("overlap_pool",),
    ),
    Ablation(
        "no-dropout",
        "no dropout",
        None,
        None,
        "section 4.2: without dropout the network overfits substantially (no number)",
        {"dropout": 0.0},
        needs=("dropout",),
    ),
    Ablation(
        "one-tower",
        "one tower, same widths",
        None,
        None,
        "not in the paper: it compares with half the kernels (next row)",
        {"towers": 1},
        needs=("towers",),
    ),
    Ablation(
        "one-tower-half",
        "one tower, half the kernels",
        1.7,
        1.2,
        "section 3.2: two towers reduce them by 1.7% / 1.2% against a one-tower net with half the "
        "kernels (footnote 2: conv5 and the fully connected layers kept whole; towers=1, width=0.5)",
        {"towers": 1, "width": 0.5},
        needs=("towers", "width"),
    ),
    Ablation(
        "no-lighting",
        "no PCA lighting",
        1.0,
        None,
        "section 4.1: PCA lighting reduces top-1 error by over 1%",
        options={"lighting": "none"},
        paper_bound=True,
    ),
]
TEN_PATCH = (
    "centre crop instead of ten patches",
    1.5,
    1.3,
    "section 4.1 / Table 1: 39.0 / 18.3 with one patch, 37.5 / 17.0 with ten (ILSVRC-2010)",
)


def evaluate_views(run_dir: str, source, device: torch.device, views=("center", "10crop")) -> dict:
    """Test top-1 / top-5 of a run's checkpoint (best.pt) under each test view."""
    loaded = load_trained(run_dir)
    model = loaded.model.eval().to(device)
    split = source.split("test")
    members = [Member(model, Preset.from_dict(loaded.preset, train=False, tta=v), name=v) for v in views]
    batches = batch_indices(len(split), 100, shuffle=False)
    results = evaluate(members, EpochLoader(split, batches), device, source.num_classes)
    return {r.name: r.to_dict() for r in results if r.name in views}


def ablations(
    *,
    data: str = "digits",
    model: str = "alexnet-small",
    epochs: int = EPOCHS,
    seeds: int = 3,
    out: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    model_opts: dict | None = None,
    only: list[str] | None = None,
    quiet: bool = False,
) -> dict:
    """Run the experiment; returns results.json's content plus ``report``."""
    unknown = sorted(set(only or ()) - {ab.key for ab in ABLATIONS})
    if unknown:
        raise UserError(f"unknown ablation(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(ab.key for ab in ABLATIONS)}")
    out = out or f"experiments/ablations-{data_slug(data)}"
    accepted = model_options(model)
    common = {
        "data": data,
        "model": model,
        "epochs": epochs,
        "device": device,
        **({"batch_size": batch_size} if batch_size else {}),
    }
    report = Report(Path(out), "ablations", common, 0, quiet=quiet)
    try:
        colour = report.source.channels == 3
        base_options = {"lighting": "data"} if colour else {}
        plan, skipped = [], []
        for ab in ABLATIONS:
            if only and ab.key not in only:
                continue
            missing = [k for k in ab.needs if k not in accepted]
            if missing:
                skipped.append((ab, f"{model} has no {' / '.join(missing)} option"))
            elif ab.key == "no-lighting" and not colour:
                skipped.append(
                    (
                        ab,
                        f"{data} is grayscale: PCA lighting shifts colours along the RGB "
                        "covariance's eigenvectors and needs three channels",
                    )
                )
            else:
                plan.append(ab)
        report.add_epochs((len(plan) + 1) * seeds * epochs)
        opts = dict(model_opts or {})
        base = [
            report.run(f"baseline-seed{s}", seed=s, model_opts=opts, **base_options) for s in range(seeds)
        ]
        variants = {}
        for ab in plan:
            variants[ab.key] = [
                report.run(
                    f"{ab.key}-seed{s}",
                    seed=s,
                    model_opts={**opts, **(ab.model_opts or {})},
                    **{**base_options, **(ab.options or {})},
                )
                for s in range(seeds)
            ]
        report.progress.note("ten-patch evaluation")
        dev = pick_device(device)
        views = [evaluate_views(r["run_dir"], report.source, dev) for r in base]
        numbers = summarize(base, variants, views, plan, skipped)
        numbers.update(
            {
                "experiment": "ablations",
                "data": data,
                "model": model,
                "epochs": epochs,
                "seeds": seeds,
                "settings": {**common, **base_options},
            }
        )
        plot_ablations(numbers["rows"], report.path / "ablations.png", model=model, data=data, seeds=seeds,
                       epochs=epochs)
        path = report.finish(markdown(numbers), numbers)
    except BaseException:
        report.abort()
        raise
    return {**numbers, "report": str(path)}


def _errors(results: list[dict], key: str) -> list[float]:
    return [r[key] for r in results]


def summarize(base, variants, views, plan, skipped) -> dict:
    rows = []
    b1, b5 = _errors(base, "test_top1_error"), _errors(base, "test_top5_error")
    rows.append(
        {
            "key": "baseline",
            "label": "all ingredients (baseline)",
            "top1_error": Stats(b1).to_dict(),
            "top5_error": Stats(b5).to_dict(),
            "runs": [r["run_dir"] for r in base],
        }
    )
    for ab in plan:
        rs = variants[ab.key]
        a1, a5 = _errors(rs, "test_top1_error"), _errors(rs, "test_top5_error")
        c1, c5 = compare(b1, a1), compare(b5, a5)
        rows.append(
            {
                "key": ab.key,
                "label": ab.label,
                "top1_error": Stats(a1).to_dict(),
                "top5_error": Stats(a5).to_dict(),
                "delta_top1": c1,
                "delta_top5": c5,
                "ours": c1["diff"],
                "ours_std": math.hypot(Stats(a1).std, Stats(b1).std),
                "paper_top1": ab.paper_top1,
                "paper_top1_bound": ab.paper_bound,
                "paper_top5": ab.paper_top5,
                "source": ab.source,
                "runs": [r["run_dir"] for r in rs],
            }
        )
    c1 = [v["center"]["top1_error"] for v in views]
    t1 = [v["10crop"]["top1_error"] for v in views]
    c5 = [v["center"]["top5_error"] for v in views]
    t5 = [v["10crop"]["top5_error"] for v in views]
    d1, d5 = compare(t1, c1, paired=True), compare(t5, c5, paired=True)
    label, p1, p5, src = TEN_PATCH
    rows.append(
        {
            "key": "centre-crop",
            "label": label,
            "top1_error": Stats(c1).to_dict(),
            "top5_error": Stats(c5).to_dict(),
            "ten_patch_top1_error": Stats(t1).to_dict(),
            "ten_patch_top5_error": Stats(t5).to_dict(),
            "delta_top1": d1,
            "delta_top5": d5,
            "ours": d1["diff"],
            "ours_std": Stats([c - t for c, t in zip(c1, t1)]).std,
            "paper_top1": p1,
            "paper_top5": p5,
            "source": src,
            "evaluation_only": True,
            "views": views,
        }
    )
    for ab, why in skipped:
        rows.append(
            {
                "key": ab.key,
                "label": ab.label,
                "skipped": why,
                "ours": None,
                "paper_top1": ab.paper_top1,
                "paper_top1_bound": ab.paper_bound,
                "paper_top5": ab.paper_top5,
                "source": ab.source,
            }
        )
    return {"rows": rows}


def _paper(v: float | None, prefix: str = "") -> str:
    return "-" if v is None else f"{prefix}+{v:.1f}"


def markdown(n: dict) -> str:
    base = n["rows"][0]
    lines = [
        f"# Ablations: {n['model']} on {n['data']}",
        "",
        f"Each ingredient of the paper removed on its own; {n['seeds']} seeds each, {n['epochs']} epochs, "
        "the "
        "model's own recipe otherwise. Test error in % as mean ± sample std over seeds. Δ is the change "
        "of error when the ingredient is removed (positive: the ingredient helps), tested with Welch's "
        "t-test over seeds (paired for the ten-patch row, which evaluates the baseline's own "
        "checkpoints twice); a difference with p >= 0.05 is reported as within noise. The paper's Δ "
        "are ILSVRC results of the full network, for scale, not for equality.",
        "",
        "![ablations](ablations.png)",
        "",
    ]
    rows = [
        [
            base["label"],
            Stats(base["top1_error"]["values"]).pct(),
            Stats(base["top5_error"]["values"]).pct(),
            "",
            "",
            "",
            "",
        ]
    ]
    for r in n["rows"][1:]:
        if r.get("skipped"):
            rows.append(
                [
                    r["label"],
                    "not run",
                    "",
                    f"skipped: {r['skipped']}",
                    "",
                    _paper(r["paper_top1"], "> " if r.get("paper_top1_bound") else ""),
                    _paper(r["paper_top5"]),
                ]
            )
            continue
        rows.append(
            [
                r["label"],
                Stats(r["top1_error"]["values"]).pct(),
                Stats(r["top5_error"]["values"]).pct(),
                verdict(r["delta_top1"]),
                verdict(r["delta_top5"]),
                _paper(r["paper_top1"], "> " if r.get("paper_top1_bound") else ""),
                _paper(r["paper_top5"]),
            ]
        )
    lines += [
        md_table(
            [
                "variant",
                "top-1 error %",
                "top-5 error %",
                "Δ top-1 (ours)",
                "Δ top-5 (ours)",
                "Δ top-1 (paper)",
                "Δ top-5 (paper)",
            ],
            rows,
        ),
        "",
    ]
    real = [r["label"] for r in n["rows"][1:] if not r.get("skipped") and r["delta_top1"]["real"]]
    noise = [r["label"] for r in n["rows"][1:] if not r.get("skipped") and r["delta_top1"]["real"] is False]
    lines.append(
        "Beyond noise in top-1 error: "
        + ("; ".join(real) if real else "none")
        + ". Within noise: "
        + ("; ".join(noise) if noise else "none")
        + "."
    )
    ten = next(r for r in n["rows"] if r["key"] == "centre-crop")
    if ten["delta_top1"]["diff"] == 0 and ten["delta_top5"]["diff"] == 0:
        lines += [
            "",
            "Ten patches gave exactly the centre crop's numbers here: on images no larger than the "
            "network's input the four corner patches are the centre patch, so the ten views are at "
            "most one patch and its mirror (and mirrors are off for data whose labels they change, "
            "as digits).",
        ]
    lines += ["", "## Where the paper's numbers come from", ""]
    lines += [f"- {r['label']}: {r['source']}" for r in n["rows"][1:]]
    return "\n".join(lines)
