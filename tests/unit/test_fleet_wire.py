"""Fleet updates against a collector that is wrong or hostile: every field of an assignment is
checked before it touches the device's disk, the updater thread survives anything it is sent, and
a download stops at its announced size. A real Updater against a real HTTP server."""

import hashlib
import http.server
import json
import threading
import time

import pytest

from edgekit.errors import EdgekitError
from edgekit.sync.fleet import Assignment, DeviceState, WireError
from edgekit.sync.updates import Updater
from tests.unit.test_runtime import opt_dir  # noqa: F401  (the tiny bundle fixture)

SHA = "a" * 64
RELEASE = {"model": "tiny", "version": "2", "sha256": SHA, "size": 100}
GOOD = {**RELEASE, "rollout": "canary", "canary": True, "shadow": None}


@pytest.mark.parametrize("change, message", [
    ({"sha256": "../../escape/pwned"}, "sha256 must be 64 lowercase hex digits"),
    ({"shadow": {**RELEASE, "sha256": "../../x"}}, "assignment.shadow: sha256"),
    ({"size": -1}, "size must be a positive byte count"),
    ({"size": "abc"}, "assignment.size: expected an integer"),
    ({"size": None}, "size must be a positive byte count"),
    ({"version": ""}, "is not a name"),
    ({"version": "1\n2"}, "is not a name"),
    ({"version": "../v"}, "is not a name"),
])
def test_a_malformed_assignment_is_refused_with_the_field(change, message):
    with pytest.raises(WireError, match=message.replace(".", r"\.")):
        Assignment.parse(json.dumps({**GOOD, **change}))


@pytest.mark.parametrize("body", [b"[1, 2]", b"<html><body>proxy error</body></html>", b"{", b"null"])
def test_what_is_not_an_assignment_is_refused(body):
    with pytest.raises(WireError):
        Assignment.parse(body)


def test_a_good_assignment_and_none_parse():
    assert Assignment.parse(json.dumps(GOOD)).release.sha256 == SHA
    assert Assignment.parse(json.dumps({"model": "tiny", "version": None, "rollout": None})).release is None


@pytest.mark.parametrize("report, message", [
    ({"model": "m", "version": "2", "state": "gone"}, "state must be one of"),
    ({"model": "m", "version": {"a": 1}, "state": "failed"}, "expected a string"),
    ({"model": "m" * 300, "version": "2", "state": "failed"}, "model must be 1-200"),
    ({"model": "m", "version": "2", "state": "failed", "extra": 1}, "unknown key"),
])
def test_device_reports_are_typed(report, message):
    with pytest.raises(WireError, match=message):
        DeviceState.parse(json.dumps(report).encode())
    with pytest.raises(WireError, match="not JSON"):
        DeviceState.parse(b"[" * 10_000)


class _Hostile(http.server.BaseHTTPRequestHandler):
    """A collector that answers what the test sets: an assignment body, and a bundle stream."""

    assignment = b"{}"
    bundle = b""
    reports: list = []

    def do_GET(self):
        body = self.assignment if self.path.startswith("/v1/assignment") else self.bundle
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        _Hostile.reports.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_an_updater_never_writes_outside_its_folder_and_keeps_polling(hostile, tmp_path):
    device = tmp_path / "device"
    updater = Updater(hostile, "token", "tiny", device)
    for body in (json.dumps({**GOOD, "sha256": "../../escape/pwned"}).encode(),
                 json.dumps({**GOOD, "shadow": {**RELEASE, "sha256": "../../escape/shadow"}}).encode(),
                 json.dumps({**GOOD, "size": -1}).encode(), json.dumps({**GOOD, "size": "abc"}).encode(),
                 b"[1]", b"<html>502 Bad Gateway</html>"):
        _Hostile.assignment = body
        with pytest.raises(EdgekitError, match="ignored a malformed assignment"):
            updater.poll_once()
    assert not (tmp_path / "escape").exists() and [p.name for p in (device / "bundles").iterdir()] == []
    updater.start(interval_s=0.05)  # the thread survives a stream of them
    time.sleep(0.5)
    alive = updater._thread.is_alive()
    updater.stop()
    assert alive


def test_a_download_stops_at_its_announced_size(hostile, tmp_path):
    data = b"x" * (3 << 20)
    _Hostile.bundle = data
    _Hostile.assignment = json.dumps({**GOOD, "sha256": hashlib.sha256(data[: 1 << 20]).hexdigest(),
                                      "size": 1 << 20}).encode()
    updater = Updater(hostile, "token", "tiny", tmp_path / "device")
    with pytest.raises(EdgekitError, match="runs past its announced 1,048,576 bytes"):
        updater.poll_once()
    assert updater.fetched <= 1 << 20 and list((tmp_path / "device" / "bundles").iterdir()) == []


@pytest.mark.parametrize("version", ["", " ", "1\n2", "../3", "-1"])
def test_a_release_version_is_a_name(opt_dir, tmp_path, version):  # noqa: F811
    from edgekit.bundle import make_bundle
    from edgekit.collector.db import Database
    from edgekit.collector.releases import publish

    make_bundle(opt_dir, tmp_path / "tiny.ekb", version="1")
    with pytest.raises(EdgekitError, match="is not a name"):
        publish(Database(f"sqlite:///{tmp_path / 'c.db'}"), tmp_path / "store", tmp_path / "tiny.ekb", "tiny", version)
