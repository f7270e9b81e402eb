"""gzip'd NIfTI bombs: the header is read (and the voxel count checked) before anything else is inflated; the
completeness check streams with a byte cap taken from the header and keeps no output.

Peak memory is measured in a fresh interpreter (its own peak RSS before and after one call), so what other
tests allocated does not hide or fake an increase.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sa_serve.uploads import UploadError, check_volume

from shared_attention.io import gzip_with_zeros, synth_nifti_header

MiB = 1 << 20
#: the extra peak memory one check may take
MAX_EXTRA_BYTES = 50 * 1000 * 1000


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``huge``: a header claiming 2000^3 int16 + 128 MiB of zeros (~130 KB compressed); ``trailing``: a valid
    (6, 5, 4) int16 volume followed by 128 MiB of zeros."""
    root = tmp_path_factory.mktemp("bombs")
    out = {
        "huge": gzip_with_zeros(synth_nifti_header((2000, 2000, 2000)), 128 * MiB),
        "trailing": gzip_with_zeros(synth_nifti_header((6, 5, 4)), 6 * 5 * 4 * 2 + 128 * MiB),
    }
    paths = {}
    for name, data in out.items():
        assert len(data) < 1 * MiB  # the bombs themselves stay small
        paths[name] = root / f"{name}.nii.gz"
        paths[name].write_bytes(data)
    return paths


_CHILD = """
import json, sys
from sa_serve.uploads import UploadError, check_volume

from shared_attention.memory import peak_rss_bytes as peak

data = open(sys.argv[1], "rb").read()
before = peak()
try:
    res = {"shape": list(check_volume(data, "application/gzip", 512**3, 1 << 30))}
except UploadError as exc:
    res = {"status": exc.status, "message": str(exc)}
res["extra_bytes"] = peak() - before
print(json.dumps(res))
"""


def _check_in_child(path: Path) -> dict[str, object]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    res: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return res


def test_voxel_count_is_refused_from_the_header_with_bounded_memory(bombs: dict[str, Path]) -> None:
    res = _check_in_child(bombs["huge"])
    assert res["status"] == 413
    assert "(2000, 2000, 2000)" in str(res["message"]) and "8,000,000,000 voxels" in str(res["message"])
    assert int(res["extra_bytes"]) < MAX_EXTRA_BYTES, res


def test_data_after_the_declared_voxels_is_not_inflated(bombs: dict[str, Path]) -> None:
    res = _check_in_child(bombs["trailing"])
    assert res.get("shape") == [6, 5, 4], res
    assert int(res["extra_bytes"]) < MAX_EXTRA_BYTES, res


def test_declared_size_above_the_inflation_cap_is_refused_before_inflating() -> None:
    # 300^3 float32 = 108 MB declared; voxels are within the limit, the inflation cap is 4 MiB; only the header
    # is present, so inflating anything beyond it would end in "truncated" instead
    data = gzip_with_zeros(synth_nifti_header((300, 300, 300), "float32"), 0)
    with pytest.raises(UploadError, match=r"108,000,352 bytes.*4,194,304") as err:
        check_volume(data, "application/gzip", 512**3, 4 * MiB)
    assert err.value.status == 413


def test_header_fields_are_checked_before_inflating() -> None:
    head = bytearray(synth_nifti_header((6, 5, 4)))
    head[70:72] = (7).to_bytes(2, "little")  # no such datatype code
    with pytest.raises(UploadError, match="datatype code 7") as err:
        check_volume(gzip_with_zeros(bytes(head), 240), "application/gzip", 1000, MiB)
    assert err.value.status == 415
    head = bytearray(synth_nifti_header((6, 5, 4)))
    head[108:112] = np.float32("nan").tobytes()
    with pytest.raises(UploadError, match="vox_offset"):
        check_volume(gzip_with_zeros(bytes(head), 240), "application/gzip", 1000, MiB)
    # the header itself cut short inside the gzip stream
    with pytest.raises(UploadError, match="truncated"):
        check_volume(gzip_with_zeros(synth_nifti_header((6, 5, 4)), 0)[:40], "application/gzip", 1000, MiB)


def test_complete_volumes_pass_in_every_form() -> None:
    head = synth_nifti_header((6, 5, 4))
    assert check_volume(gzip_with_zeros(head, 240), "application/gzip", 1000, MiB) == (6, 5, 4)
    assert check_volume(head + bytes(240), "application/x-nifti", 1000, MiB) == (6, 5, 4)
    # two gzip members (what `cat a.gz b.gz` gives; gzip.decompress and nibabel read it)
    two = gzip_with_zeros(head, 100) + gzip_with_zeros(b"", 140)
    assert check_volume(two, "application/gzip", 1000, MiB) == (6, 5, 4)
    with pytest.raises(UploadError, match="truncated"):
        check_volume(gzip_with_zeros(head, 239), "application/gzip", 1000, MiB)
    with pytest.raises(UploadError, match="truncated NIfTI"):
        check_volume(head + bytes(239), "application/x-nifti", 1000, MiB)
    # a cut gzip trailer (CRC / size) right after the last voxel byte
    with pytest.raises(UploadError, match="truncated gzip"):
        check_volume(gzip_with_zeros(head, 240)[:-4], "application/gzip", 1000, MiB)
