"""Training FOD on cached backbone features equals training on images, and ``data.fit=resize`` keeps the whole
image (issue 20, Build 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sa_anomaly.config import load_ad_config
from sa_anomaly.data import AnomalyImageDataset, Sample
from sa_anomaly.sample import build_sample
from sa_anomaly.task import AnomalyTask, FeatureCache

from shared_attention.engine import fit

TINY: list[str] = [  # on top of the bundled `tiny` config (test-sized FOD)
    "train.max_steps=4",
    "train.eval_every=4",
    "train.checkpoint_every=4",
    "train.batch_size=2",
    "train.progress=false",
    "train.tensorboard=false",
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sample(tmp_path_factory.mktemp("ad"), textures=("brick",), crop=64, n_train=(2, 8), n_test=(1, 4))


def _train(data: Path, run: Path, cache: bool) -> dict[str, torch.Tensor]:
    cfg = load_ad_config(
        "tiny",
        [
            *TINY,
            f"data.root={data}",
            "data.category=brick",
            f"train.run_dir={run}",
            f"data.cache_features={cache}",
            "data.augment=false",
        ],
    )
    torch.manual_seed(0)
    task = AnomalyTask(cfg)
    res = fit(task, cfg.train, cfg)
    assert res.step == 4
    from shared_attention.engine.checkpoint import load_weights

    return load_weights(run / "model.safetensors")


def test_cached_features_train_the_same_weights(tiny_data: Path, tmp_path: Path) -> None:
    images = _train(tiny_data, tmp_path / "images", cache=False)
    cached = _train(tiny_data, tmp_path / "cached", cache=True)
    assert images.keys() == cached.keys()
    # same data order and features (up to conv rounding across batch sizes). Key-projection biases get a zero
    # gradient up to rounding, which Adam scales to lr-sized steps: hence atol at the scale of lr (6e-5).
    for k in images:
        torch.testing.assert_close(cached[k], images[k], rtol=1e-4, atol=1e-4, msg=k)
    losses = [
        [
            float(line.split(",")[3])
            for line in (tmp_path / run / "metrics.csv").read_text().splitlines()
            if ",train,loss," in line
        ]
        for run in ("images", "cached")
    ]
    assert losses[0] and np.allclose(losses[0], losses[1], rtol=1e-5)


def test_cache_holds_every_flip_in_image_major_order(tiny_data: Path) -> None:
    cfg = load_ad_config("tiny", [*TINY, f"data.root={tiny_data}", "data.category=brick"])
    task = AnomalyTask(cfg)
    model = task.build_model()
    ds = task._dataset(task.split()[0])
    cache = FeatureCache.build(model, ds, augment=True, batch_size=3)
    assert cache.variants == 4 and cache.images == len(ds)
    img = ds[1]["image"][None]
    with torch.no_grad():
        for v, dims in enumerate([(), (3,), (2,), (2, 3)]):
            want = model.features(img.flip(dims) if dims else img)
            for lvl, w in zip(cache.features(1 * 4 + v), want, strict=True):
                torch.testing.assert_close(lvl, w[0], rtol=1e-4, atol=1e-5)
    sums = cache.reference_sums()
    with torch.no_grad():
        direct = [
            torch.stack([model.features(ds[i]["image"][None])[lvl][0] for i in range(len(ds))]).sum(0)
            for lvl in range(len(sums))
        ]
    for a, b in zip(sums, direct, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_fit_resize_keeps_the_whole_image(tmp_path: Path) -> None:
    import cv2

    img = np.zeros((40, 120, 3), np.uint8)
    img[:, 110:] = 255  # a bright band at the right edge: a centre crop would cut it off
    mask = np.zeros((40, 120), np.uint8)
    mask[:, 110:] = 255
    cv2.imwrite(str(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / "a_mask.png"), mask)
    sample = Sample(tmp_path / "a.png", 1, tmp_path / "a_mask.png", "band")
    whole = AnomalyImageDataset([sample], 32, fit="resize")[0]
    crop = AnomalyImageDataset([sample], 32, fit="crop")[0]
    assert whole["image"].shape == (3, 32, 32) and whole["mask"].shape == (1, 32, 32)
    assert whole["mask"][0, :, -2:].min() == 1 and whole["image"][:, :, -1].min() > 0.9
    assert crop["mask"].max() == 0  # the centre crop misses the band
    with pytest.raises(ValueError, match="data.fit"):
        AnomalyImageDataset([sample], 32, fit="pad")


def test_feature_jitter_perturbs_head_inputs_only(tiny_data: Path) -> None:
    cfg = load_ad_config("tiny", [*TINY, f"data.root={tiny_data}", "data.category=brick"])
    model = AnomalyTask(cfg).build_model()
    feats = model.features(torch.rand(2, 3, 64, 64))
    with torch.no_grad():
        clean = model(features=feats)
        torch.manual_seed(5)
        noisy = model(features=feats, jitter=20.0)
        torch.manual_seed(5)
        again = model(features=feats, jitter=20.0)
    for (t0, o0), (t1, o1), (_, o2) in zip(clean, noisy, again, strict=True):
        torch.testing.assert_close(t1, t0)  # the reconstruction targets stay the clean tokens
        assert not torch.allclose(o1.x_out, o0.x_out, atol=1e-3)  # the heads saw perturbed tokens
        torch.testing.assert_close(o2.x_out, o1.x_out)  # seeded


def test_jitter_and_neighbour_mask_train_and_reload(tiny_data: Path, tmp_path: Path) -> None:
    from sa_anomaly.predictor import AnomalyPredictor

    run = tmp_path / "run"
    cfg = load_ad_config(
        "tiny",
        [
            *TINY,
            f"data.root={tiny_data}",
            "data.category=brick",
            f"train.run_dir={run}",
            "data.cache_features=true",
            "loss.feature_jitter=20",
            "model.intra_exclude_radius=1",
            "data.val_defects=surface",
        ],
    )
    res = fit(AnomalyTask(cfg), cfg.train, cfg)
    assert res.step == 4 and np.isfinite(res.last_metrics["val_image_auroc"])
    model = AnomalyPredictor.load(run).model
    radii = {m.self_attention.exclude_radius for head in model.heads for m in head.encoder.encode_layers}
    assert radii == {1}
