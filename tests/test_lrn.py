"""LRN against independent references: the paper's formula as an explicit loop (float64), torch's
``nn.LocalResponseNorm`` with alpha converted, and ``torch.autograd.gradcheck``."""

import pytest
import torch
from helpers.lrn import MODES, activations, paper_loop
from torch import nn

from alexnet.models.lrn import LRN_MODES, LocalResponseNorm, local_response_norm, lrn_reference


def test_modes_are_the_papers_constants():
    for mode, (n, alpha, beta, k, divided) in MODES.items():
        m = LocalResponseNorm.from_mode(mode)
        assert (m.size, m.beta, m.k) == (n, beta, k)
        assert m.alpha == pytest.approx(alpha / n if divided else alpha, rel=1e-12)
    assert set(LRN_MODES) == set(MODES)
    with pytest.raises(ValueError, match="lrn_mode"):
        LocalResponseNorm.from_mode("alexnet")


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("scale", [3.0, 300.0])  # k dominates / alpha * sum dominates the denominator
@pytest.mark.parametrize("channels_last", [False, True])
def test_fp32_matches_the_formula_to_1e6(mode, scale, channels_last):
    n, alpha, beta, k, divided = MODES[mode]
    x = activations((3, 13, 6, 5), scale=scale, channels_last=channels_last)
    want = paper_loop(x.double(), n, alpha / n if divided else alpha, beta, k)
    got = LocalResponseNorm.from_mode(mode)(x)
    assert got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    nonzero = want != 0
    assert torch.equal(got == 0, ~nonzero)
    rel = ((got.double() - want).abs() / want.abs())[nonzero]
    assert rel.max() < 1e-6


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("channels_last", [False, True])
def test_fp32_gradient_matches_the_formula(mode, channels_last):
    n, alpha, beta, k, divided = MODES[mode]
    x = activations((2, 11, 5, 4), scale=30.0, channels_last=channels_last).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    x64 = x.detach().double().requires_grad_(True)
    want, = torch.autograd.grad(paper_loop(x64, n, alpha / n if divided else alpha, beta, k), x64, g.double())
    got, = torch.autograd.grad(LocalResponseNorm.from_mode(mode)(x), x, g)
    assert got.dtype == torch.float32
    assert (got.double() - want).abs().max() <= 1e-6 * want.abs().max()


@pytest.mark.parametrize("size", [1, 4, 5])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck_float64(size, channels_last):
    x = activations((2, 6, 3, 3), scale=20.0, channels_last=channels_last, dtype=torch.float64)
    x += 0.1  # away from ReLU's kink: gradcheck differentiates numerically
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, size, 1e-3, 0.75, 2.0), (x,))
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, size, 1e-3, 0.6, 1.0), (x,))


@pytest.mark.parametrize("size", [3, 4, 5])
@pytest.mark.parametrize("channels_last", [False, True])
def test_agrees_with_torch_given_alpha_times_size(size, channels_last):
    x = activations((4, 16, 9, 7), scale=10.0, channels_last=channels_last).requires_grad_(True)
    ours = LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=2.0)
    torch_lrn = nn.LocalResponseNorm(size, alpha=1e-4 * size, beta=0.75, k=2.0)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    y, y_ref = ours(x), torch_lrn(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=0)
    dx, = torch.autograd.grad(y, x, g)
    dx_ref, = torch.autograd.grad(y_ref, x, g)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-5, atol=1e-6 * dx_ref.abs().max().item())


def test_bf16_input_is_normalized_in_fp32():
    x = activations((2, 12, 5, 5), scale=30.0)
    xb = x.bfloat16().requires_grad_(True)
    y = local_response_norm(xb)
    assert y.dtype == torch.bfloat16
    want = paper_loop(xb.detach().double(), 5, 1e-4, 0.75, 2.0)
    torch.testing.assert_close(y.double(), want, rtol=2 ** -8, atol=0)  # one bf16 rounding of the output
    g = torch.randn(x.shape).bfloat16()
    dx, = torch.autograd.grad(y, xb, g)
    assert dx.dtype == torch.bfloat16
    x64 = xb.detach().double().requires_grad_(True)
    dx_want, = torch.autograd.grad(paper_loop(x64, 5, 1e-4, 0.75, 2.0), x64, g.double())
    assert (dx.double() - dx_want).abs().max() <= 2 ** -7 * dx_want.abs().max()


def test_broadcast_gradient_and_odd_strides():
    # y.sum().backward() hands backward an expanded (stride 0) gradient; x a non-contiguous view.
    base = activations((3, 10, 8, 8), scale=5.0)
    x = base[:, :, ::2, 1:6].requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    local_response_norm(x).sum().backward()
    nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(x_ref).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-7)


def test_reference_expression_is_the_same_function():
    # lrn_reference is what torch.compile sees; it must compute what the autograd Function does.
    x = activations((2, 9, 4, 4), scale=30.0, dtype=torch.float64)
    for size, alpha, beta, k in [(5, 1e-4, 0.75, 2.0), (4, 1e-3, 0.5, 1.0)]:
        torch.testing.assert_close(lrn_reference(x, size, alpha, beta, k),
                                   paper_loop(x, size, alpha, beta, k))
