"""Device, precision and compilation choices, shared by training, evaluation and benchmarks."""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from typing import Iterable

import torch
from torch import nn

from .errors import UserError

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA, then MPS, then the CPU; an explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but this PyTorch build sees no CUDA GPU")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if device.type == "mps" and not (getattr(torch.backends, "mps",
                                             None) and torch.backends.mps.is_available()):
        raise UserError("--device mps was asked for, but MPS is not available here")
    return device


def available_memory() -> int | None:
    """Bytes of memory this process can still take: Linux's ``MemAvailable`` (free plus reclaimable
    caches), lowered to the room left under a cgroup (container) limit; elsewhere the free pages; None
    when the system does not say."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f_max, open("/sys/fs/cgroup/memory.current") as f_now:
            limit = f_max.read().strip()
            if limit != "max":
                found.append(int(limit) - int(f_now.read()))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            return None
    return max(0, min(found))


def check_amp(amp: str) -> None:
    if amp not in AMP_DTYPES:
        raise UserError(f"unknown --amp {amp!r}; expected one of {', '.join(AMP_DTYPES)}")


def amp_warning(device: torch.device, amp: str) -> str | None:
    """A warning when a precision makes this device slower, not faster (None otherwise)."""
    if amp == "fp16" and device.type == "cpu":
        return ("warning: --amp fp16 on the CPU is emulated and runs many times slower than float32; "
                "use --amp bf16 or --amp off")
    return None


def autocast(device: torch.device, amp: str):
    """Mixed-precision context for the forward pass (a no-op for ``amp="off"``)."""
    check_amp(amp)
    if AMP_DTYPES[amp] is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """Loss scaling is needed for fp16 only (bf16 has float32's range)."""
    return torch.amp.GradScaler(device.type, enabled=(amp == "fp16" and device.type == "cuda"))


def check_cuda_graphs(device: torch.device) -> None:
    """CUDA graphs exist on CUDA devices only."""
    if device.type != "cuda":
        raise UserError(f"CUDA graphs need a CUDA device, not {device.type}")


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def prepare_model(model: nn.Module, device: torch.device, *, channels_last: bool = False,
                  compile: bool = False, cuda_graphs: bool = False,
                  compile_frozen: bool = False) -> nn.Module:
    """Move ``model`` to ``device`` (in place) and return the module to call: ``model`` itself, or
    its ``torch.compile``d wrapper. Always save ``model``, never the wrapper.

    ``channels_last`` stores conv weights NHWC (feed inputs through :func:`prepare_input` too);
    ``compile`` fuses the element-wise work (LRN included) with TorchInductor; ``cuda_graphs``
    (CUDA only, implies ``compile``) also replays each step as one CUDA graph, which pays when
    kernel launches, not arithmetic, bound the step: small batches, small models. On CUDA
    cuDNN is asked to benchmark its convolution algorithms once per input shape.

    ``compile_frozen`` (inference only: call the result under ``torch.inference_mode`` / ``no_grad``, and
    not after changing the weights) compiles with Inductor's freezing: the weights become constants
    of the graph, so convolutions and matmuls get weights prepacked once for oneDNN on the CPU and
    the constant work (the bf16 casts of the weights under autocast) is done once, not every call.
    """
    if cuda_graphs:
        check_cuda_graphs(device)
    model.to(device=device, memory_format=memory_format(channels_last))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels once
    if compile_frozen:  # a mode and options cannot both be given: "reduce-overhead" is triton.cudagraphs
        return torch.compile(model, options={"freezing": True, "triton.cudagraphs": cuda_graphs})
    if compile or cuda_graphs:
        return torch.compile(model, mode="reduce-overhead" if cuda_graphs else None)
    return model


def prepare_input(x: torch.Tensor, device: torch.device, *, channels_last: bool = False) -> torch.Tensor:
    """A batch of images on ``device`` in the layout :func:`prepare_model` gave the model."""
    return x.to(device, memory_format=memory_format(channels_last), non_blocking=True)


# int8 inference -------------------------------------------------------------------------------------

INT8_ENGINES = ("onednn", "x86", "fbgemm", "qnnpack")  # torch's quantized back ends, the first present wins
# runs of layers torch.ao fuses into one quantized kernel (the ReLU becomes the kernel's output clamp)
_INT8_FUSIONS = ((nn.Conv2d, nn.BatchNorm2d, nn.ReLU), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv2d, nn.ReLU),
                 (nn.Linear, nn.ReLU))
# layers that torch.ao converts, or that compute on quint8 tensors as they are; any other layer runs in
# float32 between a dequantize and a quantize, unless it has ``to_int8(scale, zero_point)`` (LRN)
_INT8_LAYERS = (nn.Conv2d, nn.Linear, nn.ReLU, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d,
                nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity)


def int8_engine() -> str:
    """The quantized back end int8 inference uses here (oneDNN where this torch build has it)."""
    engines = torch.backends.quantized.supported_engines
    found = next((e for e in INT8_ENGINES if e in engines), None)
    if found is None:
        raise UserError(f"int8 inference needs a quantized engine; this torch build has none ({engines})")
    return found


def _int8_layers(seq: nn.Sequential) -> nn.Sequential:
    """``seq`` with its conv / linear (+ batch norm) + ReLU runs fused, every other layer that torch.ao
    cannot convert wrapped as (dequantize, layer, quantize), between a quantize and a dequantize."""
    from torch.ao import quantization as tq  # deferred: torch.ao is imported only for int8 inference

    names = [name for name, _ in seq.named_children()]
    runs, i = [], 0
    while i < len(names):
        for pattern in _INT8_FUSIONS:
            chunk = names[i:i + len(pattern)]
            kinds = tuple(type(seq.get_submodule(n)) for n in chunk)
            if kinds == pattern:
                runs.append(chunk)
                i += len(pattern) - 1
                break
        i += 1
    seq = tq.fuse_modules(seq, runs) if runs else seq
    for name, layer in list(seq.named_children()):
        # torch.ao's own modules are the fused runs; dropout in eval mode passes the codes on
        if isinstance(layer, _INT8_LAYERS) or type(layer) is nn.Dropout or type(layer).__module__.startswith(
                "torch.ao."):
            continue
        layer.qconfig = None  # stays float32
        setattr(seq, name, nn.Sequential(tq.DeQuantStub(), layer, tq.QuantStub()))
    return nn.Sequential(tq.QuantStub(), seq, tq.DeQuantStub())


def int8_model(model: nn.Module, calibration: Iterable[torch.Tensor]) -> nn.Module:
    """A copy of the eval-mode CPU ``model`` for int8 inference, ``model`` left as it is.

    Post-training static quantization with torch.ao (eager mode): each ``nn.Sequential`` child of the
    model (a zoo model's ``features`` and ``classifier``) computes in 8 bits, weights per output channel
    (qint8), activations per tensor (quint8) with ranges observed on the ``calibration`` batches
    (inputs as the model takes them: the images the model will see, or like them). Convolutions and
    linear layers run fused with their ReLU in the quantized engine of :func:`int8_engine`, pooling on
    the 8-bit codes; a layer with ``to_int8`` (LRN) gives its own 8-bit form; any other layer runs in
    float32 between a dequantize and a quantize. Feed channels-last inputs (``prepare_input``): the
    engine's kernels are NHWC. Sets ``torch.backends.quantized.engine``.
    """
    from torch.ao import quantization as tq  # deferred: torch.ao is imported only for int8 inference

    engine = int8_engine()
    torch.backends.quantized.engine = engine
    q = copy.deepcopy(model).cpu().eval()
    trunks = [name for name, child in q.named_children() if isinstance(child, nn.Sequential)]
    if not trunks:
        raise UserError(f"int8 inference quantizes a model's nn.Sequential parts; "
                        f"{type(model).__name__} has none")
    with warnings.catch_warnings():  # torch.ao's deprecation notices (its successor is torchao)
        warnings.simplefilter("ignore")
        for name in trunks:
            setattr(q, name, _int8_layers(getattr(q, name)))
        q.qconfig = tq.get_default_qconfig(engine)
        tq.prepare(q, inplace=True)
        with torch.no_grad():
            for x in calibration:
                q(x)
        tq.convert(q, inplace=True)
    from torch.ao.nn.quantized import Quantize  # deferred: as above

    for name, island in list(q.named_modules()):
        if isinstance(island, nn.Sequential) and len(island) == 3 and hasattr(island[1], "to_int8") \
                and isinstance(island[2], Quantize):  # (dequantize, layer, quantize) -> the layer's own
            q.set_submodule(name, island[1].to_int8(float(island[2].scale), int(island[2].zero_point)))
    return q
