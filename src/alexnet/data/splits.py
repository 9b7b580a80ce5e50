"""Deterministic, stratified hold-outs: how a validation (or test) split is carved out of a training
set that comes without one (CIFAR-10, MNIST, a plain folder of classes), and how the embedded digits
are split.

scikit-learn's ``train_test_split(..., stratify=labels, random_state=seed)`` does the work: each
class gives up its share of the hold-out (rounded so the total is exact), chosen at random with a
fixed seed. Same labels and seed, same split. When a class is too small to stratify (one image, or
fewer held-out items than classes) the hold-out is drawn at random over all items instead.
"""

from __future__ import annotations

import numpy as np


def stratified_split(items: np.ndarray, labels: np.ndarray, count: int,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``items`` split into (kept, held out) with ``count`` held out, stratified by ``labels``, in
    scikit-learn's (shuffled) order."""
    from sklearn.model_selection import train_test_split  # here: scikit-learn takes a second to import

    items, labels = np.asarray(items), np.asarray(labels)
    n = len(items)
    if not 0 <= count <= n:
        raise ValueError(f"cannot hold out {count} of {n} items")
    if count == 0 or count == n:
        return (items, items[:0]) if count == 0 else (items[:0], items)
    try:
        return tuple(train_test_split(items, test_size=count, stratify=labels, random_state=seed))
    except ValueError:  # a class with one item, or fewer held-out items than classes
        return tuple(train_test_split(items, test_size=count, random_state=seed))


def holdout(targets: np.ndarray, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(len(targets))`` into sorted (kept, held out), ``count`` held out, stratified."""
    kept, held = stratified_split(np.arange(len(targets)), targets, count, seed)
    return np.sort(kept), np.sort(held)
