"""Figure 3: the learned conv1 kernels, one panel per tower, and how colour-specific each tower is.

The paper (section 6.1): "the kernels on GPU 1 are largely color-agnostic, while the kernels on GPU 2
are largely color-specific". The number per tower is :func:`alexnet.inference.analysis.conv1_stats`'s mean
chroma (the share of a kernel's variance that differs between R, G and B: 0 for grey kernels) and
its count of colour kernels (chroma > 0.5); whether the two towers differ beyond chance is a
Mann-Whitney U test over their kernels' chroma. Works on any run, checkpoint or weights file
(``--model NAME`` for a plain one, e.g. torchvision's); with none, it trains one run first.
"""

from __future__ import annotations

from pathlib import Path

from ..inference.analysis import conv1_stats, kernel_chroma
from ..inference.load import load_trained
from ..viz import plot_conv1
from .common import ALPHA, Report, data_slug, md_table

TRAIN_EPOCHS = 10  # the run trained when none is given


def _first_conv(model):
    import torch

    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def fig3(
    source: str | None = None,
    *,
    model_name: str | None = None,
    data: str = "digits",
    model: str = "alexnet-small",
    epochs: int = TRAIN_EPOCHS,
    seed: int = 0,
    out: str | None = None,
    device: str = "auto",
    quiet: bool = False,
) -> dict:
    """Figure 3 for ``source`` (a run folder, checkpoint or, with ``model_name``, a weights file), or for
    a run of ``model`` on ``data`` trained first when ``source`` is None."""
    loaded = None
    if source is None:
        out = out or f"experiments/fig3-{data_slug(data)}"
        common = {"data": data, "model": model, "device": device, "epochs": epochs}
        report = Report(Path(out), "fig3", common, 0, quiet=quiet)
        report.add_epochs(report.expected_config("run", {"seed": seed})["epochs"])
        try:
            source = report.run(f"seed{seed}", seed=seed)["run_dir"]
        except BaseException:
            report.abort()
            raise
    else:
        loaded = load_trained(source, model_name=model_name)  # a bad file fails before a folder is made
        out = out or f"experiments/fig3-{Path(source).resolve().name}"
        report = Report(Path(out), "fig3", {}, 0, quiet=True)
    try:
        loaded = loaded or load_trained(source, model_name=model_name)
        net = loaded.model
        conv = _first_conv(net)
        towers = getattr(net, "towers", 1)
        stats = conv1_stats(net)
        plot_conv1(
            conv.weight,
            report.path / "conv1.png",
            towers=towers,
            title=f"conv1 of {loaded.name}: {conv.weight.shape[0]} kernels "
            f"{'x'.join(map(str, conv.weight.shape[2:]))}x{conv.weight.shape[1]}",
        )
        test = None
        chroma = kernel_chroma(conv.weight)
        if towers == 2 and not bool(chroma.isnan().any()):
            from scipy.stats import mannwhitneyu

            a, b = chroma.chunk(2)
            p = float(mannwhitneyu(a.numpy(), b.numpy()).pvalue)
            test = {"test": "Mann-Whitney U over the kernels' chroma", "p": p, "real": p < ALPHA}
        numbers = {
            "experiment": "fig3",
            "source": str(source),
            "model": type(net).__name__,
            "model_name": getattr(net, "name", ""),
            "towers": towers,
            "kernel_shape": list(conv.weight.shape),
            "per_tower": stats,
            "chroma": [None if c != c else float(c) for c in chroma.tolist()],  # NaN: one channel
            "tower_difference": test,
        }
        path = report.finish(markdown(numbers), numbers)
    except BaseException:
        report.abort()
        raise
    return {**numbers, "report": str(path)}


def markdown(n: dict) -> str:
    o, c, kh, kw = n["kernel_shape"]
    lines = [
        f"# Figure 3: conv1 kernels of {n['source']}",
        "",
        f"{o} kernels of {kh}x{kw}x{c} on one signed scale shared by every kernel: grey is a weight of 0, "
        "white and black the largest absolute weight, positive and negative (per channel for RGB); "
        + ("one panel per tower." if n["towers"] == 2 else "one tower."),
        "",
        "![conv1](conv1.png)",
        "",
    ]
    colour = n["per_tower"][0]["mean_chroma"] is not None
    rows = [
        [
            t["tower"],
            f"{t['first'] + 1}-{t['first'] + t['kernels']}",
            f"{t['mean_chroma']:.3f}" if colour else "-",
            f"{t['colour_kernels']} / {t['kernels']}" if colour else "-",
            f"{t['mean_norm']:.3f}",
        ]
        for t in n["per_tower"]
    ]
    lines += [
        md_table(["tower", "kernels", "mean chroma", "colour kernels (chroma > 0.5)", "mean norm"], rows),
        "",
    ]
    if not colour:
        lines.append(
            "The input has one channel: colour specificity is undefined (train on RGB data, e.g. "
            "`--data cifar10:PATH`, or pass an ImageNet run or weights file)."
        )
    elif n["tower_difference"] is not None:
        t1, t2 = (t["mean_chroma"] for t in n["per_tower"])
        more = 1 if t1 > t2 else 2
        d = n["tower_difference"]
        if d["real"]:
            lines.append(
                f"Tower {more} is the more colour-specific (mean chroma {max(t1, t2):.3f} vs "
                f"{min(t1, t2):.3f}; {d['test']}, p = {d['p']:.2g}): the paper's split into a "
                "colour-agnostic and a colour-specific tower."
            )
        else:
            lines.append(
                f"The towers' chroma differ within chance ({d['test']}, p = {d['p']:.2g}): no "
                "colour split between the towers in this network."
            )
    lines += [
        "",
        "Chroma of a kernel w (channels c): sum (w - mean over c)^2 / sum (w - mean of w)^2 "
        "(`alexnet.inference.analysis.kernel_chroma`); 0 for a grey kernel, 1 for one with no grey part.",
    ]
    return "\n".join(lines)
