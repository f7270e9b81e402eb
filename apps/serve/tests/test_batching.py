"""Micro-batching: collate/split, the worker's grouping, list-mode fallback, and concurrent HTTP requests."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from sa_serve.app import ServeSettings, create_app
from sa_serve.batching import ModelWorker, QueueFullError, batch_signature, collate, split_output, split_response
from sa_serve.registry import ModelSource

from shared_attention.serving import InputError


def test_signature_collate_split_roundtrip():
    a = {"x": torch.rand(1, 3, 4, 5), "m": torch.zeros(1, 2)}
    b = {"x": torch.rand(2, 3, 4, 5), "m": torch.ones(2, 2)}
    assert batch_signature(a)[0] == batch_signature(b)[0] and batch_signature(b)[1] == 2
    assert batch_signature({"x": torch.rand(1, 3, 4, 6), "m": torch.zeros(1, 2)})[0] != batch_signature(a)[0]
    assert batch_signature({"x": torch.rand(1, 3), "m": torch.zeros(2, 2)}) is None  # rows disagree
    assert batch_signature([1, 2]) is None and batch_signature(torch.tensor(1.0)) is None
    cat = collate([a, b])
    assert cat["x"].shape == (3, 3, 4, 5)
    parts = split_output(cat, [1, 2])
    torch.testing.assert_close(parts[0]["x"], a["x"])
    torch.testing.assert_close(parts[1]["m"], b["m"])
    t = split_output((torch.arange(3), torch.arange(6).view(3, 2)), [2, 1])
    assert t[1][0].tolist() == [2] and t[1][1].tolist() == [[4, 5]]
    with pytest.raises(ValueError, match="does not match"):
        split_output(torch.zeros(2), [1, 2])
    assert split_response({"scores": [1, 2, 3], "model": "m"}, [2, 1]) == [
        {"scores": [1, 2], "model": "m"},
        {"scores": [3], "model": "m"},
    ]


def _wait_taken(w: ModelWorker) -> None:
    """Waits until the blocker request sits in ``predict`` behind the closed gate."""
    assert w.predictor.entered.wait(60), "the worker never called predict"  # hang guard: takes milliseconds
    assert not w._queue


class _Doubler:
    """predict doubles; records batch sizes; optionally waits on a gate."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def preprocess(self, raw):
        if any(not isinstance(r, int | float) for r in raw):
            raise InputError("numbers only", "rows")
        return torch.tensor(raw, dtype=torch.float32)

    def predict(self, batch):
        self.entered.set()
        self.gate.wait(60)  # a cap so that a test that forgets to open the gate cannot hang forever
        self.sizes.append(batch.shape[0])
        return batch * 2

    def postprocess(self, out):
        return {"scores": out.tolist()}


def test_worker_merges_compatible_items_only():
    model = _Doubler()
    model.gate.clear()
    w = ModelWorker("t", model, max_batch=8, max_wait_s=0.05, capacity=32)
    try:
        blocker = w.submit_tensor(torch.zeros(1, 1))  # occupies the worker until the gate opens
        _wait_taken(w)
        futs = [w.submit_tensor(torch.full((1, 3), float(i))) for i in range(5)]
        odd = w.submit_tensor(torch.ones(1, 4))  # another shape: its own batch
        model.gate.set()
        blocker.result(5)
        outs = [f.result(5)[1] for f in futs]
        assert [o.tolist() for o in outs] == [[[2.0 * i] * 3] for i in range(5)]
        assert odd.result(5)[1].shape == (1, 4)
        assert model.sizes == [1, 5, 1]
        deadline = time.monotonic() + 60  # hang guard: counters are updated just after the answers are set
        while w.stats.requests < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.stats.largest_batch == 5 and w.stats.requests == 7
    finally:
        w.close()


def test_list_mode_bad_request_does_not_fail_the_others():
    model = _Doubler()
    model.gate.clear()
    w = ModelWorker("r", model, max_batch=8, max_wait_s=0.05, capacity=32)
    try:
        blocker = w.submit_list([0])
        _wait_taken(w)
        good1, bad, good2 = w.submit_list([1, 2]), w.submit_list([3, "x"]), w.submit_list([4])
        model.gate.set()
        blocker.result(5)
        assert good1.result(5) == (True, {"scores": [2.0, 4.0]})
        assert good2.result(5) == (True, {"scores": [8.0]})
        with pytest.raises(InputError, match="numbers only"):
            bad.result(5)
    finally:
        w.close()


def test_capacity_and_cancelled_items_are_skipped():
    model = _Doubler()
    model.gate.clear()
    w = ModelWorker("c", model, max_batch=1, capacity=2)
    try:
        w.acquire()
        w.acquire()
        with pytest.raises(QueueFullError) as exc:
            w.acquire()
        assert exc.value.retry_after >= 1
        w.release()
        w.acquire()
        first = w.submit_tensor(torch.zeros(1, 1))
        _wait_taken(w)
        dropped = w.submit_tensor(torch.zeros(1, 1))
        assert dropped.cancel()  # a timed-out request leaves the queue
        after = w.submit_tensor(torch.full((1, 1), 3.0))  # queued behind it: once answered, the worker is past it
        model.gate.set()
        first.result(5)
        assert after.result(5)[1].tolist() == [[6.0]]
        assert model.sizes == [1, 1]  # the blocker, then `after` alone: the cancelled item never reached predict
    finally:
        w.close()


class _GatedPredict:
    """Replaces a predictor's ``predict``: records the rows of each call as it enters, then waits for the gate."""

    def __init__(self, pred) -> None:
        self.inner = pred.predict
        self.gate = threading.Event()
        self.gate.set()
        self.entered: list[int] = []
        pred.predict = self

    def __call__(self, batch):
        sig = batch_signature(batch)
        self.entered.append(sig[1] if sig else 1)
        self.gate.wait(60)  # a cap so that a failing test cannot hang forever
        return self.inner(batch)


def _hold_until_merged(gated: _GatedPredict, worker: ModelWorker, rows: int, submit):
    """Closes the gate, runs ``submit()``, and opens the gate once the call parked in predict or the requests
    queued behind it hold more than ``rows`` rows: the next predict call then merges them. Events, not timing:
    whatever the machine's speed, requests accumulate while the gate is closed."""
    gated.entered.clear()
    gated.gate.clear()
    try:
        futures = submit()
        deadline = time.monotonic() + 120  # a hang guard: this takes milliseconds
        while True:
            with worker._cond:
                queued = sum(it.rows for it in worker._queue)
            if gated.entered and (gated.entered[0] > rows or queued > rows):
                break
            assert time.monotonic() < deadline, f"{worker.domain}: requests did not queue up ({queued} rows)"
            time.sleep(0.01)
    finally:
        gated.gate.set()
    return [f.result() for f in futures]


def test_concurrent_http_requests_are_batched_and_correct(restoration_run, kit, sample_png):
    import httpx

    ranker = kit.FakeRankingPredictor()
    gated: dict[str, _GatedPredict] = {}

    def restoration():
        pred = ModelSource("restoration", run_dir=str(restoration_run)).load()
        gated["restoration"] = _GatedPredict(pred)
        return pred

    settings = ServeSettings(
        sources=(
            ModelSource("ranking", factory=lambda: ranker),
            ModelSource("restoration", factory=restoration),
        ),
        max_batch=16,
        max_wait_ms=20.0,
        threads=1,
    )
    gated["ranking"] = _GatedPredict(ranker)
    rng = np.random.default_rng(1)
    reqs = [[{"x": float(a), "y": float(b)} for a, b in rng.random((int(rng.integers(1, 5)), 2))] for _ in range(40)]
    app = create_app(settings)
    with kit.LiveServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        alone = c.post("/v1/restoration/predict", files={"file": ("a.png", sample_png)}).content
        workers = {d: app.state.served[d].worker for d in ("ranking", "restoration")}

        def rank(cands):
            return c.post("/v1/ranking/predict", json=cands)

        def image(_):
            return c.post("/v1/restoration/predict", files={"file": ("a.png", sample_png)})

        with ThreadPoolExecutor(16) as ex:
            responses = _hold_until_merged(
                gated["ranking"], workers["ranking"], 4, lambda: [ex.submit(rank, r) for r in reqs]
            )
            images = _hold_until_merged(
                gated["restoration"], workers["restoration"], 1, lambda: [ex.submit(image, i) for i in range(8)]
            )
        for cands, r in zip(reqs, responses):
            assert r.status_code == 200
            assert r.json()["scores"] == pytest.approx([2 * d["x"] - d["y"] for d in cands], abs=1e-5)
        assert max(ranker.batch_sizes) > 4  # candidates of several requests in one predict call
        info = c.get("/v1/info").json()["models"]
        assert info["ranking"]["batching"]["largest_batch"] > 1
        assert all(r.status_code == 200 for r in images)
        assert info["restoration"]["batching"]["largest_batch"] > 1  # same-size images were merged
        import cv2

        ref = cv2.imdecode(np.frombuffer(alone, np.uint8), cv2.IMREAD_COLOR).astype(int)
        for r in images:  # batched results equal the single-request result (up to 1 level of rounding)
            out = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR).astype(int)
            assert np.abs(out - ref).max() <= 1


def test_max_rows_caps_a_merged_call():
    model = _Doubler()
    model.gate.clear()
    w = ModelWorker("r", model, max_batch=8, max_wait_s=0.05, capacity=32, max_rows=3)
    try:
        blocker = w.submit_list([0])
        _wait_taken(w)
        a, b, c = w.submit_list([1, 2]), w.submit_list([3, 4]), w.submit_list([5])
        model.gate.set()
        blocker.result(5)
        assert [f.result(5)[1]["scores"] for f in (a, b, c)] == [[2.0, 4.0], [6.0, 8.0], [10.0]]
        assert model.sizes == [1, 3, 2]  # a + c fit in 3 rows; b waits for the next call
    finally:
        w.close()


def test_run_list_wakes_the_event_loop_once_per_batch():
    """Awaited items: right answers, errors per request, and one call_soon_threadsafe per finished batch."""
    import asyncio

    model = _Doubler()
    model.gate.clear()
    w = ModelWorker("r", model, max_batch=8, max_wait_s=0.05, capacity=32)

    async def main() -> tuple[list, int]:
        loop = asyncio.get_running_loop()
        calls = 0
        orig = loop.call_soon_threadsafe

        def counting(*args, **kwargs):
            nonlocal calls
            calls += 1
            return orig(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        blocker = asyncio.ensure_future(w.run_list([0]))
        await asyncio.to_thread(_wait_taken, w)
        calls = 0  # to_thread itself completes through call_soon_threadsafe
        tasks = [asyncio.ensure_future(w.run_list([i, i + 1])) for i in (1, 3, 5)]
        bad = asyncio.ensure_future(w.run_list([7, "x"]))
        while len(w._queue) < 4:
            await asyncio.sleep(0.001)
        model.gate.set()
        await blocker
        results = [await t for t in tasks]
        with pytest.raises(InputError, match="numbers only"):
            await bad
        return results, calls

    try:
        results, calls = asyncio.run(main())
    finally:
        w.close()
    assert [r[1]["scores"] for r in results] == [[2.0, 4.0], [6.0, 8.0], [10.0, 12.0]]
    assert model.sizes == [1, 2, 2, 2]  # blocker; the merge is refused (one bad row): each good request alone
    assert calls == 2  # the blocker's batch, then the merged batch of four requests


def test_merged_list_error_in_postprocess_goes_only_to_its_request():
    """A non-finite score found in postprocess of a merged call is retried alone: only its request fails."""
    import threading

    from shared_attention.serving import InputError

    gate = threading.Event()

    class Model:
        def preprocess(self, rows):
            return list(rows)

        def predict(self, batch):
            if batch == [0]:
                gate.wait(60)
            return batch

        def postprocess(self, out):
            bad = [i for i, v in enumerate(out) if v == "nan"]
            if bad:
                raise InputError(f"row {bad[0]}: the model's score is not finite", "candidates")
            return {"scores": out}

    w = ModelWorker("r", Model(), max_batch=8, max_wait_s=0.05, capacity=32)
    try:
        blocker = w.submit_list([0])
        good, bad = w.submit_list([1, 2]), w.submit_list([3, "nan"])
        gate.set()
        blocker.result(60)
        assert good.result(60) == (True, {"scores": [1, 2]})
        with pytest.raises(InputError, match="row 1"):
            bad.result(60)
    finally:
        w.close()
