"""Measuring side by side: alternating timers, peak memory and the device's peak arithmetic rate,
shared by the benchmarks and the experiments (the machine's record is
:func:`alexnet.provenance.environment`)."""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that the host clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class Timed:
    """Wall-clock seconds of each measured call of one contender."""

    name: str
    times: list[float] = field(default_factory=list)
    peak_bytes: int | None = None  # largest transient allocation seen in a call (see PeakMemory)

    def quartiles(self) -> tuple[float, float, float]:
        """25th, 50th and 75th percentiles (linear interpolation between order statistics)."""
        if len(self.times) == 1:
            return (self.times[0],) * 3
        q1, q2, q3 = statistics.quantiles(self.times, n=4, method="inclusive")
        return q1, q2, q3

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def ratio(slow: Timed, fast: Timed) -> float:
    """Median over rounds of slow / fast: how many times faster ``fast`` ran, round by round, so
    that load which comes and goes during the run (a shared machine) affects both alike."""
    return statistics.median(s / f for s, f in zip(slow.times, fast.times))


class PeakMemory:
    """Peak memory of one call above what was in use before it.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, exact). CPU on Linux: growth of the
    process's resident set, its high-water mark reset through ``/proc/self/clear_refs``; this
    counts pages newly touched, so memory the allocator reuses without returning it is invisible.
    Elsewhere: not measured (None).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.method = None
        if device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated, above memory_allocated before the call"
        elif device.type == "cpu" and _reset_hwm():
            self.method = "resident set high-water mark (/proc VmHWM after clear_refs), above VmRSS before"

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        elif self.method:
            _reset_hwm()
            self._before = _proc_status_kb("VmRSS") * 1024

    def stop(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self._before
        if self.method:
            return _proc_status_kb("VmHWM") * 1024 - self._before
        return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+)", f.read(), re.M).group(1))


def alternate(calls: dict[str, Callable[[], None]], device: torch.device, *, rounds: int, warmup: int,
              memory: bool = True) -> dict[str, Timed]:
    """Warm every contender up, then time ``rounds`` calls of each, interleaved: round i runs them
    all, starting from a different one each round (A B C, B C A, ...), so that neither drift in the
    machine's load nor the order favours one."""
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    sync(device)
    peak = PeakMemory(device) if memory else None
    out = {name: Timed(name) for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if peak:
                peak.start()
            t0 = time.perf_counter()
            calls[name]()
            sync(device)
            out[name].times.append(time.perf_counter() - t0)
            if peak:
                used = peak.stop()
                if used is not None:
                    out[name].peak_bytes = max(out[name].peak_bytes or 0, used)
    return out


def matmul_tflops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """The best rate of a few square matmuls in ``dtype``: a practical peak for this device."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(6):  # the first one warms up
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    name = str(dtype).removeprefix("torch.")
    return 2 * n**3 / best / 1e12, f"measured: best of 5 {n}x{n} {name} matmuls in this run"
