"""Cooperative cancellation of long predictions, and the work-unit vocabulary of request cost models.

A server cannot stop a thread that runs a forward pass, but long predictions are loops over tiles, chunks or
sliding windows. The server runs each request inside :func:`cancel_scope` with an event it sets when the
client's deadline passes; the loops call :func:`check_cancelled` between steps and stop with
:class:`CancelledError`, so an abandoned request frees its worker within one tile instead of running to the end.
Outside a scope (the CLIs, tests) :func:`check_cancelled` is a no-op that costs one thread-local lookup.

Cost models: a predictor may define ``cost(meta) -> float | None``, the work units of one request computed
from header-only metadata (nothing decoded), e.g. pixels for an image, samples at the model's rate for audio,
voxels for a volume, candidate rows for ranking. The server fits seconds per unit on this machine (at warm-up
and from every finished request) and refuses what cannot finish within the route's time limit before any work
starts. The keys of ``meta`` are listed in :data:`META_KEYS`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["META_KEYS", "CancelledError", "cancel_scope", "check_cancelled"]

#: What the server puts in ``meta`` per input kind (all from headers; absent when the header does not say).
META_KEYS: dict[str, tuple[str, ...]] = {
    "image": ("width", "height", "pixels"),
    "audio": ("sample_rate", "channels", "frames", "seconds"),
    "volume": ("shape", "voxels"),
    "json": ("rows",),
}

_local = threading.local()


class CancelledError(RuntimeError):
    """The request this work belongs to was abandoned (its client's deadline passed)."""


@contextmanager
def cancel_scope(event: threading.Event | None) -> Iterator[None]:
    """Makes :func:`check_cancelled` in this thread raise once ``event`` is set (``None``: never)."""
    previous = getattr(_local, "event", None)
    _local.event = event
    try:
        yield
    finally:
        _local.event = previous


def check_cancelled() -> None:
    """Raises :class:`CancelledError` when the current thread's request was abandoned; call it between tiles/chunks."""
    event = getattr(_local, "event", None)
    if event is not None and event.is_set():
        raise CancelledError("the request was abandoned (its deadline passed); work stopped")
