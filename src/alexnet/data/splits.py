"""Deterministic, stratified hold-outs: how a validation (or test) split is carved out of a training
set that comes without one (CIFAR-10, MNIST, a plain folder of classes).

Rule: each class gives up its share of the hold-out, rounded so the total is exact (largest
remainders first, ties to the lower class index); within a class the held-out items are the first of a
permutation drawn from ``numpy.random.default_rng(seed)``. Same labels and seed, same split, on every
machine and NumPy version (``Generator.permutation`` on PCG64 is stable).
"""

from __future__ import annotations

import numpy as np


def holdout(targets: np.ndarray, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(len(targets))`` into (kept, held out), ``count`` held out, stratified by label.

    Both index arrays are sorted.
    """
    targets = np.asarray(targets)
    n = len(targets)
    if not 0 <= count <= n:
        raise ValueError(f"cannot hold out {count} of {n} items")
    classes, sizes = np.unique(targets, return_counts=True)
    exact = sizes * (count / n) if n else sizes.astype(float)
    share = np.floor(exact).astype(int)
    leftover = count - share.sum()
    # Largest remainders get the leftover items; a stable sort breaks ties by class order.
    share[np.argsort(-(exact - share), kind="stable")[:leftover]] += 1
    rng = np.random.default_rng(seed)
    held = [rng.permutation(np.flatnonzero(targets == c))[:k] for c, k in zip(classes, share)]
    held = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    kept = np.setdiff1d(np.arange(n), held, assume_unique=True)
    return kept, held
