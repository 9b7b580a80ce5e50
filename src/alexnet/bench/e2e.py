"""``alexnet bench e2e``: training images/s the way a user trains, against the model alone.

End to end: a prepared store (``alexnet data prepare``; by default of synthetic photos made by
``alexnet data synth`` for the benchmark) read by the ``EpochLoader`` through the
:class:`~alexnet.data.prefetch.Prefetcher`, the training preset on the device (the model's recipe:
for ``alexnet2012`` random 227 crops, mirrors, PCA lighting and the mean image), and
:func:`~alexnet.training.engine.train_one_epoch`'s step: the objects ``alexnet train --data STORE``
builds, from the same resolved config.

Model only: the same loop, model and optimizer, fed one batch already on the device and already
augmented (no loading, no copy, no augmentation). The two take turns in one process, ``--repeat``
passes each; each pass runs ``--steps`` timed steps after one untimed step (the first batch of a
pass has nobody to overlap with). The ratio is the median of per-pass ratios of images/s.

Waiting for data: the time the loop spent in ``next()`` on its batches, as a fraction of the timed
steps' wall time. On CUDA also the device's idle fraction: the gaps between the end of one step's
work and the start of the next on the compute stream (CUDA events), over the pass's device time.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import statistics
import tempfile
import time
from typing import Callable, Iterable, Iterator

import torch

from .. import runtime
from ..cliargs import format_table
from ..data import build_source
from ..data.loader import Batch, EpochLoader, batch_indices
from ..data.prefetch import Prefetcher
from ..data.store import is_store, prepare_store
from ..data.synth import write_folder
from ..distributed import Dist
from ..errors import UserError
from ..provenance import environment
from ..timing import Timed, ratio, sync
from ..training.config import resolve_config
from ..training.engine import TrainState, model_input, train_one_epoch
from ..training.setup import build_model, build_optimizer, build_presets, load_stats

PAPER_EPOCHS, ILSVRC_TRAIN = 90, 1_281_167  # section 5: "roughly 90 cycles" of the 1.2M training images


def make_store(path: str, *, images: int, classes: int, size: int, workers: int) -> str:
    """A prepared store of ``images`` synthetic training photos (and one validation image per class)."""
    per_class = -(-images // classes)
    with tempfile.TemporaryDirectory(prefix="alexnet-e2e-jpegs-") as jpegs:
        folder = os.path.join(jpegs, "photos")
        write_folder(folder, classes=classes, per_class={"train": per_class, "val": 1}, size=size,
                     workers=workers)
        prepare_store(build_source(folder), path, workers=workers, progress=False)
    return path


class _Watched:
    """Hands out the batches of ``batches``, noting how long each ``next()`` waited and, on CUDA,
    recording an event on the compute stream when the step's batch is ready."""

    def __init__(self, batches: Iterable[Batch], device: torch.device):
        self.batches, self.device = batches, device
        self.waits: list[float] = []
        self.starts: list = []

    def __iter__(self) -> Iterator[Batch]:
        it = iter(self.batches)
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            self.waits.append(time.perf_counter() - t0)
            if batch is None:
                return
            if self.device.type == "cuda":
                self.starts.append(torch.cuda.Event(enable_timing=True))
                self.starts[-1].record()
            yield batch


class _Pass:
    """What one pass measured: step end times (host), data waits, device events."""

    def __init__(self, device: torch.device):
        self.device = device
        self.ends: list[float] = []
        self.end_events: list = []

    def after_step(self, state: TrainState) -> bool:
        sync(self.device)  # the step's .item() waited already; this also covers devices where it may not
        self.ends.append(time.perf_counter())
        if self.device.type == "cuda":
            self.end_events.append(torch.cuda.Event(enable_timing=True))
            self.end_events[-1].record()
        return False

    def measured(self, watched: _Watched) -> dict:
        """Wall time, data wait and device idle time of the steps after the first."""
        seconds = self.ends[-1] - self.ends[0]
        wait = sum(watched.waits[1:len(self.ends)])  # the batches of steps 2.. were fetched inside
        out = {"seconds": seconds, "wait_seconds": wait, "device_idle_fraction": None}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            gaps = sum(e.elapsed_time(s) for e, s in zip(self.end_events, watched.starts[1:]))
            busy = self.end_events[0].elapsed_time(self.end_events[-1])
            out["device_idle_fraction"] = gaps / busy if busy > 0 else None
        return out


def bench_e2e(args) -> int:
    """``alexnet bench e2e`` with its parsed options."""
    device = runtime.pick_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    made = None
    if args.data:
        spec = args.data
    else:
        store = args.store or os.path.join(tempfile.mkdtemp(prefix="alexnet-e2e-"), "store")
        made = None if args.store else os.path.dirname(store)
        if not is_store(store):
            t0 = time.perf_counter()
            make_store(store, images=args.images, classes=args.classes, size=args.size, workers=args.workers)
            print(f"made a store of {args.images} synthetic photos in {store} in "
                  f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
        spec = store
    try:
        report = _measure(args, spec, device)
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)
    print(json.dumps(report, indent=2) if args.json else _table(report))
    return 0


def _measure(args, spec: str, device: torch.device) -> dict:
    values = {"model": args.model, "data": spec, "batch_size": args.batch_size, "workers": args.workers,
              "amp": args.amp, "channels_last": args.channels_last, "compile": args.compile,
              "device": str(device), "quiet": True, "stats_images": 1000}
    cfg, source = resolve_config(values, where="bench e2e option")
    model = build_model(cfg, source)
    train_preset, _ = build_presets(cfg, source, model, load_stats(cfg, source, Dist()))
    net = runtime.prepare_model(model, device, channels_last=cfg.channels_last, compile=cfg.compile)
    optimizer = build_optimizer(cfg, model)
    scaler = runtime.grad_scaler(device, cfg.amp)
    generator = torch.Generator().manual_seed(0)
    split = source.split("train")
    batch = cfg.batch_size
    if len(split) < batch:
        raise UserError(f"{spec} has {len(split)} training images, fewer than one batch of {batch}")

    def run(batches: Iterable[Batch], preset, steps: int) -> tuple[_Pass, _Watched]:
        watched, record = _Watched(batches, device), _Pass(device)
        train_one_epoch(net, optimizer, scaler, watched, preset, generator, device, state=TrainState(),
                        amp=cfg.amp, channels_last=cfg.channels_last, after_step=record.after_step)
        if len(record.ends) != steps:
            raise RuntimeError(f"expected {steps} steps, ran {len(record.ends)}")
        return record, watched

    epoch = iter(range(10**9))

    def loader_batches(steps: int) -> list[torch.Tensor]:
        """The next ``steps`` full batches of successive epochs' orders (a small store wraps around)."""
        out: list[torch.Tensor] = []
        while len(out) < steps:
            out += batch_indices(len(split), batch, shuffle=True, seed=cfg.seed, epoch=next(epoch),
                                 drop_last=True)
        return out[:steps]

    def end_to_end(steps: int) -> tuple[_Pass, _Watched]:
        loader = EpochLoader(split, loader_batches(steps), workers=cfg.workers,
                             pin_memory=device.type == "cuda")
        if args.no_prefetch:
            return run(_on_device(loader, device), train_preset, steps)
        with Prefetcher(loader, device) as ahead:
            return run(ahead, train_preset, steps)

    # one batch on the device, augmented once: what the model-only step reuses
    first = next(iter(EpochLoader(split, loader_batches(1))))
    images, labels = first.images.to(device), first.labels.to(device)
    fixed = model_input(train_preset, images, generator, cfg.channels_last)

    def model_only(steps: int) -> tuple[_Pass, _Watched]:
        return run([Batch(images, labels)] * steps, lambda _images, _generator, **_rows: fixed, steps)

    sides: dict[str, Callable[[int], tuple[_Pass, _Watched]]] = {"end to end": end_to_end,
                                                                  "model only": model_only}
    for side in sides.values():  # warm-up (and compilation): untimed
        side(args.warmup + 1)
    timed = {name: Timed(name) for name in sides}
    waits = {name: 0.0 for name in sides}
    idle: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(args.repeat):
        for name in names[r % 2:] + names[:r % 2]:  # alternate which goes first
            record, watched = sides[name](args.steps + 1)
            m = record.measured(watched)
            timed[name].times.append(m["seconds"])
            waits[name] += m["wait_seconds"]
            if m["device_idle_fraction"] is not None:
                idle[name].append(m["device_idle_fraction"])

    images_per_pass = args.steps * batch
    results = {}
    for name in names:
        t = timed[name]
        rate = images_per_pass / t.median
        results[name] = {
            "ms_per_step": 1e3 * t.median / args.steps, "images_per_s": rate,
            "seconds_per_pass": list(t.times),
            "data_wait_fraction": waits[name] / sum(t.times),
            "device_idle_fraction": statistics.median(idle[name]) if idle[name] else None,
            "paper_protocol_hours": PAPER_EPOCHS * ILSVRC_TRAIN / rate / 3600,
        }
    m = environment(device)
    return {
        "bench": "e2e", "model": cfg.model, "data": spec, "train_images": len(split),
        "batch_size": batch, "steps": args.steps, "repeat": args.repeat, "warmup": args.warmup,
        "workers": cfg.workers, "amp": cfg.amp, "channels_last": cfg.channels_last, "compile": cfg.compile,
        "prefetch": not args.no_prefetch,
        "preset": {"crop": train_preset.crop, "flip": train_preset.flip,
                   "lighting": train_preset.lighting is not None,
                   "mean": "image" if train_preset.norm.is_image else "per channel",
                   "resized": train_preset.resized},
        "results": results,
        # per pass: model-only seconds / end-to-end seconds = end-to-end images/s / model-only images/s
        "ratio": ratio(timed["model only"], timed["end to end"]),
        "paper_protocol": f"{PAPER_EPOCHS} epochs x {ILSVRC_TRAIN:,} images",
        "machine": m,
    }


def _on_device(batches: Iterable[Batch], device: torch.device) -> Iterator[Batch]:
    for b in batches:  # what the loop did before the prefetcher: read, then copy, in the step's time
        yield Batch(b.images.to(device), b.labels.to(device), b.skipped)


def _table(r: dict) -> str:
    m = r["machine"]
    where = (f"{m['gpu']} (CUDA {m['cuda']})" if m.get("gpu")
             else f"{m['cpu']} ({m['cpu_count']} cores, {m['torch_threads']} threads)")
    p = r["preset"]
    flags = ", ".join([f"amp {r['amp']}"]
                      + [k.replace("_", "-") for k in ("channels_last", "compile") if r[k]])
    lines = [
        f"alexnet bench e2e: {r['model']}, batch {r['batch_size']}, {flags}, {r['steps']} steps x "
        f"{r['repeat']} passes, {m['device']}: {where}, torch {m['torch']}, {m['date']}",
        f"  data: {r['data']} ({r['train_images']} training images), {r['workers']} loader workers, "
        f"{'prefetcher' if r['prefetch'] else 'no prefetcher'}",
        f"  augmentation on the device: {p['crop']} crops{' (resized)' if p['resized'] else ''}"
        f"{', mirrors' if p['flip'] else ''}{', PCA lighting' if p['lighting'] else ''}, {p['mean']} mean",
        "",
    ]
    rows = [[name, f"{v['ms_per_step']:.1f}", f"{v['images_per_s']:.1f}",
             f"{100 * v['data_wait_fraction']:.1f}%",
             "-" if v["device_idle_fraction"] is None else f"{100 * v['device_idle_fraction']:.1f}%",
             f"{v['paper_protocol_hours']:.1f}"]
            for name, v in r["results"].items()]
    table = format_table(["", "ms/step", "images/s", "waiting for data", "device idle",
                          f"hours, {r['paper_protocol']}"], rows)
    lines += ["  " + line for line in table.splitlines()]
    lines += ["", f"  end to end / model only: {r['ratio']:.2f}x images/s (median of per-pass ratios)"]
    return "\n".join(lines)
