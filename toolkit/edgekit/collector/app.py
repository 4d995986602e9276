"""The collector's HTTP API (Starlette on uvicorn): POST /v1/logs, GET /v1/health."""

from __future__ import annotations

import zlib

from .db import Database, device_for
from .ingest import BatchError, KeyConflict, ingest

MAX_BODY = 16 * 1024 * 1024  # compressed
MAX_INFLATED = 128 * 1024 * 1024  # a gzip bomb stops here


async def _discard(request, limit: int) -> None:
    """Read (and drop) the rest of a refused body: a client still sending it would otherwise
    meet a reset connection instead of the 413 that tells it to send smaller batches. Beyond
    ``limit`` the connection is simply closed."""
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                return
    except Exception:  # the client went away: nothing left to tell it
        return


def create_app(db: Database, max_body: int = MAX_BODY, max_inflated: int = MAX_INFLATED):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def health(request: Request):
        return JSONResponse({"ok": True})

    async def logs(request: Request):
        header = request.headers.get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        device = await run_in_threadpool(device_for, db, token) if token else None
        if device is None:
            return error(401, "unknown or revoked device token")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            await _discard(request, 8 * max_body)
            return error(413, f"batch of {length} bytes exceeds the limit of {max_body}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                await _discard(request, 8 * max_body)
                return error(413, f"batch exceeds the limit of {max_body} bytes")
        if request.headers.get("content-encoding", "") == "gzip":
            try:
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                raw = inflater.decompress(bytes(body), max_inflated + 1)
                if len(raw) > max_inflated or inflater.unconsumed_tail:
                    return error(413, f"batch inflates beyond {max_inflated} bytes")
            except zlib.error as exc:
                return error(400, f"bad gzip body: {exc}")
        else:
            raw = bytes(body)
        key = request.headers.get("idempotency-key", "")
        try:
            result, replayed = await run_in_threadpool(ingest, db, device, key, raw)
        except BatchError as exc:
            return error(400, str(exc))
        except KeyConflict as exc:
            return error(422, str(exc))
        return JSONResponse(result, status_code=200, headers={"Idempotent-Replayed": "true"} if replayed else {})

    return Starlette(routes=[Route("/v1/health", health), Route("/v1/logs", logs, methods=["POST"])])


def serve(db_url: str, host: str, port: int, max_body: int = MAX_BODY, certfile: str | None = None,
          keyfile: str | None = None) -> None:
    import uvicorn

    app = create_app(Database(db_url), max_body=max_body)
    uvicorn.run(app, host=host, port=port, log_level="warning", ssl_certfile=certfile, ssl_keyfile=keyfile)

