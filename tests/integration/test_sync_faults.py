"""Device log shipping with real processes: kills, outages, bad requests. Nothing lost, nothing twice.

SQLite always; PostgreSQL through the shared ``db_url`` fixture (skipped with the reason locally
when no server is configured, a failure in CI).
"""

import gzip
import json
import re
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

from edgekit.collector.db import SCHEMA_VERSION, Database, add_device, revoke_device
from edgekit.errors import EdgekitError
from edgekit.sync.store import LogStore

from _services import Collector, free_port as _free_port

pytestmark = pytest.mark.integration


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


def _sync(config, once=False, log=None, **kw):
    cmd = [sys.executable, "-m", "edgekit", "sync", "run", "--config", str(config)] + (["--once"] if once else [])
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log or subprocess.DEVNULL, **kw)


def _wait(cond, timeout=180.0):
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
    try:  # a safety net, not an assertion: on a busy machine the 200 MB gzip bomb takes a while to refuse
        with urllib.request.urlopen(req, timeout=300) as r:
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
    assert status == 400 and "records[0].id: expected an integer" in error["error"]
    assert _post(port, token, b"{not json", key="k3")[0] == 400
    assert _post(port, token, b"\x1f\x8b garbage", key="k4", gzipped=True)[0] == 400
    huge = json.dumps({"records": [dict(RECORD, time=10**400)]}).encode()  # no float holds it: it was a 500
    status, error, _ = _post(port, token, huge, key="k6")
    assert status == 400 and "records[0].time: expected a finite number" in error["error"]
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
        self.held_bodies: list[bytes] = []  # the batches whose acknowledgement was held back
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
            self.held_bodies.append(body)
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
    held = {r["request_id"] for body in proxy.held_bodies for r in json.loads(gzip.decompress(body))["records"]}
    assert len(held) == 200
    db = Database(db_url)
    with db.connect() as tx:
        stored = {r[0] for r in tx.all("SELECT request_id FROM records")}
    assert held <= stored  # the collector has the batch...
    store = LogStore(tmp_path / "pi-1.db")
    unshipped = {r[0] for r in store.db.execute("SELECT request_id FROM records WHERE shipped = 0")}
    assert held <= unshipped  # ...but the device never heard so, and still holds it as unshipped
    store.close()
    done = _sync(_config(tmp_path, f"http://127.0.0.1:{collector.port}"), once=True)
    assert done.wait(120) == 0
    assert _count(db_url) == (n, n)  # every record once; the resent batch was deduplicated
    with db.connect() as tx:
        stored = {r[0] for r in tx.all("SELECT request_id FROM records")}
    assert stored == set(ids)
    assert LogStore(tmp_path / "pi-1.db").stats()["pending"] == 0


def test_collector_down_then_back_drains_the_backlog(db_url, tmp_path):
    n = 1500
    port = _free_port()
    _device(tmp_path, db_url, n)
    log = open(tmp_path / "client.log", "w")
    client = _sync(_config(tmp_path, f"http://127.0.0.1:{port}", batch=250), log=log)
    try:
        assert _wait(lambda: (tmp_path / "client.log").read_text().count("retrying in") >= 4, 60)
        assert _count(db_url)[0] == 0
        c = Collector(db_url, port).start()
        try:
            assert _wait(lambda: _count(db_url)[0] == n, 60)
        finally:
            c.stop()
    finally:
        client.terminate()
        client.wait()
        log.close()
    text = (tmp_path / "client.log").read_text()
    assert "cannot reach the collector" in text  # it really failed...
    delays = [float(x) for x in re.findall(r"retrying in ([0-9.]+)s", text)]
    # ...and backed off: base 0.05 s with +-50% jitter, so a 4th delay of 0.2 s or more means it grew
    assert len(delays) >= 4 and max(delays) >= 0.2 and max(delays) <= 0.5 * 1.5  # capped by backoff_max_s
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
    assert data["input"].shape == (2, 4) and sorted(data["labels"].tolist()) == [-1, 7]
    assert data["labelled"].tolist() == [True, False]
    stats = json.loads(cli("collector", "stats", "--db", db_url, "--json").output)
    device = next(d for d in stats["devices"] if d["device"] == "pi-2")
    assert device["records"] == 2 and device["feedback_rate"] == 0.5


# --- defects from the outside probe (issue 10) -----------------------------------------------

def _batch(records=(), feedback=(), store="s1", version=2):
    return json.dumps({"schema_version": version, "store": store, "records": list(records),
                       "feedback": list(feedback)}).encode()


def test_a_reinstalled_device_is_not_a_duplicate(collector, db_url, tmp_path):
    from edgekit.sync import SyncClient

    token = add_device(Database(db_url), "pi-1")
    x, y = {"input": np.ones((1, 8), np.float32)}, {"logits": np.ones((1, 3), np.float32)}
    shipped = []
    for life in range(2):  # the second life is a fresh log.db whose ids restart at 1
        store = LogStore(tmp_path / f"life{life}.db")
        shipped += [store.append(x, y, "m") for _ in range(300)]
        assert SyncClient(store, f"http://127.0.0.1:{collector.port}", token, batch_size=100).drain() == 300
    assert _count(db_url) == (600, 600)


@pytest.mark.parametrize("record, message", [
    ({"id": 2**70}, "records\\[0\\].id: expected an integer <= 9223372036854775807"),
    ({"time": -5}, "records\\[0\\].time: expected a number >= 0"),
    ({"version": {"a": 1}}, "records\\[0\\].version: expected a string"),
    ({"variant": [1]}, "records\\[0\\].variant: expected a string"),
    ({"latency_ms": {"x": 1}}, "records\\[0\\].latency_ms: expected a number"),
    ({"model": "\ud800"}, "not valid UTF-8"),
    ({"outputs": {"y": {"dtype": "evil", "shape": [1], "b64": "AAAA"}}}, "outputs.y.dtype: expected one of 'float32'"),
    ({"outputs": {"y": {"dtype": "float32", "shape": [1, 3], "b64": "AAAA"}}}, "outputs.y: b64 must be the base64 of 12 bytes"),
])
def test_malformed_records_get_400_and_the_server_keeps_serving(collector, db_url, record, message):
    token = add_device(Database(db_url), "pi-1")
    body = _batch([dict(RECORD, **record)])
    status, error, _ = _post(collector.port, token, body, key="bad")
    assert status == 400 and re.search(message, error["error"]), error
    assert _post(collector.port, token, _batch([RECORD]), key="good")[0] == 200
    assert _count(db_url) == (1, 1)


@pytest.mark.parametrize("raw, message", [
    (b'{"records": [{"id": 1, "request_id": "r", "time": NaN, "model": "m", "outputs": {}}]}', "NaN is not a JSON number"),
    (b'{"records": [{"id": 1, "request_id": "r", "time": Infinity, "model": "m", "outputs": {}}]}', "Infinity"),
    (b'{"records": [{"id": 1, "request_id": "r", "time": 1e400, "model": "m", "outputs": {}}]}',
     "records[0].time: expected a finite number"),
    (b'{"records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "records[0]: expected a table"),
    (b'{"feedback": [{"id": 1, "request_id": "r", "time": 1.0, "outcome": {"a": 1}}]}', "feedback[0].outcome: expected a string"),
    (b'{"feedback": [{"id": 1, "request_id": "r", "time": 1.0, "label": {"deep": [1]}}]}', "feedback[0].label: expected a scalar or a list of scalars"),
])
def test_hostile_json_gets_400(collector, db_url, raw, message):
    token = add_device(Database(db_url), "pi-1")
    status, error, _ = _post(collector.port, token, raw, key="k")
    assert status == 400 and message in error["error"], error


def test_idempotency_keys_are_per_device(collector, db_url):
    a, b = add_device(Database(db_url), "pi-a"), add_device(Database(db_url), "pi-b")
    assert _post(collector.port, a, _batch([RECORD]), key="same")[0] == 200
    status, result, headers = _post(collector.port, b, _batch([RECORD]), key="same")
    assert status == 200 and result["accepted"] == 1 and "idempotent-replayed" not in headers
    assert _count(db_url)[0] == 2


def test_concurrent_identical_retries_store_once(collector, db_url):
    token = add_device(Database(db_url), "pi-1")
    body = _batch([dict(RECORD, id=i, request_id=f"r{i}") for i in range(200)])
    results = []

    def send():
        results.append(_post(collector.port, token, body, key="race"))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r[0] for r in results] == [200] * 8
    assert sum(1 for r in results if "idempotent-replayed" not in r[2]) == 1
    assert all(r[1] == {"accepted": 200, "duplicates": 0, "feedback_accepted": 0, "feedback_duplicates": 0}
               for r in results)
    assert _count(db_url) == (200, 200)


def test_oversized_record_goes_to_dead_letter_and_the_rest_ships(db_url, tmp_path):
    c = Collector(db_url, _free_port(), extra=("--max-batch-mb", "1")).start()
    try:
        token = add_device(Database(db_url), "pi-1")
        (tmp_path / "pi-1.token").write_text(token)
        store = LogStore(tmp_path / "pi-1.db")
        small = {"input": np.ones((1, 8), np.float32)}
        rng = np.random.default_rng(0)
        ids = [store.append(small, {"y": np.ones((1, 2), np.float32)}, "m") for _ in range(30)]
        big = store.append({"input": rng.standard_normal((1, 400_000)).astype(np.float32)},
                           {"y": np.ones((1, 2), np.float32)}, "m")
        ids += [store.append(small, {"y": np.ones((1, 2), np.float32)}, "m") for _ in range(30)]
        store.close()
        done = _sync(_config(tmp_path, f"http://127.0.0.1:{c.port}", batch=50), once=True)
        assert done.wait(120) == 0
    finally:
        c.stop()
    assert _count(db_url) == (60, 60)
    stats = json.loads(subprocess.run([sys.executable, "-m", "edgekit", "sync", "status", "--config",
                                       str(_config(tmp_path, "http://127.0.0.1:1")), "--json"],
                                      capture_output=True, text=True, check=True).stdout)
    assert stats["dead_letter"] == 1 and stats["pending"] == 0
    dead = LogStore(tmp_path / "pi-1.db").db.execute("SELECT request_id, reason FROM dead_letter").fetchone()
    assert dead[0] == big and "413" in dead[1]


def test_once_gives_up_when_the_collector_is_down(db_url, tmp_path):
    _device(tmp_path, db_url, 10)
    config = _config(tmp_path, f"http://127.0.0.1:{_free_port()}")
    out = subprocess.run([sys.executable, "-m", "edgekit", "sync", "run", "--config", str(config), "--once",
                          "--timeout", "2"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "gave up after 2 s: cannot reach the collector" in out.stderr
    assert LogStore(tmp_path / "pi-1.db").stats()["pending"] == 10  # kept for the next run


def test_once_reports_a_revoked_token_at_once(collector, db_url, tmp_path):
    _device(tmp_path, db_url, 10)
    revoke_device(Database(db_url), "pi-1")
    config = _config(tmp_path, f"http://127.0.0.1:{collector.port}")
    out = subprocess.run([sys.executable, "-m", "edgekit", "sync", "run", "--config", str(config), "--once",
                          "--timeout", "3600"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and "refused this device's token (401" in out.stderr
    assert "retrying in" not in out.stderr  # reported at once, never retried


def test_revoked_device_can_be_added_again_through_the_cli(collector, db_url, cli):
    old = cli("collector", "add-device", "pi-9", "--db", db_url).output.strip()
    assert cli("collector", "add-device", "pi-9", "--db", db_url).exit_code == 1  # taken while active
    assert cli("collector", "revoke-device", "pi-9", "--db", db_url).exit_code == 0
    assert _post(collector.port, old, _batch([RECORD]), key="k1")[0] == 401
    new = cli("collector", "add-device", "pi-9", "--db", db_url)
    assert new.exit_code == 0, new.output
    assert _post(collector.port, new.output.strip(), _batch([RECORD]), key="k1")[0] == 200
    assert _post(collector.port, old, _batch([RECORD]), key="k2")[0] == 401  # the old token stays dead
    assert cli("collector", "revoke-device", "nobody", "--db", db_url).exit_code == 1


def test_a_token_file_is_private_and_never_overwritten(collector, db_url, cli, tmp_path):
    """`add-device --token-file`: the token lands in a new file only its owner reads (a shell
    redirect leaves it readable by all, and empties it when the name is refused); an existing file
    is refused before the device is registered, so no token is lost."""
    import os
    import stat

    path = tmp_path / "pi-7.token"
    made = cli("collector", "add-device", "pi-7", "--token-file", path, "--db", db_url)
    assert made.exit_code == 0 and "pi-7.token" in made.output, made.output
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and path.read_text().strip() not in made.output
    assert _post(collector.port, path.read_text().strip(), _batch([RECORD]), key="k1")[0] == 200
    taken = tmp_path / "mine.txt"
    taken.write_text("not edgekit's")
    refused = cli("collector", "add-device", "pi-8", "--token-file", taken, "--db", db_url)
    assert refused.exit_code == 1 and "already exists" in refused.output
    assert taken.read_text() == "not edgekit's"
    with Database(db_url).read() as tx:  # refused before registering: pi-8 is still free
        assert tx.one("SELECT 1 FROM devices WHERE name = 'pi-8'") is None
    again = cli("collector", "add-device", "pi-7", "--token-file", tmp_path / "again.token", "--db", db_url)
    assert again.exit_code == 1 and not (tmp_path / "again.token").exists()  # a taken name writes nothing


def _insert_raw(db_url, **columns):
    row = {"device": "pi-1", "store": "s", "record_id": 99, "request_id": "bad", "time": 5.0, "model": "m",
           "outputs": json.dumps({"y": {"dtype": "float32", "shape": [1, 1], "b64": "AACAPw=="}}),
           "inputs": json.dumps({"input": {"dtype": "float32", "shape": [1, 1], "b64": "AACAPw=="}}),
           "received": 1.0, **columns}
    with Database(db_url).connect() as tx:
        tx.execute(f"INSERT INTO records ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))


def test_a_bad_stored_row_does_not_break_stats_or_export(collector, db_url, tmp_path, cli):
    token = add_device(Database(db_url), "pi-1")
    good = dict(RECORD, inputs={"input": {"dtype": "float32", "shape": [1, 1], "b64": "AACAPw=="}},
                outputs={"y": {"dtype": "float32", "shape": [1, 1], "b64": "AACAPw=="}})
    assert _post(collector.port, token, _batch([good]), key="k")[0] == 200
    _insert_raw(db_url, record_id=7, request_id="inf", time=float("inf"))  # written by an older collector
    _insert_raw(db_url, record_id=8, request_id="evil",
                inputs=json.dumps({"input": {"dtype": "evil", "shape": [1], "b64": "AA=="}}))
    stats = cli("collector", "stats", "--db", db_url, "--json")
    assert stats.exit_code == 0 and "Infinity" not in stats.output
    assert json.loads(stats.output)["invalid_rows"] == 1
    assert cli("collector", "stats", "--db", db_url).exit_code == 0
    result = cli("collector", "export", "--db", db_url, "--out", tmp_path / "d.npz", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["records"] == 1 and info["skipped"] == 2


def test_export_gives_one_label_per_row_of_a_batch_prediction(collector, db_url, tmp_path, cli):
    from edgekit.sync import SyncClient

    token = add_device(Database(db_url), "pi-1")
    store = LogStore(tmp_path / "log.db")
    batch = store.append({"input": np.arange(12, dtype=np.float32).reshape(3, 4)},
                         {"y": np.zeros((3, 2), np.float32)}, "m")
    single = store.append({"input": np.ones((1, 4), np.float32)}, {"y": np.zeros((1, 2), np.float32)}, "m")
    unplaced = store.append({"input": np.ones((2, 4), np.float32)}, {"y": np.zeros((2, 2), np.float32)}, "m")
    store.feedback(batch, label=[4, 5, 6])
    store.feedback(single, label=9)
    with pytest.raises(EdgekitError, match="must be a list of 2"):
        store.feedback(unplaced, label=1)  # one label for two rows: refused where it is given
    # an older device stored such a label: the export still cannot place it, and says so
    with store._tx():
        store.db.execute("INSERT INTO feedback (request_id, time, label, outcome, size) VALUES (?,?,?,?,?)",
                         (unplaced, time.time(), "1", None, 40))
        store.db.execute("UPDATE records SET hold_until = 0 WHERE request_id = ?", (unplaced,))
    SyncClient(store, f"http://127.0.0.1:{collector.port}", token).drain()
    info = json.loads(cli("collector", "export", "--db", db_url, "--out", tmp_path / "d.npz", "--json").output)
    data = np.load(tmp_path / "d.npz")
    assert len(data["input"]) == len(data["labels"]) == len(data["outputs/y"]) == 6
    assert data["labels"].tolist() == [4, 5, 6, 9, -1, -1]
    assert data["row"].tolist() == [0, 1, 2, 0, 0, 1]
    assert info["labels_unplaced"] == 1 and info["rows"] == 6 and info["records"] == 3


def test_export_refuses_records_of_different_inputs(collector, db_url, tmp_path, cli):
    from edgekit.sync import SyncClient

    token = add_device(Database(db_url), "pi-1")
    store = LogStore(tmp_path / "log.db")
    store.append({"input": np.ones((1, 4), np.float32)}, {"y": np.zeros((1, 2), np.float32)}, "m", version="1")
    store.append({"pixels": np.ones((1, 4), np.float32)}, {"y": np.zeros((1, 2), np.float32)}, "m", version="2")
    SyncClient(store, f"http://127.0.0.1:{collector.port}", token).drain()
    result = cli("collector", "export", "--db", db_url, "--out", tmp_path / "d.npz")
    assert result.exit_code == 1 and "records of different shapes" in result.output and "--version" in result.output
    assert not (tmp_path / "d.npz").exists()
    ok = cli("collector", "export", "--db", db_url, "--version", "2", "--out", tmp_path / "d.npz", "--json")
    assert ok.exit_code == 0 and list(np.load(tmp_path / "d.npz")["pixels"].shape) == [1, 4]


def test_a_first_release_collector_database_is_migrated(tmp_path):
    import sqlite3

    from edgekit.monitor.rollups import record_sums

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE devices (name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,
           revoked INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, last_seen REAL);
        CREATE TABLE batches (idempotency_key TEXT PRIMARY KEY, device TEXT NOT NULL,
           payload_hash TEXT NOT NULL, result TEXT NOT NULL, received REAL NOT NULL);
        CREATE TABLE records (device TEXT NOT NULL, record_id BIGINT NOT NULL,
           request_id TEXT NOT NULL, time REAL NOT NULL, model TEXT NOT NULL, version TEXT, variant TEXT,
           latency_ms REAL, fallbacks TEXT, outputs TEXT, inputs TEXT, summary TEXT, received REAL NOT NULL,
           PRIMARY KEY (device, record_id));
        CREATE INDEX records_time ON records (model, time);
        CREATE TABLE feedback (device TEXT NOT NULL, feedback_id BIGINT NOT NULL,
           request_id TEXT NOT NULL, time REAL NOT NULL, label TEXT, outcome TEXT, received REAL NOT NULL,
           PRIMARY KEY (device, feedback_id));
        INSERT INTO records VALUES ('pi-1', 1, 'r1', 1.0, 'm', '', '', 1.0, '[]', '{}', NULL, NULL, 1.0);
        INSERT INTO feedback VALUES ('pi-1', 1, 'r1', 2.0, '3', NULL, 2.0);
    """)
    old.commit()
    old.close()
    db = Database(f"sqlite:///{path}")
    with db.connect() as tx:
        assert tx.all("SELECT device, store, record_id, request_id FROM records") == [("pi-1", "", 1, "r1")]
        assert tx.one("SELECT COUNT(*) FROM feedback")[0] == 1
        assert tx.all("SELECT model, device FROM model_devices") == [("m", "pi-1")]  # monitoring's device list
        # its hours are read from the records until rolled up (whole hours come from rollups otherwise)
        assert tx.all("SELECT model, hour, device FROM rollup_dirty") == [("m", 0, "pi-1")]
        assert [r[2] for r in record_sums(tx, "m", 0.0, 3 * 3600.0, -1.0)] == [1]
        tx.execute("INSERT INTO records (device, store, record_id, request_id, time, model, received) "
                   "VALUES ('pi-1', 'new-store', 1, 'r2', 1.0, 'm', 1.0)")  # same id, new store: allowed
        assert tx.one("SELECT value FROM collector_meta WHERE key = 'schema_version'")[0] == str(SCHEMA_VERSION)
    Database(f"sqlite:///{path}")  # opening again is a no-op


def test_collector_db_that_is_a_directory_or_not_sqlite(tmp_path, cli):
    result = cli("collector", "stats", "--db", f"sqlite:///{tmp_path}")
    assert result.exit_code == 1 and "is a directory" in result.output
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite" * 100)
    result = cli("collector", "stats", "--db", f"sqlite:///{junk}")
    assert result.exit_code == 1 and "is not a SQLite database" in result.output
    assert junk.read_bytes() == b"not sqlite" * 100  # untouched


def _private_ca(tmp_path):
    """A CA and a certificate it signed for 127.0.0.1: what a fleet behind a private PKI has."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("edgekit test CA")).issuer_name(name("edgekit test CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False).sign(ca_key, hashes.SHA256()))
    paths = {k: tmp_path / f"{k}.pem" for k in ("ca", "cert", "key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


def test_https_with_a_private_ca(tmp_path):
    pytest.importorskip("cryptography")
    from edgekit.sync import SyncClient
    from edgekit.sync.client import SyncError

    pki = _private_ca(tmp_path)
    db_url = f"sqlite:///{tmp_path / 'collector.db'}"
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "collector", "serve", "--db", db_url, "--port", str(port),
                             "--ssl-certfile", str(pki["cert"]), "--ssl-keyfile", str(pki["key"])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import ssl

        context = ssl.create_default_context(cafile=str(pki["ca"]))
        assert _wait(lambda: _https_up(port, context), 30)
        token, _ = _device(tmp_path, db_url, 20)
        store = LogStore(tmp_path / "pi-1.db")
        url = f"https://127.0.0.1:{port}"
        with pytest.raises(SyncError, match="CERTIFICATE_VERIFY_FAILED"):
            SyncClient(store, url, token).ship_once()  # the system CAs do not know this one
        assert _count(db_url) == (0, 0) and store.stats()["pending"] == 20
        assert SyncClient(store, url, token, ca_file=str(pki["ca"])).drain() == 20
        assert _count(db_url) == (20, 20)
    finally:
        proc.terminate()
        proc.wait()


def _https_up(port, context) -> bool:
    try:
        urllib.request.urlopen(f"https://127.0.0.1:{port}/v1/health", timeout=1, context=context)
        return True
    except OSError:
        return False


def test_client_halves_batches_on_413_until_they_fit(db_url, tmp_path):
    from edgekit.sync import SyncClient

    c = Collector(db_url, _free_port(), extra=("--max-batch-mb", "1")).start()
    try:
        token = add_device(Database(db_url), "pi-1")
        store = LogStore(tmp_path / "pi-1.db")
        rng = np.random.default_rng(0)
        for _ in range(40):  # ~110 kB each once compressed: 40 of them are far over 1 MB
            store.append({"input": rng.standard_normal((1, 25_000)).astype(np.float32)},
                         {"y": np.ones((1, 2), np.float32)}, "m")
        client = SyncClient(store, f"http://127.0.0.1:{c.port}", token, batch_size=40)
        sizes = []
        real_post = client._post

        def post(records, feedback):
            sizes.append(len(records))
            return real_post(records, feedback)

        client._post = post
        assert client.drain() == 40
    finally:
        c.stop()
    assert sizes[:3] == [40, 20, 10] and max(sizes[3:]) <= 10  # halved on each 413, then shipped
    assert client.dead_lettered == 0 and _count(db_url) == (40, 40)


V2_SCHEMA = """
CREATE TABLE collector_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO collector_meta VALUES ('schema_version', '2');
CREATE TABLE devices (name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,
   revoked INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, last_seen REAL);
CREATE TABLE batches (device TEXT NOT NULL, idempotency_key TEXT NOT NULL,
   payload_hash TEXT NOT NULL, result TEXT NOT NULL, received REAL NOT NULL, PRIMARY KEY (device, idempotency_key));
CREATE TABLE records (device TEXT NOT NULL, store TEXT NOT NULL DEFAULT '',
   record_id BIGINT NOT NULL, request_id TEXT NOT NULL, time REAL NOT NULL, model TEXT NOT NULL, version TEXT,
   variant TEXT, latency_ms REAL, fallbacks TEXT, outputs TEXT, inputs TEXT, summary TEXT,
   cached INTEGER NOT NULL DEFAULT 0, received REAL NOT NULL, PRIMARY KEY (device, store, record_id));
CREATE TABLE feedback (device TEXT NOT NULL, store TEXT NOT NULL DEFAULT '',
   feedback_id BIGINT NOT NULL, request_id TEXT NOT NULL, time REAL NOT NULL, label TEXT, outcome TEXT,
   received REAL NOT NULL, PRIMARY KEY (device, store, feedback_id));
"""


def _old_schema(url: str, script: str):
    """A connection to ``url`` with ``script`` (an older edgekit's tables) run in it."""
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
        conn.executescript(script)
        return conn
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    for statement in filter(str.strip, script.split(";")):
        conn.execute(statement)
    return conn


def test_a_version_2_database_gains_monitoring_signals_for_its_history(db_url):
    """Records stored before monitoring existed get their signals and sketches on upgrade; times
    stay exact on PostgreSQL (version 2's REAL is 4 bytes there: an epoch time rounded to 128 s
    put fresh records outside the monitoring window)."""
    from edgekit.sync.record import encode_array

    old = _old_schema(db_url, V2_SCHEMA)
    mark = "?" if db_url.startswith("sqlite") else "%s"
    old.execute("INSERT INTO devices VALUES ('pi-1', 'h', 0, 1.0, 1.0)")
    for i in range(3):
        outputs = json.dumps({"logits": encode_array(np.eye(1, 4, i, dtype=np.float32) * 5)})
        inputs = json.dumps({"input": encode_array(np.full((1, 4), i, np.float32))})
        old.execute("INSERT INTO records VALUES ('pi-1', 's', {0}, {0}, {0}, 'm', '1', 'v', 2.5, '[]', {0}, {0}, "
                    "NULL, 0, {0})".format(mark), (i + 1, f"r{i}", 7200.0 + i, outputs, inputs, 7300.0))
    old.close()
    db = Database(db_url)
    exact = 1_800_000_000.123
    with db.connect() as tx:
        assert tx.one("SELECT value FROM collector_meta WHERE key = 'schema_version'")[0] == str(SCHEMA_VERSION)
        rows = tx.all("SELECT top_class, rows, has_fallback FROM records ORDER BY record_id")
        assert rows == [(0, 1, 0), (1, 1, 0), (2, 1, 0)]
        hashes = [r[0] for r in tx.all("SELECT in_hash FROM records ORDER BY record_id")]  # version 4
        assert None not in hashes and len(set(hashes)) == 3
        classes = tx.all("SELECT bucket, n FROM sketches WHERE feature = 'out.class' ORDER BY bucket")
        assert classes == [(0, 1), (1, 1), (2, 1)]
        assert tx.one("SELECT SUM(n) FROM sketches WHERE feature = 'sys.latency_ms' AND hour = 7200")[0] == 3
        assert tx.one("SELECT grp FROM devices")[0] == ""
        tx.execute("INSERT INTO records (device, store, record_id, request_id, time, model, received) "
                   "VALUES ('pi-1', 's', 9, 'r9', ?, 'm', ?)", (exact, exact))
        tx.execute("UPDATE devices SET last_seen = ?", (exact,))
        assert tx.one("SELECT time, received FROM records WHERE record_id = 9") == (exact, exact)
        assert tx.one("SELECT last_seen FROM devices")[0] == exact
    Database(db_url)  # opening again is a no-op


def test_a_version_3_database_gains_the_input_hash_column(db_url):
    """Version 4 adds records.in_hash and rebuilds the monitoring index with it; old rows keep NULL
    (each counts as a different input) and new ones get it."""
    db = Database(db_url)
    with db.connect() as tx:  # made back into version 3
        tx.execute("DROP INDEX records_monitor")
        tx.execute("ALTER TABLE records DROP COLUMN in_hash")
        tx.execute("UPDATE collector_meta SET value = '3' WHERE key = 'schema_version'")
    db = Database(db_url)
    with db.connect() as tx:
        assert tx.one("SELECT value FROM collector_meta WHERE key = 'schema_version'")[0] == str(SCHEMA_VERSION)
        assert tx.one("SELECT COUNT(in_hash) FROM records")[0] == 0
    from tests.conftest import ingest_predictions

    ingest_predictions(db, "pi-1", "m", "1", 3, labels=[None] * 3)  # inputs shipped: hashed on arrival
    with db.read() as tx:
        assert tx.one("SELECT COUNT(DISTINCT in_hash) FROM records")[0] == 3


def test_an_incremental_parquet_export_adds_only_what_arrived_since_its_last_run(db_url, tmp_path, monkeypatch, cli):
    """`collector export --format parquet --incremental`: the first run makes the lake, each later
    run adds the records received since as new part files (none twice, none missed), a run with
    nothing new adds nothing, and a folder edgekit did not make is refused untouched."""
    import duckdb

    from edgekit.collector import export as export_mod
    from tests.conftest import ingest_predictions

    monkeypatch.setattr(export_mod, "SETTLE_S", 0.0)  # the test's batches are committed when it exports
    db, lake = Database(db_url), tmp_path / "lake"

    def count():
        return duckdb.sql(f"SELECT count(*), count(DISTINCT request_id) FROM read_parquet('{lake}/**/*.parquet', "
                          "hive_partitioning = true)").fetchall()[0]

    ingest_predictions(db, "pi-1", "m", "1", 50, labels=[1] * 50)
    first = export_mod.export(db, lake, model="m", fmt="parquet", incremental=True)
    assert first["records"] == 50 and first["run"] == 0 and count() == (50, 50)
    time.sleep(0.05)  # later arrivals: received after the first run's watermark
    ingest_predictions(db, "pi-1", "m", "1", 30, start_id=51, labels=[2] * 30)
    ingest_predictions(db, "pi-2", "m", "1", 20, labels=[0] * 20)
    second = export_mod.export(db, lake, model="m", fmt="parquet", incremental=True)
    assert second["records"] == 50 and second["run"] == 1 and count() == (100, 100)
    assert len(list(lake.glob("model=m/date=*/part-1.parquet"))) >= 1 and list(lake.glob("model=m/date=*/part-0.parquet"))
    result = cli("collector", "export", "--db", db_url, "--model", "m", "--format", "parquet", "--incremental",
                 "--out", lake)
    assert result.exit_code == 0 and "nothing new" in result.output and count() == (100, 100)
    other = cli("collector", "export", "--db", db_url, "--model", "other", "--format", "parquet", "--incremental",
                "--out", lake)
    assert other.exit_code != 0 and "was exported with" in other.output  # a lake keeps its filters
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused = cli("collector", "export", "--db", db_url, "--format", "parquet", "--incremental", "--out", mine)
    assert refused.exit_code != 0 and "not a lake" in refused.output
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_history_is_partitioned_by_day_on_postgresql_and_pruned_by_retention(db_url, tmp_path, cli):
    """A new PostgreSQL collector database keeps records in one partition per UTC day (a window's
    query reads its days only); `collector prune --older-than` drops whole old days there, and
    deletes old rows on SQLite; newer records, and the hourly sketches, stay. A record sent again
    after its day was created is still stored once."""
    from tests.conftest import ingest_predictions

    db = Database(db_url)
    now = time.time()
    for days_ago in (5, 3, 1, 0):
        ingest_predictions(db, f"pi-{days_ago}", "m", "1", 40, time_s=now - days_ago * 86400, labels=[1] * 40)
    ingest_predictions(db, "pi-0", "m", "1", 40, time_s=now, labels=[1] * 40)  # the same batch again: no new rows
    with db.read() as tx:
        assert tx.one("SELECT COUNT(*) FROM records")[0] == 160
        sketched = tx.one("SELECT SUM(n) FROM sketches WHERE feature = 'sys.latency_ms'")[0]
        parts = {r[0] for r in tx.all("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                      "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'records' AND "
                                      "p.relnamespace = to_regnamespace(current_schema())")} \
            if db.kind == "postgresql" else set()
    if db.kind == "postgresql":
        assert db.partitioned and len(parts) == 5  # four days and the default partition for stray clocks
    result = cli("collector", "prune", "--db", db_url, "--older-than", "2d", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    with db.read() as tx:
        left = {r[0] for r in tx.all("SELECT device FROM records")}
        assert tx.one("SELECT SUM(n) FROM sketches WHERE feature = 'sys.latency_ms'")[0] == sketched
        assert tx.one("SELECT COUNT(*) FROM feedback WHERE time < ?", (now - 3 * 86400 + 1,))[0] == 0
    assert left == {"pi-1", "pi-0"} and info["records_deleted"] == 80
    assert info["partitioned"] == (db.kind == "postgresql")
    if info["partitioned"]:
        assert len(info["partitions_dropped"]) == 2


def test_an_older_postgresql_database_is_partitioned_in_place(db_url, cli):
    """`collector partition` turns an older database's one records table into the partition of
    everything before tomorrow, copying no row: the history stays, a record sent again is still
    stored once, tomorrow's records get a day of their own, and prune deletes the old table's
    rows past the retention. SQLite is refused in one line."""
    from edgekit._sql import SqlDatabase
    from edgekit.collector.db import TABLES
    from tests.conftest import ingest_predictions

    if not db_url.startswith("postgresql"):
        Database(db_url)
        refused = cli("collector", "partition", "--db", db_url)
        assert refused.exit_code != 0 and "only a PostgreSQL collector database" in refused.output
        return
    with SqlDatabase(db_url).connect() as tx:  # what a collector made before partitioning left
        tx.execute("CREATE TABLE collector_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        tx.execute("INSERT INTO collector_meta (key, value) VALUES ('schema_version', '5')")
        tx.execute(TABLES["records"])
    db = Database(db_url)
    assert not db.partitioned
    now = time.time()
    for days_ago in (5, 3, 1, 0):
        ingest_predictions(db, f"pi-{days_ago}", "m", "1", 40, time_s=now - days_ago * 86400, labels=[1] * 40)
    result = cli("collector", "partition", "--db", db_url, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["converted"] and info["records"] == 160
    db = Database(db_url)
    assert db.partitioned
    ingest_predictions(db, "pi-0", "m", "1", 40, time_s=now, labels=[1] * 40)  # sent again: stored once
    ingest_predictions(db, "pi-next", "m", "1", 10, time_s=info["legacy_until"] + 3600)
    with db.read() as tx:
        assert tx.one("SELECT COUNT(*) FROM records")[0] == 170
        assert tx.one("SELECT COUNT(*) FROM records_legacy")[0] == 160
        day = tx.one("SELECT tableoid::regclass::text FROM records WHERE device = 'pi-next' LIMIT 1")[0]
    assert day.startswith("records_d")  # a day partition of its own, not the default one
    again = cli("collector", "partition", "--db", db_url)
    assert again.exit_code == 0 and "already partitioned" in again.output
    pruned = json.loads(cli("collector", "prune", "--db", db_url, "--older-than", "2d", "--json").stdout)
    assert pruned["records_deleted"] == 80
    with db.read() as tx:
        assert {r[0] for r in tx.all("SELECT DISTINCT device FROM records")} == {"pi-1", "pi-0", "pi-next"}
        assert tx.one("SELECT COUNT(*) FROM feedback WHERE time < ?", (now - 3 * 86400 + 1,))[0] == 0
