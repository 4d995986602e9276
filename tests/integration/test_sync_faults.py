"""Device log shipping with real processes: kills, outages, bad requests. Nothing lost, nothing twice.

SQLite always; PostgreSQL too where EDGEKIT_TEST_POSTGRES names a server (.ci/run starts one).
"""

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from edgekit.collector.db import Database, add_device, revoke_device
from edgekit.sync.store import LogStore

pytestmark = pytest.mark.integration
PG = os.environ.get("EDGEKIT_TEST_POSTGRES")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["sqlite"] + (["postgresql"] if PG else []))
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'collector.db'}"
        return
    import psycopg

    schema = f"t{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{PG}{'&' if '?' in PG else '?'}options=-csearch_path%3D{schema}"
    yield url
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


class Collector:
    def __init__(self, db_url, port, extra=()):
        self.db_url, self.port, self.extra = db_url, port, extra
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekit", "collector", "serve", "--db", self.db_url,
                                      "--port", str(self.port), *self.extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/health", timeout=1)
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(self.proc.stderr.read().decode()[-2000:])

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def collector(db_url):
    c = Collector(db_url, _free_port()).start()
    yield c
    c.stop()


def _count(db_url) -> tuple[int, int]:
    db = Database(db_url)
    with db.connect() as tx:
        total = tx.one("SELECT COUNT(*) FROM records")[0]
        distinct = tx.one("SELECT COUNT(DISTINCT request_id) FROM records")[0]
    return total, distinct


def _device(tmp_path, db_url, n, name="pi-1"):
    token = add_device(Database(db_url), name)
    (tmp_path / f"{name}.token").write_text(token)
    store = LogStore(tmp_path / f"{name}.db")
    x, y = {"input": np.ones((1, 8), np.float32)}, {"logits": np.ones((1, 3), np.float32)}
    ids = [store.append(x, y, "m") for _ in range(n)]
    store.close()
    return token, ids


def _config(tmp_path, url, name="pi-1", batch=100):
    path = tmp_path / f"{name}.toml"
    path.write_text(f'db = "{tmp_path / (name + ".db")}"\nurl = "{url}"\ntoken_file = "{tmp_path / (name + ".token")}"\n'
                    f"batch_size = {batch}\nmax_age_s = 0.0\npoll_s = 0.05\nbackoff_base_s = 0.05\nbackoff_max_s = 0.5\n")
    return path


def _sync(config, once=False, **kw):
    cmd = [sys.executable, "-m", "edgekit", "sync", "run", "--config", str(config)] + (["--once"] if once else [])
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def _wait(cond, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


def _post(port, token, body: bytes, key="k1", gzipped=False):
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/logs", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


RECORD = {"id": 1, "request_id": "r1", "time": 1.0, "model": "m", "outputs": {}, "inputs": None}


def test_statuses_for_bad_requests(collector, db_url, tmp_path):
    token = add_device(Database(db_url), "pi-1")
    port = collector.port
    body = json.dumps({"records": [RECORD], "feedback": []}).encode()
    assert _post(port, "wrong", body)[0] == 401
    status, result, _ = _post(port, token, gzip.compress(body), gzipped=True)
    assert status == 200 and result["accepted"] == 1
    status, replay, headers = _post(port, token, gzip.compress(body), gzipped=True)
    assert status == 200 and replay == result and headers.get("idempotent-replayed") == "true"
    other = json.dumps({"records": [dict(RECORD, id=2, request_id="r2")], "feedback": []}).encode()
    assert _post(port, token, other, key="k1")[0] == 422  # same key, other payload
    status, error, _ = _post(port, token, json.dumps({"records": [{"id": "x"}]}).encode(), key="k2")
    assert status == 400 and "records[0].id must be an integer" in error["error"]
    assert _post(port, token, b"{not json", key="k3")[0] == 400
    assert _post(port, token, b"\x1f\x8b garbage", key="k4", gzipped=True)[0] == 400
    assert _count(db_url) == (1, 1)  # nothing stored from the bad ones
    revoke_device(Database(db_url), "pi-1")
    assert _post(port, token, other, key="k5")[0] == 401


def test_oversized_batches_get_413(db_url, tmp_path):
    c = Collector(db_url, _free_port(), extra=("--max-batch-mb", "1")).start()
    try:
        token = add_device(Database(db_url), "pi-1")
        big = json.dumps({"records": [dict(RECORD, outputs={"pad": "x" * 2_000_000})]}).encode()
        assert _post(c.port, token, big)[0] == 413
        bomb = gzip.compress(b" " * 200_000_000)  # inflates far beyond the limit
        assert _post(c.port, token, bomb, key="b", gzipped=True)[0] == 413
    finally:
        c.stop()
    assert _count(db_url) == (0, 0)


class DelayProxy:
    """Forwards to the collector but holds each response back, so a client can die waiting."""

    def __init__(self, target_port, delay):
        self.target, self.delay = target_port, delay
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.responses_held = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client):
        with client, socket.create_connection(("127.0.0.1", self.target)) as upstream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += client.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0)
            while len(body) < length:
                body += client.recv(65536)
            upstream.sendall(head + b"\r\n\r\n" + body)
            response = b""
            while True:
                chunk = upstream.recv(65536)
                if not chunk:
                    break
                response += chunk
                if b"\r\n\r\n" in response:
                    h, _, b = response.partition(b"\r\n\r\n")
                    n = next((int(x.split(b":")[1]) for x in h.split(b"\r\n") if x.lower().startswith(b"content-length")), 0)
                    if len(b) >= n:
                        break
            self.responses_held += 1
            time.sleep(self.delay)  # the collector has committed; the client has not heard
            try:
                client.sendall(response)
            except OSError:
                pass

    def close(self):
        self.server.close()


def test_client_killed_mid_upload_then_restarted_delivers_exactly_once(collector, db_url, tmp_path):
    n = 600
    _, ids = _device(tmp_path, db_url, n)
    proxy = DelayProxy(collector.port, delay=2.0)
    client = _sync(_config(tmp_path, f"http://127.0.0.1:{proxy.port}", batch=200))
    try:
        assert _wait(lambda: proxy.responses_held >= 1, 30)  # a batch is committed, its ack in flight
        client.send_signal(signal.SIGKILL)
        client.wait()
    finally:
        proxy.close()
    first = _count(db_url)[0]
    assert 0 < first < n
    store = LogStore(tmp_path / "pi-1.db")
    assert store.stats()["shipped"] < first + 1  # the killed batch was not marked shipped
    done = _sync(_config(tmp_path, f"http://127.0.0.1:{collector.port}"), once=True)
    assert done.wait(120) == 0
    assert _count(db_url) == (n, n)  # every record once; the resent batch was deduplicated
    db = Database(db_url)
    with db.connect() as tx:
        stored = {r[0] for r in tx.all("SELECT request_id FROM records")}
    assert stored == set(ids)


def test_collector_down_then_back_drains_the_backlog(db_url, tmp_path):
    n = 1500
    port = _free_port()
    _device(tmp_path, db_url, n)
    client = _sync(_config(tmp_path, f"http://127.0.0.1:{port}", batch=250))
    try:
        time.sleep(1.5)  # the client retries against nothing, backing off
        c = Collector(db_url, port).start()
        try:
            assert _wait(lambda: _count(db_url)[0] == n, 60)
        finally:
            c.stop()
    finally:
        client.terminate()
        client.wait()
    assert _count(db_url) == (n, n)
    assert LogStore(tmp_path / "pi-1.db").stats()["pending"] == 0


def test_collector_killed_mid_ingest_loses_and_duplicates_nothing(db_url, tmp_path):
    n = 4000
    port = _free_port()
    _device(tmp_path, db_url, n)
    c = Collector(db_url, port).start()
    client = _sync(_config(tmp_path, f"http://127.0.0.1:{port}", batch=100))
    try:
        assert _wait(lambda: _count(db_url)[0] > 500, 60)
        c.kill()  # mid-stream: a transaction may be half done
        killed_at = _count(db_url)[0]
        time.sleep(0.5)
        c = Collector(db_url, port).start()
        assert _wait(lambda: _count(db_url)[0] == n, 90), (killed_at, _count(db_url))
    finally:
        client.terminate()
        client.wait()
        c.stop()
    assert _count(db_url) == (n, n)


def test_export_and_stats_after_sync(collector, db_url, tmp_path, cli):
    token = add_device(Database(db_url), "pi-2")
    (tmp_path / "pi-2.token").write_text(token)
    store = LogStore(tmp_path / "pi-2.db")
    rid = store.append({"input": np.full((1, 4), 2.0, np.float32)}, {"logits": np.eye(1, 3, dtype=np.float32)}, "digits")
    store.append({"input": np.zeros((1, 4), np.float32)}, {"logits": np.eye(1, 3, dtype=np.float32)}, "digits")
    store.feedback(rid, label=7)
    from edgekit.sync import SyncClient

    SyncClient(store, f"http://127.0.0.1:{collector.port}", token).drain()
    out = tmp_path / "data.npz"
    result = cli("collector", "export", "--db", db_url, "--model", "digits", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    data = np.load(out)
    assert data["inputs/input"].shape == (2, 4) and sorted(data["label"].tolist()) == ["", "7"]
    stats = json.loads(cli("collector", "stats", "--db", db_url, "--json").output)
    device = next(d for d in stats["devices"] if d["device"] == "pi-2")
    assert device["records"] == 2 and device["feedback_rate"] == 0.5
