"""``alexnet bench data``: images/s of the input pipeline against a plain Pillow reference.

All paths turn the same randomly chosen training files into the same thing, uint8 ``(B, 3, 256, 256)``
batches in the main process (what the training loop then moves to the device):

- (a) reference: the per-image pipeline everyone writes first, in one process: full decode,
  ``convert("RGB")``, resize the shorter side to 256 (bilinear), centre crop, stack;
- (b) our folder path: :class:`~alexnet.data.folder.FolderImageSet` (draft JPEG decoding, only the
  centre square resampled) through :class:`~alexnet.data.loader.EpochLoader`, in this process and
  with ``--workers`` processes;
- (c) our prepared store: the same images prepared once (into a temporary store, or ``--store``),
  read as memory-mapped batches.

Every file is read once before timing, so all paths start from a warm page cache.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from ..cliargs import format_table
from ..data import build_source
from ..data.base import DataError, DataSource
from ..data.folder import FolderImageSet
from ..data.loader import EpochLoader, batch_indices
from ..data.store import prepare_store, store_source
from ..provenance import environment

SIZE = 256


def reference_decode(path: str, size: int = SIZE) -> np.ndarray:
    """Decode, resize the shorter side to ``size``, centre-crop: uint8 (size, size, 3)."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        scale = size / min(w, h)
        new_size = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize(new_size, Image.Resampling.BILINEAR)
        left, top = (img.width - size) // 2, (img.height - size) // 2
        return np.array(img.crop((left, top, left + size, top + size)))


def _time_reference(paths: list[str], batches: list[np.ndarray]) -> dict:
    t0, n = time.perf_counter(), 0
    for b in batches:
        images = torch.stack([torch.from_numpy(reference_decode(paths[i])).permute(2, 0, 1) for i in b])
        n += len(images)
    return _result(n, time.perf_counter() - t0)


def _time_loader(ds, batches: list[torch.Tensor], workers: int, min_seconds: float = 0.0) -> dict:
    """Whole passes over ``batches`` (worker start-up included), repeated until ``min_seconds``."""
    t0, n, skipped = time.perf_counter(), 0, 0
    while True:
        for batch in EpochLoader(ds, batches, workers=workers):
            n += len(batch.labels)
            skipped += len(batch.skipped)
        if time.perf_counter() - t0 >= min_seconds:
            break
    return {**_result(n, time.perf_counter() - t0), "skipped": skipped}


def _result(n: int, seconds: float) -> dict:
    return {"images": n, "seconds": round(seconds, 4), "images_per_s": round(n / max(seconds, 1e-9), 1)}


def run(data: str, *, batches: int = 10, batch_size: int = 128, workers: int = 2, store: str | None = None,
        repeat: int = 1, seed: int = 0) -> dict:
    """Measure (a), (b), (c) on ``batches * batch_size`` random training images of ``data``.

    With ``repeat > 1`` the paths take turns ``repeat`` times and each keeps its best run: on a shared
    machine the least disturbed run is the closest to what the code can do.
    """
    source = build_source(data)
    train = source.split("train")
    if not isinstance(train, FolderImageSet):
        raise DataError(f"bench data needs an image folder for --data (the reference decodes files); "
                        f"{data} is not one (pass a prepared store with --store)")
    n = min(len(train), batches * batch_size)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n].numpy()
    paths = [train.path(i) for i in pick]
    subset = FolderImageSet(train.root, [os.fsdecode(train.paths[i]) for i in pick], train.targets[pick])
    order = list(torch.arange(n).split(batch_size))
    for p in paths:  # warm the page cache: every path starts from the same state
        with open(p, "rb") as f:
            f.read()

    with tempfile.TemporaryDirectory() as tmp:
        prepare = None
        if store is None:
            sub = DataSource(name=f"{data} (bench subset)", imagery=source.imagery, channels=3,
                             base_size=SIZE,
                             classes=source.classes, class_names=source.class_names, splits={"train": subset})
            t0 = time.perf_counter()
            prepare_store(sub, os.path.join(tmp, "store"), workers=workers, progress=False)
            prepare = _result(n, time.perf_counter() - t0)
            store = os.path.join(tmp, "store")
        store_ds = store_source(store).split("train")
        store_batches = batch_indices(min(n, len(store_ds)), batch_size, shuffle=True, seed=seed)
        paths_to_time = {"reference": lambda: _time_reference(paths, [b.numpy() for b in order]),
                         "folder_1process": lambda: _time_loader(subset, order, 0),
                         "folder": lambda: _time_loader(subset, order, workers),
                         "store": lambda: _time_loader(store_ds, store_batches, 0, min_seconds=1.0)}
        runs = {k: [] for k in paths_to_time}
        for _ in range(max(1, repeat)):
            for k, time_it in paths_to_time.items():
                runs[k].append(time_it())
    results = {k: {**max(r, key=lambda x: x["images_per_s"]), "runs": [x["images_per_s"] for x in r]}
               for k, r in runs.items()}
    ref = results["reference"]["images_per_s"]
    return {"data": data, "images": n, "batch_size": batch_size, "workers": workers, "repeat": repeat,
            "store": None if prepare else store, "results": results,
            "ratios": {k: round(r["images_per_s"] / ref, 2) for k, r in results.items()},
            "prepare": prepare, "machine": environment()}


def data_table(out: dict) -> str:
    labels = {"reference": "(a) reference: Pillow, 1 process",
              "folder_1process": "(b) folder path, 1 process",
              "folder": f"(b) folder path, {out['workers']} workers",
              "store": "(c) prepared store, 1 process"}
    best = f", best of {out['repeat']} runs" if out["repeat"] > 1 else ""
    lines = [f"input pipeline: {out['images']} training images of {out['data']}, "
             f"batches of {out['batch_size']} uint8 3x256x256{best}",
             format_table(["path", "images/s", "vs (a)"],
                          [[labels[k], f"{r['images_per_s']:.1f}", f"{out['ratios'][k]:.2f}x"]
                           for k, r in out["results"].items()])]
    if out["prepare"]:
        p = out["prepare"]
        lines.append(f"(one-time) prepare: {p['images']} images in {p['seconds']:.2f}s "
                     f"({p['images_per_s']:.1f} images/s, {out['workers']} workers)")
    m = out["machine"]
    lines.append(f"{m['date']}, {m['cpu']} ({m['cpu_count']} cores), torch {m['torch']}, Pillow "
                 f"{m['pillow']} "
                 f"(libjpeg-turbo {m['libjpeg_turbo']}), numpy {m['numpy']}")
    return "\n".join(lines)


def bench_data(args) -> int:
    """``alexnet bench data`` with its parsed options."""
    out = run(args.data, batches=args.batches, batch_size=args.batch_size, workers=args.workers,
              store=args.store, repeat=args.repeat)
    print(json.dumps(out, indent=1) if args.json else data_table(out))
    return 0
