"""The explorer's JSON API and static page (FastAPI).

Only what it was given is reachable: the runs passed to :func:`discover` by id (never by path), a
fixed list of files inside each run, the test and training images of a run's own dataset, and the
sample photographs that ship with scikit-learn. Uploads are read up to :data:`MAX_UPLOAD` bytes and
decoded by the package's own decoder (:func:`alexnet.data.decode.decode_file`), which refuses
decompression bombs, truncated files and non-images.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..data import build_source
from ..data.decode import ImageDecodeError, decode_file
from ..data.samples import gallery
from ..errors import UserError
from ..inference.analysis import Explainer, conv1_stats, subset_indices, train_index
from ..inference.load import load_trained
from ..models.summary import summarize
from ..viz import kernel_grid

MAX_UPLOAD = 20 * 1024 * 1024  # bytes
MIN_SIDE = 8  # pixels: a smaller image carries no pattern any layer could respond to
RUN_FILES = ("config.json", "results.json", "metrics.jsonl", "log.txt", "plots/curves.png", "plots/conv1.png",
             "plots/confusion.png")
STATIC = Path(__file__).parent / "static"
_ID = re.compile(r"[^A-Za-z0-9._-]+")


class UploadError(Exception):
    """An upload the page answers with ``status`` and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Entry:
    """One model on the page: a run folder, a checkpoint, or a plain weights file (``model_name``)."""

    id: str
    path: Path
    run_dir: Path | None
    model_name: str | None = None
    device: str = "cpu"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _explainer: Explainer | None = field(default=None, repr=False)
    _key: tuple | None = field(default=None, repr=False)
    _source: object = field(default=None, repr=False)
    _index: object = field(default=None, repr=False)

    def checkpoint(self) -> Path | None:
        """The file the model loads from (None while a run has not saved one yet)."""
        if self.run_dir is not None and self.path == self.run_dir:
            for name in ("best.pt", "last.pt"):
                if (self.run_dir / "checkpoints" / name).is_file():
                    return self.run_dir / "checkpoints" / name
            return None
        return self.path

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
                self._key, self._index = key, None
            return self._explainer

    def source(self):
        """The run's dataset (None for weights without one, or data that is not here any more)."""
        spec = self.explainer().loaded.data
        if spec is None:
            return None
        with self._lock:
            if self._source is None:
                try:
                    self._source = build_source(spec)
                except UserError:
                    self._source = False
        return self._source or None

    def index(self):
        """The fc7 index of the training split (built once per checkpoint, cached in the run)."""
        ex = self.explainer()
        source = self.source()
        if source is None or "train" not in source.splits:
            return None
        with self._lock:
            if self._index is None:
                self._index = train_index(ex, source.split("train"), self.checkpoint(), self.run_dir)
            return self._index

    def read_json(self, name: str):
        if self.run_dir is None or not (self.run_dir / name).is_file():
            return None
        try:
            return json.loads((self.run_dir / name).read_text())
        except (OSError, ValueError):  # a file being replaced: the next poll sees it
            return None

    def metrics(self) -> list[dict]:
        if self.run_dir is None or not (self.run_dir / "metrics.jsonl").is_file():
            return []
        out = []
        for line in (self.run_dir / "metrics.jsonl").read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a half-written last line
                break
        return out

    def status(self) -> str:
        if self.run_dir is None:
            return "weights"
        return "finished" if (self.run_dir / "results.json").is_file() else "training"


def _is_run(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "checkpoints").is_dir()


def discover(paths: list[str], *, model_name: str | None = None) -> list[Entry]:
    """Entries for run folders, folders of runs, checkpoints and (with ``model_name``) weight files."""
    found: list[tuple[Path, Path | None]] = []
    for text in paths:
        p = Path(text).expanduser()
        if not p.exists():
            raise UserError(f"no such run folder or file: {text}")
        if p.is_dir() and _is_run(p):
            found.append((p, p))
        elif p.is_dir():
            found += [(d, d) for d in sorted(p.iterdir()) if d.is_dir() and _is_run(d)]
        else:
            run = p.parent.parent if p.parent.name == "checkpoints" and _is_run(p.parent.parent) else None
            found.append((p, run))
    entries, seen = [], set()
    for path, run in found:
        base = _ID.sub("-", path.name if path.is_dir() else f"{path.parent.parent.name}-{path.stem}"
                       if run else path.stem).strip("-.") or "model"
        rid, n = base, 2
        while rid in seen:
            rid, n = f"{base}-{n}", n + 1
        seen.add(rid)
        entries.append(Entry(rid, path.resolve(), run.resolve() if run else None,
                             model_name if run is None else None))
    return entries


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


def decode_upload(data: bytes, filename: str, size: int, channels: int) -> tuple[torch.Tensor, dict]:
    """Decode uploaded bytes like ``alexnet predict`` decodes a file; raise :class:`UploadError`."""
    name = Path(filename or "upload").name[:80] or "upload"
    if not data:
        raise UploadError(422, f"{name}: the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            info = {"format": img.format, "mode": img.mode, "width": img.size[0], "height": img.size[1]}
    except Exception:  # noqa: BLE001 - the decoder below says what is wrong
        info = {}
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
                     neighbours: int) -> dict:
    """The predict endpoint's answer for one uint8 (C, S, S) image."""
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
                                            "data": _b64((out.cam * 255).round().byte())},
        "layers": [{"name": m.name, "kind": m.kind, "channels": m.maps.shape[0], "height": m.maps.shape[1],
                    "width": m.maps.shape[2], "order": m.order.tolist(),
                    "strength": [round(v, 5) for v in m.strength.tolist()],
                    "max": float(m.maps.max()), "data": _b64(_to_uint8(m.maps))} for m in out.layers],
        "neighbours": [],
    }
    if neighbours > 0:
        index = entry.index()
        if index is None:
            answer["neighbours_note"] = "no training images: this model came without its dataset"
        else:
            answer["neighbours"] = [
                {"index": n.index, "label": n.label, "name": loaded.class_names[n.label],
                 "distance": n.distance, "url": f"/api/runs/{entry.id}/images/train/{n.index}.png"}
                for n in index.search(out.embedding, neighbours)]
            answer["neighbours_total"] = len(index)
    return answer


def run_card(entry: Entry) -> dict:
    """What the model picker shows: status, recipe, data, results and, once loaded, the layers."""
    cfg = (entry.read_json("config.json") or {}).get("config", {})
    results = entry.read_json("results.json")
    shown = ("recipe", "model", "model_opts", "data", "epochs", "batch_size", "optimizer", "lr", "momentum",
             "weight_decay", "schedule", "seed")
    scores = ("test_top1_accuracy", "test_top5_accuracy", "test_top1_error", "test_top5_error", "test_images",
              "tta", "train_seconds", "test_split", "topk", "weights")
    card = {"id": entry.id, "status": entry.status(), "path": entry.path.name,
            "model": cfg.get("model") or entry.model_name, "data": cfg.get("data"),
            "recipe": cfg.get("recipe"), "epochs": cfg.get("epochs"),
            "config": {k: cfg[k] for k in shown if k in cfg},
            "results": None if results is None else {k: results.get(k) for k in scores},
            "files": [f for f in RUN_FILES if entry.run_dir is not None and (entry.run_dir / f).is_file()]}
    return card


def full_card(entry: Entry) -> dict:
    card = run_card(entry)
    if entry.checkpoint() is None:
        card["loaded"] = False
        return card
    ex = entry.explainer()
    model, loaded = ex.model, ex.loaded
    source = entry.source()
    card.update({
        "loaded": True, "model": model.name, "num_classes": model.num_classes, "embed_dim": model.embed_dim,
        "class_names": loaded.class_names,
        "input": {"channels": ex.channels, "base_size": ex.base_size, "crop": ex.preset.crop},
        "summary": summarize(model).to_dict(), "towers": getattr(model, "towers", 1),
        "conv1": conv1_stats(model), "layers": [{"name": layer.name,
                                                 "kind": layer.kind} for layer in ex.layers],
        "test_images": len(source.split("test")) if source is not None and (
            "test" in source.splits or "val" in source.splits) else 0,
    })
    return card


def create_app(entries: list[Entry], *, device: str = "cpu") -> FastAPI:
    """The explorer: the page at ``/``, its files under ``/static``, the JSON API under ``/api``."""
    app = FastAPI(title="alexnet explorer", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    by_id = {e.id: e for e in entries}
    for e in entries:
        e.device = device
    photos = gallery()

    @app.exception_handler(UploadError)
    async def _upload_error(_request, exc: UploadError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def _unexpected(_request, exc: Exception):  # a message for the page; uvicorn logs the traceback
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {str(exc)[:300]}"},
                            status_code=500)

    @app.exception_handler(UserError)
    async def _user_error(_request, exc: UserError):  # e.g. a checkpoint that does not load
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def get(rid: str) -> Entry:
        if rid not in by_id:
            raise HTTPException(404, f"no model named {rid!r} on this page")
        return by_id[rid]

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/runs")
    def runs():
        return [run_card(e) for e in entries]

    @app.get("/api/runs/{rid}")
    async def card(rid: str):
        return await run_in_threadpool(full_card, get(rid))

    @app.get("/api/runs/{rid}/metrics")
    def metrics(rid: str, since: int = 0):
        e = get(rid)
        history = e.metrics()
        cfg = (e.read_json("config.json") or {}).get("config", {})
        return {"status": e.status(), "epochs": cfg.get("epochs"),
                "history": [r for r in history if r.get("epoch", 0) > since]}

    @app.get("/api/runs/{rid}/files/{name:path}")
    def run_file(rid: str, name: str):
        e = get(rid)
        if name not in RUN_FILES or e.run_dir is None or not (e.run_dir / name).is_file():
            raise HTTPException(404, f"{name!r} is not a file this page serves")
        return FileResponse(e.run_dir / name)

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
        image, _ = images[index]
        if image is None:
            raise HTTPException(422, f"{images.describe(index)} cannot be decoded")
        return image

    @app.get("/api/runs/{rid}/images/{split}/{index}.png")
    async def image_png(rid: str, split: str, index: int):
        image = await run_in_threadpool(split_image, get(rid), split, index)
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

    @app.post("/api/runs/{rid}/predict")
    async def predict(request: Request, rid: str, k: int = 5, target: int | None = None, maps: bool = True,
                      neighbours: int = 8, test: int | None = None, sample: str | None = None):
        e = get(rid)
        started = time.perf_counter()
        ex = await run_in_threadpool(e.explainer)
        if test is not None:
            image, info = await run_in_threadpool(split_image, e, "test",
                                                  test), {"source": f"test image {test}"}
        elif sample is not None:
            if sample not in photos:
                raise HTTPException(404, f"no sample image named {sample!r}")
            image, info = await run_in_threadpool(decode_upload, photos[sample].read_bytes(), sample,
                                                  ex.base_size, ex.channels)
        else:
            data, name = await upload_bytes(request)
            image, info = await run_in_threadpool(decode_upload, data, name, ex.base_size, ex.channels)
        answer = await run_in_threadpool(explanation_json, e, image, k=max(1, min(k, 20)), target=target,
                                         maps=maps, neighbours=max(0, min(neighbours, 32)))
        answer["input"] = info
        answer["ms"] = round(1000 * (time.perf_counter() - started), 1)
        return answer

    @app.get("/api/compare")
    def compare(ids: str = ""):
        chosen = [get(i) for i in ids.split(",") if i] or entries
        rows = []
        for e in chosen:
            row = run_card(e)
            row["history"] = [{k: r.get(k) for k in ("epoch", "train_loss", "val_loss", "val_top1",
                                                     "val_top5")}
                              for r in e.metrics()]
            rows.append(row)
        return rows

    app.state.entries = entries
    return app
