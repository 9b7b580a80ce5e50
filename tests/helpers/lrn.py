"""Independent LRN references shared by ``test_lrn.py`` and ``test_lrn_triton.py``: the constants as
their sources print them, the paper's formula as an explicit loop, and ReLU-like test inputs."""

from __future__ import annotations

import torch

# (n, alpha as printed, beta, k, alpha divided by n?), written out independently of LRN_MODES:
# - paper: section 3.3 of Krizhevsky et al. 2012, alpha multiplies the plain window sum;
# - cuda-convnet: cuda-convnet2's layers/layer-params-imagenet-2gpu-model.cfg ([rnorm1a] scale=0.0001,
#   pow=0.75, minDiv=2), whose layer.py divides scale by the size;
# - caffe: Caffe's models/bvlc_alexnet/train_val.prototxt (local_size 5, alpha 0.0001, beta 0.75,
#   k left at its default 1), which lrn_layer.cpp divides by local_size.
MODES = {
    "paper": (5, 1e-4, 0.75, 2.0, False),
    "cuda-convnet": (5, 1e-4, 0.75, 2.0, True),
    "caffe": (5, 1e-4, 0.75, 1.0, True),
}


def paper_loop(x: torch.Tensor, n: int, alpha: float, beta: float, k: float, towers: int = 1) -> torch.Tensor:
    """b[i] = a[i] / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a[j]^2) ** beta, channel by
    channel.

    For even n the window is [i - n//2, i + (n-1)//2], torch's convention. With ``towers`` > 1 the
    channels are split into that many equal towers and N is a tower's channel count: the window is
    clipped to the tower of channel i (cuda-convnet2's two-GPU layer files, one rnorm layer per GPU)."""
    per_tower = x.shape[1] // towers
    out = torch.empty_like(x)
    for i in range(x.shape[1]):
        first = i // per_tower * per_tower  # the tower's first channel
        lo, hi = max(first, i - n // 2), min(first + per_tower - 1, i + (n - 1) // 2)
        s = sum(x[:, j] ** 2 for j in range(lo, hi + 1))
        out[:, i] = x[:, i] / (k + alpha * s) ** beta
    return out


def activations(shape, scale=3.0, seed=0, channels_last=False, dtype=torch.float32):
    """ReLU outputs, as LRN sees them in AlexNet (about half exact zeros)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64).relu() * scale).to(dtype)
    return x.to(memory_format=torch.channels_last) if channels_last else x
