"""The FastAPI application: one ``/v1/<domain>/predict`` route per served model, health probes, info, web page.

Request life (every step answers a 4xx/5xx with a ``{"detail": message}`` body and the server keeps serving):

1. ``Authorization: Bearer <token>`` when a token is configured (every ``/v1`` route; 401 otherwise).
2. Admission to the model's bounded queue (503 + ``Retry-After`` from the measured drain rate when full).
3. The body is read as it streams in and refused with 413 as soon as it passes the route's cap (a larger
   ``Content-Length`` is refused before reading); an upload that does not arrive within ``upload_timeout_s``
   gets 408. Multipart uploads (field ``file`` or the input's name) and raw bodies are both accepted.
4. Content sniffing by magic bytes (415 on a wrong type, whatever the file name or ``Content-Type`` claim);
   header-only checks: image pixel limits (decompression bombs), truncated PNG/JPEG, WAV sample rate / channels /
   NaN samples, NIfTI voxel limits (read from the header before any decompression); JSON without NaN/Infinity
   (422).
5. Budget: a predictor with a cost model (``cost(meta)``: pixels, samples, voxels, rows from the headers) gets
   a time estimate from seconds-per-unit measured on this machine (:mod:`.budget`: two synthetic requests at
   warm-up, then every finished request); a request that cannot finish within ``timeout_s`` is refused with 413
   naming the size that fits, one whose ``memory_bytes(meta)`` is over ``limits.max_request_memory`` too. A
   request estimated above ``large_request_s`` runs in the route's *large lane* (its own thread and
   ``large_slots`` slots), so small requests never wait behind it.
6. ``preprocess`` in a worker thread (``InputError`` -> 422), the micro-batching queue runs ``predict`` in the
   model's worker thread, ``postprocess`` in a worker thread; processing is bounded by ``timeout_s`` (504), and
   a request that timed out is abandoned: tiled / chunked predictors stop at their next tile
   (:func:`shared_attention.serving.check_cancelled`), so the route keeps moving.

Model isolation: a model that fails to load is reported in ``/readyz`` and ``/v1/info`` with its reason (one
line) and its route answers 503 with that reason; every other model serves (``/readyz`` answers 200 with
``"degraded": true``, or 503 when no model loaded).

Responses: a predictor returning ``bytes`` is sent as is with its sniffed media type (restoration: PNG); a dict
is sent as JSON where every ``bytes`` value (or list of them) becomes a base64 string under the same key
(anomaly ``heatmap_png``, medseg ``labels_nifti`` / ``labels_png`` / ``overlay_png``, speechsep
``sources_wav``).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from shared_attention.io import synth_png, synth_wav

from . import __version__
from .batching import ModelWorker, QueueFullError, Ticket
from .budget import CostMeter
from .registry import ModelSource, discover, load_class
from .uploads import UploadError, check_audio, check_image, check_volume, parse_json, sniff

__all__ = ["Limits", "ServeSettings", "create_app", "create_app_from_env", "SETTINGS_ENV", "TOKEN_ENV"]

logger = logging.getLogger("sa_serve")

SETTINGS_ENV = "SA_SERVE_SETTINGS"
TOKEN_ENV = "SA_SERVE_TOKEN"
STATIC_DIR = Path(__file__).parent / "static"
MiB = 1024 * 1024

IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/tiff", "image/webp", "image/gif")
VOLUME_TYPES = ("application/gzip", "application/x-nifti", "image/png")
# what predictors may declare for NIfTI -> what sniff() reports (raw .nii has no MIME type of its own)
_VOLUME_ALIASES = {
    "application/octet-stream": "application/x-nifti",
    "application/x-nifti-gz": "application/gzip",
    "application/x-gzip": "application/gzip",
    "application/nifti": "application/x-nifti",
}


@dataclass(frozen=True)
class Limits:
    """Upload caps and content limits (per input kind, with per-domain overrides of the byte cap).

    Attributes:
        max_bytes: body cap per input kind (bytes), enforced while streaming.
        max_bytes_domain: per-domain overrides of ``max_bytes``.
        max_pixels: image pixel cap (the predictor's own ``max_pixels`` constraint wins when smaller).
        max_voxels: volume voxel cap. max_inflated_bytes: gzip'd NIfTI inflation cap.
        max_audio_seconds: audio length cap (the predictor's ``max_seconds`` wins when smaller).
        max_json_rows: most list rows in one JSON request (ranking candidates).
        max_request_memory: most bytes one request may need by its predictor's ``memory_bytes(meta)`` estimate.
    """

    max_bytes: Mapping[str, int] = field(
        default_factory=lambda: {
            "image": 16 * MiB,
            "audio": 32 * MiB,
            "volume": 256 * MiB,
            "json": 2 * MiB,
            "text": 1 * MiB,
            "tensor": 16 * MiB,
        }
    )
    max_bytes_domain: Mapping[str, int] = field(default_factory=dict)
    max_pixels: int = 16_000_000
    max_voxels: int = 64_000_000
    max_inflated_bytes: int = 1024 * MiB
    max_audio_seconds: float = 600.0
    max_json_rows: int = 10_000
    max_request_memory: int = 4096 * MiB

    def cap(self, domain: str, kind: str) -> int:
        """The byte cap of ``domain``'s route."""
        return int(self.max_bytes_domain.get(domain, self.max_bytes.get(kind, 16 * MiB)))


@dataclass(frozen=True)
class ServeSettings:
    """Everything the app needs (serialisable to JSON for ``--workers N``).

    Attributes:
        sources: the models to load. token: bearer token for ``/v1`` routes (None: open).
        max_batch: requests merged per ``predict`` call (1: no micro-batching). max_wait_ms: batching window.
        queue_size: requests admitted per model at once (more get 503). threads: predict threads per model.
        timeout_s: per-request deadline (body read, preprocessing, queue, inference). warmup: run one synthetic
        request per model in the lifespan. device: torch device. limits: see :class:`Limits`.
        batch_domains: domains that micro-batch (None: all). torch_threads: ``torch.set_num_threads`` (0: keep).
        upload_timeout_s: deadline for the body to arrive (408; None: ``timeout_s``).
        large_request_s: requests estimated above this many seconds run in the large lane (None: ``timeout_s / 4``).
        large_slots: requests admitted to the large lane at once (more get 503 with the time left).
        budget_fraction: a request must be estimated to finish within this fraction of ``timeout_s``.
        precision: ``fp32`` or ``bf16`` (autocast; ``PredictorBase.set_precision``) for every model.
    """

    sources: tuple[ModelSource, ...] = ()
    token: str | None = None
    max_batch: int = 32
    max_wait_ms: float = 5.0
    queue_size: int = 128
    threads: int = 1
    timeout_s: float = 60.0
    warmup: bool = True
    device: str = "cpu"
    limits: Limits = field(default_factory=Limits)
    batch_domains: tuple[str, ...] | None = None  # None: batch every domain
    torch_threads: int = 0  # 0: leave torch's default
    upload_timeout_s: float | None = None
    large_request_s: float | None = None
    large_slots: int = 1
    budget_fraction: float = 0.9
    precision: str = "fp32"

    def to_json(self) -> str:
        """JSON for the environment of uvicorn worker processes (the token travels separately)."""
        d = asdict(replace(self, sources=(), token=None))
        d["sources"] = [s.to_json() for s in self.sources]
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        d["sources"] = tuple(ModelSource.from_json(s) for s in d.get("sources", ()))
        d["limits"] = Limits(**d.get("limits", {}))
        if d.get("batch_domains") is not None:
            d["batch_domains"] = tuple(d["batch_domains"])
        return cls(**d)


@dataclass
class Served:
    """One loaded model: predictor, worker, warm-up result."""

    source: ModelSource
    predictor: Any = None
    worker: ModelWorker | None = None
    large: ModelWorker | None = None  # the large lane (requests estimated above ``large_request_s``)
    meter: CostMeter | None = None  # None: the predictor has no cost model
    large_busy_until: float = 0.0  # monotonic time the large lane's current request is expected to finish
    state: str = "loading"  # loading | ready | failed
    warmed: bool = False
    warmup_note: str = ""
    load_seconds: float = 0.0
    error: str = ""

    @property
    def input_spec(self) -> Any:
        """The first input field of the predictor's I/O spec (or None)."""
        spec = getattr(self.predictor, "io_spec", None)
        return spec.inputs[0] if spec is not None and spec.inputs else None


# ---------------------------------------------------------------------------------------------- helpers


def _jsonable(obj: Any) -> Any:
    """Makes predictor output / info JSON-ready: bytes -> base64, arrays -> lists, non-finite floats -> None."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, str | int | bool) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    tolist = getattr(obj, "tolist", None)  # numpy / torch
    if callable(tolist):
        return _jsonable(tolist())
    return str(obj)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=dict(headers) if headers else None)


def _spec_kind(served: Served) -> str | None:
    """The first input's kind from the predictor's I/O spec (the class's, before the model is loaded)."""
    spec = served.input_spec
    if spec is None and served.source.factory is None:
        target = served.source.target or discover().get(served.source.domain)
        io = getattr(load_class(target), "io_spec", None) if target else None
        spec = io.inputs[0] if io is not None and io.inputs else None
    return spec.kind if spec is not None else None


def _synthetic_inputs(spec: Any) -> list[tuple[Any, dict[str, Any]]]:
    """(raw input, header metadata) of a small and a larger synthetic request for ``spec``'s kind (or none)."""
    kind = getattr(spec, "kind", None)
    constraints = dict(getattr(spec, "constraints", {}) or {})
    if kind == "image":
        # a small square and a wide image: tiled predictors (anomaly crops) see more than one tile
        return [(synth_png(h, w), {"width": w, "height": h, "pixels": h * w}) for h, w in ((32, 32), (96, 288))]
    if kind == "audio":
        rate, ch = int(constraints.get("sample_rate", 16000)), int(constraints.get("channels", 1))
        return [
            (
                synth_wav(sec, rate, channels=ch),
                {"sample_rate": rate, "channels": ch, "frames": sec * rate, "seconds": sec},
            )
            for sec in (1, 3)
        ]
    return []


def _units(pred: Any, meta: Mapping[str, Any]) -> float | None:
    """The predictor's work units for a request's header metadata (None: no cost model)."""
    cost = getattr(pred, "cost", None)
    units = cost(meta) if callable(cost) else None
    return float(units) if units is not None else None


def _warmup(served: Served) -> None:
    """Runs synthetic requests (a small one to warm, then two sizes timed for the cost meter)."""
    pred = served.predictor
    if hasattr(pred, "warmup"):
        pred.warmup()
        served.warmed, served.warmup_note = True, "predictor.warmup()"
        return
    inputs = _synthetic_inputs(served.input_spec)
    kind = getattr(served.input_spec, "kind", None)
    if not inputs:
        served.warmup_note = f"no synthetic {kind} input; the first request warms the model"
        return
    pred.postprocess(pred.predict(pred.preprocess(inputs[0][0])))
    served.warmed, served.warmup_note = True, f"one synthetic {kind} request"
    if served.meter is None:
        return
    for raw, meta in inputs:
        units = _units(pred, meta)
        t0 = time.perf_counter()
        pred.postprocess(pred.predict(pred.preprocess(raw)))
        if units is not None:
            served.meter.observe(units, time.perf_counter() - t0)
    served.warmup_note += f", {len(inputs)} timed for the cost meter"


def _load(served: Served, settings: ServeSettings) -> None:
    t0 = time.perf_counter()
    served.predictor = served.source.load(settings.device)
    domain = served.source.domain
    if settings.precision != "fp32":
        set_precision = getattr(served.predictor, "set_precision", None)
        if set_precision is None:
            raise ValueError(f"{type(served.predictor).__name__} has no set_precision: serve it with fp32")
        set_precision(settings.precision)
    batching = settings.batch_domains is None or domain in settings.batch_domains
    constraints = dict(getattr(served.input_spec, "constraints", {}) or {})
    max_rows = int(constraints.get("max_candidates", constraints.get("max_rows", 0)) or 0)
    served.worker = ModelWorker(
        domain,
        served.predictor,
        max_batch=settings.max_batch if batching else 1,
        max_wait_s=settings.max_wait_ms / 1000.0,
        capacity=settings.queue_size,
        threads=settings.threads,
        max_rows=max_rows,
    )
    if _has_cost_model(served.predictor):
        served.meter = CostMeter(str(getattr(served.predictor, "cost_unit", "units")))
        served.large = ModelWorker(
            f"{domain} (large lane)", served.predictor, max_batch=1, capacity=max(settings.large_slots, 1)
        )
    if settings.warmup:
        try:
            _warmup(served)
        except Exception as exc:  # noqa: BLE001 - reported in /v1/info and /readyz
            served.warmup_note = f"warm-up failed: {exc}"
            logger.warning("%s: warm-up failed: %s", domain, exc)
    served.load_seconds = time.perf_counter() - t0
    served.state = "ready"
    logger.info("%s: loaded from %s in %.1f s", domain, served.source.describe(), served.load_seconds)


def _has_cost_model(pred: Any) -> bool:
    """Whether ``pred.cost`` is overridden (PredictorBase's default answers None for everything)."""
    from shared_attention.serving import PredictorBase

    cost = getattr(type(pred), "cost", None)
    return cost is not None and cost is not getattr(PredictorBase, "cost", None)


def _one_line(exc: BaseException) -> str:
    """An exception as one line: ``Type: first line of the message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# ------------------------------------------------------------------------------------------ the request


async def _read_body(request: Request, cap: int, timeout_s: float) -> bytes:
    """The request body, refused with 413 as soon as it grows past ``cap`` bytes (nothing more is read)."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise _error(400, f"invalid Content-Length header {length!r}") from None
        if declared > cap:
            raise _error(413, f"upload of {declared:,} bytes is over this route's limit of {cap:,} bytes")
    buf = bytearray()

    async def pull() -> None:
        async for chunk in request.stream():
            buf.extend(chunk)
            if len(buf) > cap:
                raise _error(413, f"upload is over this route's limit of {cap:,} bytes (stopped reading)")

    try:
        async with asyncio.timeout(timeout_s):
            await pull()
    except TimeoutError:
        raise _error(408, f"the upload did not arrive within {timeout_s:g} s") from None
    if not buf:
        raise _error(400, "empty request body: send the input as the body or as a multipart field 'file'")
    return bytes(buf)


async def _extract_upload(request: Request, body: bytes, field_name: str) -> bytes:
    """The uploaded file's bytes: the multipart field ``field_name`` / ``file`` / the only file, or the raw body."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        return body
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=16)
    except Exception as exc:  # noqa: BLE001 - malformed multipart
        raise _error(400, f"malformed multipart body: {exc}") from exc
    try:
        for key in (field_name, "file"):
            item = form.get(key)
            if item is not None and not isinstance(item, str):
                return await item.read()
            if isinstance(item, str):
                return item.encode("utf-8")
        files = [v for _, v in form.multi_items() if not isinstance(v, str)]
        if len(files) == 1:
            return await files[0].read()
        raise _error(400, f"multipart body has no file field {field_name!r} (or 'file'); fields: {list(form.keys())}")
    finally:
        await form.close()


def _check_content(data: bytes, spec: Any, limits: Limits) -> tuple[str, Any, dict[str, Any]]:
    """Sniffs and header-checks ``data`` for the input ``spec``.

    Returns:
        (media type, raw input for preprocess, header metadata for the cost model: see
        :data:`shared_attention.serving.control.META_KEYS`).
    """
    kind = getattr(spec, "kind", "image")
    constraints = dict(getattr(spec, "constraints", {}) or {})
    media = sniff(data)
    if kind == "json":
        if media != "application/json":
            raise UploadError(f"expected a JSON body, but the upload looks like {media or 'unknown binary data'}", 415)
        try:
            return media, parse_json(data), {}
        except UploadError:
            lines = [ln for ln in data.split(b"\n") if ln.strip()]
            if "application/x-ndjson" not in getattr(spec, "media_types", ()) or len(lines) < 2:
                raise
        rows = []  # NDJSON: one JSON value per line; errors name the line
        for i, line in enumerate(lines, 1):
            try:
                rows.append(parse_json(line))
            except UploadError as exc:
                raise UploadError(f"NDJSON line {i}: {exc}", exc.status) from None
        return "application/x-ndjson", rows, {}
    accepted = tuple(getattr(spec, "media_types", ()) or ())
    if kind == "image":
        allowed = accepted or IMAGE_TYPES
    elif kind == "audio":
        allowed = accepted or ("audio/wav",)
    elif kind == "volume":
        allowed = tuple(_VOLUME_ALIASES.get(a, a) for a in accepted) if accepted else VOLUME_TYPES
    else:
        allowed = accepted
    allowed = tuple(dict.fromkeys("audio/wav" if a in ("audio/x-wav", "audio/wave") else a for a in allowed))
    if "application/gzip" in allowed and "application/x-nifti" not in allowed and kind == "volume":
        allowed += ("application/x-nifti",)  # a .nii.gz predictor reads the uncompressed .nii too
    if allowed and media not in allowed:
        raise UploadError(
            f"unsupported content: the upload looks like {media or 'unknown data'} (checked by its bytes, "
            f"not its name); this route accepts {', '.join(allowed)}",
            415,
        )
    meta: dict[str, Any] = {}
    if media and media.startswith("image/"):
        max_pixels = min(limits.max_pixels, int(constraints.get("max_pixels", limits.max_pixels)))
        dims = check_image(data, media, max_pixels)
        if dims is not None:
            meta = {"width": dims[0], "height": dims[1], "pixels": dims[0] * dims[1]}
    elif media == "audio/wav":
        c = dict(constraints)
        c["max_seconds"] = min(float(c.get("max_seconds", limits.max_audio_seconds)), limits.max_audio_seconds)
        fmt = check_audio(data, c)
        frames = fmt.data_size // max(fmt.channels * fmt.bits // 8, 1)
        meta = {
            "sample_rate": fmt.sample_rate,
            "channels": fmt.channels,
            "frames": frames,
            "seconds": frames / fmt.sample_rate if fmt.sample_rate else 0.0,
        }
    elif media in ("application/gzip", "application/x-nifti"):
        max_voxels = min(limits.max_voxels, int(constraints.get("max_voxels", limits.max_voxels)))
        shape = check_volume(data, media, max_voxels, limits.max_inflated_bytes)
        meta = {"shape": tuple(shape), "voxels": math.prod(shape)}
    return media or "application/octet-stream", data, meta


def _respond(result: Any) -> Response:
    if isinstance(result, bytes | bytearray | memoryview):
        data = bytes(result)
        media = sniff(data) or "application/octet-stream"
        return Response(content=data, media_type=media)
    if isinstance(result, Response):
        return result
    return JSONResponse(_jsonable(result))


def _request_body_doc(kind: str) -> dict[str, Any]:
    if kind == "json":
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": {}}}}}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


# --------------------------------------------------------------------------------------------- the app


def create_app(settings: ServeSettings) -> FastAPI:
    """Builds the app; models are loaded (and warmed) by the lifespan handler, i.e. when the server starts."""
    from shared_attention.serving import InputError

    token = settings.token
    served: dict[str, Served] = {}
    for s in settings.sources:
        if s.domain in served:
            raise ValueError(f"domain {s.domain!r} is given twice")
        if not s.domain.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"domain name {s.domain!r} must be alphanumeric (it becomes a URL path)")
        served[s.domain] = Served(s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.torch_threads > 0:
            import torch

            torch.set_num_threads(settings.torch_threads)
        from shared_attention.memory import keep_freed_heap

        keep_freed_heap()  # activations reuse heap pages instead of page-faulting fresh maps on every request
        try:
            for sv in served.values():
                try:
                    await run_in_threadpool(_load, sv, settings)
                except Exception as exc:  # noqa: BLE001 - one broken model must not take the others down
                    sv.state, sv.error = "failed", _one_line(exc)
                    logger.error("%s: cannot load from %s: %s", sv.source.domain, sv.source.describe(), sv.error)
                    for w in (sv.worker, sv.large):
                        if w is not None:
                            w.close()
                    sv.worker = sv.large = None
            app.state.ready = True
            yield
        finally:
            app.state.ready = False
            for sv in served.values():
                for w in (sv.worker, sv.large):
                    if w is not None:
                        w.close()

    app = FastAPI(
        title="sa-serve",
        version=__version__,
        lifespan=lifespan,
        description="Shared-attention models behind one API. Every /v1 route needs `Authorization: Bearer <token>` "
        'when the server was started with a token. Errors come back as `{"detail": message}`.',
    )
    app.state.ready = False
    app.state.served = served
    app.state.settings = settings

    async def require_token(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if not header:
            raise _error(
                401, "missing bearer token: send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}
            )
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise _error(401, "invalid bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Readiness: loading has finished and at least one model serves (failed ones listed with their reason).

        200 with ``"degraded": true`` when some models failed to load (the others serve); 503 while loading.
        """
        models: dict[str, Any] = {}
        for d, s in served.items():
            models[d] = {"state": s.state, "warmed": s.warmed}
            if s.error:
                models[d]["error"] = s.error
        ok = bool(app.state.ready) and any(s.state == "ready" for s in served.values())
        degraded = any(s.state == "failed" for s in served.values())
        return JSONResponse({"ready": ok, "degraded": degraded, "models": models}, status_code=200 if ok else 503)

    @v1.get("/info", tags=["info"])
    async def info() -> JSONResponse:
        """Served models (versions, checkpoint hashes, I/O specs, limits, batching counters)."""
        models: dict[str, Any] = {}
        for d, s in served.items():
            entry: dict[str, Any] = {
                "state": s.state,
                "source": s.source.describe(),
                "warmed": s.warmed,
                "warmup": s.warmup_note,
                "load_seconds": round(s.load_seconds, 3),
            }
            if s.error:
                entry["error"] = s.error
            if s.predictor is not None:
                try:
                    entry.update(s.predictor.info())
                except Exception as exc:  # noqa: BLE001 - a broken info() must not break /v1/info
                    entry["info_error"] = str(exc)
                spec = s.input_spec
                kind = getattr(spec, "kind", "image")
                entry["route"] = f"/v1/{d}/predict"
                entry["limits"] = {"max_upload_bytes": settings.limits.cap(d, kind)}
            if s.meter is not None:
                entry["cost_model"] = s.meter.to_dict()
            if s.worker is not None:
                entry["batching"] = {
                    "max_batch": s.worker.max_batch,
                    "max_wait_ms": settings.max_wait_ms,
                    "capacity": s.worker.capacity,
                    "in_flight": s.worker.in_flight,
                    **s.worker.stats.to_dict(),
                }
            models[d] = entry
        return JSONResponse(
            _jsonable(
                {
                    "server": {
                        "name": "sa-serve",
                        "version": __version__,
                        "auth": token is not None,
                        "timeout_s": settings.timeout_s,
                        "upload_timeout_s": settings.upload_timeout_s or settings.timeout_s,
                        "pid": os.getpid(),
                    },
                    "installed": discover(),
                    "models": models,
                }
            )
        )

    async def handle(domain: str, request: Request) -> Response:
        sv = served[domain]
        if sv.state == "failed":
            raise _error(503, f"{domain}: the model failed to load: {sv.error}")
        if sv.state != "ready" or sv.worker is None:
            raise _error(503, f"{domain}: model is {sv.state}", {"Retry-After": "5"})
        worker = sv.worker
        try:
            worker.acquire()
        except QueueFullError as exc:
            raise _error(503, str(exc), {"Retry-After": str(exc.retry_after)}) from None
        try:
            kind = getattr(sv.input_spec, "kind", "image")
            upload_s = settings.upload_timeout_s or settings.timeout_s
            body = await _read_body(request, settings.limits.cap(domain, kind), upload_s)  # 408 on its own deadline
            async with asyncio.timeout(settings.timeout_s):  # no extra task per request (unlike wait_for)
                return await _serve_one(sv, request, body)
        except TimeoutError:
            raise _error(504, f"{domain}: no answer within the request timeout of {settings.timeout_s:g} s") from None
        finally:
            worker.release()

    def _budget(sv: Served, meta: Mapping[str, Any], rows: int | None) -> tuple[float | None, float | None]:
        """The request's ``(work units, estimated seconds)`` (None: unknown); 413 when it cannot finish in time
        or memory."""
        domain, pred = sv.source.domain, sv.predictor
        if rows is not None:
            meta = {**meta, "rows": rows}
        if not meta:
            return None, None
        memory = getattr(pred, "memory_bytes", None)
        need = memory(meta) if callable(memory) else None
        if need is not None and need > settings.limits.max_request_memory:
            raise _error(
                413,
                f"{domain}: this input needs about {need / MiB:,.0f} MiB to process; the per-request limit is "
                f"{settings.limits.max_request_memory / MiB:,.0f} MiB",
            )
        if sv.meter is None:
            return None, None
        units = _units(pred, meta)
        if units is None:
            return None, None
        seconds = sv.meter.estimate(units).seconds
        budget = settings.timeout_s * settings.budget_fraction
        if seconds is not None and seconds > budget:
            fits = sv.meter.largest(budget)
            hint = f"; the largest input that fits is about {fits:,.0f} {sv.meter.unit}" if fits else ""
            raise _error(
                413,
                f"{domain}: this input ({units:,.0f} {sv.meter.unit}) needs about {seconds:,.0f} s on this server "
                f"(measured here), over the route's time limit of {settings.timeout_s:g} s{hint}",
            )
        return units, seconds

    async def _serve_one(sv: Served, request: Request, body: bytes) -> Response:
        domain, pred, worker = sv.source.domain, sv.predictor, sv.worker
        assert worker is not None
        spec = sv.input_spec
        data = await _extract_upload(request, body, getattr(spec, "name", "file"))
        try:
            _, raw, meta = _check_content(data, spec, settings.limits)
        except UploadError as exc:
            raise _error(exc.status, f"{domain}: {exc}") from None
        list_rows = _as_rows(domain, raw)
        if list_rows is not None and len(list_rows) > settings.limits.max_json_rows:
            raise _error(
                413, f"{domain}: {len(list_rows):,} rows; the limit is {settings.limits.max_json_rows:,} per request"
            )
        units, estimate = _budget(sv, meta, len(list_rows) if list_rows is not None else None)
        large_s = settings.large_request_s if settings.large_request_s is not None else settings.timeout_s / 4
        lane = worker
        if sv.large is not None and estimate is not None and estimate > large_s:
            lane = sv.large
            try:
                lane.acquire()
            except QueueFullError:
                left = max(1, math.ceil(sv.large_busy_until - time.monotonic()))
                raise _error(
                    503, f"{domain}: a large request is already running; retry in {left} s", {"Retry-After": str(left)}
                ) from None
            sv.large_busy_until = time.monotonic() + estimate
        ticket = Ticket()
        t_pre = t_post = 0.0
        try:
            if list_rows is not None:
                if not list_rows:
                    raise InputError("the candidate list is empty", "candidates")
                done, value = await lane.run_list(list_rows, ticket)
            else:
                t0 = time.perf_counter()
                batch = await run_in_threadpool(pred.preprocess, raw)
                t_pre = time.perf_counter() - t0
                done, value = await lane.run_tensor(batch, ticket)
            t0 = time.perf_counter()
            result = value if done else await run_in_threadpool(pred.postprocess, value)
            t_post = time.perf_counter() - t0
        except InputError as exc:
            raise _error(422, f"{domain}: {exc}") from None
        finally:
            if lane is not worker:
                lane.release()
        if sv.meter is not None and units is not None:
            sv.meter.observe(units, t_pre + ticket.run_s + t_post)
        return _respond(result)

    def _as_rows(domain: str, raw: Any) -> list[Any] | None:
        """Ranking-style bodies: a JSON list of rows (or {"candidates": [...]}) is micro-batched as a list."""
        if isinstance(raw, list):
            return raw
        field = served[domain].input_spec
        name = field.name if field is not None and field.kind == "json" else None
        if name is not None and isinstance(raw, Mapping) and set(raw) == {name}:  # {"candidates": [...]}
            rows = raw[name]
            if not isinstance(rows, list):
                raise _error(422, f"{domain}: {name!r} must be a list of objects")
            return rows
        return None

    def make_route(domain: str) -> Any:
        async def predict(request: Request) -> Response:
            return await handle(domain, request)

        predict.__name__ = f"predict_{domain}"
        return predict

    for domain, sv in served.items():
        kind = "json" if _spec_kind(sv) == "json" else "binary"
        v1.add_api_route(
            f"/{domain}/predict",
            make_route(domain),
            methods=["POST"],
            tags=[domain],
            summary=f"{domain}: {sv.source.describe()}",
            openapi_extra=_request_body_doc(kind),
            response_class=Response,
        )

    @v1.post("/{domain}/predict", tags=["info"], include_in_schema=False)
    async def unknown(domain: str) -> None:
        raise _error(404, f"domain {domain!r} is not served here; served: {sorted(served)}")

    app.include_router(v1)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    return app


def create_app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` worker processes: settings from ``$SA_SERVE_SETTINGS``."""
    text = os.environ.get(SETTINGS_ENV)
    if not text:
        raise RuntimeError(f"${SETTINGS_ENV} is not set (start the server with sa-serve)")
    settings = ServeSettings.from_json(text)
    return create_app(replace(settings, token=os.environ.get(TOKEN_ENV) or None))
