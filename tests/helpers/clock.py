"""A stand-in for ``time.perf_counter``, so that a benchmark's reported numbers can be checked
against durations the test chose and numbers computed by hand from them."""

from __future__ import annotations

import time


class FakeClock:
    """``time.perf_counter`` that moves by what the test adds with :meth:`advance`: alone
    (``real=False``: the code under test sees only those seconds) or on top of real time
    (``real=True``: loops that wait for real time still end)."""

    def __init__(self, real: bool = False):
        self._real = time.perf_counter if real else (lambda: 0.0)
        self.added = 0.0

    def __call__(self) -> float:
        return 1000.0 + self._real() + self.added

    def advance(self, seconds: float) -> None:
        self.added += seconds


def install(monkeypatch, real: bool = False) -> FakeClock:
    """Replace ``time.perf_counter`` for the rest of the test; returns the clock."""
    clock = FakeClock(real)
    monkeypatch.setattr(time, "perf_counter", clock)
    return clock
