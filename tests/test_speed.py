"""The fast paths (channels_last, bf16 autocast, torch.compile) compute what the plain fp32 path does.

Every registered model runs one training forward + backward through ``runtime.prepare_model`` /
``runtime.autocast``, plain and fast, from the same weights and inputs; logits, loss and every
parameter's gradient must agree: in float32 to 1e-4 (relative norm of the difference); in bf16
logits and loss to 2e-2 and gradients in direction (cosine >= 0.95). bf16 gradients cannot be
held tighter: its rounding flips ReLUs near zero and the error grows layer by layer going back
(about 5% at fc7, 10-30% at conv1 for torchvision's own AlexNet layout too).
"""

import copy

import pytest
import torch
from torch import nn

from alexnet import runtime
from alexnet.errors import UserError
from alexnet.models import create_model, list_models, model_options
from alexnet.models.lrn import LocalResponseNorm, QuantizedLocalResponseNorm

CPU = torch.device("cpu")


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    # dropout off, so that both paths see the same network (masks differ between eager and compiled);
    # He init where offered: under the paper's N(0, 0.01) conv1's gradient is a near-cancelling sum
    # that moves by percents with any change of summation order, fast path or not.
    options = {k: v for k, v in {"dropout": 0.0, "init": "kaiming"}.items() if k in model_options(name)}
    return create_model(name, num_classes=10, **options).train()


def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, channels_last=False, amp="off",
         compile=False) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """One forward + backward the way training runs it: logits, loss and gradients, in float32."""
    run = runtime.prepare_model(model, CPU, channels_last=channels_last, compile=compile)
    with runtime.autocast(CPU, amp):
        logits = run(runtime.prepare_input(x, CPU, channels_last=channels_last))
        loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    grads = {n: p.grad.float() for n, p in model.named_parameters()}
    return logits.detach().float(), loss.detach().float(), grads


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm()).item()


def cosine(got: torch.Tensor, want: torch.Tensor) -> float:
    return nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0).item()


def cancelled_by_batch_norm(model: nn.Module) -> set[str]:
    """Biases of convolutions followed by batch normalization: the batch mean subtracts them, so their
    gradient is zero in exact arithmetic and what either path computes is rounding."""
    modules = list(model.named_modules())
    return {f"{a}.bias" for (a, conv), (_, bn) in zip(modules, modules[1:])
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.bias is not None}


def check_fast_path(name: str, **fast):
    plain_model = build(name)
    fast_model = copy.deepcopy(plain_model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *plain_model.input_size, generator=g)
    y = torch.randint(0, 10, (2,), generator=g)
    want = step(plain_model, x, y)
    got = step(fast_model, x, y, **fast)
    bf16 = fast.get("amp") == "bf16"
    assert relative_error(got[0], want[0]) < (2e-2 if bf16 else 1e-4), "logits"
    assert relative_error(got[1], want[1]) < (2e-2 if bf16 else 1e-4), "loss"
    assert got[2].keys() == want[2].keys()
    for n in set(want[2]) - cancelled_by_batch_norm(plain_model):
        if bf16:
            assert cosine(got[2][n], want[2][n]) > 0.95, f"grad of {n}"
        else:
            assert relative_error(got[2][n], want[2][n]) < 1e-4, f"grad of {n}"
    return fast_model


@pytest.mark.parametrize("name", list_models())
def test_channels_last(name):
    model = check_fast_path(name, channels_last=True)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_autocast(name, channels_last):
    check_fast_path(name, amp="bf16", channels_last=channels_last)


def _inductor_compiles() -> str | None:
    """None if TorchInductor can build a C++ kernel here, else why not."""
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(3))
    except Exception as e:  # no compiler, no headers, unsupported platform, ...
        return f"torch.compile does not work here: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return None


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit notices raised inside torch.compile
@pytest.mark.parametrize("name, fast", [
    ("alexnet-small", {}),                                     # LRN through lrn_reference, fused
    ("lenet5", {"channels_last": True, "amp": "bf16"}),
])
def test_compile(name, fast):
    reason = _inductor_compiles()
    if reason:
        pytest.skip(reason)
    torch._dynamo.reset()
    check_fast_path(name, compile=True, **fast)


def test_cuda_graphs_need_cuda():
    with pytest.raises(UserError, match="CUDA graphs"):
        runtime.prepare_model(nn.Linear(2, 2), CPU, cuda_graphs=True)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name, amp", [("alexnet-small", "off"), ("lenet5", "bf16")])
def test_frozen_inference_computes_the_eager_logits(name, amp):
    """``compile_frozen`` (evaluate / predict / bench infer --compile-frozen) folds the weights into the
    compiled graph: the logits are the eager float32 model's, to 1e-4 in float32 and 2e-2 under bf16
    autocast."""
    reason = _inductor_compiles()
    if reason:
        pytest.skip(reason)
    torch._dynamo.reset()
    model = build(name).eval()
    x = torch.randn(4, *model.input_size, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        want = model(x)
        frozen = runtime.prepare_model(model, CPU, channels_last=True, compile_frozen=True)
        with runtime.autocast(CPU, amp):
            got = frozen(runtime.prepare_input(x, CPU, channels_last=True)).float()
    assert relative_error(got, want) < (2e-2 if amp == "bf16" else 1e-4)


# int8 inference is held to 5% relative logit error and 85% top-1 agreement with eager float32 (the
# bounds `alexnet bench infer --int8` prints; measured on alexnet2012 at batch 64: 2.7% and 91%).
INT8_ERROR, INT8_AGREEMENT = 0.05, 0.85


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # torch.ao's deprecation notice
@pytest.mark.parametrize("name", ["alexnet-small", "nnott-lenet"])  # LRN and dropout; batch norm
def test_int8_inference_is_held_to_its_bounds(name):
    """``int8_model``: convolutions and linear layers become 8-bit kernels (batch norm folded, ReLU
    fused), LRN runs on the 8-bit codes, other layers stay float32 between a dequantize and a
    quantize; the logits of 32 images stay within the bounds of eager float32, and the float model
    is left as it was."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, **({"width": 0.5} if name == "alexnet-small" else {})).eval()
    before = copy.deepcopy(model.state_dict())
    g = torch.Generator().manual_seed(2)
    calibration, x = (torch.randn(n, *model.input_size, generator=g) for n in (16, 32))
    with torch.inference_mode():
        want = model(x)
    q = runtime.int8_model(model, [runtime.prepare_input(calibration, CPU, channels_last=True)])
    layers = {type(m) for m in q.modules()}
    assert not layers & {nn.Conv2d, nn.Linear, nn.BatchNorm2d, LocalResponseNorm}, layers  # none left float
    assert (QuantizedLocalResponseNorm in layers) == (name == "alexnet-small")
    with torch.inference_mode():
        got = q(runtime.prepare_input(x, CPU, channels_last=True))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the float model untouched
    assert relative_error(got, want) < INT8_ERROR
    assert (got.argmax(1) == want.argmax(1)).double().mean() >= INT8_AGREEMENT
