"""Local response normalization (Krizhevsky et al. 2012, section 3.3).

    b[i] = a[i] / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a[j]^2) ** beta

over the N channels at each position, with the paper's k=2, n=5, alpha=1e-4, beta=0.75.

Where the formula is read differently:
- "paper": alpha multiplies the plain sum of squares, as printed (default).
- "cuda-convnet": Krizhevsky's own code divides alpha by n (so does Caffe, and torch's
  ``nn.LocalResponseNorm``); with alpha=1e-4 that is five times weaker normalization.
- "caffe": as cuda-convnet, with Caffe bvlc_alexnet's k=1.

``nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)`` is therefore the paper's layer and
``nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2)`` the cuda-convnet one.

The forward and backward are written by hand: the window sum of squares is computed once in
forward and reused in backward, which makes this several times cheaper than autograd through
``nn.LocalResponseNorm``'s padded 3-D average pool.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

LRN_MODES = {
    # mode: (size n, alpha as it multiplies the *sum* of squares, beta, k)
    "paper": (5, 1e-4, 0.75, 2.0),
    "cuda-convnet": (5, 1e-4 / 5, 0.75, 2.0),
    "caffe": (5, 1e-4 / 5, 0.75, 1.0),
}


def _window_sum(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """out[:, i] = sum of x[:, j] for j in [i - before, i + after], clipped to the channels."""
    out = x.clone()
    for d in range(1, before + 1):
        out[:, d:] += x[:, :-d]
    for d in range(1, after + 1):
        out[:, :-d] += x[:, d:]
    return out


def _inv_pow(scale: torch.Tensor, beta: float) -> torch.Tensor:
    """scale ** -beta; for the paper's beta=0.75 as rsqrt(s) * sqrt(rsqrt(s)), cheaper than pow."""
    if beta == 0.75:
        r = torch.rsqrt(scale)
        return r.mul_(r.sqrt())
    return scale.pow(-beta)


class _LRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size: int, alpha: float, beta: float, k: float):
        before, after = size // 2, (size - 1) // 2
        scale = _window_sum(x * x, before, after).mul_(alpha).add_(k)  # k + alpha * sum a^2
        inv = _inv_pow(scale, beta)
        ctx.save_for_backward(x, scale, inv)
        ctx.cfg = (before, after, alpha, beta)
        return x * inv

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, scale, inv = ctx.saved_tensors
        before, after, alpha, beta = ctx.cfg
        # d b_i / d a_j = [i=j] s_i^-beta - 2 alpha beta a_i a_j s_i^(-beta-1) [j in W(i)], so
        # grad_a_j = g_j s_j^-beta - 2 alpha beta a_j * sum_{i : j in W(i)} g_i b_i / s_i.
        # The set {i : j in W(i)} is the window mirrored: before and after swap.
        t = (grad * x).mul_(inv).div_(scale)  # g_i * b_i / s_i
        t = _window_sum(t, after, before).mul_(x).mul_(-2.0 * alpha * beta)
        return t.addcmul_(grad, inv), None, None, None, None


def lrn_reference(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """Plain differentiable expression of the same function (for torch.compile and for checks)."""
    before, after = size // 2, (size - 1) // 2
    sq = nn.functional.pad((x * x).unsqueeze(1), (0, 0, 0, 0, before, after)).squeeze(1)
    c = x.shape[1]
    s = sum(sq[:, d : d + c] for d in range(size))
    return x * (k + alpha * s).pow(-beta)


def local_response_norm(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 2.0) -> torch.Tensor:
    """LRN across channels of an (N, C, H, W) tensor; ``alpha`` multiplies the plain sum."""
    if torch.compiler.is_compiling():
        return lrn_reference(x, size, alpha, beta, k)  # let the compiler fuse it
    return _LRNFunction.apply(x, size, alpha, beta, k)


class LocalResponseNorm(nn.Module):
    """LRN as printed in the paper: ``b = a / (k + alpha * sum_window a^2) ** beta``.

    Unlike ``nn.LocalResponseNorm``, ``alpha`` is *not* divided by ``size``; use
    ``LocalResponseNorm.from_mode("cuda-convnet")`` for that reading.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    @classmethod
    def from_mode(cls, mode: str = "paper") -> "LocalResponseNorm":
        if mode not in LRN_MODES:
            raise ValueError(f"unknown lrn_mode {mode!r}; expected one of {sorted(LRN_MODES)}")
        return cls(*LRN_MODES[mode])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha:g}, beta={self.beta}, k={self.k}"
