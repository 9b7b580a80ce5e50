"""Device, precision and compilation choices, shared by training, evaluation and benchmarks."""

from __future__ import annotations

import contextlib
import os

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
