"""The explorer's JSON API and static page (FastAPI).

Only what it was given is reachable: the runs passed to :func:`discover` by id (never by path), a
fixed list of files inside each run (resolved: a link out of the run folder is refused), the test and
training images of the dataset a run names in its own ``config.json`` or the command line gives
(``--data``; never one a weights file's metadata names), each resolved inside that dataset's folder,
and the sample photographs that ship with scikit-learn. Requests must name this server in their Host
header (:class:`HostCheck`, against DNS rebinding). Uploads are read up to :data:`MAX_UPLOAD` bytes;
their header is read before any pixel is decoded (:data:`MAX_DECODE_BYTES`), at most
:data:`DECODE_SLOTS` images are decoded at once, and they are decoded by the package's own decoder
(:func:`alexnet.data.decode.decode_file`), which refuses decompression bombs, truncated files and
non-images. docs/explorer.md states the threat model.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import ipaddress
import json
import math
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import anyio
import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from ..checkpoint import CheckpointError
from ..data import build_source
from ..data.decode import MAX_IMAGE_PIXELS, ImageDecodeError, decode_file
from ..data.folder import FolderImageSet
from ..data.samples import gallery
from ..errors import UserError
from ..inference.analysis import (
    MAX_EMBED_IMAGES,
    Explainer,
    SplitReport,
    conv1_stats,
    embedding_name,
    project,
    receptive_box,
    split_report,
    subset_indices,
    train_index,
)
from ..inference.load import load_trained, run_weights
from ..training.rundir import run_state
from ..viz import kernel_grid

MAX_UPLOAD = 20 * 1024 * 1024  # bytes
MIN_SIDE = 8  # pixels: a smaller image carries no pattern any layer could respond to
# What decoding an upload may cost at its peak, read from its header before any pixel is decoded
# (see decode_upload): a 12-megapixel photograph (6 bytes a pixel), a 4K screenshot with transparency.
# A PNG file of a quarter of a megabyte can claim 89 megapixels (Pillow's limit): 0.5 to 2.3 GB.
MAX_DECODE_BYTES = 128 * 2**20
# Peak bytes a pixel of each mode costs decode_file (Pillow holds RGB and CMYK at 4 bytes a pixel; a
# grey image is made RGB for a colour model; transparency is composited on white in RGBA; 16-bit grey
# is scaled in float64), measured on 2048- to 4096-pixel squares, rounded up (tests/test_web_security.py
# keeps them true); any other mode costs the most.
DECODE_COST = {"1": 6, "L": 6, "P": 6, "RGB": 6, "YCbCr": 6, "CMYK": 9, "RGBA": 16, "LA": 16, "PA": 16}
MAX_DECODE_COST = 40  # "I;16", "I", "F", ...: 26 to 32 measured
# Uploads decoded at once; others wait their turn (decoding is CPU-bound: more than the cores gain
# nothing). Decoding takes at most DECODE_SLOTS x MAX_DECODE_BYTES of memory.
DECODE_SLOTS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count() or 1))
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")  # the names a local browser uses for this machine
WILDCARD = ("0.0.0.0", "::")  # bind addresses meaning "every interface"
RUN_FILES = ("config.json", "results.json", "metrics.jsonl", "log.txt", "plots/curves.png", "plots/conv1.png",
             "plots/confusion.png")
STATIC = Path(__file__).parent / "static"
_ID = re.compile(r"[^A-Za-z0-9._-]+")


class _Stopped(Exception):
    """Background work given up: the server stops."""


class UploadError(Exception):
    """An upload the page answers with ``status`` and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def shown(text: str) -> str:
    """A name as the page shows it: the bytes of a name that is not UTF-8 (``os.fsdecode`` keeps them
    as surrogates, which JSON cannot carry) as backslash escapes, e.g. ``run\\xff``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name made (e.g. a \\ud800 escape in a JSON file)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_safe(value):
    """``value`` with every string :func:`shown` and every non-finite float None."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class SafeJSON(JSONResponse):
    """JSON that what a run folder holds cannot break: names that are not UTF-8 (a folder, a class, a
    data path) and non-finite numbers, which ``JSONResponse`` refuses, are sent as :func:`_json_safe`
    makes them. The common case pays nothing: the cleaning runs only when rendering fails."""

    def render(self, content) -> bytes:
        try:
            return super().render(content)
        except ValueError:  # UnicodeEncodeError (a lone surrogate), or NaN / infinity
            return super().render(_json_safe(content))


def inside(path: Path, root: Path) -> Path | None:
    """``path`` with every link resolved, when it is a file inside ``root`` (itself resolved); else
    None. A link anywhere on the way that leads out of ``root`` makes it None."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a loop of links
        return None
    return real if real.is_file() and real.is_relative_to(root.resolve()) else None


@dataclass
class Entry:
    """One model on the page: a run folder, a checkpoint, or a plain weights file (``model_name``)."""

    id: str
    path: Path
    run_dir: Path | None
    model_name: str | None = None
    device: str = "cpu"
    data: str | None = None  # --data: the dataset of a weights file or checkpoint (never its metadata)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _explainer: Explainer | None = field(default=None, repr=False)
    _key: tuple | None = field(default=None, repr=False)
    _source: object = field(default=None, repr=False)
    _index: tuple | None = field(default=None, repr=False)  # (the explainer it was built with, the index)
    _report: tuple | None = field(default=None, repr=False)  # (explainer, SplitReport)
    _projections: dict = field(default_factory=dict, repr=False)
    _work: threading.Lock = field(default_factory=threading.Lock, repr=False)  # index and report building
    _warming: threading.Thread | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    progress: dict = field(default_factory=lambda: {"state": "waiting", "done": 0, "total": 0})

    @property
    def name(self) -> str:
        """The run folder's or file's name as the page shows it (see :func:`shown`)."""
        return shown(self.path.name)

    def file(self, name: str) -> Path | None:
        """The run's file ``name`` (e.g. ``plots/curves.png``), resolved; None when it is not there or
        when it links out of the run folder (:func:`inside`)."""
        return None if self.run_dir is None else inside(self.run_dir / name, self.run_dir)

    def checkpoint(self) -> Path | None:
        """The file the model loads from (None while a run has not saved one yet): of a run, the
        checkpoint that stands for it (:meth:`weights`)."""
        if self.run_dir is not None and self.path == self.run_dir:
            return self.weights()[0]
        return self.path

    def weights(self) -> tuple[Path | None, str | None]:
        """Of a run, the checkpoint the page shows and why, by the rule training reports by
        (:func:`alexnet.inference.load.run_weights`): the latest weights while it trains or where best.pt
        was chosen on the split it reports, else best.pt; (None, None) before its first checkpoint."""
        if self.run_dir is None or self.path != self.run_dir:
            return self.path, None
        if not any((self.run_dir / "checkpoints" / n).is_file() for n in ("best.pt", "last.pt")):
            return None, None
        results = self.read_json("results.json")  # read through file(): a link out of the run is not followed
        split = results.get("test_split") if isinstance(results, dict) else None
        try:
            path, choice = run_weights(self.run_dir, split if isinstance(split, str) else None)
        except CheckpointError as e:
            raise UploadError(409, f"{self.id}: {e}") from None
        name = path.relative_to(self.run_dir).as_posix()
        if (found := self.file(name)) is None:
            raise UploadError(403, f"{self.id}: {name} links outside the run folder: not loaded")
        return found, f"{path.name}, {choice}"

    def dataset(self) -> str | None:
        """The dataset whose images the page shows: the one the run records in its ``config.json``,
        else ``--data``. A weights file's or checkpoint's own metadata never chooses it: a file from
        elsewhere could name any folder of this machine."""
        recorded = (self.read_json("config.json") or {}).get("config", {})
        spec = recorded.get("data") if isinstance(recorded, dict) else None
        return spec if isinstance(spec, str) else self.data

    def explainer(self) -> Explainer:
        """The loaded model; loaded again when its checkpoint file changed (a run still training)."""
        ckpt = self.checkpoint()
        if ckpt is None:
            raise UploadError(409, f"{self.id} has no checkpoint yet: it appears after the first epoch")
        st = ckpt.stat()
        key = (str(ckpt), st.st_size, st.st_mtime_ns)
        with self._lock:
            if self._key != key:
                path = self.path if self.model_name else ckpt
                self._explainer = Explainer(load_trained(str(path), model_name=self.model_name),
                                            self.device)
                self._key, self._index, self._report, self._projections = key, None, None, {}
                self.progress = {"state": "waiting", "done": 0, "total": 0}
            return self._explainer

    @property
    def version(self) -> str | None:
        """A token that changes with the checkpoint file (its size and modification time)."""
        ckpt = self.checkpoint()
        if ckpt is None:
            return None
        st = ckpt.stat()
        return f"{st.st_size:x}-{st.st_mtime_ns:x}"

    def source(self):
        """The dataset of :meth:`dataset` (None without one, or for data that is not here any more)."""
        spec = self.dataset()
        if spec is None:
            return None
        with self._lock:
            if self._source is None:
                try:
                    self._source = build_source(spec)
                except UserError:
                    self._source = False
        return self._source or None

    def split(self, name: str):
        """Split ``name`` of :meth:`source`; None when there is no such split (or no dataset)."""
        source = self.source()
        if source is None or name not in source.splits:
            return None
        try:
            return source.split(name)
        except UserError:
            return None

    def index(self, wait: bool = True):
        """The fc7 index of the training split (built once per checkpoint, cached in the run); None
        without training images, or while it is being built and ``wait`` is false."""
        ex = self.explainer()
        if self._index is None and not wait:
            self.warm()
            return None
        split = self.split("train")
        if split is None:
            self.progress = {"state": "none", "done": 0, "total": 0}
            return None
        with self._work:
            if self._index is None or self._index[0] is not ex:
                def step(done, total):
                    self._check_stop()
                    self.progress = {"state": "building", "done": done, "total": total}

                self.progress = {"state": "building", "done": 0, "total": min(len(split), MAX_EMBED_IMAGES)}
                index = train_index(ex, split, self.checkpoint(), self.run_dir, progress=step)
                self._index = (ex, index)
                self.progress = {"state": "ready", "done": len(index), "total": len(index)}
            return self._index[1]

    def report(self, wait: bool = True) -> SplitReport | None:
        """The model's answers on its test split (error analysis, the out-of-distribution range); None
        without test images, or while it is being made and ``wait`` is false."""
        ex = self.explainer()
        if self._report is None and not wait:
            self.warm()
            return None
        split = self.split("test")
        if split is None:
            return None
        index = self.index()
        with self._work:
            if self._report is None or self._report[0] is not ex:
                self._report = (ex, split_report(ex, split, index, progress=lambda *_: self._check_stop()))
            return self._report[1]

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Stopped(f"{self.id}: the server is stopping")

    def stop(self, timeout: float = 30.0) -> None:
        """End the background work (between two batches) and wait for it: the server is stopping."""
        self._stop.set()
        if self._warming is not None:
            self._warming.join(timeout)

    def warm(self) -> None:
        """Load the model and build its index and test report in a background thread, once per
        checkpoint, so that the first prediction does not wait for them."""
        with self._lock:
            if self._warming is not None and self._warming.is_alive():
                return
            self._warming = threading.Thread(target=self._warm, name=f"warm-{self.id}", daemon=True)
            self._warming.start()

    def _warm(self) -> None:
        try:
            self.index()
            self.report()
        except _Stopped:
            self.progress = {"state": "waiting", "done": 0, "total": 0}
        except Exception as e:  # noqa: BLE001 - the page asks again and gets the error then
            self.progress = {"state": "error", "done": 0, "total": 0, "detail": str(e)[:300]}

    def read_json(self, name: str):
        path = self.file(name)
        if path is None:
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):  # a file being replaced: the next poll sees it
            return None

    def metrics(self) -> list[dict]:
        path = self.file("metrics.jsonl")
        try:
            text = "" if path is None else path.read_text()
        except (OSError, ValueError):  # replaced while read, or not UTF-8: nothing to plot
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a half-written last line
                break
        return out

    def status(self) -> str:
        if self.run_dir is None:
            return "weights"
        return run_state(self.run_dir)  # training, finished, stopped, diverged, failed or killed


def _is_run(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "checkpoints").is_dir()


def _found(paths: list[str], *, strict: bool) -> list[tuple[Path, Path | None]]:
    """(path, run folder or None) of every model under ``paths``; a path that is not there is an error
    when ``strict``, else skipped (a run folder deleted while serving)."""
    found: list[tuple[Path, Path | None]] = []
    for text in paths:
        p = Path(text).expanduser()
        if not p.exists():
            if strict:
                raise UserError(f"no such run folder or file: {text}")
            continue
        if p.is_dir() and _is_run(p):
            found.append((p, p))
        elif p.is_dir():
            try:
                found += [(d, d) for d in sorted(p.iterdir()) if d.is_dir() and _is_run(d)]
            except OSError:  # the folder went away or cannot be read now: nothing new in it
                continue
        else:
            run = p.parent.parent if p.parent.name == "checkpoints" and _is_run(p.parent.parent) else None
            found.append((p, run))
    return found


class Catalog(list):
    """The entries of the paths given to :func:`discover`, in order, and :meth:`refresh`, which looks
    at those paths again: a run started while the server runs is added (with an id of its own), a
    run folder deleted is dropped. An entry keeps its id and its loaded model for as long as it exists."""

    RESCAN_SECONDS = 1.0  # at most one look at the folders a second, however often the page asks

    def __init__(self, paths: list[str], model_name: str | None, data: str | None):
        super().__init__()
        self.paths, self.model_name, self.data = list(paths), model_name, data
        self._lock = threading.Lock()
        self._add(_found(self.paths, strict=True))
        self._scanned = time.monotonic()

    def _add(self, found: list[tuple[Path, Path | None]]) -> None:
        known = {e.path for e in self}
        seen = {e.id for e in self}
        for path, run in found:
            if path.resolve() in known:
                continue
            base = _ID.sub("-", path.name if path.is_dir() else f"{path.parent.parent.name}-{path.stem}"
                           if run else path.stem).strip("-.") or "model"
            rid, n = base, 2
            while rid in seen:
                rid, n = f"{base}-{n}", n + 1
            seen.add(rid)
            known.add(path.resolve())
            device = self[0].device if self else "cpu"
            self.append(Entry(rid, path.resolve(), run.resolve() if run else None,
                              self.model_name if run is None else None, device=device, data=self.data))

    def refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._scanned < self.RESCAN_SECONDS:
                return
            self._add(_found(self.paths, strict=False))
            self[:] = [e for e in self if e.path.exists()]
            self._scanned = time.monotonic()

    def get(self, rid: str) -> Entry | None:
        for e in self:
            if e.id == rid:
                return e
        return None


def discover(paths: list[str], *, model_name: str | None = None, data: str | None = None) -> Catalog:
    """Entries for run folders, folders of runs, checkpoints and (with ``model_name``) weight files;
    ``data`` is the dataset of those that record none of their own (see :meth:`Entry.dataset`)."""
    return Catalog(paths, model_name, data)


def png(array: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 1|3) -> PNG bytes."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.contiguous().numpy().tobytes()).decode("ascii")


def _to_uint8(t: torch.Tensor) -> torch.Tensor:
    lo, hi = float(t.min()), float(t.max())
    return ((t - lo) * (255.0 / (hi - lo)) if hi > lo else torch.zeros_like(t)).round().clamp(0, 255).byte()


class _Named(io.BytesIO):
    """Upload bytes that print as the uploaded file's name in decoder messages."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label

    def __repr__(self) -> str:  # Pillow's "cannot identify image file %r"
        return repr(self.label)


def _header(data: bytes, size: int, channels: int) -> tuple[dict, int | None]:
    """What the file's header says (format, mode, size) and what decoding it will cost, in bytes (see
    :data:`DECODE_COST`): a JPEG is decoded at the smallest of 1/8, 1/4, 1/2 or full scale that keeps
    both sides >= ``size`` (``Image.draft``, as :func:`decode_file` does). ``({}, None)`` for a file
    Pillow cannot identify and None for a decompression bomb: the decoder refuses those with its own
    message, also before decoding. No pixel is decoded here."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            info = {"format": img.format, "mode": img.mode, "width": img.size[0], "height": img.size[1]}
            if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:
                return info, None
            if img.format == "JPEG":
                img.draft("L" if channels == 1 else "RGB", (size, size))
            cost = 16 if "transparency" in img.info else DECODE_COST.get(img.mode, MAX_DECODE_COST)
            return info, img.size[0] * img.size[1] * cost
    except Exception:  # noqa: BLE001 - not an image, or a bomb
        return {}, None


def decode_upload(data: bytes, filename: str, size: int, channels: int) -> tuple[torch.Tensor, dict]:
    """Decode uploaded bytes like ``alexnet predict`` decodes a file; raise :class:`UploadError`.

    An image whose decoding would take more than :data:`MAX_DECODE_BYTES` is refused (413) from its
    header, before any pixel is decoded."""
    name = Path(filename or "upload").name[:80] or "upload"
    if not data:
        raise UploadError(422, f"{name}: the file is empty")
    info, cost = _header(data, size, channels)
    if cost is not None and cost > MAX_DECODE_BYTES:
        most = MAX_DECODE_BYTES / (cost / (info["width"] * info["height"])) / 1e6
        jpeg = "" if info["format"] == "JPEG" else "a JPEG (decoded at reduced scale) or "
        raise UploadError(413, f"{name}: {info['width']}x{info['height']} pixels is more than this page "
                               f"decodes ({info['mode']} {info['format']}: up to {most:.1f} megapixels; "
                               f"the network sees {size}x{size}); send {jpeg}a smaller image")
    try:
        arr, (w, h) = decode_file(_Named(data, name), size, channels)  # as load_image: same pixels as predict
    except ImageDecodeError as e:
        raise UploadError(422, str(e)) from None
    if min(w, h) < MIN_SIDE:
        raise UploadError(422, f"{name}: {w}x{h} pixels is too small to show anything; "
                               f"send an image of at least {MIN_SIDE}x{MIN_SIDE} pixels")
    info.setdefault("width", w)
    info.setdefault("height", h)
    if info.get("mode") == "CMYK":
        info["note"] = "a CMYK image: converted to RGB before the network saw it"
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), info


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 as soon as it passes :data:`MAX_UPLOAD`."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_UPLOAD + 64 * 1024:
        raise UploadError(413, f"the upload is {int(declared) / 2**20:.1f} MB; the limit is "
                               f"{MAX_UPLOAD // 2**20} MB")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_UPLOAD + 64 * 1024:  # room for the multipart envelope
            raise UploadError(413, f"the upload is over the limit of {MAX_UPLOAD // 2**20} MB")
        chunks.append(chunk)
    return b"".join(chunks)


async def upload_bytes(request: Request) -> tuple[bytes, str]:
    """The image of a raw-body upload, or of the ``file`` field of a multipart form."""
    body = await read_body(request)
    ctype = request.headers.get("content-type", "")
    name = unquote(request.headers.get("x-filename", "upload"))
    if ctype.startswith("multipart/form-data"):
        async def replay():  # the form parser reads the body already read (and capped) above
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay).form(max_files=1, max_fields=4)
        item = form.get("file")
        if item is None or isinstance(item, str):
            raise UploadError(422, "the form has no file field named 'file'")
        body, name = await item.read(), item.filename or name
    if len(body) > MAX_UPLOAD:
        raise UploadError(413, f"the upload is {len(body) / 2**20:.1f} MB; the limit is "
                               f"{MAX_UPLOAD // 2**20} MB")
    return body, name


def explanation_json(entry: Entry, image: torch.Tensor, *, k: int, target: int | None, maps: bool,
                     neighbours: int, label: int | None = None, wait: bool = True) -> dict:
    """The predict endpoint's answer for one uint8 (C, S, S) image (``label``: its true class, if known).
    Without ``wait``, an index still being built is not waited for: the answer says how far it is."""
    ex = entry.explainer()
    loaded = ex.loaded
    try:
        out = ex.explain(image, k=k, target=target, maps=maps, cam=True)
    except ValueError as e:
        raise UploadError(422, str(e)) from None
    crop = out.crop.permute(1, 2, 0).numpy()
    answer = {
        "model": entry.id,
        "crop": {"width": crop.shape[1], "height": crop.shape[0], "channels": crop.shape[2],
                 "png": base64.b64encode(png(crop)).decode("ascii")},
        "top": out.top,
        "target": {"index": out.cam_class, "name": None if out.cam_class is None
                   else loaded.class_names[out.cam_class]},
        "cam": None if out.cam is None else {"height": out.cam.shape[0], "width": out.cam.shape[1],
                                            "layer": out.cam_layer,
                                            "data": _b64((out.cam * 255).round().byte())},
        "layers": [{"name": m.name, "kind": m.kind, "channels": m.maps.shape[0], "height": m.maps.shape[1],
                    "width": m.maps.shape[2], "order": m.order.tolist(),
                    "strength": [round(v, 5) for v in m.strength.tolist()],
                    "min": float(m.maps.min()), "max": float(m.maps.max()), "data": _b64(_to_uint8(m.maps))}
                   for m in out.layers],
        "neighbours": [],
    }
    if out.cam is None:
        answer["cam_note"] = "not available: every map of this model is 1x1, so no layer says where"
    if label is not None:
        answer["label"] = {"index": label, "name": loaded.class_names[label],
                           "probability": float(out.probs[label])}
    if neighbours > 0:
        index = entry.index(wait=wait)
        if index is None and entry.progress["state"] in ("none", "error"):
            answer["neighbours_note"] = "no training images: this model came without its dataset" \
                if entry.progress["state"] == "none" else f"the index failed: {entry.progress.get('detail')}"
        elif index is None:
            answer["neighbours_pending"] = dict(entry.progress)
        else:
            found = index.search(out.embedding, neighbours)
            answer["neighbours"] = [
                {"index": n.index, "label": n.label, "name": loaded.class_names[n.label],
                 "distance": n.distance, "url": f"/api/runs/{entry.id}/images/train/{n.index}.png"}
                for n in found]
            answer["neighbours_total"] = len(index)
            report = entry.report(wait=wait)
            threshold = None if report is None else report.unlike()
            if found and threshold is not None:
                answer["ood"] = {"distance": found[0].distance, "threshold": threshold,
                                 "unlike": found[0].distance > threshold, "test_images": len(report.indices)}
    return answer


def run_card(entry: Entry) -> dict:
    """What the model picker shows: status, recipe, data, results and, once loaded, the layers."""
    cfg = (entry.read_json("config.json") or {}).get("config", {})
    results = entry.read_json("results.json")
    keys = ("recipe", "model", "model_opts", "data", "epochs", "batch_size", "optimizer", "lr", "momentum",
            "weight_decay", "schedule", "seed")
    scores = ("test_top1_accuracy", "test_top5_accuracy", "test_top1_error", "test_top5_error", "test_images",
              "tta", "train_seconds", "test_split", "topk", "weights")
    card = {"id": entry.id, "status": entry.status(), "path": entry.name,
            "model": cfg.get("model") or entry.model_name, "data": entry.dataset(),
            "recipe": cfg.get("recipe"), "epochs": cfg.get("epochs"),
            "config": {k: cfg[k] for k in keys if k in cfg},
            "results": None if results is None else {k: results.get(k) for k in scores},
            "files": [f for f in RUN_FILES if entry.file(f) is not None]}
    try:  # a run whose weights cannot be shown is still listed, saying why
        card["version"], card["weights"] = entry.version, entry.weights()[1]
    except UploadError as e:
        card["version"], card["weights"] = None, f"not shown: {e}"
    return card


def full_card(entry: Entry) -> dict:
    card = run_card(entry)
    if entry.checkpoint() is None:
        card["loaded"] = False
        return card
    ex = entry.explainer()
    entry.warm()  # the neighbour index and the test report, before the first prediction asks for them
    model, loaded = ex.model, ex.loaded
    test = entry.split("test")
    card.update({
        "loaded": True, "model": model.name, "num_classes": model.num_classes, "embed_dim": model.embed_dim,
        "embedding": embedding_name(model), "class_names": loaded.class_names,
        "input": {"channels": ex.channels, "base_size": ex.base_size, "crop": ex.preset.crop},
        "summary": ex.summary().to_dict(), "towers": getattr(model, "towers", 1),
        "conv1": conv1_stats(model),
        "layers": [{"name": la.name, "kind": la.kind, "caption": la.caption, "about": la.about,
                    "shape": list(la.shape), "receptive_field": la.rf[0] if la.rf[0] < 10**6 else None,
                    "inputs": None if la.conv is None else la.conv.in_channels // la.conv.groups}
                   for la in ex.layers],
        "cam_layer": None if ex.cam_layer is None else ex.cam_layer.name,
        "test_images": 0 if test is None else len(test), "index": dict(entry.progress),
    })
    return card


def errors_json(entry: Entry) -> dict:
    """The confusion matrix of the run's test split and every answer in it, once the report is made."""
    ex = entry.explainer()
    report = entry.report(wait=False)
    if report is None:
        if entry.split("test") is None:
            raise UploadError(404, f"{entry.id} has no test images: no error analysis")
        return {"state": "building", "progress": dict(entry.progress)}
    k = ex.model.num_classes
    return {"state": "ready", "class_names": ex.loaded.class_names, "confusion": report.confusion(k).tolist(),
            "total": len(entry.split("test")), "shown": len(report.indices),
            "correct": int((report.predicted == report.labels).sum()), "unlike": report.unlike(),
            "images": [[i, y, p, round(c, 4), round(t, 4)] for i, y, p, c, t in zip(
                report.indices.tolist(), report.labels.tolist(), report.predicted.tolist(),
                report.confidence.tolist(), report.true_probability.tolist())]}


def _host_name(header: str) -> str:
    """The host of a Host header (``name``, ``name:port``, ``[v6]:port``) in lower case, without the
    brackets of an IPv6 address or a final dot; "" when it is not a host and port."""
    try:
        parts = urlsplit(f"//{header}")
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return ""
    return (parts.hostname or "").rstrip(".")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class HostCheck:
    """Refuse (403) a request whose Host header names another server: against DNS rebinding, where a
    page of another site, its name re-pointed at this machine, reads this server as its own origin
    (the check Jupyter makes). Accepted: the bound address, the local names (:data:`LOCAL_NAMES`, every
    loopback address), the names of ``allowed`` (``*``: any); on a wildcard bind (:data:`WILDCARD`)
    also any IP address (a page reached by address cannot be re-pointed) and this machine's name."""

    def __init__(self, app, *, host: str, allowed: tuple[str, ...] = ()):
        self.app = app
        self.wildcard = host in WILDCARD
        names = {*LOCAL_NAMES, *allowed, socket.gethostname() if self.wildcard else host}
        self.names = {n.lower().strip("[]").rstrip(".") for n in names}
        self.ips = {ip for n in self.names if (ip := _ip(n)) is not None}
        self.any = "*" in allowed
        self.said = ", ".join(sorted(self.names)) + (" and any IP address" if self.wildcard else "")

    def accepts(self, header: str | None) -> str | None:
        """None when ``header`` is accepted, else why not."""
        if self.any:
            return None
        name = _host_name(header or "")
        if not name:
            return "the request has no valid Host header"
        ip = _ip(name)
        if name in self.names or ip is not None and (ip.is_loopback or self.wildcard or ip in self.ips):
            return None
        return (f"this server does not answer for host {name!r} (it answers for {self.said}); start it "
                f"with --allow-host {name} to allow that name")

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            why = self.accepts(Headers(scope=scope).get("host"))
            if why is not None:
                await SafeJSON({"detail": why}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(entries: list[Entry], *, device: str = "cpu", host: str = "127.0.0.1",
               allow_hosts: tuple[str, ...] = ()) -> FastAPI:
    """The explorer: the page at ``/``, its files under ``/static``, the JSON API under ``/api``.
    ``host`` is the address it is bound to and, with ``allow_hosts``, what :class:`HostCheck` accepts."""
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        first = next((e for e in entries if e.status() != "training"), None)
        with contextlib.suppress(UploadError):  # weights it cannot show: the page says why when asked
            if first is not None and first.checkpoint() is not None:
                first.warm()  # the model the page opens with: its index is built while the page loads
        yield
        for e in list(entries):  # no thread left computing when the process ends
            e.stop()

    app = FastAPI(title="alexnet explorer", docs_url=None, redoc_url=None, openapi_url=None,
                  default_response_class=SafeJSON, lifespan=lifespan)
    app.add_middleware(HostCheck, host=host, allowed=tuple(allow_hosts))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for e in entries:
        e.device = device
    refresh = getattr(entries, "refresh", lambda: None)  # a Catalog looks at its folders again
    photos = gallery()
    decoding = anyio.CapacityLimiter(DECODE_SLOTS)

    async def decoded(fn, *args):
        """``fn(*args)`` in a worker thread once one of the :data:`DECODE_SLOTS` is free."""
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=decoding)

    @app.exception_handler(UploadError)
    async def _upload_error(_request, exc: UploadError):
        return SafeJSON({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def _unexpected(_request, exc: Exception):  # a message for the page; uvicorn logs the traceback
        return SafeJSON({"detail": f"internal error: {type(exc).__name__}: {str(exc)[:300]}"},
                        status_code=500)

    @app.exception_handler(UserError)
    async def _user_error(_request, exc: UserError):  # e.g. a checkpoint that does not load
        return SafeJSON({"detail": str(exc)}, status_code=422)

    def get(rid: str) -> Entry:
        found = next((e for e in entries if e.id == rid), None)
        if found is None:
            refresh()  # a run started since the last look
            found = next((e for e in entries if e.id == rid), None)
        if found is None:
            raise HTTPException(404, f"no model named {rid!r} on this page")
        return found

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/runs")
    def runs():
        refresh()
        return [run_card(e) for e in entries]

    @app.get("/api/runs/{rid}")
    async def card(rid: str):
        return await run_in_threadpool(full_card, get(rid))

    @app.get("/api/runs/{rid}/metrics")
    def metrics(rid: str, since: int = 0):
        e = get(rid)
        history = e.metrics()
        cfg = (e.read_json("config.json") or {}).get("config", {})
        return {"status": e.status(), "epochs": cfg.get("epochs"), "version": e.version,
                "history": [r for r in history if r.get("epoch", 0) > since]}

    @app.get("/api/runs/{rid}/index")
    def index_progress(rid: str):
        e = get(rid)
        if e.checkpoint() is not None and e.progress["state"] == "waiting":
            e.warm()
        return dict(e.progress)

    @app.get("/api/runs/{rid}/errors")
    async def errors(rid: str):
        return await run_in_threadpool(errors_json, get(rid))

    @app.get("/api/runs/{rid}/projection")
    async def projection(rid: str, method: str = "pca"):
        e = get(rid)
        if method not in ("pca", "tsne"):
            raise HTTPException(422, f"unknown projection {method!r}: pca or tsne")
        report = await run_in_threadpool(e.report)
        if report is None:
            raise HTTPException(404, f"{e.id} has no test images to project")
        if method not in e._projections:  # t-SNE takes seconds: once per checkpoint
            e._projections[method] = await run_in_threadpool(project, report.embeddings, method)
        xy = e._projections[method]
        return {"method": method, "embedding": embedding_name(e.explainer().model),
                "points": [[round(a, 4), round(b, 4), i, y, p] for (a, b), i, y, p in zip(
                    xy.tolist(), report.indices.tolist(), report.labels.tolist(), report.predicted.tolist())]}

    @app.get("/api/runs/{rid}/examples/{layer}/{channel}")
    async def examples(rid: str, layer: str, channel: int):
        e = get(rid)
        ex = await run_in_threadpool(e.explainer)
        try:
            found = ex.layer(layer)
        except ValueError as err:
            raise HTTPException(404, str(err)) from None
        index = await run_in_threadpool(e.index)
        if index is None or layer not in index.examples:
            raise HTTPException(404, f"no training images of {e.id} to find what excites {layer}")
        ex_layer = index.examples[layer]
        if not 0 <= channel < ex_layer["values"].shape[0]:
            raise HTTPException(404, f"{layer} has {ex_layer['values'].shape[0]} maps, not {channel + 1}")
        width = found.shape[2]
        out = []
        for j, (value, image, pos) in enumerate(zip(ex_layer["values"][channel].tolist(),
                                                     ex_layer["images"][channel].tolist(),
                                                     ex_layer["positions"][channel].tolist())):
            y, x = divmod(pos, width)
            out.append({"image": image, "value": value, "y": y, "x": x,
                        "box": list(receptive_box(found, y, x, ex.side)),
                        "url": f"/api/runs/{rid}/examples/{layer}/{channel}/{j}.png"})
        return {"layer": layer, "channel": channel, "receptive_field": found.rf[0], "examples": out}

    @app.get("/api/runs/{rid}/examples/{layer}/{channel}/{j}.png")
    async def example_png(rid: str, layer: str, channel: int, j: int):
        e = get(rid)
        listed = (await examples(rid, layer, channel))["examples"]
        if not 0 <= j < len(listed):
            raise HTTPException(404, f"{layer} map {channel} has {len(listed)} examples, not {j + 1}")
        item = listed[j]
        image = await decoded(split_image, e, "train", item["image"])
        ex = e.explainer()
        top, left, bottom, right = item["box"]
        patch = ex.crop(image)[:, top:bottom + 1, left:right + 1]
        return Response(png(patch.permute(1, 2, 0).numpy()), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/runs/{rid}/files/{name:path}")
    def run_file(rid: str, name: str):
        e = get(rid)
        if name not in RUN_FILES or e.run_dir is None or not (e.run_dir / name).is_file():
            raise HTTPException(404, f"{name!r} is not a file this page serves")
        path = e.file(name)
        if path is None:
            raise HTTPException(403, f"{name!r} of {e.id} links outside its run folder: not served")
        return FileResponse(path)

    @app.get("/api/runs/{rid}/conv1/{tower}.png")
    async def conv1_png(rid: str, tower: int):
        ex = await run_in_threadpool(get(rid).explainer)
        conv = ex.layers[0].conv if ex.layers and ex.layers[0].conv is not None else None
        if conv is None:
            raise HTTPException(404, "this model's first layer is not a convolution")
        halves = conv.weight.detach().chunk(getattr(ex.model, "towers", 1))
        if not 1 <= tower <= len(halves):
            raise HTTPException(404, f"the model has {len(halves)} tower(s)")
        grid = kernel_grid(halves[tower - 1], columns=16)
        return Response(png((grid * 255).round().astype(np.uint8)), media_type="image/png")

    @app.get("/api/runs/{rid}/kernel/{layer}/{index}.png")
    async def kernel_png(rid: str, layer: str, index: int):
        ex = await run_in_threadpool(get(rid).explainer)
        try:
            w = ex.kernel(layer, index)  # (C, kh, kw)
        except ValueError as err:
            raise HTTPException(404, str(err)) from None
        image = w.permute(1, 2, 0) if w.shape[0] == 3 else w.mean(0, keepdim=True).permute(1, 2, 0)
        return Response(png(_to_uint8(image).numpy()), media_type="image/png",
                        headers={"X-Kernel-Shape": "x".join(map(str, w.shape))})

    def split_of(e: Entry, split: str):
        source = e.source()
        if split not in ("train", "test") or source is None:
            raise HTTPException(404, f"no {split!r} images for {e.id}")
        try:
            return source.split(split)
        except UserError as err:
            raise HTTPException(404, str(err)) from None

    def split_image(e: Entry, split: str, index: int) -> torch.Tensor:
        images = split_of(e, split)
        if not 0 <= index < len(images):
            raise HTTPException(404, f"the {split} split has {len(images)} images, not {index + 1}")
        if isinstance(images, FolderImageSet) and inside(Path(images.path(index)), Path(images.root)) is None:
            raise HTTPException(403, f"{e.id}: {split} image {index} is not a file inside the dataset's "
                                     f"folder {shown(images.root)} (a link out of it?): not served")
        image, _ = images[index]
        if image is None:
            raise HTTPException(422, f"{images.describe(index)} cannot be decoded")
        return image

    @app.get("/api/runs/{rid}/images/{split}/{index}.png")
    async def image_png(rid: str, split: str, index: int):
        image = await decoded(split_image, get(rid), split, index)
        return Response(png(image.permute(1, 2, 0).numpy()), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/runs/{rid}/testset")
    async def testset(rid: str, limit: int = 40):
        e = get(rid)
        images = await run_in_threadpool(split_of, e, "test")
        names = e.explainer().loaded.class_names
        picks = subset_indices(len(images), max(1, min(limit, 200))).tolist()
        return [{"index": i, "label": int(images.targets[i]), "name": names[int(images.targets[i])],
                 "url": f"/api/runs/{rid}/images/test/{i}.png"} for i in picks]

    @app.get("/api/gallery")
    def gallery_list():
        return [{"name": n, "url": f"/api/gallery/{n}"} for n in photos]

    @app.get("/api/gallery/{name}")
    def gallery_file(name: str):
        if name not in photos:
            raise HTTPException(404, f"no sample image named {name!r}")
        return FileResponse(photos[name], media_type="image/jpeg")

    async def image_of(request: Request, e: Entry, ex: Explainer, test: int | None, sample: str | None):
        """The image a request names: a test image by index, a sample photo by name, or its body;
        with what is known of it and its true class (a test image's label, else None)."""
        if test is not None:
            image = await decoded(split_image, e, "test", test)
            return image, {"source": f"test image {test}"}, int(split_of(e, "test").targets[test])
        if sample is not None:
            if sample not in photos:
                raise HTTPException(404, f"no sample image named {sample!r}")
            image, info = await decoded(decode_upload, photos[sample].read_bytes(), sample, ex.base_size,
                                        ex.channels)
            return image, info, None
        data, name = await upload_bytes(request)
        image, info = await decoded(decode_upload, data, name, ex.base_size, ex.channels)
        return image, info, None

    @app.post("/api/runs/{rid}/predict")
    async def predict(request: Request, rid: str, k: int = 5, target: int | None = None, maps: bool = True,
                      neighbours: int = 8, test: int | None = None, sample: str | None = None,
                      wait: bool = True):
        e = get(rid)
        started = time.perf_counter()
        ex = await run_in_threadpool(e.explainer)
        image, info, label = await image_of(request, e, ex, test, sample)
        answer = await run_in_threadpool(explanation_json, e, image, k=max(1, min(k, 20)), target=target,
                                         maps=maps, neighbours=max(0, min(neighbours, 32)), label=label,
                                         wait=wait)
        answer["input"] = info
        answer["ms"] = round(1000 * (time.perf_counter() - started), 1)
        return answer

    @app.post("/api/runs/{rid}/unit")
    async def unit(request: Request, rid: str, layer: str, channel: int, y: int, x: int,
                   test: int | None = None, sample: str | None = None):
        e = get(rid)
        ex = await run_in_threadpool(e.explainer)
        image, _, _ = await image_of(request, e, ex, test, sample)
        try:
            return await run_in_threadpool(ex.unit, image, layer, channel, y, x)
        except ValueError as err:
            raise HTTPException(404, str(err)) from None

    @app.get("/api/compare")
    def compare(ids: str = ""):
        refresh()
        chosen = [get(i) for i in ids.split(",") if i] or list(entries)
        rows = []
        for e in chosen:
            row = run_card(e)
            row["history"] = [{k: r.get(k) for k in ("epoch", "train_loss", "train_top1", "val_loss",
                                                     "val_top1", "val_top5", "lr")}
                              for r in e.metrics()]
            rows.append(row)
        return rows

    app.state.entries = entries
    return app
