"""The collector's HTTP API (Starlette on uvicorn): POST /v1/logs, GET /v1/health."""

from __future__ import annotations

from .._asgi import BodyError, read_body
from .db import Database, device_for
from .ingest import BatchError, KeyConflict, ingest

MAX_BODY = 16 * 1024 * 1024  # compressed
MAX_INFLATED = 128 * 1024 * 1024  # a gzip bomb stops here


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
        try:
            raw = await read_body(request, max_body, max_inflated)
        except BodyError as exc:
            return error(exc.status, f"batch refused: {exc.message}")
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

