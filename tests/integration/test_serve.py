"""edgekit serve as a real server process, driven by real clients: Triton's tritonclient for the
Open Inference Protocol, plain HTTP for the raw-input route, bad input and load."""

import io
import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from tests.integration.conftest import Server

pytest.importorskip("torch")
pytest.importorskip("starlette")
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory):
    log_db = tmp_path_factory.mktemp("log") / "log.db"
    # No latency budget: these tests load the server with closed-loop clients and expect every
    # answer (the default budget sheds their queue: test_overload_is_shed_on_the_defaults)
    s = Server([*bundles, "--log-db", log_db, "--max-body-mb", "1", "--max-wait-ms", "0"])
    s.log_db = log_db
    yield s
    s.stop()


@pytest.fixture(scope="module")
def references(bundles):
    """What the embedded runtime answers for the same inputs: the server must agree."""
    from edgekit.runtime import load

    return {name: load(path) for name, path in zip(("digits-cnn", "minilm"), bundles)}


def _triton(server):
    import tritonclient.http as http

    return http, http.InferenceServerClient(server.url.removeprefix("http://"))


def test_metadata_and_readiness_through_tritonclient(server):
    http, client = _triton(server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits-cnn") and client.is_model_ready("minilm", "3")
    meta = client.get_model_metadata("digits-cnn")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert meta["outputs"][0]["name"] == "logits" and meta["versions"] == ["1"]
    assert meta["parameters"]["dynamic_batching"] is True and meta["parameters"]["raw_input"] == "image"
    minilm = client.get_model_metadata("minilm", "3")
    assert [i["datatype"] for i in minilm["inputs"]] == ["INT64", "INT64"]
    assert minilm["parameters"]["raw_input"] == "text"
    server_meta = client.get_server_metadata()
    assert "binary_tensor_data" in server_meta["extensions"]


@pytest.mark.parametrize("binary", [True, False])
def test_infer_matches_the_embedded_runtime(server, references, binary):
    http, client = _triton(server)
    digits = references["digits-cnn"]
    x = digits._golden[0]["input"]
    inp = http.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = client.infer("digits-cnn", [inp], request_id="r-1",
                          outputs=[http.InferRequestedOutput("logits", binary_data=binary)])
    assert result.get_response()["id"] == "r-1"
    assert np.allclose(result.as_numpy("logits"), digits.predict({"input": x})["logits"], atol=1e-5)
    minilm = references["minilm"]
    feeds = minilm._golden[0]
    inputs = []
    for name in ("input_ids", "attention_mask"):
        tensor = http.InferInput(name, list(feeds[name].shape), "INT64")
        tensor.set_data_from_numpy(feeds[name], binary_data=binary)
        inputs.append(tensor)
    embedding = client.infer("minilm", inputs, model_version="3").as_numpy("embedding")
    assert np.allclose(embedding, minilm.predict(feeds)["embedding"], atol=1e-5)


def _png(x: np.ndarray, paper=True) -> bytes:
    from PIL import Image

    img = Image.fromarray((x[0] * 255).astype(np.uint8)).resize((32, 32), Image.NEAREST)
    if paper:  # dark ink on light paper, as a user would photograph it
        img = Image.fromarray(255 - np.asarray(img))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_raw_pictures_and_sentences(server, references):
    from edgekit.zoo import digits as zoo_digits

    _, x_test, _, y_test = zoo_digits._split()
    status, body, _ = server.request("POST", "/v1/models/digits-cnn/predict", _png(x_test[0]),
                                     {"Content-Type": "image/png"})
    assert status == 200 and json.loads(body)["predictions"][0]["label"] == str(y_test[0])
    import base64

    instances = [{"b64": base64.b64encode(_png(x)).decode()} for x in x_test[:60]]
    status, body, _ = server.request("POST", "/v1/models/digits-cnn/predict",
                                     json.dumps({"instances": instances}).encode(),
                                     {"Content-Type": "application/json"})
    labels = [p["label"] for p in json.loads(body)["predictions"]]
    assert status == 200 and np.mean([int(a) == b for a, b in zip(labels, y_test[:60])]) > 0.9
    status, body, _ = server.request("POST", "/v1/models/minilm/predict", b"A cat sits on the mat.",
                                     {"Content-Type": "text/plain"})
    served = np.asarray(json.loads(body)["predictions"][0]["embedding"])
    direct = references["minilm"].predict_raw("A cat sits on the mat.")["embedding"]
    assert status == 200 and np.allclose(served, direct, atol=1e-5)


def test_a_picture_is_its_bytes_never_a_path_on_the_server(server, tmp_path):
    """A string where a picture belongs is refused, whatever it names: a PNG on the server's disk
    (it was read and predicted), a missing file or a directory (the errors told them apart), or
    /dev/zero (it blocked the event loop until memory ran out). One message for all of them."""
    from edgekit.zoo import digits as zoo_digits

    on_disk = tmp_path / "secret.png"
    on_disk.write_bytes(_png(zoo_digits._split()[1][0]))
    errors = set()
    for name in (str(on_disk), str(tmp_path / "missing.png"), str(tmp_path), "/dev/zero"):
        for body, kind in ((json.dumps({"instances": [name]}).encode(), "application/json"),
                           (name.encode(), "text/plain")):
            status, reply, _ = server.request("POST", "/v1/models/digits-cnn/predict", body, {"Content-Type": kind})
            assert status == 400, reply[:300]
            errors.add(json.loads(reply)["error"])
    assert errors == {'item 0 is str; model digits-cnn takes pictures as bytes: a binary body, a multipart file, '
                      'or {"b64": "..."} in JSON instances'}  # no oracle: the same answer for every path
    assert server.request("GET", "/v2/health/ready")[0] == 200


def _binary(values: np.ndarray) -> tuple[bytes, str]:
    head = json.dumps({"inputs": [{"name": "input", "shape": list(values.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": values.nbytes}}]}).encode()
    return head + values.tobytes(), str(len(head))


NAN_BINARY = _binary(np.full((1, 1, 8, 8), np.nan, np.float32))


@pytest.mark.parametrize("path, body, headers, status, message", [
    ("/v2/models/digits-cnn/infer", b'{"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32", '
     b'"data": [0]}]}', {}, 400, "values for shape"),
    ("/v2/models/digits-cnn/infer", json.dumps({"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8],
                                                            "datatype": "FP32", "data": [0] * 64}]}).encode(),
     {}, 400, "missing input; unknown pixels"),
    ("/v2/models/digits-cnn/infer", json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 9],
                                                            "datatype": "FP32", "data": [0] * 72}]}).encode(),
     {}, 400, "has shape 1x1x8x9, expected batchx1x8x8"),
    ("/v2/models/digits-cnn/infer", json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8],
                                                            "datatype": "BYTES", "data": ["a"] * 64}]}).encode(),
     {}, 400, "is object, expected float32"),
    ("/v2/models/digits-cnn/infer", b"{not json", {}, 400, "is not JSON"),
    ("/v2/models/digits-cnn/infer", b"x" * (2 << 20), {}, 413, "exceeds the limit of 1048576"),
    ("/v2/models/nope/infer", b"{}", {}, 404, "unknown model 'nope'"),
    ("/v2/models/digits-cnn/versions/9/infer", b"{}", {}, 404, "has no version '9'"),
    ("/v1/models/digits-cnn/predict", b"not a picture", {"Content-Type": "image/png"}, 400, "not a picture"),
    ("/v1/models/minilm/predict", b"\x89PNG", {"Content-Type": "image/png"}, 415, "takes text"),
    ("/v2/models/digits-cnn/infer", json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8],
                                                            "datatype": "FP32", "data": [1e999] * 64}]}
                                               ).replace("Infinity", "1e999").encode(), {}, 400, "expected a finite number"),
    ("/v2/models/digits-cnn/infer", NAN_BINARY[0], {"Inference-Header-Content-Length": NAN_BINARY[1]}, 400,
     "NaN or infinite"),
    ("/v2/models/digits-cnn/infer", NAN_BINARY[0][:-4], {"Inference-Header-Content-Length": NAN_BINARY[1]}, 400,
     "runs past the body"),
    # each of these was a 500 (or a 504 after 10 s, or a 503 to retry forever)
    ("/v2/models/digits-cnn/infer", NAN_BINARY[0], {"Inference-Header-Content-Length": "²"}, 400, "is not a length"),
    ("/v2/models/digits-cnn/infer", ('{"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": '
                                     + "[" * 900 + '"x"' + "]" * 900 + "}]}").encode(), {}, 400, "nested too deeply"),
    ("/v2/models/digits-cnn/infer", json.dumps({"inputs": [{"name": "input", "shape": [0, 1, 8, 8], "datatype": "FP32",
                                                            "data": []}]}).encode(), {}, 400, "holds no rows"),
    ("/v2/models/digits-cnn/infer", json.dumps({"inputs": [{"name": "input", "shape": [257, 1, 8, 8],
                                                            "datatype": "FP32", "data": [0.5] * 257 * 64}]}).encode(),
     {}, 413, "more than the server queues at once (256)"),
])
def test_bad_requests_get_4xx_with_a_reason_and_the_server_keeps_serving(server, path, body, headers, status,
                                                                          message):
    got, reply, _ = server.request("POST", path, body, {"Content-Type": "application/json", **headers})
    assert got == status and message in json.loads(reply)["error"], reply[:300]
    assert server.request("GET", "/v2/health/ready")[0] == 200


def test_requests_for_unknown_models_add_no_metric_series(server):
    """A model name from the URL of a 404 is not a label: one series per name sent would let any
    client grow the server's memory (and the scraper's) without bound."""
    for i in range(5):
        assert server.request("POST", f"/v2/models/probe-{i}/infer", b"{}", {"Content-Type": "application/json"})[0] \
            == 404
    metrics = server.request("GET", "/metrics")[1].decode()
    assert "probe-" not in metrics
    assert 'edgekit_requests_total{model="-",route="infer",status="404"}' in metrics


def _logged(server, request_ids: set) -> set:
    """The ones of ``request_ids`` in the server's log store, once they are there (or a minute on)."""
    from edgekit.sync.store import LogStore

    store = LogStore(server.log_db)
    deadline = time.monotonic() + 60
    while True:
        found = {r[0] for r in store.db.execute("SELECT request_id FROM records")} & request_ids
        if found == request_ids or time.monotonic() > deadline:
            store.close()
            return found


def test_predictions_are_logged_per_request_with_their_id(server):
    from edgekit.sync.store import LogStore

    body = json.dumps({"id": "logged-1", "inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                                     "data": [0.25] * 64}]}).encode()
    status, reply, headers = server.request("POST", "/v2/models/digits-cnn/infer", body)
    served = headers.get("X-Request-Id")
    assert status == 200 and json.loads(reply)["id"] == "logged-1" and served and served != "logged-1"
    assert _logged(server, {served}) == {served}
    store = LogStore(server.log_db)
    row = store.db.execute("SELECT model, version, variant FROM records WHERE request_id = ?", (served,)).fetchone()
    active = json.loads(server.request("GET", "/v2/models/digits-cnn")[1])["parameters"]["active_variant"]
    assert row == ("digits-cnn", "1", active)


def test_client_ids_never_reach_a_header(server):
    """An id with non-Latin-1 characters or a line break was written into X-Request-Id (a 500,
    or a dropped connection); it comes back in the body only."""
    for rid in ("café ✓", "a\r\nSet-Cookie: x=1"):
        body = json.dumps({"id": rid, "inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                                  "data": [0.5] * 64}]}).encode()
        status, reply, headers = server.request("POST", "/v2/models/digits-cnn/infer", body)
        assert status == 200 and json.loads(reply)["id"] == rid and "Set-Cookie" not in headers


def test_every_answered_prediction_is_logged_whatever_id_the_client_reuses(server):
    """Clients reuse ids ("same", "0"): 11 different requests, 11 answers, 11 records."""
    served = set()
    for i, rid in enumerate(["same"] * 5 + ["0"] * 3 + ["1"] * 3):
        body = json.dumps({"id": rid, "inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                                  "data": [i / 11] * 64}]}).encode()
        status, reply, headers = server.request("POST", "/v2/models/digits-cnn/infer", body)
        assert status == 200 and json.loads(reply)["id"] == rid  # the client's id comes back as it sent it
        served.add(headers["X-Request-Id"])
    assert len(served) == 11 and _logged(server, served) == served


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


def test_load_no_5xx_every_answer_right_and_batches_form(server, references):
    """64 concurrent clients for a while: no 5xx, each answer its own, batches really formed,
    and the server's memory flat (no per-request leak)."""
    digits = references["digits-cnn"]
    rng = np.random.default_rng(0)
    samples = rng.random((64, 1, 1, 8, 8)).astype(np.float32)
    expected = [digits.predict({"input": s})["logits"] for s in samples]
    failures, wrong, done, rss = [], [], [], []
    stop = time.monotonic() + 12

    def client(i):
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                       "data": samples[i].ravel().tolist()}]}).encode()
        while time.monotonic() < stop:
            status, reply, _ = server.request("POST", "/v2/models/digits-cnn/infer", body)
            if status >= 500:
                failures.append((status, reply[:200]))
                continue
            got = np.asarray(json.loads(reply)["outputs"][0]["data"], np.float32).reshape(1, 10)
            if not np.allclose(got, expected[i], atol=1e-4):
                wrong.append(i)
            done.append(1)

    def sample():
        while time.monotonic() < stop:
            rss.append(_rss_mb(server.proc.pid))
            time.sleep(0.5)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(64)] + [threading.Thread(target=sample)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [] and wrong == [] and len(done) > 200
    warm = rss[len(rss) // 3]  # after the first seconds (buffers and caches warm)
    assert max(rss[len(rss) // 3:]) - warm < 40, rss  # flat: no growth with the number of requests
    metrics = server.request("GET", "/metrics")[1].decode()
    rows = sum(float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith('edgekit_batch_rows_bucket{le="1.0",model="digits-cnn"}'))
    count = sum(float(line.split()[-1]) for line in metrics.splitlines()
                if line.startswith('edgekit_batch_rows_count{model="digits-cnn"}'))
    assert count > 0 and rows < count  # some forward passes carried more than one request


def test_overload_is_shed_with_503_and_retry_after(bundles):
    """A tiny queue under many clients: the excess gets 503 + Retry-After at once, not timeouts."""
    s = Server([bundles[1], "--max-queue", "2", "--max-batch", "1", "--cache-size", "0"])
    try:
        feeds = {"input_ids": [101] + [0] * 127, "attention_mask": [1] + [0] * 127}
        statuses, retry = [], []

        def client(i):
            body = json.dumps({"inputs": [{"name": k, "shape": [1, 128], "datatype": "INT64",
                                           "data": [v[0] + i % 7] + v[1:] if k == "input_ids" else v}
                                          for k, v in feeds.items()]}).encode()
            for _ in range(3):
                status, _, headers = s.request("POST", "/v2/models/minilm/infer", body)
                statuses.append(status)
                if status == 503:
                    retry.append(headers.get("Retry-After"))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(statuses) <= {200, 503} and statuses.count(200) > 0 and statuses.count(503) > 0
        assert all(r and int(r) >= 1 for r in retry)
        metrics = s.request("GET", "/metrics")[1].decode()
        assert 'edgekit_shed_requests_total{model="minilm"}' in metrics
    finally:
        s.stop()


def test_overload_is_shed_on_the_defaults(bundles):
    """No flag given: the latency budget is derived from the quickest forward pass served, so a
    burst far above capacity is shed with 503 + Retry-After (the default queue of 256 rows held a
    minute of MiniLM work and shed nothing), and the server answers once the burst is over."""
    s = Server([bundles[1], "--cache-size", "0"])
    try:
        meta = json.loads(s.request("GET", "/v2/models/minilm")[1])["parameters"]
        assert meta["latency_budget"].startswith("auto: 2x the quickest forward pass (none yet")
        statuses, retry = [], []

        def client(i):
            for j in range(4):
                ids = [101 + (i * 4 + j) % 900] + [2000 + i] * 60 + [0] * 67
                body = json.dumps({"inputs": [{"name": "input_ids", "shape": [1, 128], "datatype": "INT64", "data": ids},
                                              {"name": "attention_mask", "shape": [1, 128], "datatype": "INT64",
                                               "data": [1] * 61 + [0] * 67}]}).encode()
                status, _, headers = s.request("POST", "/v2/models/minilm/infer", body)
                statuses.append(status)
                if status == 503:
                    retry.append(headers.get("Retry-After"))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(statuses) <= {200, 503} and statuses.count(200) > 0 and statuses.count(503) > 0, statuses
        assert all(r and int(r) >= 1 for r in retry)
        body = json.dumps({"inputs": [{"name": "input_ids", "shape": [1, 128], "datatype": "INT64",
                                       "data": [101] + [0] * 127},
                                      {"name": "attention_mask", "shape": [1, 128], "datatype": "INT64",
                                       "data": [1] + [0] * 127}]}).encode()
        assert s.request("POST", "/v2/models/minilm/infer", body)[0] == 200  # still serving
        meta = json.loads(s.request("GET", "/v2/models/minilm")[1])["parameters"]
        assert meta["latency_budget_ms"] >= 25 and "ms), at least 25 ms" in meta["latency_budget"]
    finally:
        s.stop()


# A runtime plugin: the real onnxruntime session, doing IN_SERVICE on each call once in service
# (the first call is the bundle's golden self-test, which must pass).
PLUGIN = '''
import itertools
import os
import time
from edgekit.formats import get
from edgekit.runtime import register_runtime

_calls = itertools.count()

class Wrapped:
    def __init__(self, path, variant, threads, specs):
        self.inner = get("onnx").open_variant(path, variant, threads, specs)
        self.active_provider = "cpu"
        self.served = 0
    def run(self, feeds):
        self.served += 1
        if self.served > 1:
            IN_SERVICE
        return self.inner.run(feeds)

register_runtime("NAME", Wrapped)
'''
FAULTY = """if next(_calls) % 3 == 0:  # one call in three fails
                raise RuntimeError("injected kernel fault")"""
GATED = """while not os.path.exists(os.environ["EDGEKIT_TEST_GATE"]):  # each call waits for the gate file
                time.sleep(0.01)"""


def _with_runtime(bundle, tmp_path, runtime: str, in_service: str) -> tuple:
    """``bundle`` repacked with its first variant run by the plugin runtime ``runtime`` (PLUGIN
    doing ``in_service``); returns the bundle and the environment a server needs to load it."""
    import shutil
    import tarfile

    from edgekit.bundle import make_bundle

    unpacked = tmp_path / "unpacked"
    with tarfile.open(bundle) as tar:
        tar.extractall(unpacked, filter="data")
    manifest = json.loads((unpacked / "manifest.json").read_text())
    manifest["variants"][0]["runtime"] = runtime
    (unpacked / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "plugins").mkdir(exist_ok=True)
    (tmp_path / "plugins" / f"{runtime}_runtime.py").write_text(
        PLUGIN.replace("IN_SERVICE", in_service).replace("NAME", runtime))
    make_bundle(unpacked, tmp_path / f"{runtime}.ekb", version="2")
    shutil.rmtree(unpacked)
    return tmp_path / f"{runtime}.ekb", {
        "EDGEKIT_RUNTIME_PLUGINS": f"{runtime}_runtime",
        "PYTHONPATH": f"{tmp_path / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_a_faulty_variant_under_load_falls_back_and_no_request_fails(bundles, tmp_path):
    bundle, env = _with_runtime(bundles[0], tmp_path, "flaky", FAULTY)
    # no latency budget: the retried batches of a failing variant are slow, and shedding them is
    # not what this test is about (every request answered by the fallback)
    s = Server([bundle, "--cache-size", "0", "--max-wait-ms", "0"], env=env)
    try:
        statuses = []

        def client(i):
            for j in range(15):
                body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                               "data": [((i * 15 + j) % 17) / 17] * 64}]}).encode()
                statuses.append(s.request("POST", "/v2/models/digits-cnn/infer", body)[0])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [200] * 240
        metrics = s.request("GET", "/metrics")[1].decode()
        assert 'edgekit_fallbacks_total{model="digits-cnn",reason="RuntimeError",version="2"}' in metrics
    finally:
        s.stop()


def test_bearer_token_guards_everything_but_the_probes(bundles, tmp_path):
    from edgekit.tokens import new_token

    token = new_token(tmp_path / "serve.token")
    s = Server([bundles[0], "--token-file", tmp_path / "serve.token"])
    try:
        assert s.request("GET", "/v2/health/ready")[0] == 200
        assert s.request("GET", "/v2/models/digits-cnn")[0] == 401
        assert s.request("GET", "/metrics")[0] == 401
        assert s.request("GET", "/v2/models/digits-cnn", headers={"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        s.stop()


def _gauge(server, name: str) -> float:
    text = server.request("GET", "/metrics")[1].decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_graceful_shutdown_answers_requests_in_flight(bundles, tmp_path):
    """SIGTERM while eight requests are held inside the server (one in the model, seven in the
    batch queue): the server reports not-ready at once and keeps accepting for its drain period
    (a request arriving then is answered, not reset), then stops accepting, answers all, exits."""
    import socket

    bundle, env = _with_runtime(bundles[0], tmp_path, "gated", GATED)
    gate = tmp_path / "gate"
    s = Server([bundle, "--max-delay-ms", "300", "--max-batch", "64", "--cache-size", "0", "--timeout-ms", "300000",
                "--drain-seconds", "3"], env={**env, "EDGEKIT_TEST_GATE": str(gate)})
    results = []
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                   "data": [0.5] * 64}]}).encode()

    def client():
        results.append(s.request("POST", "/v2/models/digits-cnn/infer", body)[0])

    threads = [threading.Thread(target=client) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        # all eight inside the server (the scrape itself is the ninth request in flight)
        while _gauge(s, "edgekit_inflight_requests") < 9 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _gauge(s, "edgekit_inflight_requests") == 9
        s.proc.send_signal(signal.SIGTERM)
        while s.request("GET", "/v2/health/ready")[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert s.request("GET", "/v2/health/ready")[0] == 503  # draining: still answering, not ready
        late = threading.Thread(target=client)  # a client the load balancer had not moved yet
        late.start()
        threads.append(late)
        while _gauge(s, "edgekit_inflight_requests") < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        while time.monotonic() < deadline:  # then shutting down: no new connection is accepted
            try:
                socket.create_connection(("127.0.0.1", s.port), timeout=1).close()
                time.sleep(0.02)
            except OSError:
                break
        assert results == []  # nothing answered before the gate opens
        gate.touch()
        for t in threads:
            t.join()
        # uvicorn finishes its shutdown, then re-raises SIGTERM so that the exit says why (-15)
        assert s.proc.wait(timeout=120) in (0, -signal.SIGTERM)
        assert results == [200] * 9  # every request accepted was answered before the process ended
    finally:
        gate.touch()
        s.stop()


def test_two_versions_of_a_model_give_distinct_metric_series(bundles, tmp_path):
    """Two versions served side by side emitted the same label sets twice, which Prometheus rejects."""
    from prometheus_client.parser import text_string_to_metric_families

    from edgekit.bundle import make_bundle

    make_bundle(bundles[0].parent / "digits", tmp_path / "digits-2.ekb", version="2")
    s = Server([bundles[0], tmp_path / "digits-2.ekb"])
    try:
        text = s.request("GET", "/metrics")[1].decode()
    finally:
        s.stop()
    series = [(sample.name, tuple(sorted(sample.labels.items())))
              for family in text_string_to_metric_families(text) for sample in family.samples]
    assert len(series) == len(set(series))
    assert {dict(labels).get("version") for name, labels in series if name == "edgekit_queue_rows"} == {"1", "2"}


def test_uploads_and_pictures_are_bounded_before_decoding(server):
    """Multipart parts were each held to the body limit but not together (10 x 60 MB read with a
    64 MB limit); a 9000x9000 picture (81 Mpx) passed the 64 Mpx limit; several large pictures in
    one request had no budget. This server allows 1 MB bodies."""
    from PIL import Image

    def multipart(parts: list[bytes]) -> tuple[bytes, dict]:
        boundary = "edgekit-test-boundary"
        body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"f{i}\"; filename=\"p{i}.png\"\r\n"
                        f"Content-Type: image/png\r\n\r\n".encode() + part + b"\r\n" for i, part in enumerate(parts))
        return body + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    body, headers = multipart([b"x" * 600_000] * 3)  # each part under 1 MB, together not
    status, reply, _ = server.request("POST", "/v1/models/digits-cnn/predict", body, headers)
    assert status == 413 and "exceeds the limit of 1048576" in json.loads(reply)["error"]

    def png(side: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("L", (side, side)).save(buffer, "PNG")
        return buffer.getvalue()

    status, reply, _ = server.request("POST", "/v1/models/digits-cnn/predict", png(9000), {"Content-Type": "image/png"})
    assert status == 400 and "a 9000x9000 picture, more than 64 Mpx" in json.loads(reply)["error"]
    body, headers = multipart([png(6000)] * 2)  # 36 Mpx each, under the picture limit, over the request's
    status, reply, _ = server.request("POST", "/v1/models/digits-cnn/predict", body, headers)
    assert status == 400 and "pixel budget" in json.loads(reply)["error"]
    assert server.request("GET", "/v2/health/ready")[0] == 200


def _response(conn) -> str:
    """One whole HTTP response from a raw socket: the head and the body can come in separate
    segments (one recv() returned the 408's head without its body)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _content_length(data):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def _content_length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip() or 0)
    return 0


def test_stalled_bodies_are_dropped_and_the_server_serves_again(bundles):
    """Clients that send one byte of a body and stall filled --max-inflight and every other
    request got 503 for over a minute: each stalled body now gets 408 after the idle limit."""
    import socket

    s = Server([bundles[0], "--max-inflight", "2"], env={"EDGEKIT_BODY_IDLE_S": "1"})
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                   "data": [0.5] * 64}]}).encode()
    stalled = []
    try:
        for _ in range(2):
            conn = socket.create_connection(("127.0.0.1", s.port), timeout=120)
            conn.sendall(b"POST /v2/models/digits-cnn/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
            stalled.append(conn)
        answers = [_response(conn) for conn in stalled]  # waits for the server's verdict
        assert all(a.startswith("HTTP/1.1 408") and "no byte of the body arrived" in a for a in answers), answers
        assert s.request("POST", "/v2/models/digits-cnn/infer", body)[0] == 200
    finally:
        for conn in stalled:
            conn.close()
        s.stop()
