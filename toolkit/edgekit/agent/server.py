"""``edgekit agent serve``: the HTTP side of remote benchmarking (stdlib only, for small devices)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .. import __version__
from ..errors import EdgekitError

log = logging.getLogger("edgekit.agent")
SHA = re.compile(r"^[0-9a-f]{64}$")
FORMATS = ("onnx", "tflite", "npz")  # the only suffixes the agent ever writes
RETRY_AFTER_S = 5


def read_token(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"token file {path} does not exist", f"create one with: edgekit agent token {path}")
    token = path.read_text().strip()
    if len(token) < 16:
        raise EdgekitError(f"the token in {path} is too short (under 16 characters)",
                           f"make a new one with: edgekit agent token {path}")
    return token.encode()


def new_token(path: str | Path) -> str:
    from .._io import atomic_write_text

    token = secrets.token_urlsafe(32)
    atomic_write_text(path, token + "\n")
    os.chmod(path, 0o600)
    return token


@dataclass
class AgentConfig:
    storage: Path
    token: bytes
    max_upload_bytes: int = 512 * 1024 * 1024
    max_bench_seconds: float = 300.0


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
        length = int(self.headers.get("Content-Length") or -1)
        if length < 0:
            self._send(411, {"error": "Content-Length required"})
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
        try:
            request = json.loads(self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1 << 20)))
            paths = [self.agent.path_for(a["sha256"], a["format"]) for a in request["artifacts"]]
            labels = [str(a.get("label", ""))[:200] for a in request["artifacts"]]
            options = dict(request.get("options") or {})
        except (ValueError, KeyError, TypeError) as exc:
            self._send(400, {"error": f"bad request: {exc}"})
            return
        missing = [str(p.name) for p in paths if not p.exists()]
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
        from ..bench import BenchOptions, run_bench

        data = options.pop("input_data_sha256", None)
        allowed = set(BenchOptions.__dataclass_fields__) - {"input_data"}
        opts = BenchOptions(**{k: v for k, v in options.items() if k in allowed})
        opts.max_seconds = min(opts.max_seconds, self.agent.config.max_bench_seconds)
        if data:
            opts.input_data = str(self.agent.path_for(data, "npz"))
        result = run_bench([str(p) for p in paths], opts)
        for row, label in zip(result["results"], labels):
            row["artifact"] = label or row["artifact"]
            row["label"] = label or row["label"]
        result["device"] = f"agent on {result['environment']['hostname']}"
        return result


def make_server(host: str, port: int, config: AgentConfig) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"agent": Agent(config)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
