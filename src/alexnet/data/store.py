"""The prepared store: a dataset decoded once, at its base size, into memory-mappable NumPy files.

Layout of ``OUT/`` (written by ``alexnet data prepare SRC OUT``)::

    store.json            format, version, classes, names, source, per-split counts and skipped files
    train-images.npy      uint8 (N, S, S, C), C order: one 196,608-byte row per 256x256 RGB image
    train-labels.npy      int64 (N,)
    val-images.npy ...    (and test-*, when the source has them)

Plain ``.npy`` files (NumPy's own format: a short header, then the raw array) need nothing beyond
NumPy to read, memory-map with ``numpy.load(mmap_mode=...)``, and let a batch be one fancy-indexing
copy out of the page cache: no per-image decode, no per-image Python object. The cost is disk: no
compression, 196,608 bytes per 256x256 image, so ~197 GB per million images (ILSVRC-2012 train,
1,281,167 images: ~252 GB; its val: ~9.8 GB), against roughly 140-150 GB of original JPEGs.

Written atomically: everything goes into a hidden sibling folder that is renamed to ``OUT`` only
when complete (``store.json`` last), so a half-written store is never found under ``OUT``.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
import sys

import numpy as np
import torch
from numpy.lib import format as npy
from tqdm import tqdm

from .base import DataError, DataSource, ImageSet, TensorImageSet
from .loader import EpochLoader, batch_indices
from .stats import cache_dir_for

FORMAT, VERSION = "alexnet-store", 1
META = "store.json"


class StoreImageSet(TensorImageSet):
    """One split of a store, memory-mapped: pages are read on demand, nothing is loaded up front."""

    def __init__(self, images_path: str, labels_path: str):
        self.images_path, self.labels_path = images_path, labels_path
        # "c" (copy-on-write) maps the file read-only on disk but writable in memory, which torch wants.
        self.array = np.load(images_path, mmap_mode="c")  # (N, S, S, C)
        images = torch.from_numpy(self.array).permute(0, 3, 1, 2)  # (N, C, S, S), a view of the file
        super().__init__(images, np.load(labels_path))

    def get_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, C, S, S) in channels-last memory, and int64 (B,) labels."""
        idx = np.asarray(indices, dtype=np.int64)
        # NumPy copies whole rows, ~10x faster than torch's indexing of the permuted view.
        images = torch.from_numpy(np.take(self.array, idx, axis=0))  # (B, S, S, C)
        return images.permute(0, 3, 1, 2), torch.from_numpy(self.targets[idx])

    def describe(self, index: int) -> str:
        return f"{self.images_path}[{index}]"

    def __reduce__(self):  # pickle the paths, not the mapped pixels
        return type(self), (self.images_path, self.labels_path)


def is_store(path: str) -> bool:
    return os.path.isfile(path if path.endswith(".json") else os.path.join(path, META))


def _imagery(meta: dict) -> str:
    """"small" or "photo" (stores written before 0.1.1 said "kind": "imagenet" for photographs)."""
    if "imagery" in meta:
        return meta["imagery"]
    return {"imagenet": "photo"}.get(meta.get("kind"), meta.get("kind", "photo"))


def store_source(path: str) -> DataSource:
    """Open a prepared store (its folder, or its ``store.json``)."""
    folder = os.path.dirname(path) if path.endswith(".json") else path
    meta_path = os.path.join(folder, META)
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a prepared store ({e})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DataError(f"{meta_path}: not an {FORMAT} v{VERSION} (format {meta.get('format')!r}, "
                        f"version {meta.get('version')!r})")
    splits = {}
    for split, info in meta["splits"].items():
        try:
            ds = StoreImageSet(os.path.join(folder, info["images"]), os.path.join(folder, info["labels"]))
        except (OSError, ValueError) as e:
            raise DataError(f"{folder}: the {split!r} split is unreadable ({e})") from None
        expected = (info["count"], meta["channels"], meta["base_size"], meta["base_size"])
        if tuple(ds.images.shape) != expected or len(ds.targets) != info["count"]:
            raise DataError(f"{folder}: the {split!r} split holds {tuple(ds.images.shape)} images and "
                            f"{len(ds.targets)} labels, store.json says {expected}: damaged store")
        splits[split] = ds
    # Statistics are cached in the store itself when we may write there.
    cache = folder if os.access(folder, os.W_OK) else cache_dir_for(
        {"kind": "store", "path": os.path.abspath(folder), "created": meta.get("created")})
    return DataSource(
        name=f"store:{path}", imagery=_imagery(meta), channels=meta["channels"], base_size=meta["base_size"],
        classes=meta["classes"], class_names=meta["class_names"], splits=splits, flip=meta["flip"],
        notes={"source": f"prepared store of {meta['source']}", "store": os.path.abspath(folder),
               "skipped_when_prepared": {s: len(i["skipped"]) for s, i in meta["splits"].items()},
               "source_notes": meta.get("source_notes", {})},
        cache_dir=cache)


def remove_stale_partials(out: str) -> list[str]:
    """Delete the hidden ``.NAME.partial-PID`` folders of killed ``prepare_store`` runs for ``out``
    (those whose process is gone); returns their paths."""
    parent, name = os.path.dirname(out), os.path.basename(out)
    removed = []
    for entry in os.scandir(parent):
        prefix = f".{name}.partial-"
        if not (entry.is_dir() and entry.name.startswith(prefix)):
            continue
        pid = entry.name[len(prefix):]
        if pid.isdigit() and _alive(int(pid)):
            continue  # another prepare of the same store is running
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_store(source: DataSource, out: str, *, workers: int = 0, batch_size: int = 64,
                  progress: bool = True) -> dict:
    """Decode every split of ``source`` once into a store at ``out`` (which must not exist).

    Returns the metadata written to ``store.json`` (per split: count and skipped files).
    """
    out = os.path.abspath(out)
    if os.path.exists(out):
        raise DataError(f"{out} already exists; a store is written to a new folder")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    for stale in remove_stale_partials(out):
        print(f"removed {stale}, left by an earlier `data prepare` that was killed", file=sys.stderr)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp)  # permissions as the umask says (mkdtemp would make it private, 0700)
    try:
        meta = {"format": FORMAT, "version": VERSION, "imagery": source.imagery, "channels": source.channels,
                "base_size": source.base_size, "flip": source.flip, "classes": list(source.classes),
                "class_names": list(source.class_names), "source": source.name,
                "source_notes": json.loads(json.dumps(source.notes, default=str)),
                "layout": "images: uint8 (N, S, S, C) .npy; labels: int64 (N,) .npy", "splits": {}}
        for split, ds in source.splits.items():
            meta["splits"][split] = _write_split(ds, tmp, split, source, workers=workers,
                                                 batch_size=batch_size, progress=progress)
        meta["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, out)  # the one step that makes the store visible
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _write_split(ds: ImageSet, folder: str, split: str, source: DataSource, *, workers: int, batch_size: int,
                 progress: bool) -> dict:
    n, s, c = len(ds), source.base_size, source.channels
    images_name, labels_name = f"{split}-images.npy", f"{split}-labels.npy"
    images_path = os.path.join(folder, images_name)
    images = npy.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=(n, s, s, c))
    labels = np.empty(n, dtype=np.int64)
    done, skipped = 0, []
    batches = EpochLoader(ds, batch_indices(n, batch_size, shuffle=False), workers=workers)
    for batch in tqdm(batches, desc=f"prepare {split}", unit="batch", disable=None if progress else True):
        skipped += batch.skipped
        b = len(batch.labels)
        if b:  # undecodable files leave no gap: the next image takes their place
            images[done:done + b] = batch.images.permute(0, 2, 3, 1).numpy()  # (B, S, S, C)
            labels[done:done + b] = batch.labels.numpy()
            done += b
    images.flush()
    del images
    if done == 0:
        raise DataError(f"{source.name}: no decodable images in the {split!r} split")
    if done < n:
        _shrink_npy(images_path, done)
    np.save(os.path.join(folder, labels_name), labels[:done])
    return {"images": images_name, "labels": labels_name, "count": done, "skipped": skipped}


def _shrink_npy(path: str, n: int) -> None:
    """Keep the first ``n`` rows of an ``.npy`` file in place: rewrite the shape in its header, cut the
    tail. NumPy pads headers so the first dimension can grow to 21 digits without moving the data."""
    with open(path, "r+b") as f:
        version = npy.read_magic(f)
        read, write = {(1, 0): (npy.read_array_header_1_0, npy.write_array_header_1_0),
                       (2, 0): (npy.read_array_header_2_0, npy.write_array_header_2_0)}[version]
        shape, fortran, dtype = read(f)
        offset = f.tell()
        header = io.BytesIO()
        d = {"descr": npy.dtype_to_descr(dtype), "fortran_order": fortran, "shape": (n, *shape[1:])}
        write(header, d)
        if len(header.getvalue()) != offset:  # cannot happen with NumPy's padding; never corrupt silently
            raise RuntimeError(f"{path}: new header would move the data")
        f.seek(0)
        f.write(header.getvalue())
        f.truncate(offset + n * int(np.prod(shape[1:])) * dtype.itemsize)
