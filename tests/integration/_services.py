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
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}{self.health}", timeout=2)
                return self
            except OSError:
                time.sleep(0.05)
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
