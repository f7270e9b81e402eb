"""The app with the real domain predictors that have landed (built from tiny untrained models: no run folder).

Restoration is covered with a trained tiny run in the other modules; these check that the real ranking
predictor (torchrec batch, Hiformer) goes through the list micro-batching path with the same scores as alone,
and that the real anomaly predictor (FOD) answers the contract's JSON through the app.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sa_serve.app import ServeSettings, create_app
from sa_serve.registry import ModelSource

SCHEMA = {
    "label": "label",
    "dense": [{"name": "age_n"}],
    "sparse": [
        {"name": "user", "num_embeddings": 50},
        {"name": "item", "num_embeddings": 80},
        {"name": "zip", "num_embeddings": 64, "encoding": "hash"},
        {"name": "genres", "num_embeddings": 16, "multi_hot": True, "separator": "|", "pooling": "mean"},
    ],
}


@pytest.fixture(scope="module")
def ranking_predictor():
    pytest.importorskip("sa_ranking.predictor", reason="the ranking package has not landed")
    import torch
    from sa_ranking.models import ModelConfig, build_model
    from sa_ranking.predictor import RankingPredictor
    from sa_ranking.schema import Schema

    torch.manual_seed(0)
    schema = Schema.from_dict(SCHEMA)
    model = build_model(
        schema,
        ModelConfig(
            embedding_dim=8,
            num_layers=1,
            num_heads=2,
            head_dim=4,
            key_rank=8,
            value_rank=8,
            ffn_hidden=16,
            mlp_dims=(16,),
        ),
    )
    return RankingPredictor(model, schema)


def _rows(n: int, start: int) -> list[dict]:
    return [
        {
            "user": (start + i) % 50,
            "item": (3 * (start + i)) % 80,
            "zip": f"z{start + i}",
            "genres": f"{i % 16}|{(i + 5) % 16}",
            "age_n": ((start + i) % 10) / 10,
        }
        for i in range(n)
    ]


def test_real_ranking_predictor_batched_scores_equal_alone(ranking_predictor):
    pred = ranking_predictor
    calls: list[int] = []
    lock = threading.Lock()
    original = pred.predict

    def counting_predict(batch):
        out = original(batch)
        with lock:
            calls.append(int(out.shape[0]))
        return out

    pred.predict = counting_predict
    settings = ServeSettings(sources=(ModelSource("ranking", factory=lambda: pred),), max_batch=16, max_wait_ms=30)
    bodies = [_rows(1 + i % 4, 10 * i) for i in range(24)]
    expected = [pred.postprocess(original(pred.preprocess(b)))["scores"] for b in bodies]
    try:
        with TestClient(create_app(settings)) as c:
            with ThreadPoolExecutor(12) as ex:
                got = list(ex.map(lambda b: c.post("/v1/ranking/predict", json=b), bodies))
            for r, exp in zip(got, expected):
                assert r.status_code == 200
                assert r.json()["scores"] == pytest.approx(exp, abs=1e-5)
            assert max(calls) > 4  # several requests' candidates in one call
            r = c.post("/v1/ranking/predict", json=[{"user": 1}])  # missing columns: the package's own message
            assert r.status_code == 422 and "candidate" in r.json()["detail"]
            r = c.post(
                "/v1/ranking/predict",
                content=b'[{"user": 1, "age_n": NaN}]',
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 422 and "finite" in r.json()["detail"]
    finally:
        pred.predict = original


def test_real_anomaly_predictor_through_the_app(kit):
    factory = kit.real_anomaly_factory()
    if factory is None:
        pytest.skip("the anomaly package has not landed")
    import base64

    import numpy as np

    rng = np.random.default_rng(0)
    png = kit.png_bytes((rng.random((40, 50, 3)) * 255).astype(np.uint8))
    settings = ServeSettings(sources=(ModelSource("anomaly", factory=factory),), max_wait_ms=1)
    with TestClient(create_app(settings)) as c:
        assert c.get("/readyz").json()["models"]["anomaly"] == {"state": "ready", "warmed": True}
        r = c.post("/v1/anomaly/predict", files={"file": ("a.png", png, "image/png")})
        assert r.status_code == 200, r.text
        j = r.json()
        assert isinstance(j["score"], float) and np.isfinite(j["score"]) and j["threshold"] is None
        assert base64.b64decode(j["heatmap_png"]).startswith(b"\x89PNG")
        r = c.post("/v1/anomaly/predict", files={"file": ("bomb.png", kit.bomb_png(), "image/png")})
        assert r.status_code == 413


def _real_speechsep():
    try:
        from sa_speechsep.config import load_sep_config
        from sa_speechsep.predictor import SeparationPredictor
        from sa_speechsep.task import build_model
    except ImportError:
        pytest.skip("the speechsep package has not landed")
    import torch

    torch.manual_seed(0)
    cfg = load_sep_config("tiny")
    return SeparationPredictor(build_model(cfg), cfg)


def _real_medseg():
    try:
        from sa_medseg.config import SegConfig
        from sa_medseg.predictor import SegPredictor
        from sa_medseg.task import build_model, input_multiple

        from shared_attention.engine import load_config
    except ImportError:
        pytest.skip("the medseg package has not landed")
    from pathlib import Path

    import sa_medseg
    import torch

    torch.manual_seed(0)
    cfg = load_config(SegConfig, Path(sa_medseg.__file__).parent / "configs" / "vmunet-cpu.yaml")
    from shared_attention.engine.config import replace

    cfg = replace(cfg, **{"model.resnet_weights": None}) if getattr(cfg.model, "resnet_weights", None) else cfg
    model = build_model(cfg)
    return SegPredictor(
        model, cfg.data.class_names, cfg.data.windowing, input_multiple(model), cfg.data.inference, cfg.data.patch_size
    )


def test_real_speechsep_and_medseg_predictors_through_the_app(kit):
    """Real predictors (untrained models): a WAV gives one WAV per speaker, a NIfTI gives a NIfTI label map."""
    import base64
    import gzip

    import nibabel as nib
    import numpy as np

    sep, seg = _real_speechsep(), _real_medseg()
    settings = ServeSettings(
        sources=(ModelSource("speechsep", factory=lambda: sep), ModelSource("medseg", factory=lambda: seg)),
        warmup=False,
    )
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/speechsep/predict", files={"file": ("mix.wav", kit.wav_bytes(8000, 0.25), "audio/wav")})
        assert r.status_code == 200, r.text
        j = r.json()
        assert j["sample_rate"] == 8000 and len(j["sources_wav"]) >= 2
        assert all(base64.b64decode(w)[:4] == b"RIFF" for w in j["sources_wav"])
        affine = np.diag([1.5, 2.0, 2.5, 1.0])
        r = c.post("/v1/medseg/predict", files={"file": ("ct.nii.gz", kit.nifti_bytes((32, 32, 2), True, affine))})
        assert r.status_code == 200, r.text
        lab = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(r.json()["labels_nifti"])))
        assert lab.shape == (32, 32, 2) and np.allclose(lab.affine, affine)
        r = c.post("/v1/medseg/predict", files={"file": ("t.nii.gz", kit.nifti_bytes((32, 32, 2))[:-30])})
        assert r.status_code == 400 and "gzip" in r.json()["detail"]


@pytest.mark.parametrize(
    ("fake", "real"),
    [
        ("conftest:FakeAnomalyPredictor", "sa_anomaly.predictor:AnomalyPredictor"),
        ("conftest:FakeSegPredictor", "sa_medseg.predictor:MedsegPredictor"),
        ("conftest:FakeSeparationPredictor", "sa_speechsep.predictor:SpeechsepPredictor"),
        ("conftest:FakeRankingPredictor", "sa_ranking.predictor:RankingPredictor"),
        ("sa_serve.standin:StandInRanker", "sa_ranking.predictor:RankingPredictor"),
    ],
)
def test_stand_ins_keep_the_real_io_spec(fake: str, real: str) -> None:
    """A stand-in that drifts from its real predictor's I/O spec would test a contract no user sees: field
    names, kinds and media types of every input and output, the UI view and the domain must all agree."""
    import importlib
    import importlib.util
    from pathlib import Path

    def load(ref: str) -> Any:
        mod, _, attr = ref.partition(":")
        if mod == "conftest":  # this folder's conftest, loaded under its own name
            spec = importlib.util.spec_from_file_location("_serve_conftest", Path(__file__).with_name("conftest.py"))
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return getattr(module, attr)
        return getattr(importlib.import_module(mod), attr)

    f, r = load(fake), load(real)

    def shape(spec: Any) -> tuple[Any, ...]:
        return (
            tuple((x.name, x.kind, tuple(x.media_types)) for x in spec.inputs),
            tuple((x.name, x.kind, tuple(x.media_types)) for x in spec.outputs),
            spec.view,
        )

    assert f.domain == r.domain
    assert shape(f.io_spec) == shape(r.io_spec)
