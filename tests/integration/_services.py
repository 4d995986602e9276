"""Real service processes the integration tests share: the collector (and free ports)."""

import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Collector:
    """`edgekit collector serve` in its own process."""

    def __init__(self, db_url, port=None, extra=()):
        self.db_url, self.port, self.extra = db_url, port or free_port(), extra
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekit", "collector", "serve", "--db", self.db_url,
                                      "--port", str(self.port), *self.extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(400):
            if self.proc.poll() is not None:
                break
            try:
                urllib.request.urlopen(f"{self.url}/v1/health", timeout=1)
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
