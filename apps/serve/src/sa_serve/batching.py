"""A bounded, per-model work queue with dynamic micro-batching, run by worker threads (off the event loop).

Requests are *admitted* before any work is done for them (:meth:`ModelWorker.acquire`): when the number of
requests in the system (preprocessing, queued or running) reaches the bound, the server answers 503 with a
``Retry-After`` estimate instead of piling work up. Admitted requests are preprocessed in the request's thread,
then :meth:`ModelWorker.submit` puts them on the queue. A worker thread takes the oldest item and, for up to
``max_wait_s``, gathers more *compatible* items (up to ``max_batch``):

* ``tensor`` items (a preprocessed tensor, or a dict/tuple of tensors, whose first dim is the batch) are
  compatible when every non-batch dim, dtype and device match; they are concatenated along dim 0, the predictor
  runs once, and the output is split back along dim 0 (one slice per request, postprocessed by the request).
* ``list`` items (ranking: the raw list of candidate rows) are concatenated into one list; the worker runs
  ``preprocess -> predict -> postprocess`` once and splits every list in the response back by request. If the
  concatenation is refused (one bad request), each request is retried alone so only the bad one gets the error.
* Anything else runs alone.

From asyncio code, :meth:`ModelWorker.run_list` / :meth:`ModelWorker.run_tensor` queue an item and await its
answer; a finished batch wakes each waiting event loop once (one ``call_soon_threadsafe`` per batch, not one per
request as ``asyncio.wrap_future`` would).

Abandoned requests: when the awaiting coroutine is cancelled (its deadline passed), a queued item is dropped
and a running one has its :class:`Ticket` cancel event set; a predictor that calls
:func:`shared_attention.serving.check_cancelled` between tiles / chunks then stops within one step, so the
worker moves on to the next request instead of finishing work nobody waits for. ``Retry-After`` comes from the
measured drain rate (requests finished per busy second, cancelled work excluded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from shared_attention.serving.control import CancelledError, cancel_scope

__all__ = ["BatchStats", "ModelWorker", "QueueFullError", "Ticket", "batch_signature", "collate", "split_output"]

logger = logging.getLogger(__name__)


class QueueFullError(Exception):
    """The model's queue is full; ``retry_after`` is a whole number of seconds to wait."""

    def __init__(self, domain: str, retry_after: int) -> None:
        super().__init__(f"{domain}: the work queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


# ------------------------------------------------------------------------------------- collate / split


def _tensor_type() -> Any:
    import torch

    return torch.Tensor


def batch_signature(payload: Any) -> tuple[Hashable, int] | None:
    """(compatibility key, rows) of a preprocessed batch, or None when it cannot be concatenated."""
    tensor = _tensor_type()
    if isinstance(payload, tensor):
        if payload.dim() == 0:
            return None
        return ("t", tuple(payload.shape[1:]), str(payload.dtype), str(payload.device)), int(payload.shape[0])
    if isinstance(payload, Mapping) and payload:
        parts = []
        rows: set[int] = set()
        for k in sorted(payload, key=str):
            sig = batch_signature(payload[k])
            if sig is None:
                return None
            parts.append((str(k), sig[0]))
            rows.add(sig[1])
        return (("d", tuple(parts)), rows.pop()) if len(rows) == 1 else None
    if isinstance(payload, tuple) and payload:
        sigs = [batch_signature(v) for v in payload]
        keys, counts = [], set()
        for sig in sigs:
            if sig is None:
                return None
            keys.append(sig[0])
            counts.add(sig[1])
        return (("s", tuple(keys)), counts.pop()) if len(counts) == 1 else None
    return None


def collate(payloads: Sequence[Any]) -> Any:
    """Concatenates compatible preprocessed batches along dim 0 (tensors, dicts and tuples of tensors)."""
    import torch

    first = payloads[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(payloads), dim=0)
    if isinstance(first, Mapping):
        return {k: collate([p[k] for p in payloads]) for k in first}
    if isinstance(first, tuple):
        return tuple(collate([p[i] for p in payloads]) for i in range(len(first)))
    raise TypeError(f"cannot concatenate {type(first).__name__}")


def split_output(output: Any, sizes: Sequence[int]) -> list[Any]:
    """Splits a batched model output along dim 0 into ``len(sizes)`` pieces (the inverse of :func:`collate`)."""
    import torch

    total = sum(sizes)
    if isinstance(output, torch.Tensor):
        if output.dim() == 0 or output.shape[0] != total:
            raise ValueError(f"output batch dim {tuple(output.shape)[:1]} does not match {total} input rows")
        return list(output.split(list(sizes), dim=0))
    if isinstance(output, Mapping):
        per_key = {k: split_output(v, sizes) for k, v in output.items()}
        return [{k: per_key[k][i] for k in output} for i in range(len(sizes))]
    if isinstance(output, tuple | list):
        parts = [split_output(v, sizes) for v in output]
        return [type(output)(p[i] for p in parts) for i in range(len(sizes))]
    raise TypeError(f"cannot split a {type(output).__name__} output by request")


def split_response(response: Any, sizes: Sequence[int]) -> list[Any]:
    """Splits a postprocessed list-mode response (``{"scores": [...]}``) back by request."""
    total = sum(sizes)
    if isinstance(response, Mapping):
        per_key: dict[str, list[Any]] = {}
        for k, v in response.items():
            if isinstance(v, list) and len(v) == total:
                per_key[k] = [v[a:b] for a, b in _bounds(sizes)]
            else:
                per_key[k] = [v] * len(sizes)  # scalars (e.g. a model name) are shared
        return [{k: per_key[k][i] for k in response} for i in range(len(sizes))]
    if isinstance(response, list) and len(response) == total:
        return [response[a:b] for a, b in _bounds(sizes)]
    raise ValueError(f"cannot split a {type(response).__name__} response into {len(sizes)} requests")


def _bounds(sizes: Sequence[int]) -> Iterator[tuple[int, int]]:
    start = 0
    for n in sizes:
        yield start, start + n
        start += n


# ------------------------------------------------------------------------------------------------ worker


@dataclass
class Ticket:
    """A request's handle on its queued work: set ``cancel`` to abandon it; ``run_s`` is its share of the
    worker's busy seconds once it ran (for the route's cost meter)."""

    cancel: threading.Event = field(default_factory=threading.Event)
    run_s: float = 0.0


@dataclass
class _Item:
    mode: str  # "tensor" | "list" | "single"
    payload: Any
    rows: int
    key: Hashable | None
    ticket: Ticket = field(default_factory=Ticket)
    future: Future[tuple[bool, Any]] = field(default_factory=Future)
    loop: asyncio.AbstractEventLoop | None = None  # set by run_list / run_tensor: the awaiting loop
    aio: asyncio.Future[tuple[bool, Any]] | None = None


def _deliver(items: Sequence[_Item]) -> None:
    """On the event loop: copies each finished concurrent future into the asyncio future awaiting it."""
    for it in items:
        if it.aio is None or it.aio.done():
            continue
        if not it.future.done():
            it.aio.set_exception(RuntimeError("internal error: batch finished without an answer"))
        elif it.future.cancelled():
            it.aio.cancel()
        elif (exc := it.future.exception()) is not None:
            it.aio.set_exception(exc)
        else:
            it.aio.set_result(it.future.result())


def _notify(items: Sequence[_Item]) -> None:
    """Wakes every event loop that awaits some of ``items`` once (from a worker thread)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
    for it in items:
        if it.loop is not None:
            by_loop.setdefault(it.loop, []).append(it)
    for loop, its in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_deliver, its)


@dataclass
class BatchStats:
    """Counters published in ``/v1/info``."""

    requests: int = 0
    batches: int = 0
    rows: int = 0
    largest_batch: int = 0
    rejected_full: int = 0
    cancelled: int = 0
    busy_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counters, with the mean requests per batch."""
        return {
            "requests": self.requests,
            "batches": self.batches,
            "rows": self.rows,
            "largest_batch": self.largest_batch,
            "rejected_full": self.rejected_full,
            "cancelled": self.cancelled,
            "mean_batch": self.requests / self.batches if self.batches else 0.0,
            "busy_seconds": round(self.busy_seconds, 3),
        }


class ModelWorker:
    """Bounded queue + micro-batching worker threads for one predictor.

    Args:
        domain: name used in messages. predictor: the loaded predictor.
        max_batch: most requests merged into one ``predict`` call (1 disables batching).
        max_wait_s: how long the first request of a batch waits for company.
        capacity: most requests admitted at once (preprocessing + queued + running); more get 503.
        threads: worker threads calling ``predict`` (a model must tolerate concurrent calls when > 1).
        max_rows: most rows (first-dim entries, e.g. ranking candidates) in one merged call (0: no limit).
    """

    def __init__(
        self,
        domain: str,
        predictor: Any,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        capacity: int = 64,
        threads: int = 1,
        max_rows: int = 0,
    ) -> None:
        if max_batch < 1 or capacity < 1 or threads < 1 or max_wait_s < 0:
            raise ValueError("max_batch, capacity and threads must be >= 1 and max_wait_s >= 0")
        self.domain = domain
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.capacity = capacity
        self.max_rows = max_rows
        self.stats = BatchStats()
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._admitted = 0
        self._admit_lock = threading.Lock()
        self._stop = False
        self._drain_rate: float | None = None  # requests finished per busy second (EWMA), cancelled work excluded
        self._threads = [
            threading.Thread(target=self._loop, name=f"sa-serve-{domain}-{i}", daemon=True) for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    # -- admission ---------------------------------------------------------------------------------------

    def retry_after(self) -> int:
        """Seconds until the admitted requests have drained at the measured rate (at least 1)."""
        rate = self._drain_rate
        if rate is None or rate <= 0:
            return 1
        return max(1, math.ceil(max(self._admitted, 1) / (rate * len(self._threads))))

    @property
    def drain_rate(self) -> float | None:
        """Measured requests per busy second per thread (None before the first finished batch)."""
        return self._drain_rate

    def acquire(self) -> None:
        """Takes one of ``capacity`` slots for a request's whole life; raises :class:`QueueFullError` when none is free.

        Every successful call must be paired with :meth:`release`.
        """
        with self._admit_lock:
            if self._admitted >= self.capacity:
                self.stats.rejected_full += 1
                raise QueueFullError(self.domain, self.retry_after())
            self._admitted += 1

    def release(self) -> None:
        """Gives back a slot taken by :meth:`acquire`."""
        with self._admit_lock:
            self._admitted -= 1

    @property
    def in_flight(self) -> int:
        """Requests currently admitted."""
        return self._admitted

    # -- submission --------------------------------------------------------------------------------------

    def submit_tensor(self, batch: Any, ticket: Ticket | None = None) -> Future[tuple[bool, Any]]:
        """Queues a preprocessed batch; the future gives ``(False, output_slice)`` (not yet postprocessed)."""
        return self._put(self._tensor_item(batch, ticket))

    def submit_list(self, rows: list[Any], ticket: Ticket | None = None) -> Future[tuple[bool, Any]]:
        """Queues a raw list of rows (ranking); the future gives ``(True, response)`` (already postprocessed)."""
        return self._put(self._list_item(rows, ticket))

    def _tensor_item(self, batch: Any, ticket: Ticket | None) -> _Item:
        sig = batch_signature(batch) if self.max_batch > 1 else None
        item = _Item("tensor" if sig else "single", batch, sig[1] if sig else 1, sig[0] if sig else None)
        if ticket is not None:
            item.ticket = ticket
        return item

    def _list_item(self, rows: list[Any], ticket: Ticket | None) -> _Item:
        item = _Item("list", rows, len(rows), ("list",) if self.max_batch > 1 else None)
        if ticket is not None:
            item.ticket = ticket
        return item

    async def run_tensor(self, batch: Any, ticket: Ticket | None = None) -> tuple[bool, Any]:
        """:meth:`submit_tensor`, awaited on the running event loop: ``(False, output_slice)``."""
        return await self._await(self._tensor_item(batch, ticket))

    async def run_list(self, rows: list[Any], ticket: Ticket | None = None) -> tuple[bool, Any]:
        """:meth:`submit_list`, awaited on the running event loop: ``(True, response)``."""
        return await self._await(self._list_item(rows, ticket))

    async def _await(self, item: _Item) -> tuple[bool, Any]:
        item.loop = asyncio.get_running_loop()
        item.aio = item.loop.create_future()
        self._put(item)
        try:
            return await item.aio
        finally:
            if not item.future.done():
                item.ticket.cancel.set()  # running: the predictor stops at its next check_cancelled()
                item.future.cancel()  # queued: the request leaves the queue

    def _put(self, item: _Item) -> Future[tuple[bool, Any]]:
        with self._cond:
            if self._stop:
                raise RuntimeError(f"{self.domain}: the model is shutting down")
            self._queue.append(item)
            self._cond.notify()
        return item.future

    def close(self) -> None:
        """Stops the worker threads after the items already taken; queued items fail."""
        with self._cond:
            self._stop = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for it in pending:
            if it.future.set_running_or_notify_cancel():
                it.future.set_exception(RuntimeError(f"{self.domain}: server shutting down"))
        _notify(pending)
        for t in self._threads:
            t.join(timeout=5)

    # -- the loop ----------------------------------------------------------------------------------------

    def _take(self) -> list[_Item] | None:
        with self._cond:
            while not self._queue and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            first = self._queue.popleft()
            batch = [first]
            if first.key is None:
                return batch
            deadline = time.monotonic() + self.max_wait_s
            rows = first.rows
            while len(batch) < self.max_batch:
                for it in list(self._queue):
                    if it.key == first.key and (not self.max_rows or rows + it.rows <= self.max_rows):
                        self._queue.remove(it)
                        batch.append(it)
                        rows += it.rows
                        if len(batch) >= self.max_batch:
                            break
                remaining = deadline - time.monotonic()
                if len(batch) >= self.max_batch or remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._queue:
                self._cond.notify()  # another worker thread may take the incompatible rest
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [it for it in batch if it.future.set_running_or_notify_cancel()]  # drops timed-out requests
            if not live:
                continue
            t0 = time.perf_counter()
            cancelled = False
            try:
                if len(live) == 1:  # one request: its predictor loop may stop early when it is abandoned
                    with cancel_scope(live[0].ticket.cancel):
                        self._run(live)
                else:
                    self._run(live)
            except CancelledError as exc:
                cancelled = True
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(exc)
            except BaseException as exc:  # noqa: BLE001 - every waiting request must get an answer
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(exc)
            finally:
                dt = time.perf_counter() - t0
                total_rows = sum(it.rows for it in live) or 1
                for it in live:  # before the waiters wake up: they read it
                    it.ticket.run_s = dt * it.rows / total_rows
                _notify(live)
            if cancelled:
                self.stats.cancelled += len(live)
            elif dt > 0:
                rate = len(live) / dt
                self._drain_rate = rate if self._drain_rate is None else 0.7 * self._drain_rate + 0.3 * rate
            self.stats.batches += 1
            self.stats.requests += len(live)
            self.stats.rows += sum(it.rows for it in live)
            self.stats.largest_batch = max(self.stats.largest_batch, len(live))
            self.stats.busy_seconds += dt

    def _run(self, items: list[_Item]) -> None:
        if items[0].mode == "list":
            self._run_list(items)
            return
        if len(items) == 1:
            items[0].future.set_result((False, self.predictor.predict(items[0].payload)))
            return
        out = self.predictor.predict(collate([it.payload for it in items]))
        try:
            parts = split_output(out, [it.rows for it in items])
        except (TypeError, ValueError) as exc:  # the model's output is not batch-first: run one by one
            logger.warning("%s: cannot split a batched output (%s); running requests one by one", self.domain, exc)
            for it in items:
                it.future.set_result((False, self.predictor.predict(it.payload)))
            return
        for it, part in zip(items, parts, strict=True):
            it.future.set_result((False, part))

    def _run_one_list(self, item: _Item) -> None:
        try:
            resp = self.predictor.postprocess(self.predictor.predict(self.predictor.preprocess(item.payload)))
        except Exception as exc:  # noqa: BLE001 - delivered to the request
            item.future.set_exception(exc)
        else:
            item.future.set_result((True, resp))

    def _run_list(self, items: list[_Item]) -> None:
        from shared_attention.serving import InputError

        if len(items) == 1:
            self._run_one_list(items[0])
            return
        rows = [r for it in items for r in it.payload]
        try:
            resp = self.predictor.postprocess(self.predictor.predict(self.predictor.preprocess(rows)))
        except InputError:  # a bad row (or a non-finite score): find out whose by running each alone
            for it in items:
                self._run_one_list(it)
            return
        for it, part in zip(items, split_response(resp, [it.rows for it in items]), strict=True):
            it.future.set_result((True, part))
