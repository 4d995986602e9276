"""``edgekit agent serve``: the HTTP side of remote benchmarking (stdlib only, for small devices)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

from .. import __version__
from .._schema import Document, SchemaError, from_dict, replace
from ..errors import EdgekitError
from ..tokens import new_token, read_token  # noqa: F401  (the agent's CLI and tests import them here)

log = logging.getLogger("edgekit.agent")
SHA = re.compile(r"^[0-9a-f]{64}$")
FORMATS = ("onnx", "tflite", "npz")  # the only suffixes the agent ever writes
RETRY_AFTER_S = 5


@dataclass
class AgentConfig:
    storage: Path
    token: bytes
    max_upload_bytes: int = 512 * 1024 * 1024
    max_bench_seconds: float = 300.0
    idle_timeout_s: float = 30.0  # a connection that sends nothing for this long is closed


MAX_ARTIFACTS = 16
MAX_RUNS = 100_000


class _Artifact(Document):
    sha256: str
    format: str
    label: str = ""

    def validate(self) -> None:
        if not SHA.match(self.sha256):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        if self.format not in FORMATS[:2]:
            raise ValueError(f"format must be one of {', '.join(FORMATS[:2])}")
        if len(self.label) > 200:
            raise ValueError("label is longer than 200 characters")


def parse_bench_request(raw: bytes) -> tuple[list[_Artifact], "BenchOptions", Optional[str]]:  # noqa: F821
    """Validate a POST /v1/bench body into (artifacts, options, input data sha256): the client's
    options are BenchOptions, typed and bounded before anything runs; ValueError (a 400) else."""
    from ..bench import BenchOptions

    try:
        request = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(request, dict) or set(request) - {"artifacts", "options"}:
        raise ValueError("expected {\"artifacts\": [...], \"options\": {...}}")
    artifacts = request.get("artifacts")
    if not isinstance(artifacts, list) or not 1 <= len(artifacts) <= MAX_ARTIFACTS:
        raise ValueError(f"artifacts must be a list of 1-{MAX_ARTIFACTS} entries")
    options = request.get("options") or {}
    if not isinstance(options, dict) or "input_data" in options:
        raise ValueError("options must be an object; input data travels as input_data_sha256")
    options = dict(options)
    data = options.pop("input_data_sha256", None)
    if data is not None and (not isinstance(data, str) or not SHA.match(data)):
        raise ValueError("options.input_data_sha256 must be 64 lowercase hex digits")
    try:
        parsed = [from_dict(_Artifact, a, f"artifacts[{i}]") for i, a in enumerate(artifacts)]
        bench = from_dict(BenchOptions, options, "options")
    except (SchemaError, EdgekitError) as exc:
        raise ValueError(str(exc)) from None
    if not 1 <= len(bench.threads) * len(bench.batches) <= 16:
        raise ValueError("options: at most 16 thread x batch combinations")
    if any(t is not None and not 1 <= t <= 256 for t in bench.threads) or any(not 1 <= b <= 4096 for b in bench.batches):
        raise ValueError("options: threads must be 1-256 and batches 1-4096")
    if not 0 <= bench.warmup_runs <= MAX_RUNS or not 1 <= bench.min_runs <= MAX_RUNS:
        raise ValueError(f"options: warmup_runs and min_runs must be at most {MAX_RUNS}")
    if min(bench.warmup_s, bench.min_seconds) < 0:
        raise ValueError("options: times must not be negative")
    return parsed, bench, data


class Agent:
    def __init__(self, config: AgentConfig):
        self.config = config
        config.storage.mkdir(parents=True, exist_ok=True)
        self.busy = threading.Lock()  # one benchmark at a time: they would distort each other

    def path_for(self, sha: str, fmt: str) -> Path:
        # Only hex digests and allow-listed suffixes: nothing a client sends becomes a path.
        if not SHA.match(sha) or fmt not in FORMATS:
            raise ValueError("bad artifact id")
        return self.config.storage / f"{sha}.{fmt}"


class Handler(BaseHTTPRequestHandler):
    agent: Agent  # set on the subclass made by make_server
    server_version = f"edgekit-agent/{__version__}"
    timeout = 30.0  # socket timeout: idle or stalled connections are closed (set per server)

    def handle(self):
        try:
            super().handle()
        except (TimeoutError, ConnectionError) as exc:  # a stalled client: drop it, keep serving
            log.info("closed a stalled connection from %s: %s", self.address_string(), exc)

    def _length(self) -> Optional[int]:
        """Content-Length as an int, or None after answering 400/411."""
        text = self.headers.get("Content-Length")
        if text is None:
            self._send(411, {"error": "Content-Length required"})
            return None
        if not text.strip().isdigit():
            self._send(400, {"error": f"Content-Length {text[:40]!r} is not a byte count"}, {"Connection": "close"})
            self.close_connection = True
            return None
        return int(text)

    def log_message(self, fmt, *args):  # route to logging, not stderr noise per request
        log.info("%s - %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            log.warning("client went away before the reply (%s %s)", self.command, self.path)

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        given = header[7:].encode() if header.startswith("Bearer ") else b""
        if hmac.compare_digest(given, self.agent.config.token):
            return True
        self._send(401, {"error": "missing or wrong token"}, {"WWW-Authenticate": "Bearer"})
        return False

    def _artifact_route(self):
        match = re.fullmatch(r"/v1/artifacts/([0-9a-f]{64})\.(onnx|tflite|npz)", self.path)
        return (match.group(1), match.group(2)) if match else None

    def do_GET(self):
        if self.path == "/v1/health":
            self._send(200, {"ok": True, "version": __version__, "busy": self.agent.busy.locked()})
            return
        if not self._authorised():
            return
        route = self._artifact_route()
        if route and self.agent.path_for(*route).exists():
            self._send(200, {"present": True})
        else:
            self._send(404, {"present": False})

    do_HEAD = do_GET

    def do_PUT(self):
        if not self._authorised():
            return
        route = self._artifact_route()
        if not route:
            self._send(404, {"error": "PUT /v1/artifacts/<sha256>.<onnx|tflite|npz>"})
            return
        length = self._length()
        if length is None:
            return
        if length > self.agent.config.max_upload_bytes:
            self._send(413, {"error": f"upload of {length} bytes exceeds the limit of "
                                      f"{self.agent.config.max_upload_bytes}"}, {"Connection": "close"})
            self.close_connection = True
            return
        sha, fmt = route
        target = self.agent.path_for(sha, fmt)
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.agent.config.storage, suffix=".upload")
        try:
            with os.fdopen(fd, "wb") as fh:
                remaining = length
                while remaining:
                    chunk = self.rfile.read(min(1 << 20, remaining))
                    if not chunk:
                        raise ConnectionError("upload ended early")
                    digest.update(chunk)
                    fh.write(chunk)
                    remaining -= len(chunk)
            if digest.hexdigest() != sha:
                self._send(400, {"error": "content does not match its sha256"})
                return
            os.replace(tmp, target)
            self._send(201, {"stored": f"{sha}.{fmt}"})
        except (ConnectionError, OSError) as exc:
            log.warning("upload failed: %s", exc)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def do_POST(self):
        if not self._authorised():
            return
        if self.path != "/v1/bench":
            self._send(404, {"error": "unknown endpoint"})
            return
        length = self._length()
        if length is None:
            return
        if length > 1 << 20:
            self._send(413, {"error": "a benchmark request is at most 1 MiB"}, {"Connection": "close"})
            self.close_connection = True
            return
        try:
            artifacts, options, data = parse_bench_request(self.rfile.read(length))
        except ValueError as exc:
            self._send(400, {"error": f"bad request: {exc}"})
            return
        paths = [self.agent.path_for(a.sha256, a.format) for a in artifacts]
        labels = [a.label for a in artifacts]
        if data:
            options = replace(options, input_data=str(self.agent.path_for(data, "npz")))
        paths_needed = paths + ([Path(options.input_data)] if data else [])
        missing = [str(p.name) for p in paths_needed if not p.exists()]
        if missing:
            self._send(409, {"error": f"artifacts not uploaded: {', '.join(missing)}"})
            return
        if not self.agent.busy.acquire(blocking=False):
            self._send(429, {"error": "a benchmark is running; retry later"}, {"Retry-After": str(RETRY_AFTER_S)})
            return
        try:
            result = self._run(paths, labels, options)
        except EdgekitError as exc:
            self._send(422, {"error": str(exc)})
            return
        finally:
            self.agent.busy.release()
        self._send(200, result)  # a client that disconnected meanwhile is logged, not fatal

    def _run(self, paths, labels, options) -> dict:
        from ..bench import run_bench

        # The device owner's cap bounds every phase the client can ask for, not just the timed one.
        cap = self.agent.config.max_bench_seconds
        options = replace(options, max_seconds=min(options.max_seconds, cap),
                          min_seconds=min(options.min_seconds, cap), warmup_s=min(options.warmup_s, cap / 10))
        result = run_bench([str(p) for p in paths], options)
        # One row per artifact x threads x batch: name each by the client's label for its file
        # (zipping rows with labels mislabelled every row after the first of a sweep).
        by_path = {str(p): label for p, label in zip(paths, labels)}
        for row in result.results:
            label = by_path.get(row.artifact)
            if label:
                suffix = row.label[len(Path(row.artifact).name):]  # " [t2 b8]" of a sweep
                row.artifact, row.label = label, label + suffix
        result.device = f"agent on {result.environment['hostname']}"
        return result.to_dict()


def make_server(host: str, port: int, config: AgentConfig) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"agent": Agent(config), "timeout": config.idle_timeout_s})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise EdgekitError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                           "is another agent already running there? pick another --port") from None
    server.daemon_threads = True
    return server
