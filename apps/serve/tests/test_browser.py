"""End to end in a real browser: Debian's chromium (headless, driven by Playwright) loads the page of a live
uvicorn server, uploads an image to restoration (real tiny HAT run) and anomaly (the real sa_anomaly predictor
around a tiny untrained FOD; the contract fake if the package cannot be imported), sees the results render,
sees a rejected upload's message, and saves a screenshot."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sa_serve.app import ServeSettings, create_app
from sa_serve.registry import ModelSource

CHROMIUM = os.environ.get("SA_SERVE_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 120_000  # hang guard of every browser wait (each waits for well under a second of work)


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} not installed (the Makefile installs it)")
def test_page_uploads_to_restoration_and_anomaly(restoration_run, kit, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    rng = np.random.default_rng(3)
    img = tmp_path / "lr.png"
    img.write_bytes(kit.png_bytes((rng.random((20, 24, 3)) * 255).astype(np.uint8)))
    text = tmp_path / "not-an-image.png"
    text.write_text("this is text, whatever the extension says")
    anomaly = kit.real_anomaly_factory() or kit.FakeAnomalyPredictor  # the real FOD (untrained) once it landed
    settings = ServeSettings(
        sources=(ModelSource("restoration", run_dir=str(restoration_run)), ModelSource("anomaly", factory=anomaly))
    )
    with kit.LiveServer(create_app(settings)) as srv, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            # instead of Playwright's defaults (5 s for expect, 30 s for page waits)
            page.set_default_timeout(WAIT_MS)
            page.set_default_navigation_timeout(WAIT_MS)
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(srv.url + "/")
            expect(page.locator("#tab-restoration")).to_be_visible(timeout=WAIT_MS)
            expect(page.locator("#tab-anomaly")).to_be_visible(timeout=WAIT_MS)

            # restoration: before/after slider with the x2 output
            page.set_input_files("[data-testid=restoration-file]", str(img))
            page.click("[data-testid=restoration-run]")
            after = page.locator("[data-testid=restoration-after]")
            expect(after).to_be_visible(timeout=WAIT_MS)
            page.wait_for_function("document.querySelector('[data-testid=restoration-after]').naturalWidth > 0")
            assert after.evaluate("e => [e.naturalWidth, e.naturalHeight]") == [48, 40]
            expect(page.locator("#panel-restoration input[type=range]")).to_be_visible(timeout=WAIT_MS)

            # a rejected upload shows the server's message and the page keeps working
            page.set_input_files("[data-testid=restoration-file]", str(text))
            page.click("[data-testid=restoration-run]")
            err = page.locator("#panel-restoration .error")
            expect(err).to_be_visible(timeout=WAIT_MS)
            expect(err).to_contain_text("Rejected (HTTP 415)", timeout=WAIT_MS)
            expect(err).to_contain_text("unknown data", timeout=WAIT_MS)

            # anomaly: score + heatmap overlay
            page.click("#tab-anomaly")
            page.set_input_files("[data-testid=anomaly-file]", str(img))
            page.click("[data-testid=anomaly-run]")
            score = page.locator("[data-testid=anomaly-score]")
            expect(score).to_be_visible(timeout=WAIT_MS)
            expect(score).to_contain_text("score ", timeout=WAIT_MS)
            expected = "threshold" if anomaly is kit.FakeAnomalyPredictor else "no threshold"
            expect(score).to_contain_text(expected, timeout=WAIT_MS)
            page.wait_for_function("document.querySelector('[data-testid=anomaly-heatmap]').naturalWidth > 0")
            shot = tmp_path / "sa-serve-anomaly.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5000 and shot.read_bytes().startswith(b"\x89PNG")
            assert all(u.startswith(srv.url) or u.startswith("blob:") or u.startswith("data:") for u in requests)
        finally:
            browser.close()
