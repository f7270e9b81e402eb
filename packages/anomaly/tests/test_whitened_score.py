"""FOD's ``whitened_residual`` score: residual statistics against direct formulas, and a run that fits and
serves them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sa_anomaly.config import load_ad_config
from sa_anomaly.models.fod import FODAnomalyModel
from sa_anomaly.sample import build_sample
from sa_anomaly.task import AnomalyTask, train

from shared_attention.engine.checkpoint import load_weights

TINY = ["train.max_steps=4", "train.eval_every=2", "train.checkpoint_every=2", "train.batch_size=2",
        "train.progress=false", "train.tensorboard=false"]


def _model(score: str) -> FODAnomalyModel:
    torch.manual_seed(0)
    return FODAnomalyModel("test_efficientnet", (2, 3), 64, (16, 16), 2, 1, backbone_weights=None, score=score).eval()


def test_fit_residuals_and_maps_match_direct_formulas() -> None:
    model = _model("whitened_residual")
    assert {"residual_mean_0", "residual_precision_1"} <= set(model.state_dict())
    assert "residual_mean_0" not in _model("official").state_dict()  # official runs keep their state dict
    images = torch.rand(6, 3, 64, 64)
    with torch.no_grad():
        feats = model.features(images)
        assert model.fit_residuals([[f[:4] for f in feats], [f[4:] for f in feats]], shrinkage=0.01) == 6
        outs = model(features=feats, intra_maps=False, inter_maps=False)
        maps = model.anomaly_maps(features=feats)
    want = []
    for level, (tokens, out) in enumerate(outs):
        r = (tokens - out.x_out).double()  # (B, L, C)
        flat = r.reshape(-1, r.shape[-1])
        mu = flat.mean(0)
        cov = (flat - mu).T @ (flat - mu) / (len(flat) - 1)
        cov = cov + 0.01 * cov.diagonal().mean() * torch.eye(len(mu), dtype=cov.dtype)
        torch.testing.assert_close(model.residual_mean_0 if level == 0 else model.residual_mean_1, mu.float())
        d = torch.stack([torch.stack([((v - mu) @ torch.linalg.solve(cov, v - mu)).sqrt() for v in img]) for img in r])
        side = int(d.shape[1] ** 0.5)
        want.append(F.interpolate(d.float().reshape(-1, 1, side, side), size=(64, 64), mode="bilinear",
                                  align_corners=True)[:, 0])
    torch.testing.assert_close(maps, torch.stack(want).mean(0), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="whitened_residual"):
        _model("official").fit_residuals([feats])
    with pytest.raises(ValueError, match="score must be one of"):
        FODAnomalyModel("test_efficientnet", (2, 3), 64, (16, 16), 2, 1, backbone_weights=None, score="rec")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sample(tmp_path_factory.mktemp("ad"), textures=("brick",), crop=64, n_train=(2, 8), n_test=(1, 4))


@pytest.mark.parametrize("cache", [True, False])
def test_run_serves_the_statistics_of_its_selected_weights(tiny_data: Path, tmp_path: Path, cache: bool) -> None:
    from sa_anomaly.predictor import AnomalyPredictor

    run = tmp_path / "run"
    over = [*TINY, f"data.root={tiny_data}", "data.category=brick", f"train.run_dir={run}",
            "model.score=whitened_residual", f"data.cache_features={cache}"]
    cfg = load_ad_config("tiny", over)
    res = train(cfg)
    assert res.best_step in (2, 4) and np.isfinite(res.last_metrics["val_image_auroc"])
    served = load_weights(run / "model.safetensors")
    assert not torch.equal(served["residual_precision_0"], torch.eye(served["residual_precision_0"].shape[0]))
    # refitting on the served weights gives the served statistics: they belong to the selected weights
    pred = AnomalyPredictor.load(run)
    model = pred.model
    task = AnomalyTask(cfg)
    task.on_evaluation_start(model)
    for k in ("residual_mean_0", "residual_precision_0", "residual_mean_1", "residual_precision_1"):
        torch.testing.assert_close(model.state_dict()[k], served[k], rtol=1e-4, atol=1e-4, msg=k)
    out = pred.predict(torch.rand(1, 3, 64, 64))
    assert out["map"].shape == (1, 64, 64) and torch.isfinite(out["map"]).all() and torch.isfinite(out["score"]).all()


def test_whitened_score_needs_a_validation_split(tiny_data: Path, tmp_path: Path) -> None:
    cfg = load_ad_config("tiny", [*TINY, f"data.root={tiny_data}", "data.category=brick",
                                  f"train.run_dir={tmp_path}", "model.score=whitened_residual", "data.val_fraction=0"])
    with pytest.raises(ValueError, match="needs a validation split"):
        train(cfg)
