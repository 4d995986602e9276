"""What the serve routes and the middleware share: the HTTP options, refusals as JSON, the
request body within its limit, and how a raw request (pictures, text) becomes items."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Optional

from .._asgi import BodyError
from .._asgi import read_body as _read_body
from .protocol import ProtocolError

OPEN = ("/v2/health/live", "/v2/health/ready")  # probes need no token
ALONE = "edgekit.alone"  # set in the scope by the guard: no other request in flight (Repository.begin)


@dataclass(frozen=True)
class HttpOptions:
    max_body_bytes: int = 64 * 1024 * 1024
    token: Optional[str] = None  # bearer token; None: no authentication
    max_inflight: int = 1024  # requests being handled at once; beyond: 503 before reading anything


def error(status: int, message: str, headers: Optional[dict] = None):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request, limit: int) -> bytes:
    """The body within ``limit`` (413 beyond, also once inflated), as a ProtocolError."""
    try:
        return await _read_body(request, limit)
    except BodyError as exc:
        raise ProtocolError(exc.message, exc.status) from None


def rows(inputs: dict) -> int:
    """The batch a request carries: the first dimension of its first input (1 for a scalar)."""
    first = next(iter(inputs.values()))
    return int(first.shape[0]) if first.ndim else 1


async def raw_items(request, model, limit: int) -> tuple[list, Optional[str]]:
    """Pictures or sentences from a JSON body ({"instances": [...], "id"?}; pictures as
    {"b64": ...}), a multipart upload (every file field), text/plain, or a raw picture body."""
    kind = model.runtime.preprocess.kind if model.runtime.preprocess else ""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limit)  # the whole body within --max-body-mb, multipart included
    if content_type == "multipart/form-data":
        from starlette.formparsers import MultiPartException, MultiPartParser

        async def stream():
            yield body

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=256, max_fields=256,
                                         max_part_size=limit).parse()
        except MultiPartException as exc:
            raise ProtocolError(f"the upload is not valid multipart: {exc.message}") from None
        items = [await f.read() for _, f in form.multi_items() if hasattr(f, "read")]
        await form.close()
        if not items:
            raise ProtocolError("the upload holds no file")
        return items, None
    if content_type == "application/json":
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise ProtocolError(f"the request is not JSON: {str(exc)[:200]}") from None
        if not isinstance(data, dict) or not isinstance(data.get("instances"), list) or not data["instances"]:
            raise ProtocolError('send {"instances": [...]}: sentences, or pictures as {"b64": "..."}')
        items = []
        for i, item in enumerate(data["instances"]):
            if isinstance(item, dict) and "b64" in item:
                try:
                    item = base64.b64decode(item["b64"], validate=True)
                except (ValueError, TypeError):
                    raise ProtocolError(f"instances[{i}].b64 is not base64") from None
            items.append(item)
        rid = data.get("id")
        return items, rid if isinstance(rid, str) and len(rid) <= 128 else None
    if content_type.startswith("text/"):
        try:
            return [body.decode("utf-8")], None
        except UnicodeDecodeError:
            raise ProtocolError("the text is not UTF-8") from None
    if kind == "text":
        raise ProtocolError(f"model {model.name} takes text: send text/plain or JSON instances", 415)
    return [body], None
