"""What every route of the collector's HTTP API shares: the database, the limits, the registry
store, the Prometheus counters, and how a refusal and a device's token are answered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .db import Database, device_for

MAX_BODY = 16 * 1024 * 1024  # compressed
MAX_INFLATED = 128 * 1024 * 1024  # a gzip bomb stops here


@dataclass
class Api:
    db: Database
    max_body: int = MAX_BODY
    max_inflated: int = MAX_INFLATED
    store: Optional[Path] = None  # the bundle registry's folder (fleet updates)
    counters: object = None  # monitor.metrics.IngestCounters, when prometheus-client is installed
    registry: object = None  # the prometheus_client registry /metrics serves

    def error(self, status: int, message: str):
        """A refusal: the status, ``{"error": reason}``, and counted."""
        from starlette.responses import JSONResponse

        if self.counters is not None:
            self.counters.refused(status)
        return JSONResponse({"error": message}, status_code=status)

    async def device(self, request) -> Optional[str]:
        """The device a bearer token names (None: unknown, revoked or missing)."""
        from starlette.concurrency import run_in_threadpool

        header = request.headers.get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        return await run_in_threadpool(device_for, self.db, token) if token else None
