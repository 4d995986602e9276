"""What the serving tests share: bundles of the built-in models with their processing, and a
real `edgekit serve` process."""

import urllib.error
import urllib.request

import pytest
from _services import Service


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


class Server(Service):
    """`edgekit serve ARGS` in its own process, started at once (ready on /v2/health/ready)."""

    health = "/v2/health/ready"
    name = "serve"

    def __init__(self, args, env=None):
        args = [*map(str, args)]
        if "--drain-seconds" not in args:  # a stop need not wait for a load balancer here
            args += ["--drain-seconds", "0"]
        super().__init__(["serve", *args], env=env)
        self.start()

    def request(self, method, path, body=None, headers=None):
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read(), r.headers  # case-insensitive
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers


def require_browser() -> str:
    """Debian's chromium, driven by Playwright; without it a skip with the reason (a failure in CI,
    where .ci/run installs it)."""
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
        pytest.skip(reason)
    return path
