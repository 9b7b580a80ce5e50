"""LRN against independent references: the paper's formula as an explicit loop (float64), per tower
for the two-tower network, torch's ``nn.LocalResponseNorm`` with alpha converted, and
``torch.autograd.gradcheck``. Every CPU implementation is checked: "auto" (the fused C kernel where a
C compiler built it) and "eager" (the autograd function on tensor ops)."""

import functools
import os
import subprocess
import sys

import pytest
import torch
from helpers.lrn import MODES, activations, paper_loop
from torch import nn

from alexnet.models import create_model
from alexnet.models import lrn as lrn_module
from alexnet.models.lrn import LRN_MODES, LocalResponseNorm, fused_kernel, local_response_norm, lrn_reference


IMPLS = ["auto", "eager"]


def test_modes_are_the_papers_constants():
    for mode, (n, alpha, beta, k, divided) in MODES.items():
        m = LocalResponseNorm.from_mode(mode)
        assert (m.size, m.beta, m.k) == (n, beta, k)
        assert m.alpha == pytest.approx(alpha / n if divided else alpha, rel=1e-12)
    assert set(LRN_MODES) == set(MODES)
    with pytest.raises(ValueError, match="lrn_mode"):
        LocalResponseNorm.from_mode("alexnet")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("scale", [3.0, 300.0])  # k dominates / alpha * sum dominates the denominator
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("towers", [1, 2])
def test_fp32_matches_the_formula_to_1e6(impl, mode, scale, channels_last, towers):
    n, alpha, beta, k, divided = MODES[mode]
    x = activations((3, 14, 6, 5), scale=scale, channels_last=channels_last)
    want = paper_loop(x.double(), n, alpha / n if divided else alpha, beta, k, towers)
    m = LocalResponseNorm.from_mode(mode, groups=towers)
    got = local_response_norm(x, m.size, m.alpha, m.beta, m.k, m.groups, impl=impl)
    assert got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    nonzero = want != 0
    assert torch.equal(got == 0, ~nonzero)
    rel = ((got.double() - want).abs() / want.abs())[nonzero]
    assert rel.max() < 1e-6


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("towers", [1, 2])
def test_fp32_gradient_matches_the_formula(impl, mode, channels_last, towers):
    n, alpha, beta, k, divided = MODES[mode]
    x = activations((2, 12, 5, 4), scale=30.0, channels_last=channels_last).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    x64 = x.detach().double().requires_grad_(True)
    alpha = alpha / n if divided else alpha
    want, = torch.autograd.grad(paper_loop(x64, n, alpha, beta, k, towers), x64, g.double())
    got, = torch.autograd.grad(local_response_norm(x, n, alpha, beta, k, towers, impl=impl), x, g)
    assert got.dtype == torch.float32
    assert (got.double() - want).abs().max() <= 1e-6 * want.abs().max()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", [1, 4, 5])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("towers", [1, 2])
def test_gradcheck_float64(impl, size, channels_last, towers):
    x = activations((1, 6, 3, 2), scale=20.0, channels_last=channels_last, dtype=torch.float64)
    x += 0.1  # away from ReLU's kink: gradcheck differentiates numerically
    x.requires_grad_(True)
    for beta, k in ((0.75, 2.0), (0.6, 1.0)):
        f = functools.partial(local_response_norm, size=size, alpha=1e-3, beta=beta, k=k, groups=towers,
                              impl=impl)
        assert torch.autograd.gradcheck(f, (x,))


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


@pytest.mark.parametrize("towers", [1, 2, 3])
def test_reference_expression_is_the_same_function(towers):
    # lrn_reference is what torch.compile sees (and impl="reference"): it must be the formula too.
    x = activations((2, 12, 4, 4), scale=30.0, dtype=torch.float64)
    for size, alpha, beta, k in [(5, 1e-4, 0.75, 2.0), (4, 1e-3, 0.5, 1.0)]:
        want = paper_loop(x, size, alpha, beta, k, towers)
        torch.testing.assert_close(lrn_reference(x, size, alpha, beta, k, towers), want)
        got = local_response_norm(x, size, alpha, beta, k, towers, impl="reference")
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("impl", IMPLS)
def test_the_window_stops_at_the_tower_edge(impl):
    """conv1's 96 maps as two towers of 48: channel 47's output never depends on channel 48 and up."""
    x = activations((1, 96, 3, 3), scale=300.0).requires_grad_(True)
    for towers, reaches in ((2, False), (1, True)):
        y = local_response_norm(x, 5, 1e-4, 0.75, 2.0, towers, impl=impl)
        dx, = torch.autograd.grad(y[:, 47].sum(), x)
        assert (dx[:, 48:50].abs().sum() > 0) == reaches
        assert dx[:, 45:48].abs().sum() > 0 and dx[:, 50:].abs().sum() == 0


def test_the_models_normalize_per_tower():
    for name, size in (("alexnet2012", {}), ("alexnet-small", {})):
        two, one = create_model(name, **size), create_model(name, towers=1, **size)
        assert two.features.norm1.groups == two.features.norm2.groups == 2
        assert one.features.norm1.groups == one.features.norm2.groups == 1
        # the LRN has no weights: the towers change no parameter count (60,965,224 is test_models')
        assert sum(p.numel() for p in two.parameters()) == sum(
            p.numel() for p in create_model(name, lrn=False).parameters())
    with pytest.raises(ValueError, match="divisible"):
        local_response_norm(torch.zeros(1, 5, 2, 2), groups=2)
    with pytest.raises(ValueError, match="impl"):
        local_response_norm(torch.zeros(1, 4, 2, 2), impl="fast")


@pytest.mark.skipif(fused_kernel("cpu") is None, reason="no C compiler built the CPU LRN kernel")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_uses_the_fused_kernel(dtype):
    x = activations((2, 8, 3, 3), scale=30.0, dtype=dtype).requires_grad_(True)
    assert type(local_response_norm(x, groups=2).grad_fn).__name__ == "_LRNCpuBackward"
    # bf16 / fp16: the C loop on a float32 copy, its output rounded back once
    for half in (torch.bfloat16, torch.float16):
        xh = x.detach().to(half).requires_grad_()
        y = local_response_norm(xh, groups=2)
        assert y.dtype == half and type(y.grad_fn.next_functions[0][0]).__name__ == "_LRNCpuBackward"
        assert torch.equal(y, local_response_norm(xh.detach().float(), groups=2).to(half))


@pytest.mark.skipif(fused_kernel("cpu") is None, reason="no C compiler built the CPU LRN kernel")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("towers", [1, 2])
def test_bf16_inference_reads_and_writes_bf16_in_the_c_loop(channels_last, towers):
    """Without a gradient, bf16 goes through the C loop's own bf16 reads and writes: bit for bit what
    torch's float32 -> bfloat16 rounding (nearest even) gives of the float32 loop, in either layout and
    over 70 positions (a full NCHW tile of 64 and a partial one), a NaN kept NaN; and the paper's formula in
    float64 within one bf16 rounding."""
    x = activations((3, 12, 7, 10), scale=30.0, channels_last=channels_last).bfloat16()
    x[0, 3, 2, 2] = float("nan")
    with torch.inference_mode():
        y = local_response_norm(x, groups=towers)
    assert y.dtype == torch.bfloat16
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    want = local_response_norm(x.float(), groups=towers).bfloat16()  # the float32 loop, torch's rounding
    torch.testing.assert_close(y, want, rtol=0, atol=0, equal_nan=True)  # NaN's payload bits may differ
    nan = y[0, :, 2, 2].isnan()  # channel 3's NaN reaches the windows of channels 1 to 5, no other
    assert nan[1:6].all() and not nan[0] and not nan[6:].any()
    x[0, 3, 2, 2] = 1.0
    with torch.no_grad():
        y = local_response_norm(x, groups=towers)
    paper = paper_loop(x.double(), 5, 1e-4, 0.75, 2.0, towers)
    torch.testing.assert_close(y.double(), paper, rtol=2 ** -8, atol=0)


def test_without_a_c_compiler_the_eager_function_runs(tmp_path):
    """No compiler (or an unwritable cache): no fused CPU kernel, the same function on tensor ops."""
    code = ("import torch; from alexnet.models.lrn import fused_kernel, local_response_norm as f; "
            "x = torch.rand(2, 6, 3, 3, requires_grad=True); y = f(x, groups=2); "
            "print(fused_kernel('cpu'), type(y.grad_fn).__name__)")
    env = dict(os.environ, CC=str(tmp_path / "no-cc"), ALEXNET_CACHE=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["None", "_LRNFunctionBackward"]


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # torch.ao's deprecation notice
@pytest.mark.parametrize("kernel, channels_last, towers", [
    (True, False, 1), (True, False, 2), (True, True, 1), (True, True, 2), (False, True, 2)])
def test_int8_lrn_gives_the_formulas_codes(kernel, channels_last, towers, monkeypatch):
    """On quint8 tensors (int8 inference) LRN returns the codes of the paper's formula (float64 loop)
    applied to the dequantized input, rounded half to even to the output's scale and zero point: at
    most one code off, only where float32 and float64 round a value on a half-step apart. Both the
    fused C kernel and the fallback (dequantize, LRN, quantize) are held to it."""
    if not kernel:
        monkeypatch.setattr(lrn_module, "_kernels", lambda device_type: None)
    elif fused_kernel("cpu") is None:
        pytest.skip("no C compiler built the CPU LRN kernel")
    n, alpha, beta, k, _ = MODES["paper"]
    x = activations((3, 14, 6, 5), scale=10.0, channels_last=channels_last)
    qx = torch.quantize_per_tensor(x, 0.25, 3, torch.quint8)
    scale, zero = 0.1, 7
    want = paper_loop((qx.int_repr().double() - 3) * 0.25, n, alpha, beta, k, towers)
    want_codes = (torch.round(want / scale) + zero).clamp(0, 255)  # torch.round: half to even
    got = LocalResponseNorm.from_mode("paper", groups=towers).to_int8(scale, zero)(qx)
    assert got.dtype == torch.quint8 and (got.q_scale(), got.q_zero_point()) == (scale, zero)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert want_codes.max() > 150  # the codes span most of the range
    off = (got.int_repr().double() - want_codes).abs()
    assert off.max() <= 1 and (off > 0).double().mean() < 0.01
