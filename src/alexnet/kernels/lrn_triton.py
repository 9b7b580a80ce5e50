"""Local response normalization as two fused Triton kernels (forward, backward) for CUDA.

The eager form reads and writes the activation tensor about ten times in each direction; these
kernels read each input once from DRAM (the channel window is re-read from cache) and write once:

    forward:  x               -> out = x * s^-beta, s = k + alpha * sum_window x^2 (s kept, float32)
    backward: grad, x, s      -> dx

One program covers every channel (C <= 1024) of BLOCK_P positions of one image, so the window
over channels never crosses programs; with ``groups`` towers it stops at its tower's edge.
bf16 / fp16 inputs are computed in float32. Works on (N, C, H, W) tensors in NCHW or
channels_last layout; anything else is made contiguous first.

Block sizes are a fixed heuristic (about 4096 elements per program), not tuned on hardware.
Set TRITON_INTERPRET=1 before importing this module to run the kernels on CPU tensors (tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

MAX_CHANNELS = 1024  # one program holds all channels of its positions
_TILE = 4096  # elements per program (channels x positions)
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _inv_pow(s, beta, BETA_075: tl.constexpr):
    """s^-beta; rsqrt(s) * sqrt(rsqrt(s)) for the paper's beta = 0.75."""
    if BETA_075:
        r = tl.rsqrt(s)
        return r * tl.sqrt(r)
    else:
        return tl.exp2(-beta * tl.log2(s))


@triton.jit
def _lrn_fwd_kernel(x_ptr, out_ptr, scale_ptr, C, CG, HW, stride_n, stride_c, stride_p, alpha, beta, k,
                    BEFORE: tl.constexpr, SIZE: tl.constexpr, BETA_075: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    n = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # (BLOCK_P,) positions h * W + w
    c = tl.arange(0, BLOCK_C)  # (BLOCK_C,) every channel
    lo = (c // CG) * CG  # first channel of c's tower (CG channels per tower)
    image = n * stride_n + (p * stride_p)[None, :]  # (1, BLOCK_P) offsets of channel 0
    pmask = (p < HW)[None, :]
    s = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    for j in tl.static_range(SIZE):  # window [c - before, c + after]; zeros outside the tower
        cj = c + (j - BEFORE)
        m = ((cj >= lo) & (cj < lo + CG) & (cj < C))[:, None] & pmask
        a = tl.load(x_ptr + image + cj[:, None] * stride_c, mask=m, other=0.0).to(tl.float32)
        s += a * a
    s = k + alpha * s  # (BLOCK_C, BLOCK_P)
    offs = image + c[:, None] * stride_c
    m = (c < C)[:, None] & pmask
    a = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
    out = a * _inv_pow(s, beta, BETA_075)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=m)
    tl.store(scale_ptr + offs, s, mask=m)


@triton.jit
def _lrn_bwd_kernel(g_ptr, x_ptr, scale_ptr, dx_ptr, C, CG, HW, stride_n, stride_c, stride_p, coef, beta,
                    AFTER: tl.constexpr, SIZE: tl.constexpr, BETA_075: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    # dx_j = g_j s_j^-beta + coef * a_j * sum_{i = j - after}^{j + before} g_i a_i s_i^(-beta - 1),
    # coef = -2 alpha beta: the i whose window holds j form the window mirrored.
    n = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.arange(0, BLOCK_C)
    lo = (c // CG) * CG
    image = n * stride_n + (p * stride_p)[None, :]
    pmask = (p < HW)[None, :]
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    for j in tl.static_range(SIZE):
        ci = c + (j - AFTER)
        m = ((ci >= lo) & (ci < lo + CG) & (ci < C))[:, None] & pmask
        offs = image + ci[:, None] * stride_c
        g = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
        a = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        s = tl.load(scale_ptr + offs, mask=m, other=1.0)
        acc += g * a * _inv_pow(s, beta, BETA_075) / s
    offs = image + c[:, None] * stride_c
    m = (c < C)[:, None] & pmask
    g = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
    a = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
    s = tl.load(scale_ptr + offs, mask=m, other=1.0)
    dx = g * _inv_pow(s, beta, BETA_075) + coef * a * acc
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=m)


def supported(x: torch.Tensor, groups: int = 1) -> bool:
    """Whether the kernels take ``x``: (N, C, H, W), C <= 1024 divisible by groups, float32 / bf16 / fp16."""
    return (x.dim() == 4 and x.dtype in _DTYPES and x.shape[1] <= MAX_CHANNELS and x.shape[0] < 65536
            and groups >= 1 and x.shape[1] % groups == 0)


def _layout(x: torch.Tensor) -> tuple[torch.Tensor, torch.memory_format, tuple[int, int, int]]:
    """``x`` as NCHW or channels_last dense memory, and its (image, channel, position) strides."""
    _, c, h, w = x.shape
    if x.is_contiguous():
        return x, torch.contiguous_format, (c * h * w, h * w, 1)
    if not x.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous()
        return x, torch.contiguous_format, (c * h * w, h * w, 1)
    return x, torch.channels_last, (h * w * c, 1, c)


def _launch(kernel, tensors, x: torch.Tensor, strides, *scalars, groups: int, window: tuple[int, int],
            beta: float):
    n, c, h, w = x.shape
    block_c = triton.next_power_of_2(c)
    block_p = min(max(1, _TILE // block_c), triton.next_power_of_2(h * w))
    grid = (triton.cdiv(h * w, block_p), n)
    kernel[grid](*tensors, c, c // groups, h * w, *strides, *scalars, window[0], sum(window) + 1,
                 beta == 0.75,
                 BLOCK_C=block_c, BLOCK_P=block_p, num_warps=8)


class _LRNTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size: int, alpha: float, beta: float, k: float, groups: int):
        before, after = size // 2, (size - 1) // 2
        x, fmt, strides = _layout(x)
        out = torch.empty_like(x, memory_format=fmt)
        scale = torch.empty_like(x, dtype=torch.float32, memory_format=fmt)
        _launch(_lrn_fwd_kernel, (x, out, scale), x, strides, alpha, beta, k,
                groups=groups, window=(before, after), beta=beta)
        ctx.save_for_backward(x, scale)
        ctx.cfg = (before, after, alpha, beta, groups, fmt, strides)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, scale = ctx.saved_tensors
        before, after, alpha, beta, groups, fmt, strides = ctx.cfg
        grad = grad.contiguous(memory_format=fmt)  # the kernel indexes grad with x's strides
        dx = torch.empty_like(x, memory_format=fmt)
        _launch(_lrn_bwd_kernel, (grad, x, scale, dx), x, strides, -2.0 * alpha * beta, beta,
                groups=groups, window=(after, before), beta=beta)
        return dx, None, None, None, None, None


def lrn_triton(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
               groups: int = 1) -> torch.Tensor:
    """LRN of a CUDA tensor (or a CPU one under TRITON_INTERPRET=1), each of ``groups`` channel towers on
    its own; ``alpha`` multiplies the sum."""
    if not supported(x, groups):
        raise ValueError(f"lrn_triton takes (N, C<={MAX_CHANNELS}, H, W) float32/bf16/fp16 tensors with C "
                         f"divisible by groups={groups}, got {tuple(x.shape)} {x.dtype}")
    return _LRNTriton.apply(x, size, alpha, beta, k, groups)
