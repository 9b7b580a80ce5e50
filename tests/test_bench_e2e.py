"""``alexnet bench e2e`` on a tiny store: with a fake clock under which every model call lasts ``M``
seconds and every batch read from the store ``D`` seconds, the reported step times, rates, waiting
fractions, ratio and protocol hours are numbers worked out by hand."""

import json
import statistics

import pytest
from helpers.clock import install
from test_bench import model_calls_take, run_main

from alexnet.data.store import StoreImageSet, is_store

M, D = 0.5, 0.2  # seconds: one training forward (the whole step's compute here), one batch read
BATCH, STEPS, REPEAT = 2, 2, 2
PROTOCOL_IMAGES = 90 * 1_281_167  # the paper's 90 epochs of ILSVRC-2012's training images


@pytest.fixture
def slow_reads(monkeypatch):
    """Every model call takes M and every batch read D on a fake clock; returns the clock."""
    clock = install(monkeypatch)
    read = StoreImageSet.get_batch

    def get_batch(self, indices):
        clock.advance(D)
        return read(self, indices)

    monkeypatch.setattr(StoreImageSet, "get_batch", get_batch)
    return clock


def bench(capsys, clock, *args):
    with model_calls_take(clock, lambda module: M):
        out = run_main(capsys, "bench", "e2e", "--batch-size", BATCH, "--steps", STEPS, "--repeat", REPEAT,
                       "--warmup", 0, "--device", "cpu", "--json", *args)
    return json.loads(out)


@pytest.mark.slow
def test_without_prefetching_the_reads_add_to_the_step(tmp_path, capsys, slow_reads):
    """The store is made (synthetic photos, then prepared) where --store says; every step then waits D
    for its batch and computes M."""
    store = tmp_path / "store"
    r = bench(capsys, slow_reads, "--store", store, "--images", 8, "--classes", 2, "--size", 48,
              "--no-prefetch")
    assert is_store(str(store)) and r["train_images"] == 8 and r["data"] == str(store)
    assert (r["model"], r["batch_size"], r["prefetch"]) == ("alexnet2012", BATCH, False)
    # the paper's preset on the device: 227 crops of the 256 store, mirrors, PCA lighting, mean image
    assert r["preset"] == {"crop": 227, "flip": True, "lighting": True, "mean": "image", "resized": False}
    e2e, model = r["results"]["end to end"], r["results"]["model only"]
    assert e2e["seconds_per_pass"] == pytest.approx([STEPS * (M + D)] * REPEAT)
    assert model["seconds_per_pass"] == pytest.approx([STEPS * M] * REPEAT)
    assert e2e["ms_per_step"] == pytest.approx(1e3 * (M + D))
    assert e2e["images_per_s"] == pytest.approx(BATCH / (M + D))
    assert model["images_per_s"] == pytest.approx(BATCH / M)
    assert e2e["data_wait_fraction"] == pytest.approx(D / (M + D))
    assert model["data_wait_fraction"] == pytest.approx(0.0)
    assert r["ratio"] == pytest.approx(M / (M + D))
    assert e2e["paper_protocol_hours"] == pytest.approx(PROTOCOL_IMAGES / (BATCH / (M + D)) / 3600)
    assert e2e["device_idle_fraction"] is None  # measured on CUDA only


@pytest.mark.slow
def test_prefetching_hides_reads_and_the_report_adds_up(tmp_path, capsys, monkeypatch):
    from alexnet.bench.e2e import make_store

    store = make_store(str(tmp_path / "store"), images=8, classes=2, size=48, workers=0)
    clock = install(monkeypatch)
    r = bench(capsys, clock, "--data", store)
    assert r["prefetch"] is True and r["data"] == store
    e2e, model = r["results"]["end to end"], r["results"]["model only"]
    assert model["seconds_per_pass"] == pytest.approx([STEPS * M] * REPEAT)
    # reads take no time on this clock: with the prefetcher nothing is left to wait for
    assert e2e["seconds_per_pass"] == pytest.approx([STEPS * M] * REPEAT)
    assert e2e["data_wait_fraction"] == pytest.approx(0.0)
    want = statistics.median(m / e for m, e in zip(model["seconds_per_pass"], e2e["seconds_per_pass"]))
    assert r["ratio"] == pytest.approx(want) == pytest.approx(1.0)
    assert e2e["images_per_s"] == pytest.approx(BATCH / M)
    assert e2e["paper_protocol_hours"] == pytest.approx(PROTOCOL_IMAGES * M / BATCH / 3600)


@pytest.mark.parametrize("args, words", [
    (["--data", "/no/such/store"], "/no/such/store"),
    (["--steps", "0"], "--steps"),
    (["--images", "0"], "--images"),
])
def test_bad_input(cli, args, words):
    r = cli("bench", "e2e", *args)
    assert r.returncode == 2, r.stderr
    assert words in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
