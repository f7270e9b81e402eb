"""Every route, limit and rejection of the app through TestClient (real restoration run + contract fakes).

Each rejection must come back as a 4xx with a message naming the problem, and the next good request must still
be served (the ``assert_alive`` helper)."""

from __future__ import annotations

import base64
import io
import json
import struct
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sa_serve.app import Limits, ServeSettings, create_app
from sa_serve.registry import ModelSource

KiB = 1024


@pytest.fixture(scope="module")
def client(restoration_run, kit):
    settings = ServeSettings(
        sources=(
            ModelSource("restoration", run_dir=str(restoration_run)),
            ModelSource("anomaly", factory=kit.FakeAnomalyPredictor),
            ModelSource("medseg", factory=kit.FakeSegPredictor),
            ModelSource("speechsep", factory=kit.FakeSeparationPredictor),
            ModelSource("ranking", factory=kit.FakeRankingPredictor),
        ),
        limits=Limits(max_bytes_domain={"restoration": 64 * KiB}, max_inflated_bytes=4 * 1024 * KiB),
        max_wait_ms=1.0,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def assert_alive(client, sample_png):
    r = client.post("/v1/restoration/predict", files={"file": ("x.png", sample_png, "image/png")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def detail(r) -> str:
    return r.json()["detail"]


# --------------------------------------------------------------------------------------- health and info


def test_health_ready_info_docs_and_page(client, restoration_run):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True
    assert r.json()["models"]["restoration"] == {"state": "ready", "warmed": True}
    info = client.get("/v1/info").json()
    assert set(info["models"]) == {"restoration", "anomaly", "medseg", "speechsep", "ranking"}
    rest = info["models"]["restoration"]
    assert rest["run_dir"] == str(restoration_run) and len(rest["weights_sha256"]) == 64
    assert rest["io"]["inputs"][0]["kind"] == "image" and rest["parameters"] > 0
    assert rest["limits"]["max_upload_bytes"] == 64 * KiB and rest["route"] == "/v1/restoration/predict"
    assert "restoration" in info["installed"] and info["server"]["auth"] is False
    assert info["models"]["ranking"]["warmed"] is False and "json" in info["models"]["ranking"]["warmup"]
    paths = client.get("/openapi.json").json()["paths"]
    for d in ("restoration", "anomaly", "medseg", "speechsep", "ranking"):
        assert f"/v1/{d}/predict" in paths
    assert "/v1/info" in paths and "/healthz" in paths
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "sa-serve" in page.text and "/static/app.js" in page.text
    assert "http" not in page.text.split("<body>")[1].replace("API docs", "")  # no CDN links
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "/v1/info" in js.text


# ------------------------------------------------------------------------------------------------ routes


def test_restoration_multipart_and_raw_body(client, sample_png):
    import cv2

    r = client.post("/v1/restoration/predict", files={"file": ("lr.png", sample_png, "image/png")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    out = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert out.shape == (24, 32, 3)  # x2 of 12x16
    raw = client.post(
        "/v1/restoration/predict", content=sample_png, headers={"content-type": "application/octet-stream"}
    )
    assert raw.status_code == 200 and raw.content == r.content


def test_anomaly_score_and_heatmap(client, kit):
    img = np.full((20, 30, 3), 128, np.uint8)
    img[5:10, 5:10] = 255
    r = client.post("/v1/anomaly/predict", files={"file": ("a.png", kit.png_bytes(img), "image/png")})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["score"] == pytest.approx(0.5, abs=0.01) and j["threshold"] == 0.25
    heat = base64.b64decode(j["heatmap_png"])
    assert heat.startswith(b"\x89PNG") and struct.unpack(">II", heat[16:24]) == (30, 20)


def test_medseg_nifti_keeps_affine_and_png_slice(client, kit):
    import gzip

    import nibabel as nib

    affine = np.diag([1.5, 2.0, 2.5, 1.0])
    affine[:3, 3] = [10, -4, 7]
    r = client.post("/v1/medseg/predict", files={"file": ("ct.nii.gz", kit.nifti_bytes((6, 5, 4), True, affine))})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["classes"] == ["background", "organ"]
    lab = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(j["labels_nifti"])))
    assert lab.shape == (6, 5, 4) and np.allclose(lab.affine, affine)
    assert set(np.unique(np.asarray(lab.dataobj))) == {0, 1}
    png = client.post("/v1/medseg/predict", files={"file": ("s.png", kit.png_bytes(np.zeros((8, 8, 3), np.uint8)))})
    assert png.status_code == 200 and {"labels_png", "overlay_png", "classes"} <= set(png.json())


def test_speechsep_returns_one_wav_per_speaker(client, kit):
    import soundfile as sf

    r = client.post("/v1/speechsep/predict", files={"file": ("mix.wav", kit.wav_bytes(8000, 0.25), "audio/wav")})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["sample_rate"] == 8000 and len(j["sources_wav"]) == 2
    s0, sr = sf.read(io.BytesIO(base64.b64decode(j["sources_wav"][0])))
    assert sr == 8000 and s0.shape == (2000,)


def test_ranking_scores_in_input_order_list_or_object(client):
    cands = [{"x": 1.0, "y": 0.5}, {"x": 0.0, "y": 1.0}, {"x": 3, "y": 0}]
    r = client.post("/v1/ranking/predict", json=cands)
    assert r.status_code == 200 and r.json() == {"scores": [1.5, -1.0, 6.0]}
    r = client.post("/v1/ranking/predict", json={"candidates": cands[:1]})
    assert r.status_code == 200 and r.json() == {"scores": [1.5]}


# ------------------------------------------------------------------------------------------- rejections


def test_oversize_with_content_length_is_refused_before_reading(client, sample_png):
    r = client.post("/v1/restoration/predict", content=b"\x89PNG" + b"\x00" * (80 * KiB))
    assert r.status_code == 413 and "65,536" in detail(r)
    assert_alive(client, sample_png)


def test_oversize_streamed_without_length_stops_reading(client, sample_png):
    sent = []

    def chunks():
        for _ in range(64):  # 64 x 8 KiB = 512 KiB offered, cap is 64 KiB
            sent.append(1)
            yield b"\x00" * (8 * KiB)

    r = client.post("/v1/restoration/predict", content=chunks())
    assert r.status_code == 413 and "stopped reading" in detail(r)
    assert_alive(client, sample_png)


def test_wrong_type_is_sniffed_not_trusted(client, kit, sample_png):
    # a WAV file that claims to be a PNG (name and content type)
    r = client.post("/v1/restoration/predict", files={"file": ("photo.png", kit.wav_bytes(), "image/png")})
    assert r.status_code == 415 and "audio/wav" in detail(r) and "image/png" in detail(r)
    r = client.post("/v1/restoration/predict", files={"file": ("notes.png", b"hello, not an image", "image/png")})
    assert r.status_code == 415 and "unknown" in detail(r)
    r = client.post("/v1/speechsep/predict", files={"file": ("mix.wav", sample_png, "audio/wav")})
    assert r.status_code == 415 and "image/png" in detail(r)
    r = client.post("/v1/ranking/predict", content=sample_png, headers={"content-type": "application/json"})
    assert r.status_code == 415 and "JSON" in detail(r)
    assert_alive(client, sample_png)


def test_truncated_and_corrupt_png(client, sample_png):
    r = client.post("/v1/restoration/predict", files={"file": ("t.png", sample_png[: len(sample_png) // 2])})
    assert r.status_code == 400 and "truncated PNG" in detail(r)
    bad = bytearray(sample_png)
    bad[40] ^= 0xFF  # inside the first IDAT: CRC mismatch
    r = client.post("/v1/restoration/predict", files={"file": ("c.png", bytes(bad))})
    assert r.status_code == 400 and "CRC" in detail(r)
    assert_alive(client, sample_png)


def test_decompression_bomb_header_is_refused(client, kit, sample_png):
    bomb = kit.bomb_png(100_000, 100_000)
    assert len(bomb) < 200
    for domain in ("restoration", "anomaly"):
        r = client.post(f"/v1/{domain}/predict", files={"file": ("bomb.png", bomb, "image/png")})
        assert r.status_code == 413 and "100000x100000" in detail(r), domain
    # the anomaly predictor's own io_spec limit (4 MP) is stricter than the server's 16 MP
    r = client.post("/v1/anomaly/predict", files={"file": ("big.png", kit.bomb_png(2500, 2000))})
    assert r.status_code == 413 and "4,000,000" in detail(r)
    assert_alive(client, sample_png)


def test_nan_and_infinity_json_rejected(client, sample_png):
    for body in (
        b'[{"x": NaN, "y": 1}]',
        b'[{"x": Infinity, "y": 1}]',
        b'[{"x": -Infinity, "y": 1}]',
        b'[{"x": 1e999, "y": 1}]',
    ):
        r = client.post("/v1/ranking/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, body
        assert "finite" in detail(r)
    r = client.post("/v1/ranking/predict", content=b'[{"x": 1,', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "line 1" in detail(r)
    assert client.post("/v1/ranking/predict", json=[{"x": 1, "y": 2}]).json() == {"scores": [0.0]}
    assert_alive(client, sample_png)


def test_float_wav_with_nan_rejected(client, kit, sample_png):
    x = np.zeros(800, np.float32)
    x[10] = np.nan
    r = client.post("/v1/speechsep/predict", files={"file": ("nan.wav", kit.wav_bytes(8000, float_data=x))})
    assert r.status_code == 422 and "NaN" in detail(r)
    assert_alive(client, sample_png)


def test_wrong_sample_rate_and_stereo_wav(client, kit, sample_png):
    r = client.post("/v1/speechsep/predict", files={"file": ("m.wav", kit.wav_bytes(16000, 0.1), "audio/wav")})
    assert r.status_code == 422 and "16000 Hz" in detail(r) and "8000 Hz" in detail(r)
    r = client.post("/v1/speechsep/predict", files={"file": ("m.wav", kit.wav_bytes(8000, 0.1, channels=2))})
    assert r.status_code == 422 and "stereo" in detail(r)
    r = client.post("/v1/speechsep/predict", files={"file": ("m.wav", kit.wav_bytes(8000, 0.1)[:60])})
    assert r.status_code == 400 and "truncated WAV" in detail(r)
    assert_alive(client, sample_png)


def test_volume_limits_and_gzip_bomb(client, kit, sample_png):
    r = client.post("/v1/medseg/predict", files={"file": ("big.nii.gz", kit.nifti_bytes((30, 30, 30)))})
    assert r.status_code == 413 and "27,000 voxels" in detail(r)
    # a valid small header whose voxels start 8 MiB in (8 MiB of zeros, ~8 KiB compressed; cap 4 MiB)
    head = bytearray(kit.nifti_bytes((6, 5, 4), gz=False))
    head[108:112] = struct.pack("<f", float(8 * 1024 * KiB))
    bomb = kit.gzip(bytes(head) + b"\x00" * (8 * 1024 * KiB))
    assert len(bomb) < 64 * KiB
    r = client.post("/v1/medseg/predict", files={"file": ("bomb.nii.gz", bomb)})
    assert r.status_code == 413 and "inflates" in detail(r)
    r = client.post("/v1/medseg/predict", files={"file": ("zeros.nii.gz", kit.gzip(b"\x00" * (8 * 1024 * KiB)))})
    assert r.status_code == 415 and "not a NIfTI-1 file" in detail(r)
    r = client.post("/v1/medseg/predict", files={"file": ("t.nii", kit.nifti_bytes((6, 5, 4), gz=False)[:400])})
    assert r.status_code == 400 and "truncated NIfTI" in detail(r)
    assert_alive(client, sample_png)


def test_predictor_input_errors_and_bad_requests(client, kit, sample_png):
    r = client.post("/v1/ranking/predict", json=[{"x": 1, "y": 2}, {"x": "a"}])
    assert r.status_code == 422 and "candidates[1]" in detail(r)
    r = client.post("/v1/ranking/predict", json=[])
    assert r.status_code == 422 and "empty" in detail(r)
    r = client.post("/v1/restoration/predict", content=b"")
    assert r.status_code == 400 and "empty" in detail(r)
    r = client.post("/v1/restoration/predict", files={"other": ("a.png", sample_png), "more": ("b.png", sample_png)})
    assert r.status_code == 400 and "file" in detail(r)
    r = client.post("/v1/nosuchdomain/predict", content=b"x")
    assert r.status_code == 404 and "restoration" in detail(r)
    assert_alive(client, sample_png)


# ---------------------------------------------------------------------------------------- auth / queue


def test_bearer_token_required_on_v1_only(kit):
    settings = ServeSettings(sources=(ModelSource("ranking", factory=kit.FakeRankingPredictor),), token="s3cret")
    with TestClient(create_app(settings)) as c:
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        assert c.get("/").status_code == 200
        for path, method in (("/v1/info", "get"), ("/v1/ranking/predict", "post")):
            r = getattr(c, method)(path)
            assert r.status_code == 401 and "missing bearer token" in detail(r)
            assert r.headers["www-authenticate"].startswith("Bearer")
            r = getattr(c, method)(path, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401 and "invalid bearer token" in detail(r)
            r = getattr(c, method)(path, headers={"Authorization": "Basic s3cret"})
            assert r.status_code == 401
        ok = c.post("/v1/ranking/predict", json=[{"x": 1, "y": 1}], headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json() == {"scores": [1.0]}
        assert c.get("/v1/info", headers={"Authorization": "Bearer s3cret"}).json()["server"]["auth"] is True


def test_full_queue_answers_503_with_retry_after_then_recovers(kit):
    import threading

    pred = kit.FakeRankingPredictor()
    pred.gate = threading.Event()
    settings = ServeSettings(sources=(ModelSource("ranking", factory=lambda: pred),), queue_size=2, max_batch=1)
    with TestClient(create_app(settings)) as c:
        results: list[int] = []
        threads = [
            threading.Thread(
                target=lambda: results.append(c.post("/v1/ranking/predict", json=[{"x": 1, "y": 0}]).status_code)
            )
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        info = c.get("/v1/info").json()["models"]["ranking"]["batching"]
        deadline = time.monotonic() + 120  # a hang guard: both requests hold their slots within milliseconds
        while info["in_flight"] < 2 and time.monotonic() < deadline:
            threading.Event().wait(0.01)
            info = c.get("/v1/info").json()["models"]["ranking"]["batching"]
        assert info["in_flight"] == 2
        r = c.post("/v1/ranking/predict", json=[{"x": 1, "y": 0}])
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "queue is full" in detail(r)
        pred.gate.set()
        for t in threads:
            t.join(60)  # hang guard: the requests finish within milliseconds of the gate opening
        assert results == [200, 200]
        assert c.post("/v1/ranking/predict", json=[{"x": 1, "y": 0}]).status_code == 200
        assert c.get("/v1/info").json()["models"]["ranking"]["batching"]["rejected_full"] == 1


def test_request_timeout_answers_504_and_server_keeps_serving(kit):
    import threading

    pred = kit.FakeRankingPredictor()
    pred.gate = threading.Event()  # closed: the first call cannot answer before the timeout, however fast the machine
    # the timeout must still leave the second (trivial, milliseconds) request ample time on a slow, loaded machine
    settings = ServeSettings(sources=(ModelSource("ranking", factory=lambda: pred),), timeout_s=1.0)
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/ranking/predict", json=[{"x": 1, "y": 0}])
        assert r.status_code == 504 and "timeout" in detail(r)
        assert pred.batch_sizes == []  # still parked in predict
        pred.gate.set()  # the abandoned call finishes now
        deadline = time.monotonic() + 120  # a hang guard: this takes milliseconds
        while not pred.batch_sizes:
            assert time.monotonic() < deadline, "the abandoned call never finished"
            threading.Event().wait(0.01)
        assert c.post("/v1/ranking/predict", json=[{"x": 1, "y": 0}]).json() == {"scores": [2.0]}


def test_load_failure_is_reported_not_fatal(tmp_path):
    settings = ServeSettings(sources=(ModelSource("restoration", run_dir=str(tmp_path / "missing")),))
    with TestClient(create_app(settings)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["models"]["restoration"]["state"] == "failed"
        assert "run folder does not exist" in r.json()["models"]["restoration"]["error"]
        r = c.post("/v1/restoration/predict", content=b"x")
        assert r.status_code == 503 and "failed to load" in detail(r)


def test_internal_error_is_500_and_server_keeps_serving(kit):
    pred = kit.FakeRankingPredictor()
    settings = ServeSettings(sources=(ModelSource("ranking", factory=lambda: pred),))
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        original = pred.predict
        pred.predict = lambda batch: (_ for _ in ()).throw(RuntimeError("boom"))
        r = c.post("/v1/ranking/predict", json=[{"x": 1, "y": 0}])
        assert r.status_code == 500 and "boom" in detail(r)
        pred.predict = original
        assert c.post("/v1/ranking/predict", json=[{"x": 1, "y": 0}]).status_code == 200


def test_info_is_json_serialisable(client):
    json.dumps(client.get("/v1/info").json())


def test_bf16_precision_is_applied_and_published(restoration_run, sample_png):
    settings = ServeSettings(
        sources=(ModelSource("restoration", run_dir=str(restoration_run)),), precision="bf16", max_wait_ms=1.0
    )
    assert ServeSettings.from_json(settings.to_json()).precision == "bf16"  # travels to --workers processes
    with TestClient(create_app(settings)) as c:
        assert c.get("/v1/info").json()["models"]["restoration"]["precision"] == "bf16"
        r = c.post("/v1/restoration/predict", files={"file": ("x.png", sample_png, "image/png")})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
