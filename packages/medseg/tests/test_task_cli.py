"""End to end on tiny data: seg-sample-like folders -> train (tiny VM-UNet / ParaTransCNN) -> evaluate ->
predict NIfTI (affine kept) and PNG; predictor input errors; the entry point."""

from __future__ import annotations

import gzip
import io
import json
from importlib.metadata import entry_points
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from sa_medseg.cli import main
from sa_medseg.predictor import SegPredictor

from shared_attention.serving import InputError


def _phantom(rng: np.random.Generator, S: int, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Two nested ellipses (class 2 inside class 1) with class-dependent brightness and noise."""
    yy, xx = np.mgrid[:H, :W]
    img = np.zeros((S, H, W), np.float32)
    lab = np.zeros((S, H, W), np.int64)
    for s in range(S):
        cy, cx = H / 2 + rng.uniform(-3, 3), W / 2 + rng.uniform(-3, 3)
        r = ((yy - cy) / (H * 0.35)) ** 2 + ((xx - cx) / (W * 0.35)) ** 2
        lab[s][r < 1] = 1
        lab[s][r < 0.35] = 2
    img = np.choose(lab, [0.05, 0.5, 0.9]).astype(np.float32) + rng.normal(0, 0.03, lab.shape).astype(np.float32)
    return np.clip(img, 0, 1), lab


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seg")
    rng = np.random.default_rng(0)
    (root / "train_npz").mkdir()
    img, lab = _phantom(rng, 6, 40, 48)
    for s in range(6):
        np.savez(root / "train_npz" / f"case_s{s}.npz", image=img[s], label=lab[s])
    (root / "val").mkdir()
    img, lab = _phantom(rng, 3, 40, 48)
    with h5py.File(root / "val" / "case_val.npy.h5", "w") as f:
        f["image"], f["label"] = img, lab
    aff = np.array([[0.9, 0, 0, -10], [0, 1.1, 0, 5], [0, 0, 2.0, 30], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.transpose(img, (1, 2, 0)), aff), str(root / "vol.nii.gz"))
    import cv2

    cv2.imwrite(str(root / "slice.png"), (img[1] * 255).astype(np.uint8))
    return root


@pytest.mark.parametrize("config,variant", [("vmunet-cpu", "vmunet-tiny"), ("paratranscnn-cpu", "paratranscnn-tiny")])
def test_train_evaluate_predict(
    tiny_data: Path, tmp_path: Path, config: str, variant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--config",
            config,
            f"model.variant={variant}",
            f"train.run_dir={run}",
            f"data.train_dir={tiny_data / 'train_npz'}",
            f"data.val_dir={tiny_data / 'val'}",
            "data.patch_size=[32,32]",
            "data.repeat=2",
            "train.max_steps=3",
            "train.batch_size=2",
            "train.eval_every=3",
            "train.checkpoint_every=3",
            "train.progress=false",
            "train.tensorboard=false",
        ]
    )
    assert rc == 0
    assert (run / "model.safetensors").is_file() and list((run / "samples").glob("*.png"))
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["result"]["step"] == 3
    assert main(["evaluate", "--run", str(run), "--save", str(tmp_path / "ov")]) == 0
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["domain"] == "medseg" and ev["baseline_name"] == "multi-Otsu" and ev["higher_is_better"] is True
    assert 0.0 <= ev["model"] <= 1.0 and ev["baseline"] > 0.9  # the phantom is easy for Otsu
    assert "grey_matter" in capsys.readouterr().out
    assert list((tmp_path / "ov").glob("*_overlay.png"))
    # NIfTI in -> NIfTI out with the same affine and grid
    out = tmp_path / "pred" / "labels.nii.gz"
    assert main(["predict", str(tiny_data / "vol.nii.gz"), str(out), "--run", str(run)]) == 0
    src, res = nib.load(str(tiny_data / "vol.nii.gz")), nib.load(str(out))
    assert res.shape == src.shape and np.allclose(res.affine, src.affine)
    assert set(np.unique(np.asarray(res.dataobj))) <= {0, 1, 2}
    assert out.with_name("labels_overlay.png").is_file()
    # PNG slice in -> label PNG + overlay
    assert main(["predict", str(tiny_data / "slice.png"), str(tmp_path / "png"), "--run", str(run)]) == 0
    assert (tmp_path / "png" / "slice_labels.png").is_file() and (tmp_path / "png" / "slice_overlay.png").is_file()


def test_predictor_contract_and_input_errors(tiny_data: Path) -> None:
    from sa_medseg.models.vmunet import build_vmunet

    pred = SegPredictor(build_vmunet("vmunet-tiny", num_classes=3), ["background", "a", "b"], multiple=32)
    res = pred((tiny_data / "vol.nii.gz").read_bytes())
    assert res["classes"] == ["background", "a", "b"]
    img = nib.Nifti1Image.from_bytes(gzip.decompress(res["labels_nifti"]))
    assert img.shape == (40, 48, 3) and np.allclose(img.affine, nib.load(str(tiny_data / "vol.nii.gz")).affine)
    png = pred((tiny_data / "slice.png").read_bytes())
    assert png["labels_png"][:4] == b"\x89PNG" and png["overlay_png"][:4] == b"\x89PNG"
    batch = np.random.default_rng(0).random((2, 3, 40, 48)).astype(np.float32)
    import torch

    assert pred.predict(torch.from_numpy(batch))["labels"].shape == (2, 3, 40, 48)
    with pytest.raises(InputError, match="empty file"):
        pred.preprocess(b"")
    with pytest.raises(InputError, match="4D"):
        pred.preprocess(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.float32), np.eye(4)).to_bytes())
    with pytest.raises(InputError, match="dtype"):
        pred.preprocess(np.zeros((2, 8, 8), dtype=np.complex64))
    with pytest.raises(InputError, match="NIfTI"):
        pred.preprocess(b"garbage bytes that are not an image")
    buf = io.BytesIO()
    assert buf is not None


def test_entry_point_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    eps = [e for e in entry_points(group="shared_attention.predictors") if e.name == "medseg"]
    assert eps and eps[0].load() is SegPredictor
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "convert" in capsys.readouterr().out
