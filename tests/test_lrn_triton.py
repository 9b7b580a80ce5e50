"""The Triton LRN kernels, run on CPU tensors by Triton's interpreter (TRITON_INTERPRET=1).

Skipped where Triton is not installed. The interpreter must be chosen before ``triton`` is first
imported (its own library functions are decorated then), so unless this process was started with
TRITON_INTERPRET=1, ``test_kernels_in_the_interpreter`` runs this file again in a subprocess that
was. On a CUDA machine ``test_cuda_uses_the_kernel`` checks the compiled kernel in place.
"""

import os
import subprocess
import sys

import pytest
import torch
from helpers.lrn import MODES, activations, paper_loop
from torch import nn

pytest.importorskip("triton", reason="Triton is not installed (the CUDA LRN kernel is optional)")

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(not INTERPRETED, reason="runs in the TRITON_INTERPRET=1 subprocess")


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED, reason="this is the subprocess")
def test_kernels_in_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider"],
                       check=False, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "failed" not in r.stdout


@pytest.fixture(scope="module")
def kernels():
    import alexnet.kernels.lrn_triton as mod

    return mod


@pytest.mark.skipif(INTERPRETED or not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_uses_the_kernel():
    from alexnet.models.lrn import LocalResponseNorm

    x = activations((4, 96, 13, 13), scale=30.0).cuda().requires_grad_(True)
    y = LocalResponseNorm()(x)
    assert type(y.grad_fn).__name__ == "_LRNTritonBackward"
    torch.testing.assert_close(y, nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0)(x), rtol=1e-6, atol=0)


@interpreted
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("channels_last", [False, True])
def test_fp32_forward_and_backward_match_the_formula(kernels, mode, channels_last):
    n, alpha, beta, k, divided = MODES[mode]
    alpha = alpha / n if divided else alpha
    x = activations((2, 11, 5, 3), scale=30.0, channels_last=channels_last).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    y = kernels.lrn_triton(x, n, alpha, beta, k)
    assert y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    x64 = x.detach().double().requires_grad_(True)
    want = paper_loop(x64, n, alpha, beta, k)
    nonzero = want != 0
    rel = ((y.double() - want).abs() / want.abs())[nonzero]
    assert rel.max() < 1e-6
    dx, = torch.autograd.grad(y, x, g)
    dx_want, = torch.autograd.grad(want, x64, g.double())
    assert (dx.double() - dx_want).abs().max() <= 1e-6 * dx_want.abs().max()


@interpreted
@pytest.mark.parametrize("towers", [2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_towers_match_the_formula_per_tower(kernels, towers, channels_last):
    """Each tower normalized on its own (the window stops at the tower's edge), forward and backward."""
    x = activations((2, 12, 3, 4), scale=300.0, channels_last=channels_last).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    y = kernels.lrn_triton(x, 5, 1e-4, 0.75, 2.0, towers)
    x64 = x.detach().double().requires_grad_(True)
    want = paper_loop(x64, 5, 1e-4, 0.75, 2.0, towers)
    assert ((y.double() - want).abs() / want.abs())[want != 0].max() < 1e-6
    dx, = torch.autograd.grad(y, x, g)
    dx_want, = torch.autograd.grad(want, x64, g.double())
    assert (dx.double() - dx_want).abs().max() <= 1e-6 * dx_want.abs().max()
    assert not kernels.supported(torch.zeros(1, 7, 2, 2), groups=2)


@interpreted
@pytest.mark.parametrize("size", [1, 4])
def test_other_sizes_and_beta_agree_with_torch(kernels, size):
    x = activations((2, 6, 4, 4), scale=10.0).requires_grad_(True)
    y = kernels.lrn_triton(x, size, 1e-3, 0.6, 1.0)
    y_ref = nn.LocalResponseNorm(size, alpha=1e-3 * size, beta=0.6, k=1.0)(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=0)
    g = torch.randn(x.shape)
    dx, = torch.autograd.grad(y, x, g)
    dx_ref, = torch.autograd.grad(y_ref, x, g)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-5, atol=1e-6 * dx_ref.abs().max().item())


@interpreted
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_accumulate_in_fp32(kernels, dtype):
    x = activations((2, 20, 3, 3), scale=30.0).to(dtype).requires_grad_(True)
    y = kernels.lrn_triton(x, 5, 1e-4, 0.75, 2.0)
    assert y.dtype == dtype
    want = paper_loop(x.detach().double(), 5, 1e-4, 0.75, 2.0)
    torch.testing.assert_close(y.double(), want, rtol=torch.finfo(dtype).eps, atol=0)  # one output rounding
    g = torch.randn(x.shape).to(dtype)
    dx, = torch.autograd.grad(y, x, g)
    assert dx.dtype == dtype
    x64 = x.detach().double().requires_grad_(True)
    dx_want, = torch.autograd.grad(paper_loop(x64, 5, 1e-4, 0.75, 2.0), x64, g.double())
    assert (dx.double() - dx_want).abs().max() <= 2 * torch.finfo(dtype).eps * dx_want.abs().max()


@interpreted
def test_gradient_in_another_layout(kernels):
    # backward receives a gradient whose layout differs from x's (here NCHW grad, channels_last x)
    x = activations((2, 8, 3, 5), scale=20.0, channels_last=True).requires_grad_(True)
    y = kernels.lrn_triton(x, 5, 1e-4, 0.75, 2.0)
    g = torch.randn(x.shape)  # contiguous NCHW
    dx, = torch.autograd.grad(y, x, g)
    x_ref = x.detach().requires_grad_(True)
    dx_ref, = torch.autograd.grad(nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0)(x_ref), x_ref, g)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-5, atol=1e-7)


@interpreted
def test_unsupported_inputs_are_refused(kernels):
    assert not kernels.supported(torch.zeros(2, 3, 4))  # not 4-D
    assert not kernels.supported(torch.zeros(1, 3, 2, 2, dtype=torch.float64))
    assert not kernels.supported(torch.zeros(1, kernels.MAX_CHANNELS + 1, 1, 1))
    with pytest.raises(ValueError, match="lrn_triton"):
        kernels.lrn_triton(torch.zeros(1, 3, 2, 2, dtype=torch.float64), 5, 1e-4, 0.75, 2.0)
