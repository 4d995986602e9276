"""edgekit serve --ui in a real browser: headless Debian chromium driven by Playwright.

Screenshots are kept in test-artifacts/ (git ignores it) for a person to look at."""

from pathlib import Path

import numpy as np
import pytest

from tests.integration.conftest import Server, require_browser

pytest.importorskip("torch")
pytest.importorskip("gradio")
pytestmark = [pytest.mark.integration, pytest.mark.slow]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(bundles):
    s = Server([*bundles, "--ui"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def page(server):
    chromium = require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.refused = []  # every 4xx/5xx the browser met while the page loaded
        page.on("response", lambda r: page.refused.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(f"{server.url}/ui/", wait_until="networkidle", timeout=60_000)
        yield page
        browser.close()


def test_the_page_finds_everything_it_links(page, server):
    """Gradio's page links /manifest.json (and browsers ask /favicon.ico) at the server's root,
    above the /ui mount: each answered 404."""
    import re
    import urllib.request

    assert not page.refused, page.refused
    with urllib.request.urlopen(f"{server.url}/ui/", timeout=30) as answer:
        html = answer.read().decode()
    rooted = sorted(set(re.findall(r'(?:href|src)="(/[^/"][^"]*)"', html)) | {"/favicon.ico"})
    assert "/manifest.json" in rooted
    for path in rooted:
        with urllib.request.urlopen(f"{server.url}{path}", timeout=30) as answer:  # follows redirects
            assert answer.status == 200, path


def test_upload_a_digit_and_see_its_label(page, tmp_path):
    from PIL import Image

    from edgekit.zoo import digits

    _, x_test, _, y_test = digits._split()
    index = int(np.flatnonzero(y_test == 7)[0])
    paper = Image.fromarray(255 - (x_test[index][0] * 255).astype(np.uint8)).resize((96, 96), Image.BILINEAR)
    picture = tmp_path / "seven.png"
    paper.save(picture)
    page.get_by_role("tab", name="digits-cnn (1)").click()
    page.locator("#input-digits-cnn input[type=file]").set_input_files(str(picture))
    page.locator("#input-digits-cnn img").first.wait_for(timeout=30_000)
    page.click("#predict-digits-cnn")
    label = page.locator("#output-digits-cnn h2, #output-digits-cnn .output-class").first
    label.wait_for(timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-digits.png"), full_page=True)
    assert label.inner_text().strip() == "7"


def test_type_a_sentence_and_see_its_embedding(page):
    page.get_by_role("tab", name="minilm (3)").click()
    page.locator("#input-minilm textarea").fill("A cat sits on the mat.")
    page.click("#predict-minilm")
    result = page.locator("#output-minilm")
    page.wait_for_function("document.querySelector('#output-minilm').innerText.includes('384')", timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-minilm.png"), full_page=True)
    text = result.inner_text()
    assert "dimensions" in text and "384" in text and "norm" in text


def test_a_wrong_input_is_said_in_the_page_and_the_server_keeps_serving(page):
    page.get_by_role("tab", name="minilm (3)").click()
    page.locator("#input-minilm textarea").fill("   ")
    page.click("#predict-minilm")
    page.get_by_text("type some text first").first.wait_for(timeout=30_000)


def test_the_ui_api_reads_no_file_a_client_names(server, tmp_path):
    """Gradio's API takes {"path": ...} for a picture; only a file a user uploaded may be used,
    never one that merely lies on the server's disk (it was predicted on before)."""
    import json

    from PIL import Image

    secret = tmp_path / "secret.png"
    Image.fromarray(np.eye(32, dtype=np.uint8) * 255).save(secret)
    info = json.loads(server.request("GET", "/ui/gradio_api/info")[1])
    name = next(n for n, e in info["named_endpoints"].items() if e["parameters"][0]["label"] == "picture")
    body = json.dumps({"data": [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}]}).encode()
    status, reply, _ = server.request("POST", f"/ui/gradio_api/call{name}", body, {"Content-Type": "application/json"})
    assert status == 200, reply
    events = server.request("GET", f"/ui/gradio_api/call{name}/{json.loads(reply)['event_id']}")[1].decode()
    assert events.startswith("event: error") and "not uploaded by a user" in events, events[:300]
