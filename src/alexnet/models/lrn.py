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

With ``groups=2`` (the two-tower network) each half of the channels is normalized on its own: the
window of channel 47 of conv1's 96 never reaches channel 48.

Four implementations of the one function, picked by :func:`local_response_norm`:
- CUDA with Triton installed: a fused kernel (``alexnet.kernels.lrn_triton``), one read of the
  input and one write of the output and of the window sums, and the same for the backward.
- CPU with a C compiler: a fused C loop (``alexnet.kernels.lrn_cpu``), one read of the input and
  one write of the output; the backward recomputes the window sums from the input. bf16 and fp16
  inputs (autocast's) run it on a float32 copy in the same layout, rounded back once; bf16 inference
  (no gradient) reads and writes bf16 in the loop itself.
- Under ``torch.compile``: :func:`lrn_reference`, plain tensor ops the compiler fuses itself.
- Elsewhere (MPS, CUDA without Triton, CPU without a compiler): ``_LRNFunction``,
  a hand-written forward and backward on tensor ops that computes the window sums of squares once
  and reuses them in the backward, allocating only what it must keep (output, window sums).

For int8 inference (``runtime.int8_model``) :meth:`LocalResponseNorm.to_int8` gives
:class:`QuantizedLocalResponseNorm`, which takes and returns ``torch.quint8`` tensors: the fused C
kernel's one-byte-in, one-byte-out pass, or dequantize -> LRN -> quantize where it is missing.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.autograd.function import once_differentiable

LRN_MODES = {
    # mode: (size n, alpha as it multiplies the *sum* of squares, beta, k)
    "paper": (5, 1e-4, 0.75, 2.0),
    "cuda-convnet": (5, 1e-4 / 5, 0.75, 2.0),
    "caffe": (5, 1e-4 / 5, 0.75, 1.0),
}


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """bf16 / fp16 inputs are normalized in float32: beta-powers of 8-bit mantissas are too coarse."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _towers(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, C, H, W) as the view (N, groups, C / groups, H, W): windows run along dim 2, inside a tower."""
    return x.unflatten(1, (groups, x.shape[1] // groups))


def _neighbours(before: int, after: int):
    """(destination, source) indices of a :func:`_towers` view pairing channel i with i - d for
    d = 1..before and with i + d for d = 1..after, clipped to the tower's channels: a window sum is
    the centre term plus, for each pair, ``out[dst] += x[src]``, done in place with no allocation."""
    for d in range(1, before + 1):
        yield (slice(None), slice(None), slice(d, None)), (slice(None), slice(None), slice(None, -d))
    for d in range(1, after + 1):
        yield (slice(None), slice(None), slice(None, -d)), (slice(None), slice(None), slice(d, None))


def _inv_pow(scale: torch.Tensor, beta: float, out: torch.Tensor) -> torch.Tensor:
    """``out = scale ** -beta``; for the paper's beta=0.75 as ``sqrt(rsqrt(s)) ** 3``: three cheap
    passes (pow(x, 3) is a multiply) instead of one transcendental ``pow``, several times slower."""
    if beta == 0.75:
        return torch.rsqrt(scale, out=out).sqrt_().pow_(3)
    return torch.pow(scale, -beta, out=out)


class _LRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size: int, alpha: float, beta: float, k: float, groups: int):
        before, after = size // 2, (size - 1) // 2
        acc = _compute_dtype(x.dtype)
        out = torch.empty_like(x)
        scale = torch.empty_like(x, dtype=acc)  # k + alpha * window sum of a^2, kept for backward
        # Work in `out` until the very last pass when it can hold float32: every fresh tensor of
        # conv1's size (74 MB at batch 64) costs about as much in page faults as four passes over it.
        work = out if out.dtype == acc else torch.empty_like(scale)
        a = x if x.dtype == acc else work.copy_(x)
        torch.addcmul(torch.zeros((), dtype=acc, device=x.device), a, a, value=alpha, out=work)  # alpha * a^2
        torch.add(work, k, out=scale)
        s, w = _towers(scale, groups), _towers(work, groups)
        for dst, src in _neighbours(before, after):
            s[dst].add_(w[src])
        inv = _inv_pow(scale, beta, out=work)  # s^-beta
        torch.mul(x, inv, out=out)
        ctx.save_for_backward(x, scale)
        ctx.cfg = (before, after, alpha, beta, groups)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, scale = ctx.saved_tensors
        before, after, alpha, beta, groups = ctx.cfg
        # d b_i / d a_j = [i=j] s_i^-beta - 2 alpha beta a_i a_j s_i^(-beta-1) [j in W(i)], so
        # grad_a_j = g_j s_j^-beta - 2 alpha beta a_j * sum_{i : j in W(i)} g_i a_i s_i^(-beta-1).
        # The set {i : j in W(i)} is the window mirrored: before and after swap.
        c = -2.0 * alpha * beta
        t = _inv_pow(scale, beta, out=torch.empty_like(scale))  # s^-beta
        dx = torch.mul(grad, t, out=torch.empty_like(scale))  # the direct term g_j s_j^-beta
        t = torch.mul(dx, x, out=t).div_(scale)  # v_i = g_i a_i s_i^(-beta-1)
        dx.addcmul_(x, t, value=c)
        d, a, v = _towers(dx, groups), _towers(x, groups), _towers(t, groups)
        for dst, src in _neighbours(after, before):  # the mirrored window
            d[dst].addcmul_(a[dst], v[src], value=c)
        return dx.to(x.dtype), None, None, None, None, None


def lrn_reference(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                  groups: int = 1) -> torch.Tensor:
    """Plain differentiable expression of the same function (for torch.compile and for checks)."""
    before, after = size // 2, (size - 1) // 2
    c = x.shape[1] // groups
    sq = _towers(x * x, groups)  # (N, groups, C / groups, H, W): the window stays in its tower
    sq = nn.functional.pad(sq, (0, 0, 0, 0, before, after))
    s = sum(sq[:, :, d : d + c] for d in range(size)).flatten(1, 2)
    return x * (k + alpha * s).pow(-beta)


@functools.cache
def _kernels(device_type: str):
    """The fused kernel module for a device type (``alexnet.kernels.lrn_triton`` for CUDA,
    ``alexnet.kernels.lrn_cpu`` for the CPU), or None where its compiler is missing."""
    try:  # deferred: Triton is optional, and the CPU kernel compiles its C source on first import
        if device_type == "cuda":
            from ..kernels import lrn_triton as mod
        elif device_type == "cpu":
            from ..kernels import lrn_cpu as mod
        else:
            return None
    except ImportError:
        return None
    return mod


def fused_kernel(device: torch.device | str) -> str | None:
    """Name of the fused LRN kernel ``local_response_norm`` uses on ``device`` ("triton" on CUDA with
    Triton installed, "cpu" where a C compiler built ``lrn_cpu.c``), or None: eager tensor ops."""
    kind = torch.device(device).type
    return None if _kernels(kind) is None else {"cuda": "triton", "cpu": "cpu"}[kind]


IMPLEMENTATIONS = ("auto", "eager", "reference")
HALF = (torch.bfloat16, torch.float16)  # normalized in float32 (their 8 or 11 bits would not hold the sums)


def local_response_norm(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 2.0, groups: int = 1, *, impl: str = "auto") -> torch.Tensor:
    """LRN across channels of an (N, C, H, W) tensor; ``alpha`` multiplies the plain sum.

    ``groups`` splits the channels into that many equal towers, each normalized on its own (the
    two-GPU network's LRN: a window never crosses into the other tower's kernel maps). ``impl``:
    "auto" (the fused kernel of :func:`fused_kernel` where it takes ``x``, else eager ops),
    "eager" (the autograd function on tensor ops) or "reference" (:func:`lrn_reference`).
    """
    if groups < 1 or x.shape[1] % groups:
        raise ValueError(f"LRN over {groups} towers needs channels divisible by {groups}, got {x.shape[1]}")
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown LRN impl {impl!r}; expected one of {IMPLEMENTATIONS}")
    if impl == "reference" or torch.compiler.is_compiling():
        return lrn_reference(x, size, alpha, beta, k, groups)  # let the compiler fuse it
    kernels = _kernels(x.device.type) if impl == "auto" else None
    if kernels is not None and kernels.supported(x, groups):
        fused = kernels.lrn_triton if x.is_cuda else kernels.lrn_cpu
        return fused(x, size, alpha, beta, k, groups)
    if kernels is not None and x.device.type == "cpu" and x.dtype in HALF and x.numel() > 0:
        # bf16 / fp16 on the CPU (autocast's convolutions give it): the eager ops cost 5x the C loop here
        # (docs/benchmarks.md). Inference in bf16: the C loop reads and writes bf16 itself; otherwise it
        # runs on a float32 copy in the same layout, rounded back once (the same values)
        if x.dtype == torch.bfloat16 and not (torch.is_grad_enabled() and x.requires_grad):
            return kernels.lrn_cpu_bf16(x, size, alpha, beta, k, groups)
        return kernels.lrn_cpu(x.float(), size, alpha, beta, k, groups).to(x.dtype)
    return _LRNFunction.apply(x, size, alpha, beta, k, groups)


class LocalResponseNorm(nn.Module):
    """LRN as printed in the paper: ``b = a / (k + alpha * sum_window a^2) ** beta``.

    Unlike ``nn.LocalResponseNorm``, ``alpha`` is *not* divided by ``size``; use
    ``LocalResponseNorm.from_mode("cuda-convnet")`` for that reading. ``groups=2`` normalizes each
    half of the channels on its own, as each GPU of the two-tower network did (cuda-convnet2's
    ``layers-imagenet-2gpu-model.cfg``: ``rnorm1a`` and ``rnorm1b`` over 48 channels each).
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                 groups: int = 1):
        super().__init__()
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups

    @classmethod
    def from_mode(cls, mode: str = "paper", groups: int = 1) -> LocalResponseNorm:
        """The constants of ``mode`` (see ``LRN_MODES``), over ``groups`` towers."""
        if mode not in LRN_MODES:
            raise ValueError(f"unknown lrn_mode {mode!r}; expected one of {sorted(LRN_MODES)}")
        return cls(*LRN_MODES[mode], groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k, self.groups)

    def extra_repr(self) -> str:
        towers = f", groups={self.groups}" if self.groups > 1 else ""
        return f"size={self.size}, alpha={self.alpha:g}, beta={self.beta}, k={self.k}{towers}"

    def to_int8(self, scale: float, zero_point: int) -> QuantizedLocalResponseNorm:
        """This layer on ``torch.quint8`` tensors, its output quantized with ``scale`` and ``zero_point``
        (what ``runtime.int8_model`` measured for it)."""
        return QuantizedLocalResponseNorm(self, scale, zero_point)


class QuantizedLocalResponseNorm(nn.Module):
    """:class:`LocalResponseNorm` from a ``torch.quint8`` tensor to one quantized with ``scale`` and
    ``zero_point``: ``quantize(lrn(x.dequantize()))``, normalized in float32."""

    def __init__(self, lrn: LocalResponseNorm, scale: float, zero_point: int):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = lrn.size, lrn.alpha, lrn.beta, lrn.k
        self.groups = lrn.groups
        self.scale, self.zero_point = float(scale), int(zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args = (self.size, self.alpha, self.beta, self.k, self.groups)
        kernels = _kernels(x.device.type)
        if x.device.type == "cpu" and kernels is not None:
            return kernels.lrn_cpu_u8(x, *args, scale=self.scale, zero_point=self.zero_point)
        y = local_response_norm(x.dequantize(), *args)
        return torch.quantize_per_tensor(y, self.scale, self.zero_point, torch.quint8)

    def extra_repr(self) -> str:
        return (f"size={self.size}, alpha={self.alpha:g}, beta={self.beta}, k={self.k}, "
                f"groups={self.groups}, scale={self.scale:g}, zero_point={self.zero_point}")
