"""The predictor scores the whole image (issue 21, finding 5): tiling, registration, legend, cost."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from sa_anomaly.config import load_ad_config
from sa_anomaly.data import resize_crop
from sa_anomaly.imageio import decode_image, encode_png, heatmap_overlay
from sa_anomaly.metrics import image_scores
from sa_anomaly.models import build_model
from sa_anomaly.predictor import AnomalyPredictor
from torch import nn


class _Stub(nn.Module):
    """Stands in for FOD: only ``image_size`` and one parameter; the maps come from :func:`_bright_maps`."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.weight = nn.Parameter(torch.zeros(1))


@pytest.fixture
def bright_maps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Replaces the model's map with the crop's brightness (deterministic); yields the crops it scored."""
    import sa_anomaly.task

    crops: list[int] = []

    def fake(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        s = int(model.image_size)  # type: ignore[arg-type]
        assert images.shape[-2:] == (s, s), images.shape  # the model only ever sees its own crop size
        crops.append(images.shape[0])
        return images.mean(1), None  # (B, S, S) map; image score from the smoothed map

    monkeypatch.setattr(sa_anomaly.task, "score_images", fake)
    yield crops


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 + 0.05 * rng.random((h, w, 3))).astype(np.float32)


def _png_size(data: bytes) -> tuple[int, int]:
    img = decode_image(data)
    return img.shape[0], img.shape[1]


def _png_text(data: bytes) -> dict[str, str]:
    out, pos = {}, 8
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + n
    return out


def test_wide_image_gives_a_map_of_the_input_size(bright_maps: list[int]) -> None:
    """384x128 (W x H) in -> a 128x384 (H x W) map and heatmap PNG, not the 128x128 centre square."""
    pred = AnomalyPredictor(_Stub(128), None)
    img = _texture(128, 384)
    out = pred.predict(pred.preprocess(img))
    assert tuple(out["map"].shape) == (1, 128, 384)
    res = pred.postprocess(out)
    assert _png_size(res["heatmap_png"]) == (128, 384)


def test_defect_at_the_right_edge_shows_at_the_right_edge(bright_maps: list[int]) -> None:
    """A bright patch near the right edge of a wide image (outside the old centre crop) is found and lands in
    the right third of the map; the score sees it too."""
    pred = AnomalyPredictor(_Stub(128), None, smooth_sigma=0)
    clean = _texture(128, 384)
    bad = clean.copy()
    bad[54:74, 340:360] = 0.95
    out = pred.predict(pred.preprocess(bad))
    heat = out["map"][0].numpy()
    assert heat.shape == (128, 384)
    row, col = np.unravel_index(int(heat.argmax()), heat.shape)
    assert col >= 256 and 54 <= row < 74
    assert 340 <= col < 360
    assert float(out["score"][0]) > float(pred.predict(pred.preprocess(clean))["score"][0]) + 0.3
    # the registered PNG: the hottest (reddest) pixels are where the defect is
    png = decode_image(pred.postprocess(out)["heatmap_png"])
    redness = png[..., 0] - png[..., 2]
    _, rcol = np.unravel_index(int(redness.argmax()), redness.shape)
    assert rcol >= 256


def test_tall_image_and_scale_are_registered(bright_maps: list[int]) -> None:
    """A 2x larger tall image is resized to the training scale (shorter side 64), tiled, and the map is
    brought back to the input size with the defect where it was."""
    pred = AnomalyPredictor(_Stub(64), None, smooth_sigma=0)
    img = _texture(400, 128)
    img[20:40, 50:70] = 1.0  # near the top
    out = pred.predict(pred.preprocess(img))
    heat = out["map"][0].numpy()
    assert heat.shape == (400, 128)
    row, col = np.unravel_index(int(heat.argmax()), heat.shape)
    assert row < 400 / 3 and 40 <= col < 80


def test_cost_counts_the_crops_the_model_runs(bright_maps: list[int]) -> None:
    """``cost`` from the header size alone: the model crops a request really runs, plus its pixel work."""
    pred = AnomalyPredictor(_Stub(128), None, pixels_per_crop=None)
    for w, h in [(384, 128), (128, 128), (256, 256), (300, 1000), (129, 128)]:
        bright_maps.clear()
        pred(_texture(h, w))
        assert pred.cost({"width": w, "height": h}) == sum(bright_maps), (w, h)
    assert pred.cost({"width": 384, "height": 128}) == 5  # 50 % overlap along the long side
    assert pred.cost({"width": 128, "height": 128}) == 1
    # with the pixel term: a large upload scaled down to one crop still costs its decoding and PNG encoding
    paid = AnomalyPredictor(_Stub(128), None, pixels_per_crop=1000.0)
    assert paid.cost({"width": 128, "height": 128}) == pytest.approx(1 + 128 * 128 / 1000)
    assert paid.cost({"width": 4096, "height": 4096}) == pytest.approx(1 + 4096 * 4096 / 1000)  # one crop
    assert AnomalyPredictor(_Stub(128), None).cost_unit == "crops"
    assert pred.cost({"pixels": 100}) is None  # no size in the header: no estimate
    with pytest.raises(ValueError, match="width"):
        pred.cost({"width": 0, "height": 128})
    with pytest.raises(ValueError, match="height"):
        pred.cost({"width": 10, "height": "x"})


def test_response_carries_the_heatmap_scale(bright_maps: list[int]) -> None:
    """``heatmap_min`` / ``heatmap_max`` are the score values at the two ends of the colour scale (also written
    into the PNG as text); the old keys are still there."""
    pred = AnomalyPredictor(_Stub(64), threshold=0.4)
    res = pred(_texture(64, 64))
    assert {"score", "heatmap_png", "threshold"} <= set(res)
    assert res["heatmap_min"] == 0.0 and res["heatmap_max"] == pytest.approx(0.8)
    text = _png_text(res["heatmap_png"])
    assert float(text["heatmap_min"]) == 0.0 and float(text["heatmap_max"]) == pytest.approx(0.8)
    free = AnomalyPredictor(_Stub(64), None)(_texture(64, 64))
    assert isinstance(free["heatmap_max"], float) and free["heatmap_max"] > free["heatmap_min"]


def test_titled_panels_with_colour_bar() -> None:
    """Side-by-side panels get a title strip and a colour bar (hot at the top, cold at the bottom)."""
    from sa_anomaly.imageio import titled_panels

    a = np.zeros((64, 64, 3), np.float32)
    b = np.ones((64, 96), np.float32)
    out = titled_panels([a, b], ["input", "mask"], legend=(0.0, 2.5))
    assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.float32
    h, w = out.shape[:2]
    assert h > 64 and w > 64 + 96
    with pytest.raises(ValueError, match="titles"):
        titled_panels([a, b], ["input"])


def _tiny_predictor(resize: int | None = None) -> AnomalyPredictor:
    torch.manual_seed(0)
    model = build_model(load_ad_config("tiny"), backbone_weights=False)
    return AnomalyPredictor(model, None, resize=resize)


def _old_pipeline(pred: AnomalyPredictor, img: np.ndarray) -> tuple[np.ndarray, float]:
    """The predictor before tiling: shorter side to ``resize``, centre crop, one crop through the model."""
    from sa_anomaly.task import anomaly_maps

    crop = resize_crop(img, pred.resize, pred.image_size)
    x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]
    heat = anomaly_maps(pred.model, x).float().numpy()
    return heat[0], float(image_scores(heat, pred.smooth_sigma)[0])


@pytest.mark.parametrize("side", [64, 96])
def test_square_inputs_score_as_before(side: int) -> None:
    """Regression: on a square image (one crop at the training scale) the score is the old score and the map is
    the old map brought to the input size; at 64 px the heatmap pixels are the old ones."""
    import cv2

    pred = _tiny_predictor()
    img = np.random.default_rng(1).random((side, side, 3)).astype(np.float32)
    old_map, old_score = _old_pipeline(pred, img)
    out = pred.predict(pred.preprocess(img))
    assert float(out["score"][0]) == pytest.approx(old_score, rel=1e-5, abs=1e-7)
    expect = cv2.resize(old_map, (side, side), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out["map"][0].numpy(), expect, rtol=1e-5, atol=1e-6)
    if side == 64:
        old_png = encode_png(heatmap_overlay(img, old_map, 0.0, None))
        np.testing.assert_array_equal(decode_image(pred.postprocess(out)["heatmap_png"]), decode_image(old_png))


def test_real_model_wide_input_and_batches() -> None:
    """The real (untrained) FOD on a wide image: an input-sized map; batched predictions equal single ones."""
    pred = _tiny_predictor()
    a = np.random.default_rng(2).random((64, 192, 3)).astype(np.float32)
    b = np.random.default_rng(3).random((64, 192, 3)).astype(np.float32)
    pa, pb = pred.preprocess(a), pred.preprocess(b)
    one = pred.predict(pa)
    assert tuple(one["map"].shape) == (1, 64, 192)
    both = pred.predict(_collate([pa, pb]))  # what the server's micro-batching does with two requests
    assert tuple(both["map"].shape) == (2, 64, 192)
    torch.testing.assert_close(both["score"][:1], one["score"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(both["map"][:1], one["map"], rtol=1e-4, atol=1e-5)
    res = pred.postprocess(one)
    assert _png_size(res["heatmap_png"]) == (64, 192) and res["score"] >= 0


def _collate(items: list[Any]) -> Any:
    """Concatenation along dim 0 as the server batches preprocessed requests (tensors or dicts of tensors)."""
    first = items[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(items)
    return {k: torch.cat([it[k] for it in items]) for k in first}


def test_an_abandoned_request_stops_between_crops(bright_maps: list[int]) -> None:
    """Inside a server's cancel scope whose event is set, the crop loop stops before running the model."""
    import threading

    from shared_attention.serving.control import CancelledError, cancel_scope

    pred = AnomalyPredictor(_Stub(128), None, tile_batch=1)
    batch = pred.preprocess(_texture(128, 384))
    gone = threading.Event()
    gone.set()
    with cancel_scope(gone), pytest.raises(CancelledError):
        pred.predict(batch)
    assert bright_maps == []
