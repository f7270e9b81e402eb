"""The sa-serve CLI: argument handling, --runs discovery, summary table, and a real multi-process server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sa_serve.cli import build_parser, main, settings_from_args
from sa_serve.registry import discover, find_runs, parse_official
from sa_serve.summary import main as summary_main

BIN = Path(sys.executable).parent


def _eval(path: Path, **over) -> None:
    d = {
        "domain": "restoration",
        "metric": "PSNR-Y x2 (dB)",
        "model": 30.5,
        "baseline": 29.0,
        "baseline_name": "bicubic",
        "higher_is_better": True,
        "details": {},
    }
    d.update(over)
    path.mkdir(parents=True, exist_ok=True)
    (path / "evaluation.json").write_text(json.dumps(d))


def test_summary_table(tmp_path, capsys):
    _eval(tmp_path / "restoration")
    _eval(
        tmp_path / "anomaly", domain="anomaly", metric="image AUROC", model=0.9, baseline=0.95, baseline_name="pixel L2"
    )
    _eval(
        tmp_path / "speechsep",
        domain="speechsep",
        metric="WER",
        model=0.2,
        baseline=0.5,
        baseline_name="mixture",
        higher_is_better=False,
    )
    assert summary_main([str(tmp_path), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["domain", "run", "metric", "model"]
    rows = {line.split()[0]: line for line in out[2:]}
    assert "+1.5" in rows["restoration"] and "model wins" in rows["restoration"]
    assert "baseline wins" in rows["anomaly"] and "(bicubic)" in rows["restoration"]
    assert "model wins" in rows["speechsep"] and "lower is better" in rows["speechsep"]
    assert [r["model_wins"] for r in json.loads((tmp_path / "s.json").read_text())] == [False, True, True]


def test_summary_tells_the_truth_about_the_demo(tmp_path, capsys):
    """Build 8: a tiny-budget demo is called a smoke test; a default one states minutes trained and the bench."""
    _eval(tmp_path / "runs" / "restoration")
    (tmp_path / "runs" / "restoration" / "metadata.json").write_text(
        json.dumps({"task": "restoration", "result": {"step": 40, "train_minutes": 6.02}})
    )
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "restoration.json").write_text(json.dumps({"quality": {"psnr_y": 33.17, "train_minutes": 28.2}}))
    assert summary_main([str(tmp_path / "runs"), "--smoke"]) == 0
    out = capsys.readouterr().out
    assert "SMOKE TEST" in out and "not results" in out
    assert summary_main([str(tmp_path / "runs"), "--bench", str(bench)]) == 0
    out = capsys.readouterr().out
    assert "SMOKE" not in out and "6.0 min" in out
    assert "restoration: PSNR-Y (dB) 33.17 after 28 min (restoration.json)" in out
    # the Makefile passes the flags by budget
    makefile = (Path(__file__).resolve().parents[3] / "Makefile").read_text()
    assert "SUMMARY_ARGS := --smoke" in makefile and "SUMMARY_ARGS := --bench bench/results" in makefile
    assert "sa-serve summary $(DEMO_RUNS) $(SUMMARY_ARGS)" in makefile
    assert "seconds" not in makefile.split("DEMO_BUDGET ?=")[0].split("# DEMO_BUDGET=tiny")[1]
    help_text = makefile.split("\nhelp:", 1)[1].split("\n\n", 1)[0]  # `make help` describes the real demo
    assert "toy" not in help_text and "built-in task" not in help_text
    assert all(d in help_text for d in ("restoration", "anomaly", "medseg", "speechsep", "ranking", "smoke test"))


def test_summary_rejects_bad_files_with_their_name(tmp_path, capsys):
    _eval(tmp_path / "good")
    _eval(tmp_path / "nan", model="NaN")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "evaluation.json").write_text("{not json")
    assert main(["summary", str(tmp_path)]) == 1  # table printed, but a bad file makes the exit code 1
    cap = capsys.readouterr()
    assert "good" in cap.out and "nan/evaluation.json: field 'model'" in cap.err
    assert "broken/evaluation.json: invalid JSON" in cap.err
    assert main(["summary", str(tmp_path / "missing")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["summary", str(empty)]) == 1 and "no valid evaluation.json" in capsys.readouterr().err


def test_discovery_and_runs_folder(restoration_run, tmp_path):
    installed = discover()
    assert installed["restoration"] == "sa_restoration.predictor:RestorationPredictor" and "toy" in installed
    for d in ("anomaly", "medseg", "speechsep", "ranking"):  # declared by the packages' pyproject
        assert d in installed
    srcs = find_runs(restoration_run.parent)
    assert [(s.domain, s.run_dir) for s in srcs] == [("restoration", str(restoration_run))]
    (tmp_path / "toy-pointer").mkdir()  # not a finished run: skipped
    assert find_runs(tmp_path) == []
    src = parse_official("restoration=/w/HAT_SRx4.pth,variant=hat,upscale=4,ensemble=true")
    assert src.official == "/w/HAT_SRx4.pth" and dict(src.official_kwargs) == {
        "variant": "hat",
        "upscale": 4,
        "ensemble": True,
    }


def test_settings_from_args_and_errors(restoration_run, monkeypatch):
    p = build_parser()
    monkeypatch.setenv("SA_SERVE_TOKEN", "tok")
    s = settings_from_args(
        p.parse_args(
            [
                "--runs",
                str(restoration_run.parent),
                "--no-batching",
                "--max-upload-mb",
                "restoration=1.5",
                "--torch-threads",
                "1",
                "--precision",
                "bf16",
            ]
        )
    )
    assert [x.domain for x in s.sources] == ["restoration"] and s.max_batch == 1 and s.token == "tok"
    plain = settings_from_args(p.parse_args(["--runs", str(restoration_run.parent)]))
    assert s.precision == "bf16" and plain.precision == "fp32"
    assert s.limits.cap("restoration", "image") == int(1.5 * 1024 * 1024) and s.torch_threads == 1
    with pytest.raises(ValueError, match="nothing to serve"):
        settings_from_args(p.parse_args([]))
    with pytest.raises(ValueError, match="not installed"):
        settings_from_args(p.parse_args(["--run", f"nosuch={restoration_run}"]))
    with pytest.raises(ValueError, match="is not a folder"):
        settings_from_args(p.parse_args(["--run", "restoration=/no/such/dir"]))
    with pytest.raises(ValueError, match="DOMAIN=VALUE"):
        settings_from_args(p.parse_args(["--run", "restoration"]))
    assert main(["--run", "restoration=/no/such/dir"]) == 2


def test_help_is_fast_and_lazy():
    code = (
        "import sys, time; t = time.perf_counter(); from sa_serve.cli import build_parser; build_parser(); "
        "print(time.perf_counter() - t, 'torch' in sys.modules, 'fastapi' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["False", "False"]
    r = subprocess.run([str(BIN / "sa-serve"), "--help"], capture_output=True, text=True, check=True)
    assert "--token" in r.stdout and "127.0.0.1" in r.stdout


def test_real_server_with_two_workers_and_token(restoration_run, sample_png, kit):
    """`sa-serve --runs DIR --workers 2` starts uvicorn worker processes that load the run and enforce the token."""
    import httpx

    port = kit.LiveServer.__init__.__globals__["free_port"]()
    env = dict(os.environ, SA_SERVE_TOKEN="t0k")
    proc = subprocess.Popen(
        [
            str(BIN / "sa-serve"),
            "--runs",
            str(restoration_run.parent),
            "--workers",
            "2",
            "--port",
            str(port),
            "--no-warmup",
            "--torch-threads",
            "1",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 480  # a busy 2-core machine needs minutes for two torch imports
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(url + "/readyz", timeout=30).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.5)
        # explicit timeouts: generous hang guards (httpx's default is 5 s) on calls that take milliseconds
        assert httpx.post(url + "/v1/restoration/predict", content=sample_png, timeout=60).status_code == 401
        pids = set()
        for _ in range(12):
            r = httpx.get(url + "/v1/info", headers={"Authorization": "Bearer t0k"}, timeout=60)
            pids.add(r.json()["server"]["pid"])
        r = httpx.post(
            url + "/v1/restoration/predict", content=sample_png, headers={"Authorization": "Bearer t0k"}, timeout=60
        )
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert proc.pid not in pids and len(pids) >= 1  # answered by worker processes, not the supervisor
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "sa-serve: http://127.0.0.1:" in out and "/v1/restoration/predict" in out
