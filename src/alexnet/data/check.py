"""``alexnet data check``: everything that would go wrong with a dataset, found without training.

Image folders are walked and every file is decoded exactly as training decodes it; the report
lists counts per split and class, each undecodable file with the reason, tiny images, and the
structural problems (empty class folders, label files that don't match the images, classes that
validation names but train lacks, splits without images). Structural problems, or a training class
left without a single decodable image, make the dataset unusable; bad files alone don't (training
skips and counts them). Other sources (CIFAR, MNIST, stores, built-in sets) are checked by loading.
"""

from __future__ import annotations

import os

import numpy as np

from ..cliargs import format_table

from . import build_source, parse_spec
from .base import DataError, parallel_map
from .decode import ImageDecodeError, decode_file
from .folder import BASE_SIZE, scan_folder

TINY_SIDE = 64  # images whose shorter side is below this are upscaled >= 4x: reported, still used


def _probe(job: tuple[str, int]) -> tuple[tuple[int, int] | None, str]:
    path, size = job
    try:
        _, wh = decode_file(path, size)
        return wh, ""
    except ImageDecodeError as e:
        return None, str(e).removeprefix(f"{path}: ")


def check_dataset(spec: str, *, workers: int = 0, tiny: int = TINY_SIDE) -> dict:
    """A report (JSON-serializable): ``usable``, ``problems``, and per split the image counts per class,
    ``undecodable`` files (path, reason) and ``tiny`` images (path, width, height)."""
    kind, arg = parse_spec(spec)
    if kind not in ("folder", "imagenet"):
        source = build_source(spec)  # a broken file raises DataError: the one-line reason
        splits = {s: {"images": len(ds), "per_class": _per_class(ds.targets, source.classes),
                      "undecodable": [], "tiny": []} for s, ds in source.splits.items()}
        return {"source": spec, "kind": kind, "classes": source.num_classes, "problems": [], "usable": True,
                "notes": source.notes, "splits": splits}

    scan = scan_folder(arg, require_splits=kind == "imagenet")
    problems = list(scan.problems)
    splits = {}
    for split, (paths, labels) in scan.files.items():
        full = [os.path.join(scan.root, p) for p in paths]
        results = list(parallel_map(_probe, [(p, BASE_SIZE) for p in full], workers, chunksize=32))
        ok = np.array([wh is not None for wh, _ in results], dtype=bool)
        splits[split] = {
            "images": int(ok.sum()),
            "files": len(paths),
            "per_class": _per_class(labels[ok], scan.classes),
            "undecodable": [{"path": p, "reason": why} for p, (wh, why) in zip(full, results) if wh is None],
            "tiny": [{"path": p, "width": wh[0], "height": wh[1]} for p, (wh, _) in zip(full, results)
                     if wh is not None and min(wh) < tiny],
        }
        if len(paths) and not ok.any():
            problems.append(f"no decodable image in the {split!r} split ({len(paths)} files)")
        elif split == "train":  # a class whose every file is broken cannot be learned
            files = np.bincount(labels, minlength=len(scan.classes))
            dead = [c for c, f in zip(scan.classes, files) if f and not splits[split]["per_class"][c]]
            if dead:
                problems.append(f"{len(dead)} training class(es) with no decodable image, e.g. {dead[0]}")
    return {"source": spec, "kind": kind, "root": scan.root, "classes": len(scan.classes),
            "problems": problems, "usable": not problems, "notes": scan.notes, "splits": splits}


def _per_class(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    return {c: int(n) for c, n in zip(classes, counts)}


def format_report(report: dict, *, max_classes: int = 30) -> str:
    """The report as text: a table of splits, per-class counts (or their extremes), files, problems."""
    lines = [f"{report['source']}: {report['classes']} classes"]
    lines.append(format_table(
        ["split", "images", "bad", "tiny", "min/class", "max/class"],
        [[split, s["images"], len(s["undecodable"]), len(s["tiny"]), min(s["per_class"].values(), default=0),
          max(s["per_class"].values(), default=0)] for split, s in report["splits"].items()]))
    names = list(next(iter(report["splits"].values()))["per_class"]) if report["splits"] else []
    if names:
        shown = names if len(names) <= max_classes else sorted(
            names, key=lambda c: report["splits"].get("train", {}).get("per_class", {}).get(c, 0))[:10]
        title = "images per class" if len(names) <= max_classes else "the 10 smallest classes (by train)"
        lines.append(f"{title}:")
        table = format_table(["class", *report["splits"]],
                             [[c[:30], *(s["per_class"].get(c, 0) for s in report["splits"].values())]
                              for c in shown])
        lines += ["  " + line for line in table.splitlines()]
    for split, s in report["splits"].items():
        for bad in s["undecodable"]:
            lines.append(f"undecodable ({split}): {bad['path']}: {bad['reason']}")
        for t in s["tiny"]:
            lines.append(f"tiny ({split}): {t['path']}: {t['width']}x{t['height']}")
    if report.get("notes", {}).get("walk"):  # links to folders or files met before, FIFOs
        lines.append(f"note: {report['notes']['walk']}")
    for p in report["problems"]:
        lines.append(f"problem: {p}")
    lines.append("usable" if report["usable"] else f"NOT usable: {len(report['problems'])} problem(s)")
    return "\n".join(lines)


def raise_if_unusable(report: dict) -> None:
    if not report["usable"]:
        more = f" (and {len(report['problems']) - 1} more)" if len(report["problems"]) > 1 else ""
        raise DataError(f"{report['source']} is not usable: {report['problems'][0]}{more}")
