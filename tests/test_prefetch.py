"""The prefetcher yields exactly the loader's batches, in order, and its thread never outlives the loop:
not when the loop breaks off, not when it raises, not when the loader raises."""

import threading
import time

import numpy as np
import pytest
import torch

from alexnet.data.base import ImageSet, TensorImageSet
from alexnet.data.loader import EpochLoader, batch_indices
from alexnet.data.prefetch import Prefetcher

CPU = torch.device("cpu")


class Numbered(ImageSet):
    """Item ``i`` is a 3x4x4 image of the value ``i % 251``; items in ``bad`` cannot be decoded. Read
    through a ``DataLoader`` (it is not a TensorImageSet), in worker processes or in this one."""

    def __init__(self, n: int, bad=()):
        self.targets = np.arange(n, dtype=np.int64) % 7
        self.bad = set(bad)

    def __getitem__(self, i):
        if i in self.bad:
            return None, int(self.targets[i])
        return torch.full((3, 4, 4), i % 251, dtype=torch.uint8), int(self.targets[i])

    def describe(self, index):
        return f"numbered[{index}]"


def tensor_set(n: int) -> TensorImageSet:
    g = torch.Generator().manual_seed(0)
    return TensorImageSet(torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8, generator=g),
                          np.arange(n) % 5)


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "alexnet-prefetch"]


def wait_until_gone(timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not prefetch_threads(), "the prefetch thread is still running"


def assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert torch.equal(a.images, b.images) and a.images.dtype == b.images.dtype
        assert torch.equal(a.labels, b.labels)
        assert a.skipped == b.skipped


@pytest.mark.parametrize("dataset, workers, start", [
    (tensor_set(103), 0, 0),             # the in-memory path (digits, the prepared store)
    (tensor_set(103), 0, 4),             # a resumed epoch starts at batch 4
    (Numbered(45, bad={3, 17}), 0, 0),   # a DataLoader in the prefetch thread, undecodable items
    (Numbered(45, bad={3, 17}), 1, 1),   # a DataLoader whose worker process the thread starts
])
def test_yields_the_loaders_batches_in_order(dataset, workers, start):
    batches = batch_indices(len(dataset), 8, shuffle=True, seed=3, epoch=2)
    want = list(EpochLoader(dataset, batches, start=start, workers=workers))  # the reference: the loader
    with Prefetcher(EpochLoader(dataset, batches, start=start, workers=workers), CPU) as ahead:
        assert len(ahead) == len(batches) - start
        got = list(ahead)
    assert_same(got, want)
    assert len(got) == -(-len(dataset) // 8) - start
    wait_until_gone()


class Counting:
    """An iterable of ``n`` batches that counts how many were taken from it."""

    def __init__(self, n: int, fail_at: int | None = None):
        self.n, self.fail_at, self.taken = n, fail_at, 0

    def __len__(self):
        return self.n

    def __iter__(self):
        from alexnet.data.loader import Batch

        for i in range(self.n):
            if i == self.fail_at:
                raise OSError(f"disk error at batch {i}")
            self.taken += 1
            yield Batch(torch.full((1, 1, 2, 2), i, dtype=torch.uint8), torch.tensor([i]))


def run_bounded(fn, timeout: float = 20.0):
    """Run ``fn`` in a thread and fail (instead of hanging the test run) if it takes longer."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"did not finish within {timeout} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_breaking_off_stops_the_thread_and_the_loader():
    source = Counting(1000)

    def consume():
        seen = []
        with Prefetcher(source, CPU, depth=2) as ahead:
            for batch in ahead:
                seen.append(int(batch.labels))
                if len(seen) == 3:
                    break
        return seen

    assert run_bounded(consume) == [0, 1, 2]
    wait_until_gone()
    # 3 handed out, at most depth=2 waiting in the queue and one more being put when told to stop
    assert 3 <= source.taken <= 3 + 2 + 1


def test_an_exception_in_the_loop_stops_the_thread():
    def consume():
        with Prefetcher(Counting(1000), CPU) as ahead:
            for batch in ahead:
                if int(batch.labels) == 5:
                    raise FloatingPointError("the loss became nan")

    with pytest.raises(FloatingPointError, match="nan"):
        run_bounded(consume)
    wait_until_gone()


def test_the_loaders_error_is_raised_in_the_loop_after_the_batches_before_it():
    seen = []

    def consume():
        with Prefetcher(Counting(10, fail_at=4), CPU) as ahead:
            for batch in ahead:
                seen.append(int(batch.labels))

    with pytest.raises(OSError, match="disk error at batch 4"):
        run_bounded(consume)
    assert seen == [0, 1, 2, 3]
    wait_until_gone()


def test_an_abandoned_iterator_is_stopped_without_the_with_block():
    def consume():
        it = iter(Prefetcher(Counting(1000), CPU))
        first = next(it)
        it.close()  # what the interpreter does when a loop over it returns early
        return int(first.labels)

    assert run_bounded(consume) == 0
    wait_until_gone()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_arrive_on_the_device_unchanged():
    dataset = tensor_set(50)
    batches = batch_indices(len(dataset), 8, shuffle=True, seed=1)
    want = list(EpochLoader(dataset, batches))
    device = torch.device("cuda")
    with Prefetcher(EpochLoader(dataset, batches), device) as ahead:
        got = [b for b in ahead]
        assert all(b.images.device.type == "cuda" for b in got)
        got = [type(b)(b.images.cpu(), b.labels.cpu(), b.skipped) for b in got]
    assert_same(got, want)
