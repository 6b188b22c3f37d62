"""The studio's page end to end: a real server (uvicorn, in a thread) on the session's tiny runs, driven in
Debian's headless chromium through playwright (never `playwright install`), with every request that is not
to the studio blocked, so the page is shown to work offline.

One walk through the page, in order: pick a run, generate, inpaint a mask painted with the mouse, the
lineage of a result, reuse an item's settings, stream a text, train a run and watch its curve grow, download
a PNG that says how to make it again. A screenshot of each stage goes to tests/artifacts/studio-*.png (or
$GENFORGE_TEST_ARTIFACTS). Without chromium it FAILS; GENFORGE_SKIP_BROWSER=1 skips it on purpose.
"""

from __future__ import annotations

import base64
import io
import re
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from genforge.data.codecs import read_png_params
from browsertools import BROWSER_ARGS, artifacts_dir, chromium
from studiotools import TINY_TRAIN_SETS, copy_runs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

WAIT_MS = 30_000  # one step of the page on a busy 2-core machine
TRAIN_WAIT_S = 120  # ~10 s on an idle 2-core machine; far longer while other test processes share its cores


@pytest.fixture(scope="session")
def chromium_exe() -> str:
    """Checked before the runs are trained, so a skip or a missing browser costs nothing."""
    return chromium()


@pytest.fixture
def studio_url(chromium_exe, studio_runs, tmp_path):
    """`genforge serve` on a copy of the session's runs: uvicorn in a thread, on a free loopback port."""
    import uvicorn

    from genforge.serve.app import create_app

    app = create_app(copy_runs(studio_runs, tmp_path / "runs"), device="cpu", cpu_jobs=2)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="studio-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the studio server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


# every image a selector matches has loaded, at the 8x8 pixels of the digits runs
DECODED = "sel => [...document.querySelectorAll(sel)].every(i => i.complete && i.naturalWidth === 8)"


def _wait(page, script: str, arg=None, timeout: int = WAIT_MS):
    """Waits until the JavaScript function `script` returns something truthy, and returns it."""
    return page.wait_for_function(script, arg=arg, timeout=timeout).json_value()


def test_studio_page_end_to_end(chromium_exe, studio_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    shots = artifacts_dir()
    outside: list[str] = []  # requests for anything but the studio: none may even be attempted
    problems: list[str] = []  # console errors and uncaught exceptions of the page
    laps: list[tuple[str, float]] = []

    def lap(name: str) -> None:  # how long each stage took (printed: `pytest -s` shows them)
        now = time.monotonic()
        if laps:
            print(f"studio page: {laps[-1][0]} took {now - laps[-1][1]:.1f} s")
        laps.append((name, now))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_exe, args=BROWSER_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)

            def gate(route):
                if route.request.url.startswith(studio_url + "/"):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            context.route("**/*", gate)
            page = context.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

            # ---- pick the diffusion run: its view, curve and grid --------------------------------------------
            lap("open")
            page.goto(studio_url + "/", wait_until="load")
            page.get_by_test_id("run-diff").click()
            expect(page.locator("#run-title")).to_have_text("diff")
            expect(page.locator("#run-about")).to_contain_text("diffusion")
            expect(page.locator("#run-grid img")).to_have_count(1)
            expect(page.locator("#run-curve")).to_have_attribute("data-points", re.compile(r"^[1-9]"))  # its losses
            # the form comes from the run's declared sample settings
            for name in ("steps", "sampler", "label"):
                expect(page.get_by_test_id(f"setting-{name}")).to_be_visible()
            assert page.locator("#gen-settings select[name=sampler] option").count() > 1

            # ---- generate 4 images with seed 7 and 4 steps --------------------------------------------------
            lap("generate")
            page.get_by_test_id("seed").fill("7")
            page.get_by_test_id("count").fill("4")
            page.get_by_test_id("setting-steps").fill("4")
            page.get_by_test_id("generate").click()
            batch = page.locator("#outputs .batch").first
            expect(batch.locator(".card img")).to_have_count(4)
            expect(page.locator("#gen-job")).to_have_attribute("data-status", "done")
            expect(page.get_by_test_id("seed-shown")).to_be_visible()
            expect(page.get_by_test_id("seed-shown").locator(".value")).to_have_text("7")
            _wait(page, DECODED, "#outputs .card img")
            generated = batch.locator(".card").first.get_attribute("data-item-id")
            page.screenshot(path=str(shots / "studio-generate.png"), full_page=True)

            # ---- refine: paint a mask with the mouse, inpaint ---------------------------------------------------
            lap("refine")
            batch.locator(".card").first.get_by_test_id("action-refine").click()
            dialog = page.get_by_test_id("refine-panel")
            expect(dialog).to_be_visible()
            expect(page.get_by_test_id("refine-mode")).to_have_value("inpaint")
            canvas = page.get_by_test_id("mask-canvas")
            assert _wait(page, "() => document.querySelector('#mask-canvas').width") == 8  # the image's own pixels
            assert canvas.evaluate("c => c.height") == 8
            box = canvas.bounding_box()
            assert box["width"] >= 64  # shown scaled up
            page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.5, steps=8)
            page.mouse.up()
            painted = int(canvas.get_attribute("data-painted"))
            assert 0 < painted < 64
            # what the server will get: an 8x8 PNG, white where painted, black elsewhere, nothing transparent
            url = canvas.evaluate("c => c.toDataURL('image/png')")
            mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))
            assert mask.shape == (8, 8, 4) and (mask[..., 3] == 255).all()
            white = (mask[..., :3] == 255).all(axis=-1)
            assert white.sum() == painted and (mask[..., :3][~white] == 0).all()
            page.locator("#refine-count").fill("2")
            page.get_by_test_id("refine-run").click()
            results = page.get_by_test_id("refine-outputs").locator(".card")
            expect(results).to_have_count(2)
            expect(page.locator("#refine-job")).to_have_attribute("data-status", "done")
            _wait(page, DECODED, "#refine-outputs .card img")
            assert results.first.get_attribute("data-mode") == "inpaint"
            page.screenshot(path=str(shots / "studio-refine.png"))

            # ---- lineage of a result: its parent is the generated image ------------------------------------------
            lap("lineage")
            results.first.get_by_test_id("action-lineage").click()
            lineage = page.get_by_test_id("lineage-panel")
            expect(lineage).to_be_visible()
            chain = page.get_by_test_id("lineage-chain")
            expect(chain.get_by_test_id("lineage-node")).to_have_count(2)
            assert chain.get_by_test_id("lineage-node").first.get_attribute("data-item-id") == generated
            expect(chain.get_by_test_id("lineage-edge")).to_contain_text("inpaint")
            page.screenshot(path=str(shots / "studio-lineage.png"))
            lineage.locator(".close-dialog").click()
            dialog.locator(".close-dialog").click()
            expect(dialog).to_be_hidden()

            # ---- reuse settings: the form gets the item's seed, count and steps back ---------------------------
            lap("reuse")
            page.get_by_test_id("seed").fill("-1")
            page.get_by_test_id("count").fill("1")
            page.get_by_test_id("setting-steps").fill("")
            batch.locator(".card").nth(1).get_by_test_id("action-reuse").click()
            expect(page.get_by_test_id("seed")).to_have_value("7")
            expect(page.get_by_test_id("count")).to_have_value("4")
            expect(page.get_by_test_id("setting-steps")).to_have_value("4")

            # ---- a text run: the prompt and the continuation stream into the page ------------------------------
            lap("text")
            page.get_by_test_id("run-code").click()
            expect(page.locator("#run-title")).to_have_text("code")
            expect(page.get_by_test_id("prompt")).to_be_visible()
            expect(page.get_by_test_id("infill-form")).to_be_visible()  # the run was trained for fill-in-the-middle
            expect(page.locator("#run-grid pre")).not_to_be_empty()  # a text run's sample "grid" is text
            # every change of the live text is recorded, to see it grow piece by piece
            page.evaluate("""() => {
                window.streamLengths = [];
                const pre = document.querySelector('#gen-job .stream');
                new MutationObserver(() => window.streamLengths.push(pre.textContent.length))
                    .observe(pre, {childList: true, characterData: true, subtree: true});
            }""")
            prompt = "def f(x):"
            page.get_by_test_id("prompt").fill(prompt)
            page.get_by_test_id("count").fill("1")
            page.get_by_test_id("setting-max_new_tokens").fill("24")
            page.get_by_test_id("generate").click()
            expect(page.locator("#outputs .card")).to_have_count(1)
            expect(page.locator("#gen-job")).to_have_attribute("data-status", "done")
            stream = page.locator("#gen-job .stream")
            expect(stream).to_be_visible()
            assert int(stream.get_attribute("data-pieces")) >= 2
            streamed = stream.text_content()
            assert streamed.startswith(prompt) and len(streamed) > len(prompt)
            lengths = page.evaluate("window.streamLengths")
            grown = [n for n in lengths if n > 0]
            assert len(grown) >= 2 and grown == sorted(grown) and grown[0] < grown[-1], lengths
            text_card = page.locator("#outputs .card").first
            expect(text_card.get_by_test_id("item-text")).to_have_text(streamed)
            expect(text_card.get_by_test_id("action-continue")).to_be_visible()
            page.screenshot(path=str(shots / "studio-text.png"), full_page=True)

            # ---- train a tiny run from the page; its curve grows while it trains ------------------------------
            lap("train")
            page.get_by_test_id("tab-train").click()
            page.get_by_test_id("train-name").fill("tiny")
            page.get_by_test_id("train-family").select_option("diffusion")
            page.get_by_test_id("train-data").fill("digits")
            page.get_by_test_id("train-steps").fill("30")
            page.get_by_test_id("train-sets").fill("\n".join(TINY_TRAIN_SETS))
            page.get_by_test_id("train-start").click()
            expect(page.get_by_test_id("train-live")).to_be_visible()
            curve = page.get_by_test_id("train-curve")
            seen: list[int] = []
            deadline = time.monotonic() + TRAIN_WAIT_S
            while page.locator("#train-job").get_attribute("data-status") in ("queued", "running", "cancelling"):
                assert time.monotonic() < deadline, f"training did not finish; curve points seen: {seen}"
                points = int(curve.get_attribute("data-points"))
                if points and (not seen or points != seen[-1]):
                    seen.append(points)
                page.wait_for_timeout(150)
            expect(page.locator("#train-job")).to_have_attribute("data-status", "done")
            expect(curve).to_have_attribute("data-points", "30")  # one main/loss record a step (train.log_every=1)
            assert len(seen) >= 2 and seen == sorted(seen), f"the curve did not redraw while training: {seen}"
            expect(page.locator("#train-grid img")).to_have_count(1)
            page.screenshot(path=str(shots / "studio-train.png"), full_page=True)
            expect(page.get_by_test_id("run-tiny")).to_be_visible()  # the run list knows the new run

            # ---- the gallery: find the seed-7 images and download one --------------------------------------------
            lap("gallery")
            page.get_by_test_id("tab-gallery").click()
            page.locator("#gf-run").select_option("diff")
            page.locator("#gf-mode").fill("sample")
            page.locator("#gf-setting").fill("seed=7")
            page.get_by_test_id("gallery-search").click()
            expect(page.get_by_test_id("gallery-total")).to_contain_text("of 4")
            cards = page.get_by_test_id("gallery-items").locator(".card")
            expect(cards).to_have_count(4)
            page.screenshot(path=str(shots / "studio-gallery.png"), full_page=True)
            with page.expect_download() as info:
                cards.first.get_by_test_id("action-download").click()
            download = info.value
            saved = tmp_path / download.suggested_filename
            download.save_as(saved)
            assert saved.suffix == ".png" and download.suggested_filename.startswith("genforge-diff-")
            params = read_png_params(saved)
            assert params["seed"] == 7 and params["steps"] == 4 and params["run"] == "diff", params

            lap("end")
            assert page.locator("#message.error").count() == 0, page.locator("#message").text_content()
            context.close()
        finally:
            browser.close()

    assert not outside, f"the page asked for something outside the studio: {outside}"
    assert not problems, problems
    for name in ("generate", "refine", "lineage", "text", "train", "gallery"):
        assert (shots / f"studio-{name}.png").stat().st_size > 5_000, name
