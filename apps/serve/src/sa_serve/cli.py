"""``sa-serve``: serve run folders / official weights of the installed domains; ``sa-serve summary RUNS_DIR``.

Examples::

    sa-serve --runs runs/demo                              # every finished run folder under runs/demo
    sa-serve --run restoration=runs/demo/restoration --token "$(openssl rand -hex 16)"
    sa-serve --official restoration=HAT_SRx4.pth,variant=hat,upscale=4 --workers 2
    sa-serve summary runs/demo                             # model vs baseline table

Heavy imports (torch, FastAPI, the domain packages) happen after argument parsing so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["build_parser", "main", "settings_from_args"]


def build_parser() -> argparse.ArgumentParser:
    """The ``sa-serve`` argument parser (serving options)."""
    ap = argparse.ArgumentParser(
        prog="sa-serve",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve shared-attention models over HTTP (FastAPI + uvicorn) with a web page at /.",
        epilog="Subcommand: 'sa-serve summary RUNS_DIR' prints the model-vs-baseline table of the runs.\n"
        "The bearer token can also come from $SA_SERVE_TOKEN (preferred: command lines are visible to others).",
    )
    m = ap.add_argument_group("models")
    m.add_argument("--run", action="append", default=[], metavar="DOMAIN=RUN_DIR", help="serve a run folder")
    m.add_argument("--runs", metavar="DIR", help="serve every finished run folder under DIR whose domain is installed")
    m.add_argument(
        "--official",
        action="append",
        default=[],
        metavar="DOMAIN=PATH[,key=value...]",
        help="serve official weights through the predictor's from_official(PATH, key=value...)",
    )
    m.add_argument(
        "--predictor",
        action="append",
        default=[],
        metavar="DOMAIN=module:Class[@RUN_DIR]",
        help="use this predictor class instead of the installed entry point (stand-ins, benches)",
    )
    m.add_argument("--device", default="cpu", help="torch device for every model (default cpu)")
    m.add_argument("--no-warmup", action="store_true", help="skip the synthetic warm-up request per model")
    s = ap.add_argument_group("network and safety")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--token", default=None, help="bearer token required on every /v1 route")
    s.add_argument(
        "--timeout", type=float, default=60.0, help="processing deadline per request in seconds (default 60): 504"
    )
    s.add_argument(
        "--upload-timeout", type=float, default=None, help="deadline for the upload to arrive (default --timeout): 408"
    )
    s.add_argument(
        "--large-request-s",
        type=float,
        default=None,
        help="requests estimated above this run in the route's large lane (default --timeout / 4)",
    )
    s.add_argument(
        "--max-upload-mb",
        action="append",
        default=[],
        metavar="DOMAIN=MB",
        help="upload cap of one domain's route (defaults: image 16, audio 32, volume 256, json 2 MiB)",
    )
    s.add_argument("--max-pixels", type=int, default=16_000_000, help="image pixel cap (default 16,000,000)")
    s.add_argument("--max-voxels", type=int, default=64_000_000, help="volume voxel cap (default 64,000,000)")
    t = ap.add_argument_group("throughput")
    t.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (each loads every model)")
    t.add_argument(
        "--worker-healthcheck-s",
        type=int,
        default=120,
        help="seconds a worker process may take to answer uvicorn's health ping (default 120)",
    )
    t.add_argument("--threads", type=int, default=1, help="predict threads per model (default 1)")
    t.add_argument("--max-batch", type=int, default=32, help="requests merged into one predict call (default 32)")
    t.add_argument("--max-wait-ms", type=float, default=5.0, help="micro-batching window (default 5 ms)")
    t.add_argument("--no-batching", action="store_true", help="one predict call per request")
    t.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch intra-op threads per process (0: torch's default; 1 is best on a busy CPU)",
    )
    t.add_argument("--queue-size", type=int, default=128, help="requests admitted per model before 503 (default 128)")
    t.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="run every model in fp32 (default) or bf16 autocast (faster on AMX / AVX-512-BF16 CPUs and GPUs)",
    )
    ap.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return ap


def settings_from_args(args: argparse.Namespace) -> Any:
    """Turns parsed arguments into :class:`~sa_serve.app.ServeSettings` (errors name the option)."""
    from .app import Limits, MiB, ServeSettings
    from .registry import ModelSource, discover, find_runs, parse_assignment, parse_official

    installed = discover()
    sources: dict[str, ModelSource] = {}
    if args.runs:
        for src in find_runs(args.runs, installed):
            sources[src.domain] = src
    for text in args.run:
        domain, run_dir = parse_assignment(text, "--run")
        if not os.path.isdir(run_dir):
            raise ValueError(f"--run {text}: {run_dir} is not a folder")
        sources[domain] = ModelSource(domain, run_dir=run_dir)
    for text in args.official:
        src = parse_official(text)
        if not os.path.isfile(src.official or ""):
            raise ValueError(f"--official {text}: {src.official} is not a file")
        sources[src.domain] = src
    for text in args.predictor:
        domain, value = parse_assignment(text, "--predictor")
        target, _, run_dir = value.partition("@")
        prev = sources.get(domain)
        sources[domain] = ModelSource(domain, run_dir=run_dir or (prev.run_dir if prev else None), target=target)
    for domain, src in sources.items():
        if src.target is None and domain not in installed:
            raise ValueError(f"domain {domain!r} is not installed; installed: {sorted(installed)}")
    if not sources:
        raise ValueError("nothing to serve: give --runs DIR, --run DOMAIN=RUN_DIR or --official DOMAIN=PATH")
    caps = {}
    for text in args.max_upload_mb:
        domain, mb = parse_assignment(text, "--max-upload-mb")
        caps[domain] = int(float(mb) * MiB)
    limits = Limits(max_bytes_domain=caps, max_pixels=args.max_pixels, max_voxels=args.max_voxels)
    token = args.token or os.environ.get("SA_SERVE_TOKEN") or None
    return ServeSettings(
        sources=tuple(sources.values()),
        token=token,
        max_batch=1 if args.no_batching else args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        threads=args.threads,
        timeout_s=args.timeout,
        upload_timeout_s=args.upload_timeout,
        large_request_s=args.large_request_s,
        warmup=not args.no_warmup,
        device=args.device,
        limits=limits,
        torch_threads=args.torch_threads,
        precision=args.precision,
    )


def serve(argv: list[str]) -> int:
    """Parses the serving options and runs uvicorn until interrupted."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from .app import SETTINGS_ENV, TOKEN_ENV, create_app

    if args.host not in ("127.0.0.1", "localhost", "::1") and settings.token is None:
        print(
            f"warning: binding {args.host} without a token: anyone who reaches this port can use the models",
            file=sys.stderr,
        )
    for s in settings.sources:
        print(f"  /v1/{s.domain}/predict  <- {s.describe()}")
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"sa-serve: http://{host}:{args.port}/  (API docs: http://{host}:{args.port}/docs)", flush=True)
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "timeout_keep_alive": 5,
        "limit_concurrency": 1024,
    }
    if args.workers > 1:
        os.environ[SETTINGS_ENV] = settings.to_json()
        if settings.token:
            os.environ[TOKEN_ENV] = settings.token
        # model loading holds the GIL for long stretches: give workers time to answer the supervisor's pings
        uvicorn.run(
            "sa_serve.app:create_app_from_env",
            factory=True,
            workers=args.workers,
            timeout_worker_healthcheck=args.worker_healthcheck_s,
            **common,
        )
    else:
        uvicorn.run(create_app(settings), **common)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sa-serve`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "summary":
        from .summary import main as summary_main

        return summary_main(argv[1:])
    if argv and argv[0] == "serve":
        argv = argv[1:]
    return serve(argv)


if __name__ == "__main__":
    raise SystemExit(main())
