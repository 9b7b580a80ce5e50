"""Loading the next batch while the model works on this one.

:class:`Prefetcher` wraps an iterable of :class:`~alexnet.data.loader.Batch` (an ``EpochLoader``) and
yields the same batches, in the same order, with their tensors on the device:

- a background thread runs the loader ``depth`` batches ahead (reading the prepared store, or
  collecting the worker processes' batches), so the training step never waits for a batch that
  could have been read while the previous step computed; on CUDA the thread also pins the batch
  (page-locked memory, which an asynchronous copy needs);
- on CUDA the host-to-device copy of batch ``i + 1`` is issued on a side stream as soon as batch
  ``i`` is handed out, so the copy overlaps the step's kernels; an event makes the compute stream
  wait for the copy and ``record_stream`` keeps the allocator from reusing the copy's memory while
  the compute stream still reads it (the pattern of NVIDIA Apex's ``data_prefetcher``).

The thread only reads: the augmentation's and dropout's random numbers are drawn by the training
loop in the main thread, so training with or without the prefetcher does the same arithmetic. (A
``DataLoader`` draws its base seed from torch's global generator when it starts; that happens in
the thread before the first batch exists, while the main thread waits for it, as it did before.)

The thread stops when the iteration ends, breaks off (``close()``, the ``with`` block, an
exception in the loop), or the loader raises; the loader's error is raised in the main thread.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace
from typing import Iterable, Iterator

import torch

from .loader import Batch

_END = object()  # the loader is exhausted


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """Iterate ``batches`` with the next ``depth`` batches loaded ahead in a thread and, on CUDA,
    copied to ``device`` on a side stream. Yields :class:`Batch` with tensors on ``device``.

    Use as ``with Prefetcher(loader, device) as batches: for batch in batches: ...`` (or call
    :meth:`close`), so that the thread stops even when the loop stops early.
    """

    def __init__(self, batches: Iterable[Batch], device: torch.device | str, *, depth: int = 2,
                 join_timeout: float = 10.0):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.batches, self.device, self.depth = batches, torch.device(device), depth
        self.join_timeout = join_timeout
        self.cuda = self.device.type == "cuda"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    # -- the background thread

    def _produce(self, q: queue.Queue, stop: threading.Event) -> None:
        it = iter(self.batches)
        try:
            for batch in it:
                if self.cuda:  # an asynchronous copy needs page-locked memory
                    batch = replace(batch, images=_pinned(batch.images), labels=_pinned(batch.labels))
                if not _put(q, batch, stop) or stop.is_set():  # told to stop: read no further batch
                    return
            _put(q, _END, stop)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            _put(q, _Failed(e), stop)
        finally:
            close = getattr(it, "close", None)  # a generator (EpochLoader): stop its DataLoader here
            if close is not None:
                close()

    def close(self) -> None:
        """Stop the thread (the loader is closed in it) and wait for it, at most ``join_timeout`` s."""
        self._stop.set()
        thread, q = self._thread, self._queue
        if thread is None:
            return
        deadline = time.monotonic() + self.join_timeout
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                q.get_nowait()  # unblock a producer waiting for room in the queue
            except queue.Empty:
                pass
            thread.join(0.05)
        # still alive: stuck inside the loader; as a daemon thread it does not keep the process alive
        self._thread = None

    # -- the consumer

    def _next(self, q: queue.Queue) -> Batch | None:
        item = q.get()
        if item is _END:
            return None
        if isinstance(item, _Failed):
            raise item.error
        return item

    def __iter__(self) -> Iterator[Batch]:
        if self._thread is not None:
            raise RuntimeError("a Prefetcher is iterated once")
        self._stop.clear()
        self._queue = q = queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(target=self._produce, args=(q, self._stop), daemon=True,
                                        name="alexnet-prefetch")
        self._thread.start()
        try:
            if not self.cuda:
                while (batch := self._next(q)) is not None:
                    yield replace(batch, images=batch.images.to(self.device),
                                  labels=batch.labels.to(self.device))
                return
            stream = torch.cuda.Stream(self.device)
            ahead = self._copy(self._next(q), stream)
            while ahead is not None:
                batch, ready = ahead
                ahead = self._copy(self._next(q), stream)  # the next copy overlaps this step
                current = torch.cuda.current_stream(self.device)
                current.wait_event(ready)
                for t in (batch.images, batch.labels):
                    t.record_stream(current)  # memory made on the side stream, used on this one
                yield batch
        finally:
            self.close()

    def _copy(self, batch: Batch | None, stream) -> tuple[Batch, torch.cuda.Event] | None:
        if batch is None:
            return None
        with torch.cuda.stream(stream):
            images = batch.images.to(self.device, non_blocking=True)
            labels = batch.labels.to(self.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(stream)
        return replace(batch, images=images, labels=labels), ready


def _pinned(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_pinned() else t.pin_memory()


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item`` unless asked to stop first; False if stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False
