"""``alexnet data``: synth, prepare, check, stats."""

from __future__ import annotations

import json
import os
import time

from ..data import build_source
from ..data.base import DataError
from ..data.check import check_dataset, format_report, raise_if_unusable
from ..data.stats import compute_stats, load_or_compute_stats, stats_path
from ..data.store import prepare_store
from ..data.synth import write_folder
from ..data.transforms import IMAGENET_EIGVAL, IMAGENET_EIGVEC
from ..files import printable
from .flags import add_batch_size, add_json, add_workers, bounded_int

DEFAULT_WORKERS = min(8, os.cpu_count() or 1)


def _synth(args) -> int:
    splits = [s for s in args.splits.split(",") if s]
    if not splits or any(s not in ("train", "val", "test") for s in splits):
        raise DataError(f"--splits takes a comma-separated subset of train,val,test, got {args.splits!r}")
    if args.per_class < 1 or args.size < 8:
        raise DataError("--per-class must be >= 1 and --size >= 8")
    val = args.val_per_class if args.val_per_class is not None else max(1, args.per_class // 5)
    per_class = {s: args.per_class if s == "train" else val for s in splits}
    t0 = time.perf_counter()
    counts = write_folder(args.out, classes=args.classes, per_class=per_class, size=args.size, seed=args.seed,
                          workers=args.workers)
    print(f"wrote {sum(counts.values())} JPEGs ({', '.join(f'{s}: {n}' for s, n in counts.items())}) "
          f"of {args.classes} classes to {args.out} in {time.perf_counter() - t0:.1f}s")
    return 0


def _prepare(args) -> int:
    source = build_source(args.src)
    t0 = time.perf_counter()
    meta = prepare_store(source, args.out, workers=args.workers, batch_size=args.batch_size)
    seconds = time.perf_counter() - t0
    total = sum(s["count"] for s in meta["splits"].values())
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    for split, s in meta["splits"].items():
        print(f"{split}: {s['count']} images, {len(s['skipped'])} skipped")
        for path in s["skipped"]:
            print(f"  skipped (undecodable): {printable(path)}")
    print(f"prepared store {args.out}: {total} images, {size / 1e9:.2f} GB, {seconds:.1f}s "
          f"({total / max(seconds, 1e-9):.0f} images/s)")
    return 0


def _check(args) -> int:
    report = check_dataset(args.src, workers=args.workers, tiny=args.tiny)
    bad = sum(len(s["undecodable"]) for s in report["splits"].values())
    if args.strict and bad:
        report["problems"].append(f"{bad} undecodable file(s) (--strict)")
        report["usable"] = False
    print(json.dumps(report, indent=1, default=str) if args.json else printable(format_report(report)))
    raise_if_unusable(report)
    return 0


def _stats(args) -> int:
    source = build_source(args.src)
    if args.no_cache:
        stats = compute_stats(source.split(args.split), workers=args.workers, max_images=args.max_images,
                              progress=True)
        cached = None
    else:
        stats = load_or_compute_stats(source, args.max_images, args.workers, split=args.split, progress=True)
        cached = stats_path(source, args.split, args.max_images)
    out = {"source": args.src, "split": source.eval_split_name(args.split), "count": stats["count"],
           "skipped": stats["skipped"], "cache": cached, "mean": stats["mean"].tolist(),
           "std": stats["std"].tolist()}
    if "eigval" in stats:
        out["eigval"], out["eigvec"] = stats["eigval"].tolist(), stats["eigvec"].tolist()
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{args.src}, {out['split']} split: {out['count']} images ({out['skipped']} undecodable, skipped)"
          + (f"; cached in {cached}" if cached else ""))
    channels = "RGB" if len(out["mean"]) == 3 else "L"
    print("mean, 0..255:  " + "  ".join(f"{c} {v:8.3f}" for c, v in zip(channels, out["mean"])))
    print("std, 0..255:   " + "  ".join(f"{c} {v:8.3f}" for c, v in zip(channels, out["std"])))
    if "eigval" in out:
        print("PCA of the RGB covariance ([0, 1] pixels), for the paper's lighting augmentation:")
        print("  eigenvalues:            " + " ".join(f"{v:9.4f}" for v in out["eigval"]))
        print("  ImageNet (published constants): " + " ".join(f"{v:9.4f}" for v in IMAGENET_EIGVAL))
        print("  eigenvectors (columns; rows R, G, B), then the ImageNet preset's:")
        for c, row, ref in zip("RGB", out["eigvec"], IMAGENET_EIGVEC):
            print(f"    {c} " + " ".join(f"{v:9.4f}" for v in row) + "    |"
                  + " ".join(f"{v:9.4f}" for v in ref))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="dataset tools: synth, prepare, check, stats",
                       description="Make, convert, check and measure datasets (`--data SPEC` sources).")
    dsub = p.add_subparsers(dest="data_command", metavar="WHAT", required=True)

    s = dsub.add_parser("synth", help="write a synthetic ImageNet-like folder of JPEGs", description=(
        "Write OUT/<split>/<class>/*.JPEG: classes are shape x colour x texture combinations at random "
        "positions, scales and rotations, with clutter and noise; sizes vary around --size. "
        "Deterministic for a given --seed."))
    s.add_argument("out", help="output folder (new or empty)")
    s.add_argument("--classes", type=int, default=10, help="number of classes, at most 144 (default: 10)")
    s.add_argument("--per-class", type=int, default=50, help="training images per class (default: 50)")
    s.add_argument("--val-per-class", type=int, default=None,
                   help="validation (and test) images per class (default: per-class // 5, at least 1)")
    s.add_argument("--size", type=int, default=500,
                   help="typical longer side in pixels, +-15%% (default: 500)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    s.add_argument("--splits", default="train,val",
                   help="splits to write, of train,val,test (default: train,val)")
    add_workers(s, what="worker processes")
    s.set_defaults(func=_synth)

    s = dsub.add_parser("prepare", help="convert a dataset into a fast pre-resized store", description=(
        "Decode every image of SRC once (shorter side to 256, centre crop) into memory-mappable .npy "
        "files in OUT; `--data OUT` then reads batches without decoding. Undecodable files are skipped "
        "and listed."))
    s.add_argument("src", help="dataset spec (a folder, imagenet:PATH, ...)")
    s.add_argument("out", help="output folder (must not exist; written atomically)")
    add_workers(s, DEFAULT_WORKERS, what="decoding processes")
    add_batch_size(s, what="images per decoding task")
    s.set_defaults(func=_prepare)

    s = dsub.add_parser("check", help="report what is wrong with a dataset, without training", description=(
        "Walk SRC, decode every file as training would, and report counts per split and class, "
        "undecodable files, tiny images, label-file mismatches and empty classes. Exit 0 if usable, "
        "2 with a one-line reason otherwise."))
    s.add_argument("src", help="dataset spec")
    add_workers(s, DEFAULT_WORKERS, what="decoding processes")
    s.add_argument("--tiny", type=int, default=64,
                   help="report images whose shorter side is below this (default: 64)")
    s.add_argument("--strict", action="store_true", help="also fail when any file is undecodable")
    add_json(s, "print the report as JSON")
    s.set_defaults(func=_check)

    s = dsub.add_parser("stats", help="mean, std and the RGB PCA (eigenvalues/vectors) of a training set",
                        description=(
        "Per-channel mean and std and the eigen-decomposition of the 3x3 RGB covariance (pixels in "
        "[0, 1]) used by the paper's PCA lighting. Cached with the dataset; training uses the same numbers."))
    s.add_argument("src", help="dataset spec")
    s.add_argument("--split", default="train", help="split to measure (default: train)")
    s.add_argument("--max-images", type=bounded_int(1), default=None,
                   help="use a random subset of this many images")
    add_workers(s, what="decoding processes")
    s.add_argument("--no-cache", action="store_true",
                   help="compute afresh, neither reading nor writing the cache")
    add_json(s, "print JSON")
    s.set_defaults(func=_stats)
