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

from helpers.web import (LAYERS, LiveServer, fake_live_run, metrics_record, png_bytes,  # noqa: E402
                         reference_probs, train_tiny_run)

from alexnet.data import build_source  # noqa: E402
from alexnet.web.server import create_app, discover  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
WAIT = 30_000  # ms: the longest any page element may take


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    run = train_tiny_run(tmp_path_factory.getbasetemp() / "web-runs")
    live_run = fake_live_run(tmp_path_factory.mktemp("live-browser"))
    server = LiveServer(create_app(discover([str(run), str(live_run)])))
    shots = Path(os.environ.get("ALEXNET_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True, timeout=WAIT)
        yield {"url": server.url, "run": run, "live": live_run, "browser": browser, "shots": shots}
        browser.close()
    server.stop()


@pytest.fixture
def page(site):
    page = site["browser"].new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(WAIT)
    page.goto(site["url"] + "/")
    page.wait_for_selector("#testset button", state="attached")  # the model card has loaded
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
    for (_, text), p in zip(shown, top.values.tolist()):
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
    page.wait_for_selector("#zoom:not([hidden])")
    # its 5x5 kernel
    page.wait_for_function("() => document.querySelector('#zoom-kernel').naturalWidth === 5")
    assert "rank 1 of 64" in page.text_content("#zoom-title")
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


def test_watch_a_run_train_and_compare(page, site):
    page.select_option("#model-select", "live")
    page.wait_for_function("() => document.querySelector('#live').textContent.includes('epoch 1 of 5')")
    with open(site["live"] / "metrics.jsonl", "a") as f:  # the trainer finishes another epoch
        f.write(json.dumps(metrics_record(2)) + "\n")
    page.wait_for_function("() => document.querySelector('#live').textContent.includes('epoch 2 of 5')",
                           timeout=10_000)
    assert "no checkpoint yet" in page.text_content("#message")
    rows = page.eval_on_selector_all("#compare tr", "rows => rows.map(r => r.cells[0].textContent)")
    assert rows == ["run", "r", "live"]
    page.locator("#model-panel").scroll_into_view_if_needed()
    page.screenshot(path=str(site["shots"] / "explorer-training.png"))
