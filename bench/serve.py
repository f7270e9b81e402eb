"""Serving load test: a real ``sa-serve`` (uvicorn) on 127.0.0.1 in a subprocess, driven by an async HTTP client.

(a) ranking: ``--ranking-requests`` requests (default 2000) of ``--candidates`` candidate rows each (MovieLens
    rows of ``data/rank-sample`` when present) at concurrency ``--ranking-concurrency`` (64), against the same
    server started twice: micro-batching on (max batch 64, 5 ms window) and off (one ``predict`` per request).
    Throughput (requests/s), p50/p99 latency, status codes. Goal: batched / unbatched >= 3x.
    Without a trained ranking run (``--ranking-run DIR``) the server runs a documented stand-in and the results
    say so: ``sa_serve.standin:RandomHiformerRanker`` (the real ``sa_ranking`` predictor and Hiformer with
    untrained weights: the real per-call cost) when ``sa_ranking`` is installed, else
    ``sa_serve.standin:StandInRanker`` (a small Hiformer-style ranker on the shared core).
(b) images: ``--image-requests`` (200) same-size restoration requests at concurrency ``--image-concurrency`` (16),
    batching on and off. The model is a small HAT run folder: ``--restoration-run DIR``, or one trained here on
    the offline sr-sample set for at most ``--minutes`` (default 0.5; ``--skip-quality``: 1 step, this bench
    measures serving, not image quality).
(c) overload: a server with a 16-request queue hammered at concurrency 128: only deliberate 503s (each with
    ``Retry-After``), no other 5xx, and the server still answers afterwards.

(d) mixed: small (48x48) restoration requests at concurrency 4 alone, then while ``--mixed-large`` (3)
    ``--large-side`` (640) px images run one after another in the route's large lane, plus one flat 4000x4000 PNG
    (16 Mpx, 47 KB) that the server must refuse from its measured cost: small-request p50/p99 both ways.

No phase may produce a 5xx other than the deliberate 503 of (c). Writes bench/results/serve.json and the table
between the markers in BENCHMARKS.md.
Usage: python bench/serve.py [--quick] [--minutes 0.5] [--skip-quality] [--ranking-run DIR] [--restoration-run DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "serve.json"
DOC = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- serve:begin -->", "<!-- serve:end -->"
BIN = Path(sys.executable).parent
STANDIN = "sa_serve.standin:StandInRanker"
RANDOM_HIFORMER = "sa_serve.standin:RandomHiformerRanker"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``sa-serve`` in a subprocess; waits for ``/readyz``."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [str(BIN / "sa-serve"), *args, "--port", str(self.port), "--log-level", "warning"]
        self.log = log

    def __enter__(self) -> Server:
        import httpx

        self.logf = self.log.open("w")
        self.proc = subprocess.Popen(self.cmd, stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}); see {self.log}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server not ready after 600 s; see {self.log}")

    def info(self) -> dict[str, Any]:
        import httpx

        return httpx.get(self.url + "/v1/info", timeout=10).json()  # type: ignore[no-any-return]

    def __exit__(self, *exc: Any) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.logf.close()


class RawHTTP:
    """A minimal keep-alive HTTP/1.1 client on one connection (the load generator must cost little CPU: it shares
    the machine with the server; httpx costs about as much per request as the server does)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes, content_type: str) -> tuple[int, dict[str, str], bytes]:
        """Sends one POST; returns (status, lower-cased headers, body). Reconnects when the server closed."""
        if self.writer is None:
            await self._connect()
        assert self.reader is not None and self.writer is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            data = b"".join(p[:-2] for p in parts)
        else:
            data = await self.reader.read()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, data


async def _drive(url: str, requests: Iterable[tuple[str, bytes, str]], concurrency: int) -> dict[str, Any]:
    """Sends ``(path, body, content type)`` requests with ``concurrency`` connections; latencies and statuses."""
    import numpy as np

    host, port = url.split("//", 1)[1].rsplit(":", 1)
    lat: list[float] = []
    codes: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    retry_after_missing = 0
    it = iter(requests)

    async def worker() -> None:
        nonlocal retry_after_missing
        conn = RawHTTP(host, int(port))
        try:
            for path, body, ctype in it:
                t0 = time.perf_counter()
                try:
                    code, headers, _ = await asyncio.wait_for(conn.post(path, body, ctype), 300)
                    if code == 503 and "retry-after" not in headers:
                        retry_after_missing += 1
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                    code = -1
                    errors[type(exc).__name__] += 1
                    await conn.close()
                lat.append(time.perf_counter() - t0)
                codes[code] += 1
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    ok = codes.get(200, 0)
    arr = np.array(lat) * 1000
    return {
        "requests": len(lat),
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "throughput_rps": round(ok / wall, 2),
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p99_ms": round(float(np.percentile(arr, 99)), 2),
        "status": {str(k): v for k, v in sorted(codes.items())},
        "other_5xx": sum(v for k, v in codes.items() if k >= 500 and k != 503),
        "errors": codes.get(-1, 0),
        "error_types": dict(errors),
        "503_without_retry_after": retry_after_missing,
    }


def _candidate_requests(n: int, per_request: int) -> list[list[dict[str, Any]]]:
    path = ROOT / "data" / "rank-sample" / "candidates.jsonl"
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:  # synthetic rows with the same fields
        rows = [
            {
                "user": i % 900,
                "item": i % 1600,
                "age": 20 + i % 50,
                "gender": i % 2,
                "occupation": i % 21,
                "zip": str(10000 + i),
                "year": 90 + i % 9,
                "genres": f"{i % 18}|{(i * 7) % 18}",
                "age_n": (20 + i % 50) / 100,
                "year_n": (90 + i % 9) / 100,
            }
            for i in range(5000)
        ]
    return [[rows[(i * per_request + j) % len(rows)] for j in range(per_request)] for i in range(n)]


def _ranking_args(args: argparse.Namespace) -> tuple[list[str], str]:
    if args.ranking_run:
        return ["--run", f"ranking={args.ranking_run}"], f"sa_ranking predictor on the trained run {args.ranking_run}"
    sample = ROOT / "data" / "rank-sample"
    import importlib.util

    if (
        not args.lightweight_standin
        and (sample / "schema.json").is_file()
        and importlib.util.find_spec("sa_ranking.predictor") is not None
    ):
        return ["--predictor", f"ranking={RANDOM_HIFORMER}@{sample}"], (
            "the real sa_ranking RankingPredictor + Hiformer (ModelConfig defaults, rank-sample schema) with "
            "UNTRAINED random weights (no ranking run folder yet): real per-call cost, meaningless scores"
        )
    return ["--predictor", f"ranking={STANDIN}"], (
        "STAND-IN sa_serve.standin:StandInRanker (random weights, Hiformer-style cost; the real sa_ranking "
        "predictor was not used)"
    )


def bench_ranking(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    bodies = _candidate_requests(args.ranking_requests, args.candidates)
    model_args, what = _ranking_args(args)
    base = [*model_args, "--torch-threads", "1", "--queue-size", "512", "--no-warmup"]
    out: dict[str, Any] = {"predictor": what, "candidates_per_request": args.candidates}
    for name, extra in (("batched", ["--max-batch", "64", "--max-wait-ms", "5"]), ("unbatched", ["--no-batching"])):
        with Server(base + extra, tmp / f"ranking-{name}.log") as srv:
            reqs = [("/v1/ranking/predict", json.dumps(b).encode(), "application/json") for b in bodies]
            asyncio.run(_drive(srv.url, reqs[: min(50, len(reqs))], 8))  # warm-up
            res = asyncio.run(_drive(srv.url, reqs, args.ranking_concurrency))
            res["server_batching"] = srv.info()["models"]["ranking"]["batching"]
            out[name] = res
        print(
            f"ranking {name}: {res['throughput_rps']} req/s, p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms, "
            f"status {res['status']}",
            flush=True,
        )
    out["speedup"] = round(out["batched"]["throughput_rps"] / max(out["unbatched"]["throughput_rps"], 1e-9), 2)
    out["goal"] = 3.0
    out["goal_met"] = out["speedup"] >= 3.0
    return out


def _restoration_run(args: argparse.Namespace, tmp: Path) -> Path:
    if args.restoration_run:
        return Path(args.restoration_run)
    data = ROOT / "data" / "sr-sample"
    if not data.is_dir():
        subprocess.run([str(BIN / "sr-sample"), str(data)], check=True)
    run = tmp / "restoration"
    budget = ["train.max_steps=1"] if args.skip_quality else [f"train.max_minutes={args.minutes}"]
    subprocess.run(
        [
            str(BIN / "sa-restoration"),
            "train",
            "--config",
            "cpu-x2",
            f"train.run_dir={run}",
            "train.progress=false",
            "train.tensorboard=false",
            "data.max_val_images=1",
            "sample_images=0",
            *budget,
        ],
        check=True,
        cwd=ROOT,
    )
    return run


def _lr_image() -> bytes:
    img = sorted((ROOT / "data" / "sr-sample" / "test" / "LRbicx2").glob("*.png"))
    if img:
        import cv2
        import numpy as np

        from shared_attention.io import encode_png

        arr = cv2.imdecode(np.frombuffer(img[0].read_bytes(), np.uint8), cv2.IMREAD_COLOR)[:48, :48]
        return encode_png(arr[:, :, ::-1])  # BGR -> RGB
    raise FileNotFoundError("data/sr-sample/test/LRbicx2 has no PNG")


def bench_images(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    run = _restoration_run(args, tmp)
    png = _lr_image()
    out: dict[str, Any] = {"run": str(run), "image": "48x48 crop of the first sr-sample x2 LR test image"}
    base = ["--run", f"restoration={run}", "--torch-threads", "1", "--queue-size", "256"]
    for name, extra in (("batched", ["--max-batch", "16", "--max-wait-ms", "10"]), ("unbatched", ["--no-batching"])):
        with Server(base + extra, tmp / f"images-{name}.log") as srv:
            reqs = [("/v1/restoration/predict", png, "image/png")] * args.image_requests
            res = asyncio.run(_drive(srv.url, reqs, args.image_concurrency))
            res["server_batching"] = srv.info()["models"]["restoration"]["batching"]
            out[name] = res
        print(
            f"images {name}: {res['throughput_rps']} req/s, p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms, "
            f"status {res['status']}",
            flush=True,
        )
    out["speedup"] = round(out["batched"]["throughput_rps"] / max(out["unbatched"]["throughput_rps"], 1e-9), 2)
    return out


def _flat_png(width: int, height: int) -> bytes:
    import numpy as np

    from shared_attention.io import synth_png

    if width * height <= 1024 * 1024:
        return synth_png(height, width, seed=1)
    from shared_attention.io import encode_png

    return encode_png(np.full((height, width, 3), 128, np.uint8))  # the 47 KB 16 Mpx PNG of issue 21


def bench_mixed(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Small restoration requests alone, then while large ones run (and a 4000x4000 one is refused)."""
    run = _restoration_run(args, tmp)
    small = _lr_image()
    large = _flat_png(args.large_side, args.large_side)
    huge = _flat_png(4000, 4000)
    out: dict[str, Any] = {
        "small_size": "48x48",
        "large_size": f"{args.large_side}x{args.large_side}",
        "huge_size": "4000x4000",
    }
    server_args = ["--run", f"restoration={run}", "--torch-threads", "1", "--timeout", str(args.mixed_timeout)]
    server_args += ["--large-request-s", "1", "--max-batch", "8"]
    with Server(server_args, tmp / "mixed.log") as srv:
        reqs = [("/v1/restoration/predict", small, "image/png")] * args.mixed_small
        alone = asyncio.run(_drive(srv.url, reqs, 4))
        print(f"mixed: small alone p50 {alone['p50_ms']} ms, p99 {alone['p99_ms']} ms", flush=True)

        async def together() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            done = asyncio.Event()

            def small_stream() -> Iterator[tuple[str, bytes, str]]:
                while not done.is_set():
                    yield ("/v1/restoration/predict", small, "image/png")

            async def big() -> dict[str, Any]:
                try:
                    return await _drive(
                        srv.url, [("/v1/restoration/predict", large, "image/png")] * args.mixed_large, 1
                    )
                finally:
                    done.set()

            small_task = asyncio.ensure_future(_drive(srv.url, small_stream(), 4))
            await asyncio.sleep(0.5)
            huge_res = await _drive(srv.url, [("/v1/restoration/predict", huge, "image/png")], 1)
            big_res = await big()
            return await small_task, big_res, huge_res

        mixed, big_res, huge_res = asyncio.run(together())
        info = srv.info()["models"]["restoration"]
    out.update(
        small_alone=alone,
        small_mixed=mixed,
        large=big_res,
        huge=huge_res,
        cost_model=info.get("cost_model"),
        batching=info.get("batching"),
    )
    print(
        f"mixed: small during large p50 {mixed['p50_ms']} ms, p99 {mixed['p99_ms']} ms ({mixed['requests']} requests, "
        f"status {mixed['status']}); large {big_res['status']} p50 {big_res['p50_ms']} ms; 4000x4000 "
        f"{huge_res['status']} in {huge_res['p50_ms']} ms",
        flush=True,
    )
    return out


def bench_overload(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    model_args, what = _ranking_args(args)
    bodies = _candidate_requests(args.overload_requests, args.candidates)
    with Server(
        [*model_args, "--torch-threads", "1", "--queue-size", "16", "--max-batch", "8", "--no-warmup"],
        tmp / "overload.log",
    ) as srv:
        reqs = [("/v1/ranking/predict", json.dumps(b).encode(), "application/json") for b in bodies]
        res = asyncio.run(_drive(srv.url, reqs, 128))
        after = asyncio.run(_drive(srv.url, reqs[:20], 2))
    res["after_overload_status"] = after["status"]
    res["predictor"] = what
    print(f"overload: status {res['status']}, after: {after['status']}", flush=True)
    return res


def _table(r: dict[str, Any]) -> str:
    lines = [
        f"Machine: {r['machine']}. Server: `sa-serve` (uvicorn, 1 process, torch threads 1) on 127.0.0.1; client: "
        "a minimal asyncio HTTP/1.1 keep-alive client in another process on the same CPU.",
        "",
        "| phase | mode | requests @ concurrency | req/s | p50 ms | p99 ms | mean batch | status codes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for phase in ("ranking", "images"):
        if phase not in r:
            continue
        for mode in ("batched", "unbatched"):
            x = r[phase][mode]
            lines.append(
                f"| {phase} | {mode} | {x['requests']} @ {x['concurrency']} | {x['throughput_rps']} | "
                f"{x['p50_ms']} | {x['p99_ms']} | {x['server_batching']['mean_batch']:.1f} | {x['status']} |"
            )
    if "overload" in r:
        x = r["overload"]
        lines.append(
            f"| overload (queue 16) | batched | {x['requests']} @ {x['concurrency']} | {x['throughput_rps']} "
            f"| {x['p50_ms']} | {x['p99_ms']} | - | {x['status']} (503 = deliberate) |"
        )
    lines.append("")
    if "ranking" in r:
        rk = r["ranking"]
        lines.append(
            f"Ranking micro-batching speed-up: **{rk['speedup']}x** (goal >= 3x: "
            f"{'met' if rk['goal_met'] else 'NOT met'}). Predictor: {rk['predictor']}."
        )
    if "images" in r:
        lines.append(f"Same-size image micro-batching speed-up: {r['images']['speedup']}x.")
    if "mixed" in r:
        m = r["mixed"]
        lines.append(
            f"Mixed restoration load (small {m['small_size']} at concurrency 4; {m['large_size']} images one after "
            f"another in the large lane; one {m['huge_size']}): small p50 / p99 alone {m['small_alone']['p50_ms']} / "
            f"{m['small_alone']['p99_ms']} ms, while large ones run {m['small_mixed']['p50_ms']} / "
            f"**{m['small_mixed']['p99_ms']} ms** ({m['small_mixed']['requests']} small requests, status "
            f"{m['small_mixed']['status']}); large {m['large']['status']} at p50 {m['large']['p50_ms']} ms; "
            f"{m['huge_size']} answered {m['huge']['status']} in {m['huge']['p50_ms']} ms "
            "(refused by the measured cost)."
        )
    lines.append(f"Other 5xx across all phases: {r['other_5xx_total']}.")
    return "\n".join(lines)


def _write_doc(table: str) -> None:
    text = DOC.read_text() if DOC.is_file() else "# Benchmarks\n"
    if BEGIN not in text:
        text += f"\n## Serving (`bench/serve.py` → `bench/results/serve.json`)\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranking-requests", type=int, default=2000)
    ap.add_argument("--ranking-concurrency", type=int, default=64)
    ap.add_argument("--candidates", type=int, default=10, help="candidate rows per ranking request")
    ap.add_argument("--image-requests", type=int, default=200)
    ap.add_argument("--image-concurrency", type=int, default=16)
    ap.add_argument("--overload-requests", type=int, default=1000)
    ap.add_argument("--ranking-run", help="serve this ranking run folder with the installed sa_ranking predictor")
    ap.add_argument(
        "--lightweight-standin",
        action="store_true",
        help="use sa_serve.standin:StandInRanker even when sa_ranking is installed",
    )
    ap.add_argument("--restoration-run", help="restoration run folder for the image phase (else trained here)")
    ap.add_argument("--minutes", type=float, default=0.5, help="training budget of the image phase's model")
    ap.add_argument("--skip-quality", action="store_true", help="train the image phase's model for 1 step only")
    ap.add_argument("--quick", action="store_true", help="10x fewer requests (pipeline check)")
    ap.add_argument("--skip-images", action="store_true")
    ap.add_argument("--skip-mixed", action="store_true")
    ap.add_argument("--large-side", type=int, default=640, help="side of the mixed phase's large images")
    ap.add_argument("--mixed-large", type=int, default=3, help="large images in the mixed phase")
    ap.add_argument("--mixed-small", type=int, default=200, help="small requests of the mixed phase's baseline")
    ap.add_argument("--mixed-timeout", type=float, default=60.0, help="the mixed phase server's --timeout")
    args = ap.parse_args(argv)
    if args.quick:
        args.ranking_requests //= 10
        args.image_requests //= 10
        args.overload_requests //= 5
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.python_implementation()} "
        f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": vars(args),
    }
    with tempfile.TemporaryDirectory(prefix="sa-serve-bench-") as td:
        tmp = Path(td)
        result["ranking"] = bench_ranking(args, tmp)
        if not args.skip_images:
            result["images"] = bench_images(args, tmp)
        result["overload"] = bench_overload(args, tmp)
        if not args.skip_mixed:
            result["mixed"] = bench_mixed(args, tmp)
    phases = [result["ranking"]["batched"], result["ranking"]["unbatched"], result["overload"]]
    if "images" in result:
        phases += [result["images"]["batched"], result["images"]["unbatched"]]
    if "mixed" in result:
        phases += [result["mixed"][k] for k in ("small_alone", "small_mixed", "large", "huge")]
    result["other_5xx_total"] = sum(p["other_5xx"] + p["errors"] for p in phases)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    _write_doc(_table(result))
    print(_table(result))
    return 0 if result["other_5xx_total"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
