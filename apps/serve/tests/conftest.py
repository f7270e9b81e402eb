"""Fixtures of the sa-serve tests: a tiny trained restoration run, fake predictors of the domains that follow the
serving contract (until their packages land), request-building helpers and a live uvicorn server in a thread."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from shared_attention.io import encode_png, encode_wav, png_chunk, synth_png, synth_wav
from shared_attention.serving import InputError, IOSpec, PredictorBase

# ------------------------------------------------------------------------------------------ byte builders


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-looking PNG (correct CRCs) whose IHDR declares width x height pixels; a few hundred bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def wav_bytes(
    sample_rate: int = 8000, seconds: float = 0.5, channels: int = 1, float_data: np.ndarray | None = None
) -> bytes:
    """A 16-bit PCM WAV of a test tone (or an IEEE-float WAV holding the interleaved ``float_data``)."""
    if float_data is not None:
        return encode_wav(np.asarray(float_data).reshape(-1, channels).T, sample_rate, float32=True)
    return synth_wav(seconds, sample_rate, channels=channels)


def nifti_bytes(shape: tuple[int, ...] = (6, 5, 4), gz: bool = True, affine: np.ndarray | None = None) -> bytes:
    import nibabel as nib

    data = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    img = nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0]) if affine is None else affine)
    raw = img.to_bytes()
    return zlib_gzip(raw) if gz else raw


def zlib_gzip(raw: bytes) -> bytes:
    import gzip

    return gzip.compress(raw)


# ------------------------------------------------------------------------------------------ fake predictors


def _decode_image(raw: Any) -> np.ndarray:
    import cv2

    if not isinstance(raw, bytes | bytearray):
        raise InputError("expected image bytes", "image")
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError("not a decodable image", "image")
    return img[:, :, ::-1].astype(np.float32) / 255.0


def _real_spec(module: str, cls: str, constraints: dict[str, Any]) -> IOSpec:
    """The real predictor's I/O spec (field names, kinds, media types, outputs) with the fake's own input
    constraints (small limits the tests can exceed cheaply); ``test_stand_ins_keep_the_real_io_spec`` checks it."""
    import dataclasses
    import importlib

    real: IOSpec = getattr(importlib.import_module(module), cls).io_spec
    first = dataclasses.replace(real.inputs[0], constraints=constraints)
    return IOSpec(inputs=(first, *real.inputs[1:]), outputs=real.outputs)


class FakeAnomalyPredictor(PredictorBase):
    """Anomaly contract: image -> {"score", "heatmap_png", "threshold"}; the "model" is the distance to gray."""

    domain: ClassVar[str] = "anomaly"
    io_spec: ClassVar[IOSpec] = _real_spec("sa_anomaly.predictor", "AnomalyPredictor", {"max_pixels": 4_000_000})
    calls = 0

    def preprocess(self, raw: Any) -> dict[str, torch.Tensor]:
        img = torch.from_numpy(_decode_image(raw)).permute(2, 0, 1)[None]  # (1, 3, H, W)
        return {"image": img}

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        type(self).calls += 1
        x = batch["image"]
        amap = (x - 0.5).abs().mean(1)  # (B, H, W)
        return {"map": amap, "score": amap.flatten(1).max(1).values, "image": x}

    def postprocess(self, output: dict[str, torch.Tensor]) -> dict[str, Any]:
        img = output["image"][0].permute(1, 2, 0).numpy()
        heat = output["map"][0].numpy()[:, :, None]
        overlay = (0.5 * img + 0.5 * np.concatenate([heat, np.zeros_like(heat), 1 - heat], axis=2)) * 255
        return {
            "score": float(output["score"][0]),
            "heatmap_png": encode_png(overlay.astype(np.uint8)),
            "threshold": 0.25,
        }


class FakeSegPredictor(PredictorBase):
    """Medseg contract: NIfTI -> {"labels_nifti", "classes"}; PNG -> {"labels_png", "overlay_png", "classes"}."""

    domain: ClassVar[str] = "medseg"
    io_spec: ClassVar[IOSpec] = _real_spec("sa_medseg.predictor", "MedsegPredictor", {"max_voxels": 10_000})
    classes = ["background", "organ"]

    def preprocess(self, raw: Any) -> dict[str, torch.Tensor]:
        import gzip

        import nibabel as nib

        if isinstance(raw, bytes) and raw.startswith(b"\x89PNG"):
            img = torch.from_numpy(_decode_image(raw)).mean(-1)
            return {"x": img[None, None], "affine": torch.zeros(1, 4, 4, dtype=torch.float64)}
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        try:
            img = nib.Nifti1Image.from_bytes(data)
        except Exception as exc:
            raise InputError(f"not a NIfTI volume: {exc}", "volume") from exc
        x = torch.from_numpy(np.asarray(img.dataobj, dtype=np.float32))
        return {"x": x[None, None], "affine": torch.from_numpy(img.affine)[None]}

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"]
        return {"labels": (x > x.mean()).to(torch.uint8), "affine": batch["affine"], "x": x}

    def postprocess(self, output: dict[str, torch.Tensor]) -> dict[str, Any]:
        import nibabel as nib

        labels = output["labels"][0, 0].numpy()
        if labels.ndim == 2:
            lab = (labels * 255).astype(np.uint8)
            rgb = np.stack([lab, np.zeros_like(lab), np.zeros_like(lab)], axis=2)
            return {
                "labels_png": encode_png(np.repeat(labels[:, :, None], 3, 2).astype(np.uint8)),
                "overlay_png": encode_png(rgb),
                "classes": self.classes,
            }
        img = nib.Nifti1Image(labels, output["affine"][0].numpy())
        return {"labels_nifti": zlib_gzip(img.to_bytes()), "classes": self.classes}


class FakeSeparationPredictor(PredictorBase):
    """Speechsep contract: 8 kHz mono wav -> {"sample_rate", "sources_wav": [wav, wav]}."""

    domain: ClassVar[str] = "speechsep"
    io_spec: ClassVar[IOSpec] = _real_spec(
        "sa_speechsep.predictor", "SpeechsepPredictor", {"sample_rate": 8000, "channels": 1, "max_seconds": 30}
    )

    def preprocess(self, raw: Any) -> torch.Tensor:
        import soundfile as sf

        x, sr = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
        if sr != 8000 or x.shape[1] != 1:
            raise InputError(f"need 8000 Hz mono, got {sr} Hz x {x.shape[1]}", "mixture")
        return torch.from_numpy(x[:, 0])[None]  # (1, T)

    @torch.no_grad()
    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([batch * 0.5, batch * -0.25], dim=1)  # (B, 2, T)

    def postprocess(self, output: torch.Tensor) -> dict[str, Any]:
        import soundfile as sf

        wavs = []
        for s in output[0]:
            buf = io.BytesIO()
            sf.write(buf, s.numpy(), 8000, subtype="PCM_16", format="WAV")
            wavs.append(buf.getvalue())
        return {"sample_rate": 8000, "sources_wav": wavs}


class FakeRankingPredictor(PredictorBase):
    """Ranking contract: list of candidate dicts {"x": float, "y": float} -> {"scores": [...]}; score = 2x - y."""

    domain: ClassVar[str] = "ranking"
    io_spec: ClassVar[IOSpec] = _real_spec(
        "sa_ranking.predictor", "RankingPredictor", {"example": [{"x": 1.0, "y": 0.5}, {"x": 0.2, "y": 0.1}]}
    )

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batch_sizes: list[int] = []
        self.gate: threading.Event | None = None

    def preprocess(self, raw: Any) -> torch.Tensor:
        if not isinstance(raw, list) or not raw:
            raise InputError("expected a non-empty list of candidates", "candidates")
        rows = []
        for i, c in enumerate(raw):
            if not isinstance(c, dict) or not all(isinstance(c.get(k), int | float) for k in ("x", "y")):
                raise InputError("each candidate needs numeric 'x' and 'y'", f"candidates[{i}]")
            rows.append([float(c["x"]), float(c["y"])])
        return torch.tensor(rows)  # (N, 2)

    @torch.no_grad()
    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            self.gate.wait(60)  # a cap so that a test that forgets to open the gate cannot hang forever
        if self.delay_s:
            time.sleep(self.delay_s)
        self.batch_sizes.append(batch.shape[0])
        return 2 * batch[:, 0] - batch[:, 1]  # (N,)

    def postprocess(self, output: torch.Tensor) -> dict[str, Any]:
        return {"scores": output.tolist()}


# -------------------------------------------------------------------------------------------- fixtures


TINY_HAT = (
    "model.overrides={embed_dim: 12, depths: [1], num_heads: [2], window_size: 4, compress_ratio: 3, "
    "squeeze_factor: 4}"
)


@pytest.fixture(scope="session")
def restoration_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny HAT x2 run folder trained for 2 steps on crops of a scikit-image photo (a few seconds)."""
    from sa_restoration.config import load_sr_config
    from sa_restoration.imageio import write_png
    from sa_restoration.resize import imresize
    from sa_restoration.task import SRTask
    from skimage import data as skdata

    from shared_attention.engine import fit

    root = tmp_path_factory.mktemp("srdata")
    img = skdata.astronaut().astype(np.float32) / 255.0
    for i in range(2):
        write_png(root / "train" / f"p{i}.png", img[100 + 40 * i : 148 + 40 * i, 150:198])
    gt = img[300:332, 200:240]
    write_png(root / "GTmod2" / "v0.png", gt)
    write_png(root / "LRbicx2" / "v0.png", np.clip(imresize(gt, 0.5), 0, 1))
    run = tmp_path_factory.mktemp("runs") / "restoration"
    cfg = load_sr_config(
        "cpu-x2",
        [
            TINY_HAT,
            f"train.run_dir={run}",
            f"data.train_gt_dir={root}/train",
            f"data.val_gt_dir={root}/GTmod{{scale}}",
            f"data.val_lq_dir={root}/LRbicx{{scale}}",
            "data.patch_size=8",
            "data.repeat=1",
            "train.batch_size=2",
            "train.progress=false",
            "train.tensorboard=false",
            "sample_images=0",
            "train.max_steps=2",
            "train.eval_every=2",
            "train.checkpoint_every=2",
        ],
    )
    fit(SRTask(cfg), cfg.train, cfg)
    return run


@pytest.fixture(scope="session")
def sample_png() -> bytes:
    return synth_png(12, 16, seed=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving an app in a background thread on 127.0.0.1 (a real socket)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def real_anomaly_factory() -> Any:
    """A factory of the real ``sa_anomaly`` predictor around a tiny untrained FOD (random EfficientNet-Lite0,
    64 px, one layer), or None when the anomaly package cannot be imported."""
    try:
        from sa_anomaly.config import load_ad_config
        from sa_anomaly.predictor import AnomalyPredictor
        from sa_anomaly.task import build_model
    except ImportError:
        return None

    def make() -> Any:
        torch.manual_seed(0)
        cfg = load_ad_config(
            "cpu", ["model.image_size=64", "model.n_layers=1", "model.d_models=[16, 32]", "model.n_heads=2"]
        )
        return AnomalyPredictor(build_model(cfg, backbone_weights=False), None, resize=64)

    return make


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The helpers and fake predictors above, for the test modules (conftest is not importable by name)."""
    return SimpleNamespace(
        png_bytes=encode_png,
        bomb_png=bomb_png,
        wav_bytes=wav_bytes,
        nifti_bytes=nifti_bytes,
        gzip=zlib_gzip,
        png_chunk=png_chunk,
        LiveServer=LiveServer,
        FakeAnomalyPredictor=FakeAnomalyPredictor,
        FakeSegPredictor=FakeSegPredictor,
        FakeSeparationPredictor=FakeSeparationPredictor,
        FakeRankingPredictor=FakeRankingPredictor,
        real_anomaly_factory=real_anomaly_factory,
    )
