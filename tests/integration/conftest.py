"""What the serving tests share: bundles of the built-in models with their processing, and a
real `edgekit serve` process."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from _services import free_port as _free_port


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    """The digits CNN and MiniLM, optimised for this host and packaged with their processing."""
    from edgekit import optimize
    from edgekit.bundle import make_bundle

    out = tmp_path_factory.mktemp("bundles")
    optimize("edgekit:digits-cnn", target="host", out=out / "digits", formats={"onnx"},
             precisions={"fp32", "int8-static"}, timing_s=0.5)
    make_bundle(out / "digits", out / "digits.ekb", version="1")
    optimize("edgekit:minilm", target="host", out=out / "minilm", formats={"onnx"}, precisions={"int8-dynamic"},
             timing_s=0.5)
    make_bundle(out / "minilm", out / "minilm.ekb", version="3")
    return out / "digits.ekb", out / "minilm.ekb"


class Server:
    def __init__(self, args, env=None):
        import tempfile

        self.port = _free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="edgekit-serve-", suffix=".log", delete=False)  # never a full pipe
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekit", "serve", *map(str, args), "--port",
                                      str(self.port)], stdout=subprocess.DEVNULL, stderr=self.log,
                                     env={**os.environ, **(env or {})})
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(600):
            if self.proc.poll() is not None:
                raise RuntimeError(open(self.log.name).read()[-3000:])
            try:
                urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the server did not become ready")

    def request(self, method, path, body=None, headers=None):
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read(), r.headers  # case-insensitive
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.log.close()
        os.unlink(self.log.name)




def require_browser() -> str:
    """Debian's chromium, driven by Playwright. Locally a missing browser skips with the reason;
    in CI (.ci/run installs it) it fails the run."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    reason = None
    if path is None:
        reason = "needs Debian's chromium (apt-get install chromium; .ci/run installs it)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "needs playwright (the dev extra)"
    if reason:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; in CI this is an error, not a skip")
        pytest.skip(reason)
    return path
