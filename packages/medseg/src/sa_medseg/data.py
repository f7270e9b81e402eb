"""Medical segmentation data: NIfTI / ACDC / TransUNet-npz+h5 readers, intensity windowing, 2D slice
training sets with MONAI augmentations and 3D evaluation volumes.

Array conventions: a *volume* is ``(S, H, W)`` with ``S`` the slice axis (NIfTI's last axis, so a NIfTI
array ``(X, Y, Z)`` becomes ``(Z, X, Y)``), its ``spacing`` is in the same order, in millimetres. Labels are
integer class maps of the same shape.

Layouts read:

* Synapse raw: ``<root>/img/img0001.nii.gz`` + ``<root>/label/label0001.nii.gz`` (pairs by the number);
* ACDC: ``<root>/patient001/patient001_frame01.nii.gz`` + ``..._frame01_gt.nii.gz``;
* TransUNet-preprocessed Synapse: ``<root>/train_npz/*.npz`` (``image``, ``label`` slices, already in
  [0, 1]) and ``<root>/test_vol_h5/*.npy.h5`` (``image``, ``label`` volumes ``(S, H, W)``).
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from shared_attention import io as media_io

__all__ = [
    "DataError",
    "Volume",
    "SliceDataset",
    "VolumeDataset",
    "window",
    "read_nifti",
    "read_nifti_bytes",
    "read_nifti_file",
    "quiet_nibabel",
    "VolumeTooLargeError",
    "read_h5_volume",
    "read_npz_slice",
    "find_nifti_pairs",
    "find_acdc_pairs",
    "load_volumes",
    "volume_to_slices",
]

Windowing = Literal["ct", "mr", "none"]


class DataError(ValueError):
    """A data file or folder is unusable; the message names it."""


@dataclass
class Volume:
    """One 3D case: ``image`` float32 ``(S, H, W)``, ``label`` int64 or ``None``, spacing (mm), NIfTI affine."""

    name: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: np.ndarray | None = None


def window(
    x: np.ndarray,
    mode: Windowing,
    ct_range: tuple[float, float] = (-125.0, 275.0),
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Intensity windowing to [0, 1]: CT HU clip (TransUNet's [-125, 275]) or MR percentiles; ``none`` keeps x."""
    x = np.asarray(x, dtype=np.float32)
    if mode == "none":
        return x
    if mode == "ct":
        lo, hi = ct_range
    elif mode == "mr":
        lo, hi = (float(v) for v in np.percentile(x, percentiles))
    else:
        raise ValueError(f"unknown windowing {mode!r}; use ct, mr or none")
    if hi <= lo:
        return np.zeros_like(x)
    return ((np.clip(x, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def _check_array(arr: np.ndarray, where: str, label: bool = False) -> np.ndarray:
    pre = f"{where}: " if where else ""
    if arr.size == 0:
        raise DataError(f"{pre}empty array")
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise DataError(
            f"{pre}expected a 3D volume, got {arr.ndim}D shape {arr.shape}"
            + (" (4D time series are not supported: pick one frame)" if arr.ndim == 4 else "")
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise DataError(f"{pre}unsupported dtype {arr.dtype} (expected a real numeric type)")
    if label:
        floating = np.issubdtype(arr.dtype, np.floating)
        if floating and (not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr))):
            raise DataError(f"{pre}label map must hold integer class ids, got non-integer values")
        if arr.min() < 0:
            raise DataError(f"{pre}label map has negative values")
    elif not np.all(np.isfinite(arr)):
        raise DataError(f"{pre}image contains NaN or Inf")
    return arr


def read_nifti(path: str | Path, label: bool = False) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Reads a 3D NIfTI file.

    Returns:
        ``(array (S, H, W), affine (4, 4), spacing (S, H, W) in mm)``; float32 images, int64 labels.

    Raises:
        DataError: missing or empty file, not NIfTI, not 3D, wrong dtype, non-integer labels.
    """
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: empty file")
    try:
        with quiet_nibabel():
            img = nib.load(str(p))
            # nibabel annotates load() as FileBasedImage, which lacks the SpatialImage API (dataobj, affine,
            # header.get_zooms) that every NIfTI image has: hence the ignores below
            arr = np.asanyarray(img.dataobj)  # type: ignore[attr-defined]  # nibabel stub: FileBasedImage
    except Exception as exc:  # nibabel raises several types for corrupt input
        raise DataError(f"{p}: cannot read as NIfTI: {exc}") from exc
    arr = _check_array(arr, str(p), label)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])  # type: ignore[attr-defined]  # nibabel stub
    vol = np.ascontiguousarray(np.transpose(arr, (2, 0, 1)))  # (Z, X, Y)
    spacing = (zooms[2], zooms[0], zooms[1])
    out = vol.astype(np.int64) if label else vol.astype(np.float32)
    return out, np.asarray(img.affine, dtype=np.float64), spacing  # type: ignore[attr-defined]  # nibabel stub


def nifti_bytes(volume: np.ndarray, affine: np.ndarray, dtype: Any = np.uint8) -> bytes:
    """``(S, H, W)`` array -> gzipped NIfTI-1 bytes with ``affine`` (axes back to ``(X, Y, Z)``)."""
    import gzip

    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(np.transpose(volume, (1, 2, 0))).astype(dtype), affine)
    img.header.set_data_dtype(dtype)
    return gzip.compress(img.to_bytes(), compresslevel=6)


class VolumeTooLargeError(DataError):
    """A volume whose header declares more voxels than allowed (found before reading the voxels)."""


_QUIET_LOCK = threading.Lock()
_quiet = {"depth": 0, "saved": False}


@contextmanager
def quiet_nibabel() -> Iterator[None]:
    """Mutes nibabel's ``nibabel.global`` logger (header problems it prints to stderr) inside the block."""
    import logging

    log = logging.getLogger("nibabel.global")
    with _QUIET_LOCK:
        if _quiet["depth"] == 0:
            _quiet["saved"] = log.disabled
            log.disabled = True
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                log.disabled = bool(_quiet["saved"])


def _read_nifti(
    source: media_io.ByteSource, label: bool, max_voxels: int | None, where: str
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Header first (:func:`shared_attention.io.read_nifti_header`), then exactly the declared bytes."""
    import nibabel as nib

    try:
        hdr, gz = media_io.read_nifti_header(source, where, max_voxels)
        raw = b"".join(media_io.iter_nifti_bytes(source, hdr, gz, where))
    except media_io.MediaTooLargeError as exc:
        raise VolumeTooLargeError(str(exc)) from exc
    except media_io.MediaError as exc:
        raise DataError(str(exc)) from exc
    pre = f"{where}: " if where else ""
    try:
        with quiet_nibabel():
            fh = nib.FileHolder(fileobj=io.BytesIO(raw))
            img = nib.Nifti1Image.from_file_map({"header": fh, "image": fh})
            arr = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for corrupt input
        raise DataError(f"{pre}not a readable NIfTI-1 file: {exc}") from exc
    arr = _check_array(arr, where, label)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    vol = np.ascontiguousarray(np.transpose(arr, (2, 0, 1)))
    return (
        vol.astype(np.int64 if label else np.float32),
        np.asarray(img.affine, np.float64),
        (zooms[2], zooms[0], zooms[1]),
    )


def read_nifti_bytes(
    data: bytes, label: bool = False, max_voxels: int | None = None, where: str = ""
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """:func:`read_nifti` of an in-memory ``.nii`` / ``.nii.gz`` (gzip detected by its magic), header first.

    Of a gzip stream only the first 352 bytes are inflated to check the header (shape, datatype and the voxel
    count against ``max_voxels``); then exactly the declared ``vox_offset + voxels * bytes per voxel`` are
    inflated in bounded steps: a stream that ends before is refused, data after the declared voxels is not
    inflated.

    Args:
        data: the file's bytes. label: read a label map (int64). max_voxels: refuse larger volumes (from the
            header, before decompression). where: the file name that starts every message (none when empty).

    Returns:
        ``(array (S, H, W), affine (4, 4), spacing (S, H, W) in mm)`` as :func:`read_nifti`.

    Raises:
        VolumeTooLargeError: more than ``max_voxels`` voxels declared.
        DataError: empty, truncated, corrupt, not NIfTI-1, not 3D, unsupported dtype, non-integer labels.
    """
    return _read_nifti(data, label, max_voxels, where)


def read_nifti_file(
    path: str | Path, label: bool = False, max_voxels: int | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """:func:`read_nifti_bytes` streamed from a file (the compressed file is not read whole either).

    Raises:
        VolumeTooLargeError / DataError: as :func:`read_nifti_bytes`, the message starting with the path.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    with p.open("rb") as f:
        return _read_nifti(f, label, max_voxels, str(p))


def read_h5_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """TransUNet ``test_vol_h5/*.npy.h5``: ``image`` ``(S, H, W)`` in [0, 1] and ``label`` (optional)."""
    import h5py

    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            if "image" not in f:
                raise DataError(f"{p}: no 'image' dataset (keys: {list(f.keys())})")
            image = _check_array(np.asarray(f["image"][()]), f"{p}:image")
            label = _check_array(np.asarray(f["label"][()]), f"{p}:label", label=True) if "label" in f else None
    except OSError as exc:
        raise DataError(f"{p}: cannot read HDF5: {exc}") from exc
    if label is not None and label.shape != image.shape:
        raise DataError(f"{p}: image {image.shape} and label {label.shape} shapes differ")
    return image.astype(np.float32), None if label is None else label.astype(np.int64)


def read_npz_slice(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """TransUNet ``train_npz/*.npz``: ``image`` and ``label`` 2D slices (``allow_pickle=False``)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            if "image" not in z or "label" not in z:
                raise DataError(f"{p}: expected arrays 'image' and 'label', found {list(z.keys())}")
            image, label = np.asarray(z["image"], np.float32), np.asarray(z["label"])
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{p}: cannot read npz: {exc}") from exc
    if image.ndim != 2 or image.shape != label.shape:
        raise DataError(f"{p}: expected 2D image and label of one shape, got {image.shape} and {label.shape}")
    return image, label.astype(np.int64)


def find_nifti_pairs(img_dir: str | Path, label_dir: str | Path | None) -> list[tuple[str, Path, Path | None]]:
    """Synapse-style ``img/img0001.nii.gz`` + ``label/label0001.nii.gz`` pairs (matched by the trailing id)."""
    d = Path(img_dir)
    if not d.is_dir():
        raise DataError(f"{d}: image folder does not exist")
    images = sorted(p for p in d.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not images:
        raise DataError(f"{d}: no .nii/.nii.gz files")
    labels: dict[str, Path] = {}
    if label_dir is not None:
        ld = Path(label_dir)
        if not ld.is_dir():
            raise DataError(f"{ld}: label folder does not exist")
        for p in ld.iterdir():
            if p.name.endswith((".nii", ".nii.gz")):
                labels[_case_id(p.name)] = p
    out = []
    for p in images:
        cid = _case_id(p.name)
        lab = labels.get(cid)
        if label_dir is not None and lab is None:
            raise DataError(f"{p}: no label file with id {cid!r} in {label_dir}")
        out.append((cid, p, lab))
    return out


def _case_id(name: str) -> str:
    stem = re.sub(r"\.nii(\.gz)?$", "", name)
    m = re.search(r"(\d+)$", stem)
    return m.group(1) if m else re.sub(r"^(img|image|label|seg)_?", "", stem)


def find_acdc_pairs(root: str | Path) -> list[tuple[str, Path, Path]]:
    """ACDC ``patientXXX/patientXXX_frameYY.nii.gz`` with ``..._gt.nii.gz`` (ED and ES frames)."""
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"{r}: ACDC folder does not exist")
    out = []
    for gt in sorted(r.glob("patient*/patient*_frame*_gt.nii*")):
        img = gt.with_name(gt.name.replace("_gt", ""))
        if not img.is_file():
            raise DataError(f"{gt}: image {img.name} is missing")
        out.append((img.name.split(".")[0], img, gt))
    if not out:
        raise DataError(f"{r}: no patient*/patient*_frame*_gt.nii.gz files")
    return out


def load_volumes(
    fmt: str, root: str | Path, windowing: Windowing = "none", label_dir: str | None = None, max_cases: int = 0
) -> list[Volume]:
    """Volumes of a dataset folder.

    Args:
        fmt: ``h5`` (TransUNet ``*.npy.h5`` folder), ``nifti`` (Synapse ``img``/``label`` folders: ``root`` is
            the image folder, ``label_dir`` the label folder) or ``acdc`` (patient folders).
        root: the folder. windowing: intensity windowing for NIfTI (``ct`` / ``mr`` / ``none``).
        max_cases: keep the first N cases (0: all).
    """
    vols: list[Volume] = []
    if fmt == "h5":
        files = sorted(Path(root).glob("*.h5"))
        if not files:
            raise DataError(f"{root}: no *.h5 volumes")
        for p in files[: max_cases or None]:
            img, lab = read_h5_volume(p)
            vols.append(Volume(p.name.split(".")[0], window(img, windowing), lab, (1.0, 1.0, 1.0)))
        return vols
    pairs: list[tuple[str, Path, Path | None]]
    if fmt == "nifti":
        pairs = find_nifti_pairs(root, label_dir)
    elif fmt == "acdc":
        pairs = list(find_acdc_pairs(root))
    else:
        raise DataError(f"unknown volume format {fmt!r}; use h5, nifti or acdc")
    for cid, ip, lp in pairs[: max_cases or None]:
        img, aff, sp = read_nifti(ip)
        lab = None
        if lp is not None:
            lab, _, _ = read_nifti(lp, label=True)
            if lab.shape != img.shape:
                raise DataError(f"{ip} {img.shape[::-1]} and {lp} {lab.shape[::-1]}: image and label shapes differ")
        vols.append(Volume(cid, window(img, windowing), lab, sp, aff))
    return vols


def volume_to_slices(vols: list[Volume], skip_empty: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """2D ``(image, label)`` slices of labelled volumes (optionally without slices lacking foreground)."""
    out = []
    for v in vols:
        if v.label is None:
            raise DataError(f"{v.name}: a training volume needs a label")
        for s in range(v.image.shape[0]):
            if skip_empty and not v.label[s].any():
                continue
            out.append((v.image[s], v.label[s]))
    return out


class SliceDataset(Dataset[dict[str, torch.Tensor]]):
    """2D training slices with MONAI augmentations, padded/cropped to ``patch_size``.

    Args:
        slices: ``(image (H, W) in [0, 1], label (H, W))`` pairs.
        patch_size: ``(h, w)`` of the training crops (slices are padded first when smaller).
        augment: random rot90 + flips (``rot90_flip``), small rotations (``rotate_deg``) and zoom.
        rot90_flip / rotate_deg / zoom: augmentation settings (TransUNet: rot90+flip or +-20 degrees).
        repeat: passes over the slices per epoch.
    """

    def __init__(
        self,
        slices: list[tuple[np.ndarray, np.ndarray]],
        patch_size: tuple[int, int] = (224, 224),
        augment: bool = True,
        rot90_flip: float = 0.5,
        rotate_deg: float = 20.0,
        zoom: tuple[float, float] = (0.9, 1.1),
        repeat: int = 1,
    ) -> None:
        if not slices:
            raise DataError("no training slices")
        self.slices = slices
        self.repeat = max(1, repeat)
        self.transform = _build_transform(tuple(patch_size), augment, rot90_flip, rotate_deg, zoom)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.slices) * self.repeat

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        img, lab = self.slices[i % len(self.slices)]
        d = self.transform({"image": img[None].astype(np.float32), "label": lab[None].astype(np.float32)})
        image = torch.as_tensor(np.asarray(d["image"]), dtype=torch.float32)  # (1, h, w)
        label = torch.as_tensor(np.asarray(d["label"])).round().long()[0]  # (h, w)
        return {"image": image, "label": label}


def _build_transform(
    patch: tuple[int, int], augment: bool, rot90_flip: float, rotate_deg: float, zoom: tuple[float, float]
) -> Any:
    from monai.transforms import (
        Compose,
        RandFlipd,
        RandRotate90d,
        RandRotated,
        RandSpatialCropd,
        RandZoomd,
        SpatialPadd,
    )

    keys = ["image", "label"]
    ts: list[Any] = []
    if augment:
        if rot90_flip > 0:
            ts += [
                RandRotate90d(keys, prob=rot90_flip, spatial_axes=(0, 1)),
                RandFlipd(keys, prob=rot90_flip, spatial_axis=0),
                RandFlipd(keys, prob=rot90_flip, spatial_axis=1),
            ]
        if rotate_deg > 0:
            r = float(np.deg2rad(rotate_deg))
            ts.append(RandRotated(keys, range_x=r, prob=0.5, mode=("bilinear", "nearest"), padding_mode="zeros"))
        if zoom[0] != 1.0 or zoom[1] != 1.0:
            ts.append(
                RandZoomd(
                    keys, prob=0.3, min_zoom=zoom[0], max_zoom=zoom[1], mode=("bilinear", "nearest"), keep_size=True
                )
            )
    ts += [SpatialPadd(keys, spatial_size=patch), RandSpatialCropd(keys, roi_size=patch, random_size=False)]
    return Compose(ts)


class VolumeDataset(Dataset[dict[str, Any]]):
    """Evaluation volumes: ``image`` float ``(S, H, W)``, ``label`` long ``(S, H, W)``, ``spacing`` (3,)."""

    def __init__(self, volumes: list[Volume]) -> None:
        if not volumes:
            raise DataError("no evaluation volumes")
        for v in volumes:
            if v.label is None:
                raise DataError(f"{v.name}: an evaluation volume needs a label")
        self.volumes = volumes

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, i: int) -> dict[str, Any]:
        v = self.volumes[i]
        assert v.label is not None
        return {
            "image": torch.from_numpy(v.image),
            "label": torch.from_numpy(v.label),
            "spacing": torch.tensor(v.spacing, dtype=torch.float64),
            "index": i,
        }


def load_npz_dir(root: str | Path, max_slices: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """All ``*.npz`` slices of a TransUNet ``train_npz`` folder (sorted by name)."""
    files = sorted(Path(root).glob("*.npz"))
    if not files:
        raise DataError(f"{root}: no *.npz slices")
    return [read_npz_slice(p) for p in files[: max_slices or None]]
