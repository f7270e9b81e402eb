"""End to end on tiny real data: train (engine) -> run folder -> predictor -> CLI predict / evaluate."""

import json

import numpy as np
import pytest
import torch
from sa_restoration.cli import main as cli_main
from sa_restoration.config import load_sr_config
from sa_restoration.imageio import read_image, write_png
from sa_restoration.predictor import SRPredictor, self_ensemble
from sa_restoration.resize import imresize
from sa_restoration.task import SRTask, score_pair
from skimage import data as skdata

from shared_attention.engine import fit
from shared_attention.serving import InputError

TINY = ("model.overrides={embed_dim: 12, depths: [1], num_heads: [2], window_size: 4, compress_ratio: 3, "
        "squeeze_factor: 4}")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr")
    img = skdata.astronaut().astype(np.float32) / 255.0
    for i in range(4):
        write_png(root / "train" / f"p{i}.png", img[100 + 40 * i : 148 + 40 * i, 150:198])
    for i in range(2):
        gt = img[300 + 30 * i : 332 + 30 * i, 200:240]
        write_png(root / "GTmod2" / f"v{i}.png", gt)
        write_png(root / "LRbicx2" / f"v{i}.png", np.clip(imresize(gt, 0.5), 0, 1))
    return root


def _cfg(root, run_dir, *extra):
    return load_sr_config("cpu-x2", [
        TINY, f"train.run_dir={run_dir}", f"data.train_gt_dir={root}/train", f"data.val_gt_dir={root}/GTmod{{scale}}",
        f"data.val_lq_dir={root}/LRbicx{{scale}}", "data.patch_size=8", "data.repeat=2", "train.batch_size=4",
        "train.progress=false", "train.tensorboard=false", "sample_images=1", *extra,
    ])


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "sr"
    cfg = _cfg(tiny_data, run, "train.max_steps=6", "train.eval_every=3", "train.checkpoint_every=3")
    res = fit(SRTask(cfg), cfg.train, cfg)
    return run, res


def test_training_writes_run_folder_samples_and_metrics(trained):
    run, res = trained
    assert res.step == 6 and {"psnr_y", "ssim_y", "bicubic_psnr_y", "gain_db"} <= set(res.last_metrics)
    assert 20 < res.last_metrics["bicubic_psnr_y"] < 60
    samples = sorted((run / "samples").glob("*.png"))
    panel = read_image(samples[0])  # bicubic | model | ground truth under their titles, enlarged x4 to 128 wide
    assert samples and panel.shape[1] >= 3 * 4 * 40 and panel.shape[0] > 4 * 32
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["model"]["arch"] == "HAT" and meta["result"]["step"] == 6 and meta["weights"] == "ema"


def test_predictor_any_size_and_errors(trained, tiny_data):
    run, _ = trained
    pred = SRPredictor.load(run)
    png = pred((tiny_data / "LRbicx2" / "v0.png").read_bytes())
    out = read_image(png)
    assert out.shape == (32, 40, 3)
    odd = np.random.default_rng(0).random((13, 19, 3)).astype(np.float32)
    assert pred.predict(pred.preprocess(odd)).shape == (1, 3, 26, 38)
    with pytest.raises(InputError, match="image"):
        pred.preprocess(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(InputError, match="NaN"):
        pred.preprocess(np.full((8, 8, 3), np.nan, dtype=np.float32))
    info = pred.info()
    assert info["domain"] == "restoration" and len(info["weights_sha256"]) == 64


def test_self_ensemble_of_equivariant_fn_is_identity():
    x = torch.rand(1, 3, 6, 6)
    torch.testing.assert_close(self_ensemble(lambda t: t * 2, x), x * 2)
    # a non-equivariant function gets averaged over the 8 transforms
    y = self_ensemble(lambda t: t + torch.arange(6.0), x)
    assert not torch.allclose(y, x + torch.arange(6.0))


def test_tiled_predictor_close_to_whole_image(trained, tiny_data):
    run, _ = trained
    whole = SRPredictor.load(run)
    tiled = SRPredictor.load(run, tile=8, overlap=4)
    x = whole.preprocess(read_image(tiny_data / "LRbicx2" / "v1.png"))
    a, b = whole.predict(x), tiled.predict(x)
    assert a.shape == b.shape
    # HAT is not strictly local (global channel pooling): close, not equal (see sa_restoration.tiling)
    assert (a - b).abs().mean() < 0.02


def test_cli_predict_evaluate_convert_errors(trained, tiny_data, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "out.png"
    assert cli_main(["predict", str(tiny_data / "LRbicx2" / "v0.png"), str(out), "--run", str(run)]) == 0
    assert read_image(out).shape == (32, 40, 3)
    bad = tmp_path / "bad.png"
    bad.write_bytes((tiny_data / "LRbicx2" / "v0.png").read_bytes()[:60])
    assert cli_main(["predict", str(bad), str(tmp_path / "o2.png"), "--run", str(run)]) == 2
    assert "bad.png" in capsys.readouterr().err
    assert not (tmp_path / "o2.png").exists()
    assert cli_main(["evaluate", "--run", str(run), "--json", str(tmp_path / "r.json")]) == 0
    summary = json.loads((run / "evaluation.json").read_text())
    rows = json.loads((tmp_path / "r.json").read_text())["details"]["per_image"]
    assert summary["domain"] == "restoration" and summary["higher_is_better"] is True
    assert summary["model"] == pytest.approx(sum(r["psnr_y"] for r in rows) / len(rows))
    assert summary["baseline"] == pytest.approx(sum(r["bicubic_psnr_y"] for r in rows) / len(rows))
    table = capsys.readouterr().out
    assert "mean" in table and "v0" in table
    assert json.loads((tmp_path / "r.json").read_text()) == summary
    assert len(rows) == 2 and all(r["psnr_y"] > 10 for r in rows)
    assert cli_main(["evaluate", "--run", str(tmp_path / "missing")]) == 2


def test_score_pair_gray_convention():
    rng = np.random.default_rng(0)
    g = rng.random((20, 20)).astype(np.float32)
    gt = np.repeat(g[..., None], 3, axis=2)
    sr = np.clip(gt + rng.normal(0, 0.02, gt.shape), 0, 1).astype(np.float32)
    p_gray, _ = score_pair(sr, gt, 2)
    from sa_restoration.metrics import psnr_y

    assert p_gray == pytest.approx(psnr_y(sr.mean(axis=2), g, crop_border=2))
    assert p_gray != pytest.approx(psnr_y(sr, gt, crop_border=2))
