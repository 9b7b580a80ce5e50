"""Statistics of a training split: the mean image, per-channel mean and std, and the 3x3 RGB
covariance's eigenvalues and eigenvectors (for the paper's PCA lighting), computed once per dataset
and cached with it.

The cache lives in the source's ``cache_dir``: a prepared store's own folder (when writable), else
``$ALEXNET_CACHE/stats/<key>`` (default ``~/.cache/alexnet``), where ``key`` hashes the source's
identity (its path, file counts and the newest folder modification time), so adding, removing or
renaming files makes a new entry. One ``.npz`` per (split, number of images used).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import numpy as np
import torch
from tqdm import tqdm

from ..files import atomic_write, cache_root
from .base import DataError, DataSource, ImageSet
from .loader import EpochLoader, batch_indices

CACHE_VERSION = 1  # bump when decoding changes what the pixels are: old entries are then ignored


@torch.no_grad()
def compute_stats(split: ImageSet, *, batch_size: int = 64, workers: int = 0,
                  max_images: int | None = None, seed: int = 0, progress: bool = False) -> dict:
    """One pass over ``split`` (or a random ``max_images`` of it), accumulated in float64.

    Returns ``mean_image`` (C, S, S) and ``mean``/``std`` (C,) in 0..255 pixel units, and for RGB
    ``eigval`` (3,, descending) and ``eigvec`` (3, 3, columns) of the covariance of [0, 1] pixels.
    """
    n = len(split)
    order = batch_indices(n, batch_size, shuffle=max_images is not None and max_images < n, seed=seed)
    if max_images is not None and max_images < n:
        order = list(torch.cat(order)[:max_images].split(batch_size))
    total = img_sum = outer = None
    count = skipped = 0
    bar = tqdm(total=sum(len(b) for b in order), desc="statistics of the training images (mean, PCA)",
               unit="img", leave=False, dynamic_ncols=True, disable=not progress)
    for batch in EpochLoader(split, order, workers=workers):
        bar.update(len(batch.labels) + len(batch.skipped))
        skipped += len(batch.skipped)
        if batch.images.numel() == 0:
            continue
        x = batch.images.to(torch.float64)  # (B, C, S, S)
        img_sum = x.sum(0) if img_sum is None else img_sum + x.sum(0)
        flat = x.transpose(0, 1).reshape(x.shape[1], -1) / 255.0  # (C, B*S*S), [0, 1] units
        total = flat.sum(1) if total is None else total + flat.sum(1)
        o = flat @ flat.T
        outer = o if outer is None else outer + o
        count += x.shape[0]
    bar.close()
    if count == 0:
        raise DataError("no decodable images to compute statistics from")
    pixels = count * img_sum.shape[-1] * img_sum.shape[-2]
    mean01 = total / pixels
    cov = outer / pixels - torch.outer(mean01, mean01)
    out = {
        "count": count,
        "skipped": skipped,
        "mean_image": (img_sum / count).float(),
        "mean": (mean01 * 255).float(),
        "std": (cov.diagonal().clamp_min(0).sqrt() * 255).float(),
    }
    if cov.shape[0] == 3:
        eigval, eigvec = torch.linalg.eigh(cov)  # ascending
        out["eigval"] = eigval.flip(0).float()
        out["eigvec"] = eigvec.flip(1).float()
    return out


def cache_dir_for(identity: dict) -> str:
    """The statistics cache folder of a dataset described by ``identity`` (JSON-serializable)."""
    text = json.dumps({**identity, "cache_version": CACHE_VERSION}, sort_keys=True, default=str)
    return os.path.join(str(cache_root()), "stats", hashlib.sha1(text.encode()).hexdigest()[:16])


def stats_path(source: DataSource, split: str = "train", max_images: int | None = None) -> str | None:
    """Where :func:`load_or_compute_stats` keeps these statistics (None: the source has no cache)."""
    if source.cache_dir is None:
        return None
    used = "all" if max_images is None or max_images >= len(source.split(split)) else str(max_images)
    name = f"stats-{source.eval_split_name(split)}-{used}-v{CACHE_VERSION}.npz"
    return os.path.join(source.cache_dir, name)


def load_or_compute_stats(source: DataSource, max_images: int | None = None, workers: int = 0, *,
                          split: str = "train", progress: bool = False) -> dict:
    """:func:`compute_stats` of ``source``'s ``split``, read from its cache when there, else computed
    and cached (an unwritable cache only costs a warning)."""
    path = stats_path(source, split, max_images)
    if path and os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: (int(z[k]) if k in ("count", "skipped") else torch.from_numpy(z[k].copy()))
                        for k in z.files}
        except (OSError, ValueError, KeyError) as e:
            warnings.warn(f"ignoring unreadable statistics cache {path}: {e}", stacklevel=2)
    stats = compute_stats(source.split(split), workers=workers, max_images=max_images, progress=progress)
    if path:
        try:
            _save_npz(path, {k: v.numpy() if torch.is_tensor(v) else np.asarray(v) for k, v in stats.items()})
        except OSError as e:
            warnings.warn(f"could not cache statistics in {path}: {e}", stacklevel=2)
    return stats


def _save_npz(path: str, arrays: dict) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))
