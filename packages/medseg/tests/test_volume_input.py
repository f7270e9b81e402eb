"""Reading prediction inputs: NIfTI headers checked before decompression (gzip bombs), one-line CLI errors,
overlays in the input's orientation (PNG) / the radiological display (NIfTI), annotated side-by-side PNGs."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch
from sa_medseg.data import DataError, read_nifti_bytes
from sa_medseg.domain import main
from sa_medseg.overlay import PALETTE, overlay, side_by_side, to_display
from sa_medseg.predictor import MedsegPredictor
from torch import nn

from shared_attention.io import gzip_with_zeros, synth_nifti_header

MiB = 1 << 20
#: the extra peak memory refusing one bomb may take
MAX_EXTRA_BYTES = 50 * 1000 * 1000


class Threshold(nn.Module):
    """A stand-in network: class 1 where the slice is brighter than 0.5, else background (3 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :1]  # (B, 1, H, W)
        return torch.cat([0.5 - x, x - 0.5, torch.full_like(x, -1.0)], dim=1) + self.bias  # (B, 3, H, W)


def predictor() -> MedsegPredictor:
    return MedsegPredictor(Threshold(), ["background", "bright", "other"], multiple=8)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    good = gzip.compress(nib.Nifti1Image(np.random.default_rng(0).random((16, 24, 3), "float32"), np.eye(4)).to_bytes())
    content = {
        "bomb.nii.gz": gzip_with_zeros(synth_nifti_header((2000, 2000, 2000)), 128 * MiB),  # ~130 KB
        "truncated.nii.gz": good[: len(good) // 2],
        "text.nii": b"this is not a NIfTI file, just some text " * 20,
        "text.nii.gz": gzip.compress(b"this is not a NIfTI file, just some text " * 20),
        "empty.nii.gz": b"",
    }
    paths = {}
    for name, data in content.items():
        paths[name] = root / name
        paths[name].write_bytes(data)
    assert paths["bomb.nii.gz"].stat().st_size < MiB
    return paths


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A servable run folder of a tiny VM-UNet (random weights, written like ``convert`` does; no training)."""
    from sa_medseg.config import MedsegConfig
    from sa_medseg.domain import DOMAIN
    from sa_medseg.models import build_model

    from shared_attention.domain import Converted, write_run_folder
    from shared_attention.engine.config import replace

    cfg = replace(MedsegConfig(), **{"model.variant": "vmunet-tiny"})
    run = tmp_path_factory.mktemp("run") / "run"
    write_run_folder(DOMAIN, run, Converted(build_model(cfg), cfg, {}, summary="tiny"))
    return run


# ------------------------------------------------------------------------------------------ gzip bombs

_CHILD = """
import json, sys
import numpy as np, torch
from sa_medseg.predictor import MedsegPredictor
from shared_attention.serving import InputError
from shared_attention.io import gzip_with_zeros, synth_nifti_header

from shared_attention.memory import peak_rss_bytes as peak

pred = MedsegPredictor(torch.nn.Conv2d(1, 3, 1), ["background", "a", "b"])
raw = open(sys.argv[1], "rb").read()
res = {}
for kind, arg in (("path", sys.argv[1]), ("bytes", raw)):
    before = peak()
    try:
        pred.preprocess(arg)
        res[kind] = {"error": None}
    except InputError as exc:
        res[kind] = {"error": str(exc)}
    res[kind]["extra_bytes"] = peak() - before
print(json.dumps(res))
"""


def test_gzip_bomb_is_refused_from_its_header_with_bounded_memory(files: dict[str, Path]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(files["bomb.nii.gz"])], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for kind in ("path", "bytes"):
        err = res[kind]["error"] or ""
        assert "(2000, 2000, 2000)" in err and "8,000,000,000 voxels" in err and "134,217,728" in err, res
        assert res[kind]["extra_bytes"] < MAX_EXTRA_BYTES, res


def test_read_nifti_bytes_checks_the_header_first_and_inflates_only_the_declared_bytes() -> None:
    head = synth_nifti_header((6, 5, 4), "float32")
    with pytest.raises(DataError, match=r"\(2000, 2000, 2000\).*voxels"):
        read_nifti_bytes(gzip_with_zeros(synth_nifti_header((2000, 2000, 2000)), MiB), max_voxels=10**6)
    vol, _, _ = read_nifti_bytes(gzip_with_zeros(head, 6 * 5 * 4 * 4 + 10 * MiB))  # data after the volume: ignored
    assert vol.shape == (4, 6, 5) and not vol.any()
    two_members = gzip_with_zeros(head, 200) + gzip_with_zeros(b"", 280)
    assert read_nifti_bytes(two_members)[0].shape == (4, 6, 5)
    assert read_nifti_bytes(head + bytes(480))[0].shape == (4, 6, 5)
    with pytest.raises(DataError, match="truncated"):
        read_nifti_bytes(gzip_with_zeros(head, 479))
    with pytest.raises(DataError, match="truncated"):
        read_nifti_bytes(head + bytes(479))
    with pytest.raises(DataError, match="truncated gzip"):
        read_nifti_bytes(gzip_with_zeros(head, 480)[:-30])
    with pytest.raises(DataError, match="not a NIfTI"):
        read_nifti_bytes(gzip.compress(b"plain text, long enough to fill a header " * 20))


# ------------------------------------------------------------------------------------------ CLI errors


@pytest.mark.parametrize(
    "name,problem",
    [
        ("truncated.nii.gz", "truncated"),
        ("text.nii", "not a NIfTI"),
        ("text.nii.gz", "not a NIfTI"),
        ("empty.nii.gz", "empty file"),
        ("bomb.nii.gz", "8,000,000,000 voxels"),
    ],
)
def test_predict_reports_a_bad_volume_in_one_line_with_exit_code_2(
    files: dict[str, Path], run_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], name: str, problem: str
) -> None:
    capfd.readouterr()
    rc = main(["predict", str(files[name]), str(tmp_path / "out"), "--run", str(run_dir)])
    err = capfd.readouterr().err  # fd level: nibabel's log handler writes to the process's stderr
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {files[name]}: ") and problem in lines[0], err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ------------------------------------------------------------------------------------------ orientation


def test_png_overlay_keeps_the_input_size_and_orientation() -> None:
    img = np.full((40, 64), 20, np.uint8)  # H != W
    img[:10, :16] = 250  # a bright block in the top-left corner
    res = predictor()(cv2.imencode(".png", img)[1].tobytes())
    ov = cv2.cvtColor(cv2.imdecode(np.frombuffer(res["overlay_png"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    labels = cv2.imdecode(np.frombuffer(res["labels_png"], np.uint8), cv2.IMREAD_UNCHANGED)
    assert ov.shape == (40, 64, 3) and labels.shape == (40, 64)
    assert (labels[:10, :16] == 1).all() and (labels[10:] == 0).all() and (labels[:, 16:] == 0).all()
    np.testing.assert_array_equal(ov[10:, 16:], 20)  # background stays the grey input
    assert ov[:10, :16].mean() > 100


def _nifti_with_block(affine: np.ndarray, block: tuple[slice, slice]) -> bytes:
    vol = np.full((40, 64, 5), 0.1, "float32")  # (X, Y, Z)
    vol[block[0], block[1], :] = 0.9
    return nib.Nifti1Image(vol, affine).to_bytes()


@pytest.mark.parametrize(
    "affine,block",
    [
        # RAS: voxel x grows to the patient's right, y to anterior -> the block is right-anterior
        (np.eye(4), (slice(30, 40), slice(48, 64))),
        # LAS (x flipped): the patient's right is at small x
        (np.diag([-1.0, 1.0, 1.0, 1.0]), (slice(0, 10), slice(48, 64))),
        # LPS (DICOM-like): right at small x, anterior at small y
        (np.diag([-1.0, -1.0, 1.0, 1.0]), (slice(0, 10), slice(0, 16))),
    ],
)
def test_nifti_overlay_is_in_radiological_display(affine: np.ndarray, block: tuple[slice, slice]) -> None:
    pred = predictor()
    res = pred(_nifti_with_block(affine, block))
    ov = cv2.cvtColor(cv2.imdecode(np.frombuffer(res["overlay_png"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    # axial slice: rows run anterior -> posterior (Y), columns the patient's right -> left (X)
    assert ov.shape == (64, 40, 3)
    grey = ov.astype(int).sum(axis=2)
    assert grey[:16, :10].min() > grey[16:, :].max() and grey[:16, :10].min() > grey[:, 10:].max()
    # the label map keeps the input's voxel grid and affine
    lab = nib.Nifti1Image.from_bytes(gzip.decompress(res["labels_nifti"]))
    assert lab.shape == (40, 64, 5) and np.allclose(lab.affine, affine)
    assert (np.asarray(lab.dataobj)[block[0], block[1], :] == 1).all()


def test_to_display_planes() -> None:
    sl = np.arange(6).reshape(2, 3)  # (voxel axis 0, voxel axis 1)
    np.testing.assert_array_equal(to_display(sl, None), sl)  # no affine: as stored
    np.testing.assert_array_equal(to_display(sl, np.eye(4)), sl[::-1, ::-1].T)  # RAS axial
    # coronal (third axis A-P): rows superior -> inferior, columns right -> left
    cor = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # voxel (i, j, k) -> (R, S, A)
    np.testing.assert_array_equal(to_display(sl, cor), sl[::-1, ::-1].T)
    # sagittal (third axis L-R): rows superior -> inferior, columns anterior -> posterior
    sag = np.array([[0, 0, 1.0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # voxel (i, j, k) -> (A, S, R)
    np.testing.assert_array_equal(to_display(sl, sag), sl[::-1, ::-1].T)
    sag_pi = np.array([[0, 0, 1.0, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]])  # (i, j, k) -> (P, I, R)
    np.testing.assert_array_equal(to_display(sl, sag_pi), sl.T)


# ------------------------------------------------------------------------------------------ side by side


def test_side_by_side_has_titles_and_a_colour_legend() -> None:
    H, W = 40, 160
    image = np.zeros((H, W), "float32")
    image[:10, :20] = 1.0  # top-left marker
    pred = np.zeros((H, W), np.int64)
    pred[20:30, 40:60] = 1
    label = np.zeros((H, W), np.int64)
    label[20:30, 100:120] = 2
    out = side_by_side(image, pred, label, class_names=["background", "liver", "spleen"])
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] > H and out.shape[1] >= 3 * W
    # each panel appears unchanged (same orientation) below its title
    panels = [overlay(image, np.zeros_like(pred)), overlay(image, pred), overlay(image, label)]
    found = []
    for p in panels:
        diff = cv2.matchTemplate(out, p, cv2.TM_SQDIFF)  # float sums: exactness is checked below
        r, c = (int(i) for i in np.unravel_index(int(diff.argmin()), diff.shape))
        assert np.array_equal(out[r : r + H, c : c + W], p), "panel not found unchanged"
        found.append((r, c))
    rows = {r for r, _ in found}
    assert len(rows) == 1 and rows.pop() > 0  # one row of panels, titles above it
    cols = [c for _, c in found]
    assert cols == sorted(cols) and len(set(cols)) == 3
    title = out[: found[0][0]]
    assert (title.max(axis=2) > 200).any()  # title text drawn
    below = out[found[0][0] + H :]
    for cid in (1, 2):  # legend swatches in the class colours
        assert (below == PALETTE[cid]).all(axis=2).sum() >= 25
    # small slices are enlarged so the titles fit; stacks of slices become rows of the same panels
    small = side_by_side(np.zeros((2, 12, 16), "float32"), np.zeros((2, 12, 16), np.int64))
    assert small.shape[1] >= 2 * 16 * 4 and small.shape[0] >= 2 * 12 * 4
