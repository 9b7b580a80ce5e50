"""The explorer's HTTP API on a real uvicorn server: every endpoint, hostile input, traversal attempts,
concurrency. Predictions are checked against the trained model run here by hand with torch."""

import base64
import http.client
import io
import json
import shutil
import struct
import time
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

from alexnet.cli import main  # noqa: E402
from alexnet.data import build_source  # noqa: E402
from alexnet.models import create_model  # noqa: E402
from alexnet.web.server import MAX_UPLOAD, Catalog, create_app, discover  # noqa: E402 (after the skips)
from helpers.web import (LAYERS, LiveServer, fake_live_run, metrics_record, png_bytes,  # noqa: E402
                         reference_probs, train_tiny_run)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.getbasetemp() / "web-runs")


@pytest.fixture(scope="session")
def digits():
    return build_source("digits")


@pytest.fixture(scope="module")
def live(trained_run, tmp_path_factory):
    live_run = fake_live_run(tmp_path_factory.mktemp("live-api"))
    server = LiveServer(create_app(discover([str(trained_run), str(live_run)])))
    client = httpx.Client(base_url=server.url, timeout=60)
    yield server, client, live_run
    client.close()
    server.stop()


def raw_get(server, path: str) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (httpx would resolve ``..`` before sending)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", path)
    res = conn.getresponse()
    body = res.read()
    conn.close()
    return res.status, body


# ---------- endpoints ----------

def test_page_and_static_files_ship_without_external_urls(live):
    _, client, _ = live
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200
        assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text
    assert "http://" not in page.text and "https://" not in page.text


def test_runs_card_and_metrics(live, trained_run):
    _, client, _ = live
    runs = {r["id"]: r for r in client.get("/api/runs").json()}
    assert set(runs) == {"r", "live"}
    results = json.loads((trained_run / "results.json").read_text())
    assert runs["r"]["status"] == "finished" and runs["live"]["status"] == "training"
    assert runs["r"]["results"]["test_top1_accuracy"] == results["test_top1_accuracy"]
    card = client.get("/api/runs/r").json()
    ckpt = torch.load(trained_run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert card["summary"]["total_params"] == sum(v.numel() for v in ckpt["model"].values())
    assert [layer["name"] for layer in card["layers"]] == LAYERS
    assert card["test_images"] == 360 and card["num_classes"] == 10 and card["towers"] == 2
    w = ckpt["model"]["features.conv1.weight"]
    assert card["conv1"][0]["mean_norm"] == pytest.approx(float(w[:32].flatten(1).norm(dim=1).mean()),
                                                          rel=1e-5)
    history = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    m = client.get("/api/runs/r/metrics").json()
    assert m["history"] == history and m["status"] == "finished"
    assert client.get("/api/runs/r/metrics?since=1").json()["history"] == history[1:]
    assert client.get("/api/runs/nope").status_code == 404


def test_the_page_shows_how_each_run_ended(trained_run, tmp_path):
    """The status comes from the run's own record (state.json) and its lock: a run whose record says
    training but whose lock no process holds was killed; diverged and stopped runs say so."""
    runs = {}
    for name, record in {"killed": "training", "diverged": "diverged", "stopped": "stopped"}.items():
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"config": {"model": "alexnet-small", "data": "digits",
                                                                "epochs": 5, "recipe": "small"}}))
        (run / "metrics.jsonl").write_text(json.dumps(metrics_record(1)) + "\n")
        (run / "state.json").write_text(json.dumps({"state": record, "reason": "", "pid": 1}))
        runs[name] = run
    held = fake_live_run(tmp_path / "held")  # the same files, and a lock held by a live process
    app = create_app(discover([str(trained_run), *map(str, runs.values()), str(held)]))
    server = LiveServer(app)
    try:
        client = httpx.Client(base_url=server.url, timeout=60)
        shown = {r["id"]: r["status"] for r in client.get("/api/runs").json()}
        assert shown == {"r": "finished", "killed": "killed", "diverged": "diverged", "stopped": "stopped",
                         "live": "training"}
        assert client.get("/api/runs/killed/metrics").json()["status"] == "killed"
        client.close()
    finally:
        server.stop()


def test_run_in_progress_shows_new_epochs(live):
    _, client, live_run = live
    card = client.get("/api/runs/live").json()
    assert card["loaded"] is False and card["status"] == "training"
    r = client.post("/api/runs/live/predict?test=0")
    assert r.status_code == 409 and "no checkpoint yet" in r.json()["detail"]
    assert [e["epoch"] for e in client.get("/api/runs/live/metrics").json()["history"]] == [1]
    with open(live_run / "metrics.jsonl", "a") as f:  # the trainer appends an epoch
        f.write(json.dumps(metrics_record(2)) + "\n")
    new = client.get("/api/runs/live/metrics?since=1").json()
    assert new["history"] == [metrics_record(2)] and new["epochs"] == 5


def test_compare_lists_results_and_curves(live, trained_run):
    _, client, _ = live
    rows = {r["id"]: r for r in client.get("/api/compare?ids=r,live").json()}
    results = json.loads((trained_run / "results.json").read_text())
    assert rows["r"]["results"]["test_top5_error"] == results["test_top5_error"]
    assert [h["epoch"] for h in rows["r"]["history"]] == [1, 2]
    assert rows["live"]["results"] is None
    assert client.get("/api/compare?ids=r,missing").status_code == 404


def test_run_files_images_kernels_and_gallery(live, trained_run, digits):
    _, client, _ = live
    assert client.get("/api/runs/r/files/config.json").content == (trained_run / "config.json").read_bytes()
    assert client.get("/api/runs/r/files/plots/curves.png").headers["content-type"] == "image/png"
    test = digits.split("test")
    img = np.array(Image.open(io.BytesIO(client.get("/api/runs/r/images/test/5.png").content)))
    assert np.array_equal(img, test[5][0][0].numpy())
    train_img = np.array(Image.open(io.BytesIO(client.get("/api/runs/r/images/train/7.png").content)))
    assert np.array_equal(train_img, digits.split("train")[7][0][0].numpy())
    for bad in ("test/360.png", "test/-1.png", "val/0.png", "train/x.png"):
        assert client.get(f"/api/runs/r/images/{bad}").status_code in (404, 422)
    items = client.get("/api/runs/r/testset?limit=10").json()
    assert len(items) == 10 and all(it["label"] == int(test.targets[it["index"]]) for it in items)
    ckpt = torch.load(trained_run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    w = ckpt["model"]["features.conv2.weight"][3].mean(0)  # (5, 5), the mean over its 32 input channels
    expect = ((w - w.min()) * 255 / (w.max() - w.min())).round().numpy()
    got = np.array(Image.open(io.BytesIO(client.get("/api/runs/r/kernel/conv2/3.png").content)))
    assert np.abs(got.astype(float) - expect).max() <= 1
    assert client.get("/api/runs/r/kernel/conv2/128.png").status_code == 404
    assert client.get("/api/runs/r/kernel/pool1/0.png").status_code == 404
    for tower in (1, 2):
        grid = Image.open(io.BytesIO(client.get(f"/api/runs/r/conv1/{tower}.png").content))
        assert grid.size == (16 * 6 - 1, 2 * 6 - 1)  # 32 kernels of 5x5, 16 a row, 1-pixel gaps
    assert client.get("/api/runs/r/conv1/3.png").status_code == 404
    names = [g["name"] for g in client.get("/api/gallery").json()]
    assert names == ["china.jpg", "flower.jpg"]
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    assert client.get("/api/gallery/china.jpg").content == (folder / "china.jpg").read_bytes()
    assert client.get("/api/gallery/README.txt").status_code == 404


def check_answer(answer, probs):
    top = probs.topk(5)
    assert [t["index"] for t in answer["top"]] == top.indices.tolist()
    assert [t["probability"] for t in answer["top"]] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_predict_test_image_upload_and_form_agree_with_torch(live, trained_run, digits):
    _, client, _ = live
    image = digits.split("test")[11][0]
    probs = reference_probs(trained_run, image[None])[0]
    by_index = client.post("/api/runs/r/predict?test=11").json()
    check_answer(by_index, probs)
    raw = client.post("/api/runs/r/predict", content=png_bytes(image[0].numpy()),
                      headers={"content-type": "image/png", "x-filename": "eleven.png"}).json()
    check_answer(raw, probs)
    form = client.post("/api/runs/r/predict", files={"file": ("eleven.png", png_bytes(image[0].numpy()),
                                                              "image/png")}).json()
    check_answer(form, probs)
    assert raw["input"] == {"format": "PNG", "mode": "L", "width": 28, "height": 28}
    # every layer's maps: conv1 after its ReLU, checked against F.conv2d written out here
    assert [layer["name"] for layer in raw["layers"]] == LAYERS
    ckpt = torch.load(trained_run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    p = ckpt["preset"]
    x = (image[None].float() - p["norm"]["mean"]) / p["norm"]["std"]
    a = torch.relu(torch.nn.functional.conv2d(x, ckpt["model"]["features.conv1.weight"],
                                              ckpt["model"]["features.conv1.bias"], padding=2))[0]
    conv1 = raw["layers"][0]
    order = a.mean((1, 2)).argsort(descending=True)
    assert conv1["order"][:8] == order[:8].tolist()
    data = np.frombuffer(base64.b64decode(conv1["data"]), np.uint8).reshape(64, 28, 28).astype(float)
    expect = (a[torch.tensor(conv1["order"])] - a.min()) * 255 / (a.max() - a.min())
    assert np.abs(data - expect.numpy()).max() <= 1.0
    cam = np.frombuffer(base64.b64decode(raw["cam"]["data"]), np.uint8)
    assert cam.size == 28 * 28 and cam.max() == 255
    assert raw["target"]["index"] == raw["top"][0]["index"]
    chosen = client.post("/api/runs/r/predict?test=11&target=3&maps=false&neighbours=0").json()
    assert chosen["target"]["index"] == 3 and chosen["layers"] == [] and chosen["neighbours"] == []
    assert client.post("/api/runs/r/predict?test=11&target=10").status_code == 422
    assert client.post("/api/runs/r/predict?test=999").status_code == 404
    assert client.post("/api/runs/r/predict?sample=china.jpg").json()["input"]["width"] == 640
    assert client.post("/api/runs/r/predict?sample=../../etc/passwd").status_code == 404


def test_neighbours_are_the_nearest_fc7_vectors(live, trained_run, digits):
    _, client, _ = live
    answer = client.post("/api/runs/r/predict?test=20&neighbours=5&maps=false").json()
    ckpt = torch.load(trained_run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    model = create_model("alexnet-small", num_classes=10).eval()
    model.load_state_dict(ckpt["model"])
    norm = ckpt["preset"]["norm"]
    train = digits.split("train")
    with torch.no_grad():
        feats = model.embed((train.images.float() - norm["mean"]) / norm["std"]).numpy()
        q = model.embed((digits.split("test")[20][0][None].float() - norm["mean"]) / norm["std"])[0].numpy()
    d = np.sqrt(((feats - q) ** 2).sum(1))
    best = np.argsort(d, kind="stable")[:5]
    assert [n["index"] for n in answer["neighbours"]] == best.tolist()
    assert [n["distance"] for n in answer["neighbours"]] == pytest.approx(d[best].tolist(), rel=1e-4)
    assert [n["label"] for n in answer["neighbours"]] == train.targets[best].tolist()
    assert answer["neighbours_total"] == len(train)
    assert (trained_run / "embeddings-fc7.pt").is_file()  # cached in the run folder


# ---------- hostile input ----------

def bomb_png(width=30000, height=30000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (900 megapixels)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT",
                                                               zlib.compress(b"\0" * 64)) \
        + chunk(b"IEND", b"")


def cmyk_jpeg() -> bytes:
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[8:32, 16:24] = 255
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("name, body, status, words", [
    ("big.png", b"\0" * (MAX_UPLOAD + 200_000), 413, "limit is 20 MB"),
    ("bomb.png", bomb_png(), 422, "decompression-bomb"),
    ("notes.png", b"this is a text file, not an image\n" * 20, 422, "notes.png: not a readable image"),
    ("dot.png", png_bytes(np.zeros((1, 1), np.uint8)), 422, "1x1 pixels is too small"),
    ("empty.png", b"", 422, "empty"),
    ("cut.png", png_bytes(np.full((64, 64), 200, np.uint8))[:60], 422, "cut.png: not a readable image"),
])
def test_bad_uploads_get_a_message_and_the_server_keeps_serving(live, name, body, status, words):
    _, client, _ = live
    r = client.post("/api/runs/r/predict", content=body, headers={"x-filename": name})
    assert r.status_code == status
    assert words in r.json()["detail"]
    assert client.post("/api/runs/r/predict?test=0&maps=false&neighbours=0").status_code == 200


def test_oversized_multipart_upload_is_refused(live):
    _, client, _ = live
    r = client.post("/api/runs/r/predict", files={"file": ("big.png", b"\0" * (MAX_UPLOAD + 200_000))})
    assert r.status_code == 413 and "20 MB" in r.json()["detail"]
    r = client.post("/api/runs/r/predict", files={"other": ("x.png", b"123")})
    assert r.status_code == 422 and "'file'" in r.json()["detail"]


def test_cmyk_jpeg_is_converted_and_said_so(live):
    _, client, _ = live
    r = client.post("/api/runs/r/predict", content=cmyk_jpeg(), headers={"x-filename": "cmyk.jpg"})
    assert r.status_code == 200
    assert r.json()["input"]["mode"] == "CMYK" and "CMYK" in r.json()["input"]["note"]
    assert len(r.json()["top"]) == 5


@pytest.mark.parametrize("path", [
    "/api/runs/r/files/../../../../etc/passwd",
    "/api/runs/r/files/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/runs/r/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/api/runs/r/files/%252e%252e%252fconfig.json",
    "/api/runs/r/files/%2Fetc%2Fpasswd",
    "/api/runs/r/files/plots/..%2F..%2Fr%2Fconfig.json",
    "/api/runs/r/files/checkpoints/best.pt",
    "/api/runs/..%2F..%2F..%2Fetc/files/passwd",
    "/api/runs/%2e%2e/files/config.json",
    "/static/../server.py",
    "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/static/%2e%2e/server.py",
    "/api/gallery/..%2F__init__.py",
    "/api/gallery/%2e%2e%2f%2e%2e%2f__init__.py",
    "/api/runs/r/images/..%2F..%2Fconfig.json/0.png",
])
def test_path_traversal_is_refused(live, path):
    server, _, _ = live
    status, body = raw_get(server, path)
    assert status in (400, 404), (path, status)
    assert b"root:" not in body and b"import" not in body and b"\"config\"" not in body


def test_twenty_concurrent_requests_all_answer_correctly(live, trained_run, digits):
    _, client, _ = live
    test = digits.split("test")
    picks = list(range(40, 60))
    probs = reference_probs(trained_run, torch.stack([test[i][0] for i in picks]))

    def ask(i):
        with httpx.Client(base_url=client.base_url, timeout=120) as c:
            return c.post("/api/runs/r/predict", content=png_bytes(test[i][0][0].numpy()),
                          headers={"x-filename": f"{i}.png"})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, picks))
    for r, p in zip(answers, probs):
        assert r.status_code == 200
        check_answer(r.json(), p)


# ---------- the command ----------

def test_serve_command_warns_off_loopback_and_refuses_bad_paths(trained_run, monkeypatch, capsys, tmp_path):
    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: served.append(sockets[0].getsockname()))
    assert main(["serve", str(trained_run), "--host", "0.0.0.0", "--port", "0"]) == 0
    err = capsys.readouterr().err
    # bound to every interface; the address to open here is the loopback one
    assert "warning: serving on 0.0.0.0" in err and f"http://127.0.0.1:{served[0][1]}/" in err
    assert main(["serve", str(trained_run), "--port", "0"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert [host for host, _ in served] == ["0.0.0.0", "127.0.0.1"]
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "alexnet: error: no such run folder or file" in capsys.readouterr().err
    assert main(["serve", str(tmp_path)]) == 2  # an empty folder: no runs
    assert "no runs found" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["serve"]) == 2  # the default, runs/, is not here
    assert "no runs/ folder here" in capsys.readouterr().err


def test_a_plain_weights_file_is_served_without_a_dataset(tmp_path):
    """torchvision's layout from a bare state dict (as torchvision ships it): ImageNet preprocessing."""
    torch.manual_seed(0)
    torch.save(create_model("alexnet-owt", num_classes=10).state_dict(), tmp_path / "owt.pth")
    server = LiveServer(create_app(discover([str(tmp_path / "owt.pth")], model_name="alexnet-owt")))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            runs = client.get("/api/runs").json()
            assert [(r["id"], r["status"], r["model"]) for r in runs] == [("owt", "weights", "alexnet-owt")]
            card = client.get("/api/runs/owt").json()
            assert card["test_images"] == 0 and card["results"] is None and card["files"] == []
            # recognized by its keys and shapes as torchvision's layout: torchvision's evaluation preset,
            # whose decoded input is the 224 crop itself (resize 256, centre crop 224)
            assert card["input"] == {"channels": 3, "base_size": 224, "crop": 224}
            assert client.get("/api/runs/owt/testset").status_code == 404
            assert client.get("/api/runs/owt/files/config.json").status_code == 404
            r = client.post("/api/runs/owt/predict?sample=flower.jpg")
            assert r.status_code == 200 and len(r.json()["top"]) == 5
            expected = [n for n in LAYERS if not n.startswith("norm")]
            assert [layer["name"] for layer in r.json()["layers"]] == expected
            assert r.json()["neighbours"] == [] and "without its dataset" in r.json()["neighbours_note"]
    finally:
        server.stop()


# ---------- what the page added: runs found while serving, error analysis, a unit's arithmetic ----------

def fc7_by_hand(run, images):
    """fc7 of uint8 images: the checkpoint's weights, its normalization, the model's own embed."""
    ckpt = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    model = create_model("alexnet-small", num_classes=10).eval()
    model.load_state_dict(ckpt["model"])
    norm = ckpt["preset"]["norm"]
    with torch.no_grad():
        return model.embed((images.float() - norm["mean"]) / norm["std"]).numpy().astype(np.float64)


def wait_ready(client, rid):
    for _ in range(600):
        if client.get(f"/api/runs/{rid}/errors").json().get("state") == "ready":
            return client.get(f"/api/runs/{rid}/errors").json()
        time.sleep(0.1)
    raise AssertionError("the test report was not made in 60 s")


def test_runs_are_found_while_serving(trained_run, tmp_path, monkeypatch):
    """A folder of runs is looked at again: a run started after the server is listed (and reachable by
    id at once), a deleted one is dropped; the ids of the others stay."""
    monkeypatch.setattr(Catalog, "RESCAN_SECONDS", 0.0)
    folder = tmp_path / "runs"
    folder.mkdir()
    shutil.copytree(trained_run, folder / "a", ignore=shutil.ignore_patterns("embeddings-fc7.pt"))
    server = LiveServer(create_app(discover([str(folder)])))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert [r["id"] for r in client.get("/api/runs").json()] == ["a"]
            later = folder / "b"
            later.mkdir()
            (later / "config.json").write_text(json.dumps({"config": {"model": "lenet5", "data": "digits"}}))
            assert client.get("/api/runs/b/metrics").json()["history"] == []  # reachable before any listing
            assert [r["id"] for r in client.get("/api/runs").json()] == ["a", "b"]
            shutil.rmtree(later)
            assert [r["id"] for r in client.get("/api/runs").json()] == ["a"]
            assert client.get("/api/runs/b").status_code == 404
    finally:
        server.stop()


def test_errors_confusion_and_the_out_of_distribution_range(live, trained_run, digits):
    _, client, _ = live
    report = wait_ready(client, "r")
    test, train = digits.split("test"), digits.split("train")
    probs = reference_probs(trained_run, test.images)
    expected = np.zeros((10, 10), int)
    for y, p in zip(test.targets.tolist(), probs.argmax(1).tolist()):
        expected[y, p] += 1
    assert report["confusion"] == expected.tolist() and report["shown"] == report["total"] == len(test)
    assert [row[2] for row in report["images"]] == probs.argmax(1).tolist()
    # the threshold: the 99th percentile of each test image's fc7 distance to its nearest training image
    f_train, f_test = (fc7_by_hand(trained_run, split.images) for split in (train, test))
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b
    squared = (f_test ** 2).sum(1)[:, None] + (f_train ** 2).sum(1)[None] - 2 * f_test @ f_train.T
    nearest = np.sqrt(np.maximum(squared, 0).min(1))
    assert report["unlike"] == pytest.approx(float(np.quantile(nearest, 0.99)), rel=1e-4)
    answer = client.post("/api/runs/r/predict?test=11&maps=false").json()
    assert answer["label"] == {"index": int(test.targets[11]), "name": str(int(test.targets[11])),
                               "probability": pytest.approx(float(probs[11, test.targets[11]]), abs=1e-5)}
    assert answer["ood"]["distance"] == pytest.approx(float(nearest[11]), rel=1e-4)
    assert answer["ood"]["unlike"] == bool(nearest[11] > report["unlike"])
    half = np.zeros((28, 28), np.uint8)
    half[14:] = 255  # no digit: a white lower half
    odd = client.post("/api/runs/r/predict?maps=false", content=png_bytes(half),
                      headers={"x-filename": "half.png"}).json()
    f_half = fc7_by_hand(trained_run, torch.from_numpy(half)[None, None])
    far = np.sqrt(((f_half - f_train) ** 2).sum(1)).min()
    assert odd["ood"]["distance"] == pytest.approx(float(far), rel=1e-4)
    assert odd["ood"]["unlike"] is True and far > report["unlike"]
    pca = client.get("/api/runs/r/projection?method=pca").json()["points"]
    centred = f_test - f_test.mean(0)
    u, s, _ = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    ref = u[:, :2] * s[:2]
    got = np.array([p[:2] for p in pca])
    for k in range(2):  # each component up to its sign
        sign = np.sign((got[:, k] * ref[:, k]).sum())
        assert np.allclose(got[:, k], sign * ref[:, k], atol=1e-3 * np.abs(ref[:, k]).max())
    assert client.get("/api/runs/r/projection?method=umap").status_code == 422
    assert client.get("/api/runs/r/index").json()["state"] == "ready"


def test_a_units_arithmetic_and_what_excites_it(live, trained_run, digits):
    _, client, _ = live
    ckpt = torch.load(trained_run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    p = ckpt["preset"]
    image = digits.split("test")[7][0]
    x = (image[None].float() - p["norm"]["mean"]) / p["norm"]["std"]
    w, b = ckpt["model"]["features.conv1.weight"], ckpt["model"]["features.conv1.bias"]
    z = torch.nn.functional.conv2d(x, w, b, padding=2)[0]  # before the ReLU
    unit = client.post("/api/runs/r/unit?layer=conv1&channel=5&y=10&x=3&test=7").json()
    assert unit["sum"] == pytest.approx(float(z[5, 10, 3]), abs=1e-4)
    assert unit["steps"][0] == {"op": "ReLU", "value": pytest.approx(max(0.0, float(z[5, 10, 3])), abs=1e-4)}
    assert unit["box"] == [8, 1, 12, 5]  # 5x5 window at (10, 3), padding 2: rows 8-12, columns 1-5
    patch = torch.nn.functional.pad(x[0, 0], (2, 2, 2, 2))[10:15, 3:8]
    assert np.allclose(unit["patch"][0], patch.numpy(), atol=1e-5)
    assert client.post("/api/runs/r/unit?layer=conv1&channel=64&y=0&x=0&test=7").status_code == 404
    # the training images that excite conv1's map 5 most: its largest value over each image, by hand
    train = digits.split("train")
    with torch.no_grad():
        xs = (train.images.float() - p["norm"]["mean"]) / p["norm"]["std"]
        peak = torch.relu(torch.nn.functional.conv2d(xs, w[5:6], b[5:6], padding=2)).flatten(1).max(1).values
    found = client.get("/api/runs/r/examples/conv1/5").json()["examples"]
    assert [e["value"] for e in found] == pytest.approx(peak.topk(8).values.tolist(), rel=1e-4)
    patch_png = Image.open(io.BytesIO(client.get(found[0]["url"]).content))
    top, left, bottom, right = found[0]["box"]
    assert patch_png.size == (right - left + 1, bottom - top + 1)
    assert client.get("/api/runs/r/examples/pool1/0").status_code == 404


def test_a_run_shows_the_weights_its_results_report(trained_run, tmp_path):
    """The page loads the checkpoint training reported with (data/selection.py): best.pt when the run
    reported on a split other than val (which chose best.pt), last.pt when it reported on val itself or
    has reported on nothing yet, and a run whose reported weights are missing is listed saying so."""
    cases = {"test": "best.pt", "val": "last.pt", None: "last.pt", "val-without-last": None}
    for split in cases:
        run = tmp_path / str(split)
        shutil.copytree(trained_run, run)
        results = json.loads((run / "results.json").read_text())
        if split is None:
            (run / "results.json").unlink()  # still training: no results yet
        else:
            results["test_split"] = split.split("-")[0]
            (run / "results.json").write_text(json.dumps(results))
        if split == "val-without-last":
            (run / "checkpoints" / "last.pt").unlink()
    server = LiveServer(create_app(discover([str(tmp_path)])))
    try:
        client = httpx.Client(base_url=server.url, timeout=60)
        cards = {c["id"]: c for c in client.get("/api/runs").json()}
        for split, name in cases.items():
            weights = cards[str(split)]["weights"]
            if name is None:
                assert weights.startswith("not shown") and "best.pt was chosen on val" in weights
                assert client.get(f"/api/runs/{split}").status_code == 409
            else:
                assert weights.startswith(f"{name}, {'best' if name == 'best.pt' else 'last'}: "), weights
                st = (tmp_path / str(split) / "checkpoints" / name).stat()  # the file the model loads
                assert cards[str(split)]["version"] == f"{st.st_size:x}-{st.st_mtime_ns:x}"
                full = client.get(f"/api/runs/{split}").json()
                assert full["loaded"] and full["weights"] == weights
        client.close()
    finally:
        server.stop()


@pytest.mark.slow
def test_bench_serve_times_the_page_against_a_real_server(capsys):
    """``alexnet bench serve`` starts a real ``alexnet serve`` process: a prediction's latency beside the
    bare forward pass, and the page's own steps in the order they happen (card, then the index, then
    the test report built after it)."""
    assert main(["bench", "serve", "--models", "alexnet-small", "--repeat", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["models"][0]
    assert r["model"] == "alexnet-small" and r["layers"] == len(LAYERS)
    assert 0 < r["forward_p50"] < r["http_p50"] <= r["http_p90"]  # HTTP, maps and Grad-CAM cost more
    assert 0 < r["card_ms"] < r["index_ms"] < r["report_ms"]
    assert r["unit_p50"] > 0 and r["neighbours_p50"] > 0
