"""End to end on tiny data: train (engine) -> run folder -> evaluate -> predictor -> CLI predict / convert."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sa_anomaly.cli import main as cli_main
from sa_anomaly.config import load_ad_config
from sa_anomaly.losses import fod_loss
from sa_anomaly.model import FODHead
from sa_anomaly.predictor import AnomalyPredictor
from sa_anomaly.sample import build_sample

from shared_attention.serving import InputError


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ad")
    return build_sample(root, textures=("brick",), crop=64, n_train=(2, 5), n_test=(1, 6))


def test_loss_gradients_follow_the_minimax() -> None:
    """loss1 trains the RBF widths, loss2 the attention; the entropy term only touches the attention."""
    torch.manual_seed(0)
    head = FODHead(16, 6, 6, d_model=8, n_heads=2, n_layers=1)
    x, ref = torch.randn(2, 16, 6), torch.randn(1, 16, 6)
    out = head(x, ref, normalize_targets=True)
    terms = fod_loss(x, out, lambda1=0.5, lambda2=0.0)
    # with lambda2 = 0 the KL terms cancel in value: loss = 2 * rec
    torch.testing.assert_close(terms["loss"], 2 * terms["rec"])
    terms["loss"].backward()
    sig = head.encoder.encode_layers[0].cross_attention.sigma_projection.weight.grad
    assert sig is not None and sig.abs().sum() > 0


def test_train_evaluate_predict_convert(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    rc = cli_main(
        [
            "train",
            "--config",
            "tiny",  # the bundled test-sized FOD
            f"data.root={tiny_data}",
            "data.category=brick",
            f"train.run_dir={run}",
            "train.max_steps=3",
            "train.batch_size=4",
            "train.eval_every=3",
            "train.progress=false",
            "train.tensorboard=false",
            "data.val_fraction=0.2",
        ]
    )
    assert rc == 0
    assert (run / "model.safetensors").is_file() and list((run / "samples").glob("*.png"))
    assert cli_main(["evaluate", "--run", str(run), "--heatmaps", str(tmp_path / "maps")]) == 0
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["domain"] == "anomaly" and ev["higher_is_better"] is True
    assert 0 <= ev["model"] <= 1 and 0 <= ev["baseline"] <= 1 and 0 <= ev["details"]["aupro"] <= 1
    assert ev["details"]["images"] == 12 and (run / "threshold.json").is_file()
    panels = list((tmp_path / "maps" / "scratch").glob("*.png"))
    assert panels
    from sa_anomaly.imageio import read_image

    h, w = read_image(panels[0]).shape[:2]
    assert h > 64 and w > 3 * 64  # input | ground truth | map under titles, plus a colour bar
    per = ev["details"]["per_defect_image_auroc"]
    assert "scratch" in per and "good" not in per and all(0 <= v <= 1 for v in per.values())

    pred = AnomalyPredictor.load(run)
    img = tiny_data / "brick" / "test" / "scratch" / "000.png"
    res = pred(img.read_bytes())
    assert set(res) == {"score", "heatmap_png", "threshold", "heatmap_min", "heatmap_max"}
    assert res["heatmap_min"] == 0.0 and res["heatmap_max"] == 2 * res["threshold"]
    assert isinstance(res["score"], float) and res["heatmap_png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert res["threshold"] == json.loads((run / "threshold.json").read_text())["threshold"]
    # batched predict equals single predictions
    b1, b2 = pred.preprocess(img), pred.preprocess(tiny_data / "brick" / "test" / "good" / "000.png")
    both = pred.predict({k: torch.cat([b1[k], b2[k]]) for k in b1})  # as the server batches requests
    torch.testing.assert_close(both["score"][:1], pred.predict(b1)["score"], rtol=1e-4, atol=1e-6)
    with pytest.raises(InputError, match="image"):
        pred.preprocess(b"not an image")
    with pytest.raises(InputError, match="array"):
        pred.preprocess(np.zeros((4, 4)))

    out_dir = tmp_path / "pred"
    assert cli_main(["predict", str(img), str(out_dir), "--run", str(run)]) == 0
    assert (out_dir / "000_heatmap.png").is_file() and (out_dir / "scores.json").is_file()
    assert read_image(out_dir / "000_heatmap.png").shape == read_image(img).shape  # registered to the input
    assert (out_dir / "000_panel.png").is_file()
    entry = json.loads((out_dir / "scores.json").read_text())[str(img)]
    assert entry["heatmap_max"] > entry["heatmap_min"] and entry["panel"].endswith("000_panel.png")
    assert cli_main(["predict", str(tmp_path / "missing.png"), str(out_dir), "--run", str(run)]) == 2


def test_convert_official_heads_to_run_folder(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    heads, refs = [], []
    for i, (c, side) in enumerate([(32, 8), (48, 4)]):
        h = FODHead(side * side, c, c, d_model=16, n_heads=2, n_layers=1)
        save_file(h.state_dict(), str(tmp_path / f"l{i}.safetensors"))
        np.save(tmp_path / f"r{i}.npy", np.random.rand(c, side * side).astype(np.float32))
        heads.append(str(tmp_path / f"l{i}.safetensors"))
        refs.append(str(tmp_path / f"r{i}.npy"))
    import timm

    w = tmp_path / "backbone.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), w)
    out = tmp_path / "official_run"
    assert (
        cli_main(
            [
                "convert",
                str(out),
                "--heads",
                *heads,
                "--refs",
                *refs,
                "--backbone-weights",
                str(w),
                "--backbone",
                "test_efficientnet",
                "--image-size",
                "64",
            ]
        )
        == 0
    )
    pred = AnomalyPredictor.load(out)
    res = pred(np.random.rand(80, 80, 3).astype(np.float32))
    assert res["threshold"] is None and res["score"] >= 0


def test_config_errors_name_the_field() -> None:
    from shared_attention.engine import ConfigError

    with pytest.raises(ConfigError, match="model.n_heads"):
        load_ad_config("cpu", ["model.n_heads=two"])
    with pytest.raises(FileNotFoundError, match="bundled"):
        load_ad_config("nope")
