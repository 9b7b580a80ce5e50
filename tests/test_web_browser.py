"""The explorer page in a real browser: Debian's chromium driven by Playwright.

Draws a digit, uploads files, picks a test image, opens a map, watches a run train. The answers on the
page are checked against the trained model run here by hand with torch. Screenshots go to
``$ALEXNET_SCREENSHOTS`` (docs/explorer.md shows them), else to the test's temporary folder.
"""

import base64
import io
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package")
pytest.importorskip("uvicorn")

from helpers.web import (LAYERS, LiveServer, metrics_record, png_bytes, reference_probs,  # noqa: E402
                         train_tiny_run)

from alexnet.checkpoint import save_checkpoint  # noqa: E402
from alexnet.data import build_source  # noqa: E402
from alexnet.data.transforms import Normalization, Preset  # noqa: E402
from alexnet.models import create_model, list_models  # noqa: E402
from alexnet.models.registry import model_cfg  # noqa: E402
from alexnet.training.rundir import RunDir  # noqa: E402
from alexnet.web.server import create_app, discover  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
WAIT = 30_000  # ms: the longest any page element may take


def untrained_run(root: Path, name: str, data: str | None) -> Path:
    """A run folder holding an untrained checkpoint of model ``name`` (10 classes), as a trainer leaves
    one after its first epoch: ``config.json`` and ``checkpoints/best.pt``. The large fully connected
    layers of the photograph models get one random weight per output unit, stored once (a stride-0
    tensor: a small file), so that the folder costs little to write; every other weight is random."""
    torch.manual_seed(0)
    with torch.device("meta"):  # the shapes only: no time spent initializing 60 million weights
        shapes = create_model(name, num_classes=10).state_dict()
    state = {}
    for key, v in shapes.items():
        if not v.is_floating_point():
            state[key] = torch.zeros(v.shape, dtype=v.dtype)
        elif key.endswith("running_var") or (v.dim() == 1 and key.endswith("weight")):
            state[key] = torch.ones(v.shape)
        elif v.dim() == 1:
            state[key] = 0.01 * torch.randn(v.shape)
        elif v.dim() == 2 and v.numel() > 2**20:
            state[key] = (torch.randn(v.shape[0], 1) * math.sqrt(2 / v.shape[1])).expand(v.shape)
        else:
            state[key] = torch.randn(v.shape) * math.sqrt(2 / v[0].numel())  # He et al.'s scale
    c, side = shapes_input(name)
    norm = Normalization.torchvision() if c == 3 else Normalization.per_channel([40.0], [80.0])
    preset = Preset(train=False, crop=side, base_size=side if side < 64 else 256, norm=norm)
    classes = [str(i) for i in range(10)]
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    save_checkpoint(run / "checkpoints" / "best.pt", dict(
        model_name=name, num_classes=10, model_options={}, model=state, preset=preset.to_dict(),
        classes=classes, class_names=[f"class {i}" for i in range(10)], data=data))
    (run / "config.json").write_text(json.dumps({"config": {"model": name, "data": data, "epochs": 1}}))
    return run


def shapes_input(name: str) -> tuple[int, int]:
    c, side, _ = model_cfg(name).input_size
    return c, side


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One server and one browser for the module: the trained digits run, a run in progress, and an
    untrained checkpoint of every other registered model, all in folders the server was given."""
    run = train_tiny_run(tmp_path_factory.getbasetemp() / "web-runs")
    live_run = tmp_path_factory.mktemp("live-browser") / "live"
    live_run.mkdir()
    held = RunDir(live_run)
    held.lock()  # as a training process holds its run's lock
    (live_run / "config.json").write_text(json.dumps({"config": {"model": "alexnet-small", "data": "digits",
                                                                 "epochs": 5, "recipe": "small"}}))
    (live_run / "metrics.jsonl").write_text(json.dumps(metrics_record(1)) + "\n")
    models = tmp_path_factory.mktemp("models")
    for name in list_models():
        if name != "alexnet-small":  # the trained run is that one
            untrained_run(models, name, None)
    server = LiveServer(create_app(discover([str(run), str(live_run), str(models)])))
    shots = Path(os.environ.get("ALEXNET_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True, timeout=WAIT)
        yield {"url": server.url, "run": run, "live": live_run, "held": held, "models": models,
               "browser": browser, "shots": shots}
        browser.close()
    server.stop()
    held.unlock()


def open_page(site, width=1400, height=1000):
    page = site["browser"].new_page(viewport={"width": width, "height": height})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(WAIT)
    page.goto(site["url"] + "/")
    page.wait_for_selector("#testset button", state="attached")  # the model card has loaded
    return page, errors


@pytest.fixture
def page(site):
    page, errors = open_page(site)
    yield page
    page.close()
    assert errors == [], errors


def settle(page):
    """Wait until the page has no prediction in flight and none queued."""
    page.wait_for_function("() => !state.drawPending && !state.busy && !state.again")


def bars(page):
    return page.eval_on_selector_all(
        "#bars .bar", "els => els.map(e => [e.dataset.class, e.querySelector('.pct').textContent])")


def check_bars(page, probs):
    shown = bars(page)
    top = probs.topk(5)
    assert [c for c, _ in shown] == [str(i) for i in top.indices.tolist()]  # classes "0".."9" are the indices
    for (_, text), p in zip(shown, top.values.tolist()):  # one decimal; below it a bound, never "0.0%"
        if text == "<0.1%":
            assert 100 * p < 0.05
        elif text == ">99.9%":
            assert 99.95 < 100 * p < 100
        else:
            assert re.fullmatch(r"\d+\.\d%", text) and text != "0.0%", text
            assert float(text.rstrip("%")) == pytest.approx(100 * p, abs=0.051)


BLANK_CHECK = """canvas => {
  const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let coloured = 0;
  for (let i = 0; i < d.length; i += 4) {
    const white = d[i] === 255 && d[i + 1] === 255 && d[i + 2] === 255;
    const zero = d[i] === 0 && d[i + 1] === 0 && d[i + 2] === 4;  // the colour scale's 0
    if (!white && !zero) coloured++;
  }
  return coloured;
}"""


def test_draw_a_digit(page, site):
    box = page.locator("#draw").bounding_box()
    cx, cy = box["x"] + 140, box["y"] + 140
    ring = [(cx + 60 * math.sin(t * math.pi / 20), cy - 95 * math.cos(t * math.pi / 20)) for t in range(41)]
    page.mouse.move(*ring[0])
    page.mouse.down()
    for x, y in ring[1:]:  # a 0, one stroke; the page predicts while it is drawn
        page.mouse.move(x, y, steps=2)
    page.mouse.up()
    settle(page)
    page.wait_for_selector("#bars .bar")
    data_url = page.evaluate("document.querySelector('#draw').toDataURL('image/png')")
    drawn = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("L")
    small = np.array(drawn.resize((28, 28), Image.Resampling.BILINEAR))
    check_bars(page, reference_probs(site["run"], torch.from_numpy(small)[None, None])[0])
    for name in LAYERS:
        coloured = page.eval_on_selector(f"canvas[data-layer='{name}']", BLANK_CHECK)
        assert coloured > 0, f"the {name} maps are blank"
    assert page.eval_on_selector("#cam", "c => c.getContext('2d').getImageData(0, 0, c.width, c.height)"
                                          ".data.some((v, i) => i % 4 === 3 && v > 100)")
    page.wait_for_function("() => [...document.querySelectorAll('#neighbours img')]"
                           ".filter(i => i.complete && i.naturalWidth === 28).length === 8")
    assert page.locator("#message").is_hidden()
    page.screenshot(path=str(site["shots"] / "explorer-draw.png"), full_page=False)


def test_upload_a_test_image_and_open_a_map(page, site, tmp_path):
    digits = build_source("digits")
    image = digits.split("test")[33][0]
    path = tmp_path / "digit.png"
    path.write_bytes(png_bytes(image[0].numpy()))
    page.click("button[data-tab=upload]")
    page.set_input_files("#file", str(path))
    page.wait_for_function("() => document.querySelector('#input-info').textContent.includes('PNG')")
    settle(page)
    check_bars(page, reference_probs(site["run"], image[None])[0])
    page.locator("canvas[data-layer=conv1]").click(position={"x": 5, "y": 5})  # the strongest map
    page.wait_for_selector("#zoom[open]")
    # its 5x5 kernel
    page.wait_for_function("() => document.querySelector('#zoom-kernel').naturalWidth === 5")
    assert "rank 1 of 64" in page.text_content("#zoom-title")
    assert "5x5 convolution" in page.text_content("#zoom-caption")
    page.keyboard.press("Escape")
    page.locator("canvas[data-layer=conv3]").click(position={"x": 5, "y": 5})  # a deep map: no kernel picture
    page.wait_for_function("() => [...document.querySelectorAll('#zoom-kernel-box .examples img')]"
                           ".filter(i => i.complete && i.naturalWidth > 0).length === 8")
    assert page.locator("#zoom-kernel").count() == 0
    page.screenshot(path=str(site["shots"] / "explorer-zoom.png"))
    page.keyboard.press("Escape")
    page.locator("canvas[data-layer=conv3]").scroll_into_view_if_needed()
    page.screenshot(path=str(site["shots"] / "explorer-layers.png"))


def test_pick_from_the_test_set(page, site):
    digits = build_source("digits")
    page.click("button[data-tab=testset]")
    button = page.locator("#testset button").nth(3)
    index = int(button.get_attribute("data-index"))
    button.click()
    page.wait_for_function("() => document.querySelector('#input-info').textContent.includes('test image "
                           f"{index}')")
    settle(page)
    check_bars(page, reference_probs(site["run"], digits.split("test")[index][0][None])[0])


def test_bad_uploads_show_their_message(page, tmp_path):
    page.click("button[data-tab=upload]")
    text = tmp_path / "notes.png"
    text.write_text("not an image\n" * 10)
    page.set_input_files("#file", str(text))
    page.wait_for_selector("#message:not([hidden])")
    assert "notes.png: not a readable image" in page.text_content("#message")
    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff" * (21 * 2**20))
    page.set_input_files("#file", str(big))
    page.wait_for_function("() => document.querySelector('#message').textContent.startsWith('Too large')")
    assert "20 MB" in page.text_content("#message")
    page.screenshot(path=str(tmp_path / "bad.png"))
    huge = tmp_path / "huge.png"  # 0.1 MB, 9450x9460 pixels: refused from its header, before decoding
    Image.new("L", (9450, 9460), 128).save(huge)
    page.set_input_files("#file", str(huge))
    page.wait_for_function("() => document.querySelector('#message').textContent.includes('9450x9460')")
    assert page.text_content("#message").startswith("Too large: huge.png: 9450x9460 pixels is more than this")
    tiny = tmp_path / "dot.png"
    tiny.write_bytes(png_bytes(np.zeros((1, 1), np.uint8)))
    page.set_input_files("#file", str(tiny))
    page.wait_for_function("() => document.querySelector('#message').textContent.includes('too small')")
    good = tmp_path / "ok.png"
    good.write_bytes(png_bytes(np.full((28, 28), 0, np.uint8)))
    page.set_input_files("#file", str(good))  # the server kept serving; the message goes away
    page.wait_for_selector("#message", state="hidden")


def test_a_run_in_progress_updates_and_switches_to_finished(page, site):
    """The curves gain an epoch, the training doctor's record shows, and when the run ends its status
    says so in the header and the card without a reload."""
    page.select_option("#model-select", "live")
    page.wait_for_function("() => document.querySelector('#live').textContent.includes('epoch 1 of 5')")
    assert page.text_content("#model-status") == "training"
    assert "no checkpoint yet" in page.text_content("#message")
    assert page.locator("#health table").count() == 0  # no health record: nothing shown
    health = {"layers": [{"name": "conv1", "act_mean": 0.31, "act_std": 0.5, "dead_fraction": 0.02,
                          "grad_norm": 0.12, "weight_norm": 3.2, "update_ratio": 1e-3},
                         {"name": "conv2", "act_mean": 0.0, "act_std": 0.0, "dead_fraction": 0.97,
                          "grad_norm": 0.0, "weight_norm": 5.1, "update_ratio": 0.0}],
              "alerts": [{"kind": "dead_relu", "step": 40, "message": "conv2: 97% of its units never fire"}]}
    with open(site["live"] / "metrics.jsonl", "a") as f:  # the trainer finishes another epoch
        f.write(json.dumps(metrics_record(2) | {"health": health}) + "\n")
    page.wait_for_function("() => document.querySelector('#live').textContent.includes('epoch 2 of 5')",
                           timeout=10_000)
    rows = page.eval_on_selector_all("#health-table tr",
                                     "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
    assert [r[0] for r in rows] == ["layer", "conv1", "conv2"]
    assert rows[2][3] == "97.0%"  # the dead fraction of conv2
    assert "conv2: 97% of its units never fire" in page.text_content("#health .alerts")
    assert page.locator("#health-table tr.alert").count() == 1  # the layer the alert names
    page.locator("#model-panel").scroll_into_view_if_needed()
    page.screenshot(path=str(site["shots"] / "explorer-training.png"))
    results = {"test_top1_accuracy": 0.5, "test_top1_error": 0.5}
    (site["live"] / "results.json").write_text(json.dumps(results))
    (site["live"] / "state.json").write_text(json.dumps({"state": "finished", "reason": "", "pid": 1}))
    site["held"].unlock()  # the trainer's process ends
    page.wait_for_function("() => document.querySelector('#model-status').textContent === 'finished'",
                           timeout=10_000)
    page.wait_for_function("() => [...document.querySelectorAll('#card dd')].some(d => d.textContent === "
                           "'finished')")
    assert page.locator("#live").is_hidden()


ALPHA_RANGE = """c => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lo = 255, hi = 0;
  for (let i = 3; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
  return [lo, hi];
}"""


def test_each_registered_model_has_its_own_page(page, site, tmp_path):
    """Captions, the heat map's layer and the tower text come from the model itself; the heat map is
    not uniform."""
    digit = tmp_path / "digit.png"
    digit.write_bytes(png_bytes(build_source("digits").split("test")[5][0][0].numpy()))
    for name in list_models():
        rid = "r" if name == "alexnet-small" else name
        model = create_model(name, num_classes=10)
        page.select_option("#model-select", rid)
        page.wait_for_function(f"() => state.card && state.card.id === '{rid}' && state.card.loaded")
        if model.input_size[0] == 3:
            page.click("#tabbtn-samples")
            page.click("#samples button[title='china.jpg']")
        else:
            page.click("#tabbtn-upload")
            page.set_input_files("#file", str(digit))
        page.wait_for_function(f"() => state.answer && state.answer.model === '{rid}'")
        settle(page)
        # the reference: the model's own modules, read here without the explainer
        convs = [m for m in model.features.children() if isinstance(m, torch.nn.Conv2d)]
        headings = page.eval_on_selector_all("#layers .layer h3", "hs => hs.map(h => h.textContent)")
        conv_headings = [h for h in headings if "convolution" in h]
        assert len(conv_headings) == len(convs), (name, headings)
        acts = [m for m in model.features.children() if isinstance(m, (torch.nn.ReLU, torch.nn.Tanh))]
        for heading, conv in zip(conv_headings, convs):
            k = conv.kernel_size[0]
            assert f"{k}x{k} convolution" in heading, (name, heading)
        assert all(("tanh" in h) == isinstance(acts[0], torch.nn.Tanh) for h in conv_headings), name
        for m in model.features.children():
            if isinstance(m, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)):
                kind = "max-pooling" if isinstance(m, torch.nn.MaxPool2d) else "average pooling"
                assert any(f"{m.kernel_size}x{m.kernel_size} {kind}" in h for h in headings), (name, headings)
        # the heat map's layer: the last convolution whose output is larger than 1x1, found with hooks
        sizes = {}

        def size(mod, _inputs, out, sizes=sizes):
            sizes[mod] = out.shape[2] * out.shape[3]

        hooks = [c.register_forward_hook(size) for c in convs]
        c, side, _ = model.input_size
        with torch.no_grad():
            model.eval()(torch.zeros(1, c, side, side))
        for h in hooks:
            h.remove()
        spatial = [i for i, conv in enumerate(convs) if sizes[conv] > 1]
        expected = [h for h in conv_headings][spatial[-1]].split()[0]
        assert page.evaluate("state.answer.cam.layer") == expected, name
        assert f"read at {expected}" in page.text_content("#cam-text")
        alpha = page.eval_on_selector("#cam", ALPHA_RANGE)
        assert alpha[1] > alpha[0], f"{name}: the heat map is uniform"
        towers = getattr(model, "towers", 1)
        assert ("towers" in page.text_content("#kernels-text")) == (towers > 1), name
        assert "fc7" not in page.text_content("#neighbours-text") or name not in ("lenet5", "nnott-lenet")
        if name == "lenet5":
            page.screenshot(path=str(site["shots"] / "explorer-lenet5.png"))


def test_phone_layout_has_no_horizontal_overflow(site):
    page, errors = open_page(site, 390, 844)
    page.click("#tabbtn-testset")
    page.locator("#testset button").nth(2).click()
    settle(page)
    page.wait_for_selector("#layers canvas")
    page.wait_for_selector("#confusion button")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.locator("#result-panel").scroll_into_view_if_needed()
    page.screenshot(path=str(site["shots"] / "explorer-phone.png"))
    page.click("header nav a[href='#layers-panel']")  # a section reached from the header shows its title
    page.wait_for_timeout(300)
    top = page.eval_on_selector("#layers-title", "h => h.getBoundingClientRect().top")
    bottom = page.eval_on_selector("#top", "h => h.getBoundingClientRect().bottom")
    assert top >= bottom - 1
    page.close()
    assert errors == [], errors


def test_a_run_created_after_the_server_started_appears_after_reload(page, site):
    shutil.copytree(site["models"] / "lenet5", site["models"] / "lenet5-later")
    page.reload()
    page.wait_for_selector("#testset button", state="attached")
    page.wait_for_function("() => [...document.querySelectorAll('#model-select option')]"
                           ".some(o => o.value === 'lenet5-later')")
    page.select_option("#model-select", "lenet5-later")
    page.wait_for_function("() => state.card && state.card.id === 'lenet5-later' && state.card.loaded")
    shutil.rmtree(site["models"] / "lenet5-later")


def test_the_confusion_matrix_opens_its_images(page, site):
    page.wait_for_selector("#confusion button")
    errors = page.evaluate("state.errors")
    test = build_source("digits").split("test")
    probs = reference_probs(site["run"], test.images)
    predicted = probs.argmax(1)
    expected = torch.zeros(10, 10, dtype=torch.long)
    for y, p in zip(test.targets.tolist(), predicted.tolist()):
        expected[y, p] += 1
    assert errors["confusion"] == expected.tolist()
    wrong = (expected - torch.diag(torch.diag(expected))).flatten().argmax()
    i, j = divmod(int(wrong), 10)  # the most frequent mistake
    page.click(f"#confusion button[data-cell='{i},{j}']")
    shown = page.eval_on_selector_all("#cell-images button", "bs => bs.map(b => +b.dataset.index)")
    assert shown == [k for k in range(len(test)) if test.targets[k] == i and predicted[k] == j][:60]
    page.locator("#cell-images button").first.click()
    page.wait_for_function(f"() => state.answer && state.answer.input.source === 'test image {shown[0]}'")
    assert page.locator("#bars .bar.true").count() + page.locator("#bars > .bar.true").count() >= 1
    page.click("#tabbtn-testset")
    page.check("#only-wrong")  # the picker lists the wrong answers, marked
    marked = page.eval_on_selector_all("#testset button.wrong", "bs => bs.map(b => +b.dataset.index)")
    assert marked and all(predicted[k] != test.targets[k] for k in marked)
    page.locator("#errors-panel").scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    page.screenshot(path=str(site["shots"] / "explorer-errors.png"))


def test_the_map_dialog_by_keyboard_only(page, site):
    page.click("#tabbtn-testset")
    page.locator("#testset button").nth(1).click()
    settle(page)
    page.focus("canvas[data-layer=conv1]")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")  # the second strongest map
    page.wait_for_selector("#zoom[open]")
    assert "rank 2 of 64" in page.text_content("#zoom-title")
    assert page.evaluate("document.activeElement.id") == "zoom-map"
    for _ in range(6):  # focus stays inside the dialog
        page.keyboard.press("Tab")
        assert page.evaluate("document.querySelector('#zoom').contains(document.activeElement)")
    page.focus("#zoom-map")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")  # the arithmetic of the chosen value
    page.wait_for_function("() => document.querySelector('#zoom-math').textContent.includes('bias')")
    unit = page.evaluate("state.unit")
    answer = page.evaluate("state.answer")
    # the value the page explains is the map's own value at that place (uint8-scaled maps: within 1/255)
    layer = next(la for la in answer["layers"] if la["name"] == "conv1")
    text = page.text_content("#zoom-math")
    assert f"row {unit['y'] + 1}, column {unit['x'] + 1}" in text
    page.screenshot(path=str(site["shots"] / "explorer-unit.png"))
    page.keyboard.press("Escape")
    page.wait_for_selector("#zoom", state="hidden")
    assert page.evaluate("document.activeElement.dataset.layer") == layer["name"]


def test_no_serious_accessibility_violations(page, site):
    """axe-core (the engine of the axe browser extension) on the page with an answer shown, and with the
    map dialog open."""
    axe = pytest.importorskip("axe_playwright_python.sync_playwright",
                              reason="the accessibility check needs axe-playwright-python").Axe()
    page.click("#tabbtn-testset")
    page.locator("#testset button").nth(0).click()
    settle(page)
    page.wait_for_selector("#confusion button")
    page.wait_for_function("() => document.querySelectorAll('#neighbours img').length === 8")
    found = axe.run(page).response["violations"]
    serious = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in found
               if v["impact"] in ("serious", "critical")]
    assert serious == [], serious
    page.locator("canvas[data-layer=conv2]").click(position={"x": 5, "y": 5})
    page.wait_for_selector("#zoom[open]")
    found = axe.run(page).response["violations"]
    assert [v["id"] for v in found if v["impact"] in ("serious", "critical")] == []


def test_an_upload_error_leaves_no_stale_answer(page, tmp_path):
    page.click("#tabbtn-testset")
    page.locator("#testset button").nth(0).click()
    settle(page)
    page.wait_for_selector("#bars .bar")
    page.click("#tabbtn-upload")
    bad = tmp_path / "notes.png"
    bad.write_text("not an image\n")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#message:not([hidden])")
    assert page.locator("#bars .bar").count() == 0 and page.locator("#layers canvas").count() == 0
