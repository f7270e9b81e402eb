"""End to end in a real browser: Debian's chromium (headless, driven by Playwright) loads the page of a live
uvicorn server and uses every kind of tab the way a practitioner would:

- restoration (real tiny HAT run): before/after output, a rejected upload's message in the status line;
- anomaly on a wide image: the heatmap is drawn over the input at the input's displayed size and aspect, with an
  opacity slider at 50 % and a colour legend (the real predictor once it answers input-sized maps, a fake that
  does until then);
- medseg: a NIfTI upload shown as scrollable slices (axial / coronal / sagittal) in the vendored NiiVue viewer with
  the label volume over it and a legend; the clear message when the viewer is not vendored; a PNG slice with its
  label overlay registered to it;
- ranking: the tab starts with a filled example (published by the predictor, or built from its feature schema)
  that scores at once;
- a model that failed to load: its tab shows the reason instead of a form, the other tabs work;
- tabs wrap on a narrow screen.

Every request of the page must go to the server (or blob: / data:). Screenshots go to the test's tmp_path and,
when ``SA_SERVE_SCREENSHOTS`` names a folder, there too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sa_serve.app import STATIC_DIR, ServeSettings, create_app
from sa_serve.registry import ModelSource

from shared_attention.serving import IOSpec

CHROMIUM = os.environ.get("SA_SERVE_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 120_000  # hang guard of every browser wait (each waits for well under a second of work)
NIIVUE = STATIC_DIR / "vendor" / "niivue.js"  # written by scripts/vendor-niivue (a build output)

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} not installed (the Makefile installs it)"
)


# ----------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium for the module (WebGL2 through SwiftShader where there is no GPU)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--enable-unsafe-swiftshader"])
        try:
            yield b
        finally:
            b.close()


class Page:
    """A page of the live server that records every request it makes."""

    def __init__(self, browser: Any, url: str, width: int = 1100, height: int = 900) -> None:
        self.url = url
        self.page = browser.new_page(viewport={"width": width, "height": height})
        # instead of Playwright's defaults (5 s for expect, 30 s for page waits)
        self.page.set_default_timeout(WAIT_MS)
        self.page.set_default_navigation_timeout(WAIT_MS)
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))

    def __enter__(self) -> Any:
        return self.page

    def __exit__(self, *exc: Any) -> None:
        self.page.close()

    def assert_only_local(self) -> None:
        outside = [u for u in self.requests if not u.startswith((self.url, "blob:", "data:"))]
        assert not outside, f"the page loaded resources from elsewhere: {outside}"


def save_shot(page: Any, tmp_path: Path, name: str, target: Any = None) -> bytes:
    """A screenshot (of the page, or of ``target``) in tmp_path and in $SA_SERVE_SCREENSHOTS when set."""
    path = tmp_path / name
    if target is None:
        page.screenshot(path=str(path), full_page=True)
    else:
        target.screenshot(path=str(path))
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    if os.environ.get("SA_SERVE_SCREENSHOTS"):
        out = Path(os.environ["SA_SERVE_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / name)
    return data


def decode(png: bytes) -> np.ndarray:
    """PNG bytes -> (H, W, 3) RGB uint8."""
    import cv2

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return np.ascontiguousarray(img[:, :, ::-1])


def box(locator: Any) -> tuple[float, float, float, float]:
    b = locator.bounding_box()
    assert b is not None
    return b["x"], b["y"], b["width"], b["height"]


def set_range(locator: Any, value: int) -> None:
    locator.evaluate("(e, v) => { e.value = String(v); e.dispatchEvent(new Event('input')); }", value)


def anomaly_factory(kit: Any, probe: bytes, shape: tuple[int, int]) -> tuple[Any, bool]:
    """(factory, is_real): the real predictor (tiny untrained FOD) when it already answers a heatmap of the
    input's size, else a fake that does (input-sized map plus ``heatmap_min`` / ``heatmap_max``)."""
    real = kit.real_anomaly_factory()
    if real is not None:
        pred = real()
        if decode(pred(probe)["heatmap_png"]).shape[:2] == shape:
            return (lambda: pred), True

    class InputSizedAnomaly(kit.FakeAnomalyPredictor):
        def postprocess(self, output: dict[str, Any]) -> dict[str, Any]:
            amap = output["map"][0]
            return {**super().postprocess(output), "heatmap_min": float(amap.min()), "heatmap_max": float(amap.max())}

    return InputSizedAnomaly, False


def schema_ranking(kit: Any) -> type:
    """A ranking predictor that publishes no example, only its feature schema (as ``schema`` in its info)."""
    base: Any = kit.FakeRankingPredictor
    first = dataclasses.replace(base.io_spec.inputs[0], constraints={"max_candidates": 100})

    class SchemaRanking(base):
        io_spec = IOSpec(inputs=(first,), outputs=base.io_spec.outputs)

        def info(self) -> dict[str, Any]:
            return {
                **super().info(),
                "schema": {"label": "label", "dense": [{"name": "x"}, {"name": "y"}], "sparse": []},
            }

    return SchemaRanking


def volume_nifti(shape: tuple[int, int, int] = (24, 20, 16)) -> bytes:
    """A gzip'd NIfTI: a bright off-centre ellipsoid on a dim gradient, anisotropic voxels, x axis flipped."""
    import gzip

    import nibabel as nib

    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    data = 0.2 + 0.05 * (x + 1) + 0.7 * (((x - 0.2) / 0.6) ** 2 + (y / 0.5) ** 2 + (z / 0.7) ** 2 < 1)
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])
    return gzip.compress(nib.Nifti1Image(data.astype(np.float32), affine).to_bytes())


# ------------------------------------------------------------------------------------------------- tests


def test_page_uploads_to_restoration_and_anomaly(restoration_run, kit, tmp_path, browser):
    rng = np.random.default_rng(3)
    img = tmp_path / "lr.png"
    img.write_bytes(kit.png_bytes((rng.random((20, 24, 3)) * 255).astype(np.uint8)))
    wide_px = (rng.random((40, 120, 3)) * 255).astype(np.uint8)
    wide_px[10:30, 70:90] = 255  # a bright square: the fake's "anomaly"
    wide = tmp_path / "wide.png"
    wide.write_bytes(kit.png_bytes(wide_px))
    text = tmp_path / "not-an-image.png"
    text.write_text("this is text, whatever the extension says")
    anomaly, real = anomaly_factory(kit, wide.read_bytes(), (40, 120))
    settings = ServeSettings(
        sources=(ModelSource("restoration", run_dir=str(restoration_run)), ModelSource("anomaly", factory=anomaly))
    )
    with kit.LiveServer(create_app(settings)) as srv:
        session = Page(browser, srv.url)
        with session as page:
            from playwright.sync_api import expect

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
            expect(page.locator("[data-testid=restoration-status]")).to_contain_text("done", timeout=WAIT_MS)

            # a rejected upload: the server's message, and the status line says it failed (not "running...")
            page.set_input_files("[data-testid=restoration-file]", str(text))
            page.click("[data-testid=restoration-run]")
            err = page.locator("#panel-restoration .error")
            expect(err).to_be_visible(timeout=WAIT_MS)
            expect(err).to_contain_text("Rejected (HTTP 415)", timeout=WAIT_MS)
            expect(err).to_contain_text("unknown data", timeout=WAIT_MS)
            status = page.locator("[data-testid=restoration-status]")
            expect(status).to_contain_text("failed: HTTP 415", timeout=WAIT_MS)

            # anomaly on a 120x40 image: the heatmap covers the input exactly, at the input's aspect
            page.click("#tab-anomaly")
            page.set_input_files("[data-testid=anomaly-file]", str(wide))
            page.click("[data-testid=anomaly-run]")
            score = page.locator("[data-testid=anomaly-score]")
            expect(score).to_be_visible(timeout=WAIT_MS)
            expect(score).to_contain_text("score ", timeout=WAIT_MS)
            expect(score).to_contain_text("no threshold" if real else "threshold", timeout=WAIT_MS)
            heat = page.locator("[data-testid=anomaly-heatmap]")
            base = page.locator("[data-testid=anomaly-input]")
            expect(heat).to_be_visible(timeout=WAIT_MS)
            assert heat.evaluate("e => [e.naturalWidth, e.naturalHeight]") == [120, 40]
            hx, hy, hw, hh = box(heat)
            bx, by, bw, bh = box(base)
            assert (round(hx), round(hy), round(hw), round(hh)) == (round(bx), round(by), round(bw), round(bh))
            assert hw / hh == pytest.approx(3.0, rel=0.03)  # no square map stretched over a wide image
            assert hw > 120  # small inputs are shown enlarged
            opacity = page.locator("[data-testid=anomaly-opacity]")
            assert opacity.input_value() == "50"
            assert float(heat.evaluate("e => getComputedStyle(e).opacity")) == pytest.approx(0.5)
            set_range(opacity, 80)
            assert float(heat.evaluate("e => getComputedStyle(e).opacity")) == pytest.approx(0.8)
            set_range(opacity, 50)
            legend = page.locator("[data-testid=anomaly-legend]")
            expect(legend).to_be_visible(timeout=WAIT_MS)
            assert "gradient" in legend.locator(".gradient").evaluate("e => getComputedStyle(e).backgroundImage")
            if not real:  # the fake publishes the map's range
                lo = float(page.locator("[data-testid=anomaly-legend-min]").inner_text())
                hi = float(page.locator("[data-testid=anomaly-legend-max]").inner_text())
                assert 0 <= lo < hi <= 0.5
            save_shot(page, tmp_path, "sa-serve-anomaly.png")
        session.assert_only_local()


@pytest.fixture(scope="module")
def fake_server(kit: Any) -> Iterator[Any]:
    """A live server with fake medseg, ranking (example published / schema only) and speechsep models."""
    settings = ServeSettings(
        sources=(
            ModelSource("medseg", factory=kit.FakeSegPredictor),
            ModelSource("ranking", factory=kit.FakeRankingPredictor),
            ModelSource("ranking-schema", factory=schema_ranking(kit)),
            ModelSource("speechsep", factory=kit.FakeSeparationPredictor),
        )
    )
    with kit.LiveServer(create_app(settings)) as srv:
        yield srv


def test_page_medseg_shows_png_overlay_and_nifti_slices(fake_server, kit, tmp_path, browser):
    from playwright.sync_api import expect

    srv = fake_server
    rng = np.random.default_rng(5)
    slice_px = (rng.random((30, 50, 3)) * 80).astype(np.uint8)
    slice_px[5:20, 30:45] = 230  # the fake labels pixels above the mean
    png = tmp_path / "slice.png"
    png.write_bytes(kit.png_bytes(slice_px))
    vol = tmp_path / "head.nii.gz"
    vol.write_bytes(volume_nifti())

    # without the vendored viewer: a clear message in the tab, and a NIfTI result still offers its download
    session = Page(browser, srv.url)
    with session as page:
        page.route("**/static/vendor/niivue.js", lambda route: route.fulfill(status=404, body="not found"))
        page.goto(srv.url + "/#medseg")
        missing = page.locator("#panel-medseg > [data-testid=medseg-viewer-missing]")
        expect(missing).to_be_visible(timeout=WAIT_MS)
        expect(missing).to_contain_text("scripts/vendor-niivue", timeout=WAIT_MS)
        page.set_input_files("[data-testid=medseg-file]", str(vol))
        page.click("[data-testid=medseg-run]")
        expect(page.locator("[data-testid=medseg-nifti]")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("[data-testid=medseg-result] [data-testid=medseg-viewer-missing]")).to_be_visible()
        expect(page.locator("[data-testid=medseg-legend]")).to_contain_text("organ", timeout=WAIT_MS)
        assert page.locator("[data-testid=medseg-result] img").count() == 0  # the NIfTI is never an <img>
    session.assert_only_local()

    session = Page(browser, srv.url)
    with session as page:
        page.goto(srv.url + "/#medseg")
        expect(page.locator("#tab-medseg")).to_be_visible(timeout=WAIT_MS)

        # a PNG slice: the label overlay is registered to the input (same size, same displayed box) + legend
        page.set_input_files("[data-testid=medseg-file]", str(png))
        page.click("[data-testid=medseg-run]")
        overlay = page.locator("[data-testid=medseg-overlay]")
        expect(overlay).to_be_visible(timeout=WAIT_MS)
        assert overlay.evaluate("e => [e.width, e.height]") == [50, 30]
        assert tuple(round(v) for v in box(overlay)) == tuple(
            round(v) for v in box(page.locator("[data-testid=medseg-input]"))
        )
        assert page.locator("[data-testid=medseg-opacity]").input_value() == "50"
        expect(page.locator("[data-testid=medseg-legend]")).to_contain_text("organ", timeout=WAIT_MS)
        save_shot(page, tmp_path, "sa-serve-medseg-png.png")

        assert NIIVUE.is_file(), f"{NIIVUE} is missing: run scripts/vendor-niivue (part of the bootstrap)"
        expect(page.locator("#panel-medseg > [data-testid=medseg-viewer-missing]")).to_be_hidden()

        # a NIfTI volume: slices in NiiVue with the predicted labels over them
        page.set_input_files("[data-testid=medseg-file]", str(vol))
        page.click("[data-testid=medseg-run]")
        viewer = page.locator("[data-testid=medseg-viewer]")
        expect(viewer).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        expect(page.locator("[data-testid=medseg-status]")).to_contain_text("done", timeout=WAIT_MS)
        expect(page.locator("[data-testid=medseg-legend]")).to_contain_text("organ", timeout=WAIT_MS)
        assert page.locator("[data-testid=medseg-result] img").count() == 0
        slider = page.locator("[data-testid=medseg-slice]")
        assert slider.get_attribute("max") == "15"  # axial: the 16 slices along z

        def rendered(name: str) -> np.ndarray:
            shot = decode(save_shot(page, tmp_path, name, viewer))
            lit = shot.max(axis=2) > 30
            red = (shot[..., 0].astype(int) - shot[..., 1] > 60) & (shot[..., 0] > 100)  # label 1 over grey
            assert lit.mean() > 0.02, f"{name}: the viewer canvas is blank"
            assert red.sum() > 20, f"{name}: no label overlay drawn"
            return shot

        axial_mid = rendered("sa-serve-medseg-axial.png")
        set_range(slider, 2)
        axial_edge = decode(save_shot(page, tmp_path, "sa-serve-medseg-axial-2.png", viewer))
        assert np.abs(axial_edge.astype(int) - axial_mid).mean() > 0.5  # another slice is shown
        for view, depth in (("coronal", 20), ("sagittal", 24)):
            page.click(f"[data-testid=medseg-view-{view}]")
            assert slider.get_attribute("max") == str(depth - 1)
            rendered(f"sa-serve-medseg-{view}.png")
        page.click("[data-testid=medseg-view-all-three]")
        rendered("sa-serve-medseg-multiplanar.png")
        save_shot(page, tmp_path, "sa-serve-medseg-nifti.png")
    session.assert_only_local()


def test_page_ranking_starts_with_a_filled_example_and_tabs_wrap(fake_server, tmp_path, browser):
    from playwright.sync_api import expect

    srv = fake_server
    session = Page(browser, srv.url)
    with session as page:
        page.goto(srv.url + "/")
        for domain in ("ranking", "ranking-schema"):
            page.click(f"#tab-{domain}")
            area = page.locator(f"[data-testid={domain}-json]")
            rows = json.loads(area.input_value())
            assert isinstance(rows, list) and len(rows) >= 2 and all({"x", "y"} <= set(r) for r in rows)
            page.click(f"[data-testid={domain}-run]")  # no editing: the example scores as it is
            table = page.locator(f"#panel-{domain} [data-testid=ranking-table]")
            expect(table).to_be_visible(timeout=WAIT_MS)
            expect(table.locator("tr")).to_have_count(len(rows) + 1, timeout=WAIT_MS)
            expect(page.locator(f"[data-testid={domain}-status]")).to_contain_text("done", timeout=WAIT_MS)
        save_shot(page, tmp_path, "sa-serve-ranking.png")

        # a bad edit: the status line says what failed
        page.click("#tab-ranking")
        page.locator("[data-testid=ranking-json]").fill('[{"x": "not a number"}]')
        page.click("[data-testid=ranking-run]")
        expect(page.locator("[data-testid=ranking-status]")).to_contain_text("failed: HTTP 422", timeout=WAIT_MS)

        # a narrow screen: the tabs wrap onto more rows instead of running off the page
        page.set_viewport_size({"width": 300, "height": 700})
        tabs = page.locator("#tabs button")
        assert page.locator("#tabs").evaluate("e => getComputedStyle(e).flexWrap") == "wrap"
        boxes = [box(tabs.nth(i)) for i in range(tabs.count())]
        assert all(x + w <= 300 for x, _, w, _ in boxes)
        assert len({round(y) for _, y, _, _ in boxes}) > 1
        save_shot(page, tmp_path, "sa-serve-narrow.png")
    session.assert_only_local()


def test_page_shows_a_failed_models_error(kit, tmp_path, browser):
    """Needs the server to keep serving when one model fails to load (``state: failed`` in /v1/info)."""
    from playwright.sync_api import expect

    def broken() -> Any:
        raise RuntimeError("weights file is corrupt (test)")

    settings = ServeSettings(
        sources=(ModelSource("ranking", factory=kit.FakeRankingPredictor), ModelSource("broken", factory=broken))
    )
    with kit.LiveServer(create_app(settings)) as srv:
        session = Page(browser, srv.url)
        with session as page:
            page.goto(srv.url + "/#broken")
            expect(page.locator("#tab-broken")).to_be_visible(timeout=WAIT_MS)
            err = page.locator("[data-testid=broken-load-error]")
            expect(err).to_be_visible(timeout=WAIT_MS)
            expect(err).to_contain_text("failed to load", timeout=WAIT_MS)
            expect(err).to_contain_text("weights file is corrupt (test)", timeout=WAIT_MS)
            assert page.locator("#panel-broken button, #panel-broken input, #panel-broken textarea").count() == 0
            expect(page.locator("#server-line")).to_contain_text("1 failed to load", timeout=WAIT_MS)
            save_shot(page, tmp_path, "sa-serve-failed-model.png")
            page.click("#tab-ranking")  # the other model still serves
            page.click("[data-testid=ranking-run]")
            expect(page.locator("#panel-ranking [data-testid=ranking-table]")).to_be_visible(timeout=WAIT_MS)
        session.assert_only_local()
