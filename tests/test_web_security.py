"""The explorer's threat model (docs/explorer.md, "Threat model"), one test per promise: what an upload
may cost, which files a run folder may expose, who chooses the folders the server reads, which Host
names it answers, and that names which are not UTF-8 do not break it. Each case is a hostile probe's:
built here, sent as a browser or a script would send it."""

import base64
import functools
import http.client
import io
import json
import os
import re
import socket
import struct
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from alexnet.data import build_source  # noqa: E402 (after the skips)
from alexnet.data.decode import MAX_IMAGE_PIXELS  # noqa: E402
from alexnet.inference.export import describe, export_safetensors  # noqa: E402
from alexnet.inference.load import load_trained  # noqa: E402
from alexnet.web.server import (DECODE_COST, DECODE_SLOTS, MAX_DECODE_BYTES, MAX_DECODE_COST,  # noqa: E402
                                HostCheck, _header, create_app, decode_upload, discover)
from helpers.web import LiveServer, metrics_record, png_bytes, reference_probs, train_tiny_run  # noqa: E402

MB = 2**20


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.getbasetemp() / "web-runs")


@pytest.fixture
def serving():
    """``serving(entries, **create_app options)``: a live server and an httpx client of it; stopped after
    the test."""
    running = []

    def start(entries, **options):
        server = LiveServer(create_app(entries, **options))
        client = httpx.Client(base_url=server.url, timeout=60)
        running.append((server, client))
        return client

    yield start
    for server, client in running:
        client.close()
        server.stop()


# ---------- 1. what an upload may cost ----------

def flat_png(width: int, height: int, value: int = 128, channels: int = 3) -> bytes:
    """A PNG of one grey ``value``, compressed row by row: a 9450x9460 one is about 0.28 MB, whatever
    its decoded size (the probe's file), and it is made without holding its pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z = zlib.compressobj(9)
    row = b"\0" + bytes([value]) * (width * channels)  # filter byte 0, then the row's samples
    idat = b"".join([z.compress(row) for _ in range(height)] + [z.flush()])
    ihdr = struct.pack(">IIBBBBB", width, height, 8, {1: 0, 3: 2}[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now; VmHWM: the peak)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) / 1024


def peak_rss_growth(work) -> tuple[list, float]:
    """``work()``'s answer and the growth of this process's peak resident memory while it ran, in MB:
    the kernel's high-water mark is reset first (``clear_refs`` 5, Linux >= 4.0) and read after."""
    Path("/proc/self/clear_refs").write_text("5")
    before = status_mb("VmRSS")
    answer = work()
    return answer, status_mb("VmHWM") - before


needs_proc = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.access("/proc/self/clear_refs",
                                                                                       os.W_OK),
                                reason="peak memory is read from Linux's /proc/self/status")


@pytest.fixture(scope="module")
def live(trained_run):
    server = LiveServer(create_app(discover([str(trained_run)])))
    client = httpx.Client(base_url=server.url, timeout=120)
    assert client.post("/api/runs/r/predict?test=0&neighbours=0").status_code == 200  # the model loaded
    yield server, client
    client.close()
    server.stop()


def upload_all(client, body: bytes, n: int, name: str) -> list:
    def send(i):
        with httpx.Client(base_url=client.base_url, timeout=120) as c:
            return c.post("/api/runs/r/predict?neighbours=0", content=body,
                          headers={"x-filename": f"{i}-{name}"})
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(send, range(n)))


@needs_proc
def test_eight_near_limit_pngs_are_refused_before_a_pixel_is_decoded(live):
    """The probe: 8 concurrent 0.28 MB PNGs of 9450x9460 pixels (just under Pillow's limit) cost 350 MB
    each to decode and peaked at 3.3 GB. Bound: 64 MB of peak growth for all eight. Decoding even one
    of them takes at least 89 MB (one byte a pixel; the trained model is grey), so the bound holds only
    if none is decoded; what is left is 8 bodies of 0.28 MB, their copies and the threads (a few MB)."""
    server, client = live
    w, h = 9450, 9460
    assert w * h <= MAX_IMAGE_PIXELS and w * h * DECODE_COST["RGB"] > MAX_DECODE_BYTES
    body = flat_png(w, h)
    assert len(body) < 400_000
    answers, growth = peak_rss_growth(lambda: upload_all(client, body, 8, "huge.png"))
    for r in answers:
        assert r.status_code == 413
        detail = r.json()["detail"]
        assert f"{w}x{h} pixels is more than this page decodes (RGB PNG: up to 22.4 megapixels" in detail
        assert "send a JPEG" in detail
    assert growth < 64, f"peak resident memory grew by {growth:.0f} MB"
    assert client.post("/api/runs/r/predict?test=0&neighbours=0").status_code == 200  # still serving


@needs_proc
def test_uploads_at_the_cap_decode_a_few_at_a_time(live, trained_run):
    """8 concurrent RGB PNGs as large as MAX_DECODE_BYTES allows (4729x4729, 22.4 megapixels) all
    answer, and correctly. One decode holds the RGB pixels (Pillow keeps 4 bytes a pixel) and their grey
    copy (1 byte): 5 bytes a pixel, 107 MB. Bound: DECODE_SLOTS x MAX_DECODE_BYTES (at most that many
    decode at once) plus 64 MB for the model's maps and the allocator; all eight at once need 855 MB."""
    server, client = live
    side = int((MAX_DECODE_BYTES / DECODE_COST["RGB"]) ** 0.5)
    body = flat_png(side, side, value=90)
    bound = DECODE_SLOTS * MAX_DECODE_BYTES / MB + 64
    assert bound < 8 * 5 * side * side / MB  # the bound can tell
    answers, growth = peak_rss_growth(lambda: upload_all(client, body, 8, "cap.png"))
    # a flat grey 90 is the same 28x28 grey 90 whatever the resize: the model's answer on it, by hand
    probs = reference_probs(trained_run, torch.full((1, 1, 28, 28), 90, dtype=torch.uint8))[0]
    for r in answers:
        assert r.status_code == 200, r.text
        assert r.json()["input"]["width"] == side
        assert [t["index"] for t in r.json()["top"]] == probs.topk(5).indices.tolist()
    assert growth < bound, f"peak resident memory grew by {growth:.0f} MB (bound {bound:.0f} MB)"


@needs_proc
@pytest.mark.parametrize("mode", ["L", "P", "RGB", "CMYK", "RGBA", "LA", "P+transparency", "I;16", "F"])
def test_the_decoding_cost_read_from_the_header_is_an_upper_bound(mode):
    """The cost decode_upload reads from a header before decoding (DECODE_COST a pixel, by mode) is at
    least what decoding then takes, measured: the peak growth of this process, for a grey and a colour
    model, on an image of each mode as large as the cap lets it be, up to 2048x2048 (TIFF for CMYK and
    float, PNG else)."""
    side = min(2048, int((MAX_DECODE_BYTES / DECODE_COST.get(mode, MAX_DECODE_COST)) ** 0.5))
    if mode in ("I;16", "F"):
        img = Image.fromarray(np.full((side, side), 30000, np.uint16 if mode == "I;16" else np.float32))
    else:
        img = Image.new("RGBA", (side, side), (90, 20, 200, 128)).convert(mode.split("+")[0])
        if mode == "P+transparency":
            img.info["transparency"] = 0
    buf = io.BytesIO()
    img.save(buf, format="TIFF" if mode in ("CMYK", "F") else "PNG")
    data = buf.getvalue()
    del img, buf
    for size, channels in ((28, 1), (256, 3)):
        info, cost = _header(data, size, channels)
        assert info["mode"] == mode.split("+")[0] and cost <= MAX_DECODE_BYTES
        _, growth = peak_rss_growth(functools.partial(decode_upload, data, "x", size, channels))
        assert growth <= cost / MB + 8, f"{mode}: decoding took {growth:.0f} MB, estimated {cost / MB:.0f} MB"


def test_a_large_photo_still_gets_a_prediction(live, trained_run):
    """A 24-megapixel JPEG (6000x4000: over the cap at full scale) is decoded at 1/8 scale and answered;
    so is a 12-megapixel PNG (under the cap). The answer matches the model run by hand on the crop it
    saw."""
    _, client = live
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)  # a coarse pattern, scaled up: a "photo"
    photo = io.BytesIO()
    Image.fromarray(small).resize((6000, 4000), Image.Resampling.NEAREST).save(photo, format="JPEG")
    for name, body, size in (("photo.jpg", photo.getvalue(), (6000, 4000)),
                             ("screen.png", flat_png(4000, 3000, value=200), (4000, 3000))):
        r = client.post("/api/runs/r/predict?neighbours=0", content=body, headers={"x-filename": name})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert (answer["input"]["width"], answer["input"]["height"]) == size
        crop = np.array(Image.open(io.BytesIO(base64.b64decode(answer["crop"]["png"]))))
        probs = reference_probs(trained_run, torch.from_numpy(crop)[None, None])[0]
        assert [t["index"] for t in answer["top"]] == probs.topk(5).indices.tolist()
        assert [t["probability"] for t in answer["top"]] == pytest.approx(probs.topk(5).values.tolist(),
                                                                          abs=1e-5)


# ---------- 2. a run folder exposes what is inside it, nothing else ----------

def test_links_out_of_a_run_folder_are_not_served(tmp_path, serving):
    """The probe: ``ln -s /etc/passwd runs/X/log.txt`` was served. A link out of the run folder (a file,
    or a folder on the way) is refused with 403 and left off the card; a link inside it is served."""
    secret = tmp_path / "elsewhere"
    (secret / "plots").mkdir(parents=True)
    (secret / "passwd").write_text("root:x:0:0:secret\n")
    (secret / "plots" / "curves.png").write_bytes(png_bytes(np.zeros((8, 8), np.uint8)))
    (secret / "metrics.jsonl").write_text(json.dumps(metrics_record(7)) + "\n")
    run = tmp_path / "runs" / "x"
    (run / "notes").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": {"model": "alexnet-small", "epochs": 9}}))
    (run / "log.txt").symlink_to(secret / "passwd")
    (run / "plots").symlink_to(secret / "plots")
    (run / "metrics.jsonl").symlink_to(secret / "metrics.jsonl")
    (run / "notes" / "real.json").write_text(json.dumps({"test_top1_accuracy": 0.5}))
    (run / "results.json").symlink_to(Path("notes") / "real.json")  # a link that stays inside
    client = serving(discover([str(tmp_path / "runs")]))
    for name in ("log.txt", "plots/curves.png", "metrics.jsonl"):
        r = client.get(f"/api/runs/x/files/{name}")
        assert r.status_code == 403 and "links outside its run folder" in r.json()["detail"], name
        assert b"root:" not in r.content
    assert client.get("/api/runs/x/files/results.json").json() == {"test_top1_accuracy": 0.5}
    card = client.get("/api/runs").json()[0]
    assert card["files"] == ["config.json", "results.json"]
    assert card["results"]["test_top1_accuracy"] == 0.5
    assert client.get("/api/runs/x/metrics").json()["history"] == []  # not the linked file's epoch 7


def test_a_checkpoint_linked_from_outside_is_not_loaded(tmp_path, trained_run, serving):
    run = tmp_path / "x"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text((trained_run / "config.json").read_text())
    (run / "checkpoints" / "best.pt").symlink_to(trained_run / "checkpoints" / "best.pt")
    client = serving(discover([str(run)]))
    r = client.post("/api/runs/x/predict?test=0")
    assert r.status_code == 403 and "checkpoints/best.pt links outside the run folder" in r.json()["detail"]


def grey_folder(root: Path, classes: dict[str, int]) -> None:
    """An image folder with train/ and test/: ``classes`` maps a class to its grey value."""
    for split in ("train", "test"):
        for name, value in classes.items():
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                grey = np.full((28, 28), value + i, np.uint8)
                (root / split / name / f"{i}.png").write_bytes(png_bytes(grey))


def test_links_out_of_a_dataset_folder_are_not_served(tmp_path, serving):
    """A run's test images are served by index; one that links out of the dataset's folder (to a photo
    elsewhere) is refused with 403, the others are served pixel for pixel."""
    data = tmp_path / "data"
    grey_folder(data, {"a": 10, "b": 200})
    (tmp_path / "private.png").write_bytes(png_bytes(np.full((28, 28), 77, np.uint8)))
    (data / "test" / "b" / "9.png").symlink_to(tmp_path / "private.png")
    run = tmp_path / "x"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"model": "alexnet-small",
                                                            "data": f"folder:{data}"}}))
    client = serving(discover([str(run)]))
    test = build_source(f"folder:{data}").split("test")
    linked = [i for i in range(len(test)) if test.path(i).endswith("9.png")]
    assert len(linked) == 1 and len(test) == 7
    for i in range(len(test)):
        r = client.get(f"/api/runs/x/images/test/{i}.png")
        if i in linked:
            assert r.status_code == 403 and "not a file inside the dataset's folder" in r.json()["detail"]
        else:
            assert r.status_code == 200
            expect = test[i][0].permute(1, 2, 0).numpy()  # the dataset's own decoding, (S, S, 3)
            assert np.array_equal(np.array(Image.open(io.BytesIO(r.content))), expect)


# ---------- 3. only the command line chooses the folders the server reads ----------

def crafted_safetensors(path: Path, trained_run: Path, data: str) -> None:
    """The trained run as ``alexnet export --format safetensors`` writes it, its metadata naming ``data``
    as its dataset."""
    pytest.importorskip("safetensors")
    loaded = load_trained(str(trained_run))
    export_safetensors(loaded.model, path, {**describe(loaded), "data": data})


def test_a_weights_file_does_not_choose_a_folder_to_serve(tmp_path, trained_run, serving):
    """The probe: metadata ``"data": "folder:/any/dir"`` made /images serve that folder. The file's
    dataset is ignored (no images, no neighbours); the command line's --data is used."""
    private = tmp_path / "private"
    grey_folder(private, {"p": 50, "q": 150})
    crafted_safetensors(tmp_path / "m.safetensors", trained_run, f"folder:{private}")
    client = serving(discover([str(tmp_path / "m.safetensors")]))
    card = client.get("/api/runs/m").json()
    assert card["loaded"] and card["data"] is None and card["test_images"] == 0
    for path in ("/api/runs/m/images/train/0.png", "/api/runs/m/images/test/0.png", "/api/runs/m/testset"):
        assert client.get(path).status_code == 404, path
    grey = png_bytes(np.full((28, 28), 50, np.uint8))
    answer = client.post("/api/runs/m/predict?neighbours=8", content=grey).json()
    assert answer["neighbours"] == [] and "without its dataset" in answer["neighbours_note"]
    # given on the command line, the dataset is served
    client = serving(discover([str(tmp_path / "m.safetensors")], data="digits"))
    digits = build_source("digits").split("test")
    assert client.get("/api/runs/m").json()["data"] == "digits"
    r = client.get("/api/runs/m/images/test/5.png")
    assert np.array_equal(np.array(Image.open(io.BytesIO(r.content))), digits[5][0][0].numpy())


def test_serve_data_flag_reaches_the_page_and_is_checked(tmp_path, trained_run, monkeypatch, cli):
    crafted_safetensors(tmp_path / "m.safetensors", trained_run, "folder:/")
    apps = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: apps.append(self.config.app))
    assert cli("serve", tmp_path / "m.safetensors", "--data", "digits", "--port", "0").returncode == 0
    assert [e.dataset() for e in apps[0].state.entries] == ["digits"]
    r = cli("serve", tmp_path / "m.safetensors", "--data", f"folder:{tmp_path}/none", "--port", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such file or folder" in r.stderr


# ---------- 4. the Host header: against DNS rebinding ----------

@pytest.mark.parametrize("bound, allowed, host, ok", [
    ("127.0.0.1", (), "127.0.0.1:8000", True),
    ("127.0.0.1", (), "localhost:8000", True),
    ("127.0.0.1", (), "[::1]:8000", True),
    ("127.0.0.1", (), "LOCALHOST.", True),
    ("127.0.0.1", (), "rebind.attacker.example:8000", False),
    ("127.0.0.1", (), "10.0.0.5:8000", False),
    ("127.0.0.1", (), "127.0.0.1.attacker.example", False),
    ("127.0.0.1", (), "localhost:notaport", False),
    ("127.0.0.1", ("explorer.lan",), "explorer.lan:8000", True),
    ("127.0.0.1", ("explorer.lan",), "other.lan:8000", False),
    ("127.0.0.1", ("*",), "anything.example", True),
    ("192.168.1.20", (), "192.168.1.20:8000", True),
    ("192.168.1.20", (), "evil.example", False),
    ("0.0.0.0", (), "192.168.1.20:8000", True),  # any address: a page reached by address is not re-pointed
    ("0.0.0.0", (), f"{socket.gethostname()}:8000", True),
    ("0.0.0.0", (), "evil.example", False),
])
def test_host_header_check(bound, allowed, host, ok):
    why = HostCheck(None, host=bound, allowed=allowed).accepts(host)
    assert (why is None) == ok, why
    if not ok:
        assert "--allow-host" in why or "no valid Host" in why


def test_a_rebound_name_gets_403_on_every_route(trained_run, serving):
    """A page of another site whose name now resolves to 127.0.0.1 sends that name as its Host."""
    client = serving(discover([str(trained_run)]))
    port = int(str(client.base_url).rsplit(":", 1)[1])
    for path in ("/", "/static/app.js", "/api/runs", "/api/runs/r/files/config.json", "/api/gallery"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", path, headers={"Host": f"rebind.attacker.example:{port}"})
        res = conn.getresponse()
        body = res.read()
        conn.close()
        assert res.status == 403, path
        assert "--allow-host rebind.attacker.example" in json.loads(body)["detail"]
        assert b"alexnet-small" not in body
    assert client.get("/api/runs", headers={"host": f"localhost:{port}"}).status_code == 200
    client = serving(discover([str(trained_run)]), allow_hosts=("explorer.lan",))
    assert client.get("/api/runs", headers={"host": "explorer.lan"}).status_code == 200


def test_allow_host_flag_reaches_the_server(trained_run, monkeypatch, cli):
    apps = []
    with monkeypatch.context() as m:
        m.setattr(uvicorn.Server, "run", lambda self, sockets: apps.append(self.config.app))
        assert cli("serve", trained_run, "--port", "0", "--allow-host", "box.lan", "--allow-host",
                   "[fe80::1]").returncode == 0
    server = LiveServer(apps[0])
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.get("/api/runs", headers={"host": "box.lan"}).status_code == 200
            assert client.get("/api/runs", headers={"host": "[fe80::1]:80"}).status_code == 200
            assert client.get("/api/runs", headers={"host": "other.lan"}).status_code == 403
    finally:
        server.stop()


# ---------- 5. the command's flags ----------

@pytest.mark.parametrize("args, words", [
    (["--port", "70000"], "argument --port: a port is 0 to 65535"),
    (["--port", "-1"], "argument --port"),
    (["--port", "http"], "argument --port: expected an integer"),
    (["--host", ""], "argument --host: expected an address"),
    (["--host", "http://example.org"], "argument --host: expected an address"),
    (["--allow-host", "a b"], "argument --allow-host: expected an address"),
])
def test_bad_port_or_host_is_one_line(trained_run, cli, args, words):
    r = cli("serve", trained_run, *args)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and words in r.stderr and "Traceback" not in r.stderr


def test_a_port_in_use_is_one_line_and_port_0_picks_a_free_one(trained_run, monkeypatch, cli):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        r = cli("serve", trained_run, "--port", port)
        assert r.returncode == 2 and r.stderr.count("\n") == 1
        assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "--port 0" in r.stderr
    finally:
        taken.close()
    bound = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: bound.append(sockets[0].getsockname()))
    r = cli("serve", trained_run, "--port", "0")
    assert r.returncode == 0 and bound[0][1] > 0
    assert f"open http://127.0.0.1:{bound[0][1]}/" in r.stderr


# ---------- 8. names that are not UTF-8 ----------

def test_run_folders_with_names_that_are_not_utf8(tmp_path, serving):
    """Two run folders named by bytes that are not UTF-8 (POSIX names are bytes): /api/runs answers,
    shows the names with backslash escapes, and gives each an id that works. A config.json holding such
    a name (json escapes it) and a metrics line with NaN do not break the answer either."""
    base = os.fsencode(tmp_path)
    runs = []
    for raw in (b"run\xff", b"run\xfe"):
        os.mkdir(base + b"/" + raw)
        run = Path(os.fsdecode(base + b"/" + raw))
        data = os.fsdecode(b"folder:/data/cats\xe9")  # a Latin-1 name, kept as surrogates
        (run / "config.json").write_text(json.dumps({"config": {"model": "alexnet-small", "data": data,
                                                                "epochs": 3}}))
        diverged = {**metrics_record(2), "train_loss": float("nan")}  # written as NaN
        (run / "metrics.jsonl").write_text(f"{json.dumps(metrics_record(1))}\n{json.dumps(diverged)}\n")
        runs.append(run)
    client = serving(discover([str(tmp_path)]))
    r = client.get("/api/runs")
    assert r.status_code == 200
    cards = r.json()
    assert sorted(c["path"] for c in cards) == [b"run\xfe".decode("utf-8", "backslashreplace"),
                                                b"run\xff".decode("utf-8", "backslashreplace")]
    assert [c["data"] for c in cards] == [b"folder:/data/cats\xe9".decode("utf-8", "backslashreplace")] * 2
    assert len({c["id"] for c in cards}) == 2
    for c in cards:
        assert client.get(f"/api/runs/{c['id']}").json()["path"] == c["path"]
        history = client.get(f"/api/runs/{c['id']}/metrics").json()["history"]
        assert [h["epoch"] for h in history] == [1, 2] and history[1]["train_loss"] is None
        assert client.get(f"/api/runs/{c['id']}/files/config.json").status_code == 200
    assert client.get("/api/compare").status_code == 200
