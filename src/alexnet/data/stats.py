"""Statistics of a training split: the mean image, per-channel mean and std, and the 3x3 RGB
covariance's eigenvalues and eigenvectors (for the paper's PCA lighting)."""

from __future__ import annotations

import torch

from .base import ImageSet
from .loader import EpochLoader, batch_indices


@torch.no_grad()
def compute_stats(split: ImageSet, *, batch_size: int = 256, workers: int = 0,
                  max_images: int | None = None, seed: int = 0) -> dict:
    """One pass over ``split`` (or a random ``max_images`` of it), accumulated in float64.

    Returns ``mean_image`` (C, S, S) and ``mean``/``std`` (C,) in 0..255 pixel units, and for RGB
    ``eigval`` (3,, descending) and ``eigvec`` (3, 3, columns) of the covariance of [0, 1] pixels.
    """
    n = len(split)
    order = batch_indices(n, batch_size, shuffle=max_images is not None and max_images < n, seed=seed)
    if max_images is not None and max_images < n:
        order = list(torch.cat(order)[:max_images].split(batch_size))
    total = sq = img_sum = outer = None
    count = skipped = 0
    for batch in EpochLoader(split, order, workers=workers):
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
    if count == 0:
        raise ValueError("no decodable images to compute statistics from")
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


def load_or_compute_stats(source, max_images: int | None = None, workers: int = 0) -> dict:
    """Statistics of ``source``'s training split (computed; a cached version may replace this)."""
    return compute_stats(source.split("train"), max_images=max_images, workers=workers)
