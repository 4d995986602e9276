"""The server's protocol and data plane without HTTP: decoding, encoding, batching, shedding,
caching and validation, on the tiny ONNX bundle."""

import asyncio
import json
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edgekit.serve.batching import AsyncBatcher, Overloaded
from edgekit.serve.protocol import HEADER, InferRequest, ProtocolError, encode_response
from tests.unit.test_runtime import _reference, opt_dir  # noqa: F401  (the tiny bundle fixture)

pytest.importorskip("starlette")


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def test_json_and_binary_inputs_decode_to_the_same_tensors():
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    as_json = InferRequest.parse(_json({"id": "a", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                                                "data": x.tolist()}]}))
    head = _json({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                              "parameters": {"binary_data_size": x.nbytes}}],
                  "outputs": [{"name": "y", "parameters": {"binary_data": True}}]})
    as_binary = InferRequest.parse(head + x.tobytes(), str(len(head)))
    assert np.array_equal(as_json.inputs["x"], x) and np.array_equal(as_binary.inputs["x"], x)
    assert as_json.id == "a" and as_binary.binary_outputs == {"y"}
    words = [b"cat", b"sat"]
    blob = b"".join(struct.pack("<I", len(w)) + w for w in words)
    head = _json({"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}]})
    assert InferRequest.parse(head + blob, str(len(head))).inputs["t"].tolist() == words


BINARY_X = _json({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]})


@pytest.mark.parametrize("body, header, message", [
    (b"[1, 2]", None, "must be a JSON object"),
    (_json({"inputs": []}), None, "inputs: expected a list of tables of length >= 1"),
    (_json({"inputs": [{"name": "x", "shape": [2], "datatype": "FP99", "data": [1, 2]}]}), None, "inputs[0].datatype: expected one of 'BOOL'"),
    (_json({"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}), None, "inputs[0].shape[0]: expected an integer >= 0, got -1"),
    (_json({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}), None, "2 values for shape [3]"),
    (_json({"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": ["a", "b"]}]}), None, "is not INT32"),
    (_json({"inputs": [{"name": "x", "shape": [1 << 20, 1 << 20], "datatype": "FP32", "data": []}]}), None,
     "too many"),
    (BINARY_X, "999", "is not a length within the body"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}",
     None, "nested too deeply"),
    (b"{}" + b"\0" * 4, "2", "inputs: missing"),
    # binary data past every input's block: a client that miscounts must not have it ignored
    (BINARY_X + b"\0" * 12, str(len(BINARY_X)), "4 bytes of binary data follow that no input claims"),
])
def test_protocol_errors_say_what_is_wrong(body, header, message):
    with pytest.raises(ProtocolError, match=message.replace("[", "\\[").replace("]", "\\]")) as info:
        InferRequest.parse(body, header)
    assert 400 <= info.value.status < 500


def test_responses_encode_json_and_binary_blocks():
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    request = InferRequest({"x": np.zeros(1)}, id="r", binary_outputs=frozenset({"y"}))
    body, headers = encode_response("m", "1", request, {"y": y})
    head = json.loads(body[:int(headers[HEADER])])
    assert head["id"] == "r" and head["outputs"][0]["parameters"]["binary_data_size"] == y.nbytes
    assert np.array_equal(np.frombuffer(body[int(headers[HEADER]):], np.float32).reshape(2, 3), y)
    body, headers = encode_response("m", "1", InferRequest({"x": np.zeros(1)}), {"y": y})
    assert headers == {} and json.loads(body)["outputs"][0]["data"] == y.ravel().tolist()
    with pytest.raises(ProtocolError, match="has no output 'z'"):
        encode_response("m", "1", InferRequest({"x": np.zeros(1)}, outputs=("z",)), {"y": y})


def _run(coro):
    return asyncio.run(coro)


def test_batcher_groups_concurrent_requests_and_answers_each_its_rows():
    calls = []

    def run(feeds):
        calls.append(len(feeds["x"]))
        return {"y": feeds["x"] * 2}

    async def main():
        batcher = AsyncBatcher(run, ThreadPoolExecutor(1), max_batch=8, max_delay_ms=50, max_queue=64)
        inputs = [np.full((1, 2), i, np.float32) for i in range(8)]
        results = await asyncio.gather(*(batcher.submit({"x": x}) for x in inputs))
        return inputs, results

    inputs, results = _run(main())
    assert all(np.array_equal(r["y"], x * 2) for x, r in zip(inputs, results))
    assert calls == [8]  # one forward pass for the eight callers


def test_a_lone_request_to_a_quick_model_runs_on_the_loop_and_concurrent_ones_batch():
    """A lone request paid two thread hops (0.17 ms of a 0.57 ms request on the digits CNN): a
    quick model now answers it on the event loop. Concurrent requests still go to the batcher's
    worker thread, grouped; and a model never timed, or slower than INLINE_MAX_MS, never runs
    on the loop."""
    import time

    from edgekit.serve.batching import INLINE_MAX_MS
    from edgekit.serve.plane import QUIET_S, Repository

    threads, sizes = [], []

    def run(feeds):
        threads.append(threading.current_thread() is threading.main_thread())
        sizes.append(len(feeds["x"]))
        return {"y": feeds["x"] * 2}

    async def main():
        batcher = AsyncBatcher(run, ThreadPoolExecutor(1), max_batch=8, max_delay_ms=50, max_queue=64)
        x = np.ones((1, 2), np.float32)
        assert not batcher.can_inline()  # never timed: the first request goes to the thread
        await batcher.submit({"x": x})
        await asyncio.sleep(0.01)  # the batch's task ends just after its callers are answered
        assert batcher.fastest_ms is not None  # the thread timed the forward pass
        batcher.fastest_ms = INLINE_MAX_MS / 2  # quick, whatever this machine's load made of it
        assert batcher.can_inline()
        assert np.array_equal(batcher.run_inline({"x": x})["y"], x * 2)
        await asyncio.gather(*(batcher.submit({"x": x}) for _ in range(6)))
        batcher.fastest_ms = INLINE_MAX_MS * 2
        assert not batcher.can_inline()  # a slower model keeps the loop free

    _run(main())
    assert threads == [False, True, False] and sizes == [1, 1, 6]
    repository = Repository()
    assert repository.begin()  # nothing else in flight, nothing just ended
    assert not repository.begin()  # a second one in flight
    repository.end()
    repository.end()
    assert not repository.begin()  # started right after another ended: it was waiting for the loop
    repository.end()
    time.sleep(QUIET_S * 5)
    assert repository.begin()


def test_batcher_sheds_beyond_its_queue_and_isolates_a_bad_request():
    gate = threading.Event()

    def run(feeds):
        gate.wait(5)
        if (feeds["x"] < 0).any() and len(feeds["x"]) == 1:
            raise ValueError("negative")
        if (feeds["x"] < 0).any():
            raise ValueError("a batch with a negative row")
        return {"y": feeds["x"]}

    async def main():
        batcher = AsyncBatcher(run, ThreadPoolExecutor(1), max_batch=4, max_delay_ms=20, max_queue=4)
        def submit(v):
            return asyncio.create_task(batcher.submit({"x": np.full((1, 1), v, np.float32)}))

        tasks = [submit(v) for v in (1, -1, 2, 3)]  # one batch, held in the only worker at the gate
        while batcher.batches == 0:
            await asyncio.sleep(0.005)
        tasks += [submit(v) for v in (4, 5, 6, 7)]  # queued behind it: the queue is now full
        while batcher.queued_rows < 4:
            await asyncio.sleep(0.005)
        with pytest.raises(Overloaded) as shed:  # refused at once, not queued
            await batcher.submit({"x": np.ones((1, 1), np.float32)})
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return shed.value, results

    shed, results = _run(main())
    assert shed.retry_after_s == 1.0  # the Retry-After it advertises: max(1 s, twice the 20 ms delay)
    assert isinstance(results[1], ValueError) and str(results[1]) == "negative"
    assert [r["y"].item() for i, r in enumerate(results) if i != 1] == [1, 2, 3, 4, 5, 6, 7]  # neighbours answered


def test_plane_validates_caches_and_answers(opt_dir):  # noqa: F811
    from edgekit.serve.plane import Repository, ServedModel, ServeOptions

    async def main():
        model = ServedModel(opt_dir, ServeOptions(max_delay_ms=1))
        repo = Repository()
        repo.add(model)
        x = np.ones((2, 4), np.float32)
        first, info1 = await model.infer({"x": x})
        again, info2 = await model.infer({"x": x})
        with pytest.raises(ProtocolError, match="has shape 2x5"):
            await model.infer({"x": np.ones((2, 5), np.float32)})
        with pytest.raises(ProtocolError, match="no version '9'"):
            repo.get("tiny", "9")
        meta = model.metadata()
        model.close()
        return first, info1, again, info2, meta

    first, info1, again, info2, meta = _run(main())
    assert np.allclose(first["y"], _reference(np.ones((2, 4), np.float32)), atol=1e-5)
    assert (info1["source"], info2["source"]) == ("model", "cache") and np.array_equal(first["y"], again["y"])
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["parameters"]["dynamic_batching"] is True


def test_the_plane_answers_a_lone_request_on_the_loop(opt_dir):  # noqa: F811
    """What the HTTP layer says (Repository.begin: alone or not) decides where a request to a
    quick model runs: alone on the event loop, else through the batcher's thread."""
    from edgekit.serve.batching import INLINE_MAX_MS
    from edgekit.serve.plane import ServedModel, ServeOptions

    async def main():
        model = ServedModel(opt_dir, ServeOptions(cache_size=0))
        run, on_loop = model.runtime.predict_validated, []
        model.batcher.run = lambda feeds: on_loop.append(threading.current_thread() is threading.main_thread()) or run(feeds)
        x = np.ones((1, 4), np.float32)
        for alone in (True, False, True, True):  # the first is timed in the thread, whatever it says
            outputs, _ = await model.infer({"x": x}, alone=alone)
            assert np.allclose(outputs["y"], _reference(x), atol=1e-5)
            await asyncio.sleep(0.01)
            model.batcher.fastest_ms = INLINE_MAX_MS / 2  # quick, whatever this machine's load made of it
        model.close()
        return on_loop

    assert _run(main()) == [False, False, True, True]


def test_requests_given_up_while_queued_leave_the_queue():
    """A client that disconnects (or times out) while queued must not hold its place: with its
    rows still counted, an idle server would shed every later request."""
    gate = threading.Event()

    def run(feeds):
        gate.wait(5)
        return {"y": feeds["x"]}

    async def main():
        batcher = AsyncBatcher(run, ThreadPoolExecutor(1), max_batch=1, max_delay_ms=0, max_queue=2)
        first = asyncio.create_task(batcher.submit({"x": np.ones((1, 1), np.float32)}))
        while batcher.batches == 0:
            await asyncio.sleep(0.005)
        waiting = [asyncio.create_task(batcher.submit({"x": np.ones((1, 1), np.float32)})) for _ in range(2)]
        while batcher.queued_rows < 2:
            await asyncio.sleep(0.005)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        queued_after_cancel = batcher.queued_rows
        gate.set()
        await first
        later = await batcher.submit({"x": np.full((1, 1), 3, np.float32)})
        return queued_after_cancel, later

    queued, later = _run(main())
    assert queued == 0 and later["y"].item() == 3


def test_admit_sheds_on_a_full_queue_and_on_a_wait_beyond_the_budget(opt_dir):  # noqa: F811
    """Before a request's body is read: refused when max_queue rows wait, or when the rows ahead
    times the measured cost per row exceed max_wait_ms; admitted otherwise."""
    from dataclasses import replace

    from edgekit.serve.plane import ServedModel, ServeOptions

    gate = threading.Event()
    x = np.ones((1, 4), np.float32)

    async def main():
        model = ServedModel(opt_dir, ServeOptions(max_batch=1, max_queue=2, max_delay_ms=0, cache_size=0,
                                                  max_wait_ms=100))
        real = model.batcher.run

        def held(feeds):  # the forward pass waits at the gate
            gate.wait(30)
            return real(feeds)

        model.batcher.run = held
        try:
            model.admit()  # idle
            first = asyncio.create_task(model.infer({"x": x}))
            while model.batcher.batches == 0:
                await asyncio.sleep(0.005)
            model.admit()  # one request running, its cost not measured yet
            queued = [asyncio.create_task(model.infer({"x": x})) for _ in range(2)]
            while model.batcher.queued_rows < 2:
                await asyncio.sleep(0.005)
            with pytest.raises(Overloaded, match="2 rows already queued"):
                model.admit()
            await asyncio.sleep(0.3)  # the running request has now cost at least 300 ms
            gate.set()
            await asyncio.gather(first, *queued)
            model.admit()  # idle again
            gate.clear()
            running = asyncio.create_task(model.infer({"x": x}))
            while model.batcher.batches < 4:
                await asyncio.sleep(0.005)
            # one row ahead at the measured cost per row (a moving average of 300 ms and two fast rows)
            with pytest.raises(Overloaded, match="expected wait of .* exceeds the latency budget of 100.0 ms"):
                model.admit()
            model.options = replace(model.options, max_wait_ms=None)
            model.admit()  # without a budget only the queue limit sheds
            gate.set()
            await running
        finally:
            gate.set()
            model.close()

    _run(main())
