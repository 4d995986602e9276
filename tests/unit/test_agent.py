"""The device agent on loopback: authentication, limits, queueing, disconnects, end to end."""

import hashlib
import http.client
import json
import socket
import threading

import pytest

from edgekit.agent.client import AgentClient, remote_bench
from edgekit.agent.server import AgentConfig, make_server, new_token, read_token
from edgekit.bench import BenchOptions
from edgekit.errors import EdgekitError

FAST = dict(min_runs=20, min_seconds=0.2, warmup_runs=2, warmup_s=0.05)


@pytest.fixture
def agent(tmp_path):
    token_file = tmp_path / "agent.token"
    new_token(token_file)
    server = make_server("127.0.0.1", 0, AgentConfig(tmp_path / "store", read_token(token_file), max_upload_bytes=4096))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", token_file, server
    server.shutdown()
    server.server_close()


def _conn(url):
    host, port = url.split("//")[1].split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def test_token_is_required_and_checked(agent):
    url, token_file, _ = agent
    conn = _conn(url)
    conn.request("GET", "/v1/health")
    assert conn.getresponse().status == 200  # probes need no token
    for header in ({}, {"Authorization": "Bearer nope-nope-nope-nope"}, {"Authorization": "Basic x"}):
        conn = _conn(url)
        conn.request("GET", "/v1/artifacts/" + "0" * 64 + ".onnx", headers=header)
        assert conn.getresponse().status == 401
    with pytest.raises(EdgekitError, match="refused the token"):
        AgentClient(url, b"wrong-token-of-good-length").ensure(token_file, "onnx")


def test_short_or_missing_token_files(tmp_path):
    (tmp_path / "t").write_text("short")
    with pytest.raises(EdgekitError, match="too short"):
        read_token(tmp_path / "t")
    with pytest.raises(EdgekitError, match="edgekit agent token"):
        read_token(tmp_path / "missing")


def test_upload_limits_hashes_and_names(agent):
    url, token_file, server = agent
    token = read_token(token_file).decode()
    auth = {"Authorization": f"Bearer {token}"}
    big = b"x" * 5000
    conn = _conn(url)
    conn.request("PUT", f"/v1/artifacts/{hashlib.sha256(big).hexdigest()}.onnx", body=big, headers=auth)
    assert conn.getresponse().status == 413
    small = b"y" * 100
    conn = _conn(url)
    conn.request("PUT", "/v1/artifacts/" + "a" * 64 + ".onnx", body=small, headers=auth)
    assert conn.getresponse().status == 400  # content does not match its name
    for path in ("/v1/artifacts/../../etc/passwd", "/v1/artifacts/" + "a" * 64 + ".sh"):
        conn = _conn(url)
        conn.request("PUT", path, body=small, headers=auth)
        assert conn.getresponse().status == 404
    stored = list((server.RequestHandlerClass.agent.config.storage).iterdir())
    assert stored == []  # nothing half-written, nothing outside the store


def test_one_benchmark_at_a_time(agent, tiny_onnx):
    url, token_file, server = agent
    client = AgentClient(url, read_token(token_file))
    sha = client.ensure(tiny_onnx, "onnx")
    busy = server.RequestHandlerClass.agent.busy
    busy.acquire()  # as if another benchmark were running
    try:
        body = json.dumps({"artifacts": [{"sha256": sha, "format": "onnx"}], "options": FAST}).encode()
        status, reply, headers = client.request("POST", "/v1/bench", body)
        assert status == 429 and int(headers["Retry-After"]) > 0
    finally:
        busy.release()
    status, reply, _ = client.request("POST", "/v1/bench", body)
    assert status == 200 and reply["results"][0]["steady"]["n"] >= 20


def test_survives_a_client_that_disconnects_mid_run(agent, tiny_onnx):
    url, token_file, server = agent
    client = AgentClient(url, read_token(token_file))
    sha = client.ensure(tiny_onnx, "onnx")
    body = json.dumps({"artifacts": [{"sha256": sha, "format": "onnx"}],
                       "options": dict(FAST, min_seconds=1.0)}).encode()
    host, port = url.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)))
    request = (f"POST /v1/bench HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {client.token}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    sock.sendall(request)
    sock.close()  # gone before the benchmark ends
    result = remote_bench(url, token_file, [str(tiny_onnx)], BenchOptions(**FAST))  # waits its turn if needed
    assert result.results[0].label == "tiny.onnx"


def test_a_thread_sweep_names_every_row_by_its_own_file(agent, tiny_onnx, tmp_path):
    from tests.conftest import make_tiny_onnx

    url, token_file, _ = agent
    other = make_tiny_onnx(tmp_path / "other.onnx", batch=1)  # other content, other sha
    result = remote_bench(url, token_file, [str(tiny_onnx), str(other)], BenchOptions(threads=[1, 2], **FAST))
    shas = {"tiny.onnx": hashlib.sha256(tiny_onnx.read_bytes()).hexdigest(),
            "other.onnx": hashlib.sha256(other.read_bytes()).hexdigest()}
    rows = {(r.label, r.threads): r for r in result.results}
    assert set(rows) == {("tiny.onnx [t1]", 1), ("tiny.onnx [t2]", 2), ("other.onnx [t1]", 1), ("other.onnx [t2]", 2)}
    for (label, _), row in rows.items():
        assert row.sha256 == shas[label.split(" ")[0]] and row.artifact == label.split(" ")[0]


def test_remote_bench_end_to_end_and_content_addressing(agent, tiny_onnx):
    url, token_file, server = agent
    result = remote_bench(url, token_file, [str(tiny_onnx), str(tiny_onnx)], BenchOptions(**FAST))
    assert result.device == url and result.schema == "edgekit.bench/1"
    assert len(result.results) == 2 and result.interleaved
    assert result.environment["cores"] >= 1
    store = server.RequestHandlerClass.agent.config.storage
    assert len(list(store.glob("*.onnx"))) == 1  # the same content is stored and sent once
    with pytest.raises(EdgekitError, match="cannot reach the agent"):
        remote_bench("http://127.0.0.1:9", token_file, [str(tiny_onnx)], BenchOptions(**FAST))


# --- defects from the outside probe (issue 10) -----------------------------------------------

@pytest.mark.parametrize("body, message", [
    ({"artifacts": []}, "artifacts must be a list of 1-16 entries"),
    ({"threads": 5}, "expected {\"artifacts\""),
    ({"artifacts": [{"sha256": "a" * 64, "format": "onnx"}], "options": {"max_seconds": "abc"}},
     "options.max_seconds: expected a number"),
    ({"artifacts": [{"sha256": "a" * 64, "format": "onnx"}], "options": {"input_data_sha256": "../x"}},
     "input_data_sha256 must be 64 lowercase hex"),
    ({"artifacts": [{"sha256": "../../etc/passwd", "format": "onnx"}]}, "sha256 must be 64 lowercase hex"),
    ({"artifacts": [{"sha256": "a" * 64, "format": "onnx"}], "options": {"threads": [1, 2, 3, 4, 5],
                                                                        "batches": [1, 2, 4, 8]}}, "at most 16"),
])
def test_malformed_bench_requests_get_400_and_the_agent_keeps_serving(agent, body, message):
    url, token_file, _ = agent
    client = AgentClient(url, read_token(token_file))
    status, reply, _ = client.request("POST", "/v1/bench", json.dumps(body).encode())
    assert status == 400 and message in reply["error"], reply
    assert client.request("GET", "/v1/health")[0] == 200


def test_bad_content_length_gets_400(agent):
    url, token_file, _ = agent
    token = read_token(token_file).decode()
    host, port = url.split("//")[1].split(":")
    for method in ("POST /v1/bench", "PUT /v1/artifacts/" + "a" * 64 + ".onnx"):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"{method} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                         "Content-Length: abc\r\n\r\n".encode())
            assert sock.recv(200).startswith(b"HTTP/1.0 400")


def test_client_times_cannot_exceed_the_agents_cap(tmp_path, tiny_onnx, monkeypatch):
    import edgekit.bench as bench

    seen = []
    from types import SimpleNamespace as Fake  # what the agent reads of a BenchResult

    monkeypatch.setattr(bench, "run_bench", lambda paths, opts: seen.append(opts) or Fake(
        results=[Fake(artifact="a", label="a")], environment={"hostname": "h"}, to_dict=lambda: {}))
    token_file = tmp_path / "t"
    new_token(token_file)
    server = make_server("127.0.0.1", 0, AgentConfig(tmp_path / "store", read_token(token_file), max_bench_seconds=3))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client = AgentClient(url, read_token(token_file))
        sha = client.ensure(tiny_onnx, "onnx")
        body = {"artifacts": [{"sha256": sha, "format": "onnx"}],
                "options": {"min_seconds": 900, "warmup_s": 900, "max_seconds": 900}}
        assert client.request("POST", "/v1/bench", json.dumps(body).encode())[0] == 200
    finally:
        server.shutdown()
        server.server_close()
    assert (seen[0].max_seconds, seen[0].min_seconds, seen[0].warmup_s) == (3, 3, 0.3)


def _until_closed(sock) -> bytes:
    """Everything the peer sends until it closes the connection (a reset counts as closed)."""
    data = b""
    while True:
        try:
            block = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not block:
            return data
        data += block


def test_stalled_connections_are_closed(tmp_path):
    import time

    token_file = tmp_path / "t"
    new_token(token_file)
    server = make_server("127.0.0.1", 0, AgentConfig(tmp_path / "s", read_token(token_file), idle_timeout_s=0.5))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        stalled[0].sendall(b"POST /v1/bench HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")  # half a request
        time.sleep(1.5)
        for i, sock in enumerate(stalled):
            sock.settimeout(5)
            received = _until_closed(sock)  # the agent hung up; a stalled client holds nothing
            # the half request had no token: its 401 may arrive before the hang-up (or be lost to
            # the reset that closing on unread bytes sends); the silent ones get nothing
            assert received == b"" or (i == 0 and received.split(b" ")[1] == b"401"), received[:80]
            sock.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/v1/health")
        assert conn.getresponse().status == 200
    finally:
        server.shutdown()
        server.server_close()


def test_port_in_use_is_one_clear_error(tmp_path):
    token_file = tmp_path / "t"
    new_token(token_file)
    first = make_server("127.0.0.1", 0, AgentConfig(tmp_path / "s", read_token(token_file)))
    try:
        with pytest.raises(EdgekitError, match="cannot listen on 127.0.0.1:.*another agent"):
            make_server("127.0.0.1", first.server_address[1], AgentConfig(tmp_path / "s", read_token(token_file)))
    finally:
        first.server_close()


def test_a_remote_bench_reads_the_agents_answer_as_a_typed_result(tmp_path, tiny_onnx, monkeypatch):
    """The answer is a BenchResult like a local run's: an agent that answers something else
    (another version, a broken one) is one clear error, not a KeyError deep in the report."""
    import edgekit.bench as bench
    from types import SimpleNamespace as Fake

    monkeypatch.setattr(bench, "run_bench", lambda paths, opts: Fake(
        results=[], environment={"hostname": "h"}, to_dict=lambda: {"schema": "edgekit.bench/0", "results": []}))
    token_file = tmp_path / "t"
    new_token(token_file)
    server = make_server("127.0.0.1", 0, AgentConfig(tmp_path / "store", read_token(token_file)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(EdgekitError, match="answered a result this edgekit cannot read: the agent's answer.created: "
                                               "missing"):
            remote_bench(url, token_file, [str(tiny_onnx)], BenchOptions(**FAST))
    finally:
        server.shutdown()
        server.server_close()
