"""The client side of remote benchmarking: upload what the device lacks, ask, wait, read back."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from .._schema import SchemaError, from_dict
from ..errors import EdgekitError
from ..tokens import read_token

WAIT_FOR_DEVICE_S = 600


class AgentClient:
    def __init__(self, url: str, token: bytes, timeout: float = 30.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token.decode(), timeout

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float | None = None):
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/octet-stream"})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                detail = json.loads(payload).get("error", "")
            except ValueError:
                detail = payload[:200].decode(errors="replace")
            if exc.code == 401:
                raise EdgekitError(f"the agent at {self.url} refused the token", "check --token-file") from None
            return exc.code, {"error": detail}, dict(exc.headers)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EdgekitError(f"cannot reach the agent at {self.url}: {reason}",
                               "is 'edgekit agent serve' running there, and the host and port right?") from None

    def ensure(self, path: Path, fmt: str) -> str:
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        status, _, _ = self.request("HEAD", f"/v1/artifacts/{sha}.{fmt}")
        if status != 200:  # content-addressed: sent only when the device lacks it
            status, body, _ = self.request("PUT", f"/v1/artifacts/{sha}.{fmt}", data, timeout=600)
            if status != 201:
                raise EdgekitError(f"uploading {path.name} failed ({status}): {body.get('error')}")
        return sha


def remote_bench(url: str, token_file: Optional[Path], refs: list[str], options,
                 progress: Callable[[str], None] = lambda m: None) -> "BenchResult":  # noqa: F821
    from ..bench.runner import BenchResult, expand

    if token_file is None:
        raise EdgekitError("--device needs --token-file", "pass the file holding the agent's token")
    client = AgentClient(url, read_token(token_file))
    artifacts = []
    for label, path, fmt in expand(refs):
        if fmt == "pytorch":
            raise EdgekitError(f"{path} is a PyTorch factory; devices run exported models",
                               "optimize or convert it first, then bench the .onnx/.tflite")
        progress(f"sending {label}")
        artifacts.append({"sha256": client.ensure(Path(path), fmt), "format": fmt, "label": label})
    opts = options.to_dict()
    if options.input_data:
        opts["input_data_sha256"] = client.ensure(Path(options.input_data), "npz")
    opts.pop("input_data", None)
    body = json.dumps({"artifacts": artifacts, "options": opts}).encode()
    deadline = time.monotonic() + WAIT_FOR_DEVICE_S
    while True:
        progress(f"benchmarking on {url}")
        status, result, headers = client.request("POST", "/v1/bench", body,
                                                 timeout=options.max_seconds * 2 + 120 * len(artifacts))
        if status == 200:
            try:  # the agent's answer, checked like any document (an older or broken agent says so)
                answer = from_dict(BenchResult, result, "the agent's answer")
            except SchemaError as exc:
                raise EdgekitError(f"the agent at {url} answered a result this edgekit cannot read: {exc}",
                                   "run the same edgekit version on both sides") from None
            answer.device = url
            return answer
        if status == 429 and time.monotonic() < deadline:
            wait = float(headers.get("Retry-After", 5))
            progress(f"the device is busy with another benchmark; retrying in {wait:.0f}s")
            time.sleep(wait)
            continue
        raise EdgekitError(f"the agent at {url} answered {status}: {result.get('error')}")
