"""`.ci/run` (-> `make test`) must exit non-zero when a test fails and zero when tests pass."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_ci(test_file: Path) -> subprocess.CompletedProcess[str]:
    # a parent `make test PYTEST_ARGS=...` passes its command-line variables down through MAKEFLAGS, which would
    # override ours and recurse into the whole suite: the child make starts clean
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env["PYTEST_ARGS"] = f"{test_file} -p no:cacheprovider -q"
    return subprocess.run(["bash", str(ROOT / ".ci" / "run")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.timeout(600)
def test_ci_run_fails_on_failing_test_and_passes_otherwise(tmp_path):
    bad = tmp_path / "test_bad.py"
    bad.write_text("def test_fails():\n    assert 1 + 1 == 3\n")
    out = _run_ci(bad)
    assert out.returncode != 0, out.stdout[-2000:]
    assert "1 failed" in out.stdout
    good = tmp_path / "test_good.py"
    good.write_text("def test_passes():\n    assert 1 + 1 == 2\n")
    out = _run_ci(good)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "1 passed" in out.stdout
