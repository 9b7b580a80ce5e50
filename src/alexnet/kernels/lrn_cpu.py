"""Local response normalization on the CPU as one C pass each way (``lrn_cpu.c``).

The eager tensor-op form of LRN walks the activation tensor about ten times in each direction and
allocates a float32 tensor of the input's size for the window sums; these loops read each input
once and write each output once, keeping a tower's window of one position (channels-last) or of a
64-position tile (NCHW) in cache, and the backward recomputes the window sums from the input instead
of saving them. Float32 and float64; NCHW or channels-last dense tensors (others are made
contiguous first). The batch is split across ``torch.get_num_threads()`` threads (the C calls
release the GIL). :func:`lrn_cpu_u8` and :func:`lrn_cpu_bf16` are the forward on 8-bit quantized
(``torch.quint8``) and on bfloat16 tensors, for inference: the narrow type read and written once per
element, the same result as widening to float32, normalizing and narrowing again.

The source is compiled on first import with the system's C compiler (``$CC``, else ``cc``) into
``$ALEXNET_CACHE/kernels`` (default ``~/.cache/alexnet/kernels``), one shared library per source
version and type; without a compiler the import raises ImportError and callers use plain PyTorch.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from ..files import atomic_path, cache_root

_SOURCE = Path(__file__).with_name("lrn_cpu.c")
# -fno-math-errno lets sqrt vectorize (it changes no result: errno is never read); -march=native
# widens the vectors to what this CPU has (the library is cached per CPU), dropped if unsupported.
_FLAGS = ["-O3", "-fno-math-errno", "-std=c99", "-shared", "-fPIC"]
_NATIVE = "-march=native"
_TYPES = {torch.float32: "float", torch.float64: "double"}
# n, c, hw; channels_last, groups, before, after; alpha, beta, k
_ARGS = [*[ctypes.c_int64] * 3, ctypes.c_int, ctypes.c_int64, ctypes.c_int, ctypes.c_int,
         *[ctypes.c_double] * 3]
_QUANT_ARGS = [ctypes.c_double, ctypes.c_int64] * 2  # input scale, zero point; output scale, zero point


def _cpu_id() -> bytes:
    """What -march=native depends on: the CPU's model and feature flags (Linux), else its name."""
    try:
        with open("/proc/cpuinfo") as f:
            return "".join(sorted({ln for ln in f if ln.startswith(("model name", "flags"))})).encode()
    except OSError:
        return (platform.machine() + platform.processor()).encode()


def _build(real: str) -> ctypes.CDLL:
    cc = shutil.which(os.environ.get("CC") or "cc")
    if cc is None:
        raise ImportError("no C compiler found ($CC or cc) for the CPU LRN kernel")
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, cc.encode(), real.encode(), _cpu_id(),
                                     " ".join(_FLAGS).encode()])).hexdigest()[:16]
    lib = cache_root() / "kernels" / f"lrn_cpu_{real}_{key}.so"
    try:
        if not lib.exists():
            _compile(cc, real, lib)
        dll = ctypes.CDLL(str(lib))
    except (OSError, subprocess.SubprocessError) as e:  # unwritable cache, a hung compiler, a bad library
        raise ImportError(f"building the CPU LRN kernel failed: {e}") from e
    for name, pointers, extra in (("lrn_forward", 2, []), ("lrn_backward", 3, []),
                                  ("lrn_forward_u8", 2, _QUANT_ARGS), ("lrn_forward_bf16", 2, [])):
        fn = getattr(dll, name)
        fn.argtypes = [ctypes.c_void_p] * pointers + _ARGS + extra
        fn.restype = ctypes.c_int
    return dll


def _compile(cc: str, real: str, lib: Path) -> None:
    with atomic_path(lib, mode=0o755) as tmp:  # another process may build it too: each its own temporary
        for extra in ([_NATIVE], []):
            r = subprocess.run([cc, *_FLAGS, *extra, f"-Dreal={real}", str(_SOURCE), "-o", str(tmp), "-lm"],
                               check=False, capture_output=True, text=True, timeout=120)
            if r.returncode == 0:
                break
        else:
            raise ImportError(f"building the CPU LRN kernel failed: {(r.stderr or r.stdout).strip()[:500]}")


_LIBS = {dtype: _build(real) for dtype, real in _TYPES.items()}


def supported(x: torch.Tensor, groups: int = 1) -> bool:
    """Whether the kernel takes ``x``: a CPU (N, C, H, W) float32 / float64 tensor, C divisible by groups."""
    return (x.device.type == "cpu" and x.dim() == 4 and x.dtype in _TYPES and groups >= 1
            and x.shape[1] % groups == 0 and x.numel() > 0)


def _dense(x: torch.Tensor) -> tuple[torch.Tensor, torch.memory_format]:
    if x.is_contiguous():
        return x, torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return x, torch.channels_last
    return x.contiguous(), torch.contiguous_format


def _run(name: str, tensors: list[torch.Tensor], fmt: torch.memory_format, groups: int,
         window: tuple[int, int], alpha: float, beta: float, k: float, *extra, lib=None) -> None:
    """Call the C function on every tensor's images, split into one share of the batch per thread."""
    n, c, h, w = tensors[0].shape
    fn = getattr(lib or _LIBS[tensors[0].dtype], name)
    image = c * h * w * tensors[0].element_size()  # bytes per image, in either layout

    def call(lo: int, hi: int) -> int:
        return fn(*(t.data_ptr() + lo * image for t in tensors), hi - lo, c, h * w,
                  int(fmt == torch.channels_last), groups, *window, alpha, beta, k, *extra)

    threads = max(1, min(torch.get_num_threads(), n))
    bounds = [n * i // threads for i in range(threads + 1)]
    if threads == 1:
        status = [call(0, n)]
    else:
        with ThreadPoolExecutor(threads) as pool:
            status = list(pool.map(call, bounds[:-1], bounds[1:]))
    if any(status):
        raise MemoryError("the CPU LRN kernel could not allocate its scratch buffers")


class _LRNCpu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size: int, alpha: float, beta: float, k: float, groups: int):
        before, after = size // 2, (size - 1) // 2
        x, fmt = _dense(x)
        out = torch.empty_like(x, memory_format=fmt)
        _run("lrn_forward", [x, out], fmt, groups, (before, after), alpha, beta, k)
        ctx.save_for_backward(x)  # the window sums are recomputed from x: nothing else is kept
        ctx.cfg = (before, after, alpha, beta, k, groups, fmt)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        before, after, alpha, beta, k, groups, fmt = ctx.cfg
        grad = grad.to(x.dtype).contiguous(memory_format=fmt)  # indexed with x's layout
        dx = torch.empty_like(x, memory_format=fmt)
        _run("lrn_backward", [grad, x, dx], fmt, groups, (before, after), alpha, beta, k)
        return dx, None, None, None, None, None


def lrn_cpu(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int = 1) -> torch.Tensor:
    """LRN of a CPU tensor, each of ``groups`` channel towers on its own; ``alpha`` multiplies the sum."""
    if not supported(x, groups):
        raise ValueError(f"lrn_cpu takes non-empty CPU (N, C, H, W) float32/float64 tensors with C divisible "
                         f"by groups={groups}, got {tuple(x.shape)} {x.dtype} on {x.device}")
    return _LRNCpu.apply(x, size, alpha, beta, k, groups)


def lrn_cpu_u8(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int = 1, *,
               scale: float, zero_point: int) -> torch.Tensor:
    """LRN of a ``torch.quint8`` CPU tensor (per-tensor affine), quantized with ``scale`` and ``zero_point``:
    ``quantize(lrn(x.dequantize()))`` in one pass, float32 inside, ties rounded to even as torch does."""
    if not (x.device.type == "cpu" and x.dim() == 4 and x.dtype == torch.quint8 and x.numel() > 0
            and x.qscheme() == torch.per_tensor_affine and groups >= 1 and x.shape[1] % groups == 0):
        raise ValueError(f"lrn_cpu_u8 takes non-empty per-tensor quint8 CPU (N, C, H, W) tensors with C "
                         f"divisible by groups={groups}, got {tuple(x.shape)} {x.dtype} on {x.device}")
    x, fmt = _dense(x)
    out = torch._empty_affine_quantized(x.shape, scale=scale, zero_point=zero_point, dtype=torch.quint8,
                                        memory_format=fmt)
    _run("lrn_forward_u8", [x, out], fmt, groups, (size // 2, (size - 1) // 2), alpha, beta, k,
         x.q_scale(), x.q_zero_point(), scale, zero_point, lib=_LIBS[torch.float32])
    return out


def lrn_cpu_bf16(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                 groups: int = 1) -> torch.Tensor:
    """LRN of a bfloat16 CPU tensor for inference (no gradient): each element widened to float32 as it is
    read, normalized, and rounded to bfloat16 once as it is written (round to nearest even, as
    ``Tensor.bfloat16()``): the result of ``lrn_cpu(x.float(), ...).bfloat16()`` without the two copies."""
    if not (x.device.type == "cpu" and x.dim() == 4 and x.dtype == torch.bfloat16 and x.numel() > 0
            and groups >= 1 and x.shape[1] % groups == 0):
        raise ValueError(f"lrn_cpu_bf16 takes non-empty bfloat16 CPU (N, C, H, W) tensors with C divisible "
                         f"by groups={groups}, got {tuple(x.shape)} {x.dtype} on {x.device}")
    x, fmt = _dense(x)
    out = torch.empty_like(x, memory_format=fmt)
    _run("lrn_forward_bf16", [x, out], fmt, groups, (size // 2, (size - 1) // 2), alpha, beta, k,
         lib=_LIBS[torch.float32])
    return out
