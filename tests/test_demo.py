"""`DEMO_BUDGET=tiny make demo` runs end to end (every domain's sample data, training, evaluation, predict)."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(1500)
def test_make_demo_tiny(tmp_path):
    runs = tmp_path / "runs"
    env = dict(os.environ, DEMO_BUDGET="tiny", DEMO_SERVE="0")
    out = subprocess.run(["make", "demo", f"DEMO_RUNS={runs}"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1450)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "shared-attention engine demo" in out.stdout
    assert "mean" in out.stdout  # restoration evaluation table
    assert (runs / "restoration" / "chelsea_x2.png").is_file()
    assert (runs / "toy-pointer" / "model.safetensors").is_file()
    assert (runs / "anomaly" / "predict" / "000_heatmap.png").is_file()
    assert (runs / "medseg" / "pred" / "labels.nii.gz").is_file()
    assert len(list((runs / "speechsep" / "separated").glob("*_s[12].wav"))) == 2
    for domain in ("restoration", "anomaly", "medseg", "speechsep", "ranking"):
        assert (runs / domain / "evaluation.json").is_file(), domain
        assert any(line.startswith(domain) for line in out.stdout.splitlines()), f"{domain} missing from the summary"
    assert "model vs baseline per domain" in out.stdout
