"""Real service processes the integration tests share: the collector, the model server (and free
ports). Each writes its log to a file, never a pipe (a full pipe blocks a chatty server, and reading
one from a live process blocks the test), and is waited for on its health URL with a generous
deadline: a busy CI machine is slow, and a timeout is a safety net, not an assertion."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc, url: str, timeout_s: float) -> bool:
    """Whether ``url`` answered before ``proc`` exited or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Service:
    """``python -m edgekit ARGS --port PORT`` in its own process, ready once ``health`` answers."""

    health = "/"
    name = "service"

    def __init__(self, args, port=None, env=None):
        self.args, self.port, self.env = [str(a) for a in args], port or free_port(), env
        self.proc = None
        self.log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0):
        self.log = tempfile.NamedTemporaryFile(prefix=f"edgekit-{self.name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekit", *self.args, "--port", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=self.log, env={**os.environ, **(self.env or {})})
        if wait_ready(self.proc, f"{self.url}{self.health}", timeout_s):
            return self
        alive = self.proc.poll() is None
        if alive:
            self.proc.kill()
            self.proc.wait(timeout=30)
        raise RuntimeError(f"the {self.name} {'did not answer ' + self.health + f' in {timeout_s:.0f} s' if alive else 'exited'}"
                           f"; its log ends:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._forget_log()

    def stop(self, timeout_s: float = 60.0):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._forget_log()

    def _forget_log(self):
        if self.log is not None:
            self.log.close()
            os.unlink(self.log.name)
            self.log = None


class Collector(Service):
    """`edgekit collector serve` in its own process."""

    health = "/v1/health"
    name = "collector"

    def __init__(self, db_url, port=None, extra=()):
        super().__init__(["collector", "serve", "--db", db_url, *extra], port)
        self.db_url, self.extra = db_url, extra


class Balancer:
    """Debian's haproxy in front of ``backends`` (ports): round robin, health-checked on
    ``health`` every 0.5 s, a dead backend out of rotation after two failed checks. Requests on a
    connection the backend drops are not retried by haproxy: the client's own retries (the sync
    client's, with the same Idempotency-Key) carry them to a live replica."""

    def __init__(self, backends, health="/v1/health", port=None):
        self.backends, self.health, self.port = list(backends), health, port or free_port()
        self.proc, self.folder = None, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        servers = "\n".join(f"  server r{i} 127.0.0.1:{p} check inter 500ms fall 2 rise 1"
                            for i, p in enumerate(self.backends))
        return (f"global\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 120s\n"
                f"  timeout server 120s\nfrontend collectors\n  bind 127.0.0.1:{self.port}\n  default_backend replicas\n"
                f"backend replicas\n  balance roundrobin\n  option httpchk GET {self.health}\n{servers}\n")

    def start(self, timeout_s: float = 30.0):
        import shutil

        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.path.exists(binary):
            raise RuntimeError("haproxy is not installed: apt-get install haproxy (.ci/run does)")
        self.folder = tempfile.mkdtemp(prefix="edgekit-haproxy-")
        path = os.path.join(self.folder, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(self.config())
        self.log = open(os.path.join(self.folder, "haproxy.log"), "w")
        self.proc = subprocess.Popen([binary, "-db", "-f", path], stdout=self.log, stderr=subprocess.STDOUT)
        if wait_ready(self.proc, f"{self.url}{self.health}", timeout_s):
            return self
        self.stop()
        raise RuntimeError(f"haproxy did not answer {self.health} in {timeout_s:.0f} s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        if self.folder:
            import shutil

            self.log.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def fill_store(path, name, version, n):
    """A device's log store at path/NAME.db with ``n`` predictions of a 10-class model."""
    import numpy as np

    from edgekit.sync.store import LogStore

    store = LogStore(path / f"{name}.db", flush_ms=200)
    rng = np.random.default_rng(len(name))
    for i in range(n):
        scores = rng.random(10).astype(np.float32)
        store.append({"input": np.ones((1, 4), np.float32)}, {"logits": scores[None]}, "digits-cnn", version=version,
                     latency_ms=1.0 + 0.01 * (i % 7))
    store.close()


def drain_store(path, name, token, url, errors):
    """Ship path/NAME.db to ``url`` with the sync client until it is empty; errors are appended."""
    from edgekit.sync.client import SyncClient
    from edgekit.sync.store import LogStore

    store = LogStore(path / f"{name}.db")
    client = SyncClient(store, url, token, batch_size=500, backoff_base_s=0.05, backoff_max_s=0.5, timeout_s=30)
    try:
        client.drain(deadline_s=300)
    except Exception as exc:  # reported by the test, with the device's name
        errors.append(f"{name}: {exc}")
    finally:
        store.close()
